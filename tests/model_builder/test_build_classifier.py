"""The face / not-face classifier built here: held-out accuracy in both runtimes, parity, format."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model_builder.build_classifier import (
    SPLIT_FILE,
    load_lfw_subset,
    stratified_split,
    train_classifier,
)
from pipeline_nodes.inference.models import model_info

pytest.importorskip("skimage")


@pytest.fixture(scope="module")
def split(models_dir):
    return json.loads((models_dir / SPLIT_FILE).read_text())


@pytest.fixture(scope="module")
def lfw():
    return load_lfw_subset()


@pytest.fixture(scope="module")
def onnx_probabilities(models_dir, lfw):
    ort = pytest.importorskip("onnxruntime")
    info = model_info("face_classifier")
    session = ort.InferenceSession(
        str(models_dir / info["file"]), providers=["CPUExecutionProvider"]
    )
    images, _ = lfw
    (out,) = session.run(["probability"], {info["input"]["name"]: images[..., None]})
    return out


@pytest.fixture(scope="module")
def tflite_probabilities(models_dir, lfw):
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    info = model_info("face_classifier_tflite")
    interpreter = litert.Interpreter(model_path=str(models_dir / info["file"]), num_threads=1)
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    assert (inp["name"], list(inp["shape"])) == ("image", [1, 25, 25, 1])
    assert (out["name"], list(out["shape"])) == ("probability", [1, 2])
    images, _ = lfw
    results = []
    for image in images:
        interpreter.set_tensor(inp["index"], image[None, :, :, None])
        interpreter.invoke()
        results.append(interpreter.get_tensor(out["index"])[0].copy())
    return np.array(results)


def test_split_is_stratified_disjoint_and_seeded(split, lfw):
    _, labels = lfw
    train, test = np.array(split["train_indices"]), np.array(split["test_indices"])
    assert (len(train), len(test)) == (140, 60)
    assert not set(train) & set(test)
    assert np.bincount(labels[test]).tolist() == [30, 30]
    expected_train, expected_test = stratified_split(labels, seed=split["seed"])
    assert train.tolist() == expected_train.tolist()
    assert test.tolist() == expected_test.tolist()


def test_onnx_accuracy_on_held_out_images(onnx_probabilities, split, lfw):
    _, labels = lfw
    test = np.array(split["test_indices"])
    accuracy = np.mean(onnx_probabilities[test].argmax(axis=1) == labels[test])
    assert accuracy >= 0.9
    assert accuracy == pytest.approx(split["test_accuracy"])


def test_tflite_accuracy_on_held_out_images(tflite_probabilities, split, lfw):
    _, labels = lfw
    test = np.array(split["test_indices"])
    accuracy = np.mean(tflite_probabilities[test].argmax(axis=1) == labels[test])
    assert accuracy >= 0.9


def test_onnx_and_tflite_agree(onnx_probabilities, tflite_probabilities):
    assert np.abs(onnx_probabilities - tflite_probabilities).max() < 1e-4
    np.testing.assert_allclose(onnx_probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_label_order_is_not_face_then_face(onnx_probabilities, lfw):
    _, labels = lfw
    assert model_info("face_classifier")["labels"] == ["not_face", "face"]
    faces = onnx_probabilities[labels == 1]
    assert np.mean(faces[:, 1] > 0.5) > 0.9


def test_training_is_deterministic():
    a, b = train_classifier(), train_classifier()
    np.testing.assert_array_equal(a.weights, b.weights)
    np.testing.assert_array_equal(a.bias, b.bias)
    assert a.train_accuracy >= a.test_accuracy >= 0.9


def test_tflite_file_has_identifier_and_aligned_weights(models_dir):
    data = (models_dir / "face_classifier.tflite").read_bytes()
    assert data[4:8] == b"TFL3"
    weights = train_classifier().weights.T.astype(np.float32).tobytes()
    offset = data.find(weights)
    assert offset > 0
    assert offset % 16 == 0


def test_exported_model_matches_the_numpy_model(onnx_probabilities, lfw):
    images, _ = lfw
    expected = train_classifier().predict_proba(images)
    np.testing.assert_allclose(onnx_probabilities, expected, atol=1e-5)

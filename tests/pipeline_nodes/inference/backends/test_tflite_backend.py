"""TFLiteModel: metadata, exact outputs, dynamic batch resizing, threads, labels, imports."""

from __future__ import annotations

import sys
import types
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from tiny_models import (
    TFLITE_INPUT,
    TFLITE_OUTPUT,
    build_tflite_model,
    tflite_reference,
)

from pipeline.errors import MissingDependencyError
from pipeline_nodes.inference.backends.base import InvalidTensorError, TensorInfo
from pipeline_nodes.inference.backends.tflite import TFLiteModel, import_interpreter

litert = pytest.importorskip("ai_edge_litert.interpreter")

RUNTIME_MODULES = (
    "ai_edge_litert",
    "ai_edge_litert.interpreter",
    "tflite_runtime",
    "tflite_runtime.interpreter",
    "tensorflow",
)


def random_features(batch: int, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 4)).astype(np.float32)


def raw_run(path, features: np.ndarray) -> np.ndarray:
    """The tiny model run directly in a LiteRT interpreter, as a user would without us."""
    interpreter = litert.Interpreter(model_path=str(path), num_threads=1)
    interpreter.resize_tensor_input(0, list(features.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], features)
    interpreter.invoke()
    output: np.ndarray = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    return output


def test_metadata_reads_dynamic_axes_from_shape_signature(tflite_path):
    with TFLiteModel.load(tflite_path) as model:
        meta = model.metadata()
    assert meta.name == "tiny"
    assert meta.inputs == (TensorInfo(TFLITE_INPUT, "float32", (-1, 4)),)
    assert meta.outputs == (TensorInfo(TFLITE_OUTPUT, "float32", (-1, 3)),)
    assert meta.backend == "tflite"
    assert meta.providers == ("XNNPACK", "CPU")
    assert meta.labels == ()


def test_metadata_of_static_model_has_no_dynamic_axes(tmp_path):
    path = build_tflite_model(tmp_path, dynamic_batch=False)
    with TFLiteModel.load(path) as model:
        assert model.metadata().inputs[0].shape == (1, 4)
        with pytest.raises(InvalidTensorError, match=r"expected shape \(1, 4\), got \(2, 4\)"):
            model.infer({TFLITE_INPUT: random_features(2)})


@pytest.mark.parametrize("batch", [1, 3])
def test_infer_output_is_bit_identical_to_raw_interpreter(tflite_path, batch):
    features = random_features(batch)
    expected = raw_run(tflite_path, features)
    with TFLiteModel.load(tflite_path, num_threads=1) as model:
        outputs = model.infer({TFLITE_INPUT: features})
    assert list(outputs) == [TFLITE_OUTPUT]
    assert outputs[TFLITE_OUTPUT].dtype == expected.dtype
    assert outputs[TFLITE_OUTPUT].tobytes() == expected.tobytes()


def test_dynamic_batch_resizes_between_calls(tflite_path):
    with TFLiteModel.load(tflite_path) as model:
        for batch in (3, 1, 5, 5, 2):
            features = random_features(batch, seed=batch)
            probabilities = model.infer({TFLITE_INPUT: features})[TFLITE_OUTPUT]
            assert probabilities.shape == (batch, 3)
            np.testing.assert_allclose(probabilities, tflite_reference(features), rtol=1e-5)


def test_concurrent_calls_with_different_batches_stay_correct(tflite_path):
    batches = [1, 4, 2, 7, 3, 5] * 50
    with TFLiteModel.load(tflite_path) as model, ThreadPoolExecutor(max_workers=6) as pool:

        def run(index: int) -> tuple[np.ndarray, np.ndarray]:
            features = random_features(batches[index], seed=index)
            return features, model.infer({TFLITE_INPUT: features})[TFLITE_OUTPUT]

        results = list(pool.map(run, range(len(batches))))
    for features, probabilities in results:
        np.testing.assert_allclose(probabilities, tflite_reference(features), rtol=1e-5)


def test_outputs_are_not_overwritten_by_next_call(tflite_path):
    with TFLiteModel.load(tflite_path) as model:
        first = model.infer({TFLITE_INPUT: random_features(1, seed=1)})[TFLITE_OUTPUT]
        kept = first.copy()
        second = model.infer({TFLITE_INPUT: random_features(1, seed=2)})[TFLITE_OUTPUT]
    assert not np.array_equal(second, kept)
    np.testing.assert_array_equal(first, kept)


def test_infer_accepts_non_contiguous_input(tflite_path):
    features = random_features(6)[::2]
    assert not features.flags.c_contiguous
    with TFLiteModel.load(tflite_path) as model:
        probabilities = model.infer({TFLITE_INPUT: features})[TFLITE_OUTPUT]
    np.testing.assert_allclose(probabilities, tflite_reference(features), rtol=1e-5)


@pytest.mark.parametrize("num_threads", [1, 2])
def test_num_threads_accepted(tflite_path, num_threads):
    with TFLiteModel.load(tflite_path, num_threads=num_threads) as model:
        probabilities = model.infer({TFLITE_INPUT: random_features(2)})[TFLITE_OUTPUT]
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)


def test_num_threads_below_one_is_rejected(tflite_path):
    with pytest.raises(ValueError, match="num_threads must be an integer >= 1"):
        TFLiteModel.load(tflite_path, num_threads=-2)


def test_labels_from_label_file_packed_in_model(tmp_path):
    path = build_tflite_model(tmp_path, packed_files={"labelmap.txt": "low\nmid\nhigh\n"})
    with TFLiteModel.load(path) as model:
        assert model.metadata().labels == ("low", "mid", "high")
        # The appended archive does not disturb the interpreter.
        features = random_features(1)
        probabilities = model.infer({TFLITE_INPUT: features})[TFLITE_OUTPUT]
    np.testing.assert_allclose(probabilities, tflite_reference(features), rtol=1e-5)


def test_packed_files_without_labels_are_ignored(tmp_path):
    path = build_tflite_model(tmp_path, packed_files={"readme.txt": "not labels"})
    with TFLiteModel.load(path, labels=["a", "b", "c"]) as model:
        assert model.metadata().labels == ("a", "b", "c")


def test_labels_from_label_file_argument(tflite_path, tmp_path):
    label_file = tmp_path / "labels.txt"
    label_file.write_text("low\nmid\nhigh\n", encoding="utf-8")
    with TFLiteModel.load(tflite_path, labels=label_file) as model:
        assert model.metadata().labels == ("low", "mid", "high")


def test_infer_after_close_raises(tflite_path):
    model = TFLiteModel.load(tflite_path)
    model.close()
    with pytest.raises(RuntimeError, match="is closed"):
        model.infer({TFLITE_INPUT: random_features(1)})


def test_missing_model_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="model file not found"):
        TFLiteModel.load(tmp_path / "absent.tflite")


def test_missing_runtimes_name_the_extra(tflite_path, monkeypatch):
    for name in RUNTIME_MODULES:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingDependencyError) as info:
        TFLiteModel.load(tflite_path)
    assert info.value.package == "ai-edge-litert"
    assert info.value.extra == "tflite"
    assert "pip install '.[tflite]'" in str(info.value)


def test_runtime_import_order_falls_back_to_tflite_runtime(monkeypatch):
    # A stand-in tflite_runtime: the only test double here, to check the import order.
    fallback = types.ModuleType("tflite_runtime.interpreter")
    sentinel = object()
    fallback.Interpreter = sentinel  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime", types.ModuleType("tflite_runtime"))
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", fallback)
    interpreter_class, runtime = import_interpreter()
    assert interpreter_class is sentinel
    assert runtime == "tflite_runtime.interpreter"


def test_runtime_import_order_falls_back_to_tensorflow_lite(monkeypatch):
    # A stand-in tensorflow with tf.lite.Interpreter, to check the last fallback.
    tensorflow = types.ModuleType("tensorflow")
    sentinel = object()
    tensorflow.lite = types.SimpleNamespace(Interpreter=sentinel)  # type: ignore[attr-defined]
    for name in RUNTIME_MODULES[:4]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "tensorflow", tensorflow)
    interpreter_class, runtime = import_interpreter()
    assert interpreter_class is sentinel
    assert runtime == "tensorflow"


def test_runtime_import_prefers_ai_edge_litert():
    interpreter_class, runtime = import_interpreter()
    assert interpreter_class is litert.Interpreter
    assert runtime == "ai_edge_litert.interpreter"

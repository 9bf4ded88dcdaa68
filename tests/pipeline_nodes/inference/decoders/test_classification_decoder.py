"""Tests of the classification decoder: activation rules, top-k, labels."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline_nodes.inference.decoders import (
    ClassificationConfig,
    ClassificationDecoder,
    DecoderError,
)
from pipeline_nodes.inference.decoders.classification import (
    class_probabilities,
    decode_classification,
)


def softmax(x: list[float]) -> np.ndarray:
    e = np.exp(np.array(x) - max(x))
    out: np.ndarray = e / e.sum()
    return out


def sigmoid(x: float) -> float:
    return float(1 / (1 + np.exp(-x)))


@pytest.mark.parametrize(
    ("values", "activation", "num_labels", "expected"),
    [
        # logits (outside [0, 1]): softmax
        ([[2.0, 1.0, 0.0]], "auto", None, softmax([2.0, 1.0, 0.0])),
        # one negative logit is enough
        ([0.5, -0.1, 0.2], "auto", None, softmax([0.5, -0.1, 0.2])),
        # probabilities: unchanged
        ([[0.1, 0.7, 0.2]], "auto", None, [0.1, 0.7, 0.2]),
        # multi-label sigmoid scores in [0, 1] not summing to 1: unchanged
        ([0.9, 0.8, 0.05], "auto", None, [0.9, 0.8, 0.05]),
        # a single logit outside [-1, 1]: sigmoid (Viam)
        ([[3.0]], "auto", None, [sigmoid(3.0)]),
        # a single logit in [-1, 0): also sigmoid (it cannot be a probability)
        ([-0.5], "auto", None, [sigmoid(-0.5)]),
        # a single probability: unchanged
        ([0.8], "auto", None, [0.8]),
        # a single probability with two labels: [1 - p, p]
        ([0.8], "auto", 2, [0.2, 0.8]),
        # forced softmax on values in [0, 1]
        ([0.5, 0.5, 1.0], "softmax", None, softmax([0.5, 0.5, 1.0])),
        # forced sigmoid on a multi-label logit vector
        ([2.0, -2.0], "sigmoid", None, [sigmoid(2.0), sigmoid(-2.0)]),
        # forced none keeps logits as they are
        ([2.0, -2.0], "none", None, [2.0, -2.0]),
        # a (1, 1, 1, K) output
        (np.array([0.25, 0.75]).reshape(1, 1, 1, 2), "auto", None, [0.25, 0.75]),
    ],
)
def test_class_probabilities(values, activation, num_labels, expected):
    got = class_probabilities(np.asarray(values, np.float32), activation, num_labels)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_top_k_with_labels_highest_first():
    decoder = ClassificationDecoder(
        ClassificationConfig(labels=("cat", "dog", "bird", "fish"), top_k=2)
    )
    result = decoder.decode({"probability": np.array([[0.1, 0.6, 0.05, 0.25]], np.float32)})
    assert result.class_names == ("dog", "fish")
    assert result.class_id.tolist() == [1, 3]
    assert result.confidence.tolist() == pytest.approx([0.6, 0.25])
    top = result.top()
    assert top is not None
    assert top[0] == "dog"
    assert top[1] == pytest.approx(0.6)


def test_min_confidence_and_top_k_none():
    class_id, confidence = decode_classification(
        np.array([0.1, 0.6, 0.05, 0.25]), top_k=None, min_confidence=0.1
    )
    assert class_id.tolist() == [1, 3, 0]
    assert confidence.tolist() == pytest.approx([0.6, 0.25, 0.1])


def test_class_id_offset_for_a_background_class():
    decoder = ClassificationDecoder(
        ClassificationConfig(labels=("cat", "dog"), class_id_offset=-1, top_k=1)
    )
    result = decoder.decode({"logits": np.array([[0.1, 0.2, 0.7]], np.float32)})
    assert result.class_names == ("dog",)


def test_binary_classifier_with_two_labels():
    decoder = ClassificationDecoder(ClassificationConfig(labels=("not_face", "face")))
    result = decoder.decode({"out": np.array([[4.0]], np.float32)}, (64, 64))
    assert result.class_names == ("face", "not_face")
    assert result.confidence.tolist() == pytest.approx([sigmoid(4.0), 1 - sigmoid(4.0)], rel=1e-5)


def test_the_probability_tensor_is_found_by_name_among_several():
    outputs = {"features": np.ones((1, 8)), "probability": np.array([[0.3, 0.7]])}
    assert ClassificationDecoder().decode(outputs).class_id.tolist() == [1, 0]
    with pytest.raises(DecoderError, match="'probability'"):
        ClassificationDecoder().decode({"features": np.ones((1, 8)), "other": np.ones((1, 2))})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        # quantised output not dequantised
        (np.array([[10, 200]], np.uint8), "dequantise"),
        # a batch of two images
        (np.zeros((2, 3), np.float32), "batch of 2"),
        # nothing
        (np.zeros((1, 0), np.float32), "empty"),
    ],
)
def test_bad_outputs_are_reported(values, message):
    with pytest.raises(DecoderError, match=message):
        class_probabilities(values)


def test_unknown_activation_is_rejected():
    with pytest.raises(DecoderError, match="activation"):
        ClassificationConfig(activation="relu")  # type: ignore[arg-type]

"""Decoder for classifier outputs: scores per class -> top-k labels with probabilities.

The output is one vector of K values per image, ``(1, K)`` or ``(K,)`` (any shape with one
non-unit batch-free axis, e.g. ``(1, 1, 1, K)``), found by the role name ``probability``
(Viam's), an alias, or as the model's only output. ``activation="auto"`` follows Viam's
``mlmodel`` classifier: with K > 1, softmax is applied when any value lies outside [0, 1]
(logits), otherwise the values are taken as probabilities (softmax outputs, or independent
sigmoid scores of a multi-label model). With K == 1 (a binary classifier) a sigmoid is
applied when the value lies outside [0, 1]; Viam only does so outside [-1, 1], which would
let a logit in [-1, 0) through as a negative confidence. A single probability with two labels
becomes ``[1 - p, p]`` (the score is the second label's, as in Keras). ``activation`` may force
``softmax``, ``sigmoid`` or ``none``. Integer outputs must be dequantised first (the backend
does that). Results: class ids and confidences, highest first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Literal

import numpy as np

from pipeline.messages import Classifications

from .base import DecoderError, class_names_for, select_outputs, sigmoid, softmax

__all__ = [
    "CLASSIFICATION_ALIASES",
    "ClassificationConfig",
    "ClassificationDecoder",
    "class_probabilities",
    "decode_classification",
]

CLASSIFICATION_ALIASES: dict[str, tuple[str, ...]] = {
    "probability": ("probabilities", "scores", "logits", "output", "output0"),
}
"""Output names of the score vector, beyond ``probability``."""

Activation = Literal["auto", "softmax", "sigmoid", "none"]


def class_probabilities(
    values: np.ndarray, activation: Activation = "auto", num_labels: int | None = None
) -> np.ndarray:
    """Probabilities from one image's raw classifier output.

    Args:
        values: ``(1, K)``, ``(K,)`` or any shape with K values for one image; float.
        activation: ``"auto"`` (see the module docstring), ``"softmax"``, ``"sigmoid"`` or
            ``"none"``.
        num_labels: the number of labels; with one value and two labels the result is
            ``[1 - p, p]``.

    Returns:
        ``(K,)`` float32 (``(2,)`` in the binary case above).

    Raises:
        DecoderError: integer values, a batch larger than one, or an unknown activation.
    """
    arr = np.asarray(values)
    if arr.dtype.kind in "iub":
        raise DecoderError(
            f"classifier output is {arr.dtype}: dequantise it first (scale, zero point)"
        )
    if arr.ndim > 1 and arr.shape[0] != 1:
        raise DecoderError(
            f"classifier output has shape {arr.shape}: a batch of {arr.shape[0]}; "
            "decoders handle one image at a time"
        )
    x = arr.astype(np.float32).reshape(-1)
    if not len(x):
        raise DecoderError("classifier output is empty")
    if activation == "auto":
        outside = bool(np.any((x < 0.0) | (x > 1.0)))
        activation = ("softmax" if len(x) > 1 else "sigmoid") if outside else "none"
    if activation == "softmax":
        probs = softmax(x)
    elif activation == "sigmoid":
        probs = sigmoid(x)
    elif activation == "none":
        probs = x
    else:
        raise DecoderError(
            f"activation must be 'auto', 'softmax', 'sigmoid' or 'none', got {activation!r}"
        )
    if len(probs) == 1 and num_labels == 2:
        probs = np.array([1.0 - probs[0], probs[0]], np.float32)
    return probs.astype(np.float32)


def decode_classification(
    values: np.ndarray,
    *,
    activation: Activation = "auto",
    top_k: int | None = 5,
    min_confidence: float = 0.0,
    num_labels: int | None = None,
    class_id_offset: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k classes of one image's classifier output.

    Args:
        values: the raw output (see :func:`class_probabilities`).
        activation: see :func:`class_probabilities`.
        top_k: keep the best this many (``None``: all).
        min_confidence: drop classes below this probability.
        num_labels: see :func:`class_probabilities`.
        class_id_offset: added to each class index (e.g. -1 for a model with a background
            class at index 0 that the label list lacks).

    Returns:
        ``(class_id (k,) int32, confidence (k,) float32)``, highest confidence first.
    """
    probs = class_probabilities(values, activation, num_labels)
    order = np.argsort(-probs, kind="stable")
    order = order[probs[order] >= min_confidence]
    if top_k is not None:
        order = order[: max(0, int(top_k))]
    return (order + class_id_offset).astype(np.int32), probs[order]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClassificationConfig:
    """Options of :class:`ClassificationDecoder` (see :func:`decode_classification`).

    ``remap`` maps a model output name to the role ``probability``; a model with one output
    needs none.
    """

    activation: Activation = "auto"
    top_k: int | None = 5
    min_confidence: float = 0.0
    labels: tuple[str, ...] = ()
    class_id_offset: int = 0
    remap: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.activation not in ("auto", "softmax", "sigmoid", "none"):
            raise DecoderError(
                "activation must be 'auto', 'softmax', 'sigmoid' or 'none', "
                f"got {self.activation!r}"
            )
        if not 0.0 <= self.min_confidence <= 1.0:
            raise DecoderError(f"min_confidence must be in 0..1, got {self.min_confidence!r}")
        object.__setattr__(self, "labels", tuple(str(s) for s in self.labels))


class ClassificationDecoder:
    """Decodes a classifier's scores into top-k ``Classifications``.

    Example:
        ``ClassificationDecoder(ClassificationConfig(labels=("cat", "dog"))).decode(outputs, wh)``
    """

    kind = "classification"

    def __init__(self, config: ClassificationConfig | None = None) -> None:
        self.config = config or ClassificationConfig()

    def decode_arrays(
        self, outputs: Mapping[str, np.ndarray], input_wh: tuple[int, int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Decode to ``(class_id, confidence)`` arrays; ``input_wh`` is not needed."""
        c = self.config
        if len(outputs) == 1 and not c.remap:
            (values,) = outputs.values()
        else:
            values = select_outputs(
                outputs,
                ("probability",),
                decoder=self.kind,
                remap=c.remap,
                aliases=CLASSIFICATION_ALIASES,
            )["probability"]
        return decode_classification(
            values,
            activation=c.activation,
            top_k=c.top_k,
            min_confidence=c.min_confidence,
            num_labels=len(c.labels) or None,
            class_id_offset=c.class_id_offset,
        )

    def decode(
        self, outputs: Mapping[str, np.ndarray], input_wh: tuple[int, int] | None = None
    ) -> Classifications:
        """Decode one image's outputs into ``Classifications``, highest confidence first."""
        class_id, confidence = self.decode_arrays(outputs, input_wh)
        return Classifications(
            class_names=class_names_for(class_id, self.config.labels),
            confidence=confidence,
            class_id=class_id,
        )

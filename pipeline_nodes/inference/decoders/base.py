"""What every decoder shares: finding output tensors by role, activations, labels, thresholds.

A decoder names the *roles* it needs (``boxes``, ``scores``, ``heatmap``, ...). Each role is
found in a model's outputs by, in order: a ``remap`` entry (model tensor name -> role, the
direction of Viam's ``remap_output_names``), the role's own name, then its known aliases (the
names real exports use). A missing role raises :class:`DecoderError` naming the role, the
names tried and the names the model has. Decoders handle one image: a leading batch axis of 1
is dropped, a larger batch is an error. :class:`DecodedBoxes` is the plain-array result every
detection decoder returns before it is wrapped in a ``Detections`` message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple, Protocol

import numpy as np

from pipeline.errors import PipelineError
from pipeline.messages import Classifications, Detections

__all__ = [
    "DecodedBoxes",
    "Decoder",
    "DecoderError",
    "class_names_for",
    "drop_batch",
    "empty_boxes",
    "select_outputs",
    "sigmoid",
    "softmax",
    "thresholds_for",
    "to_detections",
]


class DecoderError(PipelineError, ValueError):
    """Model outputs do not fit the decoder: a missing tensor, a wrong shape or a bad option."""


class Decoder(Protocol):
    """Turns one image's raw model outputs into a message."""

    def decode(
        self, outputs: Mapping[str, np.ndarray], input_wh: tuple[int, int]
    ) -> Detections | Classifications:
        """Decode ``outputs`` of a model whose input image was ``input_wh`` (width, height)."""
        ...


class DecodedBoxes(NamedTuple):
    """Detections as plain arrays, boxes normalised to the model input.

    Attributes:
        xyxy: ``(N, 4)`` float32 (x_min, y_min, x_max, y_max) in 0..1 of the model input,
            origin at the top-left, highest confidence first.
        confidence: ``(N,)`` float32 in 0..1.
        class_id: ``(N,)`` int32.
        keypoints: ``(N, K, 2)`` float32 x, y in 0..1 of the model input, or ``None``.
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    keypoints: np.ndarray | None = None


def empty_boxes(num_keypoints: int | None = None) -> DecodedBoxes:
    """A :class:`DecodedBoxes` with no detections (keypoints ``(0, K, 2)`` if ``K`` given)."""
    keypoints = None if num_keypoints is None else np.zeros((0, num_keypoints, 2), np.float32)
    return DecodedBoxes(
        np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32), keypoints
    )


def select_outputs(
    outputs: Mapping[str, np.ndarray],
    roles: Sequence[str],
    *,
    decoder: str,
    remap: Mapping[str, str] | None = None,
    aliases: Mapping[str, Sequence[str]] | None = None,
    optional: Sequence[str] = (),
) -> dict[str, np.ndarray]:
    """Find the tensor that plays each role among a model's outputs.

    Args:
        outputs: model output tensors by name.
        roles: the roles the decoder needs, e.g. ``("boxes", "classes", "scores")``.
        decoder: the decoder's kind, for error messages.
        remap: model tensor name -> role, for models whose names are unknown to the decoder.
        aliases: other names each role goes by in real exports.
        optional: roles that may be missing (left out of the result).

    Returns:
        role -> tensor (as given; not copied).

    Raises:
        DecoderError: a required role is not found, or ``remap`` names a tensor the model does
            not have, or a role the decoder does not know.
    """
    remap = dict(remap or {})
    aliases = aliases or {}
    found: dict[str, np.ndarray] = {}
    for name, role in remap.items():
        if role not in roles:
            raise DecoderError(
                f"{decoder} decoder: remap maps {name!r} to unknown role {role!r}; "
                f"roles: {', '.join(roles)}"
            )
        if name not in outputs:
            raise DecoderError(
                f"{decoder} decoder: remap names output {name!r}, which the model does not "
                f"have; model outputs: {sorted(outputs)}"
            )
        found[role] = outputs[name]
    for role in roles:
        if role in found:
            continue
        tried = [role, *aliases.get(role, ())]
        present = next((n for n in tried if n in outputs), None)
        if present is not None:
            found[role] = outputs[present]
        elif role not in optional:
            raise DecoderError(
                f"{decoder} decoder: no output tensor for {role!r} (tried "
                f"{', '.join(repr(n) for n in tried)}); model outputs: {sorted(outputs)}; "
                f"name it with remap={{'<model output>': {role!r}}}"
            )
    return found


def drop_batch(array: np.ndarray, name: str, ndim: int) -> np.ndarray:
    """``array`` without its leading batch axis of 1, checked to have ``ndim`` dimensions after.

    An array that already has ``ndim`` dimensions is returned as is.

    Raises:
        DecoderError: the batch is larger than 1 or the rank is wrong.
    """
    arr = np.asarray(array)
    if arr.ndim == ndim + 1:
        if arr.shape[0] != 1:
            raise DecoderError(
                f"output {name!r} has a batch of {arr.shape[0]} (shape {arr.shape}); "
                "decoders handle one image at a time"
            )
        item: np.ndarray = arr[0]
        return item
    if arr.ndim != ndim:
        raise DecoderError(
            f"output {name!r} has shape {arr.shape}; expected {ndim} dimensions "
            f"(or {ndim + 1} with a batch of 1)"
        )
    return arr


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, float32, without overflow warnings for large negative logits."""
    values = np.asarray(x, np.float32)
    out: np.ndarray = np.exp(-np.logaddexp(np.float32(0), -values)).astype(np.float32)
    return out


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax along ``axis``, float32, shifted by the maximum for stability."""
    values = np.asarray(x, np.float32)
    e = np.exp(values - np.max(values, axis=axis, keepdims=True))
    out: np.ndarray = (e / np.sum(e, axis=axis, keepdims=True)).astype(np.float32)
    return out


def class_names_for(class_id: np.ndarray, labels: Sequence[str] | None) -> tuple[str, ...]:
    """The label of each class id: ``labels[id]``, or the id as text when out of range."""
    labels = labels or ()
    return tuple(labels[i] if 0 <= i < len(labels) else str(i) for i in (int(v) for v in class_id))


def thresholds_for(
    class_names: Sequence[str], default: float, per_label: Mapping[str, float] | None
) -> np.ndarray:
    """``(N,)`` float32 minimum confidence for each detection: its label's, else ``default``."""
    per_label = per_label or {}
    return np.array([per_label.get(n, default) for n in class_names], np.float32).reshape(-1)


def to_detections(
    boxes: DecodedBoxes,
    input_wh: tuple[int, int],
    labels: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
) -> Detections:
    """Wrap :class:`DecodedBoxes` in a ``Detections`` message about the model input.

    ``seq``, ``t_capture_ns``, ``source`` and ``meta`` stay at their defaults: the node that
    runs the decoder fills them in (``frame.derive``) after mapping the boxes back.

    Args:
        boxes: the decoded arrays.
        input_wh: (width, height) of the model input; becomes ``image_wh``.
        labels: label per class id (see :func:`class_names_for`).
        class_names: the names themselves, when known (overrides ``labels``).
    """
    names = (
        tuple(class_names) if class_names is not None else class_names_for(boxes.class_id, labels)
    )
    return Detections(
        xyxy=boxes.xyxy,
        confidence=boxes.confidence,
        class_id=boxes.class_id,
        class_names=names,
        keypoints=boxes.keypoints,
        image_wh=(int(input_wh[0]), int(input_wh[1])),
    )

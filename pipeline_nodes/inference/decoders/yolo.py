"""Decoder for raw YOLO-style outputs: one tensor of candidate boxes, decoded and suppressed here.

Two layouts exist. ``v8`` (YOLOv8 and later): ``(1, 4 + C, N)`` with rows ``cx, cy, w, h``
then C class scores (no objectness). ``v5`` (YOLOv5/v7): ``(1, N, 5 + C)`` with ``cx, cy, w,
h, objectness`` then C class scores; a candidate's score is objectness times its best class
score. Either layout may come transposed; the attribute axis is found from ``num_classes``
when given, else it is the shorter axis, and ``layout="auto"`` then reads attributes-first as
``v8`` and attributes-last as ``v5`` (the exporters' defaults). Boxes are in input pixels
(``normalized=False``, the usual export) or 0..1. Each candidate keeps its best class;
candidates under their label's threshold are dropped, the rest go through class-wise NMS
(``cv2.dnn.NMSBoxesBatched``: overlapping boxes of different classes both stay) or
class-agnostic NMS. Output: boxes xyxy normalised to the model input, clipped to 0..1.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from pipeline.messages import Detections

from .base import (
    DecodedBoxes,
    DecoderError,
    class_names_for,
    drop_batch,
    empty_boxes,
    select_outputs,
    thresholds_for,
    to_detections,
)
from .nms import nms

__all__ = ["YOLO_ALIASES", "YOLOConfig", "YOLODecoder", "decode_yolo", "yolo_rows"]

YOLO_ALIASES: dict[str, tuple[str, ...]] = {"output": ("output0", "outputs", "Identity")}
"""Output names of the single YOLO output, beyond ``output`` (used when the model has more)."""

Layout = Literal["auto", "v8", "v5"]


def yolo_rows(
    output: np.ndarray, layout: Layout = "auto", num_classes: int | None = None
) -> tuple[np.ndarray, Literal["v8", "v5"]]:
    """One row per candidate, and the layout they follow.

    Args:
        output: ``(1, A, B)`` or ``(A, B)`` raw output.
        layout: ``"v8"``, ``"v5"`` or ``"auto"`` (see the module docstring).
        num_classes: C, when known; picks the attribute axis without guessing.

    Returns:
        ``((N, 4 + C) or (N, 5 + C) float32, layout)``.

    Raises:
        DecoderError: the shape fits neither layout.
    """
    if layout not in ("auto", "v8", "v5"):
        raise DecoderError(f"yolo layout must be 'auto', 'v8' or 'v5', got {layout!r}")
    arr = np.asarray(drop_batch(output, "output", 2), np.float32)
    a, b = arr.shape
    layouts: tuple[Literal["v8", "v5"], ...] = ("v8", "v5") if layout == "auto" else (layout,)
    if num_classes is not None:
        for name in layouts:
            attrs = num_classes + (4 if name == "v8" else 5)
            if a == attrs:
                return np.ascontiguousarray(arr.T), name
            if b == attrs:
                return arr, name
        raise DecoderError(
            f"yolo output of shape {np.shape(output)} fits no {'/'.join(layouts)} layout with "
            f"{num_classes} classes (4 + C attributes for v8, 5 + C for v5)"
        )
    attributes_first = a < b
    rows = np.ascontiguousarray(arr.T) if attributes_first else arr
    # "auto" follows the exporters' defaults: v8 attributes-first, v5 one row per candidate.
    default: Literal["v8", "v5"] = "v8" if attributes_first else "v5"
    chosen: Literal["v8", "v5"] = default if layout == "auto" else layout
    if rows.shape[1] < (5 if chosen == "v8" else 6):
        raise DecoderError(
            f"yolo output of shape {np.shape(output)} has too few attributes for layout {chosen}"
        )
    return rows, chosen


def decode_yolo(
    output: np.ndarray,
    input_wh: tuple[int, int],
    *,
    layout: Layout = "auto",
    num_classes: int | None = None,
    normalized: bool = False,
    labels: Sequence[str] | None = None,
    class_id_offset: int = 0,
    default_minimum_confidence: float = 0.25,
    label_confidences: Mapping[str, float] | None = None,
    iou_threshold: float = 0.45,
    max_detections: int | None = 300,
    class_agnostic: bool = False,
) -> DecodedBoxes:
    """Decode one image's raw YOLO output.

    Args:
        output: ``(1, 4 + C, N)`` (v8), ``(1, N, 5 + C)`` (v5), or either transposed.
        input_wh: (width, height) of the model input in pixels.
        layout: ``"v8"``, ``"v5"`` or ``"auto"``.
        num_classes: C, when known.
        normalized: boxes are in 0..1 of the input (true) or input pixels (false).
        labels: label per class id, for per-label thresholds.
        class_id_offset: added to each class index.
        default_minimum_confidence: threshold for labels absent from ``label_confidences``.
        label_confidences: label -> minimum confidence.
        iou_threshold: NMS overlap threshold.
        max_detections: keep at most this many after NMS (``None``: all).
        class_agnostic: suppress across classes too.

    Returns:
        Boxes xyxy in 0..1 of the model input, highest confidence first.
    """
    rows, chosen = yolo_rows(output, layout, num_classes)
    first_class = 4 if chosen == "v8" else 5
    class_scores = rows[:, first_class:]
    if chosen == "v5":
        class_scores = class_scores * rows[:, 4:5]
    best = np.argmax(class_scores, axis=1)
    conf = class_scores[np.arange(len(rows)), best].astype(np.float32)
    class_id = (best + class_id_offset).astype(np.int32)
    # Drop the bulk of candidates before building label names for the survivors only.
    floor = min([default_minimum_confidence, *(label_confidences or {}).values()])
    cand = np.flatnonzero(conf >= floor)
    names = class_names_for(class_id[cand], labels)
    cand = cand[conf[cand] >= thresholds_for(names, default_minimum_confidence, label_confidences)]
    if not len(cand):
        return empty_boxes()
    cxcywh = rows[cand, :4].astype(np.float64)
    if not normalized:
        w, h = input_wh
        cxcywh = cxcywh / [w, h, w, h]
    half = cxcywh[:, 2:] / 2
    xyxy = np.concatenate([cxcywh[:, :2] - half, cxcywh[:, :2] + half], axis=1)
    keep = nms(
        xyxy,
        conf[cand],
        iou_threshold,
        class_id=None if class_agnostic else class_id[cand],
        max_detections=max_detections,
    )
    return DecodedBoxes(
        np.clip(xyxy[keep], 0.0, 1.0).astype(np.float32),
        conf[cand][keep],
        class_id[cand][keep],
        None,
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class YOLOConfig:
    """Options of :class:`YOLODecoder` (see :func:`decode_yolo` for their meaning).

    ``remap`` maps a model output name to the role ``output``; a model with one output needs
    none.
    """

    layout: Layout = "auto"
    num_classes: int | None = None
    normalized: bool = False
    labels: tuple[str, ...] = ()
    class_id_offset: int = 0
    default_minimum_confidence: float = 0.25
    label_confidences: Mapping[str, float] = dataclasses.field(default_factory=dict)
    iou_threshold: float = 0.45
    max_detections: int | None = 300
    class_agnostic: bool = False
    remap: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.layout not in ("auto", "v8", "v5"):
            raise DecoderError(f"yolo layout must be 'auto', 'v8' or 'v5', got {self.layout!r}")
        object.__setattr__(self, "labels", tuple(str(s) for s in self.labels))
        values = [self.default_minimum_confidence, *self.label_confidences.values()]
        if any(not 0.0 <= float(v) <= 1.0 for v in values):
            raise DecoderError(f"yolo confidence thresholds must be in 0..1, got {values}")


class YOLODecoder:
    """Decodes raw YOLO outputs into ``Detections`` normalised to the model input.

    Example:
        ``YOLODecoder(YOLOConfig(labels=coco_names)).decode(outputs, (640, 640))``
    """

    kind = "yolo"

    def __init__(self, config: YOLOConfig | None = None) -> None:
        self.config = config or YOLOConfig()

    def decode_arrays(
        self, outputs: Mapping[str, np.ndarray], input_wh: tuple[int, int]
    ) -> DecodedBoxes:
        """Decode to plain arrays (see :func:`decode_yolo`)."""
        c = self.config
        if len(outputs) == 1 and not c.remap:
            (output,) = outputs.values()
        else:
            output = select_outputs(
                outputs, ("output",), decoder=self.kind, remap=c.remap, aliases=YOLO_ALIASES
            )["output"]
        return decode_yolo(
            output,
            input_wh,
            layout=c.layout,
            num_classes=c.num_classes,
            normalized=c.normalized,
            labels=c.labels,
            class_id_offset=c.class_id_offset,
            default_minimum_confidence=c.default_minimum_confidence,
            label_confidences=c.label_confidences,
            iou_threshold=c.iou_threshold,
            max_detections=c.max_detections,
            class_agnostic=c.class_agnostic,
        )

    def decode(self, outputs: Mapping[str, np.ndarray], input_wh: tuple[int, int]) -> Detections:
        """Decode one image's outputs into ``Detections`` (``image_wh`` = ``input_wh``)."""
        return to_detections(self.decode_arrays(outputs, input_wh), input_wh, self.config.labels)

"""Decoder for SSD-style post-processed detector outputs: boxes, classes, scores and a count.

This is the output of TFLite's ``TFLite_Detection_PostProcess`` op, TensorFlow's Object
Detection API exports and Viam's ``mlmodel`` detector contract: ``boxes`` ``(1, N, 4)``,
``classes`` ``(1, N)`` (class index, often as float), ``scores`` ``(1, N)`` in 0..1 and
``count`` ``(1,)`` (how many of the N rows are valid; optional). Viam's names ``location``,
``category`` and ``score`` and TF's ``detection_*`` names are recognised, and any other name is
mapped with ``remap`` (model tensor name -> role). The order of the four box values is never
guessed: ``box_order`` is required, because the usual pitfall (TF models emit
``ymin, xmin, ymax, xmax``; Viam's docs say the opposite of what its code assumes) silently
transposes every box. Boxes come out as xyxy normalised to the model input, sorted by
decreasing confidence; these outputs are already suppressed, so NMS is off unless asked for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from pipeline.messages import Detections

from .base import (
    DecodedBoxes,
    DecoderError,
    class_names_for,
    drop_batch,
    select_outputs,
    thresholds_for,
    to_detections,
)
from .nms import nms

__all__ = [
    "BOX_ORDERS",
    "SSD_ALIASES",
    "SSDConfig",
    "SSDDecoder",
    "box_order_indices",
    "decode_ssd",
]

BOX_ORDERS: dict[str, tuple[int, int, int, int]] = {"xyxy": (0, 1, 2, 3), "yxyx": (1, 0, 3, 2)}
"""Named box orders -> positions of (x_min, y_min, x_max, y_max) in a box's four values."""

SSD_ALIASES: dict[str, tuple[str, ...]] = {
    "boxes": ("location", "detection_boxes", "TFLite_Detection_PostProcess"),
    "classes": ("category", "detection_classes", "TFLite_Detection_PostProcess:1"),
    "scores": ("score", "detection_scores", "TFLite_Detection_PostProcess:2"),
    "count": ("num_detections", "TFLite_Detection_PostProcess:3"),
}
"""Output names by role, beyond the role's own name."""

_ROLES = ("boxes", "classes", "scores", "count")


def box_order_indices(box_order: str | Sequence[int]) -> tuple[int, int, int, int]:
    """Positions of (x_min, y_min, x_max, y_max) among a box's four values.

    Args:
        box_order: ``"xyxy"``, ``"yxyx"``, or four distinct integers 0..3 as in Viam's
            ``xmin_ymin_xmax_ymax_order`` (``[1, 0, 3, 2]`` is ``"yxyx"``).

    Raises:
        DecoderError: anything else.
    """
    if isinstance(box_order, str):
        try:
            return BOX_ORDERS[box_order.lower()]
        except KeyError:
            raise DecoderError(
                f"box_order {box_order!r} is not one of {sorted(BOX_ORDERS)} "
                "or four distinct integers 0..3"
            ) from None
    try:
        order = tuple(int(i) for i in box_order)
    except (TypeError, ValueError):
        raise DecoderError(f"box_order {box_order!r} is not a name or 4 integers") from None
    if sorted(order) != [0, 1, 2, 3]:
        raise DecoderError(
            f"box_order {list(order)} must list the positions of x_min, y_min, x_max, y_max: "
            "four distinct integers 0..3"
        )
    return order[0], order[1], order[2], order[3]


def decode_ssd(
    boxes: np.ndarray,
    classes: np.ndarray,
    scores: np.ndarray,
    count: np.ndarray | int | None = None,
    *,
    box_order: str | Sequence[int],
    input_wh: tuple[int, int],
    normalized: bool = True,
    class_id_offset: int = 0,
    labels: Sequence[str] | None = None,
    default_minimum_confidence: float = 0.5,
    label_confidences: Mapping[str, float] | None = None,
    max_detections: int | None = None,
    iou_threshold: float | None = None,
) -> DecodedBoxes:
    """Decode post-processed SSD outputs of one image.

    Args:
        boxes: ``(1, N, 4)`` or ``(N, 4)`` box values in ``box_order``.
        classes: ``(1, N)`` or ``(N,)`` class indices (floats are rounded).
        scores: ``(1, N)`` or ``(N,)`` confidences in 0..1.
        count: number of valid rows (``(1,)``, scalar or ``None`` for all N).
        box_order: see :func:`box_order_indices`.
        input_wh: (width, height) of the model input, used when ``normalized`` is false.
        normalized: boxes are in 0..1 of the input (true) or in input pixels (false).
        class_id_offset: added to each class index (e.g. -1 when the model counts a
            background class the label list lacks).
        labels: label per class id, used for per-label thresholds.
        default_minimum_confidence: threshold for labels absent from ``label_confidences``.
        label_confidences: label -> minimum confidence.
        max_detections: keep at most this many (``None``: all).
        iou_threshold: if set, also run class-wise NMS at this IoU.

    Returns:
        Boxes xyxy normalised to the model input (clipped to 0..1), highest confidence first.
    """
    order = box_order_indices(box_order)
    raw = np.asarray(drop_batch(boxes, "boxes", 2), np.float32)
    if raw.shape[1] != 4:
        raise DecoderError(f"output 'boxes' has shape {np.shape(boxes)}; expected (1, N, 4)")
    n = len(raw)
    cls = np.asarray(classes).reshape(-1)
    conf = np.asarray(scores, np.float32).reshape(-1)
    for name, arr in (("classes", cls), ("scores", conf)):
        if len(arr) != n:
            raise DecoderError(
                f"output {name!r} has {len(arr)} values for {n} boxes (shape {np.shape(arr)})"
            )
    valid = n if count is None else max(0, min(n, int(np.asarray(count).reshape(-1)[0])))
    xyxy: np.ndarray = raw[:valid][:, list(order)]
    if not normalized:
        w, h = input_wh
        xyxy = xyxy / np.array([w, h, w, h], np.float32)
    xyxy = np.clip(xyxy, 0.0, 1.0).astype(np.float32)
    class_id = (np.rint(cls[:valid]).astype(np.int64) + class_id_offset).astype(np.int32)
    conf = conf[:valid]
    names = class_names_for(class_id, labels)
    keep = np.flatnonzero(
        conf >= thresholds_for(names, default_minimum_confidence, label_confidences)
    )
    keep = keep[np.argsort(-conf[keep], kind="stable")]
    if iou_threshold is not None:
        keep = keep[nms(xyxy[keep], conf[keep], iou_threshold, class_id=class_id[keep])]
    if max_detections is not None:
        keep = keep[: max(0, int(max_detections))]
    return DecodedBoxes(xyxy[keep], conf[keep], class_id[keep], None)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SSDConfig:
    """Options of :class:`SSDDecoder` (see :func:`decode_ssd` for their meaning).

    ``box_order`` has no default on purpose. ``label_confidences`` lowers or raises the
    threshold of the labels it names; other labels keep ``default_minimum_confidence`` (unlike
    Viam, where a label absent from the map is dropped). ``remap`` maps model output names to
    the roles ``boxes``, ``classes``, ``scores``, ``count``.
    """

    box_order: str | tuple[int, ...]
    normalized: bool = True
    labels: tuple[str, ...] = ()
    class_id_offset: int = 0
    default_minimum_confidence: float = 0.5
    label_confidences: Mapping[str, float] = dataclasses.field(default_factory=dict)
    max_detections: int | None = None
    iou_threshold: float | None = None
    remap: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        box_order_indices(self.box_order)  # fail at configuration, not at the first frame
        if not isinstance(self.box_order, str):
            object.__setattr__(self, "box_order", tuple(int(i) for i in self.box_order))
        object.__setattr__(self, "labels", tuple(str(s) for s in self.labels))
        thresholds = {"default_minimum_confidence": self.default_minimum_confidence}
        thresholds.update(
            {f"label_confidences[{k!r}]": v for k, v in self.label_confidences.items()}
        )
        for name, value in thresholds.items():
            if not 0.0 <= float(value) <= 1.0:
                raise DecoderError(f"ssd decoder: {name} must be in 0..1, got {value!r}")


class SSDDecoder:
    """Decodes post-processed SSD outputs into ``Detections`` normalised to the model input.

    Example:
        ``SSDDecoder(SSDConfig(box_order="yxyx", labels=("person",))).decode(outputs, (300, 300))``
    """

    kind = "ssd"

    def __init__(self, config: SSDConfig) -> None:
        self.config = config

    def decode_arrays(
        self, outputs: Mapping[str, np.ndarray], input_wh: tuple[int, int]
    ) -> DecodedBoxes:
        """Decode to plain arrays (see :func:`decode_ssd`)."""
        c = self.config
        found = select_outputs(
            outputs,
            _ROLES,
            decoder=self.kind,
            remap=c.remap,
            aliases=SSD_ALIASES,
            optional=("count",),
        )
        return decode_ssd(
            found["boxes"],
            found["classes"],
            found["scores"],
            found.get("count"),
            box_order=c.box_order,
            input_wh=input_wh,
            normalized=c.normalized,
            class_id_offset=c.class_id_offset,
            labels=c.labels,
            default_minimum_confidence=c.default_minimum_confidence,
            label_confidences=c.label_confidences,
            max_detections=c.max_detections,
            iou_threshold=c.iou_threshold,
        )

    def decode(self, outputs: Mapping[str, np.ndarray], input_wh: tuple[int, int]) -> Detections:
        """Decode one image's outputs into ``Detections`` (``image_wh`` = ``input_wh``)."""
        return to_detections(self.decode_arrays(outputs, input_wh), input_wh, self.config.labels)

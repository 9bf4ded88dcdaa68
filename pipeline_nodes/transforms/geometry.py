"""The geometry record that transforms leave on a frame, and mapping boxes back through it.

A transform that changes a frame's geometry appends one record to ``meta["transforms"]`` (a
list, in the order the transforms were applied), built with :func:`record_resize`,
:func:`record_letterbox` or :func:`record_crop`. The records are plain msgpack-serialisable
dicts, so they travel with every message derived from the frame::

    {"op": "resize",    "src_wh": [W, H], "dst_wh": [w, h]}
    {"op": "letterbox", "src_wh": [W, H], "dst_wh": [w, h], "scale": s, "pad_xy": [px, py]}
    {"op": "crop",      "src_wh": [W, H], "xywh": [x, y, w, h]}

A detector's boxes are normalised to the image the model saw (the last transform's output);
:func:`map_boxes_back` and :func:`map_points_back` turn them into coordinates normalised to
the first transform's source, the frame the camera delivered. Coordinates are continuous: a
normalised ``x`` is ``x_px / width`` with pixel edges at integers, origin at the top-left.
Each step clips to the image it maps into (when ``clip`` is true), so a box that reaches into
letterbox padding or past a crop ends at the edge of what the model actually saw. All
functions are pure and need only numpy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "TRANSFORM_OPS",
    "letterbox_params",
    "map_boxes_back",
    "map_boxes_forward",
    "map_points_back",
    "map_points_forward",
    "original_wh",
    "output_wh",
    "record_crop",
    "record_letterbox",
    "record_resize",
]

TRANSFORM_OPS = ("resize", "letterbox", "crop")
"""The ``op`` values a transform record may have."""

_Affine = tuple[float, float, float, float]  # (a_x, b_x, a_y, b_y): src_norm = a * dst_norm + b
_Step = tuple[tuple[int, int], tuple[int, int], _Affine]  # (src_wh, dst_wh, affine)


def _wh(value: Any, what: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be two integers [width, height], got {value!r}") from None
    if w <= 0 or h <= 0:
        raise ValueError(f"{what} must be positive, got {value!r}")
    return w, h


def letterbox_params(
    src_wh: Sequence[int], dst_wh: Sequence[int]
) -> tuple[float, tuple[int, int], tuple[int, int]]:
    """How to letterbox an image of ``src_wh`` into a canvas of ``dst_wh``.

    The image is scaled by one factor for both axes so that it fits the canvas, and centred
    (the odd pixel of padding goes to the right or bottom).

    Args:
        src_wh: (width, height) of the source image in pixels.
        dst_wh: (width, height) of the canvas in pixels.

    Returns:
        ``(scale, pad_xy, new_wh)``: the scale factor, the (x, y) offset in pixels of the
        scaled image in the canvas, and the scaled image's (width, height) in pixels, which is
        what to pass to ``cv2.resize``.
    """
    sw, sh = _wh(src_wh, "src_wh")
    dw, dh = _wh(dst_wh, "dst_wh")
    scale = min(dw / sw, dh / sh)
    new_wh = _content_wh((sw, sh), scale, (dw, dh))
    pad_xy = ((dw - new_wh[0]) // 2, (dh - new_wh[1]) // 2)
    return scale, pad_xy, new_wh


def _content_wh(src_wh: tuple[int, int], scale: float, dst_wh: tuple[int, int]) -> tuple[int, int]:
    # One rounding rule, shared by letterbox_params and the inverse mapping, makes a round
    # trip exact: the scaled image is exactly new_wh pixels, whatever the float scale says.
    return (
        max(1, min(dst_wh[0], round(src_wh[0] * scale))),
        max(1, min(dst_wh[1], round(src_wh[1] * scale))),
    )


def record_resize(src_wh: Sequence[int], dst_wh: Sequence[int]) -> dict[str, Any]:
    """The record of a plain resize (aspect ratio not kept) from ``src_wh`` to ``dst_wh``."""
    return {
        "op": "resize",
        "src_wh": list(_wh(src_wh, "src_wh")),
        "dst_wh": list(_wh(dst_wh, "dst_wh")),
    }


def record_letterbox(
    src_wh: Sequence[int],
    dst_wh: Sequence[int],
    scale: float | None = None,
    pad_xy: Sequence[int] | None = None,
) -> dict[str, Any]:
    """The record of a letterbox from ``src_wh`` into a ``dst_wh`` canvas.

    Args:
        src_wh: (width, height) of the source image in pixels.
        dst_wh: (width, height) of the canvas in pixels.
        scale: the scale applied to the image; computed by :func:`letterbox_params` if omitted.
        pad_xy: the (x, y) offset of the scaled image in the canvas, in pixels; computed by
            :func:`letterbox_params` if omitted.

    Returns:
        ``{"op": "letterbox", "src_wh": [W, H], "dst_wh": [w, h], "scale": s, "pad_xy": [px, py]}``
    """
    src = _wh(src_wh, "src_wh")
    dst = _wh(dst_wh, "dst_wh")
    auto_scale, auto_pad, _ = letterbox_params(src, dst)
    s = float(auto_scale if scale is None else scale)
    if not s > 0:
        raise ValueError(f"letterbox scale must be > 0, got {scale!r}")
    pad = auto_pad if pad_xy is None else (int(pad_xy[0]), int(pad_xy[1]))
    return {
        "op": "letterbox",
        "src_wh": list(src),
        "dst_wh": list(dst),
        "scale": s,
        "pad_xy": list(pad),
    }


def record_crop(src_wh: Sequence[int], xywh: Sequence[int]) -> dict[str, Any]:
    """The record of a crop of the ``xywh`` rectangle (pixels) out of a ``src_wh`` image.

    Raises:
        ValueError: the rectangle is empty or not inside the source image.
    """
    src = _wh(src_wh, "src_wh")
    rect = _crop_rect(xywh, src)
    return {"op": "crop", "src_wh": list(src), "xywh": list(rect)}


def _crop_rect(xywh: Any, src: tuple[int, int]) -> tuple[int, int, int, int]:
    try:
        x, y, w, h = (int(v) for v in xywh)
    except (TypeError, ValueError):
        raise ValueError(f"crop xywh must be four integers [x, y, w, h], got {xywh!r}") from None
    if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > src[0] or y + h > src[1]:
        raise ValueError(f"crop xywh {[x, y, w, h]} is empty or not inside the {src} source")
    return x, y, w, h


def _parse(record: Mapping[str, Any], index: int) -> _Step:
    """(src_wh, dst_wh, affine) of one record; the affine maps dst-normalised to src-normalised."""
    where = f"transforms[{index}]"
    try:
        op = record["op"]
        src = _wh(record["src_wh"], f"{where}.src_wh")
        if op == "resize":
            return src, _wh(record["dst_wh"], f"{where}.dst_wh"), (1.0, 0.0, 1.0, 0.0)
        if op == "letterbox":
            dst = _wh(record["dst_wh"], f"{where}.dst_wh")
            scale = float(record["scale"])
            px, py = (float(v) for v in record["pad_xy"])
            if not scale > 0:
                raise ValueError(f"{where}.scale must be > 0, got {scale!r}")
            cw, ch = _content_wh(src, scale, dst)
            return src, dst, (dst[0] / cw, -px / cw, dst[1] / ch, -py / ch)
        if op == "crop":
            x, y, w, h = _crop_rect(record["xywh"], src)
            return src, (w, h), (w / src[0], x / src[0], h / src[1], y / src[1])
    except KeyError as exc:
        raise ValueError(f"{where} ({record.get('op')!r}) lacks the key {exc.args[0]!r}") from None
    raise ValueError(f"{where} has unknown op {op!r}; known ops: {', '.join(TRANSFORM_OPS)}")


def _chain(transforms: Sequence[Mapping[str, Any]]) -> list[_Step]:
    parsed = [_parse(t, i) for i, t in enumerate(transforms)]
    for i in range(1, len(parsed)):
        if parsed[i][0] != parsed[i - 1][1]:
            raise ValueError(
                f"transforms[{i}].src_wh is {list(parsed[i][0])} but transforms[{i - 1}] "
                f"({transforms[i - 1].get('op')}) produced {list(parsed[i - 1][1])}"
            )
    return parsed


def original_wh(transforms: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    """(width, height) in pixels of the image before the first transform.

    Raises:
        ValueError: ``transforms`` is empty (the size is then unknown) or malformed.
    """
    if not transforms:
        raise ValueError("no transforms recorded: the original size is the frame's own size")
    return _chain(transforms)[0][0]


def output_wh(transforms: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    """(width, height) in pixels of the image after the last transform.

    Raises:
        ValueError: ``transforms`` is empty (the size is then unknown) or malformed.
    """
    if not transforms:
        raise ValueError("no transforms recorded: the output size is the frame's own size")
    return _chain(transforms)[-1][1]


def _as_points(points: Any) -> np.ndarray:
    arr = np.array(points, dtype=np.float64)  # a copy: the input may be a read-only view
    if arr.ndim < 1 or arr.shape[-1] != 2:
        raise ValueError(f"points must have shape (..., 2), got {arr.shape}")
    return arr


def _as_boxes(xyxy: Any) -> np.ndarray:
    arr = np.array(xyxy, dtype=np.float64)
    if arr.size == 0:
        arr = arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got {arr.shape}")
    return arr


def map_points_back(
    points_norm: np.ndarray, transforms: Sequence[Mapping[str, Any]], *, clip: bool = True
) -> np.ndarray:
    """Map points normalised to the last transform's output back to the first one's source.

    Args:
        points_norm: ``(..., 2)`` x, y normalised to 0..1 of the last transform's output (the
            model input), origin at the top-left.
        transforms: the records from ``meta["transforms"]``, in the order they were applied.
        clip: clip to 0..1 of each image on the way back (to the region each transform kept).

    Returns:
        ``(..., 2)`` float32 x, y normalised to the first transform's source image. With no
        transforms the points come back unchanged (clipped if ``clip``).

    Raises:
        ValueError: a record is malformed, or the records do not chain (one's ``src_wh`` is not
            the previous one's output size).
    """
    pts = _as_points(points_norm)
    if clip:
        np.clip(pts, 0.0, 1.0, out=pts)
    for _, _, (ax, bx, ay, by) in reversed(_chain(transforms)):
        pts[..., 0] = ax * pts[..., 0] + bx
        pts[..., 1] = ay * pts[..., 1] + by
        if clip:
            np.clip(pts, 0.0, 1.0, out=pts)
    return pts.astype(np.float32)


def map_boxes_back(
    xyxy_norm: np.ndarray, transforms: Sequence[Mapping[str, Any]], *, clip: bool = True
) -> np.ndarray:
    """Map boxes normalised to the last transform's output back to the first one's source.

    Args:
        xyxy_norm: ``(N, 4)`` (x_min, y_min, x_max, y_max) normalised to 0..1 of the last
            transform's output (the model input), origin at the top-left.
        transforms: the records from ``meta["transforms"]``, in the order they were applied.
        clip: clip to 0..1 of each image on the way back, so a box that reaches into letterbox
            padding or past a crop ends at the edge of the region the model saw.

    Returns:
        ``(N, 4)`` float32 (x_min, y_min, x_max, y_max) normalised to the first transform's
        source image. With no transforms the boxes come back unchanged (clipped if ``clip``).

    Raises:
        ValueError: a record is malformed, or the records do not chain.
    """
    boxes = _as_boxes(xyxy_norm)
    corners = map_points_back(boxes.reshape(-1, 2, 2), transforms, clip=clip)
    return corners.reshape(-1, 4)


def map_points_forward(
    points_norm: np.ndarray, transforms: Sequence[Mapping[str, Any]], *, clip: bool = False
) -> np.ndarray:
    """Map points normalised to the first transform's source to the last transform's output.

    The inverse of :func:`map_points_back` (for points inside every kept region), for example
    to place a region of interest given on the camera frame on the model input.

    Args:
        points_norm: ``(..., 2)`` x, y normalised to the first transform's source image.
        transforms: the records from ``meta["transforms"]``, in the order they were applied.
        clip: clip to 0..1 of each image on the way.

    Returns:
        ``(..., 2)`` float32 x, y normalised to the last transform's output.
    """
    pts = _as_points(points_norm)
    for _, _, (ax, bx, ay, by) in _chain(transforms):
        pts[..., 0] = (pts[..., 0] - bx) / ax
        pts[..., 1] = (pts[..., 1] - by) / ay
        if clip:
            np.clip(pts, 0.0, 1.0, out=pts)
    return pts.astype(np.float32)


def map_boxes_forward(
    xyxy_norm: np.ndarray, transforms: Sequence[Mapping[str, Any]], *, clip: bool = False
) -> np.ndarray:
    """Map ``(N, 4)`` xyxy boxes from the first transform's source to the last one's output.

    See :func:`map_points_forward`; returns ``(N, 4)`` float32 normalised xyxy.
    """
    boxes = _as_boxes(xyxy_norm)
    return map_points_forward(boxes.reshape(-1, 2, 2), transforms, clip=clip).reshape(-1, 4)

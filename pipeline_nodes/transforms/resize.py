"""Resize frames, stretched or letterboxed, into the output port's shared memory.

The real work is :func:`resize_into`, a plain function that writes an image of any size into
a caller's buffer of the target size and returns the geometry record of what it did (built
with ``pipeline_nodes.transforms.geometry``), so boxes found on the output can be mapped back to the
camera frame. The ``Resize`` node is a thin adapter around it.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from pipeline import Frame, Input, Node, NodeParams, Output
from pipeline_nodes.dependencies import import_cv2
from pipeline_nodes.transforms.geometry import letterbox_params, record_letterbox, record_resize

Interpolation = Literal["nearest", "linear", "cubic", "area", "lanczos"]

_CV2_INTERPOLATION = {
    "nearest": "INTER_NEAREST",
    "linear": "INTER_LINEAR",
    "cubic": "INTER_CUBIC",
    "area": "INTER_AREA",
    "lanczos": "INTER_LANCZOS4",
}


def _resize(src: np.ndarray, dst: np.ndarray, interpolation: Interpolation) -> None:
    """Scale ``src`` to fill ``dst`` exactly (same channel count), writing into ``dst``."""
    import cv2

    # OpenCV treats (H, W, 1) as (H, W) and would return a new 2-D array: work on 2-D views.
    if src.ndim == 3 and src.shape[2] == 1:
        src, dst = src[:, :, 0], dst[:, :, 0]
    h, w = dst.shape[:2]
    flag = getattr(cv2, _CV2_INTERPOLATION[interpolation])
    out = cv2.resize(src, (w, h), dst=dst, interpolation=flag)
    if out is not dst and not np.shares_memory(out, dst):
        np.copyto(dst, out.reshape(dst.shape))  # OpenCV allocated a new array after all


def resize_into(
    src: np.ndarray,
    dst: np.ndarray,
    *,
    interpolation: Interpolation = "linear",
    keep_aspect: bool = False,
    pad_value: int = 0,
) -> dict[str, Any]:
    """Resize ``src`` into ``dst`` and return the geometry record of the operation.

    Args:
        src: ``(H, W)`` or ``(H, W, C)`` uint8 image (read-only is fine).
        dst: writable ``(h, w)`` or ``(h, w, C)`` uint8 buffer; its size is the target size.
        interpolation: OpenCV interpolation (``area`` is best for shrinking).
        keep_aspect: scale to fit and centre on a ``pad_value`` canvas (letterbox) instead of
            stretching.
        pad_value: grey level of the letterbox padding.

    Returns:
        ``geometry.record_resize`` or ``geometry.record_letterbox`` of what was done.

    Raises:
        ValueError: ``src`` and ``dst`` differ in channel layout.
    """
    if src.shape[2:] != dst.shape[2:]:
        raise ValueError(f"resize: source {src.shape} and target {dst.shape} differ in channels")
    src_wh = (int(src.shape[1]), int(src.shape[0]))
    dst_wh = (int(dst.shape[1]), int(dst.shape[0]))
    if not keep_aspect:
        _resize(src, dst, interpolation)
        return record_resize(src_wh, dst_wh)
    scale, (px, py), (nw, nh) = letterbox_params(src_wh, dst_wh)
    # Paint only the bands: the content region is overwritten by the resize.
    dst[:py] = pad_value
    dst[py + nh :] = pad_value
    dst[py : py + nh, :px] = pad_value
    dst[py : py + nh, px + nw :] = pad_value
    _resize(src, dst[py : py + nh, px : px + nw], interpolation)
    return record_letterbox(src_wh, dst_wh, scale, (px, py))


class Resize(Node):
    """Resize each frame to ``width`` x ``height``, writing into the output's shared memory.

    With ``keep_aspect`` the image is scaled to fit and centred on a ``pad_value`` canvas
    (letterbox). The geometry record (``resize`` or ``letterbox``) is appended to
    ``meta["transforms"]`` so boxes found on the output can be mapped back to the original
    image. Works on any channel count, including ``(H, W)`` grey. The input is read-only and
    never modified. One output per input; ends when its input ends; when the output edge is
    full it waits (or drops) as that edge's ``when_full`` says.

    Example:
        - id: resize
          node: resize
          params: {width: 320, height: 240, keep_aspect: true, interpolation: area}
          inputs: {frames: camera/frames}
    """

    preload_modules = ("cv2",)

    class Params(NodeParams):
        width: int = Field(ge=1, le=16384, description="Output width in pixels.")
        height: int = Field(ge=1, le=16384, description="Output height in pixels.")
        interpolation: Interpolation = Field(
            "linear", description="OpenCV interpolation (area is best for shrinking)."
        )
        keep_aspect: bool = Field(False, description="Letterbox instead of stretching.")
        pad_value: int = Field(0, ge=0, le=255, description="Letterbox padding grey level.")

    frames = Input(Frame, description="(H, W[, C]) uint8 frames.")
    resized = Output(Frame, description="(height, width[, C]) uint8 frames.")

    def open(self) -> None:
        import_cv2(f"the resize node {self.id!r}")

    def process(self, frames: Frame) -> None:
        p = self.params
        src = frames.image
        dst = self.resized.allocate((p.height, p.width, *src.shape[2:]), np.uint8)
        record = resize_into(
            src,
            dst,
            interpolation=p.interpolation,
            keep_aspect=p.keep_aspect,
            pad_value=p.pad_value,
        )
        meta = dict(frames.meta)
        meta["transforms"] = [*frames.meta.get("transforms", ()), record]
        self.resized.send(frames.replace(image=dst, meta=meta))

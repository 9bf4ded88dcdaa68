"""Resize frames, optionally keeping the aspect ratio with a letterbox."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from pipeline import Frame, Input, MissingDependencyError, Node, NodeParams, Output

_INTERPOLATION = {"nearest": 0, "linear": 1, "cubic": 2, "area": 3}  # cv2.INTER_* values


class Resize(Node):
    """Resize each frame to ``width`` x ``height``, writing into the output's shared memory.

    With ``keep_aspect`` the image is scaled to fit and centred on a ``pad_value`` canvas
    (letterbox). The applied transform is appended to ``meta["transforms"]`` so that boxes
    found on the output can be mapped back to the original image. One output per input;
    ends when its input ends.

    Example:
        - id: resize
          node: resize
          params: {width: 320, height: 240, keep_aspect: true}
          inputs: {frames: camera/frames}
    """

    class Params(NodeParams):
        width: int = Field(ge=1, le=16384, description="Output width in pixels.")
        height: int = Field(ge=1, le=16384, description="Output height in pixels.")
        interpolation: Literal["nearest", "linear", "cubic", "area"] = Field(
            "linear", description="OpenCV interpolation (area is best for shrinking)."
        )
        keep_aspect: bool = Field(False, description="Letterbox instead of stretching.")
        pad_value: int = Field(0, ge=0, le=255, description="Letterbox padding grey level.")

    frames = Input(Frame, description="(H, W, C) uint8 frames.")
    resized = Output(Frame, description="(height, width, C) uint8 frames.")

    def open(self) -> None:
        try:
            import cv2
        except ImportError as exc:
            raise MissingDependencyError("opencv-python-headless", "vision", "resize") from exc
        self._cv2 = cv2

    def process(self, frames: Frame) -> None:
        p = self.params
        src = frames.image
        h, w = src.shape[:2]
        shape = (p.height, p.width, *src.shape[2:])
        dst = self.resized.allocate(shape, np.uint8)
        interp = _INTERPOLATION[p.interpolation]
        transforms = list(frames.meta.get("transforms", []))
        if p.keep_aspect:
            scale = min(p.width / w, p.height / h)
            nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
            px, py = (p.width - nw) // 2, (p.height - nh) // 2
            dst.fill(p.pad_value)
            dst[py : py + nh, px : px + nw] = self._cv2.resize(
                src, (nw, nh), interpolation=interp
            ).reshape((nh, nw, *src.shape[2:]))
            transforms.append(
                {
                    "op": "letterbox",
                    "src_wh": [w, h],
                    "dst_wh": [p.width, p.height],
                    "scale": scale,
                    "pad_xy": [px, py],
                }
            )
        else:
            self._cv2.resize(src, (p.width, p.height), dst=dst, interpolation=interp)
            transforms.append({"op": "resize", "src_wh": [w, h], "dst_wh": [p.width, p.height]})
        meta = dict(frames.meta)
        meta["transforms"] = transforms
        self.resized.send(frames.replace(image=dst, meta=meta))

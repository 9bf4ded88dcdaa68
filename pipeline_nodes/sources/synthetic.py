"""A synthetic source: a moving test pattern, for tests and benchmarks (no camera, no file)."""

from __future__ import annotations

import time
from typing import Literal

import numpy as np
from pydantic import Field

from pipeline import EndOfStream, Frame, Node, NodeParams, Output


class SyntheticSource(Node):
    """Emit a moving test pattern: a colour gradient with a bright square that travels.

    Each frame is written straight into a shared-memory slot of the ``frames`` port, so no
    byte is copied on the way to consumers. Ends after ``frames`` frames (0: only on stop).
    Its frame rate is ``fps``: the runtime holds it there (the node's ``pace: realtime``, the
    default); with ``pace: fast`` (or no ``fps``) it goes as fast as the consumers take the
    frames (with ``when_full: block`` edges, the slowest consumer's rate).

    Example:
        - id: camera
          node: synthetic
          params: {width: 640, height: 480, fps: 30, frames: 300}
    """

    class Params(NodeParams):
        width: int = Field(640, ge=8, le=8192, description="Frame width in pixels.")
        height: int = Field(480, ge=8, le=8192, description="Frame height in pixels.")
        fps: float | None = Field(
            30.0,
            ge=0,
            le=10000,
            description="Its frame rate, the one pace: realtime holds it to; null (or 0): none, "
            "so it is unpaced.",
        )
        frames: int = Field(300, ge=0, description="Frames to emit; 0 = until stopped.")
        pattern: Literal["moving", "static"] = Field(
            "moving",
            description="moving: redraw every frame; static: one image written once "
            "per slot (measures the transport alone).",
        )

    frames = Output(Frame, description="(H, W, 3) uint8 BGR test pattern.")

    def open(self) -> None:
        p = self.params
        y, x = np.mgrid[0 : p.height, 0 : p.width]
        base = np.empty((p.height, p.width, 3), np.uint8)
        base[..., 0] = (x * 255 // max(p.width - 1, 1)).astype(np.uint8)
        base[..., 1] = (y * 255 // max(p.height - 1, 1)).astype(np.uint8)
        base[..., 2] = 96
        self._base = base
        self._seq = 0
        self._box = max(8, min(p.width, p.height) // 8)

    def frame_rate(self) -> float | None:
        fps: float | None = self.params.fps
        return fps or None

    def process(self) -> None:
        p = self.params
        if p.frames and self._seq >= p.frames:
            raise EndOfStream
        image = self.frames.allocate(self._base.shape, np.uint8)
        if p.pattern == "moving":
            np.copyto(image, self._base)
            b = self._box
            x0 = (self._seq * 7) % max(p.width - b, 1)
            y0 = (self._seq * 5) % max(p.height - b, 1)
            image[y0 : y0 + b, x0 : x0 + b] = 255
        seq = self._seq
        self._seq += 1
        self.frames.send(
            Frame(image=image, seq=seq, t_capture_ns=time.monotonic_ns(), source=self.id, meta={})
        )

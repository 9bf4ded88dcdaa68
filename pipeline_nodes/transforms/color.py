"""The ``color`` node: convert frames between BGR, RGB and grey (helpers:
``pipeline_nodes.colors``)."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from pipeline import Frame, Input, Node, NodeParams, Output
from pipeline_nodes.colors import TargetColor, convert_color, frame_color, output_shape
from pipeline_nodes.colors import (
    to_bgr as to_bgr,
)  # preview and video_writer still import it from here
from pipeline_nodes.dependencies import import_cv2

__all__ = ["ColorConvert"]


class ColorConvert(Node):
    """Convert each frame to BGR, RGB or grey, from the colour it has now.

    The current colour is ``meta["color"]`` (default: BGR, or grey for one channel, BGRA for
    four); a ``meta["color"]`` that disagrees with the channel count fails ``process`` with
    the seq. The output is written into the port's shared memory, ``(H, W, 3)`` for BGR/RGB
    and ``(H, W)`` for grey, and ``meta["color"]`` records the new colour. Geometry does not
    change, so no transform record is added. The input is read-only and never modified. One
    output per input; ends when its input ends; a full output edge waits or drops as its
    ``when_full`` says.

    Example:
        - id: rgb
          node: color
          params: {to: rgb}
          inputs: {frames: camera/frames}
    """

    preload_modules = ("cv2",)

    class Params(NodeParams):
        to: TargetColor = Field(description="The colour to convert to: bgr, rgb or gray.")

    frames = Input(Frame, description="(H, W[, C]) uint8 frames in meta['color'].")
    converted = Output(Frame, description="(H, W, 3) bgr/rgb or (H, W) gray uint8 frames.")

    def open(self) -> None:
        import_cv2(f"the color node {self.id!r}")

    def process(self, frames: Frame) -> None:
        target = self.params.to
        src = frame_color(frames.image, frames.meta)
        dst = self.converted.allocate(output_shape(frames.image.shape, target), np.uint8)
        convert_color(frames.image, src, target, dst)
        self.converted.send(frames.replace(image=dst, meta={**frames.meta, "color": target}))

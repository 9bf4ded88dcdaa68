"""Crop a fixed region out of every frame, in pixels or normalised to the frame's size.

:func:`crop_rect` turns the configured region into a pixel rectangle clipped to the image (a
plain function with table tests); the ``Crop`` node copies that rectangle into the output
port's shared memory and appends ``geometry.record_crop`` to ``meta["transforms"]``, so boxes
found on the crop map back to the camera frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import Field, model_validator

from pipeline import Frame, Input, Node, NodeParams, Output
from pipeline_nodes.transforms.geometry import record_crop


def crop_rect(
    image_wh: Sequence[int],
    xywh: Sequence[int] | None = None,
    xywh_norm: Sequence[float] | None = None,
) -> tuple[int, int, int, int]:
    """The pixel rectangle ``(x, y, w, h)`` of a region, clipped to an image of ``image_wh``.

    Exactly one of ``xywh`` (pixels) and ``xywh_norm`` (fractions of the width and height,
    origin at the top-left) is given. A normalised region's edges are rounded to the nearest
    pixel edge.

    Raises:
        ValueError: both or neither region is given, or nothing of it lies inside the image.
    """
    width, height = int(image_wh[0]), int(image_wh[1])
    if (xywh is None) == (xywh_norm is None):
        raise ValueError("give exactly one of xywh (pixels) and xywh_norm (0..1)")
    if xywh is not None:
        x, y, w, h = (int(v) for v in xywh)
        x0, y0, x1, y1 = x, y, x + w, y + h
    else:
        assert xywh_norm is not None
        fx, fy, fw, fh = (float(v) for v in xywh_norm)
        x0, y0 = round(fx * width), round(fy * height)
        x1, y1 = round((fx + fw) * width), round((fy + fh) * height)
    cx0, cy0 = max(x0, 0), max(y0, 0)
    cx1, cy1 = min(x1, width), min(y1, height)
    if cx1 <= cx0 or cy1 <= cy0:
        region = list(xywh) if xywh is not None else list(xywh_norm or ())
        raise ValueError(
            f"the crop region {region} leaves nothing of a {width}x{height} image "
            f"(clipped to x {cx0}..{cx1}, y {cy0}..{cy1})"
        )
    return cx0, cy0, cx1 - cx0, cy1 - cy0


class Crop(Node):
    """Crop the region ``xywh`` (pixels) or ``xywh_norm`` (0..1 of the frame) out of each frame.

    The region is clipped to the frame; a region that leaves nothing of a frame fails
    ``process`` with the region, the frame size and the seq. The crop is copied into the
    output port's shared memory (the input is read-only and never modified) and
    ``{"op": "crop", ...}`` is appended to ``meta["transforms"]``. One output per input; ends
    when its input ends; a full output edge waits or drops as its ``when_full`` says.

    Example:
        - id: roi
          node: crop
          params: {xywh_norm: [0.25, 0.0, 0.5, 1.0]}
          inputs: {frames: camera/frames}
    """

    class Params(NodeParams):
        xywh: tuple[int, int, int, int] | None = Field(
            None,
            description="Region in pixels: x, y of the top-left corner, width, height "
            "(width, height >= 1). Clipped to the frame.",
        )
        xywh_norm: tuple[float, float, float, float] | None = Field(
            None,
            description="Region as fractions of the frame: x, y of the top-left corner, "
            "width, height (each 0..1, width and height > 0). Clipped to the frame.",
        )

        @model_validator(mode="after")
        def _one_region(self) -> Crop.Params:
            if (self.xywh is None) == (self.xywh_norm is None):
                raise ValueError("give exactly one of 'xywh' (pixels) and 'xywh_norm' (0..1)")
            if self.xywh is not None and (self.xywh[2] < 1 or self.xywh[3] < 1):
                raise ValueError("xywh width and height must be >= 1")
            if self.xywh_norm is not None:
                if any(not 0.0 <= v <= 1.0 for v in self.xywh_norm):
                    raise ValueError("xywh_norm values must be within 0..1")
                if self.xywh_norm[2] <= 0 or self.xywh_norm[3] <= 0:
                    raise ValueError("xywh_norm width and height must be > 0")
            return self

    frames = Input(Frame, description="(H, W[, C]) uint8 frames.")
    cropped = Output(Frame, description="(h, w[, C]) uint8 crops.")

    def process(self, frames: Frame) -> None:
        src = frames.image
        image_wh = (int(src.shape[1]), int(src.shape[0]))
        try:
            x, y, w, h = crop_rect(image_wh, self.params.xywh, self.params.xywh_norm)
        except ValueError as exc:
            raise ValueError(f"crop node {self.id!r}: {exc}; change 'xywh'/'xywh_norm'") from None
        dst = self.cropped.allocate((h, w, *src.shape[2:]), src.dtype)
        np.copyto(dst, src[y : y + h, x : x + w])
        meta = dict(frames.meta)
        meta["transforms"] = [
            *frames.meta.get("transforms", ()),
            record_crop(image_wh, (x, y, w, h)),
        ]
        self.cropped.send(frames.replace(image=dst, meta=meta))

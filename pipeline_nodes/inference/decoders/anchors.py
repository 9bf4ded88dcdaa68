"""SSD anchor generation by MediaPipe's ``SsdAnchorsCalculator`` rule, and the BlazeFace presets.

MediaPipe's single-shot detectors (BlazeFace, the palm and pose detectors) ship no anchor
file: the anchors are generated from a few options. Consecutive layers with the same stride
share one feature map, so their anchors interleave per cell. Per layer, each aspect ratio
gives one anchor, plus one for ``interpolated_scale_aspect_ratio`` when it is > 0. Centres are
``((x + offset_x) / F_w, (y + offset_y) / F_h)`` with ``F = ceil(input / stride)``; with
``fixed_anchor_size`` every anchor is 1 x 1 (the regressor then gives the box size directly).
The order is layer group, then row, then column, then anchor, which is the order of the
model's output rows. BlazeFace short range (128 px, strides 8, 16, 16, 16) gives
16*16*2 + 8*8*6 = 896 anchors, back camera (256 px, strides 16, 32, 32, 32) also 896, and
full range (192 px, stride 4, no interpolated anchor) 48*48*1 = 2304.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

__all__ = ["BLAZEFACE_ANCHORS", "SsdAnchorOptions", "generate_ssd_anchors"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class SsdAnchorOptions:
    """The options of MediaPipe's ``SsdAnchorsCalculator`` (same names, same defaults).

    Attributes:
        input_wh: (width, height) of the model input in pixels.
        strides: stride of each layer, in pixels.
        min_scale: anchor scale of the first layer (relative to the input).
        max_scale: anchor scale of the last layer.
        aspect_ratios: width/height ratios, one anchor each per layer.
        interpolated_scale_aspect_ratio: when > 0, one more anchor per layer with this ratio
            and the geometric mean of this layer's and the next layer's scale.
        anchor_offset_xy: anchor centre within its cell (0.5, 0.5 is the middle).
        fixed_anchor_size: every anchor is 1 x 1 (as in all BlazeFace models).
        reduce_boxes_in_lowest_layer: the first layer has 3 anchors: (ratio 1, scale 0.1),
            (2, s), (0.5, s), as in TF's SSD.
        feature_map_wh: explicit (width, height) of each layer's feature map, instead of
            ``ceil(input / stride)``.
    """

    input_wh: tuple[int, int]
    strides: tuple[int, ...]
    min_scale: float = 0.1484375
    max_scale: float = 0.75
    aspect_ratios: tuple[float, ...] = (1.0,)
    interpolated_scale_aspect_ratio: float = 1.0
    anchor_offset_xy: tuple[float, float] = (0.5, 0.5)
    fixed_anchor_size: bool = True
    reduce_boxes_in_lowest_layer: bool = False
    feature_map_wh: tuple[tuple[int, int], ...] | None = None

    def __post_init__(self) -> None:
        if not self.strides or any(int(s) <= 0 for s in self.strides):
            raise ValueError(f"strides must be positive integers, got {self.strides!r}")
        if self.feature_map_wh is not None and len(self.feature_map_wh) != len(self.strides):
            raise ValueError("feature_map_wh must give one (width, height) per stride")
        object.__setattr__(self, "strides", tuple(int(s) for s in self.strides))
        object.__setattr__(self, "input_wh", (int(self.input_wh[0]), int(self.input_wh[1])))

    def with_input(self, input_wh: Sequence[int]) -> SsdAnchorOptions:
        """The same options for another input size."""
        return dataclasses.replace(self, input_wh=(int(input_wh[0]), int(input_wh[1])))


BLAZEFACE_ANCHORS: dict[str, SsdAnchorOptions] = {
    "short_range": SsdAnchorOptions(input_wh=(128, 128), strides=(8, 16, 16, 16)),
    "back": SsdAnchorOptions(input_wh=(256, 256), strides=(16, 32, 32, 32)),
    "full_range": SsdAnchorOptions(
        input_wh=(192, 192), strides=(4,), interpolated_scale_aspect_ratio=0.0
    ),
}
"""Anchor options of MediaPipe's BlazeFace models by variant (from MediaPipe's graphs)."""


def _scale(min_scale: float, max_scale: float, index: int, count: int) -> float:
    if count == 1:
        return (min_scale + max_scale) * 0.5
    return min_scale + (max_scale - min_scale) * index / (count - 1)


def generate_ssd_anchors(options: SsdAnchorOptions) -> np.ndarray:
    """Anchors for ``options``, in the order of the model's output rows.

    Returns:
        ``(N, 4)`` float32 (x_center, y_center, width, height), normalised to the input.
    """
    strides = options.strides
    count = len(strides)
    in_w, in_h = options.input_wh
    rows: list[np.ndarray] = []
    layer = 0
    while layer < count:
        ratios: list[float] = []
        scales: list[float] = []
        last = layer
        while last < count and strides[last] == strides[layer]:
            scale = _scale(options.min_scale, options.max_scale, last, count)
            if last == 0 and options.reduce_boxes_in_lowest_layer:
                ratios += [1.0, 2.0, 0.5]
                scales += [0.1, scale, scale]
            else:
                for ratio in options.aspect_ratios:
                    ratios.append(ratio)
                    scales.append(scale)
                if options.interpolated_scale_aspect_ratio > 0:
                    following = (
                        1.0
                        if last == count - 1
                        else _scale(options.min_scale, options.max_scale, last + 1, count)
                    )
                    scales.append(math.sqrt(scale * following))
                    ratios.append(options.interpolated_scale_aspect_ratio)
            last += 1
        sizes = np.array(
            [(s * math.sqrt(r), s / math.sqrt(r)) for s, r in zip(scales, ratios)], np.float64
        )
        if options.fixed_anchor_size:
            sizes = np.ones_like(sizes)
        if options.feature_map_wh is not None:
            fm_w, fm_h = options.feature_map_wh[layer]
        else:
            fm_w = math.ceil(in_w / strides[layer])
            fm_h = math.ceil(in_h / strides[layer])
        ox, oy = options.anchor_offset_xy
        ys, xs = np.meshgrid(
            (np.arange(fm_h) + oy) / fm_h, (np.arange(fm_w) + ox) / fm_w, indexing="ij"
        )
        per_cell = len(sizes)
        centres = np.stack([xs.ravel(), ys.ravel()], axis=1)  # row-major: y, then x
        layer_rows = np.empty((len(centres), per_cell, 4), np.float64)
        layer_rows[:, :, :2] = centres[:, None, :]
        layer_rows[:, :, 2:] = sizes[None, :, :]
        rows.append(layer_rows.reshape(-1, 4))
        layer = last
    return np.concatenate(rows).astype(np.float32)

"""Tests of SSD anchor generation (MediaPipe's SsdAnchorsCalculator rule)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline_nodes.inference.decoders.anchors import (
    BLAZEFACE_ANCHORS,
    SsdAnchorOptions,
    generate_ssd_anchors,
)


@pytest.mark.parametrize(
    ("variant", "count"),
    [
        # 128 px, strides 8/16/16/16: 16*16*2 + 8*8*6
        ("short_range", 896),
        # 256 px, strides 16/32/32/32: the same grids
        ("back", 896),
        # 192 px, stride 4, one anchor per cell: 48*48
        ("full_range", 2304),
    ],
)
def test_blazeface_anchor_counts(variant, count):
    anchors = generate_ssd_anchors(BLAZEFACE_ANCHORS[variant])
    assert anchors.shape == (count, 4)
    assert anchors.dtype == np.float32
    np.testing.assert_array_equal(anchors[:, 2:], 1.0)  # fixed anchor size


def test_short_range_anchor_order_is_layer_row_column_anchor():
    anchors = generate_ssd_anchors(BLAZEFACE_ANCHORS["short_range"])
    # stride 8: 2 anchors per cell of a 16 x 16 grid
    np.testing.assert_allclose(anchors[0, :2], [0.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(anchors[1, :2], [0.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(anchors[2, :2], [1.5 / 16, 0.5 / 16])  # next column
    np.testing.assert_allclose(anchors[32, :2], [0.5 / 16, 1.5 / 16])  # next row
    # three stride-16 layers share one 8 x 8 grid: 6 anchors per cell, from row 512
    np.testing.assert_allclose(anchors[512:518, :2], [[0.5 / 8, 0.5 / 8]] * 6)
    np.testing.assert_allclose(anchors[518, :2], [1.5 / 8, 0.5 / 8])
    np.testing.assert_allclose(anchors[-1, :2], [7.5 / 8, 7.5 / 8])


def test_full_range_anchor_grid():
    anchors = generate_ssd_anchors(BLAZEFACE_ANCHORS["full_range"])
    np.testing.assert_allclose(anchors[0, :2], [0.5 / 48, 0.5 / 48])
    np.testing.assert_allclose(anchors[1, :2], [1.5 / 48, 0.5 / 48])
    np.testing.assert_allclose(anchors[48, :2], [0.5 / 48, 1.5 / 48])


def test_anchor_sizes_follow_scales_and_aspect_ratios_when_not_fixed():
    options = SsdAnchorOptions(
        input_wh=(64, 64),
        strides=(32, 64),
        min_scale=0.2,
        max_scale=0.6,
        aspect_ratios=(1.0, 2.0),
        interpolated_scale_aspect_ratio=1.0,
        fixed_anchor_size=False,
    )
    anchors = generate_ssd_anchors(options)
    # layer 0: 2 x 2 cells, 3 anchors each; layer 1: 1 cell, 3 anchors
    assert anchors.shape == (2 * 2 * 3 + 3, 4)
    s0, s1 = 0.2, 0.6
    r2 = math.sqrt(2.0)
    expected_layer0 = [[s0, s0], [s0 * r2, s0 / r2], [math.sqrt(s0 * s1)] * 2]
    expected_layer1 = [[s1, s1], [s1 * r2, s1 / r2], [math.sqrt(s1 * 1.0)] * 2]
    np.testing.assert_allclose(anchors[:3, 2:], expected_layer0, rtol=1e-6)
    np.testing.assert_allclose(anchors[12:, 2:], expected_layer1, rtol=1e-6)
    np.testing.assert_allclose(anchors[12, :2], [0.5, 0.5])


def test_reduced_lowest_layer_has_three_boxes():
    options = SsdAnchorOptions(
        input_wh=(32, 32),
        strides=(16, 32),
        reduce_boxes_in_lowest_layer=True,
        fixed_anchor_size=False,
    )
    anchors = generate_ssd_anchors(options)
    assert anchors.shape == (2 * 2 * 3 + 1 * 2, 4)
    np.testing.assert_allclose(anchors[0, 2:], [0.1, 0.1], rtol=1e-6)


def test_non_square_input_and_explicit_feature_maps():
    options = SsdAnchorOptions(input_wh=(64, 32), strides=(16,), interpolated_scale_aspect_ratio=0)
    anchors = generate_ssd_anchors(options)
    assert anchors.shape == (4 * 2, 4)
    np.testing.assert_allclose(anchors[3, :2], [3.5 / 4, 0.5 / 2])
    explicit = SsdAnchorOptions(
        input_wh=(64, 32),
        strides=(16,),
        feature_map_wh=((3, 1),),
        interpolated_scale_aspect_ratio=0,
    )
    np.testing.assert_allclose(generate_ssd_anchors(explicit)[:, 0], [0.5 / 3, 1.5 / 3, 2.5 / 3])


def test_anchor_options_reject_bad_strides():
    with pytest.raises(ValueError, match="strides"):
        SsdAnchorOptions(input_wh=(128, 128), strides=())

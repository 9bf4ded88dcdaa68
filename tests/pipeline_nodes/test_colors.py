"""Tests of the colour rule (frame_color), convert_color and to_bgr."""

from __future__ import annotations

from contextlib import nullcontext as does_not_raise

import cv2
import numpy as np
import pytest

from pipeline.testing import make_frame
from pipeline_nodes.colors import conversion_code, convert_color, frame_color, output_shape, to_bgr


@pytest.mark.parametrize(
    ("shape", "meta", "expected", "raises"),
    [
        # no meta: 3 channels are OpenCV's BGR
        ((4, 4, 3), {}, "bgr", does_not_raise()),
        # no meta: one channel is grey, as (H, W) or (H, W, 1)
        ((4, 4), {}, "gray", does_not_raise()),
        ((4, 4, 1), {}, "gray", does_not_raise()),
        # no meta: four channels are BGRA
        ((4, 4, 4), {}, "bgra", does_not_raise()),
        # declared, and consistent (case does not matter)
        ((4, 4, 3), {"color": "RGB"}, "rgb", does_not_raise()),
        ((4, 4, 4), {"color": "rgba"}, "rgba", does_not_raise()),
        # declared colour and channel count disagree
        ((4, 4), {"color": "rgb"}, None, pytest.raises(ValueError, match="says 'rgb'")),
        # unknown colour
        ((4, 4, 3), {"color": "hsv"}, None, pytest.raises(ValueError, match="known colours")),
        # two channels are no image colour
        ((4, 4, 2), {}, None, pytest.raises(ValueError, match="2 channels")),
    ],
)
def test_frame_color(shape, meta, expected, raises):
    with raises:
        assert frame_color(np.zeros(shape, np.uint8), meta) == expected


@pytest.mark.parametrize(
    ("src", "dst", "expected"),
    [
        ("bgr", "rgb", cv2.COLOR_BGR2RGB),
        ("rgb", "gray", cv2.COLOR_RGB2GRAY),
        ("gray", "bgr", cv2.COLOR_GRAY2BGR),
        ("rgba", "bgr", cv2.COLOR_RGBA2BGR),
        # the same colour needs no conversion
        ("bgr", "bgr", None),
    ],
)
def test_conversion_code(src, dst, expected):
    assert conversion_code(src, dst) == expected


def test_conversion_to_an_alpha_colour_does_not_exist():
    with pytest.raises(ValueError, match="no colour conversion from 'bgr' to 'bgra'"):
        conversion_code("bgr", "bgra")


BLUE_BGR = np.array([[[255, 0, 0], [0, 0, 255]]], np.uint8)  # a blue and a red pixel


@pytest.mark.parametrize(
    ("image", "src", "dst", "expected"),
    [
        # swap the channel order
        (BLUE_BGR, "bgr", "rgb", np.array([[[0, 0, 255], [255, 0, 0]]], np.uint8)),
        # luma weights: blue 0.114, red 0.299
        (BLUE_BGR, "bgr", "gray", np.array([[29, 76]], np.uint8)),
        # the same pixels read as RGB: the weights swap
        (BLUE_BGR, "rgb", "gray", np.array([[76, 29]], np.uint8)),
        # grey to colour repeats the value
        (np.array([[9, 200]], np.uint8), "gray", "bgr", np.array([[[9] * 3, [200] * 3]], np.uint8)),
        # (H, W, 1) grey works like (H, W)
        (np.array([[[9], [200]]], np.uint8), "gray", "rgb", np.array([[[9] * 3, [200] * 3]])),
        # drop alpha
        (np.array([[[1, 2, 3, 4]]], np.uint8), "rgba", "bgr", np.array([[[3, 2, 1]]], np.uint8)),
        # same colour: a copy
        (BLUE_BGR, "bgr", "bgr", BLUE_BGR),
    ],
)
def test_convert_color(image, src, dst, expected):
    out = convert_color(image, src, dst)
    assert out.shape == output_shape(image.shape, dst)
    np.testing.assert_array_equal(out, expected)


def test_convert_color_writes_into_the_given_buffer_and_leaves_the_input():
    image = make_frame(32, 24).image
    image.flags.writeable = False  # as a consumer receives it
    out = np.zeros((24, 32, 3), np.uint8)
    result = convert_color(image, "bgr", "rgb", out)
    assert result is out
    np.testing.assert_array_equal(out, image[:, :, ::-1])


def test_convert_color_refuses_a_buffer_of_the_wrong_shape():
    with pytest.raises(ValueError, match="expected"):
        convert_color(np.zeros((4, 4, 3), np.uint8), "bgr", "gray", np.zeros((4, 4, 3), np.uint8))


def test_to_bgr_returns_a_bgr_image_itself_and_converts_others():
    bgr = make_frame(8, 6)
    assert to_bgr(bgr) is bgr.image
    rgb = bgr.replace(meta={"color": "rgb"})
    np.testing.assert_array_equal(to_bgr(rgb), bgr.image[:, :, ::-1])

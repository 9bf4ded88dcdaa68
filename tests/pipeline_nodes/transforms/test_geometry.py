"""Tests of the transform record and of mapping boxes and points back through it."""

from __future__ import annotations

from contextlib import nullcontext as does_not_raise

import numpy as np
import pytest

from pipeline_nodes.transforms.geometry import (
    letterbox_params,
    map_boxes_back,
    map_boxes_forward,
    map_points_back,
    original_wh,
    output_wh,
    record_crop,
    record_letterbox,
    record_resize,
)


@pytest.mark.parametrize(
    ("src_wh", "dst_wh", "scale", "pad_xy", "new_wh"),
    [
        # square into square: a plain scale, no padding
        ((512, 512), (128, 128), 0.25, (0, 0), (128, 128)),
        # landscape: bands above and below
        ((640, 480), (320, 320), 0.5, (0, 40), (320, 240)),
        # portrait: bands left and right
        ((300, 600), (256, 256), 256 / 600, (64, 0), (128, 256)),
        # inexact scale: 427 * 0.2 = 85.4 rounds to 85, the odd pixel goes to the bottom
        ((640, 427), (128, 128), 0.2, (0, 21), (128, 85)),
        # same size: identity
        ((200, 100), (200, 100), 1.0, (0, 0), (200, 100)),
        # upscaling
        ((64, 32), (128, 128), 2.0, (0, 32), (128, 64)),
    ],
)
def test_letterbox_params_fits_and_centres_the_image(src_wh, dst_wh, scale, pad_xy, new_wh):
    got_scale, got_pad, got_new = letterbox_params(src_wh, dst_wh)
    assert got_scale == pytest.approx(scale)
    assert got_pad == pad_xy
    assert got_new == new_wh


def test_record_builders_give_plain_serialisable_dicts():
    assert record_resize((640, 480), (320, 240)) == {
        "op": "resize",
        "src_wh": [640, 480],
        "dst_wh": [320, 240],
    }
    assert record_letterbox((640, 480), (320, 320)) == {
        "op": "letterbox",
        "src_wh": [640, 480],
        "dst_wh": [320, 320],
        "scale": 0.5,
        "pad_xy": [0, 40],
    }
    assert record_crop((640, 480), (10, 20, 100, 50)) == {
        "op": "crop",
        "src_wh": [640, 480],
        "xywh": [10, 20, 100, 50],
    }


LETTERBOX_640x480_TO_320 = [record_letterbox((640, 480), (320, 320))]  # scale 0.5, pad y 40
CROP_THEN_RESIZE = [
    record_crop((1000, 800), (200, 100, 400, 400)),
    record_resize((400, 400), (100, 100)),
]
CROP_THEN_LETTERBOX = [
    record_crop((800, 600), (100, 0, 400, 200)),
    record_letterbox((400, 200), (200, 200)),
]
CROP_400_THEN_RESIZE = [
    record_crop((400, 400), (100, 100, 200, 200)),
    record_resize((200, 200), (100, 100)),
]


@pytest.mark.parametrize(
    ("transforms", "boxes", "expected"),
    [
        # no transforms: identity
        ([], [[0.1, 0.2, 0.3, 0.4]], [[0.1, 0.2, 0.3, 0.4]]),
        # a resize keeps normalised coordinates
        ([record_resize((640, 480), (320, 320))], [[0.1, 0.2, 0.3, 0.4]], [[0.1, 0.2, 0.3, 0.4]]),
        # letterbox: model px [32, 64, 160, 160] -> source px [64, 48, 320, 240]
        (LETTERBOX_640x480_TO_320, [[0.1, 0.2, 0.5, 0.5]], [[0.1, 0.1, 0.5, 0.5]]),
        # letterbox, box reaching into the top band: y_min clipped to the image top
        (LETTERBOX_640x480_TO_320, [[0.1, 0.0, 0.5, 0.2]], [[0.1, 0.0, 0.5, 0.1]]),
        # letterbox, box wholly in the bottom band: collapses onto the bottom edge
        (LETTERBOX_640x480_TO_320, [[0.2, 0.9, 0.4, 1.0]], [[0.2, 1.0, 0.4, 1.0]]),
        # crop then resize: crop px [100, 200, 300, 400] -> source px [300, 300, 500, 500]
        (CROP_THEN_RESIZE, [[0.25, 0.5, 0.75, 1.0]], [[0.3, 0.375, 0.5, 0.625]]),
        # crop then letterbox (scale 0.5, pad y 50): -> crop px [200, 0, 400, 200]
        (CROP_THEN_LETTERBOX, [[0.5, 0.25, 1.0, 0.75]], [[0.375, 0.0, 0.625, 200 / 600]]),
        # a box past the model input's edge ends at the crop's edge, not the source's
        (CROP_400_THEN_RESIZE, [[0.5, 0.5, 1.2, 1.2]], [[0.5, 0.5, 0.75, 0.75]]),
        # no boxes
        (CROP_THEN_RESIZE, np.zeros((0, 4)), np.zeros((0, 4))),
    ],
)
def test_map_boxes_back(transforms, boxes, expected):
    got = map_boxes_back(np.array(boxes, np.float32), transforms)
    assert got.dtype == np.float32
    assert got.shape == np.shape(expected)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_map_boxes_back_without_clip_keeps_boxes_in_the_padding():
    got = map_boxes_back(np.array([[0.1, 0.0, 0.5, 0.2]]), LETTERBOX_640x480_TO_320, clip=False)
    np.testing.assert_allclose(got, [[0.1, -80 / 480, 0.5, 0.1]], atol=1e-6)


@pytest.mark.parametrize(
    ("src_wh", "dst_wh"),
    [
        ((640, 427), (128, 128)),  # rocket-sized photo into BlazeFace: inexact scale
        ((451, 300), (320, 320)),  # chelsea-sized photo: odd padding
        ((300, 600), (256, 192)),  # portrait into a landscape canvas
        ((512, 512), (128, 128)),  # astronaut: no padding
    ],
)
def test_letterbox_round_trip_returns_the_original_boxes(src_wh, dst_wh):
    rng = np.random.default_rng(0)
    corners = np.sort(rng.uniform(0, 1, size=(50, 2, 2)), axis=1)  # [[x1, y1], [x2, y2]], sorted
    boxes = np.concatenate([corners[:, 0, :], corners[:, 1, :]], axis=1)
    transforms = [record_letterbox(src_wh, dst_wh)]
    forward = map_boxes_forward(boxes, transforms)
    assert np.all((forward >= 0) & (forward <= 1))
    np.testing.assert_allclose(map_boxes_back(forward, transforms), boxes, atol=1e-5)


def test_letterbox_record_matches_the_rendered_pixels():
    import cv2

    src_wh, dst_wh = (640, 427), (128, 128)
    image = np.zeros((src_wh[1], src_wh[0]), np.uint8)
    image[100:300, 200:520] = 255  # a white rectangle, source px [200, 100, 520, 300]
    _, (px, py), (nw, nh) = letterbox_params(src_wh, dst_wh)
    canvas = np.zeros((dst_wh[1], dst_wh[0]), np.uint8)
    canvas[py : py + nh, px : px + nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
    ys, xs = np.nonzero(canvas > 127)
    found = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32) / 128
    back = map_boxes_back(found, [record_letterbox(src_wh, dst_wh)]) * [640, 427, 640, 427]
    # one model pixel is 5 source pixels
    np.testing.assert_allclose(back, [[200, 100, 520, 300]], atol=5)


def test_map_points_back_keeps_the_leading_shape():
    points = np.full((3, 6, 2), 0.5, np.float32)
    got = map_points_back(points, LETTERBOX_640x480_TO_320)
    assert got.shape == (3, 6, 2)
    np.testing.assert_allclose(got[..., 0], 0.5)
    np.testing.assert_allclose(got[..., 1], 0.5)
    corner = map_points_back(np.array([0.1, 0.2]), LETTERBOX_640x480_TO_320)
    np.testing.assert_allclose(corner, [0.1, 0.1], atol=1e-6)


def test_map_back_accepts_read_only_inputs_and_does_not_modify_them():
    boxes = np.array([[0.1, 0.0, 0.5, 1.5]], np.float32)
    before = boxes.copy()
    boxes.flags.writeable = False
    map_boxes_back(boxes, LETTERBOX_640x480_TO_320)
    np.testing.assert_array_equal(boxes, before)


@pytest.mark.parametrize(
    ("transforms", "expected_original", "expected_output"),
    [
        # one letterbox
        (LETTERBOX_640x480_TO_320, (640, 480), (320, 320)),
        # crop then resize
        (CROP_THEN_RESIZE, (1000, 800), (100, 100)),
        # a crop alone outputs its own size
        ([record_crop((800, 600), (10, 10, 30, 20))], (800, 600), (30, 20)),
    ],
)
def test_original_and_output_sizes(transforms, expected_original, expected_output):
    assert original_wh(transforms) == expected_original
    assert output_wh(transforms) == expected_output


def test_original_wh_of_no_transforms_is_an_error():
    with pytest.raises(ValueError, match="no transforms"):
        original_wh([])


@pytest.mark.parametrize(
    ("transforms", "expectation"),
    [
        # a well-formed chain
        (CROP_THEN_LETTERBOX, does_not_raise()),
        # msgpack gives lists and floats back: still fine
        ([{"op": "resize", "src_wh": [4.0, 2.0], "dst_wh": (2, 1)}], does_not_raise()),
        # an op nobody knows
        (
            [{"op": "rotate", "src_wh": [4, 2]}],
            pytest.raises(ValueError, match="unknown op 'rotate'"),
        ),
        # a record without its key
        (
            [{"op": "resize", "src_wh": [4, 2]}],
            pytest.raises(ValueError, match="lacks the key 'dst_wh'"),
        ),
        # records that do not chain: the resize did not start from the crop's output
        (
            [record_crop((100, 100), (0, 0, 50, 50)), record_resize((100, 100), (10, 10))],
            pytest.raises(ValueError, match=r"transforms\[1\].src_wh is \[100, 100\]"),
        ),
        # a crop outside its source
        (
            [{"op": "crop", "src_wh": [100, 100], "xywh": [60, 0, 50, 50]}],
            pytest.raises(ValueError, match="not inside"),
        ),
        # a non-positive size
        (
            [{"op": "resize", "src_wh": [0, 2], "dst_wh": [2, 1]}],
            pytest.raises(ValueError, match="positive"),
        ),
    ],
)
def test_malformed_records_are_reported(transforms, expectation):
    with expectation:
        map_boxes_back(np.array([[0.1, 0.1, 0.2, 0.2]]), transforms)


def test_boxes_of_the_wrong_shape_are_rejected():
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        map_boxes_back(np.zeros((3, 2)), [])

"""Tests of crop_rect and of the Crop node."""

from __future__ import annotations

from contextlib import nullcontext as does_not_raise

import numpy as np
import pydantic
import pytest

from pipeline.testing import make_frame, run_node
from pipeline_nodes.transforms.crop import Crop, crop_rect
from pipeline_nodes.transforms.geometry import map_boxes_back, record_crop


@pytest.mark.parametrize(
    ("xywh", "xywh_norm", "expected", "raises"),
    [
        # pixels, inside the image
        ((10, 20, 30, 40), None, (10, 20, 30, 40), does_not_raise()),
        # pixels reaching past the right and bottom edges are clipped
        ((90, 70, 50, 50), None, (90, 70, 10, 10), does_not_raise()),
        # negative corner: clipped to the image
        ((-5, -10, 20, 20), None, (0, 0, 15, 10), does_not_raise()),
        # normalised: the right half
        (None, (0.5, 0.0, 0.5, 1.0), (50, 0, 50, 80), does_not_raise()),
        # normalised edges round to the nearest pixel edge
        (None, (0.104, 0.25, 0.2, 0.5), (10, 20, 20, 40), does_not_raise()),
        # normalised past the edge is clipped
        (None, (0.9, 0.9, 0.5, 0.5), (90, 72, 10, 8), does_not_raise()),
        # entirely outside: nothing left
        ((100, 0, 10, 10), None, None, pytest.raises(ValueError, match="leaves nothing")),
        # a normalised region thinner than a pixel rounds to nothing
        (None, (0.5, 0.5, 0.001, 0.5), None, pytest.raises(ValueError, match="leaves nothing")),
        # both regions
        ((0, 0, 1, 1), (0, 0, 1, 1), None, pytest.raises(ValueError, match="exactly one")),
        # neither
        (None, None, None, pytest.raises(ValueError, match="exactly one")),
    ],
)
def test_crop_rect(xywh, xywh_norm, expected, raises):
    with raises:
        assert crop_rect((100, 80), xywh, xywh_norm) == expected


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "exactly one"),
        ({"xywh": [0, 0, 4, 4], "xywh_norm": [0, 0, 1, 1]}, "exactly one"),
        ({"xywh": [0, 0, 0, 4]}, ">= 1"),
        ({"xywh_norm": [0, 0, 1.5, 1]}, "within 0..1"),
        ({"xywh_norm": [0.2, 0, 0, 1]}, "> 0"),
    ],
)
def test_crop_params_reject_bad_regions(params, message):
    with pytest.raises(pydantic.ValidationError, match=message):
        Crop.Params.model_validate(params)


def test_crop_node_copies_the_region_and_records_it():
    frame = make_frame(64, 48, seq=5)
    frame = frame.replace(meta={"color": "bgr"})
    run = run_node(Crop, {"xywh": [8, 4, 16, 12]}, inputs={"frames": [frame]})
    (out,) = run.sent["cropped"]
    np.testing.assert_array_equal(out.image, frame.image[4:16, 8:24])
    assert out.image.flags.c_contiguous
    assert out.seq == 5
    assert out.meta["color"] == "bgr"
    assert out.meta["transforms"] == [record_crop((64, 48), (8, 4, 16, 12))]


def test_box_found_on_the_crop_maps_back_to_the_frame():
    run = run_node(
        Crop, {"xywh_norm": [0.25, 0.5, 0.5, 0.5]}, inputs={"frames": [make_frame(200, 100)]}
    )
    (out,) = run.sent["cropped"]
    assert out.image.shape == (50, 100, 3)
    whole_crop = np.array([[0.0, 0.0, 1.0, 1.0]])
    back = map_boxes_back(whole_crop, out.meta["transforms"])
    np.testing.assert_allclose(back[0], [0.25, 0.5, 0.75, 1.0], atol=1e-6)


def test_crop_node_keeps_grey_frames_grey():
    frame = make_frame(40, 30, channels=1)
    run = run_node(Crop, {"xywh": [0, 0, 10, 10]}, inputs={"frames": [frame]})
    assert run.sent["cropped"][0].image.shape == (10, 10)


def test_crop_outside_a_small_frame_fails_naming_the_node_and_region():
    run = run_node(
        Crop,
        {"xywh": [100, 100, 10, 10]},
        inputs={"frames": [make_frame(64, 48)]},
        node_id="roi",
        raise_errors=False,
    )
    assert run.failed_in == "process"
    assert "'roi'" in str(run.error)
    assert "[100, 100, 10, 10]" in str(run.error)
    assert "64x48" in str(run.error)
    assert run.calls[-1] == "close"

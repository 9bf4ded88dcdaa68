"""Tests of the ``color`` node (ColorConvert)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import Frame
from pipeline.testing import make_frame, run_node
from pipeline_nodes.transforms.color import ColorConvert


@pytest.mark.parametrize(
    ("to", "shape"), [("rgb", (24, 32, 3)), ("gray", (24, 32)), ("bgr", (24, 32, 3))]
)
def test_color_node_converts_and_records_the_new_colour(to, shape):
    frame = make_frame(32, 24, seq=4)
    frame = Frame(image=frame.image, seq=4, meta={"transforms": [{"op": "x"}]})
    run = run_node(ColorConvert, {"to": to}, inputs={"frames": [frame]})
    (out,) = run.sent["converted"]
    assert out.image.shape == shape
    assert out.meta["color"] == to
    assert out.meta["transforms"] == [{"op": "x"}]  # geometry unchanged: no new record
    assert out.seq == 4


def test_color_node_round_trip_restores_the_pixels():
    frame = make_frame(16, 12)
    frame = frame.replace(image=np.random.default_rng(1).integers(0, 256, (12, 16, 3), np.uint8))
    rgb = run_node(ColorConvert, {"to": "rgb"}, inputs={"frames": [frame]}).sent["converted"]
    bgr = run_node(ColorConvert, {"to": "bgr"}, inputs={"frames": rgb}).sent["converted"]
    assert rgb[0].meta["color"] == "rgb"
    np.testing.assert_array_equal(rgb[0].image, frame.image[:, :, ::-1])
    np.testing.assert_array_equal(bgr[0].image, frame.image)


def test_color_node_reports_a_frame_whose_colour_lies():
    frame = make_frame(8, 8, channels=1).replace(meta={"color": "bgr"})
    run = run_node(ColorConvert, {"to": "rgb"}, inputs={"frames": [frame]}, raise_errors=False)
    assert run.failed_in == "process"
    assert "says 'bgr'" in str(run.error)

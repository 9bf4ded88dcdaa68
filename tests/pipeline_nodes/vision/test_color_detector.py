"""color_detector on synthetic images."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from pipeline import Frame
from pipeline.testing import run_node
from pipeline_nodes.vision.color_detector import ColorDetector, detect_color, hex_to_hsv


def scene() -> np.ndarray:
    image = np.full((200, 300, 3), 128, np.uint8)  # grey: no hue, never matches
    image[20:70, 30:100] = (0, 0, 220)  # red (BGR)
    image[120:180, 200:280] = (220, 0, 0)  # blue
    image[150:152, 10:12] = (0, 0, 220)  # a 4-pixel red speck
    image[100:110, 100:110] = (255, 255, 255)  # white: no hue
    return image


def test_hex_to_hsv():
    assert hex_to_hsv("#ff0000")[0] == 0
    assert hex_to_hsv("#0000ff")[0] == 120


def test_detects_the_red_region_and_not_the_blue_or_the_speck():
    boxes, fill = detect_color(scene(), "#dd0000", segment_size_px=50)
    assert boxes.tolist() == [[30, 20, 100, 70]]
    assert fill.tolist() == pytest.approx([1.0])


def test_small_segments_are_kept_when_the_minimum_allows():
    boxes, _ = detect_color(scene(), "#dd0000", segment_size_px=4)
    assert len(boxes) == 2


def test_node_sends_normalised_boxes_per_frame():
    run = run_node(
        ColorDetector,
        {"detect_color": "#0000DD", "label": "blue"},
        {"frames": [Frame(image=scene(), seq=7)]},
    )
    d = run.sent["detections"][0]
    assert d.seq == 7 and d.class_names == ("blue",)
    assert d.xyxy[0].tolist() == pytest.approx([200 / 300, 120 / 200, 280 / 300, 180 / 200])


def test_bad_colour_is_a_params_error():
    with pytest.raises(ValidationError, match="#RRGGBB"):
        ColorDetector.Params(detect_color="red")


def test_the_old_pct_names_are_refused_with_the_new_name():
    with pytest.raises(ValidationError, match="hue_tolerance_pct is now hue_tolerance"):
        ColorDetector.Params.model_validate({"detect_color": "#ff0000", "hue_tolerance_pct": 0.1})

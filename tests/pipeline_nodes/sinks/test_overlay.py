"""Tests of the overlay's drawing functions and of the Overlay node."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import Classifications, Detections, Frame
from pipeline.testing import run_node
from pipeline_nodes.sinks.overlay import (
    PALETTE,
    Overlay,
    RateMeter,
    Style,
    boxes_in_frame,
    class_color,
    classification_lines,
    points_in_frame,
    text_color,
)
from pipeline_nodes.transforms.geometry import record_crop, record_letterbox, record_resize


def black_frame(w: int = 320, h: int = 240, seq: int = 0, **meta) -> Frame:
    return Frame(image=np.zeros((h, w, 3), np.uint8), seq=seq, meta=meta)


def one_box(seq: int = 0, xyxy=(0.25, 0.25, 0.75, 0.75), class_id: int = 2, **kw) -> Detections:
    return Detections(
        xyxy=[list(xyxy)],
        confidence=[kw.pop("confidence", 0.9)],
        class_id=[class_id],
        class_names=["person"],
        seq=seq,
        **kw,
    )


def is_color(pixel: np.ndarray, color: tuple[int, int, int]) -> bool:
    return bool(np.abs(pixel.astype(int) - np.array(color)).max() <= 2)


def test_class_colors_are_stable_distinct_and_wrap():
    assert class_color(3) == class_color(3) == PALETTE[3]
    assert len({class_color(i) for i in range(len(PALETTE))}) == len(PALETTE)
    assert class_color(len(PALETTE) + 1) == class_color(1)


@pytest.mark.parametrize(
    ("background", "expected"),
    [((255, 255, 255), (0, 0, 0)), ((0, 0, 0), (255, 255, 255)), ((0, 255, 255), (0, 0, 0))],
)
def test_text_color_contrasts_with_the_background(background, expected):
    assert text_color(background) == expected


@pytest.mark.parametrize(
    ("transforms", "frame_wh", "expected"),
    [
        # the frame is the original image
        ([], (640, 480), [160, 120, 480, 360]),
        # the frame was resized: normalised boxes scale with it
        ([record_resize((640, 480), (320, 320))], (320, 320), [80, 80, 240, 240]),
        # letterboxed 640x480 -> 320x320: content is 320x240 from y=40
        ([record_letterbox((640, 480), (320, 320))], (320, 320), [80, 100, 240, 220]),
        # cropped to the right half: x shifts by 320 pixels of the original
        ([record_crop((640, 480), (320, 0, 320, 480))], (320, 480), [-160, 120, 160, 360]),
    ],
)
def test_boxes_in_frame_follow_the_transforms(transforms, frame_wh, expected):
    boxes = boxes_in_frame(np.array([[0.25, 0.25, 0.75, 0.75]]), transforms, frame_wh)
    np.testing.assert_allclose(boxes[0], expected, atol=1e-3)


def test_points_in_frame_follow_the_transforms():
    points = points_in_frame(
        np.array([[[0.5, 0.5], [0.0, 0.0]]]), [record_letterbox((640, 480), (320, 320))], (320, 320)
    )
    np.testing.assert_allclose(points[0], [[160, 160], [0, 40]], atol=1e-3)


@pytest.mark.parametrize(
    ("image_wh", "line_width", "font_scale", "expected"),
    [
        ((640, 480), 0, 0.0, Style(2, 0.6, 1)),  # derived from the size
        ((1920, 1080), 0, 0.0, Style(4, 1.35, 2)),
        ((160, 120), 0, 0.0, Style(1, 0.35, 1)),  # never below readable
        ((640, 480), 5, 1.0, Style(5, 1.0, 2)),  # given
    ],
)
def test_style_for_size(image_wh, line_width, font_scale, expected):
    assert Style.for_size(image_wh, line_width, font_scale) == expected


@pytest.mark.parametrize(
    ("readings", "expected"),
    [
        # first reading: the fallback (the average so far)
        ([(10.0, 100, 7.5)], 7.5),
        # 30 calls in one second
        ([(10.0, 100, 0.0), (11.0, 130, 0.0)], 30.0),
        # 12 calls in half a second
        ([(10.0, 100, 0.0), (10.5, 112, 0.0)], 24.0),
    ],
)
def test_rate_meter(readings, expected):
    meter = RateMeter()
    for now, count, fallback in readings:
        meter.update(now, count, fallback)
    assert meter.rate == pytest.approx(expected)


def test_rate_meter_wants_a_reading_once_per_window():
    meter = RateMeter(window_s=1.0)
    assert meter.due(5.0)
    meter.update(5.0, 0)
    assert not meter.due(5.9)
    assert meter.due(6.0)


def test_classification_lines_keep_the_top_k():
    c = Classifications(
        class_names=["cat", "dog", "fox"], confidence=[0.9, 0.05, 0.01], class_id=[3, 1, 2]
    )
    assert classification_lines(c, 2) == ["cat 0.90", "dog 0.05"]


def overlay(frames, params=None, **inputs):
    params = {"stats": False, **(params or {})}
    run = run_node(Overlay, params, inputs={"frames": frames, **inputs})
    return run.sent["annotated"]


def test_overlay_draws_the_box_in_its_class_colour_without_touching_the_input():
    frame = black_frame()
    (out,) = overlay([frame], {"labels": False, "line_width": 2}, detections=[one_box()])
    color = class_color(2)
    image = out.image
    assert is_color(image[120, 80], color)  # left edge, at x = 0.25 * 320
    assert is_color(image[60, 160], color)  # top edge, at y = 0.25 * 240
    assert is_color(image[179, 240], color)  # bottom-right corner region
    assert (image[120, 160] == 0).all()  # the inside is left as it was
    assert (image[10, 10] == 0).all()
    assert not frame.image.any()  # the input frame is unchanged
    assert out.meta["color"] == "bgr"


def test_overlay_draws_the_label_above_the_box():
    (with_label,) = overlay([black_frame()], detections=[one_box()])
    (without,) = overlay([black_frame()], {"labels": False}, detections=[one_box()])
    above = (slice(35, 58), slice(82, 200))  # just above the box's top edge at y = 60
    assert with_label.image[above].any()
    assert not without.image[above].any()


def test_overlay_maps_boxes_onto_a_letterboxed_frame():
    frame = black_frame(320, 320, transforms=[record_letterbox((640, 480), (320, 320))])
    (out,) = overlay([frame], {"labels": False}, detections=[one_box(xyxy=(0, 0, 1, 1))])
    color = class_color(2)
    # the whole original image is the content region y 40..280 of the frame
    assert is_color(out.image[40, 160], color)
    assert is_color(out.image[279, 160], color)
    assert not out.image[20, 160].any()  # the padding above is not the box


def test_overlay_draws_keypoints_and_skips_low_confidence_boxes():
    kp = np.array([[[0.5, 0.5]]], np.float32)
    dets = one_box(keypoints=kp)
    (out,) = overlay([black_frame()], {"labels": False}, detections=[dets])
    assert is_color(out.image[120, 160], class_color(2))
    (hidden,) = overlay(
        [black_frame()], {"labels": False, "min_confidence": 0.95}, detections=[dets]
    )
    assert not hidden.image.any()


def test_overlay_lists_classifications_top_left():
    c = Classifications(class_names=["cat"], confidence=[0.9], class_id=[0], seq=0)
    (out,) = overlay([black_frame()], classifications=[c])
    (none,) = overlay([black_frame()], {"top_k": 0}, classifications=[c])
    assert (out.image[:30, :80] == 255).any()  # white text
    assert not none.image.any()


def test_overlay_stats_corner_shows_up_top_right_only_when_asked():
    frame = black_frame().replace(image=np.full((240, 320, 3), 90, np.uint8), t_capture_ns=1)
    (shown,) = overlay([frame], {"stats": True})
    (hidden,) = overlay([frame], {"stats": False})
    corner = shown.image[:30, 260:]
    assert (corner < 90).any()  # the darkened band
    assert (corner == 255).any()  # the text
    assert (hidden.image == 90).all()
    assert (shown.image[100:, :] == 90).all()  # nothing elsewhere


def test_overlay_joins_detections_on_seq_and_draws_each_on_its_own_frame():
    frames = [black_frame(seq=s) for s in range(3)]
    # no detections for seq 1: that frame's partner never comes, so it is not drawn
    dets = [one_box(seq=0, class_id=0), one_box(seq=2, class_id=5)]
    out = overlay(frames, {"labels": False}, detections=dets)
    assert [f.seq for f in out] == [0, 2]
    assert is_color(out[0].image[120, 80], class_color(0))
    assert is_color(out[1].image[120, 80], class_color(5))


def test_overlay_turns_grey_frames_into_bgr():
    frame = Frame(image=np.full((48, 64), 128, np.uint8), seq=0)
    (out,) = overlay([frame])
    assert out.image.shape == (48, 64, 3)
    assert (out.image == 128).all()
    assert out.meta["color"] == "bgr"

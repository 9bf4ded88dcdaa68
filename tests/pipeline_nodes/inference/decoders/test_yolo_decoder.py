"""Tests of the raw YOLO decoder: both layouts, class-wise NMS, thresholds."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline_nodes.inference.decoders import DecoderError, YOLOConfig, YOLODecoder
from pipeline_nodes.inference.decoders.yolo import decode_yolo, yolo_rows

SIZE = 640
N = 20  # candidates; rows past the listed ones score 0
# (cx, cy, w, h) px, class, score
CANDIDATES = [
    ((100, 100, 50, 50), 0, 0.9),  # kept
    ((102, 100, 50, 50), 0, 0.8),  # same class, IoU 0.92 with the first: suppressed
    ((100, 100, 50, 50), 1, 0.7),  # same place, other class: kept (class-wise NMS)
    ((400, 300, 100, 60), 2, 0.6),  # elsewhere: kept
    ((500, 500, 10, 10), 0, 0.1),  # under the threshold
]
BOX0 = np.array([75, 75, 125, 125]) / SIZE
BOX3 = np.array([350, 270, 450, 330]) / SIZE


def v8_output(num_classes: int = 3) -> np.ndarray:
    out = np.zeros((1, 4 + num_classes, N), np.float32)
    for i, (box, cls, score) in enumerate(CANDIDATES):
        out[0, :4, i] = box
        out[0, 4 + cls, i] = score
        out[0, 4 + (cls + 1) % num_classes, i] = score / 3  # a weaker second class
    return out


def v5_output(num_classes: int = 3) -> np.ndarray:
    out = np.zeros((1, N, 5 + num_classes), np.float32)
    for i, (box, cls, score) in enumerate(CANDIDATES):
        out[0, i, :4] = box
        out[0, i, 4] = 0.5  # objectness: score = 0.5 * class score
        out[0, i, 5 + cls] = score
    return out


def test_v8_layout_with_class_wise_nms():
    detections = YOLODecoder(YOLOConfig(labels=("a", "b", "c"))).decode(
        {"output0": v8_output()}, (SIZE, SIZE)
    )
    assert detections.class_names == ("a", "b", "c")
    assert detections.confidence.tolist() == pytest.approx([0.9, 0.7, 0.6])
    np.testing.assert_allclose(detections.xyxy[0], BOX0, atol=1e-6)
    np.testing.assert_allclose(detections.xyxy[1], BOX0, atol=1e-6)
    np.testing.assert_allclose(detections.xyxy[2], BOX3, atol=1e-6)
    assert detections.image_wh == (SIZE, SIZE)
    assert detections.keypoints is None


def test_class_agnostic_nms_suppresses_across_classes():
    decoder = YOLODecoder(YOLOConfig(class_agnostic=True))
    detections = decoder.decode({"output0": v8_output()}, (SIZE, SIZE))
    assert detections.class_id.tolist() == [0, 2]


def test_v5_layout_multiplies_objectness():
    detections = YOLODecoder().decode({"output": v5_output()}, (SIZE, SIZE))
    # 0.5 * (0.9, 0.8, 0.7, 0.6, 0.1): 0.4 suppressed, 0.05 under the default 0.25
    assert detections.class_id.tolist() == [0, 1, 2]
    assert detections.confidence.tolist() == pytest.approx([0.45, 0.35, 0.3])
    np.testing.assert_allclose(detections.xyxy[2], BOX3, atol=1e-6)


@pytest.mark.parametrize(
    ("output", "layout", "num_classes", "expected"),
    [
        # v8 attributes-first, guessed
        (v8_output(), "auto", None, "v8"),
        # v8 transposed, told the class count
        (v8_output().transpose(0, 2, 1), "auto", 3, "v8"),
        # v5 rows, guessed
        (v5_output(), "auto", None, "v5"),
        # v5 attributes-first, told the layout and classes
        (v5_output().transpose(0, 2, 1), "v5", 3, "v5"),
        # v8 transposed and told only the layout: the shorter axis holds attributes
        (v8_output().transpose(0, 2, 1), "v8", None, "v8"),
    ],
)
def test_layouts_are_recognised(output, layout, num_classes, expected):
    rows, chosen = yolo_rows(output, layout, num_classes)
    assert chosen == expected
    assert rows.shape[0] == N
    np.testing.assert_allclose(rows[0, :4], [100, 100, 50, 50])


def test_a_class_count_that_fits_no_layout_is_reported():
    with pytest.raises(DecoderError, match="fits no v8/v5 layout with 5 classes"):
        yolo_rows(v8_output(), "auto", 5)


def test_thresholds_and_per_label_thresholds():
    config = YOLOConfig(
        labels=("a", "b", "c"), default_minimum_confidence=0.65, label_confidences={"a": 0.05}
    )
    detections = YOLODecoder(config).decode({"o": v8_output()}, (SIZE, SIZE))
    # a: 0.9 kept (0.8 suppressed), 0.1 kept (>= 0.05); b 0.7 >= 0.65 kept; c 0.6 dropped
    assert detections.class_names == ("a", "b", "a")
    assert detections.confidence.tolist() == pytest.approx([0.9, 0.7, 0.1])


def test_max_detections():
    detections = YOLODecoder(YOLOConfig(max_detections=2)).decode({"o": v8_output()}, (SIZE, SIZE))
    assert detections.confidence.tolist() == pytest.approx([0.9, 0.7])


def test_normalised_boxes_and_a_non_square_input():
    out = v8_output()
    out[0, :4, :] /= np.array([[SIZE], [SIZE], [SIZE], [SIZE]], np.float32)
    boxes = decode_yolo(out, (SIZE, 480), normalized=True)
    np.testing.assert_allclose(boxes.xyxy[0], BOX0, atol=1e-6)
    pixels = decode_yolo(v8_output(), (SIZE, 480))
    np.testing.assert_allclose(pixels.xyxy[0], BOX0 * [1, SIZE / 480, 1, SIZE / 480], atol=1e-6)


def test_several_outputs_need_the_name_or_a_remap():
    outputs = {"scores_aux": np.zeros((1, 3)), "pred": v8_output()}
    with pytest.raises(DecoderError, match="'output'"):
        YOLODecoder().decode(outputs, (SIZE, SIZE))
    detections = YOLODecoder(YOLOConfig(remap={"pred": "output"})).decode(outputs, (SIZE, SIZE))
    assert len(detections) == 3


def test_nothing_above_threshold_gives_empty_detections():
    detections = YOLODecoder(YOLOConfig(default_minimum_confidence=0.95)).decode(
        {"o": v8_output()}, (SIZE, SIZE)
    )
    assert len(detections) == 0
    assert detections.xyxy.shape == (0, 4)

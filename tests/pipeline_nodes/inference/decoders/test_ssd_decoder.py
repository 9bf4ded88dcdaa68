"""Tests of the post-processed SSD decoder: box order, names, thresholds, pixels, counts."""

from __future__ import annotations

from contextlib import nullcontext as does_not_raise

import numpy as np
import pytest

from pipeline_nodes.inference.decoders import DecoderError, SSDConfig, SSDDecoder, make_decoder
from pipeline_nodes.inference.decoders.ssd import box_order_indices, decode_ssd

# One box, stored four ways: the same object at x 0.1..0.5, y 0.2..0.9.
XYXY = [0.1, 0.2, 0.5, 0.9]


def ssd_outputs(
    boxes: list[list[float]],
    classes: list[float],
    scores: list[float],
    count: int | None = None,
    names: tuple[str, str, str, str] = ("boxes", "classes", "scores", "count"),
) -> dict[str, np.ndarray]:
    outputs = {
        names[0]: np.array([boxes], np.float32),
        names[1]: np.array([classes], np.float32),
        names[2]: np.array([scores], np.float32),
    }
    if count is not None:
        outputs[names[3]] = np.array([count], np.float32)
    return outputs


@pytest.mark.parametrize(
    ("box_order", "stored"),
    [
        # x_min, y_min, x_max, y_max
        ("xyxy", [0.1, 0.2, 0.5, 0.9]),
        # TF / TFLite: y_min, x_min, y_max, x_max
        ("yxyx", [0.2, 0.1, 0.9, 0.5]),
        # Viam's xmin_ymin_xmax_ymax_order for TF models
        ([1, 0, 3, 2], [0.2, 0.1, 0.9, 0.5]),
        # identity permutation
        ((0, 1, 2, 3), [0.1, 0.2, 0.5, 0.9]),
        # an odd one: x_max, y_max, x_min, y_min
        ([2, 3, 0, 1], [0.5, 0.9, 0.1, 0.2]),
    ],
)
def test_box_order_is_applied(box_order, stored):
    detections = SSDDecoder(SSDConfig(box_order=box_order)).decode(
        ssd_outputs([stored], [0], [0.9]), (300, 300)
    )
    np.testing.assert_allclose(detections.xyxy, [XYXY], atol=1e-7)


def test_the_wrong_box_order_transposes_the_box():
    stored = [0.2, 0.1, 0.9, 0.5]  # a TF model's yxyx
    as_xyxy = SSDDecoder(SSDConfig(box_order="xyxy")).decode(
        ssd_outputs([stored], [0], [0.9]), (300, 300)
    )
    np.testing.assert_allclose(as_xyxy.xyxy, [stored], atol=1e-7)
    assert not np.allclose(as_xyxy.xyxy, [XYXY])


@pytest.mark.parametrize(
    ("box_order", "expectation"),
    [
        # named orders, any case
        ("YXYX", does_not_raise()),
        # a permutation
        ([3, 2, 1, 0], does_not_raise()),
        # repeated index
        ([0, 0, 1, 2], pytest.raises(DecoderError, match="four distinct integers")),
        # too short
        ([0, 1, 2], pytest.raises(DecoderError, match="four distinct integers")),
        # unknown name
        ("cxcywh", pytest.raises(DecoderError, match="not one of")),
    ],
)
def test_box_order_validation(box_order, expectation):
    with expectation:
        box_order_indices(box_order)


def test_box_order_is_required():
    with pytest.raises(DecoderError, match=r"needs option.*box_order"):
        make_decoder("ssd")


def test_viam_tensor_names_are_recognised():
    outputs = ssd_outputs([XYXY], [1], [0.8], names=("location", "category", "score", "n"))
    detections = SSDDecoder(SSDConfig(box_order="xyxy", labels=("a", "b"))).decode(
        outputs, (300, 300)
    )
    assert detections.class_names == ("b",)


def test_tflite_postprocess_names_are_recognised():
    names = ("TFLite_Detection_PostProcess", "TFLite_Detection_PostProcess:1",
             "TFLite_Detection_PostProcess:2", "TFLite_Detection_PostProcess:3")  # fmt: skip
    outputs = ssd_outputs([XYXY, XYXY], [0, 0], [0.9, 0.8], count=1, names=names)
    detections = SSDDecoder(SSDConfig(box_order="xyxy")).decode(outputs, (300, 300))
    assert len(detections) == 1


def test_remap_assigns_roles_to_unknown_names():
    outputs = ssd_outputs([XYXY], [0], [0.9], names=("o1", "o2", "o3", "o4"))
    config = SSDConfig(box_order="xyxy", remap={"o1": "boxes", "o2": "classes", "o3": "scores"})
    assert len(SSDDecoder(config).decode(outputs, (300, 300))) == 1


def test_missing_output_error_names_the_tensor_and_lists_the_outputs():
    outputs = ssd_outputs([XYXY], [0], [0.9], names=("boxes", "labels", "scores", "count"))
    with pytest.raises(
        DecoderError, match=r"'classes'.*'category'.*\['boxes', 'labels', 'scores'\]"
    ):
        SSDDecoder(SSDConfig(box_order="xyxy")).decode(outputs, (300, 300))


def test_remap_of_an_absent_tensor_is_reported():
    config = SSDConfig(box_order="xyxy", remap={"nope": "boxes"})
    with pytest.raises(DecoderError, match="'nope'"):
        SSDDecoder(config).decode(ssd_outputs([XYXY], [0], [0.9]), (300, 300))


def test_count_limits_the_valid_rows():
    outputs = ssd_outputs([XYXY] * 3, [0, 0, 0], [0.9, 0.8, 0.7], count=2)
    detections = SSDDecoder(SSDConfig(box_order="xyxy")).decode(outputs, (300, 300))
    assert detections.confidence.tolist() == pytest.approx([0.9, 0.8])


def test_pixel_boxes_are_normalised_by_the_input_size():
    outputs = ssd_outputs([[32, 24, 160, 120]], [0], [0.9])
    config = SSDConfig(box_order="xyxy", normalized=False)
    detections = SSDDecoder(config).decode(outputs, (320, 240))
    np.testing.assert_allclose(detections.xyxy, [[0.1, 0.1, 0.5, 0.5]], atol=1e-7)


def test_per_label_thresholds_override_the_default():
    labels = ("person", "cat", "dog")
    outputs = ssd_outputs([XYXY] * 5, [0, 1, 2, 0, 1], [0.6, 0.7, 0.3, 0.4, 0.85])
    config = SSDConfig(
        box_order="xyxy",
        labels=labels,
        default_minimum_confidence=0.5,
        label_confidences={"cat": 0.8, "dog": 0.2},
    )
    detections = SSDDecoder(config).decode(outputs, (300, 300))
    # person 0.6 >= 0.5 kept; cat 0.7 < 0.8 dropped; dog 0.3 >= 0.2 kept; person 0.4 dropped;
    # cat 0.85 kept; highest first
    assert detections.class_names == ("cat", "person", "dog")
    assert detections.confidence.tolist() == pytest.approx([0.85, 0.6, 0.3])


def test_class_id_offset_shifts_ids_before_label_lookup():
    labels = ("background", "person", "bicycle")
    outputs = ssd_outputs([XYXY, XYXY], [0.0, 1.0], [0.9, 0.8])
    config = SSDConfig(box_order="xyxy", labels=labels, class_id_offset=1)
    detections = SSDDecoder(config).decode(outputs, (300, 300))
    assert detections.class_id.tolist() == [1, 2]
    assert detections.class_names == ("person", "bicycle")


def test_ids_outside_the_labels_are_named_by_number():
    detections = SSDDecoder(SSDConfig(box_order="xyxy", labels=("a",))).decode(
        ssd_outputs([XYXY], [7], [0.9]), (300, 300)
    )
    assert detections.class_names == ("7",)


def test_optional_nms_is_class_wise():
    boxes = [XYXY, [0.11, 0.2, 0.5, 0.9], XYXY]
    outputs = ssd_outputs(boxes, [0, 0, 1], [0.9, 0.8, 0.7])
    without = SSDDecoder(SSDConfig(box_order="xyxy")).decode(outputs, (300, 300))
    with_nms = SSDDecoder(SSDConfig(box_order="xyxy", iou_threshold=0.5)).decode(
        outputs, (300, 300)
    )
    assert len(without) == 3
    assert with_nms.class_id.tolist() == [0, 1]


def test_max_detections_and_clipping():
    outputs = ssd_outputs([[-0.1, 0.2, 1.3, 0.9], XYXY], [0, 0], [0.7, 0.9])
    config = SSDConfig(box_order="xyxy", max_detections=1)
    detections = SSDDecoder(config).decode(outputs, (300, 300))
    assert detections.confidence.tolist() == pytest.approx([0.9])
    clipped = SSDDecoder(SSDConfig(box_order="xyxy")).decode(outputs, (300, 300))
    np.testing.assert_allclose(clipped.xyxy[1], [0.0, 0.2, 1.0, 0.9], atol=1e-7)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        # a threshold above 1
        ({"default_minimum_confidence": 1.5}, "default_minimum_confidence"),
        # a per-label threshold below 0
        ({"label_confidences": {"cat": -0.1}}, "label_confidences"),
    ],
)
def test_thresholds_are_validated(options, message):
    with pytest.raises(DecoderError, match=message):
        SSDConfig(box_order="xyxy", **options)


def test_decode_function_accepts_arrays_without_batch():
    boxes = decode_ssd(
        np.array([[0.2, 0.1, 0.9, 0.5]]),
        np.array([0]),
        np.array([0.9]),
        box_order="yxyx",
        input_wh=(300, 300),
    )
    np.testing.assert_allclose(boxes.xyxy, [XYXY], atol=1e-7)
    assert boxes.keypoints is None


def test_mismatched_lengths_are_reported():
    with pytest.raises(DecoderError, match="'scores' has 1 values for 2 boxes"):
        decode_ssd(
            np.zeros((1, 2, 4)), np.zeros((1, 2)), np.zeros((1, 1)),
            box_order="xyxy", input_wh=(1, 1),
        )  # fmt: skip

"""Tests of the BlazeFace decoder on synthetic regressor/classificator tensors."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline_nodes.inference.decoders import BlazeFaceConfig, BlazeFaceDecoder, DecoderError
from pipeline_nodes.inference.decoders.anchors import BLAZEFACE_ANCHORS, generate_ssd_anchors
from pipeline_nodes.inference.decoders.blazeface import decode_blazeface

ANCHORS = generate_ssd_anchors(BLAZEFACE_ANCHORS["short_range"])
S = 128.0  # input size: regressors are in input pixels


def empty_outputs(n: int = 896) -> dict[str, np.ndarray]:
    return {
        "regressors": np.zeros((1, n, 16), np.float32),
        "classificators": np.full((1, n, 1), -50.0, np.float32),
    }


def put_face(
    outputs: dict[str, np.ndarray],
    anchor: int,
    *,
    logit: float,
    dxy: tuple[float, float] = (0.0, 0.0),
    wh: tuple[float, float] = (32.0, 32.0),
) -> None:
    """A face on ``anchor``: centre offset ``dxy`` and size ``wh`` in input pixels, and
    keypoint k at offset (k, -k) px from the anchor centre."""
    row = [*dxy, *wh]
    for k in range(6):
        row += [float(k), float(-k)]
    outputs["regressors"][0, anchor] = row
    outputs["classificators"][0, anchor, 0] = logit


def sigmoid(x: float) -> float:
    return float(1 / (1 + np.exp(-x)))


def test_a_face_on_a_known_anchor_decodes_to_a_known_box():
    outputs = empty_outputs()
    anchor = 674  # a stride-16 anchor: cell (x=3, y=3) of the 8 x 8 grid, centre 0.4375
    ax, ay = ANCHORS[anchor, :2]
    put_face(outputs, anchor, logit=3.0, dxy=(4.0, -8.0), wh=(32.0, 40.0))
    detections = BlazeFaceDecoder().decode(outputs, (128, 128))
    assert len(detections) == 1
    cx, cy = ax + 4 / S, ay - 8 / S
    expected = [cx - 16 / S, cy - 20 / S, cx + 16 / S, cy + 20 / S]
    np.testing.assert_allclose(detections.xyxy[0], expected, atol=1e-6)
    assert detections.confidence[0] == pytest.approx(sigmoid(3.0), abs=1e-6)
    assert detections.class_names == ("face",)
    assert detections.class_id.tolist() == [0]
    assert detections.image_wh == (128, 128)
    assert detections.keypoints is not None
    assert detections.keypoints.shape == (1, 6, 2)
    expected_kps = [[ax + k / S, ay - k / S] for k in range(6)]
    np.testing.assert_allclose(detections.keypoints[0], expected_kps, atol=1e-6)


def test_anchor_centres_match_the_grid():
    # anchor 0 is the first stride-8 cell, anchor 512 the first stride-16 cell
    outputs = empty_outputs()
    put_face(outputs, 0, logit=5.0, wh=(8.0, 8.0))
    put_face(outputs, 517, logit=4.0, wh=(8.0, 8.0))
    boxes = BlazeFaceDecoder().decode_arrays(outputs, (128, 128))
    centres = (boxes.xyxy[:, :2] + boxes.xyxy[:, 2:]) / 2
    np.testing.assert_allclose(centres, [[4 / S, 4 / S], [8 / S, 8 / S]], atol=1e-6)


@pytest.mark.parametrize(
    ("logit", "min_confidence", "kept"),
    [
        # sigmoid(0) = 0.5: at the threshold is kept
        (0.0, 0.5, 1),
        # just below
        (-0.01, 0.5, 0),
        # a stricter threshold
        (1.0, 0.75, 0),
        # huge logits are clipped to 100, not overflowing
        (1e6, 0.99, 1),
    ],
)
def test_min_confidence_threshold(logit, min_confidence, kept):
    outputs = empty_outputs()
    put_face(outputs, 100, logit=logit)
    decoder = BlazeFaceDecoder(BlazeFaceConfig(min_confidence=min_confidence))
    assert len(decoder.decode(outputs, (128, 128))) == kept


def test_weighted_nms_averages_overlapping_faces():
    outputs = empty_outputs()
    # two anchors of one cell (same centre), boxes 32 and 36 px, scores 0.8 and 0.2
    put_face(outputs, 674, logit=float(np.log(0.8 / 0.2)), wh=(32.0, 32.0))
    put_face(outputs, 675, logit=float(np.log(0.2 / 0.8)), wh=(36.0, 36.0))
    decoder = BlazeFaceDecoder(BlazeFaceConfig(min_confidence=0.1, nms="weighted"))
    boxes = decoder.decode_arrays(outputs, (128, 128))
    assert len(boxes.xyxy) == 1
    half = (0.8 * 16 + 0.2 * 18) / S
    ax, ay = ANCHORS[674, :2]
    np.testing.assert_allclose(
        boxes.xyxy[0], [ax - half, ay - half, ax + half, ay + half], atol=1e-6
    )
    assert boxes.confidence[0] == pytest.approx(0.8, abs=1e-6)


def test_plain_nms_keeps_the_best_of_overlapping_faces():
    outputs = empty_outputs()
    put_face(outputs, 674, logit=float(np.log(0.8 / 0.2)), wh=(32.0, 32.0))
    put_face(outputs, 675, logit=float(np.log(0.2 / 0.8)), wh=(36.0, 36.0))
    put_face(outputs, 0, logit=2.0, wh=(8.0, 8.0))  # far away: kept
    decoder = BlazeFaceDecoder(BlazeFaceConfig(min_confidence=0.1, nms="plain"))
    boxes = decoder.decode_arrays(outputs, (128, 128))
    assert len(boxes.xyxy) == 2
    ax, ay = ANCHORS[674, :2]
    # the far face (0.88) first, then the better of the pair, unchanged (not averaged)
    assert boxes.confidence.tolist() == pytest.approx([sigmoid(2.0), 0.8], abs=1e-6)
    np.testing.assert_allclose(
        boxes.xyxy[1], [ax - 16 / S, ay - 16 / S, ax + 16 / S, ay + 16 / S], atol=1e-6
    )


def test_boxes_are_clipped_but_keypoints_are_not():
    outputs = empty_outputs()
    put_face(outputs, 0, logit=3.0, dxy=(-10.0, -10.0), wh=(20.0, 20.0))
    boxes = BlazeFaceDecoder().decode_arrays(outputs, (128, 128))
    assert boxes.xyxy.min() == 0.0
    assert boxes.keypoints is not None
    assert boxes.keypoints[0, 5, 1] < 0  # keypoint 5 is 5 px above an anchor 4 px from the top


def test_full_range_variant_decodes_2304_rows_with_its_own_names():
    anchors = generate_ssd_anchors(BLAZEFACE_ANCHORS["full_range"])
    regressors = np.zeros((1, 2304, 16), np.float32)
    scores = np.full((1, 2304, 1), -50.0, np.float32)
    regressors[0, 1000, :4] = [0, 0, 48, 48]
    scores[0, 1000, 0] = 2.0
    outputs = {"reshaped_regressor_face_4": regressors, "reshaped_classifier_face_4": scores}
    detections = BlazeFaceDecoder(BlazeFaceConfig(variant="full_range")).decode(outputs, (192, 192))
    ax, ay = anchors[1000, :2]
    np.testing.assert_allclose(
        detections.xyxy[0], [ax - 24 / 192, ay - 24 / 192, ax + 24 / 192, ay + 24 / 192], atol=1e-6
    )


def test_unknown_output_names_are_told_apart_by_shape():
    named = empty_outputs()
    put_face(named, 300, logit=3.0)
    outputs = {"Identity_7": named["classificators"], "Identity_3": named["regressors"]}
    assert len(BlazeFaceDecoder().decode(outputs, (128, 128))) == 1


def test_remap_names_outputs_explicitly():
    named = empty_outputs()
    put_face(named, 300, logit=3.0)
    outputs = {"a": named["regressors"], "b": named["classificators"], "c": np.zeros(3)}
    decoder = BlazeFaceDecoder(BlazeFaceConfig(remap={"a": "regressors", "b": "classificators"}))
    assert len(decoder.decode(outputs, (128, 128))) == 1


def test_missing_output_names_the_role_and_the_model_outputs():
    outputs = {"x": np.zeros((1, 896, 16)), "y": np.zeros((1, 896, 16)), "z": np.zeros(1)}
    with pytest.raises(DecoderError, match=r"'regressors'.*model outputs: \['x', 'y', 'z'\]"):
        BlazeFaceDecoder().decode(outputs, (128, 128))


def test_anchor_count_mismatch_is_reported():
    with pytest.raises(DecoderError, match="896 anchors"):
        BlazeFaceDecoder().decode(empty_outputs(n=2304), (128, 128))


def test_unknown_variant_lists_the_variants():
    with pytest.raises(DecoderError, match="short_range"):
        BlazeFaceConfig(variant="long_range")


def test_no_faces_give_empty_detections_with_keypoint_shape():
    detections = BlazeFaceDecoder().decode(empty_outputs(), (128, 128))
    assert len(detections) == 0
    assert detections.keypoints is not None
    assert detections.keypoints.shape == (0, 6, 2)


def test_decode_function_works_on_plain_arrays():
    outputs = empty_outputs()
    put_face(outputs, 10, logit=3.0)
    boxes = decode_blazeface(
        outputs["regressors"][0], outputs["classificators"][0, :, 0], ANCHORS, (128, 128)
    )
    assert boxes.xyxy.shape == (1, 4)
    assert boxes.class_id.dtype == np.int32


def test_max_detections_keeps_the_best():
    outputs = empty_outputs()
    for i, anchor in enumerate((0, 40, 80, 120)):  # far apart cells
        put_face(outputs, anchor, logit=1.0 + i, wh=(4.0, 4.0))
    decoder = BlazeFaceDecoder(BlazeFaceConfig(max_detections=2))
    boxes = decoder.decode_arrays(outputs, (128, 128))
    assert boxes.confidence.tolist() == pytest.approx([sigmoid(4.0), sigmoid(3.0)], abs=1e-6)

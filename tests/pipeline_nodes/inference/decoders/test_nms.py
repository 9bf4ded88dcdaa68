"""Tests of plain, class-wise and weighted non-maximum suppression."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline_nodes.inference.decoders.nms import iou_matrix, nms, weighted_nms

A = [0.0, 0.0, 0.4, 0.4]
A_SHIFTED = [0.02, 0.0, 0.42, 0.4]  # IoU with A: 0.38/0.42 = 0.905
FAR = [0.6, 0.6, 0.9, 0.9]


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        # identical
        (A, A, 1.0),
        # disjoint
        (A, FAR, 0.0),
        # half overlap along x: 0.2*0.4 / (0.16 + 0.16 - 0.08)
        (A, [0.2, 0.0, 0.6, 0.4], 1 / 3),
        # one inside the other: 0.04 / 0.16
        (A, [0.0, 0.0, 0.2, 0.2], 0.25),
        # degenerate box: no area, no overlap
        (A, [0.1, 0.1, 0.1, 0.1], 0.0),
    ],
)
def test_iou_matrix(a, b, expected):
    assert iou_matrix(np.array([a]), np.array([b]))[0, 0] == pytest.approx(expected)


def test_nms_suppresses_same_class_overlaps_and_orders_by_score():
    boxes = np.array([A_SHIFTED, A, FAR])
    keep = nms(boxes, np.array([0.8, 0.9, 0.5]), 0.5)
    assert keep.tolist() == [1, 2]


def test_nms_threshold_is_an_upper_bound_on_kept_overlap():
    boxes = np.array([A, A_SHIFTED])
    assert nms(boxes, np.array([0.9, 0.8]), 0.95).tolist() == [0, 1]


def test_class_wise_nms_keeps_overlapping_boxes_of_different_classes():
    boxes = np.array([A, A_SHIFTED, A])
    scores = np.array([0.9, 0.8, 0.7])
    keep = nms(boxes, scores, 0.5, class_id=np.array([0, 0, 1]))
    assert keep.tolist() == [0, 2]
    assert nms(boxes, scores, 0.5).tolist() == [0]  # class-agnostic for contrast


def test_nms_max_detections_and_empty_input():
    boxes = np.array([A, FAR, [0.45, 0.0, 0.55, 0.1]])
    assert nms(boxes, np.array([0.2, 0.9, 0.5]), 0.5, max_detections=2).tolist() == [1, 2]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def test_weighted_nms_averages_a_cluster_by_score():
    boxes = np.array([A, A_SHIFTED, FAR])
    scores = np.array([0.6, 0.2, 0.9])
    keypoints = np.array([[[0.1, 0.1]], [[0.3, 0.1]], [[0.7, 0.7]]])
    merged, merged_scores, merged_kps = weighted_nms(boxes, scores, 0.3, keypoints=keypoints)
    assert merged_scores.tolist() == pytest.approx([0.9, 0.6])
    np.testing.assert_allclose(merged[0], FAR)
    np.testing.assert_allclose(merged[1], 0.75 * np.array(A) + 0.25 * np.array(A_SHIFTED))
    assert merged_kps is not None
    np.testing.assert_allclose(merged_kps[1], [[0.15, 0.1]])


def test_weighted_nms_with_zero_scores_uses_equal_weights():
    merged, _, kps = weighted_nms(np.array([A, A_SHIFTED]), np.array([0.0, 0.0]), 0.3)
    np.testing.assert_allclose(merged[0], (np.array(A) + np.array(A_SHIFTED)) / 2)
    assert kps is None


def test_weighted_nms_max_detections_and_empty():
    boxes = np.array([A, FAR])
    merged, _, _ = weighted_nms(boxes, np.array([0.3, 0.9]), 0.3, max_detections=1)
    np.testing.assert_allclose(merged, [FAR])
    empty, empty_scores, empty_kps = weighted_nms(
        np.zeros((0, 4)), np.zeros(0), 0.3, keypoints=np.zeros((0, 6, 2))
    )
    assert empty.shape == (0, 4)
    assert empty_scores.shape == (0,)
    assert empty_kps is not None
    assert empty_kps.shape == (0, 6, 2)

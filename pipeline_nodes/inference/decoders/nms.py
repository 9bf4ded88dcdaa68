"""Non-maximum suppression: OpenCV's (plain and class-wise) and MediaPipe's weighted variant.

Boxes are ``(N, 4)`` xyxy in any consistent unit (decoders pass coordinates normalised to the
model input); overlap is intersection over union with area ``w * h`` (no ``+1`` pixel
convention). Plain NMS calls ``cv2.dnn.NMSBoxes``, class-wise NMS ``cv2.dnn.NMSBoxesBatched``
(boxes of different classes never suppress each other); OpenCV is imported on first use and
its absence raises ``MissingDependencyError``. OpenCV drops boxes whose score is exactly 0.
Weighted NMS (MediaPipe's ``WEIGHTED`` algorithm, used by its face detectors) is plain numpy:
each kept box is the score-weighted mean of the boxes it suppresses, which steadies boxes
from frame to frame.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.errors import MissingDependencyError

__all__ = ["iou_matrix", "nms", "weighted_nms"]


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise MissingDependencyError(
            "opencv-python-headless", extra="vision", purpose="non-maximum suppression"
        ) from None
    return cv2


def iou_matrix(a: npt.ArrayLike, b: npt.ArrayLike) -> np.ndarray:
    """``(N, M)`` intersection over union of xyxy boxes ``a`` ``(N, 4)`` and ``b`` ``(M, 4)``."""
    p = np.asarray(a, np.float64).reshape(-1, 4)
    q = np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(p[:, None, 0], q[None, :, 0])
    y1 = np.maximum(p[:, None, 1], q[None, :, 1])
    x2 = np.minimum(p[:, None, 2], q[None, :, 2])
    y2 = np.minimum(p[:, None, 3], q[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_p = np.clip(p[:, 2] - p[:, 0], 0, None) * np.clip(p[:, 3] - p[:, 1], 0, None)
    area_q = np.clip(q[:, 2] - q[:, 0], 0, None) * np.clip(q[:, 3] - q[:, 1], 0, None)
    union = area_p[:, None] + area_q[None, :] - inter
    iou: np.ndarray = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return iou


def nms(
    xyxy: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float,
    *,
    class_id: np.ndarray | None = None,
    max_detections: int | None = None,
) -> np.ndarray:
    """Indices of the boxes that survive non-maximum suppression, highest score first.

    Args:
        xyxy: ``(N, 4)`` boxes (x_min, y_min, x_max, y_max).
        scores: ``(N,)`` scores; boxes scoring exactly 0 are dropped (OpenCV's rule).
        iou_threshold: a box is suppressed when its IoU with a kept, higher-scoring box is
            above this.
        class_id: ``(N,)`` class per box: suppression then happens only within a class.
        max_detections: keep at most this many (``None``: all).

    Returns:
        ``(K,)`` int64 indices into the inputs, by decreasing score.
    """
    boxes = np.asarray(xyxy, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    if len(boxes) != len(scores):
        raise ValueError(f"nms got {len(boxes)} boxes and {len(scores)} scores")
    if not len(boxes):
        return np.zeros(0, np.int64)
    xywh = boxes.copy()
    xywh[:, 2:] -= xywh[:, :2]
    cv2 = _cv2()
    if class_id is None:
        keep = cv2.dnn.NMSBoxes(xywh, scores, 0.0, float(iou_threshold))
    else:
        ids = np.asarray(class_id, np.int32).reshape(-1)
        keep = cv2.dnn.NMSBoxesBatched(xywh, scores, ids, 0.0, float(iou_threshold))
    keep = np.asarray(keep, np.int64).reshape(-1)
    # OpenCV returns score order already; a stable sort makes it a documented guarantee.
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    return keep if max_detections is None else keep[: max(0, int(max_detections))]


def weighted_nms(
    xyxy: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float,
    *,
    keypoints: np.ndarray | None = None,
    max_detections: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """MediaPipe's weighted non-maximum suppression.

    Repeatedly takes the highest-scoring remaining box and every remaining box whose IoU with
    it is above ``iou_threshold`` (itself included); the output box and keypoints are their
    score-weighted mean, the output score the top box's score.

    Args:
        xyxy: ``(N, 4)`` boxes (x_min, y_min, x_max, y_max).
        scores: ``(N,)`` scores.
        iou_threshold: overlap above which boxes are merged.
        keypoints: ``(N, K, 2)`` keypoints merged with the same weights, or ``None``.
        max_detections: stop after this many outputs (``None``: all).

    Returns:
        ``(xyxy (M, 4), scores (M,), keypoints (M, K, 2) or None)``, float32, by decreasing
        score.
    """
    boxes = np.asarray(xyxy, np.float64).reshape(-1, 4)
    scores_arr = np.asarray(scores, np.float64).reshape(-1)
    kps = None if keypoints is None else np.asarray(keypoints, np.float64)
    limit = len(boxes) if max_detections is None else max(0, int(max_detections))
    remaining = np.argsort(-scores_arr, kind="stable")
    out_boxes: list[np.ndarray] = []
    out_scores: list[float] = []
    out_kps: list[np.ndarray] = []
    while len(remaining) and len(out_boxes) < limit:
        top = remaining[0]
        overlap = iou_matrix(boxes[top], boxes[remaining])[0]
        # The top box always joins its own cluster, even when degenerate (zero area).
        members = remaining[(overlap > iou_threshold) | (remaining == top)]
        remaining = remaining[~np.isin(remaining, members)]
        weights = scores_arr[members]
        total = weights.sum()
        # Zero scores (possible with a threshold of 0) would divide by zero: use equal weights.
        weights = weights / total if total > 0 else np.full(len(members), 1.0 / len(members))
        out_boxes.append(weights @ boxes[members])
        out_scores.append(float(scores_arr[top]))
        if kps is not None:
            out_kps.append(np.tensordot(weights, kps[members], axes=1))
    if not out_boxes:
        empty_kps = None if kps is None else np.zeros((0, *kps.shape[1:]), np.float32)
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), empty_kps
    merged_kps = None if kps is None else np.stack(out_kps).astype(np.float32)
    return (
        np.stack(out_boxes).astype(np.float32),
        np.asarray(out_scores, np.float32),
        merged_kps,
    )

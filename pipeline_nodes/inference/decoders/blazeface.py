"""Decoder for MediaPipe's BlazeFace face detectors (and other anchor-based MediaPipe SSDs).

The models output ``regressors`` ``(1, N, 16)`` float32 and ``classificators`` ``(1, N, 1)``
float32 logits, one row per anchor (see :mod:`.anchors`). A row holds the box centre offset
and size (``dx, dy, w, h``) and 6 keypoints (``x, y`` each), all in input pixels; the centre
and keypoints are relative to the anchor centre. Decoding (MediaPipe's
``TensorsToDetectionsCalculator`` with ``reverse_output_order``): ``x = dx / input_w *
anchor_w + anchor_x``, ``w = w / input_w * anchor_w`` (same for y with the height), score =
sigmoid(logit clipped to +-100). Detections at or above ``min_confidence`` go through
weighted NMS (MediaPipe's choice, default) or plain NMS at IoU 0.3. Output: boxes xyxy
normalised to the model input (clipped to 0..1), keypoints ``(N, 6, 2)`` normalised but not
clipped, class ``face``. The model expects RGB float32 in [-1, 1], letterboxed to a square.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Literal

import numpy as np

from pipeline.messages import Detections

from .anchors import BLAZEFACE_ANCHORS, SsdAnchorOptions, generate_ssd_anchors
from .base import (
    DecodedBoxes,
    DecoderError,
    drop_batch,
    empty_boxes,
    select_outputs,
    sigmoid,
    to_detections,
)
from .nms import nms, weighted_nms

__all__ = [
    "BLAZEFACE_ALIASES",
    "BLAZEFACE_KEYPOINTS",
    "BlazeFaceConfig",
    "BlazeFaceDecoder",
    "decode_blazeface",
]

BLAZEFACE_KEYPOINTS = (
    "right_eye",
    "left_eye",
    "nose_tip",
    "mouth_center",
    "right_ear_tragion",
    "left_ear_tragion",
)
"""BlazeFace keypoints in output order; right/left are the person's own (right eye is on the
image's left for a face looking at the camera)."""

BLAZEFACE_ALIASES: dict[str, tuple[str, ...]] = {
    "regressors": ("reshaped_regressor_face_4", "regressor", "Identity"),
    "classificators": ("reshaped_classifier_face_4", "classifier", "Identity_1"),
}
"""Output names by role, beyond the role's own name (short range/back, full range, exports)."""


def decode_blazeface(
    regressors: np.ndarray,
    classificators: np.ndarray,
    anchors: np.ndarray,
    input_wh: tuple[int, int],
    *,
    min_confidence: float = 0.5,
    iou_threshold: float = 0.3,
    nms_method: Literal["weighted", "plain"] = "weighted",
    max_detections: int | None = None,
    num_keypoints: int = 6,
    score_clip: float = 100.0,
) -> DecodedBoxes:
    """Decode one image's BlazeFace outputs.

    Args:
        regressors: ``(1, N, 4 + 2K)`` or ``(N, 4 + 2K)`` float32, input pixels.
        classificators: ``(1, N, 1)``, ``(N, 1)`` or ``(N,)`` float32 logits.
        anchors: ``(N, 4)`` (x_center, y_center, width, height) normalised, from
            :func:`.anchors.generate_ssd_anchors`.
        input_wh: (width, height) of the model input in pixels (the regressors' scale).
        min_confidence: keep detections whose sigmoid score is at least this.
        iou_threshold: NMS overlap threshold.
        nms_method: ``"weighted"`` (MediaPipe) or ``"plain"`` (OpenCV).
        max_detections: keep at most this many (``None``: all).
        num_keypoints: keypoints per row (``K``; 6 for faces).
        score_clip: logits are clipped to +-this before the sigmoid.

    Returns:
        Boxes xyxy in 0..1 of the model input, keypoints ``(M, K, 2)``, class id 0, highest
        score first.
    """
    raw = np.asarray(drop_batch(regressors, "regressors", 2), np.float32)
    logits = np.asarray(classificators, np.float32).reshape(-1)
    n = len(raw)
    if len(logits) != n:
        raise DecoderError(
            f"classificators has {len(logits)} values for {n} regressor rows "
            f"(shapes {np.shape(classificators)} and {np.shape(regressors)})"
        )
    if raw.shape[1] < 4 + 2 * num_keypoints:
        raise DecoderError(
            f"regressors rows have {raw.shape[1]} values; {num_keypoints} keypoints need "
            f"{4 + 2 * num_keypoints}"
        )
    anchors = np.asarray(anchors, np.float32).reshape(-1, 4)
    if len(anchors) != n:
        raise DecoderError(
            f"the model gives {n} rows but there are {len(anchors)} anchors: the anchor "
            f"options (strides, input size {tuple(input_wh)}) do not fit this model"
        )
    scores = sigmoid(np.clip(logits, -score_clip, score_clip))
    keep = np.flatnonzero(scores >= min_confidence)
    if not len(keep):
        return empty_boxes(num_keypoints)
    raw, scores, anc = raw[keep], scores[keep], anchors[keep]
    w_in, h_in = float(input_wh[0]), float(input_wh[1])
    cx = raw[:, 0] / w_in * anc[:, 2] + anc[:, 0]
    cy = raw[:, 1] / h_in * anc[:, 3] + anc[:, 1]
    bw = raw[:, 2] / w_in * anc[:, 2]
    bh = raw[:, 3] / h_in * anc[:, 3]
    xyxy = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    kps: np.ndarray = raw[:, 4 : 4 + 2 * num_keypoints].reshape(-1, num_keypoints, 2)
    kps = kps / np.array([w_in, h_in], np.float32) * anc[:, None, 2:] + anc[:, None, :2]
    if nms_method == "weighted":
        xyxy, scores, merged = weighted_nms(
            xyxy, scores, iou_threshold, keypoints=kps, max_detections=max_detections
        )
        kps = merged if merged is not None else kps
    elif nms_method == "plain":
        idx = nms(xyxy, scores, iou_threshold, max_detections=max_detections)
        xyxy, scores, kps = xyxy[idx], scores[idx], kps[idx]
    else:
        raise DecoderError(f"nms_method must be 'weighted' or 'plain', got {nms_method!r}")
    return DecodedBoxes(
        np.clip(xyxy, 0.0, 1.0).astype(np.float32),
        scores.astype(np.float32),
        np.zeros(len(xyxy), np.int32),
        kps.astype(np.float32),
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class BlazeFaceConfig:
    """Options of :class:`BlazeFaceDecoder`.

    Attributes:
        variant: ``short_range`` (128 px), ``full_range`` (192 px) or ``back`` (256 px):
            selects the anchor options in :data:`.anchors.BLAZEFACE_ANCHORS`.
        anchors: explicit anchor options (other MediaPipe SSDs); overrides ``variant``. The
            input size is taken from each ``decode`` call.
        min_confidence: minimum sigmoid score.
        iou_threshold: NMS overlap threshold (MediaPipe uses 0.3).
        nms: ``weighted`` (MediaPipe) or ``plain``.
        max_detections: keep at most this many (``None``: all).
        num_keypoints: keypoints per detection (6 for faces, 7 for palms, 4 for poses).
        class_name: the label of every detection.
        score_clip: logits are clipped to +-this before the sigmoid.
        remap: model output name -> role (``regressors`` or ``classificators``).
    """

    variant: str = "short_range"
    anchors: SsdAnchorOptions | None = None
    min_confidence: float = 0.5
    iou_threshold: float = 0.3
    nms: Literal["weighted", "plain"] = "weighted"
    max_detections: int | None = 100
    num_keypoints: int = 6
    class_name: str = "face"
    score_clip: float = 100.0
    remap: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.anchors is None and self.variant not in BLAZEFACE_ANCHORS:
            raise DecoderError(
                f"blazeface variant {self.variant!r} is unknown; variants: "
                f"{', '.join(BLAZEFACE_ANCHORS)} (or give anchors=SsdAnchorOptions(...))"
            )
        if self.nms not in ("weighted", "plain"):
            raise DecoderError(f"blazeface nms must be 'weighted' or 'plain', got {self.nms!r}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise DecoderError(f"min_confidence must be in 0..1, got {self.min_confidence!r}")

    @property
    def anchor_options(self) -> SsdAnchorOptions:
        """The anchor options in use (explicit ``anchors``, else the variant's)."""
        return self.anchors if self.anchors is not None else BLAZEFACE_ANCHORS[self.variant]


class BlazeFaceDecoder:
    """Decodes BlazeFace outputs into ``Detections`` of faces with 6 keypoints.

    Anchors are generated once per input size and cached.

    Example:
        ``BlazeFaceDecoder(BlazeFaceConfig()).decode(outputs, (128, 128))``
    """

    kind = "blazeface"

    def __init__(self, config: BlazeFaceConfig | None = None) -> None:
        self.config = config or BlazeFaceConfig()
        self._anchors: dict[tuple[int, int], np.ndarray] = {}

    def anchors(self, input_wh: tuple[int, int]) -> np.ndarray:
        """``(N, 4)`` float32 anchors for an input of ``input_wh`` (cached)."""
        key = (int(input_wh[0]), int(input_wh[1]))
        if key not in self._anchors:
            self._anchors[key] = generate_ssd_anchors(self.config.anchor_options.with_input(key))
        return self._anchors[key]

    def _outputs(self, outputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        roles = ("regressors", "classificators")
        known = {n for r in roles for n in (r, *BLAZEFACE_ALIASES[r])}
        if not self.config.remap and len(outputs) == 2 and not known & set(outputs):
            # Unknown names: the score tensor is the one with one value per row.
            (_, a), (_, b) = outputs.items()
            if np.shape(a)[-1:] == (1,) and np.shape(b)[-1:] != (1,):
                return b, a
            if np.shape(b)[-1:] == (1,) and np.shape(a)[-1:] != (1,):
                return a, b
        found = select_outputs(
            outputs, roles, decoder=self.kind, remap=self.config.remap, aliases=BLAZEFACE_ALIASES
        )
        return found["regressors"], found["classificators"]

    def decode_arrays(
        self, outputs: Mapping[str, np.ndarray], input_wh: tuple[int, int]
    ) -> DecodedBoxes:
        """Decode to plain arrays (see :func:`decode_blazeface`)."""
        c = self.config
        regressors, classificators = self._outputs(outputs)
        return decode_blazeface(
            regressors,
            classificators,
            self.anchors(input_wh),
            input_wh,
            min_confidence=c.min_confidence,
            iou_threshold=c.iou_threshold,
            nms_method=c.nms,
            max_detections=c.max_detections,
            num_keypoints=c.num_keypoints,
            score_clip=c.score_clip,
        )

    def decode(self, outputs: Mapping[str, np.ndarray], input_wh: tuple[int, int]) -> Detections:
        """Decode one image's outputs into ``Detections`` (``image_wh`` = ``input_wh``)."""
        boxes = self.decode_arrays(outputs, input_wh)
        names = (self.config.class_name,) * len(boxes.xyxy)
        return to_detections(boxes, input_wh, class_names=names)

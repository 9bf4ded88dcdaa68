"""Draw detections, classifications and live figures on frames, for people to look at.

The drawing is done by plain functions on a writable BGR image: :func:`boxes_in_frame` places
boxes normalised to the original camera image on a frame that may have been resized,
letterboxed or cropped since (through its ``meta["transforms"]`` and
``geometry.map_boxes_forward``), :func:`draw_detections` draws boxes, labels and keypoints in
a stable colour per class id, and :func:`draw_text_block` writes lines of text in a corner.
The ``Overlay`` node copies each input frame into a buffer from its output port and draws
there, so the read-only input is never touched and nothing is copied again on the way out.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field

from pipeline import (
    Classifications,
    Detections,
    Frame,
    Input,
    Node,
    NodeParams,
    Output,
)
from pipeline_nodes.colors import to_bgr
from pipeline_nodes.dependencies import import_cv2
from pipeline_nodes.transforms.geometry import map_boxes_forward, map_points_forward

# BGR, distinct and readable on video; class id i always gets PALETTE[i % len(PALETTE)].
PALETTE: tuple[tuple[int, int, int], ...] = (
    (56, 56, 255),
    (151, 157, 255),
    (31, 112, 255),
    (29, 178, 255),
    (49, 210, 207),
    (10, 249, 72),
    (23, 204, 146),
    (134, 219, 61),
    (52, 147, 26),
    (187, 212, 0),
    (168, 153, 44),
    (255, 194, 0),
    (147, 69, 52),
    (255, 115, 100),
    (236, 24, 0),
    (255, 56, 132),
    (133, 0, 82),
    (255, 56, 203),
    (200, 149, 255),
    (199, 55, 255),
)

Corner = Literal["top-left", "top-right", "bottom-left", "bottom-right"]


def class_color(class_id: int) -> tuple[int, int, int]:
    """The BGR colour of a class id: the same id always gets the same colour."""
    return PALETTE[int(class_id) % len(PALETTE)]


def text_color(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on a BGR ``background``."""
    b, g, r = background
    return (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 140 else (255, 255, 255)


def boxes_in_frame(
    xyxy_norm: np.ndarray, transforms: Sequence[Mapping[str, Any]], frame_wh: tuple[int, int]
) -> np.ndarray:
    """Boxes normalised to the original image, as ``(N, 4)`` float32 pixels of the frame.

    ``transforms`` are the frame's ``meta["transforms"]`` (how the frame was made from the
    original image); with none, the frame is the original.
    """
    w, h = frame_wh
    boxes = np.asarray(xyxy_norm, np.float32).reshape(-1, 4)
    if transforms:
        boxes = map_boxes_forward(boxes, transforms)
    return boxes * np.array([w, h, w, h], np.float32)


def points_in_frame(
    points_norm: np.ndarray, transforms: Sequence[Mapping[str, Any]], frame_wh: tuple[int, int]
) -> np.ndarray:
    """Points ``(..., 2)`` normalised to the original image, as float32 pixels of the frame."""
    w, h = frame_wh
    points = np.asarray(points_norm, np.float32)
    if transforms:
        points = map_points_forward(points, transforms)
    return points * np.array([w, h], np.float32)


@dataclasses.dataclass(frozen=True)
class Style:
    """Sizes for drawing on one image size: box line width, font scale and text thickness."""

    line_width: int
    font_scale: float
    text_thickness: int

    @classmethod
    def for_size(
        cls, image_wh: tuple[int, int], line_width: int = 0, font_scale: float = 0.0
    ) -> Style:
        """Sizes for an image; 0 means: derived from the image size (a 640x480 frame gets 2 and
        0.6)."""
        short = min(image_wh)
        width = line_width or max(1, round(short / 240))
        scale = font_scale or max(0.35, round(short / 800, 2))
        return cls(width, scale, max(1, round(scale * 1.6)))


def _pixel(value: float, limit: int) -> int:
    # keep far-off coordinates (a box outside a crop) in the range OpenCV's int32 math expects
    return round(min(max(value, -4.0 * limit), 5.0 * limit))


def draw_label(
    image: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int], style: Style
) -> None:
    """A filled label of ``color`` with ``text``, above ``(x, y)`` or below it at the top edge."""
    import cv2

    font = cv2.FONT_HERSHEY_SIMPLEX
    (tw, th), base = cv2.getTextSize(text, font, style.font_scale, style.text_thickness)
    pad = max(2, style.line_width)
    height = th + base + 2 * pad
    top = y - height if y - height >= 0 else y
    x = min(max(x, 0), max(image.shape[1] - tw - 2 * pad, 0))
    cv2.rectangle(image, (x, top), (x + tw + 2 * pad, top + height), color, cv2.FILLED)
    cv2.putText(
        image,
        text,
        (x + pad, top + pad + th),
        font,
        style.font_scale,
        text_color(color),
        style.text_thickness,
        cv2.LINE_AA,
    )


def draw_detections(
    image: np.ndarray,
    detections: Detections,
    transforms: Sequence[Mapping[str, Any]],
    style: Style,
    *,
    min_confidence: float = 0.0,
    labels: bool = True,
    keypoints: bool = True,
) -> int:
    """Draw boxes (and labels, keypoints) of ``detections`` on the BGR ``image`` in place.

    Args:
        image: writable ``(H, W, 3)`` uint8 BGR.
        detections: boxes and keypoints normalised to the original image.
        transforms: the frame's ``meta["transforms"]``.
        style: sizes, see :class:`Style`.
        min_confidence: detections below are not drawn.
        labels: draw ``"label 0.87"`` on each box.
        keypoints: draw the keypoints, if the detections have them.

    Returns:
        How many detections were drawn.
    """
    import cv2

    h, w = image.shape[:2]
    boxes = boxes_in_frame(detections.xyxy, transforms, (w, h))
    points = None
    if keypoints and detections.keypoints is not None:
        points = points_in_frame(detections.keypoints, transforms, (w, h))
    radius = max(2, style.line_width + 1)
    pending_labels: list[tuple[str, int, int, tuple[int, int, int]]] = []
    for i, (box, confidence, class_id, name) in enumerate(
        zip(boxes, detections.confidence, detections.class_id, detections.class_names)
    ):
        if confidence < min_confidence:
            continue
        color = class_color(int(class_id))
        x0, y0, x1, y1 = (_pixel(float(v), w if k % 2 == 0 else h) for k, v in enumerate(box))
        # continuous edges -> pixel indices: a box ending at x1 covers pixels up to x1 - 1, so
        # a box of the whole frame stays visible
        x1, y1 = max(x0, x1 - 1), max(y0, y1 - 1)
        cv2.rectangle(image, (x0, y0), (x1, y1), color, style.line_width)
        if points is not None:
            for px, py in points[i]:
                if math.isfinite(px) and math.isfinite(py) and 0 <= px < w and 0 <= py < h:
                    cv2.circle(image, (int(px), int(py)), radius, color, cv2.FILLED, cv2.LINE_AA)
        pending_labels.append((f"{name} {float(confidence):.2f}", x0, y0, color))
    if labels:  # after every box, so no box line crosses a label
        for text, x, y, color in pending_labels:
            draw_label(image, text, x, y, color, style)
    return len(pending_labels)


def draw_text_block(image: np.ndarray, lines: Sequence[str], corner: Corner, style: Style) -> None:
    """Write ``lines`` on a dark band in a ``corner`` of the BGR ``image``, in place."""
    import cv2

    if not lines:
        return
    font = cv2.FONT_HERSHEY_SIMPLEX
    sizes = [cv2.getTextSize(t, font, style.font_scale, style.text_thickness) for t in lines]
    pad = max(3, 2 * style.line_width)
    line_h = max(th + base for (_, th), base in sizes) + pad
    block_w = max(tw for (tw, _), _ in sizes) + 2 * pad
    block_h = line_h * len(lines) + pad
    h, w = image.shape[:2]
    x = 0 if corner.endswith("left") else max(w - block_w, 0)
    y = 0 if corner.startswith("top") else max(h - block_h, 0)
    band = image[y : y + block_h, x : x + block_w]
    band //= 3  # darken in place: the text stays readable on any scene
    for i, text in enumerate(lines):
        baseline_y = y + pad + i * line_h + sizes[i][0][1]
        cv2.putText(
            image,
            text,
            (x + pad, baseline_y),
            font,
            style.font_scale,
            (255, 255, 255),
            style.text_thickness,
            cv2.LINE_AA,
        )


def classification_lines(classifications: Classifications, top_k: int) -> list[str]:
    """``"label 0.93"`` for the best ``top_k`` labels."""
    return [
        f"{name} {float(conf):.2f}"
        for name, conf in zip(classifications.class_names[:top_k], classifications.confidence)
    ]


class RateMeter:
    """A rate over about the last ``window_s`` from readings of a growing count.

    ``update`` takes the time and the count (for a node, ``statistics().calls``); the first
    reading has nothing to compare with, so it takes ``fallback`` (the average so far).
    """

    def __init__(self, window_s: float = 1.0) -> None:
        self.window_s = window_s
        self.rate = 0.0
        self._last: tuple[float, int] | None = None

    def due(self, now: float) -> bool:
        """True when a new reading is wanted (the first, or ``window_s`` after the last)."""
        return self._last is None or now - self._last[0] >= self.window_s

    def update(self, now: float, count: int, fallback: float = 0.0) -> float:
        """Record ``count`` at ``now`` and return the rate since the previous reading."""
        if self._last is None or now <= self._last[0]:
            self.rate = fallback
        else:
            self.rate = (count - self._last[1]) / (now - self._last[0])
        self._last = (now, count)
        return self.rate


class Overlay(Node):
    """Draw detections, top-k classifications and an fps/latency corner on each frame.

    Boxes and keypoints are normalised to the ORIGINAL image; when the frame carries
    ``meta["transforms"]`` (it was resized, letterboxed or cropped) they are mapped onto the
    frame with the geometry records. Each class id has a stable colour. The corner shows this
    node's rate over the last second (from its own statistics) and the latency since capture.
    ``detections`` and ``classifications`` are optional and joined with ``frames`` on seq.
    The input is read-only: each frame is copied, as BGR, into a buffer of the output port and
    drawn there; the output's ``meta["color"]`` is ``bgr``. One output per frame; ends when its
    inputs end; a full output edge waits or drops as its ``when_full`` says (a preview edge
    usually says ``drop_oldest``).

    Example:
        - id: overlay
          node: overlay
          params: {min_confidence: 0.3, top_k: 3}
          inputs:
            frames: camera/frames
            detections: detector/detections
    """

    preload_modules = ("cv2",)

    class Params(NodeParams):
        line_width: int = Field(
            0, ge=0, le=32, description="Box line width in pixels; 0: from the frame size."
        )
        font_scale: float = Field(
            0.0, ge=0.0, le=8.0, description="OpenCV font scale; 0: from the frame size."
        )
        min_confidence: float = Field(
            0.0, ge=0.0, le=1.0, description="Detections below this are not drawn."
        )
        labels: bool = Field(True, description="Draw 'label confidence' on each box.")
        keypoints: bool = Field(True, description="Draw detection keypoints.")
        top_k: int = Field(
            3, ge=0, le=20, description="Classification labels listed top-left; 0: none."
        )
        stats: bool = Field(True, description="Show fps and latency top-right.")

    frames = Input(Frame, description="(H, W[, C]) uint8 frames.")
    detections = Input(
        Detections, required=False, description="Boxes normalised to the original image."
    )
    classifications = Input(Classifications, required=False, description="Top-k labels.")
    annotated = Output(Frame, description="(H, W, 3) uint8 BGR frames with the drawing.")

    def open(self) -> None:
        import_cv2(f"the overlay node {self.id!r}")
        self._rate = RateMeter()
        self._frames = 0
        self._first: float | None = None

    def _current_fps(self) -> float:
        now = time.monotonic()
        self._frames += 1
        if self._first is None:
            self._first = now
        if now - self._first < self._rate.window_s:
            # no full window yet: the average since the first frame, not a stale 0
            return (self._frames - 1) / (now - self._first) if now > self._first else 0.0
        if self._rate.due(now):
            try:
                stats = self.statistics()
            except RuntimeError:  # run without a runtime, so without statistics: no figure
                return 0.0
            self._rate.update(now, stats.calls, stats.fps)
        return self._rate.rate

    def process(
        self,
        frames: Frame,
        detections: Detections | None = None,
        classifications: Classifications | None = None,
    ) -> None:
        p = self.params
        h, w = frames.image.shape[:2]
        image = self.annotated.allocate((h, w, 3), np.uint8)
        to_bgr(frames, out=image)
        style = Style.for_size((w, h), p.line_width, p.font_scale)
        if detections is not None and len(detections):
            draw_detections(
                image,
                detections,
                frames.meta.get("transforms", ()),
                style,
                min_confidence=p.min_confidence,
                labels=p.labels,
                keypoints=p.keypoints,
            )
        if classifications is not None and p.top_k:
            draw_text_block(
                image, classification_lines(classifications, p.top_k), "top-left", style
            )
        if p.stats:
            lines = [f"{self._current_fps():.1f} fps"]
            if frames.t_capture_ns:
                latency_ms = (time.monotonic_ns() - frames.t_capture_ns) / 1e6
                lines.append(f"{latency_ms:.0f} ms")
            draw_text_block(image, lines, "top-right", style)
        self.annotated.send(frames.replace(image=image, meta={**frames.meta, "color": "bgr"}))

"""``color_detector``: find regions of one colour, no model needed (Viam's color_detector)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from pydantic import Field, field_validator, model_validator

from pipeline import Detections, Frame, Input, Node, NodeParams, Output
from pipeline_nodes.dependencies import import_cv2
from pipeline_nodes.meta import derived_meta

__all__ = ["ColorDetector", "color_mask", "detect_color", "hex_to_hsv"]

# Viam's names for the three fractions; a graph that uses them is told the new ones.
_RENAMED = ("hue_tolerance_pct", "saturation_cutoff_pct", "value_cutoff_pct")


def hex_to_hsv(color: str) -> tuple[int, int, int]:
    """``#RRGGBB`` -> OpenCV HSV (H 0..179, S and V 0..255)."""
    import cv2

    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    hsv = cv2.cvtColor(np.array([[[b, g, r]]], np.uint8), cv2.COLOR_BGR2HSV)[0, 0]
    return int(hsv[0]), int(hsv[1]), int(hsv[2])


def color_mask(
    image_bgr: np.ndarray,
    color: str,
    hue_tolerance: float,
    saturation_cutoff: float,
    value_cutoff: float,
) -> np.ndarray:
    """A (H, W) bool mask of the pixels whose hue is within ``hue_tolerance`` of the
    hue circle around ``color`` and that are saturated and bright enough (grey, black and
    white have no hue, so they never match)."""
    import cv2

    hsv = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2HSV)
    target = hex_to_hsv(color)[0]
    tol = hue_tolerance * 90.0  # +- half of the tolerance, on OpenCV's 180-step circle
    dh = np.abs(hsv[..., 0].astype(np.int16) - target)
    dh = np.minimum(dh, 180 - dh)
    mask: np.ndarray = (
        (dh <= tol) & (hsv[..., 1] >= saturation_cutoff * 255) & (hsv[..., 2] >= value_cutoff * 255)
    )
    return mask


def detect_color(
    image_bgr: np.ndarray,
    color: str,
    hue_tolerance: float = 0.05,
    saturation_cutoff: float = 0.2,
    value_cutoff: float = 0.3,
    segment_size_px: int = 100,
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``(N, 4)`` xyxy in pixels of the connected regions of ``color`` with at least
    ``segment_size_px`` pixels, and each region's fill ratio of its box ``(N,)``."""
    import cv2

    mask = color_mask(image_bgr, color, hue_tolerance, saturation_cutoff, value_cutoff).astype(
        np.uint8
    )
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    boxes, fill = [], []
    for i in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[i])
        if area >= segment_size_px:
            boxes.append([x, y, x + w, y + h])
            fill.append(area / float(w * h))
    return np.array(boxes, np.float32).reshape(-1, 4), np.array(fill, np.float32)


class ColorDetector(Node):
    """Detect regions of one colour: an HSV range around a hex colour, no model needed.

    A pixel matches when its hue is within ``hue_tolerance`` of the colour's hue (on the
    hue circle) and its saturation and value are above the cut-offs; connected regions of at
    least ``segment_size_px`` pixels become detections (confidence = the share of the box the
    region fills). Black, white and grey have no hue and are never detected. One
    ``Detections`` per frame; ends when its input ends.

    Example:
        - id: red_things
          node: color_detector
          params: {detect_color: "#d02020", hue_tolerance: 0.06, segment_size_px: 400}
          inputs: {frames: camera/frames}
    """

    class Params(NodeParams):
        detect_color: str = Field(description="The colour as #RRGGBB.")
        hue_tolerance: float = Field(
            0.05, gt=0, le=1, description="Hue tolerance as a fraction of the hue circle."
        )
        saturation_cutoff: float = Field(
            0.2, ge=0, le=1, description="Minimum saturation (0..1) of a matching pixel."
        )
        value_cutoff: float = Field(
            0.3, ge=0, le=1, description="Minimum value/brightness (0..1) of a matching pixel."
        )
        segment_size_px: int = Field(100, ge=1, description="Smallest region kept, in pixels.")
        label: str | None = Field(None, description="Class name of detections (default: colour).")

        @model_validator(mode="before")
        @classmethod
        def _renamed(cls, data: Any) -> Any:
            if isinstance(data, dict):
                for old in _RENAMED:
                    if old in data:
                        raise ValueError(
                            f"{old} is now {old.removesuffix('_pct')} (the same fraction, "
                            "0..1: it never was a percentage)"
                        )
            return data

        @field_validator("detect_color")
        @classmethod
        def _hex(cls, value: str) -> str:
            if not re.fullmatch(r"#[0-9a-fA-F]{6}", value):
                raise ValueError("must be a colour as #RRGGBB, e.g. #ff0000")
            return value.lower()

    frames = Input(Frame, description="(H, W, 3) uint8 BGR frames.")
    detections = Output(Detections, description="Regions of the colour, normalised boxes.")

    def open(self) -> None:
        import_cv2(f"the color_detector node {self.id!r}")

    def process(self, frames: Frame) -> None:
        p = self.params
        boxes, fill = detect_color(
            frames.image,
            p.detect_color,
            p.hue_tolerance,
            p.saturation_cutoff,
            p.value_cutoff,
            p.segment_size_px,
        )
        h, w = frames.image.shape[:2]
        xyxy = boxes / np.array([w, h, w, h], np.float32)
        transforms = frames.meta.get("transforms")
        if transforms:  # boxes refer to the image the source captured
            from pipeline_nodes.transforms import geometry

            xyxy = geometry.map_boxes_back(xyxy, transforms)
            w, h = geometry.original_wh(transforms)
        label = p.label or p.detect_color
        self.detections.send(
            frames.derive(
                Detections,
                xyxy=xyxy,
                confidence=fill,
                class_id=np.zeros(len(boxes), np.int32),
                class_names=[label] * len(boxes),
                image_wh=(w, h),
                meta=derived_meta(frames.meta, {}),
            )
        )

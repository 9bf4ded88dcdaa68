"""Real photos (scikit-image) as BGR images and frames, reference boxes, and box overlap."""

from __future__ import annotations

import time

import cv2
import numpy as np
from skimage import data

from pipeline import Frame

# Reference boxes in pixels of the 512x512 photos (the two face models frame a face
# differently: CenterFace includes the forehead).
ASTRONAUT_FACE = {
    "face_short_range": np.array([180, 82, 274, 176], np.float32),
    "centerface": np.array([181, 58, 269, 177], np.float32),
}
ASTRONAUT_PERSON = np.array([3, 32, 373, 508], np.float32)
CAMERA_PERSON = np.array([0, 67, 301, 513], np.float32)


def bgr(name: str) -> np.ndarray:
    """The scikit-image photo ``name`` as (H, W, 3) uint8 BGR."""
    image = getattr(data, name)()
    code = cv2.COLOR_GRAY2BGR if image.ndim == 2 else cv2.COLOR_RGB2BGR
    return cv2.cvtColor(image, code)


def photo(name: str, seq: int = 0) -> Frame:
    """The photo ``name`` as a frame from the source ``photos``."""
    return Frame(image=bgr(name), seq=seq, t_capture_ns=time.monotonic_ns(), source="photos")


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two xyxy boxes."""
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


def lfw_frames(indices) -> list[Frame]:
    """Frames of scikit-image's 25x25 grey LFW crops (faces first, then non-faces)."""
    from model_builder.build_classifier import load_lfw_subset

    images, _ = load_lfw_subset()
    return [
        Frame(
            image=cv2.cvtColor(np.clip(images[idx], 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR),
            seq=i,
        )
        for i, idx in enumerate(indices)
    ]

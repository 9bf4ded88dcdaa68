"""Optional packages the built-in nodes import when they open, with a clear error if absent."""

from __future__ import annotations

from typing import Any

from pipeline import MissingDependencyError

__all__ = ["import_cv2"]


def import_cv2(purpose: str) -> Any:
    """OpenCV, or a ``MissingDependencyError`` that names the package and extra to install.

    Args:
        purpose: what needs it, for the message (e.g. ``"the overlay node 'overlay'"``).
    """
    try:
        import cv2
    except ImportError as exc:
        raise MissingDependencyError("opencv-python-headless", "vision", purpose) from exc
    return cv2

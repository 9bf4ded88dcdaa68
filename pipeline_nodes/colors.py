"""A frame's colour and conversions between BGR, RGB and grey (shared by nodes and sinks).

A frame's colour is ``meta["color"]`` (``bgr``, ``rgb``, ``gray``, ``bgra`` or ``rgba``); a
frame without it is BGR as OpenCV reads it (grey when it has one channel, BGRA with four).
:func:`frame_color` applies that rule and checks it against the channel count, and
:func:`convert_color` converts into a caller's buffer. The ``color`` node and the sinks that
must hand OpenCV a BGR image (overlay, preview, video writer, snapshot: :func:`to_bgr`) use
the same functions. Grey images are ``(H, W)``, as OpenCV returns them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from pipeline import Frame

__all__ = [
    "COLORS",
    "Color",
    "TargetColor",
    "channels_of",
    "conversion_code",
    "convert_color",
    "frame_color",
    "output_shape",
    "to_bgr",
]

Color = Literal["bgr", "rgb", "gray", "bgra", "rgba"]
TargetColor = Literal["bgr", "rgb", "gray"]

COLORS: tuple[str, ...] = ("bgr", "rgb", "gray", "bgra", "rgba")
_CHANNELS = {"bgr": 3, "rgb": 3, "gray": 1, "bgra": 4, "rgba": 4}
_DEFAULT_BY_CHANNELS = {1: "gray", 3: "bgr", 4: "bgra"}

# (from, to) -> name of the cv2 constant; a missing pair with from == to is a plain copy.
_CODES = {
    ("bgr", "rgb"): "COLOR_BGR2RGB",
    ("bgr", "gray"): "COLOR_BGR2GRAY",
    ("rgb", "bgr"): "COLOR_RGB2BGR",
    ("rgb", "gray"): "COLOR_RGB2GRAY",
    ("gray", "bgr"): "COLOR_GRAY2BGR",
    ("gray", "rgb"): "COLOR_GRAY2RGB",
    ("bgra", "bgr"): "COLOR_BGRA2BGR",
    ("bgra", "rgb"): "COLOR_BGRA2RGB",
    ("bgra", "gray"): "COLOR_BGRA2GRAY",
    ("rgba", "bgr"): "COLOR_RGBA2BGR",
    ("rgba", "rgb"): "COLOR_RGBA2RGB",
    ("rgba", "gray"): "COLOR_RGBA2GRAY",
}


def channels_of(image: np.ndarray) -> int:
    """Channel count of an ``(H, W)`` (1) or ``(H, W, C)`` (C) image."""
    return 1 if image.ndim == 2 else int(image.shape[2])


def frame_color(image: np.ndarray, meta: Mapping[str, Any]) -> str:
    """The colour of ``image`` as its frame's ``meta`` says, or as its channel count implies.

    Raises:
        ValueError: ``meta["color"]`` is unknown or disagrees with the channel count, or the
            image has a channel count no colour has (2, or more than 4).
    """
    channels = channels_of(image)
    declared = meta.get("color")
    if declared is None:
        try:
            return _DEFAULT_BY_CHANNELS[channels]
        except KeyError:
            raise ValueError(
                f"an image of shape {image.shape} has {channels} channels; "
                "only 1 (gray), 3 (bgr/rgb) or 4 (bgra/rgba) are images"
            ) from None
    color = str(declared).lower()
    if color not in _CHANNELS:
        raise ValueError(f"meta['color'] is {declared!r}; known colours: {', '.join(COLORS)}")
    if _CHANNELS[color] != channels:
        raise ValueError(
            f"meta['color'] says {color!r} ({_CHANNELS[color]} channels) but the image has "
            f"shape {image.shape}"
        )
    return color


def output_shape(shape: tuple[int, ...], target: str) -> tuple[int, ...]:
    """Shape of an image of ``shape`` converted to ``target`` (grey is ``(H, W)``)."""
    h, w = shape[:2]
    n = _CHANNELS[target]
    return (h, w) if n == 1 else (h, w, n)


def conversion_code(src: str, dst: str) -> int | None:
    """The ``cv2.COLOR_*`` code from ``src`` to ``dst`` colour; ``None`` when they are equal.

    Raises:
        ValueError: no conversion exists (for example to ``bgra``).
    """
    if src == dst:
        return None
    try:
        name = _CODES[(src, dst)]
    except KeyError:
        raise ValueError(f"no colour conversion from {src!r} to {dst!r}") from None
    import cv2

    return int(getattr(cv2, name))


def convert_color(
    image: np.ndarray, src: str, dst: str, out: np.ndarray | None = None
) -> np.ndarray:
    """``image`` (colour ``src``) converted to colour ``dst``, written into ``out`` if given.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` uint8; never modified.
        src: its colour (see :func:`frame_color`).
        dst: the colour wanted.
        out: a writable buffer of ``output_shape(image.shape, dst)``; ``None`` allocates one.
            With ``src == dst`` the image is copied into it.

    Returns:
        ``out`` (or a new array when ``out`` is ``None``).
    """
    code = conversion_code(src, dst)
    shape = output_shape(image.shape, dst)
    if out is None:
        out = np.empty(shape, np.uint8)
    elif out.shape != shape:
        raise ValueError(f"convert_color: out has shape {out.shape}, expected {shape}")
    source = image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image
    if code is None:
        np.copyto(out, source.reshape(shape))
        return out
    import cv2

    result = cv2.cvtColor(source, code, dst=out)
    if result is not out and not np.shares_memory(result, out):
        np.copyto(out, result.reshape(shape))  # OpenCV allocated a new array after all
    return out


def to_bgr(frame: Frame, out: np.ndarray | None = None) -> np.ndarray:
    """The frame's image as ``(H, W, 3)`` BGR: itself when already BGR, else converted.

    With ``out`` the result is always written into ``out`` (copied when already BGR).
    """
    color = frame_color(frame.image, frame.meta)
    if color == "bgr" and out is None:
        return frame.image
    return convert_color(frame.image, color, "bgr", out)

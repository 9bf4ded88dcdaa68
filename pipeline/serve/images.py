"""Client images in, camera images out: JPEG, PNG and Viam's raw RGBA.

The Viam SDK labels every image it sends as JPEG (``VisionClient.get_detections`` sets
``image/jpeg`` whatever the bytes are), so the format is read from the bytes themselves:
Viam's ``RGBA`` header (magic ``RGBA``, then width and height as big-endian uint32), else
whatever OpenCV can decode (JPEG, PNG, BMP, ...). Images are returned as ``(H, W, 3)`` uint8
BGR, the pipeline's frame format. OpenCV comes with the ``vision`` extra.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "JPEG",
    "PNG",
    "VIAM_RGBA",
    "ImageError",
    "decode_image",
    "encode_image",
    "encode_viam_rgba",
]

JPEG, PNG, VIAM_RGBA = "image/jpeg", "image/png", "image/vnd.viam.rgba"
_RGBA_MAGIC = b"RGBA"
MAX_PIXELS = 50_000_000


class ImageError(ValueError):
    """An image cannot be decoded or encoded; the message says why."""


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:  # pragma: no cover - the serve extra comes with vision in make
        raise ImageError(
            "decoding images needs OpenCV: pip install 'edge-vision-pipeline[vision]'"
        ) from None
    return cv2


def decode_image(data: bytes, mime_type: str = "", width: int = 0, height: int = 0) -> np.ndarray:
    """Bytes from a client -> ``(H, W, 3)`` uint8 BGR.

    Raises:
        ImageError: empty, truncated or not an image (the message names what was expected).
    """
    if not data:
        raise ImageError("the image is empty")
    if data[:4] == _RGBA_MAGIC and len(data) >= 12:
        w = int.from_bytes(data[4:8], "big")
        h = int.from_bytes(data[8:12], "big")
        if not 0 < w * h <= MAX_PIXELS or len(data) != 12 + w * h * 4:
            raise ImageError(
                f"the Viam RGBA image says {w}x{h} but carries {len(data) - 12} bytes of pixels"
            )
        rgba = np.frombuffer(data, np.uint8, offset=12).reshape(h, w, 4)
        return np.ascontiguousarray(rgba[..., 2::-1])
    cv2 = _cv2()
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        said = f" (sent as {mime_type})" if mime_type else ""
        raise ImageError(
            f"the {len(data)}-byte image{said} cannot be decoded: send JPEG, PNG or "
            f"Viam RGBA ({VIAM_RGBA}) bytes"
        )
    if width and height and (image.shape[1], image.shape[0]) != (width, height):
        raise ImageError(
            f"the request says the image is {width}x{height} but it is "
            f"{image.shape[1]}x{image.shape[0]}"
        )
    result: np.ndarray = image
    return result


def encode_image(image: np.ndarray, mime_type: str = JPEG, quality: int = 90) -> bytes:
    """An ``(H, W, 3)`` BGR (or ``(H, W)`` grey) image -> JPEG, PNG or Viam RGBA bytes.

    Raises:
        ImageError: an unsupported MIME type (the message lists the supported ones).
    """
    if mime_type in ("", JPEG, "image/jpg"):
        ok, buf = _cv2().imencode(".jpg", image, [_cv2().IMWRITE_JPEG_QUALITY, quality])
    elif mime_type == PNG:
        ok, buf = _cv2().imencode(".png", image)
    elif mime_type == VIAM_RGBA:
        return encode_viam_rgba(image)
    else:
        raise ImageError(
            f"cannot encode images as {mime_type!r}; ask for {JPEG}, {PNG} or {VIAM_RGBA}"
        )
    if not ok:
        raise ImageError(f"OpenCV could not encode a {image.shape} image as {mime_type}")
    return bytes(buf)


def encode_viam_rgba(image: np.ndarray) -> bytes:
    """Viam's raw RGBA: ``RGBA`` + width + height (big-endian uint32) + RGBA pixels."""
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    h, w = image.shape[:2]
    rgba = np.empty((h, w, 4), np.uint8)
    rgba[..., :3] = image[..., 2::-1]
    rgba[..., 3] = 255
    header: bytes = _RGBA_MAGIC + w.to_bytes(4, "big") + h.to_bytes(4, "big")
    return header + rgba.tobytes()

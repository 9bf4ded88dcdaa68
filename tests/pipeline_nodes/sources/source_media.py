"""Media the source tests write for themselves: short videos, damaged videos, image files."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np


def pattern_frame(i: int, width: int = 160, height: int = 120) -> np.ndarray:
    """Frame ``i`` of a test video: smooth shapes (cheap for codecs) that differ per frame."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.empty((height, width, 3), np.uint8)
    image[..., 0] = (x * 255 // (width - 1)).astype(np.uint8)
    image[..., 1] = (y * 255 // (height - 1)).astype(np.uint8)
    image[..., 2] = (i * 37) % 256
    x0 = (i * 9) % (width - 32)
    image[40:72, x0 : x0 + 32] = 255
    return image


def write_video(
    path: Path,
    n: int,
    *,
    fps: float = 20.0,
    fourcc: str = "mp4v",
    size: tuple[int, int] = (160, 120),
) -> list[np.ndarray]:
    """Write ``n`` test frames with OpenCV; returns the frames written."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), fps, size)
    assert writer.isOpened(), f"cannot write {path} with {fourcc}"
    frames = [pattern_frame(i, *size) for i in range(n)]
    for frame in frames:
        writer.write(frame)
    writer.release()
    return frames


def decode_all(path: Path) -> list[np.ndarray]:
    """Every frame of a video as OpenCV decodes it, for comparisons."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def wipe_mjpg_frame(path: Path, index: int) -> None:
    """Overwrite the JPEG data of frame ``index`` of an MJPG .avi with zeros, in place.

    The AVI keeps each frame in a ``00dc`` chunk (4-byte id, 4-byte little-endian size,
    data); the chunk stays the same size, so the container is intact and only that frame no
    longer decodes.
    """
    data = bytearray(path.read_bytes())
    movi = data.index(b"movi")
    chunks: list[tuple[int, int]] = []
    at = movi
    while len(chunks) <= index:
        at = data.index(b"00dc", at + 4)
        size = int.from_bytes(data[at + 4 : at + 8], "little")
        if data[at + 8 : at + 10] == b"\xff\xd8":  # a JPEG, not an index entry
            chunks.append((at + 8, size))
    start, size = chunks[index]
    data[start : start + size] = bytes(size)
    path.write_bytes(bytes(data))


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def rotate_mp4(path: Path) -> None:
    """Mark the video track of an .mp4 as shown rotated by 90 degrees, in place, as phones do.

    The track header (``tkhd``) holds a 3x3 display matrix, identity as written; it becomes a
    90-degree rotation (what FFmpeg reports as a display rotation of -90).
    """
    identity = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    rotation = struct.pack(">9I", 0, 0x10000, 0, 0xFFFF0000, 0, 0, 0, 0, 0x40000000)
    data = path.read_bytes()
    at = data.index(identity, data.index(b"tkhd"))
    path.write_bytes(data[:at] + rotation + data[at + len(identity) :])

"""A sink that writes frames to a video file (MP4 with mp4v, or AVI with MJPG) via OpenCV.

The container follows the file's extension and the codec follows the container unless
``fourcc`` says otherwise (:func:`choose_fourcc`, table-tested). The writer opens on the first
frame, because the video's size and rate come from the stream (``meta["video_fps"]`` of a
video-file source, else the ``fps`` param). ``close()`` releases it, which is what finalises
an MP4; the runtime calls ``close()`` after the end of stream, after the drain of a first
Ctrl-C, and on a forced stop (SIGTERM), so the file is complete in each case.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import Field

from nodes.dependencies import import_cv2
from nodes.sinks.jsonl import writable_file
from nodes.transforms.color import to_bgr
from pipeline import Frame, Input, Node, NodeParams

FOURCC_BY_EXTENSION = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG"}
_PROBE_WH = (64, 48)


def choose_fourcc(path: str | Path, fourcc: str | None = None) -> str:
    """The four-character codec code for a video file: ``fourcc`` if given, else by extension.

    Raises:
        ValueError: no ``fourcc`` and an extension with no default codec.
    """
    if fourcc:
        return fourcc
    suffix = Path(path).suffix.lower()
    try:
        return FOURCC_BY_EXTENSION[suffix]
    except KeyError:
        known = ", ".join(f"{ext} ({code})" for ext, code in FOURCC_BY_EXTENSION.items())
        raise ValueError(
            f"no codec is known for {suffix or 'a file without extension'!r}; use one of "
            f"{known}, or set 'fourcc'"
        ) from None


def video_fps(meta: Any, default: float) -> float:
    """The stream's frame rate: ``meta["video_fps"]`` when it is a usable rate, else ``default``."""
    value = meta.get("video_fps") if hasattr(meta, "get") else None
    try:
        fps = float(value) if value is not None else 0.0
    except (TypeError, ValueError):
        return default
    return fps if math.isfinite(fps) and 0 < fps <= 1000 else default


class VideoWriterSink(Node):
    """Write frames to an MP4 (mp4v) or AVI (MJPG) file that is complete after any stop.

    The codec follows the extension (``.mp4``/``.m4v``/``.mov``: mp4v, ``.avi``: MJPG) unless
    ``fourcc`` is set. The video's size is the first frame's (later frames of another size are
    resized to it, and counted as ``resized``) and its rate the source's
    ``meta["video_fps"]``, else ``fps``. Grey and RGB frames are converted to BGR; the input
    is read-only. A folder it cannot write, or a codec OpenCV cannot write, fails ``open()``.
    The file is finalised in ``close()``: after the end of stream, after Ctrl-C (the graph
    drains first) and on a forced stop. Ends when its input ends. Encoding is synchronous,
    so a full input edge waits or drops as its ``when_full`` says (``block`` keeps every
    frame of a file; ``drop_oldest`` suits a live camera on a slow machine).

    Example:
        - id: record
          node: video_writer
          params: {path: out/annotated.mp4}
          inputs: {frames: overlay/annotated}
    """

    preload_modules = ("cv2",)

    class Params(NodeParams):
        path: str = Field(description="The video file to write (.mp4, .m4v, .mov or .avi).")
        fourcc: str | None = Field(
            None,
            pattern=r"^[0-9A-Za-z ]{4}$",
            description="Four-character codec code (mp4v, MJPG, XVID, avc1...); "
            "default: from the extension.",
        )
        fps: float = Field(
            30.0,
            gt=0,
            le=1000,
            description="Frame rate of the file when the frames carry no meta['video_fps'].",
        )

    frames = Input(Frame, description="(H, W[, C]) uint8 frames in meta['color'].")

    def open(self) -> None:
        cv2 = import_cv2(f"the video_writer node {self.id!r}")
        self._cv2 = cv2
        p = self.params
        self._path = writable_file(p.path, node_id=self.id, param="path")
        try:
            self._fourcc = choose_fourcc(self._path, p.fourcc)
        except ValueError as exc:
            raise ValueError(f"node {self.id!r}: path {p.path!r}: {exc}") from None
        self._check_codec()
        self._writer: Any = None
        self._size = (0, 0)
        self._frames_written = 0
        self._frames_resized = 0

    def _check_codec(self) -> None:
        """Open (and remove) a tiny video, so a codec OpenCV lacks fails open(), not process().

        The probe has its own name: an existing file at ``path`` stays until the first frame.
        """
        cv2 = self._cv2
        probe_path = self._path.with_name(f".{self._path.stem}.probe{self._path.suffix}")
        probe = cv2.VideoWriter(
            str(probe_path), cv2.VideoWriter_fourcc(*self._fourcc), self.params.fps, _PROBE_WH
        )
        opened = probe.isOpened()
        probe.release()
        probe_path.unlink(missing_ok=True)
        if not opened:
            raise ValueError(
                f"node {self.id!r}: OpenCV cannot write {self._fourcc!r} video to "
                f"{str(self._path)!r}; use .mp4 (mp4v) or .avi (MJPG), or another 'fourcc'"
            )

    def _start(self, frames: Frame, size: tuple[int, int]) -> None:
        cv2 = self._cv2
        fps = video_fps(frames.meta, self.params.fps)
        self._writer = cv2.VideoWriter(
            str(self._path), cv2.VideoWriter_fourcc(*self._fourcc), fps, size
        )
        if not self._writer.isOpened():
            raise RuntimeError(
                f"node {self.id!r}: OpenCV could not start a {size[0]}x{size[1]} "
                f"{self._fourcc!r} video in {str(self._path)!r}"
            )
        self._size = size
        self.log.info("writing %s (%s, %dx%d at %.3g fps)", self._path, self._fourcc, *size, fps)

    def process(self, frames: Frame) -> None:
        image = to_bgr(frames)
        size = (int(image.shape[1]), int(image.shape[0]))
        if self._writer is None:
            self._start(frames, size)
        elif size != self._size:
            if not self._frames_resized:
                self.log.warning(
                    "frame seq %d is %dx%d but the video is %dx%d: resizing such frames",
                    frames.seq,
                    *size,
                    *self._size,
                )
            self._frames_resized += 1
            self.count("resized")
            image = self._cv2.resize(image, self._size, interpolation=self._cv2.INTER_AREA)
        self._writer.write(image)
        self._frames_written += 1

    def close(self) -> None:
        if self._writer is None:
            self.log.warning("no frame arrived: %s was not written", self._path)
            return
        self._writer.release()
        self._writer = None
        self.log.info("wrote %d frames to %s", self._frames_written, self._path)

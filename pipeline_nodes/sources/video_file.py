"""The video file source: the frames of any file FFmpeg reads, at the file's rate or unpaced.

Frames are decoded with PyAV (the FFmpeg that the ``video_writer`` node's PyAV maps too, so a
graph that reads and writes video maps one FFmpeg, and the fork server's template imports it
once for both) and converted to BGR straight into a shared-memory slot of the ``frames`` port.
A file PyAV cannot open, or one whose frames must be rotated for display, is read with
OpenCV's ``VideoCapture`` instead, which decodes into the slot in place (when the shape
matches; otherwise the decoded frame is copied once). A frame the decoder cannot decode at
all (a damaged packet in the middle of the file) is skipped and counted as ``corrupt_frames``;
frames the decoder can conceal errors in are passed on as they come. Its frame rate (the file's, or
``fps_override``) is what the runtime holds it to under the node's ``pace: realtime`` (the
default; ``pipeline.runtime.pacing``); ``pace: fast`` sends the frames as fast as the
consumers take them.
"""

from __future__ import annotations

import importlib
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from pipeline import EndOfStream, Frame, Node, NodeParams, Output, ParamIssue
from pipeline.checks import input_file
from pipeline_nodes.dependencies import import_cv2

__all__ = ["VideoFileSource"]

# Undecodable frames in a row after which the file is taken as ended: at a file's true end
# every read fails at once, so this bounds the cost of finding the end of a file whose
# frame count is unknown; a damaged stretch longer than this ends the stream (logged).
_MAX_BAD_IN_A_ROW = 50

# cv2.CAP_PROP_* values (OpenCV's stable enum), so that PyAV's capture needs no cv2.
CAP_PROP_POS_MSEC = 0
CAP_PROP_POS_FRAMES = 1
CAP_PROP_FPS = 5
CAP_PROP_FRAME_COUNT = 7


class _AvCapture:
    """The part of ``cv2.VideoCapture``'s interface the source uses, decoding with PyAV (no cv2).

    ``read()`` decodes the next frame; a packet the decoder rejects is one failed read (the
    source counts it as a corrupt frame), like OpenCV's; at the end every read fails.
    """

    def __init__(self, av: Any, path: Path) -> None:
        self._av = av
        if not hasattr(av.VideoFrame, "rotation"):  # an old PyAV: OpenCV turns frames upright
            raise ValueError("this PyAV does not report a frame's rotation")
        self._container = av.open(str(path))
        try:
            videos = self._container.streams.video
            if not videos:
                raise ValueError("no video stream")
            stream = videos[0]
            self._stream = stream
            rate = stream.average_rate or stream.guessed_rate
            self.fps = float(rate) if rate else 0.0
            self.frame_count = int(stream.frames or 0)
            self._time_base = float(stream.time_base) if stream.time_base else 0.0
            self._start = stream.start_time or 0
            self._packets = self._container.demux(stream)
        except BaseException:
            self._container.close()
            raise
        self._queue: list[Any] = []
        self._ended = False
        self.pos_ms = 0.0

    def _next_frame(self) -> Any:
        """The next decoded frame, None at the end; raises the decoder's error for a bad packet."""
        av = self._av
        while not self._queue:
            if self._ended:
                return None
            try:
                packet = next(self._packets)
            except StopIteration:
                self._ended = True
                continue
            except av.FFmpegError:  # a damaged container: no further packet can be read
                self._ended = True
                raise
            self._queue.extend(packet.decode())  # the last (empty) packet flushes the decoder
        return self._queue.pop(0)

    def get(self, prop: int) -> float:
        if prop == CAP_PROP_FPS:
            return self.fps
        if prop == CAP_PROP_FRAME_COUNT:
            return float(self.frame_count)
        if prop == CAP_PROP_POS_MSEC:
            return self.pos_ms
        raise ValueError(f"property {prop} is not read from PyAV")

    def set(self, prop: int, value: int) -> None:
        """``CAP_PROP_POS_FRAMES`` on a fresh capture: the next read gives frame ``value``.

        Seeks to the key frame at or before it and drops the frames before it (a frame's index
        from its timestamp and the frame rate, as OpenCV counts); where that cannot tell (no
        rate or timestamps, or the seek overshot), decodes from the start and drops ``value``
        frames.
        """
        if prop != CAP_PROP_POS_FRAMES:
            raise ValueError(f"property {prop} is not set on PyAV")
        target = int(value)
        if target > 0 and self.fps and self._time_base:
            if self._seek(target):
                return
            self._rewind()
        for _ in range(target):
            try:
                if self._next_frame() is None:
                    return
            except self._av.FFmpegError:
                continue  # a damaged frame counts as one

    def _index_of(self, frame: Any) -> int | None:
        if frame.pts is None:
            return None
        return round(float(frame.pts - self._start) * self._time_base * self.fps)

    def _seek(self, target: int) -> bool:
        """Seek so that frame ``target`` comes next; False where it cannot tell."""
        av = self._av
        offset = self._start + int(target / self.fps / self._time_base)
        try:
            self._container.seek(offset, stream=self._stream, backward=True)
        except av.FFmpegError:
            return False
        self._queue.clear()
        self._ended = False
        first = True
        while True:
            try:
                frame = self._next_frame()
            except av.FFmpegError:
                continue
            if frame is None:
                return True  # the file ends before it: every read fails, as it would
            index = self._index_of(frame)
            if index is None or (first and index > target):
                return False  # no timestamps, or past the frame: decode from the start
            first = False
            if index >= target:
                self._queue.insert(0, frame)
                return True

    def _rewind(self) -> None:
        self._container.seek(0, stream=self._stream, backward=True)
        self._queue.clear()
        self._ended = False

    def read(self, image: np.ndarray | None = None) -> tuple[bool, np.ndarray | None]:
        try:
            frame = self._next_frame()
        except self._av.FFmpegError:
            return False, None
        if frame is None:
            return False, None
        if frame.rotation:
            raise _NeedsRotation
        if frame.pts is not None and self._time_base:
            self.pos_ms = (frame.pts - self._start) * self._time_base * 1000.0
        elif self.fps:
            self.pos_ms += 1000.0 / self.fps
        try:
            # One thread: swscale's automatic thread pool costs twice the CPU on a frame this
            # size (and a thread stack and arena per core).
            decoded = frame.to_ndarray(format="bgr24", threads=1)
        except TypeError:  # a PyAV without the threads argument
            decoded = frame.to_ndarray(format="bgr24")
        if image is not None and image.shape == decoded.shape and image.dtype == decoded.dtype:
            np.copyto(image, decoded)
            return True, image
        return True, decoded

    def release(self) -> None:
        self._container.close()


class _NeedsRotation(Exception):
    """A frame has rotation metadata: OpenCV's capture applies it, PyAV's frames do not."""


class VideoFileSource(Node):
    """Send the frames of a video file (any container and codec FFmpeg reads).

    Frames are decoded with PyAV (OpenCV for a file PyAV cannot open or whose frames must be turned
    upright) and land straight in the output's shared memory. Under the node's ``pace: realtime``
    (the default) the runtime sends one frame per ``1/fps`` of the file (or ``fps_override``), like
    a camera; ``pace: fast`` sends as fast as the consumers take them (with ``when_full: block``
    edges, the slowest one's rate), for offline processing and benchmarks. Ends with end of stream
    after the last frame (or before ``end_frame``); with ``loop`` it starts again at ``start_frame``
    and then ends only when the graph is stopped. A frame the decoder cannot decode is skipped and
    counted as ``corrupt_frames``. A bad ``path`` (missing, not a video, no decodable frame) fails
    ``open()`` with a message naming the node and the file.

    Output ``frames``: ``(H, W, 3)`` uint8 BGR; ``meta`` carries ``frame_index`` (0-based
    index in the file), ``pos_ms`` (the frame's timestamp in the file), ``video_fps``, ``path``
    and ``loop`` (how many times the file was restarted).

    Example:
        - id: camera
          node: video_file
          pace: realtime
          params: {path: samples/people.mp4, loop: true}
    """

    preload_modules = ("av",)

    class Params(NodeParams):
        path: str = Field(
            min_length=1,
            description="The video file: .mp4, .avi, .mkv, ... (relative paths are from the "
            "working directory).",
        )
        loop: bool = Field(
            False,
            description="After the last frame start again at start_frame; the stream then ends "
            "only when the graph is stopped.",
        )
        start_frame: int = Field(0, ge=0, description="First frame to send (0-based index).")
        end_frame: int | None = Field(
            None,
            ge=1,
            description="Stop before this frame index (exclusive); null: at the end of the file.",
        )
        fps_override: float | None = Field(
            None,
            gt=0,
            le=1000,
            description="Frame rate to use instead of the file's (pacing, pos_ms, video_fps); "
            "for files that report none or a wrong one.",
        )

        @field_validator("end_frame")
        @classmethod
        def _end_after_start(cls, value: int | None, info: ValidationInfo) -> int | None:
            start = info.data.get("start_frame", 0)
            if value is not None and value <= start:
                raise ValueError(f"end_frame ({value}) must be greater than start_frame ({start})")
            return value

    frames = Output(
        Frame,
        description="(H, W, 3) uint8 BGR frames; meta: frame_index, pos_ms, video_fps, path, loop.",
    )

    @classmethod
    def check(cls, params: Params) -> Iterator[ParamIssue]:
        if "://" not in params.path:
            yield from input_file("path", params.path, "video file")

    def open(self) -> None:
        self._cv2: Any = None  # imported only where OpenCV reads the file
        self._av: Any = None
        try:
            self._av = importlib.import_module("av")
        except ImportError:  # OpenCV alone reads the file
            self._opencv()
        self._use_av = self._av is not None
        p = self.params
        path = Path(p.path).expanduser()
        self._path = path
        self._where = f"video_file {self.id!r}"
        if not path.exists():
            raise FileNotFoundError(
                f"{self._where}: no such file {str(path)!r} (relative paths are from "
                f"{os.getcwd()!r}); check params.path"
            )
        if path.is_dir():
            raise IsADirectoryError(
                f"{self._where}: {str(path)!r} is a folder, not a video file; give the file in "
                "params.path, or read a folder of images with the image_folder node"
            )
        # Probe with a capture of its own: it proves the file decodes (at start_frame) and
        # gives the true frame shape (after rotation metadata), and the main capture then
        # reads every frame, the first included, straight into a slot.
        try:
            file_fps, first = self._probe()
        except _NeedsRotation:
            self._use_av = False  # OpenCV turns the frames upright
            file_fps, first = self._probe()
        if p.fps_override is not None:
            self._fps = float(p.fps_override)
        elif math.isfinite(file_fps) and 0 < file_fps <= 1000:
            self._fps = file_fps
        else:
            self._fps = 0.0
        self._file_fps = file_fps
        first_shape = tuple(int(n) for n in np.asarray(first).shape)
        self._shape: tuple[int, ...] = first_shape if len(first_shape) == 3 else (*first_shape, 3)
        self._seq = 0
        self._loops = 0
        self._sent_this_pass = 0
        self._bad_in_a_row = 0
        self._cap = self._start_pass()
        self.log.info(
            "reading %s: %dx%d, %s frames, %.3g fps",
            path,
            self._shape[1],
            self._shape[0],
            self._frame_count if self._frame_count is not None else "unknown",
            self._fps,
        )

    def _probe(self) -> tuple[float, Any]:
        """The file's frame rate and its first frame at start_frame (sets ``_frame_count``)."""
        p = self.params
        path = self._path
        probe = self._new_capture()
        try:
            file_fps = float(probe.get(CAP_PROP_FPS))
            count = int(probe.get(CAP_PROP_FRAME_COUNT))
            self._frame_count = count if count > 0 else None
            if self._frame_count is not None and p.start_frame >= self._frame_count:
                raise ValueError(
                    f"{self._where}: start_frame {p.start_frame} is past the end of "
                    f"{str(path)!r}, which has {self._frame_count} frames; choose a smaller "
                    "params.start_frame"
                )
            if p.start_frame:
                probe.set(CAP_PROP_POS_FRAMES, p.start_frame)
            first = None
            for _ in range(_MAX_BAD_IN_A_ROW):
                ok, image = probe.read()
                if ok:
                    first = image
                    break
        finally:
            probe.release()
        if first is None:
            raise ValueError(
                f"{self._where}: no frame of {str(path)!r} could be decoded"
                + (f" at or after frame {p.start_frame}" if p.start_frame else "")
                + "; the file is damaged or uses a codec this FFmpeg build lacks "
                "(re-encode it, e.g. ffmpeg -i in -c:v mpeg4 out.mp4)"
            )
        return file_fps, first

    def _opencv(self) -> Any:
        if self._cv2 is None:
            self._cv2 = import_cv2(f"the video_file node {self.id!r}")
        return self._cv2

    def frame_rate(self) -> float:
        """The file's frame rate (or ``fps_override``), for ``pace: realtime``."""
        if not self._fps:
            raise ValueError(
                f"{self._where}: {str(self._path)!r} reports no usable frame rate "
                f"({self._file_fps!r}), so it cannot be paced in realtime; set "
                "params.fps_override, or pace: fast on the node"
            )
        return self._fps

    def _new_capture(self) -> Any:
        if self._use_av:
            av = self._av
            try:
                return _AvCapture(av, self._path)
            except (av.FFmpegError, OSError, ValueError):
                self._use_av = False  # not for PyAV: OpenCV may still read it
        cv2 = self._opencv()
        cap = cv2.VideoCapture(str(self._path), cv2.CAP_ANY)
        if not cap.isOpened():
            cap.release()
            size = self._path.stat().st_size
            raise ValueError(
                f"{self._where}: cannot read {str(self._path)!r} as a video ({size} bytes): it "
                "is not a video, it is damaged or truncated, or its format needs a codec this "
                "OpenCV build lacks; check that it plays (e.g. ffprobe) or re-encode it"
            )
        return cap

    def _start_pass(self) -> Any:
        """A capture positioned at start_frame, for the first pass and each loop."""
        cap = self._new_capture()
        if self.params.start_frame:
            cap.set(CAP_PROP_POS_FRAMES, self.params.start_frame)
        self._index = self.params.start_frame  # index of the next frame in the file
        return cap

    def process(self) -> None:
        end_frame = self.params.end_frame
        image: np.ndarray | None = None  # one slot per call, reused past undecodable frames
        while True:
            if end_frame is None or self._index < end_frame:
                if image is None:
                    image = self.frames.allocate(self._shape, np.uint8)
                ok, decoded = self._cap.read(image)
                if ok:
                    self._send(image, decoded)
                    return
                if not self._undecodable():
                    continue
            self._end_of_pass()

    def _send(self, image: np.ndarray, decoded: Any) -> None:
        if decoded is not image:
            # OpenCV allocated its own array (a frame of another shape): copy it in once.
            decoded = np.asarray(decoded)
            if decoded.ndim == 2:
                cv2 = self._opencv()
                decoded = cv2.cvtColor(decoded, cv2.COLOR_GRAY2BGR)
            self._shape = tuple(int(n) for n in decoded.shape)
            image = self.frames.allocate(self._shape, np.uint8)
            np.copyto(image, decoded)
        if self._bad_in_a_row:
            self.count("corrupt_frames", self._bad_in_a_row)
            self.log.warning(
                "skipped %d undecodable frame(s) before frame %d of %s",
                self._bad_in_a_row,
                self._index,
                self._path,
            )
            self._bad_in_a_row = 0
        index = self._index
        self._index += 1
        if self.params.fps_override is not None:
            pos_ms = index * 1000.0 / self._fps
        else:
            pos_ms = float(self._cap.get(CAP_PROP_POS_MSEC))
        seq = self._seq
        self._seq += 1
        self._sent_this_pass += 1
        self.frames.send(
            Frame(
                image=image,
                seq=seq,
                t_capture_ns=time.monotonic_ns(),
                source=self.id,
                meta={
                    "frame_index": index,
                    "pos_ms": round(pos_ms, 3),
                    "video_fps": self._fps,
                    "path": str(self._path),
                    "loop": self._loops,
                },
            )
        )

    def _undecodable(self) -> bool:
        """A read failed: count a damaged frame and go on, or say the file has ended."""
        before_known_end = self._frame_count is not None and self._index < self._frame_count
        self._index += 1
        if before_known_end:
            # Inside the file's frame count: a damaged frame, whatever follows it.
            self.count("corrupt_frames")
            self.log.warning("skipped undecodable frame %d of %s", self._index - 1, self._path)
            return False
        # Past the known count (or none is known): the end, unless a later read succeeds,
        # which then counts these failures as damaged frames.
        self._bad_in_a_row += 1
        if self._frame_count is not None or self._bad_in_a_row >= _MAX_BAD_IN_A_ROW:
            self._bad_in_a_row = 0
            return True
        return False

    def _end_of_pass(self) -> None:
        self._cap.release()
        if not self.params.loop:
            raise EndOfStream
        if self._sent_this_pass == 0:
            raise ValueError(
                f"{self._where}: a whole pass over {str(self._path)!r} from frame "
                f"{self.params.start_frame} decoded no frame, so looping would send nothing"
            )
        self._loops += 1
        self._sent_this_pass = 0
        self._cap = self._start_pass()

    def close(self) -> None:
        self._cap.release()

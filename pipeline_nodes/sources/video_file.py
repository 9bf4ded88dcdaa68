"""The video file source: the frames of any file OpenCV reads, at the file's rate or unpaced.

Each frame is decoded by ``VideoCapture.read(image)`` straight into a shared-memory slot of the
``frames`` port (OpenCV fills the given array in place when its shape matches; otherwise the
decoded frame is copied once). A frame the decoder cannot decode at all (a damaged packet in
the middle of the file) is skipped and counted as ``corrupt_frames``; frames the decoder can
conceal errors in are passed on as they come. Its frame rate (the file's, or
``fps_override``) is what the runtime holds it to under the node's ``pace: realtime`` (the
default; ``pipeline.runtime.pacing``); ``pace: fast`` sends the frames as fast as the
consumers take them.
"""

from __future__ import annotations

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


class VideoFileSource(Node):
    """Send the frames of a video file (any container and codec OpenCV's FFMPEG reads).

    Frames are decoded straight into the output's shared memory. Under the node's ``pace: realtime``
    (the default) the runtime sends one frame per ``1/fps`` of the file (or ``fps_override``),
    like a camera; ``pace: fast`` sends as fast as the consumers take them (with ``when_full:
    block`` edges, the slowest one's rate), for offline processing and benchmarks. Ends with end
    of stream after the last frame (or before ``end_frame``); with ``loop`` it starts again at
    ``start_frame`` and then ends only when the graph is stopped. A frame the decoder cannot
    decode is skipped and counted as ``corrupt_frames``. A bad ``path`` (missing, not a video,
    no decodable frame) fails ``open()`` with a message naming the node and the file.

    Output ``frames``: ``(H, W, 3)`` uint8 BGR; ``meta`` carries ``frame_index`` (0-based
    index in the file), ``pos_ms`` (the frame's timestamp in the file), ``video_fps``, ``path``
    and ``loop`` (how many times the file was restarted).

    Example:
        - id: camera
          node: video_file
          pace: realtime
          params: {path: samples/people.mp4, loop: true}
    """

    preload_modules = ("cv2",)

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
        self._cv2 = import_cv2("video_file")
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
        probe = self._new_capture()
        try:
            file_fps = float(probe.get(self._cv2.CAP_PROP_FPS))
            count = int(probe.get(self._cv2.CAP_PROP_FRAME_COUNT))
            self._frame_count = count if count > 0 else None
            if self._frame_count is not None and p.start_frame >= self._frame_count:
                raise ValueError(
                    f"{self._where}: start_frame {p.start_frame} is past the end of "
                    f"{str(path)!r}, which has {self._frame_count} frames; choose a smaller "
                    "params.start_frame"
                )
            if p.start_frame:
                probe.set(self._cv2.CAP_PROP_POS_FRAMES, p.start_frame)
            first = None
            for _ in range(_MAX_BAD_IN_A_ROW):
                ok, image = probe.read()
                if ok:
                    first = image
                    break
            if first is None:
                raise ValueError(
                    f"{self._where}: no frame of {str(path)!r} could be decoded"
                    + (f" at or after frame {p.start_frame}" if p.start_frame else "")
                    + "; the file is damaged or uses a codec this OpenCV build lacks "
                    "(re-encode it, e.g. ffmpeg -i in -c:v mpeg4 out.mp4)"
                )
        finally:
            probe.release()
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
        cv2 = self._cv2
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
            cap.set(self._cv2.CAP_PROP_POS_FRAMES, self.params.start_frame)
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
                decoded = self._cv2.cvtColor(decoded, self._cv2.COLOR_GRAY2BGR)
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
            pos_ms = float(self._cap.get(self._cv2.CAP_PROP_POS_MSEC))
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

"""Nodes for the transport benchmark (``bench_nodes:FrameSource`` with benchmarks/ on the path)."""

from __future__ import annotations

import time
from typing import Literal

import numpy as np
from pydantic import Field

from pipeline import EndOfStream, Frame, Input, Message, Node, NodeParams, Output


class FrameSource(Node):
    """Send ``frames`` frames of ``width`` x ``height`` x 3 uint8, paced at ``fps`` (0: flat out).

    ``mode: inplace`` allocates each frame in the port's shared memory and writes a stamp into
    it (a camera reading straight into the slot); ``mode: copy`` sends a ready-made array that
    the port copies into shared memory (a frame that came from elsewhere).
    """

    class Params(NodeParams):
        width: int = Field(640, ge=1)
        height: int = Field(480, ge=1)
        frames: int = Field(1000, ge=1)
        fps: float = Field(0.0, ge=0)
        mode: Literal["inplace", "copy"] = "inplace"

    frames = Output(Frame)

    def open(self) -> None:
        p = self.params
        self._shape = (p.height, p.width, 3)
        self._ready = np.random.default_rng(0).integers(0, 255, self._shape, dtype=np.uint8)
        self._seq = 0
        self._period = 1.0 / p.fps if p.fps else 0.0
        self._next = time.perf_counter()

    def process(self) -> None:
        if self._seq >= self.params.frames:
            raise EndOfStream
        if self._period:
            while time.perf_counter() < self._next:
                pass  # spin: a sleep would add the scheduler's wake-up to every latency
            self._next += self._period
        if self.params.mode == "inplace":
            image = self.frames.allocate(self._shape, np.uint8)
            image[0, 0, 0] = self._seq & 0xFF
        else:
            image = self._ready
        self.frames.send(
            Frame(image=image, seq=self._seq, t_capture_ns=time.monotonic_ns(), source=self.id)
        )
        self._seq += 1


class Touch(Node):
    """Read one byte of each frame (so the consumer really maps the memory) and keep nothing.

    It also counts its steady state, for a rate without the start and the end of the run:
    ``steady_frames`` frames from its ``skip``-th to its last took ``steady_ns``.
    """

    class Params(NodeParams):
        skip: int = Field(0, ge=0)

    frames = Input(Message)

    def open(self) -> None:
        self._n = 0
        self._t_skip = 0
        self._t_last = 0

    def process(self, frames: Message) -> None:
        if isinstance(frames, Frame):
            _ = frames.image[0, 0, 0]
        self._n += 1
        if self._n > self.params.skip:
            self._t_last = time.monotonic_ns()
            if not self._t_skip:
                self._t_skip = self._t_last

    def flush(self) -> None:
        if self._t_last > self._t_skip:
            self.count("steady_frames", self._n - self.params.skip - 1)
            self.count("steady_ns", self._t_last - self._t_skip)


class PreloadedVideo(Node):
    """Send the first ``preload`` frames of a video, decoded once in ``open()``, over and over
    until ``frames`` are sent, as fast as the graph takes them: a source that costs a copy per
    frame, not a decode, so that the nodes after it are what is measured."""

    class Params(NodeParams):
        path: str
        frames: int = Field(300, ge=1)
        preload: int = Field(50, ge=1)

    frames = Output(Frame)

    def open(self) -> None:
        import cv2

        capture = cv2.VideoCapture(self.params.path)
        self._images: list[np.ndarray] = []
        while len(self._images) < self.params.preload:
            ok, image = capture.read()
            if not ok:
                break
            self._images.append(image)
        capture.release()
        if not self._images:
            raise ValueError(f"no frame could be read from {self.params.path}")
        self._seq = 0

    def process(self) -> None:
        if self._seq >= self.params.frames:
            raise EndOfStream
        ready = self._images[self._seq % len(self._images)]
        image = self.frames.allocate(ready.shape, np.uint8)
        image[:] = ready
        self.frames.send(
            Frame(image=image, seq=self._seq, t_capture_ns=time.monotonic_ns(), source=self.id)
        )
        self._seq += 1


class Stage(Node):
    """A pipeline stage that forwards each frame after ``wait_ms`` (a wait: an accelerator
    or a remote service doing the work, so that copies of it do not compete for this
    machine's cores) and ``work_ms`` of CPU (a busy loop)."""

    class Params(NodeParams):
        wait_ms: float = Field(0.0, ge=0)
        work_ms: float = Field(0.0, ge=0)

    frames = Input(Frame)
    out = Output(Frame)

    def process(self, frames: Frame) -> None:
        if self.params.wait_ms:
            time.sleep(self.params.wait_ms / 1000)
        if self.params.work_ms:
            end = time.thread_time() + self.params.work_ms / 1000
            while time.thread_time() < end:
                pass
        self.out.send(frames)

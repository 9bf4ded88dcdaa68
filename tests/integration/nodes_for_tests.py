"""Nodes that the integration tests put in graphs, by ``tests.integration.nodes_for_tests:X``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from pipeline import Detections, Frame, Input, Node, NodeParams, Output, Tensors


class Recorder(Node):
    """Write one JSON line per frame: seq, image checksum, latency; and a marker on close."""

    class Params(NodeParams):
        path: str
        delay_ms: float = Field(0.0, ge=0)

    frames = Input(Frame)

    def open(self) -> None:
        self._file = Path(self.params.path).open("w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        Path(self.params.path + ".pid").write_text(str(os.getpid()))

    def process(self, frames: Frame) -> None:
        if self.params.delay_ms:
            time.sleep(self.params.delay_ms / 1000)
        record = {
            "seq": frames.seq,
            "sum": int(frames.image.sum(dtype=np.uint64)),
            "shape": list(frames.image.shape),
            "writeable": bool(frames.image.flags.writeable),
            "latency_ms": (time.monotonic_ns() - frames.t_capture_ns) / 1e6,
        }
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()
        Path(self.params.path + ".closed").write_text("closed")


class Relay(Node):
    """Forward each frame after ``delay_ms``; raise at seq ``fail_at``; mark the first
    process() call (``.busy``) and close()."""

    class Params(NodeParams):
        delay_ms: float = Field(0.0, ge=0)
        fail_at: int = -1
        marker: str = ""
        say: str = ""  # logged once in open()

    frames = Input(Frame)
    out = Output(Frame)

    def open(self) -> None:
        if self.params.say:
            self.log.info(self.params.say)
        if self.params.marker:
            Path(self.params.marker + ".pid").write_text(str(os.getpid()))

    def process(self, frames: Frame) -> None:
        if frames.seq == self.params.fail_at:
            raise ValueError(f"boom at {frames.seq}")
        busy = Path(self.params.marker + ".busy")
        if self.params.marker and not busy.exists():
            busy.write_text(str(frames.seq))
        if self.params.delay_ms:
            time.sleep(self.params.delay_ms / 1000)
        self.out.send(frames)

    def close(self) -> None:
        if self.params.marker:
            Path(self.params.marker + ".closed").write_text("closed")


def tag(frames: Frame, name: str) -> Detections:
    """One detection named ``name`` whose confidence is derived from the frame's pixels."""
    h, w = frames.image.shape[:2]
    value = float(frames.image.sum(dtype=np.uint64) % 1000) / 1000
    return frames.derive(
        Detections,
        xyxy=[[0.1, 0.2, 0.3, 0.4]],
        confidence=[value],
        class_id=[0],
        class_names=[name],
        image_wh=(w, h),
    )


class Tagger(Node):
    """One detection per frame whose confidence is derived from the frame's pixels."""

    frames = Input(Frame)
    detections = Output(Detections)

    def process(self, frames: Frame) -> None:
        self.detections.send(tag(frames, "tag"))


class JoinCheck(Node):
    """Receive frames and detections joined on seq; record whether they belong together."""

    class Params(NodeParams):
        path: str

    frames = Input(Frame)
    detections = Input(Detections)

    def open(self) -> None:
        self._file = Path(self.params.path).open("w", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def process(self, frames: Frame, detections: Detections) -> None:
        value = float(frames.image.sum(dtype=np.uint64) % 1000) / 1000
        record = {
            "frame_seq": frames.seq,
            "det_seq": detections.seq,
            "match": abs(float(detections.confidence[0]) - value) < 1e-6,
        }
        self._file.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self._file.close()


class OpenFails(Node):
    """A sink whose open() raises; close() must then never run."""

    class Params(NodeParams):
        marker: str

    frames = Input(Frame)

    def open(self) -> None:
        raise RuntimeError("no such device /dev/video9")

    def process(self, frames: Frame) -> None:
        pass

    def close(self) -> None:
        Path(self.params.marker).write_text("close was called")


class SendsWrongType(Node):
    """Declares a Frame output and sends Detections on it."""

    frames = Input(Frame)
    out = Output(Frame)

    def process(self, frames: Frame) -> None:
        self.out.send(Detections(seq=frames.seq))


class CloseFails(Node):
    """A sink whose close() raises after a clean run."""

    frames = Input(Frame)

    def process(self, frames: Frame) -> None:
        pass

    def close(self) -> None:
        raise OSError("could not finalise the file")


class SaysNonsense(Node):
    """A sink that sends its supervisor a control message of a kind nobody knows."""

    frames = Input(Frame)

    def process(self, frames: Frame) -> None:
        if frames.seq == 2:
            import msgpack

            worker: Any = self._services
            worker.control.send(msgpack.packb({"t": "bogus"}))


def _hang_here() -> None:
    """Spin forever in Python (a bug's endless loop), ended only by a signal."""
    while True:
        time.sleep(0.05)


class Hangs(Node):
    """A sink that hangs in ``open``, in ``close`` or in ``process`` at seq ``at_seq``."""

    class Params(NodeParams):
        method: str = "process"
        at_seq: int = 0

    frames = Input(Frame)

    def open(self) -> None:
        if self.params.method == "open":
            _hang_here()

    def process(self, frames: Frame) -> None:
        if self.params.method == "process" and frames.seq == self.params.at_seq:
            _hang_here()

    def close(self) -> None:
        if self.params.method == "close":
            _hang_here()


class SendsObjects(Node):
    """A buggy producer: on even seqs its Tensors hold a Python-object array, which no
    consumer may read (pointers into another process)."""

    frames = Input(Frame)
    tensors = Output(Tensors)

    def process(self, frames: Frame) -> None:
        if frames.seq % 2 == 0:
            value = np.array([object(), object()], dtype=object)
        else:
            value = np.arange(2, dtype=np.float32)
        self.tensors.send(frames.derive(Tensors, tensors={"t": value}))


class StreamsLog(Node):
    """A streams input: one JSON line per call (the (source, seq) it got, in order); each
    frame is forwarded with its source. ``max_batch`` > 1 takes batches."""

    class Params(NodeParams):
        path: str
        max_batch: int = 1
        batch_timeout_ms: float = 0.0
        delay_ms: float = Field(0.0, ge=0)

    frames = Input(Frame, streams=True)
    out = Output(Frame)

    def open(self) -> None:
        self._file = Path(self.params.path).open("w", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def batching(self) -> tuple[int, float]:
        return (self.params.max_batch, self.params.batch_timeout_ms / 1000)

    def process(self, frames: Frame) -> None:
        self.process_batch([frames])

    def process_batch(self, frames: list[Frame]) -> None:  # type: ignore[override]
        if self.params.delay_ms:
            time.sleep(self.params.delay_ms / 1000)
        self._file.write(json.dumps([[f.source, f.seq] for f in frames]) + "\n")
        self._file.flush()
        for frame in frames:
            self.out.send(frame)

    def close(self) -> None:
        self._file.close()


class SlowTagger(Node):
    """``Tagger`` after ``delay_ms`` per frame, naming its copy in ``class_names``
    (``r0``, ``r1``: a replicated node); sends nothing for a seq in ``skip`` or, when
    ``silent_replica`` is its copy, for any frame."""

    class Params(NodeParams):
        delay_ms: float = Field(0.0, ge=0)
        skip: list[int] = Field(default_factory=list)
        silent_replica: int = -1

    frames = Input(Frame)
    detections = Output(Detections)

    def process(self, frames: Frame) -> None:
        if self.params.delay_ms:
            time.sleep(self.params.delay_ms / 1000)
        if frames.seq in self.params.skip or self.replica == self.params.silent_replica:
            return
        self.detections.send(tag(frames, f"r{self.replica}of{self.replicas}"))


class Crasher(Node):
    """Forward each frame; at the first seq >= ``at`` of its first life (of every life with
    ``every_life``) end as ``how`` says: ``kill`` (SIGKILL to itself, before sending),
    ``raise``, ``exit0`` (a clean exit before the end of its stream) or ``hang`` (write
    ``<marker>.hang`` and sleep until killed). ``<marker>.lives`` counts its lives."""

    class Params(NodeParams):
        marker: str
        at: int = -1
        how: str = "kill"
        every_life: bool = False
        delay_ms: float = Field(0.0, ge=0)
        die_in_flush: bool = False  # SIGKILL in flush() of the first life

    frames = Input(Frame)
    out = Output(Frame)

    def flush(self) -> None:
        if self.params.die_in_flush and self.life == 1:
            os.kill(os.getpid(), 9)
            time.sleep(60)

    def open(self) -> None:
        lives = Path(self.params.marker + ".lives")
        self.life = (int(lives.read_text()) if lives.exists() else 0) + 1
        lives.write_text(str(self.life))
        Path(self.params.marker + ".pid").write_text(str(os.getpid()))
        self.armed = self.params.at >= 0 and (self.life == 1 or self.params.every_life)

    def process(self, frames: Frame) -> None:
        if self.params.delay_ms:
            time.sleep(self.params.delay_ms / 1000)
        if self.armed and frames.seq >= self.params.at:
            self.armed = False
            how = self.params.how
            if how == "kill":
                os.kill(os.getpid(), 9)
                time.sleep(60)
            elif how == "raise":
                raise RuntimeError(f"crashed at seq {frames.seq} in life {self.life}")
            elif how == "exit0":
                os._exit(0)
            elif how == "hang":
                Path(self.params.marker + ".hang").write_text(str(frames.seq))
                while True:
                    time.sleep(0.05)
        self.out.send(frames)


class PreloadingRelay(Relay):
    """A relay whose ``preload_modules`` names a module nothing else imports (a C extension of
    the standard library's test builds: it shows in ``/proc/PID/maps`` once imported)."""

    preload_modules = ("xxlimited",)

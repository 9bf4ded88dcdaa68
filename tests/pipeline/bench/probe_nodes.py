"""Nodes that the bench tests put in graphs, by ``tests.pipeline.bench.probe_nodes:X``."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import Field

from pipeline import EndOfStream, Frame, Input, Message, Node, NodeParams, Output


class AffinityProbe(Node):
    """A sink that writes the CPUs its process may run on (``os.sched_getaffinity``) to a file."""

    class Params(NodeParams):
        path: str

    messages = Input(Message)

    def open(self) -> None:
        Path(self.params.path).write_text(json.dumps(sorted(os.sched_getaffinity(0))))

    def process(self, messages: Message) -> None:
        pass


class RateSource(Node):
    """A source with a frame rate of its own, like ``video_file`` (sends nothing)."""

    class Params(NodeParams):
        count: int = Field(1, ge=0)

    frames = Output(Frame)

    def frame_rate(self) -> float | None:
        return 25.0

    def process(self) -> None:
        raise EndOfStream

"""Nodes for the start-up stop tests, by ``tests.integration.startup_nodes:X``."""

from __future__ import annotations

import time
from pathlib import Path

from pipeline import Frame, Input, Node, NodeParams


class SlowOpen(Node):
    """A sink whose open() takes ``open_s`` (a model that loads slowly); marks when it began."""

    class Params(NodeParams):
        marker: str
        open_s: float = 30.0

    frames = Input(Frame)

    def open(self) -> None:
        Path(self.params.marker).write_text("opening")
        time.sleep(self.params.open_s)

    def process(self, frames: Frame) -> None:
        pass

"""Nodes the source tests put in real graphs, as ``tests.pipeline_nodes.sources.source_graph_nodes:X``.

Also the frame-number code the test MJPEG server draws into its frames: 16 black or white
cells along the top edge, large enough to survive JPEG, read back by ``read_number``. This
module imports none of its siblings, so a node process imports it by its dotted path alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydantic import Field

from pipeline import Frame, Input, Node, NodeParams

BITS = 16
CELL = 10  # pixels per cell side; the code spans BITS * CELL pixels of the top rows


def read_number(image: np.ndarray) -> int:
    """The frame number drawn in ``image`` by the test server (see ``draw_number``)."""
    number = 0
    half = CELL // 2
    for bit in range(BITS):
        x = bit * CELL + half
        if float(image[half - 2 : half + 2, x - 2 : x + 2].mean()) > 127:
            number |= 1 << bit
    return number


def draw_number(image: np.ndarray, number: int) -> None:
    """Draw ``number`` as the cell code ``read_number`` reads (in place)."""
    for bit in range(BITS):
        image[0:CELL, bit * CELL : (bit + 1) * CELL] = 255 if (number >> bit) & 1 else 0


class FrameLog(Node):
    """Write one JSON line per frame: seq, capture time, meta, shape, checksum, drawn number."""

    class Params(NodeParams):
        path: str = Field(description="The JSON lines file to write.")

    frames = Input(Frame)

    def open(self) -> None:
        self._file = Path(self.params.path).open("w", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def process(self, frames: Frame) -> None:
        image = frames.image
        record = {
            "seq": frames.seq,
            "t_capture_ns": frames.t_capture_ns,
            "source": frames.source,
            "meta": dict(frames.meta),
            "shape": list(image.shape),
            "sum": int(image.sum(dtype=np.uint64)),
            "number": read_number(image) if image.shape[1] >= BITS * CELL else -1,
        }
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

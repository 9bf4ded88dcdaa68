"""Nodes used by the config cases (importable as tests.config_cases.typed_nodes:Class)."""

from __future__ import annotations

from pipeline import Detections, Input, Node


class TakesDetections(Node):
    """A sink that takes Detections on a port named 'frames' (to provoke a type mismatch)."""

    frames = Input(Detections)

    def process(self, frames: Detections) -> None:
        pass

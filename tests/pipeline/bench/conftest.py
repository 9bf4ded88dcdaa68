"""Fixtures of the bench tests: graphs in tmp folders, and a check that no segment leaks."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline.transport.shm import SHM_DIR
from tests.pipeline.bench.helpers import PROBES, SYNTHETIC


@pytest.fixture(autouse=True)
def no_leaked_segments() -> Iterator[None]:
    """Every shared-memory segment of graphs run in this process is gone after each test."""
    mine = f"pipeline-{os.getpid()}-*"
    before = {p.name for p in SHM_DIR.glob(mine)}
    yield
    leaked = {p.name for p in SHM_DIR.glob(mine)} - before
    assert not leaked, f"shared-memory segments left behind: {sorted(leaked)}"


@pytest.fixture
def write_graph(tmp_path: Path) -> Callable[..., Path]:
    """Write a graph file into the test's folder; ``{P}`` is the probe nodes' module."""

    def write(text: str, name: str = "graph.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).replace("{P}", PROBES))
        return path

    return write


@pytest.fixture
def synthetic_graph(tmp_path: Path) -> Callable[[int], Path]:
    """The tiny synthetic graph (camera -> resize -> sink) with ``frames`` frames (0: endless)."""

    def write(frames: int = 0) -> Path:
        path = tmp_path / f"tiny-{frames}.yaml"
        path.write_text(SYNTHETIC.replace("{frames}", str(frames)))
        return path

    return write

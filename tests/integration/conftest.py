"""Helpers for integration tests: graphs in tmp folders, and a check that no segment leaks."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.transport.shm import SHM_DIR

T = "tests.integration.nodes_for_tests"


def segments() -> set[str]:
    """Segments of graphs this test process runs in-process (named after its pid); tests
    that run `pipeline run` as a subprocess check that process's own segments."""
    return {p.name for p in SHM_DIR.glob(f"pipeline-{os.getpid()}-*")}


@pytest.fixture(autouse=True)
def no_leaked_segments() -> Iterator[None]:
    before = segments()
    yield
    leaked = segments() - before
    assert not leaked, f"shared-memory segments left behind: {sorted(leaked)}"


@pytest.fixture
def write_graph(tmp_path: Path):
    def write(text: str, name: str = "graph.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).replace("{T}", T).replace("{tmp}", str(tmp_path)))
        return path

    return write

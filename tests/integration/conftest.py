"""Helpers for integration tests: graphs in tmp folders, and a check that no segment leaks."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.transport.shm import SHM_DIR

T = "tests.integration.nodes_for_tests"


def segments() -> set[str]:
    return {p.name for p in SHM_DIR.glob("pipeline-*")} if SHM_DIR.is_dir() else set()


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

"""Fixtures of the sink tests: shared-memory leak checks, graph files, a free port, Chromium."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.transport.shm import SHM_DIR


def segments_of(pid: int) -> list[str]:
    """Shared-memory segments of the graph run whose supervisor has process id ``pid``."""
    return sorted(p.name for p in SHM_DIR.glob(f"pipeline-{pid}-*")) if SHM_DIR.is_dir() else []


@pytest.fixture(autouse=True)
def no_leaked_segments() -> Iterator[None]:
    """Fail a test whose in-process graph run (``run_graph``) leaves shared memory behind.

    Only this process's segments count: other runs on the machine (other people's tests)
    come and go meanwhile. A test that starts ``pipeline run`` in a subprocess checks
    ``segments_of(proc.pid)`` itself.
    """
    before = set(segments_of(os.getpid()))
    yield
    leaked = set(segments_of(os.getpid())) - before
    assert not leaked, f"shared-memory segments left behind: {sorted(leaked)}"


@pytest.fixture
def shm_segments():
    """``shm_segments(pid)``: the segments left by the graph run of supervisor ``pid``."""
    return segments_of


@pytest.fixture
def write_graph(tmp_path: Path):
    """``write_graph(text)``: a graph file in tmp_path; ``{tmp}`` is replaced by tmp_path.

    The same as tests/integration/conftest.py's, which cannot be imported from here: this
    folder is no package, so ``tests`` is importable only when a run also collects one.
    """

    def write(text: str, name: str = "graph.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).replace("{tmp}", str(tmp_path)))
        return path

    return write


CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@pytest.fixture
def free_port() -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def chromium():
    """Run headless Chromium (Debian package ``chromium``) once: ``chromium(url, *flags)``."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("headless Chromium is not installed (apt-get install chromium)")

    def run(url: str, *flags: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
            return subprocess.run(
                [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *flags, url],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )

    return run


@pytest.fixture
def screenshot(chromium, tmp_path: Path):
    """``screenshot(url, name)``: a PNG of the page as Chromium renders it, read as BGR."""
    import cv2

    def take(url: str, name: str, size: str = "900,420"):
        path = tmp_path / name
        result = chromium(url, f"--screenshot={path}", f"--window-size={size}")
        assert path.exists(), result.stderr[-2000:]
        image = cv2.imread(str(path))
        assert image is not None
        return image

    return take

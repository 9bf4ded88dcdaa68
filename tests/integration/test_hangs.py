"""A node that hangs in process(), open() or close() is found, named and shown: a warning at
half its limit, then the node by id, method and seq with its Python stack, and the graph
stops as after a crash."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.transport.shm import SHM_DIR

pytestmark = pytest.mark.integration

GRAPH = """
    graph: hang
    nodes:
      - {id: camera, node: synthetic, params: {width: 64, height: 48, fps: 50, frames: 0}}
      - id: stuck
        node: {T}:Hangs
        params: {method: METHOD, at_seq: 5}
        LIMIT
        inputs: {frames: camera/frames}
"""


def run(
    write_graph, tmp_path: Path, method: str, limit: str, live: str = "--no-live"
) -> tuple[subprocess.CompletedProcess[str], float]:
    graph = write_graph(GRAPH.replace("METHOD", method).replace("LIMIT", limit))
    stats = tmp_path / "stats.json"
    t0 = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "run",
            str(graph),
            live,
            "--stats-json",
            str(stats),
        ],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    return done, time.monotonic() - t0


def segments(pid: int) -> list[str]:
    return sorted(p.name for p in SHM_DIR.glob(f"pipeline-{pid}-*"))


def test_a_node_stuck_in_process_is_named_with_its_seq_and_stack(write_graph, tmp_path):
    done, elapsed = run(write_graph, tmp_path, "process", "health_timeout_s: 2", "--live")
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "warning: node 'stuck' has been in process() on seq 5 for" in out  # at half
    assert "stalled process()" in out  # and in the live table
    assert (
        "error: node 'stuck' failed in process() on seq 5 from camera" in out
        or "error: node 'stuck' failed in process() on seq 5" in out
    ), out
    assert "stuck: no progress for" in out
    assert "(health_timeout_s: 2)" in out
    # its Python stack, from faulthandler: the function it is stuck in
    assert "_hang_here" in out
    assert "nodes_for_tests.py" in out
    assert elapsed < 30
    stats = json.loads((tmp_path / "stats.json").read_text())["nodes"]
    # the final table is current: the stuck node's last report says where it stopped
    assert stats["stuck"]["inputs"]["frames"]["received"] >= 6


def test_a_node_stuck_in_open_is_reported_before_the_graph_starts(write_graph, tmp_path):
    done, _ = run(write_graph, tmp_path, "open", "open_timeout_s: 1.5")
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "node 'stuck' failed in open()" in out
    assert "(open_timeout_s: 1.5)" in out
    assert "_hang_here" in out


def test_a_node_stuck_in_close_is_reported(write_graph, tmp_path):
    graph = GRAPH.replace("frames: 0}", "frames: 20}")
    graph_file = write_graph(
        graph.replace("METHOD", "close").replace("LIMIT", "close_timeout_s: 1.5")
    )
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", str(graph_file), "--no-live"],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "node 'stuck' failed in close()" in out
    assert "(close_timeout_s: 1.5)" in out


def test_timeouts_can_be_switched_off_and_are_validated(write_graph, tmp_path):
    from pipeline.graph.load import check_graph

    ok = write_graph(GRAPH.replace("METHOD", "close").replace("LIMIT", "health_timeout_s: null"))
    graph, issues = check_graph(ok)
    assert graph is not None, issues
    assert graph.node("stuck").health_timeout_s is None
    bad = write_graph(
        GRAPH.replace("METHOD", "close").replace("LIMIT", "health_timeout_s: 0"), "bad.yaml"
    )
    graph, issues = check_graph(bad)
    assert graph is None
    assert any("health_timeout_s" in i.path and i.line == 8 for i in issues), issues

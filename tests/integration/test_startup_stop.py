"""A stop during start-up is a stop; after a failure the table shows every node's real counts."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import load_graph, run_graph

pytestmark = pytest.mark.integration

S = "tests.integration.startup_nodes"


def test_ctrl_c_before_the_graph_started_is_a_clean_stop(write_graph, tmp_path):
    # many nodes, so that the stop finds some still importing, some opening, some ready
    lines = [
        "graph: slow_start",
        "nodes:",
        "  - {id: camera, node: synthetic, params: {width: 32, height: 32, fps: 0, frames: 0}}",
        f"  - {{id: model, node: '{S}:SlowOpen', params: {{marker: {tmp_path}/opening}},",
        "     inputs: {frames: camera/frames}}",
        *(
            f"  - {{id: sink{i}, node: discard, inputs: {{messages: camera/frames}}}}"
            for i in range(6)
        ),
    ]
    graph = write_graph("\n".join(lines) + "\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "run", str(graph), "--no-live"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not (tmp_path / "opening").exists():
        assert time.monotonic() < deadline, "the slow node never began to open"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode != 1, out
    assert "stopped before the graph started" in out
    assert "graph 'slow_start' stopped in" in out
    assert "failed" not in out
    assert "Traceback" not in out
    assert "_Terminated" not in out


def test_after_a_failure_every_node_shows_its_real_counts(write_graph, tmp_path):
    graph = write_graph("""
        graph: failing
        nodes:
          - {id: camera, node: synthetic, params: {width: 64, height: 48, fps: 0, frames: 0}}
          - id: relay
            node: {T}:Relay
            inputs: {frames: camera/frames}
          - id: bad
            node: {T}:Relay
            params: {fail_at: 8}
            inputs: {frames: relay/out}
          - {id: sink, node: discard, inputs: {messages: bad/out}}
    """)
    stats_json = tmp_path / "stats.json"
    result = run_graph(load_graph(graph), out=io.StringIO(), stats_json=stats_json)
    assert result.exit_code == 1
    nodes = json.loads(Path(stats_json).read_text())["nodes"]
    bad_in = nodes["bad"]["inputs"]["frames"]["received"]
    assert bad_in >= 9  # seq 0..8 reached it: it failed on the 9th
    # upstream nodes sent at least what the failing node received, and say so
    assert nodes["relay"]["outputs"]["out"]["sent"] >= bad_in
    assert nodes["relay"]["inputs"]["frames"]["received"] >= bad_in
    assert nodes["camera"]["outputs"]["frames"]["sent"] >= bad_in


def test_ctrl_c_while_the_graph_is_checked_is_a_stop(monkeypatch, capsys, tmp_path):
    import pipeline.cli

    def interrupted(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.cli, "check_graph", interrupted)
    assert pipeline.cli.main(["run", str(tmp_path / "g.yaml")]) == 130
    err = capsys.readouterr().err
    assert "interrupted: stopped before anything started" in err
    assert "failed" not in err and "Traceback" not in err

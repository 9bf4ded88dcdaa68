"""Nodes forked from the fork server's template: what a run reports about start-up and memory,
when it falls back to a fresh interpreter per node, and that the template leaves nothing
behind. (Every other integration test runs on the fork server too: it is the default.)"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline import load_graph, run_graph
from pipeline.runtime.forkserver import ForkServer, fork_server_supported
from pipeline.runtime.plan import WorkerConfig, plan_graph
from pipeline.runtime.runner import launch_local
from pipeline.runtime.table import render_table

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not fork_server_supported(), reason="the fork server needs Linux"),
]

GRAPH = """
    graph: forked
    nodes:
      - {id: camera, node: synthetic, params: {width: 64, height: 48, fps: 20, frames: 30}}
      - id: relay
        node: {T}:Relay
        inputs: {frames: camera/frames}
      - id: rec
        node: {T}:Recorder
        params: {path: {tmp}/rec.jsonl}
        inputs: {frames: relay/out}
"""


def children() -> set[int]:
    pid = os.getpid()
    return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def test_a_run_forks_its_nodes_and_reports_their_pss_and_start_up(write_graph, tmp_path):
    before = children()
    result = run_graph(load_graph(write_graph(GRAPH)), stats_json=tmp_path / "stats.json")
    assert result.exit_code == 0, result.error
    assert result.memory["launcher"] == "fork_server"
    pss = result.memory["pss_mb"]
    assert set(pss) == {"camera", "relay", "rec", "(supervisor)"}  # the template is gone
    assert all(v > 0 for v in pss.values())
    assert result.memory["total_pss_mb"] == pytest.approx(sum(pss.values()), abs=0.1)
    for node_id, stats in result.stats.items():
        assert stats.pss_mb == pytest.approx(pss[node_id], abs=0.01)
        assert stats.start_s > 0 and stats.open_s >= 0
    written = json.loads((tmp_path / "stats.json").read_text())
    assert written["memory"] == result.memory
    assert written["nodes"]["relay"]["pss_mb"] == result.stats["relay"].pss_mb
    assert "total PSS" in render_table(result.stats, result.memory)
    assert children() == before  # the template and every node were reaped


def test_a_caller_with_threads_gets_a_fresh_interpreter_per_node(write_graph):
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert not fork_server_supported()  # forking now could copy a held lock
        result = run_graph(load_graph(write_graph(GRAPH)))
    finally:
        stop.set()
        other.join()
    assert result.exit_code == 0, result.error
    assert result.memory["launcher"] == "spawn"


def test_the_fork_server_can_be_turned_off_or_passed_over(write_graph, monkeypatch):
    graph = load_graph(write_graph(GRAPH))
    assert run_graph(graph, launcher=launch_local).memory["launcher"] == "spawn"
    monkeypatch.setenv("PIPELINE_FORK_SERVER", "0")
    assert ForkServer.start([]) is None
    assert run_graph(graph).memory["launcher"] == "spawn"


def test_the_template_stops_when_its_channel_closes():
    server = ForkServer.start(["synthetic"])
    assert server is not None
    pid = server.pid
    assert pid in children()
    server.close()
    assert pid not in children()  # reaped, not left as a zombie


def test_the_template_imports_the_preload_modules_before_it_is_asked_to_fork():
    # at once after its first answer, while the supervisor sets up its side of the run: not
    # when the first fork request comes (that put cv2's import after the set-up, in series)
    assert "xxlimited" not in sys.modules  # else the template would inherit it
    server = ForkServer.start(["synthetic", "tests.integration.nodes_for_tests:PreloadingRelay"])
    assert server is not None
    try:
        assert server.confirm()
        deadline = time.monotonic() + 30
        while "xxlimited" not in Path(f"/proc/{server.pid}/maps").read_text():
            assert time.monotonic() < deadline, "the template did not import the preload module"
            time.sleep(0.01)
    finally:
        server.close()
    assert "xxlimited" not in sys.modules


def test_nodes_are_forked_together_and_adopted_before_the_answer(write_graph, tmp_path):
    graph = load_graph(write_graph(GRAPH))
    plan = plan_graph(graph, tmp_path)
    configs = [
        WorkerConfig(plan=node, control="ipc:///nonexistent", shm_prefix="x") for node in plan.nodes
    ]
    server = ForkServer.start([node.node_type for node in plan.nodes], wait=False)
    assert server is not None
    procs = []
    try:
        procs = server.launch_many(configs)  # one request: the answer comes once all are ours
        assert len({p.pid for p in procs}) == len(configs)
        assert {p.pid for p in procs} <= children()
        assert all(p.is_alive() for p in procs)
    finally:
        for p in procs:
            p.kill(9)
            p.join(10)
            p.close()
        server.close()
    assert all(p.exitcode == -9 for p in procs)


def test_pipeline_run_forks_its_nodes_from_the_template(write_graph, tmp_path):
    # the command, not only run_graph: `pipeline run` must not pick the one-interpreter launcher
    import subprocess
    import sys

    stats = tmp_path / "stats.json"
    graph = str(write_graph(GRAPH))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "run",
            graph,
            "--no-live",
            "--stats-json",
            str(stats),
        ],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(stats.read_text())["memory"]["launcher"] == "fork_server"

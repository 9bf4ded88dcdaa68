"""restart: policies with real processes: a node that dies is started again, its edges are
connected again, and what was in flight is counted (``lost_on_restart``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pipeline import load_graph, run_graph
from pipeline.errors import NodeCrashLoopError, NodeExitError
from pipeline.transport.shm import SHM_DIR

pytestmark = pytest.mark.integration

GRAPH = """
    graph: restarts
    nodes:
      - {{id: camera, node: synthetic, params: {{width: 64, height: 48, fps: {fps}, frames: {frames}}}}}
      - id: relay
        node: {{T}}:Crasher
        params: {{marker: {{tmp}}/relay, at: {at}, how: {how}{extra}}}
        inputs: {{frames: {{from: camera/frames, queue: {queue}, when_full: {when_full}}}}}
{policy}
      - id: rec
        node: {{T}}:Recorder
        params: {{path: {{tmp}}/rec.jsonl}}
        inputs: {{frames: relay/out}}
"""


def graph_text(
    *,
    frames: int = 200,
    fps: int = 0,
    at: int = 60,
    how: str = "kill",
    queue: int = 4,
    when_full: str = "block",
    restart: str | None = "on-failure",
    extra: str = "",
    more: str = "",
) -> str:
    policy = ""
    if restart is not None:
        policy = (
            f"        restart: {restart}\n        restart_backoff_s: {{initial: 0.05, max: 0.2}}"
        )
        if more:
            policy += f"\n        {more}"
    return GRAPH.format(
        frames=frames,
        fps=fps,
        at=at,
        how=how,
        queue=queue,
        when_full=when_full,
        policy=policy,
        extra=extra,
    )


def seqs(path: Path) -> list[int]:
    return [json.loads(line)["seq"] for line in path.read_text().splitlines()]


def run_dirs(pid: int) -> list[Path]:
    return list(Path(tempfile.gettempdir()).glob(f"pipeline-{pid}-*"))


def test_a_sigkilled_transform_is_restarted_and_the_graph_finishes(write_graph, tmp_path):
    graph = write_graph(graph_text())
    result = run_graph(load_graph(graph))
    assert result.exit_code == 0, result.error
    stats = result.stats
    assert stats["relay"].restarts == 1
    assert (tmp_path / "relay.lives").read_text() == "2"
    sent = stats["camera"].sent
    lost = stats["camera"].counters["lost_on_restart"]
    got = seqs(tmp_path / "rec.jsonl")
    assert sent == 200
    # block: nothing is lost but what was in flight to the dead relay (its queue at most),
    # and the frame it died on is one of them
    assert 1 <= lost <= 4
    assert len(got) == stats["rec"].received == sent - lost
    missing = sorted(set(range(200)) - set(got))
    assert missing == list(range(60, 60 + lost))
    assert got == sorted(got)
    assert stats["rec"].restarts == 0
    assert {s.state for s in stats.values()} == {"closed"}
    assert (tmp_path / "rec.jsonl.closed").exists()
    assert run_dirs(os.getpid()) == []


def test_an_exception_under_on_failure_restarts_the_node(write_graph, tmp_path):
    graph = write_graph(graph_text(how="raise", at=30))
    out = tmp_path / "out.txt"
    with out.open("w") as stream:
        result = run_graph(load_graph(graph), out=stream)
    text = out.read_text()
    assert result.exit_code == 0, text
    assert "RuntimeError: crashed at seq 30 in life 1" in text  # the traceback is shown
    assert "node 'relay' failed in process() on seq 30" in text
    assert "restarting it in" in text
    assert result.stats["relay"].restarts == 1
    lost = result.stats["camera"].counters["lost_on_restart"]
    assert len(seqs(tmp_path / "rec.jsonl")) == 200 - lost


def test_a_crash_loop_stops_the_graph_naming_the_node_and_its_last_error(write_graph, tmp_path):
    graph = write_graph(
        graph_text(how="raise", at=0, extra=", every_life: true", more="max_restarts: 2")
    )
    out = tmp_path / "out.txt"
    with out.open("w") as stream:
        result = run_graph(load_graph(graph), out=stream)
    assert result.exit_code == 1
    assert isinstance(result.error, NodeCrashLoopError)
    message = str(result.error)
    assert message.startswith("node 'relay' is in a crash loop: it failed 3 times within 60 s")
    assert "(max_restarts: 2)" in message
    assert "RuntimeError: crashed at seq" in message
    assert (tmp_path / "relay.lives").read_text() == "3"  # the first life and two restarts
    assert result.stats["relay"].restarts == 2


def test_never_is_the_default_and_a_killed_node_stops_the_graph(write_graph, tmp_path):
    graph = write_graph(graph_text(restart=None))
    result = run_graph(load_graph(graph))
    assert result.exit_code == 1
    assert isinstance(result.error, NodeExitError)
    assert str(result.error) == "node 'relay' was killed by SIGKILL while running"
    assert (tmp_path / "relay.lives").read_text() == "1"
    assert result.stats["relay"].restarts == 0


def test_a_clean_exit_before_the_end_is_restarted_by_always_only(write_graph, tmp_path):
    result = run_graph(load_graph(write_graph(graph_text(how="exit0", restart="on-failure"))))
    assert result.exit_code == 1
    assert "exited with code 0 while running" in str(result.error)
    (tmp_path / "relay.lives").unlink()
    result = run_graph(load_graph(write_graph(graph_text(how="exit0", restart="always"))))
    assert result.exit_code == 0, result.error
    assert result.stats["relay"].restarts == 1


def test_drop_newest_counts_drops_and_losses_apart(write_graph, tmp_path):
    # paced, so that the relay sees frames up to its crash at seq 60 (a camera flat out
    # would drop most of them and could end before the relay got there)
    graph = write_graph(graph_text(fps=400, when_full="drop_newest", extra=", delay_ms: 1"))
    result = run_graph(load_graph(graph))
    assert result.exit_code == 0, result.error
    assert result.stats["relay"].restarts == 1
    camera = result.stats["camera"]
    dropped = camera.outputs["frames"].dropped
    lost = camera.counters["lost_on_restart"]
    assert 1 <= lost <= 4
    assert len(seqs(tmp_path / "rec.jsonl")) == camera.sent - dropped - lost


def test_a_hung_node_is_killed_and_restarted(write_graph, tmp_path):
    graph = write_graph(graph_text(how="hang", more="health_timeout_s: 0.5"))
    out = tmp_path / "out.txt"
    with out.open("w") as stream:
        result = run_graph(load_graph(graph), out=stream)
    text = out.read_text()
    assert result.exit_code == 0, text
    assert "stuck: no progress" in text
    assert "node 'relay' (pid" in text and "was here:" in text
    assert result.stats["relay"].restarts == 1


def test_a_producer_that_ended_before_the_restart_is_taken_as_ended(write_graph, tmp_path):
    # the relay dies in flush(): the camera has sent everything and ended; the restarted
    # relay is told its input ended and the graph drains
    graph = write_graph(graph_text(frames=40, at=10_000, extra=", die_in_flush: true"))
    result = run_graph(load_graph(graph))
    assert result.exit_code == 0, result.error
    assert result.stats["relay"].restarts == 1
    assert result.stats["camera"].counters.get("lost_on_restart", 0) == 0
    assert seqs(tmp_path / "rec.jsonl") == list(range(40))
    assert (tmp_path / "rec.jsonl.closed").exists()


def test_a_node_sigkilled_from_outside_by_pipeline_run(write_graph, tmp_path):
    graph = write_graph(graph_text(how="hang", at=50))
    stats = tmp_path / "stats.json"
    command = [sys.executable, "-m", "pipeline.cli", "run", str(graph), "--no-live"]
    proc = subprocess.Popen(
        [*command, "--stats-json", str(stats)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        hang = tmp_path / "relay.hang"
        deadline = time.monotonic() + 30
        while not hang.exists():  # the relay is inside process() on seq 50
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the relay never reached seq 50"
            time.sleep(0.02)
        os.kill(int((tmp_path / "relay.pid").read_text()), signal.SIGKILL)
        out, _ = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "node 'relay' was killed by SIGKILL while running; restarting it" in out
    header = next(line for line in out.splitlines() if line.split()[:2] == ["node", "state"])
    assert header.split()[-1] == "restarts"  # the end table has the column
    nodes = json.loads(stats.read_text())["nodes"]
    assert nodes["relay"]["restarts"] == 1
    lost = nodes["camera"]["counters"]["lost_on_restart"]
    assert 1 <= lost <= 4
    assert len(seqs(tmp_path / "rec.jsonl")) == nodes["rec"]["inputs"]["frames"]["received"]
    assert nodes["rec"]["inputs"]["frames"]["received"] == 200 - lost
    # nothing of the run is left: segments (both lives' pools), sockets, the run folder
    assert list(SHM_DIR.glob(f"pipeline-{proc.pid}-*")) == []
    assert run_dirs(proc.pid) == []


def test_a_stop_while_a_restart_waits_restarts_it_at_once_and_drains(write_graph, tmp_path):
    graph = write_graph(
        graph_text(frames=0, fps=100).replace("initial: 0.05, max: 0.2", "initial: 30, max: 30")
    )
    stats = tmp_path / "stats.json"
    command = [sys.executable, "-m", "pipeline.cli", "run", str(graph), "--no-live"]
    proc = subprocess.Popen(
        [*command, "--stats-json", str(stats)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:  # until the relay died and waits 30 s for its restart
            seen.append(line)
            if "restarting it in 30 s" in line:
                break
        else:
            raise AssertionError("".join(seen))
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, "".join(seen) + out
    assert time.monotonic() - t0 < 20  # not the 30 s backoff
    nodes = json.loads(stats.read_text())["nodes"]
    assert nodes["relay"]["restarts"] == 1
    sent = nodes["camera"]["outputs"]["frames"]["sent"]
    lost = nodes["camera"]["counters"]["lost_on_restart"]
    assert len(seqs(tmp_path / "rec.jsonl")) == sent - lost
    assert list(SHM_DIR.glob(f"pipeline-{proc.pid}-*")) == []


def test_a_restarted_node_feeding_a_replicated_node(write_graph, tmp_path):
    graph = write_graph("""
        graph: restart_into_replicas
        nodes:
          - {id: camera, node: synthetic, params: {width: 64, height: 48, fps: 0, frames: 120}}
          - id: relay
            node: {T}:Crasher
            params: {marker: {tmp}/relay, at: 30, how: kill}
            inputs: {frames: {from: camera/frames, queue: 4}}
            restart: on-failure
            restart_backoff_s: {initial: 0.05, max: 0.2}
          - id: tag
            node: {T}:SlowTagger
            replicas: 2
            inputs: {frames: relay/out}
          - id: sink
            node: discard
            inputs: {messages: tag/detections}
    """)
    result = run_graph(load_graph(graph))
    assert result.exit_code == 0, result.error
    assert result.stats["relay"].restarts == 1
    lost = result.stats["camera"].counters["lost_on_restart"]
    assert 1 <= lost <= 4
    assert result.stats["sink"].received == 120 - lost

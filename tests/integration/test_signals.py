"""`pipeline run` as a user runs it: Ctrl-C, a killed node, leftovers of a dead run."""

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

from pipeline.runtime.runner import _sweep_run_dirs
from pipeline.transport.shm import SHM_DIR, sweep_stale

pytestmark = pytest.mark.integration

LIVE_GRAPH = """
    graph: live
    nodes:
      - {id: camera, node: synthetic, params: {width: 320, height: 240, fps: 100, frames: 0}}
      - id: relay
        node: {T}:Relay
        params: {marker: {tmp}/relay}
        inputs: {frames: {from: camera/frames, queue: 2, when_full: drop_oldest}}
      - id: rec
        node: {T}:Recorder
        params: {path: {tmp}/rec.jsonl}
        inputs: {frames: relay/out}
"""


def start(graph: Path, *extra: str, session: bool = False) -> subprocess.Popen[str]:
    """`pipeline run` in a subprocess; with ``session``, in a process group of its own (as a
    terminal's job or a service is), so a signal can go to every process of the run."""
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "run", str(graph), "--no-live", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=session,
    )


def wait_for(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text().strip():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def wait_for_lines(path: Path, n: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() or len(path.read_text().splitlines()) < n:
        assert time.monotonic() < deadline, f"{path} did not reach {n} lines"
        time.sleep(0.05)


def read_until(proc: subprocess.Popen[str], text: str) -> str:
    """The process's output up to and including the first line that contains ``text``."""
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if text in line:
            return "".join(seen)
    raise AssertionError(f"the run ended without printing {text!r}:\n{''.join(seen)}")


def run_segments(pid: int) -> list[str]:
    return sorted(p.name for p in SHM_DIR.glob(f"pipeline-{pid}-*"))


def test_sigint_stops_sources_and_drains_the_graph(write_graph, tmp_path):
    graph = write_graph(LIVE_GRAPH)
    proc = start(graph, "--stats-json", str(tmp_path / "stats.json"))
    wait_for_lines(tmp_path / "rec.jsonl", 20)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, out  # stopped by SIGINT, and drained: a clean stop
    assert "stopping" in out
    assert "graph 'live' stopped" in out
    rows = [json.loads(line) for line in (tmp_path / "rec.jsonl").read_text().splitlines()]
    stats = json.loads((tmp_path / "stats.json").read_text())["nodes"]
    # everything the camera sent reached the recorder or was counted as dropped: a clean drain
    sent = stats["camera"]["outputs"]["frames"]["sent"]
    relay_in = stats["relay"]["inputs"]["frames"]
    assert relay_in["received"] + relay_in["dropped"] == sent
    assert len(rows) == stats["rec"]["inputs"]["frames"]["received"] == relay_in["received"]
    assert {s["state"] for s in stats.values()} == {"closed"}
    assert (tmp_path / "rec.jsonl.closed").exists()
    assert run_segments(proc.pid) == []


def test_second_sigint_forces_a_stop(write_graph, tmp_path):
    graph = write_graph(
        LIVE_GRAPH.replace(
            "params: {marker: {tmp}/relay}", "params: {marker: {tmp}/relay, delay_ms: 400}"
        )
    )
    proc = start(graph, "--grace", "60")
    wait_for_lines(tmp_path / "rec.jsonl", 1)
    proc.send_signal(signal.SIGINT)
    before = read_until(proc, "stopping")  # the first Ctrl-C was taken: the graph drains
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=30)
    out = before + rest
    assert time.monotonic() - t0 < 10
    assert proc.returncode == 1, out
    assert "forcing stop" in out
    assert (tmp_path / "relay.closed").exists()  # SIGTERM still let close() run
    assert run_segments(proc.pid) == []


def test_sigkilled_node_is_reported_and_the_graph_stops(write_graph, tmp_path):
    graph = write_graph(LIVE_GRAPH)
    proc = start(graph)
    wait_for_lines(tmp_path / "rec.jsonl", 10)
    victim = int((tmp_path / "relay.pid").read_text())
    t0 = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1, out
    assert "error: node 'relay' was killed by SIGKILL while running" in out
    assert time.monotonic() - t0 < 8  # noticed within a poll, then the rest is stopped
    assert run_segments(proc.pid) == []


def test_segments_of_a_dead_run_are_swept_at_the_next_start(write_graph, tmp_path):
    # A run whose whole process group was SIGKILLed leaves its segments behind.
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(dead.stdout)
    leftover = SHM_DIR / f"pipeline-{dead_pid}-abcdef-0-0-0-1"
    leftover.write_bytes(b"\0" * 4096)
    graph = write_graph("""
        graph: tiny
        nodes:
          - {id: camera, node: synthetic, params: {width: 32, height: 32, fps: 0, frames: 3}}
          - {id: sink, node: discard, inputs: {messages: camera/frames}}
    """)
    proc = start(graph)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert not leftover.exists()


@pytest.mark.parametrize(
    ("sig", "code"),
    [
        (signal.SIGHUP, 129),  # the terminal closed, the ssh session dropped
        (signal.SIGTERM, 143),  # systemctl stop: SIGTERM to every process of the group
    ],
)
def test_a_signal_to_the_whole_process_group_drains_the_graph_cleanly(
    write_graph, tmp_path, sig, code
):
    graph = write_graph(LIVE_GRAPH)
    stats_json = tmp_path / "stats.json"
    proc = start(graph, "--stats-json", str(stats_json), session=True)
    try:
        wait_for_lines(tmp_path / "rec.jsonl", 20)
        os.killpg(proc.pid, sig)  # the supervisor and every node at once
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == code, out
    assert "stopping" in out
    assert "exited with code" not in out
    assert "error" not in out
    stats = json.loads(stats_json.read_text())["nodes"]
    assert {s["state"] for s in stats.values()} == {"closed"}
    # a drain, not a kill: every frame the camera sent reached the recorder or was counted
    sent = stats["camera"]["outputs"]["frames"]["sent"]
    relay_in = stats["relay"]["inputs"]["frames"]
    assert relay_in["received"] + relay_in["dropped"] == sent
    rows = (tmp_path / "rec.jsonl").read_text().splitlines()
    assert len(rows) == stats["rec"]["inputs"]["frames"]["received"] == relay_in["received"]
    assert (tmp_path / "rec.jsonl.closed").exists()
    assert (tmp_path / "relay.closed").exists()
    assert run_segments(proc.pid) == []


def test_a_node_that_does_not_drain_after_sigterm_is_unwound_at_the_grace(write_graph, tmp_path):
    # the relay takes 3 s a frame: after SIGTERM it cannot drain within a 1 s grace
    graph = write_graph(
        LIVE_GRAPH.replace(
            "params: {marker: {tmp}/relay}", "params: {marker: {tmp}/relay, delay_ms: 3000}"
        )
    )
    proc = start(graph, "--grace", "1", session=True)
    try:
        wait_for(tmp_path / "relay.busy")  # the relay is inside its slow process() now
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert time.monotonic() - t0 < 8
    assert proc.returncode == 1, out  # a forced stop: outputs may miss frames in flight
    # the forced stop names who it waited for, and where that node was
    assert "forcing stop: " in out
    assert "node 'relay' (in process() on seq" in out
    assert (tmp_path / "relay.closed").exists()  # unwound, and close() still ran
    assert run_segments(proc.pid) == []


HOLDER = """
import sys
from pathlib import Path

from pipeline.transport.shm import SHM_DIR, RunLock

prefix, run_dir = sys.argv[1], Path(sys.argv[2])
shm_lock = RunLock(SHM_DIR / (prefix + ".lock"))
run_dir.mkdir()
dir_lock = RunLock(run_dir / "lock")
(SHM_DIR / (prefix + "-0-0-1")).write_bytes(b"\\0" * 4096)  # a frame slot of the live run
print("ready", flush=True)
sys.stdin.read()  # alive until the test closes stdin
"""


def test_a_live_run_from_another_pid_namespace_is_not_swept(write_graph, tmp_path):
    # A run in another PID namespace (a container sharing /dev/shm and /tmp) is named after
    # a pid that means nothing here: one that is not alive in ours stands for it.
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    prefix = f"pipeline-{int(dead.stdout)}-c0ffee"
    run_dir = Path(tempfile.gettempdir()) / prefix
    segment = SHM_DIR / (prefix + "-0-0-1")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, prefix, str(run_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    tiny = write_graph("""
        graph: tiny
        nodes:
          - {id: camera, node: synthetic, params: {width: 32, height: 32, fps: 0, frames: 3}}
          - {id: sink, node: discard, inputs: {messages: camera/frames}}
    """)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        # What every start sweeps, called here at once: other checkouts on a shared machine
        # may run an older sweep (by pid) that would take the run for dead meanwhile.
        swept = sweep_stale()
        _sweep_run_dirs()
        # the live run keeps its segment and its folder: its lock is held
        assert not [name for name in swept if name.startswith(prefix)]
        assert segment.exists()
        assert (run_dir / "lock").exists()
    finally:
        holder.communicate(timeout=30)  # closes stdin: the holder ends, its locks go
    # now it is dead: the next start sweeps what it left
    proc = start(tiny)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert not segment.exists()
    assert not (SHM_DIR / (prefix + ".lock")).exists()
    assert not run_dir.exists()

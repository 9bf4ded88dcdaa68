"""The uploader sink against a real cloud server: every record arrives exactly once, through a
killed node, a server stopped for 10 s, and a full spool (counted on the server)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from pipeline import Detections
from pipeline.testing import make_frame, run_node
from pipeline_cloud.db import BinaryItem, BoundingBox
from pipeline_nodes.sinks.uploader import UploaderSink
from tests.pipeline_cloud.conftest import CloudServer

pytestmark = pytest.mark.integration


def wait_for(condition: Callable[[], bool], timeout_s: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or condition}")


def server_keys(server: CloudServer, org_id: str) -> list[str]:
    """The idempotency keys of every item the server holds for ``org_id`` (one per copy)."""
    store = server.store()
    try:
        with store.sessions() as s:
            return list(
                s.scalars(select(BinaryItem.idempotency_key).where(BinaryItem.org_id == org_id))
            )
    finally:
        store.sessions.kw["bind"].dispose()


def spool_ids(folder: Path) -> set[str]:
    return {p.name.split("-", 1)[1][: -len(".rec")] for p in folder.glob("*.rec")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _params(server: CloudServer, key_id: str, key: str, spool: Path, **extra) -> dict:
    return {"spool": str(spool), "address": server.address, "key_id": key_id, "key": key,
            "max_backoff_s": 0.5, **extra}  # fmt: skip


def _faces(seq: int, confidence: float) -> Detections:
    return Detections(
        seq=seq,
        xyxy=np.array([[0.1, 0.2, 0.3, 0.4]], np.float32),
        confidence=np.array([confidence], np.float32),
        class_id=np.zeros(1, np.int32),
        class_names=["face"],
    )


def test_uploader_sends_taken_frames_with_their_detections(sqlite_cloud, tmp_path):
    org_id, _, key_id, key = sqlite_cloud.org_with_key()
    frames = [make_frame(seq=i, width=64, height=48) for i in range(6)]
    detections = [_faces(i, 0.9 if i % 2 else 0.2) for i in range(6)]
    run = run_node(
        UploaderSink,
        params=_params(
            sqlite_cloud, key_id, key, tmp_path / "spool", min_confidence=0.5, tags=["edge"]
        ),
        inputs={"frames": frames, "detections": detections},
    )
    counters = run.stats.counters
    assert counters["spooled"] == 3
    assert counters["skipped"] == 3
    assert counters["uploaded"] == 3
    assert counters["backlog"] == 0
    assert spool_ids(tmp_path / "spool") == set()
    keys = server_keys(sqlite_cloud, org_id)
    assert len(keys) == len(set(keys)) == 3
    store = sqlite_cloud.store()
    with store.sessions() as s:
        items = list(s.scalars(select(BinaryItem).where(BinaryItem.org_id == org_id)))
        boxes = list(s.scalars(select(BoundingBox).where(
            BoundingBox.binary_seq.in_([i.seq for i in items]))))  # fmt: skip
    store.sessions.kw["bind"].dispose()
    assert {i.mime_type for i in items} == {"image/jpeg"}
    assert {i.component_type for i in items} == {"camera"}
    assert len(boxes) == 3
    assert {(b.label, round(b.x_min, 3), round(b.y_max, 3)) for b in boxes} == {("face", 0.1, 0.4)}
    (record,) = store.by_ids(org_id, [items[0].id])
    assert record.meta.tags == ("edge",)
    assert record.blob_path.read_bytes()[:2] == b"\xff\xd8"  # a JPEG


def test_full_spool_drops_the_oldest_and_delivers_the_rest_exactly_once(tmp_path):
    port = _free_port()
    server = CloudServer(Path(tempfile.mkdtemp(prefix="pipeline-cloud-")), None)
    server.port = port  # nothing listens there yet: the cloud is down
    spool = tmp_path / "spool"
    store = server.store()
    org = store.create_org("edge")
    key_id, key = store.create_key(org.id)
    store.sessions.kw["bind"].dispose()
    frames = [make_frame(seq=i, width=320, height=240) for i in range(30)]
    params = _params(server, key_id, key, spool, max_spool_mb=0.05, drain_timeout_s=0.5)
    first = run_node(UploaderSink, params=params, inputs={"frames": frames})
    c = first.stats.counters
    assert c["spooled"] == 30
    assert c["dropped"] > 0
    assert c["backlog"] == 30 - c["dropped"] == len(spool_ids(spool))
    assert c.get("uploaded", 0) == 0
    assert c["retried"] > 0
    kept = spool_ids(spool)
    assert sum(p.stat().st_size for p in spool.glob("*.rec")) <= 0.05 * 1024 * 1024
    server.start()
    try:
        second = run_node(UploaderSink, params={**params, "drain_timeout_s": 30.0},
                          inputs={"frames": []})  # fmt: skip
        assert second.stats.counters["uploaded"] == len(kept)
        keys = server_keys(server, org.id)
        assert sorted(keys) == sorted(kept)  # every kept record, once
        assert spool_ids(spool) == set()
    finally:
        server.stop()


def _graph(tmp_path: Path, server: CloudServer, key_id: str, key: str, frames: int, fps: float,
           drain_s: float) -> Path:  # fmt: skip
    spool = tmp_path / "spool"
    path = tmp_path / "upload.yaml"
    path.write_text(
        f"""graph: upload
nodes:
  - id: camera
    node: synthetic
    params: {{width: 320, height: 240, fps: {fps}, frames: {frames}}}
  - id: upload
    node: uploader
    params:
      spool: {spool}
      address: "{server.address}"
      key_id: "{key_id}"
      key: "{key}"
      max_backoff_s: 0.5
      drain_timeout_s: {drain_s}
    inputs:
      frames: {{from: camera/frames, queue: 4, when_full: block}}
"""
    )
    return path


def _run_graph(graph: Path, stats: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "run", str(graph), "--no-live", "-q",
         "--stats-json", str(stats)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(150)  # a 10 s outage on purpose, then the backlog drains
def test_server_stopped_for_10_seconds_loses_and_doubles_nothing(tmp_path):
    import json

    server = CloudServer(Path(tempfile.mkdtemp(prefix="pipeline-cloud-")), None)
    server.start()
    org_id, _, key_id, key = server.org_with_key()
    graph = _graph(tmp_path, server, key_id, key, frames=120, fps=10, drain_s=30)
    run = _run_graph(graph, tmp_path / "stats.json")
    try:
        wait_for(lambda: len(server_keys(server, org_id)) >= 5, what="first uploads")
        server.stop()
        stopped_at = time.monotonic()
        time.sleep(10)  # the scenario itself: the cloud is away for 10 s
        server.start()
        assert time.monotonic() - stopped_at >= 10
        output, _ = run.communicate(timeout=45)
        assert run.returncode == 0, output
        keys = server_keys(server, org_id)
        assert len(keys) == len(set(keys)) == 120
        stats = json.loads((tmp_path / "stats.json").read_text())
        counters = stats["nodes"]["upload"]["counters"]
        assert counters["uploaded"] == counters["spooled"] == 120
        assert counters["retried"] > 0
        assert counters["backlog"] == 0
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
        server.stop()


def _dead(pid: int) -> bool:
    """The process is gone or a zombie (its parent may reap it while we look: the status
    file is then missing, or goes away between its open and its read, ESRCH)."""
    try:
        return "zombie" in Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True


@pytest.mark.slow
@pytest.mark.timeout(150)  # two graph runs and a stopped server on purpose
def test_kill_9_of_the_uploader_mid_upload_loses_and_doubles_nothing(tmp_path):
    server = CloudServer(Path(tempfile.mkdtemp(prefix="pipeline-cloud-")), None)
    server.start()
    org_id, _, key_id, key = server.org_with_key()
    spool = tmp_path / "spool"
    graph = _graph(tmp_path, server, key_id, key, frames=0, fps=20, drain_s=0)
    run = _run_graph(graph, tmp_path / "stats.json")
    try:
        wait_for(lambda: len(server_keys(server, org_id)) >= 3, what="first uploads")
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGSTOP)  # the next upload hangs mid-request
        try:
            wait_for(lambda: len(spool_ids(spool)) >= 5, what="a backlog")
            pid = int((spool / ".lock").read_text())
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: _dead(pid), what="the kill")
            left = spool_ids(spool)
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        run.communicate(timeout=30)
        assert run.returncode != 0  # the graph saw its node die
        before = server_keys(server, org_id)
        assert left
        # The next run on the same spool sends what was left, with the same keys.
        resumed = run_node(
            UploaderSink,
            params=_params(server, key_id, key, spool, drain_timeout_s=30.0),
            inputs={"frames": []},
        )
        assert spool_ids(spool) == set()
        keys = server_keys(server, org_id)
        assert len(keys) == len(set(keys))  # never twice
        assert left <= set(keys)  # everything taken arrived
        assert set(keys) == set(before) | left
        assert resumed.stats.counters["uploaded"] == len(left)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
        server.stop()

"""The camera source against a real RTSP server (GStreamer's, H.264 over RTP) on 127.0.0.1.

The server is a separate process (``rtsp_server.py``, under Debian's Python with the
GStreamer bindings); stopping it is a real camera outage. Covered: frames with capture times
over TCP and over UDP transport, a 5 s outage in a running graph (reconnect with backoff,
counted, the graph goes on), a URL that never answers, wrong credentials, and the
newest-frame policy under a slow consumer.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mjpeg_server import wait_until
from rtsp_server import RtspServer, free_port, rtsp_available
from source_harness import LiveSource, sent_frames

from pipeline.testing import run_node
from pipeline_nodes.sources.camera import CameraSource

ROOT = Path(__file__).resolve().parents[4]
LOG = "tests.pipeline_nodes.sources.source_graph_nodes:FrameLog"

_missing = rtsp_available()
if _missing:  # pragma: no cover - the packages are installed by .ci/run
    pytest.fail(_missing, pytrace=False)


@pytest.fixture(scope="module")
def server() -> Iterator[RtspServer]:
    srv = RtspServer(fps=15).start()
    yield srv
    srv.stop()


def udp_sockets_of_this_process() -> int:
    """How many UDP sockets this process holds (from /proc: the RTP receivers)."""
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/self/net/udp", "/proc/self/net/udp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            if line.split()[9] in inodes:
                count += 1
    return count


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_rtsp_frames_arrive_in_order_with_capture_times(server: RtspServer, transport: str) -> None:
    params = {"device": server.url, "rtsp_transport": transport, "open_timeout_s": 10}
    before = udp_sockets_of_this_process()
    with LiveSource(CameraSource, params) as live:
        # RTP over UDP needs receiving sockets of its own; over TCP it travels in the
        # RTSP connection
        udp = udp_sockets_of_this_process() - before
        assert (udp >= 2) if transport == "udp" else (udp == 0)
        t0 = time.monotonic_ns()
        while len(live.frames) < 12:
            live.call()
        frames = live.frames
    assert [f.seq for f in frames] == list(range(len(frames)))
    stamps = [f.t_capture_ns for f in frames]
    assert stamps == sorted(stamps) and stamps[-1] > t0
    assert all(f.image.shape == (240, 320, 3) for f in frames)
    assert all(f.source == "cam" for f in frames)
    assert {f.meta["connection"] for f in frames} == {1}
    assert frames[0].meta["device"] == server.url


def test_rtsp_url_that_never_answers_fails_open_within_the_timeout_naming_host_and_port() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)  # accepts connections (the kernel does), never says a word
    port = silent.getsockname()[1]
    try:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError) as err:
            run_node(
                CameraSource, {"device": f"rtsp://127.0.0.1:{port}/cam", "open_timeout_s": 1.5}
            )
        waited = time.monotonic() - t0
    finally:
        silent.close()
    assert f"127.0.0.1:{port}" in str(err.value)
    assert "open_timeout_s" in str(err.value)
    assert waited < 1.5 + 3.0  # the timeout, the DESCRIBE probe, and a margin for a busy machine

    refused = free_port()
    with pytest.raises(ConnectionError, match=f"nothing listens on 127.0.0.1:{refused}"):
        run_node(CameraSource, {"device": f"rtsp://127.0.0.1:{refused}/cam", "open_timeout_s": 2})


def test_rtsp_wrong_credentials_give_a_clear_error_without_the_password() -> None:
    srv = RtspServer(user="admin", password="s3cret").start()
    try:
        with pytest.raises(ConnectionError) as wrong:
            run_node(CameraSource, {"device": srv.url_with("admin", "guess"), "open_timeout_s": 5})
        with pytest.raises(ConnectionError) as none:
            run_node(CameraSource, {"device": srv.url, "open_timeout_s": 5})
        good = run_node(
            CameraSource,
            {"device": srv.url_with("admin", "s3cret"), "open_timeout_s": 10},
            max_calls=30,
        )
    finally:
        srv.stop()
    message = str(wrong.value)
    assert f"127.0.0.1:{srv.port} refused the credentials of user 'admin'" in message
    assert "401" in message and "guess" not in message
    assert "asks for credentials" in str(none.value)
    assert sent_frames(good)  # the right ones stream


def test_rtsp_slow_consumer_gets_the_newest_frame_and_the_skips_are_counted(
    server: RtspServer,
) -> None:
    with LiveSource(CameraSource, {"device": server.url}) as live:
        first = None
        while first is None:
            first = live.call()
        time.sleep(0.8)  # a slow consumer: about 12 frames arrive meanwhile
        frame = None
        while frame is None:
            frame = live.call()
        age_s = (time.monotonic_ns() - frame.t_capture_ns) / 1e9
        assert age_s < 0.3  # the newest frame, not the backlog of 0.8 s
        assert frame.seq == first.seq + 1
        assert frame.meta["skipped"] >= 6
        live.close()
        assert live.counters.counts["skipped_frames"] >= 6


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


@pytest.mark.integration
def test_rtsp_server_down_for_5_s_is_a_counted_reconnect_and_the_graph_goes_on(
    tmp_path: Path,
) -> None:
    srv = RtspServer(fps=15).start()
    log = tmp_path / "camera.jsonl"
    graph = tmp_path / "camera.yaml"
    graph.write_text(
        textwrap.dedent(f"""
        graph: rtsp_reconnect
        nodes:
          - id: camera
            node: camera
            params:
              device: {srv.url}
              rtsp_transport: tcp
              open_timeout_s: 5
              stall_timeout_s: 2
              reconnect_backoff_s: 0.2
              reconnect_backoff_max_s: 1
          - id: log
            node: {LOG}
            params: {{path: {log}}}
            inputs: {{frames: {{from: camera/frames, queue: 1, when_full: drop_oldest}}}}
        """)
    )
    stats_json = tmp_path / "stats.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "pipeline.cli", "run", str(graph), "--no-live"]
    proc = subprocess.Popen(
        [*command, "--stats-json", str(stats_json)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: len(read_jsonl(log)) >= 10, 30, "frames from the camera")
        srv.stop()  # the camera goes away ...
        down = time.monotonic()
        wait_until(lambda: time.monotonic() - down >= 5.0, 10, "5 s of outage")
        assert proc.poll() is None, "the graph ended when the camera went away"
        srv.start()  # ... and comes back on the same port
        wait_until(
            lambda: sum(r["meta"]["connection"] >= 2 for r in read_jsonl(log)) >= 5,
            30,
            "frames after the reconnect",
        )
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        srv.stop()
    assert proc.returncode == 130, out  # stopped by Ctrl-C, drained
    rows = read_jsonl(log)
    assert [r["seq"] for r in rows] == sorted(r["seq"] for r in rows)
    stats = json.loads(stats_json.read_text())
    camera = stats["nodes"]["camera"]
    counters = camera["counters"]
    assert counters["reconnects"] >= 1
    assert counters["reconnect_failures"] >= 1  # it tried during the outage, backing off
    assert counters.get("disconnects", 0) + counters.get("stalls", 0) >= 1

"""The camera source against a real MJPEG-over-HTTP server on 127.0.0.1 (no camera needed).

The server draws each frame's number into it, so the tests see which frames the node served:
in order, fresh after a slow consumer, and from a new connection after the server restarted.
Reconnects in a real graph (separate processes) are in ``test_sources_in_graphs.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from mjpeg_server import MjpegServer, free_port, wait_until
from pydantic import ValidationError
from source_graph_nodes import read_number
from source_harness import LiveSource, sent_frames

from pipeline.testing import run_node
from pipeline_nodes.sources.camera import CameraSource


def camera_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("camera-")]


@pytest.fixture
def server() -> Iterator[MjpegServer]:
    srv = MjpegServer(fps=30).start()
    yield srv
    srv.stop()


def test_camera_sends_the_streams_frames_in_order_with_seq_and_capture_times(
    server: MjpegServer,
) -> None:
    run = run_node(CameraSource, {"device": server.url}, max_calls=15, node_id="cam")
    frames = sent_frames(run)
    assert len(frames) >= 10  # a call without a new frame within 0.1 s sends nothing
    assert [f.seq for f in frames] == list(range(len(frames)))
    numbers = [read_number(f.image) for f in frames]
    assert numbers == sorted(set(numbers))  # strictly increasing: no frame served twice
    stamps = [f.t_capture_ns for f in frames]
    assert stamps == sorted(stamps)
    assert all(f.image.shape == (120, 160, 3) for f in frames)
    assert all(f.source == "cam" for f in frames)
    assert frames[0].meta["device"] == server.url
    assert {f.meta["connection"] for f in frames} == {1}
    assert run.calls[0] == "open"
    assert run.calls[-2:] == ["flush", "close"]
    assert camera_threads() == []  # close() stopped the grabber


def test_camera_serves_the_newest_frame_to_a_slow_consumer_not_a_backlog(
    server: MjpegServer,
) -> None:
    with LiveSource(CameraSource, {"device": server.url}) as live:
        first = live.call()
        assert first is not None
        time.sleep(0.6)  # a slow consumer: about 18 frames arrive meanwhile
        frame = live.call()
        assert frame is not None
        number = read_number(frame.image)
        # the newest frame at the time of the call (give or take one in flight), not the
        # one after the previous frame that a driver or socket buffer would hold
        assert number >= server.latest - 2
        assert number - read_number(first.image) >= 10
        assert frame.meta["skipped"] >= 9
        assert frame.seq == first.seq + 1
        live.close()
        assert live.counters.counts["skipped_frames"] >= 9


def test_camera_reconnects_after_the_server_restarts_and_seq_keeps_increasing(
    server: MjpegServer,
) -> None:
    params = {"device": server.url, "reconnect_backoff_s": 0.1, "reconnect_backoff_max_s": 0.4}
    with LiveSource(CameraSource, params) as live:
        while len(live.frames) < 5:
            live.call()
        before = len(live.frames)
        server.stop()
        # the first call may still serve the last frame read before the stop; then the node
        # keeps returning without a frame (so a stop of the graph is seen) while it is down
        calls = [live.call() for _ in range(6)]
        assert calls[1:] == [None] * 5
        restarted = MjpegServer(server.port, first_number=10_000).start()
        try:
            deadline = time.monotonic() + 10
            while not any(f.meta["connection"] == 2 for f in live.frames):
                assert time.monotonic() < deadline, "no frame after the server restarted"
                live.call()
            for _ in range(3):
                live.call()
        finally:
            live.close()
            restarted.stop()
    frames = live.frames
    assert [f.seq for f in frames] == list(range(len(frames)))
    after = [f for f in frames[before:] if f.meta["connection"] == 2]
    assert len(after) >= 2
    assert all(read_number(f.image) >= 10_000 for f in after)  # fresh frames from the new server
    counts = live.counters.counts
    assert counts["disconnects"] >= 1
    assert counts["reconnects"] >= 1
    assert camera_threads() == []


def test_camera_reconnects_when_the_stream_stalls() -> None:
    with MjpegServer(stall_after=8) as stalling:
        params = {"device": stalling.url, "stall_timeout_s": 0.5, "reconnect_backoff_s": 0.05}
        with LiveSource(CameraSource, params) as live:
            deadline = time.monotonic() + 10
            while not any(f.meta["connection"] >= 2 for f in live.frames):
                assert time.monotonic() < deadline, "the stalled stream was not reopened"
                live.call()
            live.close()
    counts = live.counters.counts
    assert counts["stalls"] >= 1
    assert counts["reconnects"] >= 1
    numbers = [read_number(f.image) for f in live.frames]
    assert numbers == sorted(set(numbers))


def test_camera_open_fails_fast_when_nothing_listens_and_names_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}/stream.mjpg"
    t0 = time.monotonic()
    run = run_node(CameraSource, {"device": url, "open_timeout_s": 5}, raise_errors=False)
    assert time.monotonic() - t0 < 3  # refused at once, not after the timeout
    assert isinstance(run.error, ConnectionError)
    message = str(run.error)
    assert url in message
    assert "'node'" in message  # the node id
    assert "connection refused" in message
    assert run.calls == ["open"]  # a failed open: nothing else is called
    assert camera_threads() == []


def test_camera_open_times_out_on_a_server_that_never_sends() -> None:
    with MjpegServer(mode="silent") as silent:
        t0 = time.monotonic()
        run = run_node(
            CameraSource, {"device": silent.url, "open_timeout_s": 1.0}, raise_errors=False
        )
        elapsed = time.monotonic() - t0
    assert 0.9 <= elapsed < 4
    assert isinstance(run.error, TimeoutError)
    message = str(run.error)
    assert silent.url in message
    assert "accepts connections but sent no video within 1 s" in message
    assert run.calls == ["open"]
    wait_until(lambda: camera_threads() == [], 3, "the abandoned open attempt to end")


def test_camera_open_fails_with_the_device_named_when_the_camera_is_absent() -> None:
    run = run_node(
        CameraSource, {"device": "/dev/video63", "open_timeout_s": 5}, raise_errors=False
    )
    assert isinstance(run.error, ConnectionError)
    assert "/dev/video63 does not exist" in str(run.error)
    assert "camera 'node'" in str(run.error)
    run = run_node(CameraSource, {"device": 63, "open_timeout_s": 5}, raise_errors=False)
    assert isinstance(run.error, ConnectionError)
    assert "camera device 63" in str(run.error)
    assert run.calls == ["open"]


def test_camera_params_accept_an_index_string_and_check_the_backoff_range() -> None:
    params = CameraSource.Params.model_validate
    assert params({"device": " 2 "}).device == 2
    assert params({"device": "/dev/video0"}).device == "/dev/video0"
    with pytest.raises(ValidationError, match="reconnect_backoff_max_s"):
        params({"reconnect_backoff_s": 5, "reconnect_backoff_max_s": 1})
    with pytest.raises(ValidationError, match="device"):
        params({"device": " "})
    with pytest.raises(ValidationError):
        params({"device": -1})

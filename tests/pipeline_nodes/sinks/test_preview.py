"""Tests of the preview sink: the frame hand-over, the HTTP endpoints, viewers fast, slow and
stalled, and the page in headless Chromium on a real graph."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from pipeline import Frame
from pipeline.testing import make_frame, run_node
from pipeline_nodes.sinks.preview import LatestFrame, Preview, part_header


def get(url: str, timeout: float = 5.0) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def wait_until(condition, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@contextlib.contextmanager
def opened(**params):
    """A Preview node opened outside a graph (port 0: a free one), closed at the end."""
    node = Preview(Preview.Params(**{"port": 0, **params}), node_id="preview")
    node.open()
    try:
        yield node
    finally:
        node.close()


# the frame hand-over ------------------------------------------------------------------------


def test_latest_frame_is_empty_until_the_first_publish():
    latest = LatestFrame()
    assert latest.latest() is None
    assert latest.wait_newer(0, timeout=0.01) is None
    latest.publish(b"a", seq=7)
    assert latest.latest() == (1, 7, b"a")
    assert latest.wait_newer(0, timeout=0.01) == (1, 7, b"a")
    assert latest.wait_newer(1, timeout=0.01) is None  # nothing newer than version 1


def test_latest_frame_wakes_a_waiting_viewer_with_the_newest_only():
    latest = LatestFrame()
    got = []
    waiter = threading.Thread(target=lambda: got.append(latest.wait_newer(0, timeout=5)))
    waiter.start()
    wait_until(lambda: latest.viewers_waiting == 1, what="the viewer to wait")
    latest.publish(b"x", seq=1)
    waiter.join(5)
    assert got == [(1, 1, b"x")]
    assert latest.viewers_waiting == 0
    latest.publish(b"y", seq=2)
    latest.publish(b"z", seq=3)
    assert latest.wait_newer(1, timeout=0.01) == (3, 3, b"z")  # skips straight to the newest


def test_latest_frame_close_releases_waiters_at_once():
    latest = LatestFrame()
    got = []
    waiter = threading.Thread(target=lambda: got.append(latest.wait_newer(0, timeout=30)))
    waiter.start()
    wait_until(lambda: latest.viewers_waiting == 1, what="the viewer to wait")
    t0 = time.monotonic()
    latest.close()
    waiter.join(5)
    assert got == [None]
    assert time.monotonic() - t0 < 2
    assert latest.closed


def test_part_header_names_the_boundary_length_and_seq():
    assert part_header(1234, 56) == (
        b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: 1234\r\nX-Seq: 56\r\n\r\n"
    )


# the endpoints -----------------------------------------------------------------------------


def test_page_snapshot_stats_and_not_found():
    with opened(max_fps=0) as node:
        status, kind, body = get(node.url)
        assert status == 200
        assert kind.startswith("text/html")
        assert b'<img id="stream" src="/stream.mjpg"' in body
        assert b"/stats.json" in body

        status, _, _ = get(node.url + "snapshot.jpg")
        assert status == 503  # no frame yet

        node.process(frames=make_frame(64, 48, seq=3))
        status, kind, body = get(node.url + "snapshot.jpg")
        assert (status, kind) == (200, "image/jpeg")
        image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (48, 64, 3)

        status, kind, body = get(node.url + "stats.json")
        assert (status, kind) == (200, "application/json")
        stats = json.loads(body)
        assert stats["node"] == "preview"
        assert stats["frames_encoded"] == 1
        assert stats["viewers"] == 0
        assert stats["nodes"] == {}  # outside a graph and without a runtime: no statistics

        assert get(node.url + "nope")[0] == 404


def test_snapshot_is_the_newest_frame_in_bgr():
    red_rgb = Frame(image=np.full((8, 8, 3), (255, 0, 0), np.uint8), seq=1, meta={"color": "rgb"})
    with opened(max_fps=0, jpeg_quality=100) as node:
        node.process(frames=make_frame(8, 8, value=0))
        node.process(frames=red_rgb)  # no viewer, but max_fps 0 ...
        body = get(node.url + "snapshot.jpg")[2]
    image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    # ... and no viewer means about one encoding a second: the first frame is the snapshot
    assert image.max() < 10


def test_without_viewers_the_node_encodes_about_once_a_second():
    frames = [make_frame(32, 24, seq=i) for i in range(40)]
    run = run_node(Preview, {"port": 0, "max_fps": 0}, inputs={"frames": frames})
    assert run.calls[0] == "open"
    assert run.calls[-1] == "close"
    assert run.stats.counters["not_encoded"] == 39  # 40 frames in far less than a second


def test_stats_json_lists_the_node_itself_under_run_node(monkeypatch):
    seen = {}
    original = Preview.process

    def process(self, frames):
        original(self, frames)
        seen.update(json.loads(get(self.url + "stats.json")[2]))

    monkeypatch.setattr(Preview, "process", process)
    run_node(Preview, {"port": 0}, inputs={"frames": [make_frame()]}, node_id="pv")
    assert list(seen["nodes"]) == ["pv"]
    # run_node moves through the same states as a worker: process() runs while "running"
    assert seen["nodes"]["pv"]["state"] == "running"


def test_port_in_use_fails_open_naming_node_and_port():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = run_node(
            Preview, {"port": port}, inputs={"frames": []}, node_id="live", raise_errors=False
        )
    assert run.failed_in == "open"
    assert run.calls == ["open"]  # nothing else is called after a failed open
    message = str(run.error)
    assert "'live'" in message
    assert f"port {port}" in message
    assert "already in use" in message
    assert "'port'" in message


def test_unknown_host_fails_open_with_a_hint():
    run = run_node(
        Preview, {"host": "192.0.2.1", "port": 0}, inputs={"frames": []}, raise_errors=False
    )
    assert run.failed_in == "open"
    assert "cannot listen on 192.0.2.1:0" in str(run.error)
    assert "'host'" in str(run.error)


# several viewers ---------------------------------------------------------------------------


class Viewer(threading.Thread):
    """A plain-socket MJPEG viewer that records the seq of every frame it receives.

    ``chunk``/``pause_s`` make it slow; ``stalled`` reads nothing until ``release`` is set,
    then reads what the server had sent until the connection ends.
    """

    def __init__(self, port: int, chunk: int = 65536, pause_s: float = 0.0, stalled=False):
        super().__init__(daemon=True)
        self.port, self.chunk, self.pause_s, self.stalled = port, chunk, pause_s, stalled
        self.seqs: list[int] = []
        self.bad_jpegs = 0
        self.release = threading.Event()
        self.done = threading.Event()

    def run(self) -> None:
        sock = socket.socket()
        if self.chunk < 65536 or self.stalled:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(30)
        try:
            sock.connect(("127.0.0.1", self.port))
            sock.sendall(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")
            if self.stalled:
                self.release.wait(30)  # read nothing until the test says so
            self._read(sock)
        except OSError:
            pass
        finally:
            sock.close()
            self.done.set()

    def _read(self, sock: socket.socket) -> None:
        buffer = b""
        header_done = False
        while True:
            data = sock.recv(self.chunk)
            if not data:
                return
            buffer += data
            if not header_done:
                if b"\r\n\r\n" not in buffer:
                    continue
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                assert b"multipart/x-mixed-replace; boundary=frame" in head
                header_done = True
            while b"\r\n\r\n" in buffer:
                head, rest = buffer.split(b"\r\n\r\n", 1)
                fields = dict(
                    line.split(b": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line
                )
                length = int(fields[b"Content-Length"])
                if len(rest) < length + 2:
                    break
                jpeg, buffer = rest[:length], rest[length + 2 :]
                if not (jpeg.startswith(b"\xff\xd8") and jpeg.endswith(b"\xff\xd9")):
                    self.bad_jpegs += 1
                self.seqs.append(int(fields[b"X-Seq"]))
            if self.pause_s:
                time.sleep(self.pause_s)


def noise_frames(n: int, width: int = 320, height: int = 240) -> list[Frame]:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (height, width, 3), np.uint8) for _ in range(4)]
    return [Frame(image=images[i % 4], seq=i) for i in range(n)]


def test_fast_slow_and_stalled_viewers_at_once_never_slow_the_node():
    n = 150
    frames = noise_frames(n)  # noise: big JPEGs (~150 KB), so the slow viewer really lags
    durations = []
    with opened(max_fps=0, jpeg_quality=95) as node:
        port = int(node.url.rsplit(":", 1)[1].strip("/"))
        fast = [Viewer(port) for _ in range(3)]
        slow = Viewer(port, chunk=8192, pause_s=0.02)  # about 400 KB/s
        stalled = Viewer(port, stalled=True)
        viewers = [*fast, slow, stalled]
        for v in viewers:
            v.start()
        wait_until(lambda: node.page_statistics()["viewers"] == 5, what="five viewers")
        for frame in frames:
            t0 = time.perf_counter()
            node.process(frames=frame)
            durations.append(time.perf_counter() - t0)
            time.sleep(0.005)
        # once the stream stops, even the slow viewer catches up with the newest frame
        wait_until(
            lambda: all(v.seqs and v.seqs[-1] == n - 1 for v in (*fast, slow)),
            timeout=15,
            what="every reading viewer to get the last frame",
        )
        t_close = time.monotonic()
    close_s = time.monotonic() - t_close
    stalled.release.set()
    for v in viewers:
        v.done.wait(5)

    assert node.frames_encoded == n  # every frame was encoded: no viewer held the node up
    assert max(durations) < 0.5  # a write blocked on a viewer would take seconds
    for v in fast:
        assert v.seqs == sorted(set(v.seqs))
        assert len(v.seqs) >= n // 4
        assert v.bad_jpegs == 0
    assert slow.seqs == sorted(set(slow.seqs))
    assert 2 <= len(slow.seqs) < min(len(v.seqs) for v in fast)
    assert max(np.diff(slow.seqs)) > 1  # it skipped to newer frames instead of queueing
    assert slow.bad_jpegs == 0
    assert close_s < 3  # the stalled viewer's blocked write did not hold up close()
    assert all(v.done.is_set() for v in viewers)  # the server ended every connection
    assert len(stalled.seqs) <= 3  # it got what the socket buffers held, nothing more


# the page in a browser, on a real graph -----------------------------------------------------

GRAPH = """
    graph: preview_page
    nodes:
      - {id: camera, node: synthetic, params: {width: 320, height: 240, fps: 30, frames: 0}}
      - id: overlay
        node: pipeline_nodes.sinks.overlay:Overlay
        inputs: {frames: camera/frames}
      - id: preview
        node: pipeline_nodes.sinks.preview:Preview
        params: {port: PORT, max_fps: 30}
        inputs: {frames: {from: overlay/annotated, queue: 2, when_full: drop_oldest}}
"""


@pytest.mark.integration
def test_page_in_chromium_shows_a_moving_stream_and_the_graph_statistics(
    write_graph, chromium, screenshot, free_port, shm_segments
):
    port = free_port
    graph = write_graph(GRAPH.replace("PORT", str(port)))
    url = f"http://127.0.0.1:{port}/"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "run", str(graph), "--no-live"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def statistics_ready() -> bool:
            try:
                return len(json.loads(get(url + "stats.json", 1)[2])["nodes"]) == 3
            except (OSError, ValueError):
                return False

        wait_until(statistics_ready, timeout=30, what="the preview page with statistics")
        first = screenshot(url, "first.png")
        second = screenshot(url, "second.png")
        dom = chromium(url, "--virtual-time-budget=2500", "--dump-dom").stdout
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, out  # stopped by Ctrl-C, drained
    assert shm_segments(proc.pid) == []

    # the stream sits at the top-left of the page, 320x240 at (16, 16)
    stream = (slice(16, 256), slice(16, 336))
    page_background = np.array([17, 17, 17])
    for shot in (first, second):
        region = shot[stream].astype(int)
        assert region.std() > 20  # a picture, not a blank
        assert np.abs(region.mean(axis=(0, 1)) - page_background).max() > 30
        assert (region > 240).all(axis=2).sum() > 100  # the synthetic pattern's white square
    assert np.abs(first[stream].astype(int) - second[stream].astype(int)).mean() > 0.5

    # the statistics table was filled from /stats.json, by the page's script
    for node_id in ("camera", "overlay", "preview"):
        assert f'<tr data-node="{node_id}"><td>{node_id}</td><td>running</td>' in dom
    assert 'data-refreshes="0"' not in dom


# strangers: DNS rebinding and the token ------------------------------------------------------


TOKEN = "s3cret-token-0123456789"


def raw_get(port: int, path: str, headers: dict[str, str], host: str = "127.0.0.1"):
    """A GET with exactly these headers (no Host unless given), as a browser or attacker would."""
    import http.client

    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        for key, value in headers.items():
            conn.putheader(key, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("127.0.0.1:{port}", 200),  # the bound address
        ("localhost:{port}", 200),  # a loopback name
        ("LOCALHOST", 200),  # names are case-insensitive, the port may be absent
        ("[::1]:{port}", 200),  # an address literal cannot be rebound
        ("10.1.2.3:{port}", 200),  # ditto (a proxy or port forward in front)
        ("camera.example:{port}", 200),  # listed in allowed_hosts
        ("evil.example:{port}", 403),  # a rebinding page's own name
        ("localhost.evil.example", 403),  # a prefix is not a match
        ("[::1", 403),  # malformed
        ("localhost:http", 403),  # malformed port
    ],
)
def test_host_header_must_name_this_server(host: str, status: int):
    with opened(max_fps=0, allowed_hosts=["camera.example"]) as node:
        node.process(frames=make_frame(16, 16, seq=1))
        port = node._server.server_address[1]
        for path in ("/snapshot.jpg", "/stats.json", "/"):
            got, _, body = raw_get(port, path, {"Host": host.format(port=port)})
            assert got == status, (path, body)
        if status == 403:
            assert b"allowed_hosts" in body
            assert node.requests_refused == 3


def test_request_without_host_header_is_no_browser_and_passes_only_with_the_token():
    with opened() as node:
        assert raw_get(node._server.server_address[1], "/stats.json", {})[0] == 200
    with opened(token=TOKEN) as node:
        port = node._server.server_address[1]
        assert raw_get(port, "/stats.json", {})[0] == 401
        assert raw_get(port, f"/stats.json?token={TOKEN}", {})[0] == 200


def test_refused_requests_are_counted_in_the_statistics():
    with opened(max_fps=0) as node:
        port = node._server.server_address[1]
        raw_get(port, "/snapshot.jpg", {"Host": "evil.example"})
        raw_get(port, "/snapshot.jpg", {"Host": "evil.example"})
        counted: dict[str, int] = {}
        node.count = lambda name, n=1: counted.__setitem__(name, counted.get(name, 0) + n)
        node.process(frames=make_frame(8, 8, seq=1))
        assert counted == {"refused_host": 2}


def test_with_a_token_every_path_needs_it():
    with opened(max_fps=0, host="0.0.0.0", token=TOKEN) as node:
        node.process(frames=make_frame(16, 16, seq=1))
        port = node._server.server_address[1]
        assert node.url.endswith(f"/?token={TOKEN}")
        host = {"Host": f"127.0.0.1:{port}"}
        for path in ("/", "/snapshot.jpg", "/stats.json", "/stream.mjpg"):
            status, headers, body = raw_get(port, path, host)
            assert status == 401, path
            assert b"token" in body
            assert headers["WWW-Authenticate"].startswith("Bearer")
        # a wrong token, in each place it may be given
        assert raw_get(port, "/snapshot.jpg?token=nope", host)[0] == 401
        assert raw_get(port, "/snapshot.jpg", {**host, "Authorization": "Bearer nope"})[0] == 401
        assert raw_get(port, "/snapshot.jpg", {**host, "Cookie": "preview_token=nope"})[0] == 401
        # the right one
        status, headers, _ = raw_get(port, f"/?token={TOKEN}", host)
        assert status == 200
        cookie = headers["Set-Cookie"]
        assert cookie.startswith(f"preview_token={TOKEN};")
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        # the page's own requests carry the cookie; scripts may use a bearer token
        assert (
            raw_get(port, "/stats.json", {**host, "Cookie": f"a=b; preview_token={TOKEN}"})[0]
            == 200
        )
        status, headers, body = raw_get(
            port, "/snapshot.jpg", {**host, "Authorization": f"Bearer {TOKEN}"}
        )
        assert status == 200
        assert body[:2] == b"\xff\xd8"
        assert "Set-Cookie" not in headers  # only a token in the query sets the cookie
        # the Host check still applies with the right token
        assert raw_get(port, f"/stats.json?token={TOKEN}", {"Host": "evil.example"})[0] == 403


def test_a_short_token_is_a_params_error():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="token"):
        Preview.Params(token="short")


def test_listening_beyond_loopback_without_token_warns(caplog):
    with caplog.at_level("WARNING"), opened(host="0.0.0.0"):
        pass
    assert any("without a token" in r.getMessage() for r in caplog.records)


# several cameras ----------------------------------------------------------------------------


def test_several_cameras_each_get_a_stream_a_snapshot_and_their_rate_and_latency():
    with opened(max_fps=0) as node:
        for seq in range(3):
            node.process(frames=make_frame(64, 48, seq, source="cam1", value=0))
            node.process(frames=make_frame(32, 24, seq, source="cam2", value=255))
        assert node.sources() == ["cam1", "cam2"]
        dark = get(node.url + "snapshot.jpg?source=cam1")[2]
        light = get(node.url + "snapshot.jpg?source=cam2")[2]
        first = get(node.url + "snapshot.jpg")[2]  # no source: the first camera's
        assert cv2.imdecode(np.frombuffer(dark, np.uint8), cv2.IMREAD_COLOR).shape == (48, 64, 3)
        image = cv2.imdecode(np.frombuffer(light, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (24, 32, 3) and image.min() > 200
        assert first == dark
        status, _, body = get(node.url + "stream.mjpg?source=cam9")
        assert status == 404 and b"cam1, cam2" in body
        with urllib.request.urlopen(node.url + "stream.mjpg?source=cam2", timeout=5) as stream:
            node.process(frames=make_frame(32, 24, 7, source="cam2", value=255))
            head = stream.read(200)
        assert b"X-Seq: " in head
        streams = json.loads(get(node.url + "stats.json")[2])["streams"]
    assert list(streams) == ["cam1", "cam2"]
    assert streams["cam1"]["frames"] == 3 and streams["cam2"]["frames"] == 4
    assert (streams["cam2"]["width"], streams["cam2"]["height"]) == (32, 24)
    assert streams["cam1"]["fps"] > 0
    assert 0 <= streams["cam1"]["latency_p50_ms"] <= streams["cam1"]["latency_p95_ms"] < 5000


GRID = """
    graph: preview_grid
    nodes:
      - {id: cam1, node: synthetic, params: {width: 320, height: 240, fps: 15, frames: 0}}
      - {id: cam2, node: synthetic, params: {width: 320, height: 240, fps: 15, frames: 0}}
      - {id: cam3, node: synthetic, params: {width: 320, height: 240, fps: 15, frames: 0}}
      - id: preview
        node: preview
        params: {port: PORT, max_fps: 15}
        inputs:
          frames:
            - {from: cam1/frames, queue: 1, when_full: drop_oldest}
            - {from: cam2/frames, queue: 1, when_full: drop_oldest}
            - {from: cam3/frames, queue: 1, when_full: drop_oldest}
"""


@pytest.mark.integration
def test_page_in_chromium_shows_a_grid_of_three_cameras_with_their_rates(
    write_graph, chromium, free_port, shm_segments
):
    port = free_port
    graph = write_graph(GRID.replace("PORT", str(port)))
    url = f"http://127.0.0.1:{port}/"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "run", str(graph), "--no-live"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def three_streams() -> bool:
            try:
                streams = json.loads(get(url + "stats.json", 1)[2])["streams"]
            except (OSError, ValueError, KeyError):
                return False
            return len(streams) == 3 and all(s["fps"] > 0 for s in streams.values())

        wait_until(three_streams, timeout=30, what="three streams on the preview")
        dom = chromium(url, "--virtual-time-budget=2500", "--dump-dom").stdout
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, out  # stopped by Ctrl-C, drained
    assert shm_segments(proc.pid) == []
    for cam in ("cam1", "cam2", "cam3"):
        assert f'<figure data-source="{cam}"><img alt="live stream of {cam}"' in dom
        assert f"<figcaption>{cam}: " in dom
    assert " fps, latency p50 " in dom

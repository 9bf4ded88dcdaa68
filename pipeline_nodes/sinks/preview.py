"""A live preview page over HTTP: an MJPEG stream, a snapshot and every node's statistics.

The node and its viewers meet in :class:`LatestFrame`: ``process()`` encodes a JPEG (at most
``max_fps`` a second, and about once a second while nobody watches the stream) and swaps the
newest-frame reference under a condition variable; that is all it does, so viewers never slow
the graph. Each viewer is a thread of a ``ThreadingHTTPServer`` that waits for a frame newer
than the one it sent last and writes it; a slow socket delays only that viewer, which then
skips to the newest frame. The socket's send buffer is kept small for the same reason: the
kernel would otherwise queue seconds of stale video for a slow viewer.

Strangers are refused before any path is served (:class:`Gate`). The ``Host`` header must
name this server: a loopback name or address, an IP address (a DNS-rebinding page cannot
produce one: it needs a name it controls), this machine's host name, or one of
``allowed_hosts``; anything else is a web page on another name that resolved to this machine
(DNS rebinding) and gets 403, so it cannot read the frames or the statistics. With ``token``
set, every request must carry it (``?token=...`` once, which sets a same-site cookie for the
page's own requests, or ``Authorization: Bearer ...``); listening beyond loopback without a
token is allowed but logged as a warning.

Several cameras: ``frames`` is a streams input, so one preview shows a grid of them (one
``LatestFrame`` per source); ``/stream.mjpg?source=cam2`` is one camera's stream, and
``/stats.json`` lists each stream's frame rate and latency.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import hmac
import ipaddress
import json
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pydantic import Field

from pipeline import Frame, Input, Node, NodeParams, ParamIssue
from pipeline.checks import port_in_use
from pipeline_nodes.dependencies import import_cv2
from pipeline_nodes.sinks.preview_page import render_page
from pipeline_nodes.transforms.color import to_bgr

BOUNDARY = "frame"
IDLE_INTERVAL_S = 1.0  # encoding rate while no one watches the stream (snapshot freshness)
SEND_BUFFER_BYTES = 128 * 1024  # a few frames (Linux doubles it): bounds a slow viewer's lag
VIEWER_TIMEOUT_S = 30.0  # a viewer whose socket takes no frame for this long is dropped
RATE_WINDOW_S = 2.0  # a stream's fps is measured over this long
LATENCY_SAMPLES = 100  # a stream's latency percentiles are of its last frames
TOKEN_COOKIE = "preview_token"
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def host_name(header: str) -> str | None:
    """The name or address in a ``Host`` header, lower case, without port or brackets.

    ``None`` when the header is malformed (an unclosed bracket, a bad port).
    """
    value = header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or (value[end + 1 :] and not value[end + 1 :].startswith(":")):
            return None
        name, port = value[1:end], value[end + 2 :]
    elif value.count(":") == 1:
        name, port = value.split(":")
    elif ":" in value:
        return None  # an IPv6 address must be bracketed in a Host header
    else:
        name, port = value, ""
    if port and not port.isdigit():
        return None
    return name.rstrip(".") or None


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) stays on this machine."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Gate:
    """Who may read the preview: the ``Host`` header check and the optional token.

    Args:
        bound_host: the address the server listens on (``host`` param).
        allowed_hosts: extra names (lower-cased) that reach this machine, e.g. ``mypi.local``.
        token: the secret every request must carry, or ``None``.
    """

    def __init__(self, bound_host: str, allowed_hosts: Sequence[str], token: str | None) -> None:
        names = {bound_host.lower(), *LOOPBACK_NAMES, *(h.lower() for h in allowed_hosts)}
        with contextlib.suppress(OSError):
            machine = socket.gethostname().lower()
            if machine:
                names.update({machine, f"{machine}.local"})
        self.names = frozenset(n.strip("[]").rstrip(".") for n in names)
        self.token = token

    def host_allowed(self, header: str | None) -> bool:
        """Whether a request with this ``Host`` header is for this server.

        A request without one (HTTP/1.0, a script) is let through: browsers always send it,
        so its absence is no rebinding attack; the token, when set, still applies.
        """
        if header is None:
            return True
        name = host_name(header)
        if name is None:
            return False
        if name in self.names:
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True  # an address literal: no DNS name, so no rebinding

    def token_given(self, query: str, headers: Any) -> tuple[bool, bool]:
        """``(allowed, from_query)``: whether the request carries the token, and whether it
        came in the query (the reply then sets the cookie)."""
        if self.token is None:
            return True, False
        expected = self.token.encode("utf-8")
        for value in parse_qs(query).get("token", []):
            if hmac.compare_digest(value.encode("utf-8"), expected):
                return True, True
        authorization = headers.get("Authorization") or ""
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            credentials.strip().encode("utf-8"), expected
        ):
            return True, False
        for part in (headers.get("Cookie") or "").split(";"):
            key, _, value = part.strip().partition("=")
            if key == TOKEN_COOKIE and hmac.compare_digest(value.encode("utf-8"), expected):
                return True, False
        return False, False


class LatestFrame:
    """The newest JPEG, handed from the node's thread to any number of viewer threads."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._jpeg = b""
        self._seq = -1
        self._version = 0
        self._closed = False
        self._waiting = 0

    def publish(self, jpeg: bytes, seq: int) -> None:
        """Make ``jpeg`` (of frame ``seq``) the newest frame and wake every waiting viewer."""
        with self._cond:
            self._jpeg, self._seq = jpeg, seq
            self._version += 1
            self._cond.notify_all()

    def latest(self) -> tuple[int, int, bytes] | None:
        """``(version, seq, jpeg)`` of the newest frame, or ``None`` before the first."""
        with self._cond:
            return (self._version, self._seq, self._jpeg) if self._version else None

    def wait_newer(self, version: int, timeout: float) -> tuple[int, int, bytes] | None:
        """The newest frame once its version is above ``version``; ``None`` on timeout or close."""
        with self._cond:
            self._waiting += 1
            try:
                self._cond.wait_for(lambda: self._closed or self._version > version, timeout)
            finally:
                self._waiting -= 1
            if self._closed or self._version <= version:
                return None
            return self._version, self._seq, self._jpeg

    def close(self) -> None:
        """Wake every viewer for good: the stream is over."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def viewers_waiting(self) -> int:
        """How many viewers wait for a newer frame right now."""
        with self._cond:
            return self._waiting


class StreamState:
    """One camera's part of the preview: its newest JPEG and its recent rate and latency."""

    def __init__(self, latest: LatestFrame) -> None:
        self.latest = latest
        self.last_encode = -float("inf")
        self.frames = 0
        self.size = (0, 0)
        self.arrivals: collections.deque[float] = collections.deque()
        self.latencies: collections.deque[float] = collections.deque(maxlen=LATENCY_SAMPLES)

    def arrived(self, now: float, latency_s: float | None, size: tuple[int, int]) -> None:
        self.frames += 1
        self.size = size
        self.arrivals.append(now)
        while self.arrivals and now - self.arrivals[0] > RATE_WINDOW_S:
            self.arrivals.popleft()
        if latency_s is not None:
            self.latencies.append(latency_s)

    def summary(self, now: float) -> dict[str, Any]:
        recent = [t for t in list(self.arrivals) if now - t <= RATE_WINDOW_S]
        fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 else 0.0
        lat = sorted(self.latencies)

        def pct(q: float) -> float:
            return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3, 2) if lat else 0.0

        return {
            "frames": self.frames,
            "fps": round(fps, 2),
            "latency_p50_ms": pct(0.5),
            "latency_p95_ms": pct(0.95),
            "width": self.size[0],
            "height": self.size[1],
        }


def part_header(length: int, seq: int) -> bytes:
    """The header of one part of the ``multipart/x-mixed-replace`` stream."""
    return (
        f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {length}\r\n"
        f"X-Seq: {seq}\r\n\r\n"
    ).encode("ascii")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # close() must not wait for a viewer stuck in a write

    def __init__(self, address: tuple[str, int], preview: Preview) -> None:
        self.preview = preview
        self.lock = threading.Lock()
        self.connections: set[socket.socket] = set()
        self.viewers = 0
        super().__init__(address, _Handler)

    def drop_connections(self) -> None:
        """Shut every open connection, so writes blocked on slow viewers return at once."""
        with self.lock:
            connections = list(self.connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = VIEWER_TIMEOUT_S
    _set_cookie = False  # this reply sets the token cookie (the token came in the query)

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        with self.server.lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        self.server.preview.log.debug("%s " + format, self.client_address[0], *args)

    def _refuse(self, status: HTTPStatus, message: str) -> None:
        body = (message + "\n").encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if status == HTTPStatus.UNAUTHORIZED:
            self.send_header("WWW-Authenticate", 'Bearer realm="preview"')
        self.end_headers()
        self.wfile.write(body)

    def _admitted(self, query: str) -> bool:
        """Check the Host header and the token; refuse (and count) a request that fails."""
        preview = self.server.preview
        gate = preview.gate
        host = self.headers.get("Host")
        if not gate.host_allowed(host):
            preview.refused("host")
            preview.log.warning(
                "refused a request from %s for Host %r (not this server: DNS rebinding?)",
                self.client_address[0],
                host,
            )
            self._refuse(
                HTTPStatus.FORBIDDEN,
                f"Host {host!r} is not a name of this preview; open it by address, or add the "
                f"name to the node's 'allowed_hosts'",
            )
            return False
        allowed, from_query = gate.token_given(query, self.headers)
        if not allowed:
            preview.refused("token")
            self._refuse(
                HTTPStatus.UNAUTHORIZED,
                "this preview needs its token: open the address the graph printed "
                "(with ?token=...), or send 'Authorization: Bearer <token>'",
            )
            return False
        self._set_cookie = from_query
        return True

    def end_headers(self) -> None:
        if self._set_cookie:
            token = self.server.preview.gate.token
            self.send_header(
                "Set-Cookie", f"{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
            )
            self._set_cookie = False
        super().end_headers()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        path = url.path
        source = parse_qs(url.query).get("source", [""])[0]
        try:
            if not self._admitted(url.query):
                return
            if path in ("/", "/index.html"):
                self._reply(render_page(self.server.preview.id), "text/html; charset=utf-8")
            elif path in ("/stream.mjpg", "/snapshot.jpg"):
                latest = self.server.preview.latest_of(source)
                if latest is None:
                    known = ", ".join(self.server.preview.sources()) or "none yet"
                    self.send_error(HTTPStatus.NOT_FOUND, f"no stream {source!r}; streams: {known}")
                elif path == "/stream.mjpg":
                    self._stream(latest)
                else:
                    self._snapshot(latest)
            elif path == "/graph.svg":
                self._reply(self.server.preview.graph_drawing().encode(), "image/svg+xml")
            elif path == "/stats.json":
                body = json.dumps(self.server.preview.page_statistics()).encode("utf-8")
                self._reply(body, "application/json")
            else:
                self.send_error(HTTPStatus.NOT_FOUND, "try /, /stream.mjpg, /snapshot.jpg")
        except (ConnectionError, TimeoutError):
            pass  # the viewer went away or stalled: only its own thread ends

    def _reply(self, body: bytes, content_type: str) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _snapshot(self, frames: LatestFrame) -> None:
        latest = frames.latest()
        if latest is None:
            self.send_response(HTTPStatus.SERVICE_UNAVAILABLE, "no frame yet")
            self.send_header("Retry-After", "1")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._reply(latest[2], "image/jpeg")

    def _stream(self, frames: LatestFrame) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        with self.server.lock:
            self.server.viewers += 1
        try:
            version = 0
            while not frames.closed:
                newer = frames.wait_newer(version, 1.0)
                if newer is None:
                    continue
                version, seq, jpeg = newer
                self.wfile.write(part_header(len(jpeg), seq) + jpeg + b"\r\n")
        except OSError:
            pass  # a reset, a timeout, or close() shutting the socket
        finally:
            with self.server.lock:
                self.server.viewers -= 1


class Preview(Node):
    """Serve a live page of the frames over HTTP: MJPEG stream, snapshot, graph statistics.

    ``/`` is a small page with the stream and a table of every node's statistics (refreshed
    every second from ``/stats.json``), ``/stream.mjpg`` a multipart MJPEG stream,
    ``/snapshot.jpg`` the newest frame (503 before the first). The server starts in
    ``open()``; a ``host``/``port`` it cannot listen on (the port is in use) fails ``open()``.
    ``process()`` only encodes a JPEG, at most ``max_fps`` a second (about once a second
    while no one watches the stream) and hands it to the viewers; any number of viewers may
    watch, each gets the newest frame, and a slow one never slows the graph or the others.
    The input is read-only. Ends when its input ends; the server stops in ``close()``. Feed it
    through a ``when_full: drop_oldest`` edge so a busy machine shows fresh frames.

    Several cameras: list them, ``frames: [overlay1/annotated, overlay2/annotated]``; the page
    shows a grid of the streams (by ``source``), each with its frame rate and latency;
    ``/stream.mjpg?source=<id>`` and ``/snapshot.jpg?source=<id>`` are one camera's (without
    ``source``: the first camera's).

    Requests whose ``Host`` header names another server (DNS rebinding) get 403, and with
    ``token`` set, requests without it get 401 (see the module docstring); both are counted
    as ``refused_host`` and ``refused_token``.

    Attributes:
        url: the page's address, once open (with the actual port when ``port`` is 0, and the
            token when one is set).
        frames_encoded: JPEG frames handed to viewers so far.
        requests_refused: requests refused for their Host header or a missing token.

    Example:
        - id: preview
          node: preview
          params: {port: 8080, max_fps: 15, jpeg_quality: 80}
          inputs:
            frames: {from: overlay/annotated, queue: 2, when_full: drop_oldest}
    """

    preload_modules = ("cv2",)

    class Params(NodeParams):
        host: str = Field(
            "127.0.0.1",
            min_length=1,
            description="Address to listen on; 0.0.0.0 lets other machines watch.",
        )
        port: int = Field(8080, ge=0, le=65535, description="TCP port; 0 picks a free one.")
        jpeg_quality: int = Field(80, ge=1, le=100, description="JPEG quality, 1..100.")
        max_fps: float = Field(
            15.0, ge=0, le=1000, description="Most frames encoded per second; 0: every frame."
        )
        allowed_hosts: list[str] = Field(
            default_factory=list,
            description="Host names (besides addresses, localhost and this machine's name) "
            "that browsers may use to reach the page, e.g. [mypi.local].",
        )
        token: str | None = Field(
            None,
            min_length=16,
            pattern=r"^[A-Za-z0-9._~-]+$",
            description="A secret every request must carry (?token=..., a cookie, or "
            "'Authorization: Bearer'); advised when host is not a loopback address.",
        )

    frames = Input(
        Frame,
        streams=True,
        description="(H, W[, C]) uint8 frames in meta['color']; one or several cameras.",
    )

    @classmethod
    def check(cls, params: Params) -> Iterator[ParamIssue]:
        if port_in_use(params.host, params.port):
            yield ParamIssue(
                "port",
                f"port {params.port} on {params.host} is in use by another program (another "
                "graph's preview or server?): this node will fail to start",
                ("set params.port to a free port, or 0 to pick one",),
                severity="warning",
            )

    def open(self) -> None:
        cv2 = import_cv2(f"the preview node {self.id!r}")
        p = self.params
        self._imencode = cv2.imencode
        self._encode_params = [int(cv2.IMWRITE_JPEG_QUALITY), p.jpeg_quality]
        self._interval = 1.0 / p.max_fps if p.max_fps else 0.0
        self.frames_encoded = 0
        self.frames_latest = LatestFrame()  # the first camera's
        self._streams: dict[str, StreamState] = {}
        self._streams_lock = threading.Lock()
        self.gate = Gate(p.host, p.allowed_hosts, p.token)
        self._refused_lock = threading.Lock()
        self._refused: dict[str, int] = {}
        self.requests_refused = 0
        server_class = _Server6 if ":" in p.host else _Server
        try:
            self._server = server_class((p.host, p.port), self)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise OSError(
                    exc.errno,
                    f"node {self.id!r}: port {p.port} on {p.host} is already in use; stop "
                    "the program using it or set 'port' to a free one (0 picks one)",
                ) from None
            raise OSError(
                exc.errno,
                f"node {self.id!r} cannot listen on {p.host}:{p.port} "
                f"({exc.strerror or exc}); set 'host' to an address of this machine "
                "(127.0.0.1, or 0.0.0.0 for every interface)",
            ) from None
        port = self._server.server_address[1]
        shown = "127.0.0.1" if p.host in ("0.0.0.0", "::") else p.host
        self.url = f"http://{f'[{shown}]' if ':' in shown else shown}:{port}/"
        if p.token:
            self.url += f"?token={p.token}"
        elif not is_loopback(p.host):
            self.log.warning(
                "preview %r listens on %s without a token: anyone who can reach this machine "
                "can watch; set 'token' to require one",
                self.id,
                p.host,
            )
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"preview-{self.id}",
            daemon=True,
        )
        self._thread.start()
        self.log.info("preview %r: open %s in a browser", self.id, self.url)

    def process(self, frames: Frame) -> None:
        if self._refused:
            self._count_refused()
        now = time.monotonic()
        stream = self._streams.get(frames.source)
        if stream is None:
            with self._streams_lock:
                latest = self.frames_latest if not self._streams else LatestFrame()
                stream = self._streams[frames.source] = StreamState(latest)
        latency = (time.monotonic_ns() - frames.t_capture_ns) / 1e9 if frames.t_capture_ns else None
        shape = frames.image.shape
        with self._streams_lock:
            stream.arrived(now, latency, (int(shape[1]), int(shape[0])))
        interval = self._interval if self._server.viewers else max(self._interval, IDLE_INTERVAL_S)
        if now - stream.last_encode < interval:
            self.count("not_encoded")
            return
        stream.last_encode = now
        ok, jpeg = self._imencode(".jpg", to_bgr(frames), self._encode_params)
        if not ok:
            raise RuntimeError(f"node {self.id!r}: JPEG encoding of seq {frames.seq} failed")
        stream.latest.publish(jpeg.tobytes(), frames.seq)
        self.frames_encoded += 1

    def sources(self) -> list[str]:
        """The streams seen so far, in the order they first came."""
        with self._streams_lock:
            return list(self._streams)

    def latest_of(self, source: str) -> LatestFrame | None:
        """The newest-frame hand-over of ``source`` (empty: the first camera's); None for a
        source not seen."""
        if not source:
            return self.frames_latest
        with self._streams_lock:
            stream = self._streams.get(source)
        return stream.latest if stream is not None else None

    def refused(self, reason: str) -> None:
        """Note a refused request; viewer threads call this, ``process()`` counts it."""
        with self._refused_lock:
            self._refused[reason] = self._refused.get(reason, 0) + 1
            self.requests_refused += 1

    def _count_refused(self) -> None:
        # statistics are the node thread's: viewer threads only leave the numbers here
        with self._refused_lock:
            refused, self._refused = self._refused, {}
        for reason, n in refused.items():
            self.count(f"refused_{reason}", n)

    def page_statistics(self) -> dict[str, Any]:
        """What ``/stats.json`` returns: this node's id, viewers, and every node's statistics."""
        try:
            nodes = self.graph_statistics()
        except Exception as exc:  # a statistics hiccup must not break the page
            self.log.debug("graph_statistics() failed: %s", exc)
            nodes = {}
        now = time.monotonic()
        with self._streams_lock:
            streams = {source: s.summary(now) for source, s in self._streams.items()}
        return {
            "node": self.id,
            "viewers": self._server.viewers,
            "requests_refused": self.requests_refused,
            "frames_encoded": self.frames_encoded,
            "streams": streams,
            "nodes": nodes,
        }

    def close(self) -> None:
        self.frames_latest.close()  # viewers waiting for a frame leave their loops
        with self._streams_lock:
            for stream in self._streams.values():
                stream.latest.close()
        self._server.shutdown()
        self._server.drop_connections()  # viewers blocked in a write leave too
        self._server.server_close()
        self._thread.join(timeout=2.0)

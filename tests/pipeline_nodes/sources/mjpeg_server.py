"""A small MJPEG-over-HTTP server on 127.0.0.1 for camera tests: numbered frames, stop, restart.

It serves ``multipart/x-mixed-replace; boundary=frame`` with JPEG frames (``cv2.imencode``),
each carrying its frame number twice: as digits for a person looking at it, and as a cell
code that ``read_number`` reads back. Numbers keep increasing across a restart on the same
port (pass ``first_number``), so a test sees which frames came after a reconnect. ``stop()``
also cuts the open connections, as a camera that loses power would. Modes: ``stream`` (the
normal one), ``stall_after`` (send that many frames per connection, then keep the connection
open and silent) and ``silent`` (accept, never answer).
"""

from __future__ import annotations

import http.server
import socket
import socketserver
import threading
import time
from typing import Any, Literal

import cv2
import numpy as np
from source_graph_nodes import BITS, CELL, draw_number


def numbered_frame(number: int, width: int = 160, height: int = 120) -> np.ndarray:
    """A BGR test frame with ``number`` drawn as digits and as the cell code."""
    if width < BITS * CELL:
        raise ValueError(f"width must be >= {BITS * CELL} to hold the number code")
    image = np.full((height, width, 3), 60, np.uint8)
    draw_number(image, number)
    cv2.putText(
        image, str(number), (8, height - 16), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (255, 255, 255), 2
    )
    return image


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _HttpServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection)

    def do_GET(self) -> None:
        owner = self.server.owner
        if owner.mode == "silent":
            owner._stopping.wait()
            return
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        sent = 0
        try:
            while not owner._stopping.is_set():
                if owner.stall_after is not None and sent >= owner.stall_after:
                    owner._stopping.wait()  # keep the connection open, send nothing
                    return
                number = owner._next()
                ok, jpeg = cv2.imencode(".jpg", numbered_frame(number, *owner.size))
                assert ok
                data = jpeg.tobytes()
                self.wfile.write(
                    b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                    + str(len(data)).encode()
                    + b"\r\n\r\n"
                    + data
                    + b"\r\n"
                )
                self.wfile.flush()
                sent += 1
                owner._stopping.wait(1.0 / owner.fps)
        except OSError:
            pass  # the client went away, or stop() cut the connection


class _HttpServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    allow_reuse_address = True
    daemon_threads = False
    block_on_close = True  # server_close() joins the handler threads: none outlives a test
    owner: MjpegServer


class MjpegServer:
    """An MJPEG stream on ``url``; ``start()``, ``stop()``, and start again on the same port.

    Attributes:
        latest: the number of the last frame sent (-1 before the first).
    """

    def __init__(
        self,
        port: int = 0,
        *,
        fps: float = 30.0,
        size: tuple[int, int] = (160, 120),
        mode: Literal["stream", "silent"] = "stream",
        stall_after: int | None = None,
        first_number: int = 0,
    ) -> None:
        self.port = port
        self.fps = fps
        self.size = size
        self.mode = mode
        self.stall_after = stall_after
        self.latest = first_number - 1
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._connections: list[socket.socket] = []
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def start(self) -> MjpegServer:
        self._stopping.clear()
        httpd = _HttpServer(("127.0.0.1", self.port), _Handler)
        httpd.owner = self
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut every open connection; returns when all threads ended."""
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._httpd.server_close()
        assert self._thread is not None
        self._thread.join(5)
        self._httpd = None

    def _next(self) -> int:
        with self._lock:
            self.latest += 1
            return self.latest

    def _track(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.append(conn)

    def __enter__(self) -> MjpegServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (just released by the kernel)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Any, timeout_s: float, what: str) -> None:
    """Poll ``predicate`` every 20 ms; fail the test with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)

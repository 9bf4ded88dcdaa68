"""The camera source: a live OpenCV capture (a device, or an RTSP / HTTP MJPEG stream URL).

A grabber thread owns the capture: it reads frames as fast as the camera delivers them into
its own two buffers and keeps only the newest, so the driver's and the network's queues never
fill and ``process()`` never serves a stale frame; ``process()`` waits for a frame newer than
the last one it sent and copies it into a shared-memory slot (one copy, which also frees the
grabber to decode the next frame at once). The grabber also reconnects: a read that fails
(the stream ended, or no frame came for ``stall_timeout_s``: FFMPEG's read timeout is set to
it) drops the capture and reopens it with exponential backoff. Opening runs on a helper
thread bounded by ``open_timeout_s``, because OpenCV's open can block for a long time on a
device or an unreachable host (for FFMPEG URLs its own open and read timeouts are set too, so
an abandoned attempt ends soon after). Counters the grabber keeps are handed to the node's
statistics from ``process()`` and ``close()``, on the node's own thread.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from nodes.dependencies import import_cv2
from pipeline import Frame, Node, NodeParams, Output

__all__ = ["CameraSource"]

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_DEFAULT_PORTS = {"http": 80, "https": 443, "rtsp": 554, "rtsps": 322, "rtmp": 1935}
_POLL_S = 0.1  # longest process() waits for a frame, so a stop is seen promptly
_OPEN_GRACE_S = 0.25  # lets FFMPEG's own open timeout report before the thread is abandoned
_CLOSE_JOIN_MAX_S = 5.0
_BACKENDS = {
    "auto": "CAP_ANY",
    "v4l2": "CAP_V4L2",
    "ffmpeg": "CAP_FFMPEG",
    "gstreamer": "CAP_GSTREAMER",
}


class _OpenFailure(Exception):
    """A capture did not open; the message says why, ``timed_out`` whether it never answered."""

    def __init__(self, reason: str, *, timed_out: bool = False) -> None:
        super().__init__(reason)
        self.timed_out = timed_out


@dataclasses.dataclass(frozen=True)
class _Target:
    """What ``params.device`` names, resolved for OpenCV."""

    source: int | str
    api: int
    is_url: bool
    label: str  # for messages; a URL's password is masked


def redact_url(url: str) -> str:
    """The URL with its password (if any) replaced by ``***``, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


class _Grabber:
    """The thread that reads the capture, keeps the newest frame, and reconnects."""

    def __init__(
        self,
        cap: Any,
        connect: Callable[[threading.Event], Any],
        *,
        label: str,
        backoff_s: float,
        backoff_max_s: float,
        stall_timeout_s: float,
        node: CameraSource,
    ) -> None:
        self._cap: Any = cap
        self._connect = connect
        self._label = label
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
        self._stall_timeout_s = stall_timeout_s
        self._log = node.log
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._front: np.ndarray | None = None  # the newest frame; guarded by _cond
        self._number = 0  # frames read since open (0: none yet)
        self._t_ns = 0
        self._connection = 1
        self._ended = False
        self._counts: dict[str, int] = {}
        self.failure: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"camera-grabber-{node.id}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, join_s: float) -> bool:
        """Ask the thread to end and wait up to ``join_s``; True when it has ended."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(join_s)
        return not self._thread.is_alive()

    def take_counts(self) -> dict[str, int]:
        with self._cond:
            counts, self._counts = self._counts, {}
        return counts

    def wait_first(self, timeout_s: float) -> bool:
        with self._cond:
            self._cond.wait_for(lambda: self._number > 0 or self._ended, timeout_s)
            return self._number > 0

    def take_newer(
        self, after: int, timeout_s: float, allocate: Callable[[tuple[int, ...]], np.ndarray]
    ) -> tuple[np.ndarray, int, int, int] | None:
        """Copy the newest frame numbered above ``after`` into ``allocate(shape)``.

        Returns ``(image, number, t_capture_ns, connection)``, or None when no newer frame
        came within ``timeout_s``. The slot is allocated outside the lock (allocation may wait
        for a free slot), so the grabber is never held up by a slow consumer.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self._number > after or self._ended, timeout_s):
                return None
            if self._front is None or self._number <= after:
                return None
            shape = self._front.shape
        while True:
            image = allocate(shape)
            with self._cond:
                front = self._front
                assert front is not None
                if front.shape == shape:
                    np.copyto(image, front)
                    return image, self._number, self._t_ns, self._connection
                shape = front.shape  # the camera changed resolution meanwhile

    def _bump(self, name: str) -> None:
        with self._cond:
            self._counts[name] = self._counts.get(name, 0) + 1

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # reported by process() on the node's thread
            self.failure = exc
        finally:
            if self._cap is not None:
                self._cap.release()
                self._cap = None
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def _loop(self) -> None:
        backoff = self._backoff_s
        back: np.ndarray | None = None  # the buffer the next frame is decoded into
        while not self._stop.is_set():
            if self._cap is None:
                if self._stop.wait(backoff):
                    return
                try:
                    self._cap = self._connect(self._stop)
                except _OpenFailure as exc:
                    if self._stop.is_set():
                        return
                    self._bump("reconnect_failures")
                    backoff = min(backoff * 2, self._backoff_max_s)
                    self._log.warning(
                        "cannot reconnect to %s (%s); next attempt in %.3g s",
                        self._label,
                        exc,
                        backoff,
                    )
                    continue
                self._bump("reconnects")
                with self._cond:
                    self._connection += 1
                self._log.info("reconnected to %s", self._label)
            t0 = time.monotonic()
            try:
                ok, image = self._cap.read() if back is None else self._cap.read(back)
            except Exception as exc:  # a backend error is a lost stream like any other
                ok, image = False, None
                self._log.debug("read from %s raised %s: %s", self._label, type(exc).__name__, exc)
            t_ns = time.monotonic_ns()
            if self._stop.is_set():
                return
            if ok and image is not None:
                back = self._publish(np.asarray(image), t_ns)
                backoff = self._backoff_s
                continue
            waited = time.monotonic() - t0
            stalled = waited >= 0.9 * self._stall_timeout_s
            self._bump("disconnects")
            if stalled:
                self._bump("stalls")
            self._log.warning(
                "lost %s (%s); reconnecting in %.3g s",
                self._label,
                f"no frame for {waited:.3g} s" if stalled else "the stream ended or failed",
                backoff,
            )
            self._cap.release()
            self._cap = None

    def _publish(self, image: np.ndarray, t_ns: int) -> np.ndarray | None:
        """Make ``image`` the newest frame; returns the old one to decode the next into."""
        with self._cond:
            old = self._front
            self._front = image
            self._number += 1
            self._t_ns = t_ns
            self._cond.notify_all()
        if old is None or old.shape != image.shape or old is image:
            return None
        return old


class CameraSource(Node):
    """Send the newest frames of a live camera: a device, or an RTSP / HTTP MJPEG stream.

    ``device`` is a device index (``0``), a device path (``/dev/video0``) or a stream URL
    (``rtsp://...``, ``http://.../mjpeg``). ``width``, ``height``, ``fps`` and ``fourcc`` are
    requested from a device (the driver may choose the nearest mode; the frames carry the
    real size); a stream sends what it sends. A background thread reads the camera as fast as
    it delivers and keeps only the newest frame, so a slow graph gets fresh frames, never a
    backlog from the driver's buffer; frames it replaced before they were sent are counted as
    ``skipped_frames``. Each frame gets ``seq`` (increasing for the node's whole life, also
    across reconnects) and ``t_capture_ns`` (when it was read).

    When the stream drops, or no frame comes for ``stall_timeout_s``, the capture is reopened
    with exponential backoff (``reconnect_backoff_s`` doubling up to
    ``reconnect_backoff_max_s``); counters ``disconnects``, ``stalls``, ``reconnects`` and
    ``reconnect_failures`` show it in the statistics. A camera that does not open within
    ``open_timeout_s`` (or opens but sends no frame in that time) fails ``open()`` with a
    message naming the device and the likely cause.

    A camera never ends by itself: its stream ends only when the graph is stopped (Ctrl-C, or
    SIGTERM, to ``pipeline run``). Live cameras usually want ``when_full: drop_oldest`` (or
    ``drop_newest``) on their edges, so a slow consumer sees fresh frames and every drop is
    counted instead of holding up the camera.

    Output ``frames``: ``(H, W, 3)`` uint8 BGR; ``meta`` carries ``device``,
    ``frame_number`` (frames read since open), ``skipped`` (frames read but replaced before
    this one was sent) and ``connection`` (1, then 2 after the first reconnect, ...).

    Example:
        - id: camera
          node: camera
          params: {device: 0, width: 1280, height: 720, fps: 30, fourcc: MJPG}
        - id: detector
          node: detector
          inputs:
            frames: {from: camera/frames, queue: 1, when_full: drop_oldest}
    """

    class Params(NodeParams):
        device: int | str = Field(
            0,
            description="A device index (0), a device path (/dev/video0), or a stream URL "
            "(rtsp://host/stream, http://host/video.mjpg).",
        )
        width: int | None = Field(
            None, ge=16, le=16384, description="Requested frame width in pixels (devices)."
        )
        height: int | None = Field(
            None, ge=16, le=16384, description="Requested frame height in pixels (devices)."
        )
        fps: float | None = Field(
            None, gt=0, le=1000, description="Requested frames per second (devices)."
        )
        fourcc: str | None = Field(
            None,
            min_length=4,
            max_length=4,
            description="Requested pixel format of a device, e.g. MJPG (USB cameras often "
            "reach full frame rates only with it) or YUYV.",
        )
        backend: Literal["auto", "v4l2", "ffmpeg", "gstreamer"] = Field(
            "auto",
            description="OpenCV capture backend; auto: FFMPEG for URLs, V4L2 for /dev paths, "
            "OpenCV's choice for an index.",
        )
        open_timeout_s: float = Field(
            10.0, gt=0, le=600, description="Give up opening (or reopening) after this long."
        )
        stall_timeout_s: float = Field(
            5.0,
            gt=0,
            le=600,
            description="No new frame for this long counts as a lost stream: reconnect.",
        )
        reconnect_backoff_s: float = Field(
            0.5,
            gt=0,
            le=600,
            description="Wait before the first reconnect attempt; doubles after each failure.",
        )
        reconnect_backoff_max_s: float = Field(
            10.0, gt=0, le=3600, description="Longest wait between reconnect attempts."
        )

        @field_validator("device")
        @classmethod
        def _device(cls, value: int | str) -> int | str:
            if isinstance(value, str):
                value = value.strip()
                if value.isdigit():
                    return int(value)
                if not value:
                    raise ValueError(
                        "device is empty; give an index (0), a path (/dev/video0) or a URL"
                    )
            elif value < 0:
                raise ValueError(f"device index must be >= 0, got {value}")
            return value

        @field_validator("reconnect_backoff_max_s")
        @classmethod
        def _max_at_least_initial(cls, value: float, info: ValidationInfo) -> float:
            initial = info.data.get("reconnect_backoff_s")
            if initial is not None and value < initial:
                raise ValueError(
                    f"reconnect_backoff_max_s ({value}) must be >= reconnect_backoff_s ({initial})"
                )
            return value

    frames = Output(
        Frame,
        description="(H, W, 3) uint8 BGR live frames; meta: device, frame_number, skipped, "
        "connection.",
    )

    def open(self) -> None:
        self._cv2 = import_cv2("camera")
        p = self.params
        self._target = self._resolve()
        self._where = f"camera {self.id!r}"
        if self._target.is_url and (p.width or p.height or p.fps or p.fourcc):
            self.log.warning(
                "width, height, fps and fourcc are ignored for a stream URL (%s): it sends what "
                "it sends; add a resize node to change the size",
                self._target.label,
            )
        t_end = time.monotonic() + p.open_timeout_s
        try:
            cap = self._connect(threading.Event())
        except _OpenFailure as exc:
            error = TimeoutError if exc.timed_out else ConnectionError
            raise error(f"{self._where}: cannot open {self._target.label}: {exc}") from None
        self._grabber = _Grabber(
            cap,
            self._connect,
            label=self._target.label,
            backoff_s=p.reconnect_backoff_s,
            backoff_max_s=p.reconnect_backoff_max_s,
            stall_timeout_s=p.stall_timeout_s,
            node=self,
        )
        self._log_opened(cap)  # before the grabber thread owns the capture
        self._grabber.start()
        if not self._grabber.wait_first(max(t_end - time.monotonic(), 1.0)):
            self._stop_grabber()
            raise TimeoutError(
                f"{self._where}: {self._target.label} opened but sent no frame within "
                f"{p.open_timeout_s:g} s (open_timeout_s); check that the camera streams (is it "
                "used by another program?), or raise open_timeout_s"
            )
        self._seq = 0
        self._last = 0

    def process(self) -> None:
        grabber = self._grabber
        self._hand_over_counts()
        if grabber.failure is not None:
            raise RuntimeError(
                f"{self._where}: the capture thread of {self._target.label} failed: "
                f"{type(grabber.failure).__name__}: {grabber.failure}"
            ) from grabber.failure
        got = grabber.take_newer(
            self._last, _POLL_S, lambda shape: self.frames.allocate(shape, np.uint8)
        )
        if got is None:
            return  # no new frame yet (or reconnecting): return so that a stop is seen
        image, number, t_capture_ns, connection = got
        skipped = number - self._last - 1
        if skipped > 0:
            self.count("skipped_frames", skipped)
        self._last = number
        seq = self._seq
        self._seq += 1
        self.frames.send(
            Frame(
                image=image,
                seq=seq,
                t_capture_ns=t_capture_ns,
                source=self.id,
                meta={
                    "device": self._target.label,
                    "frame_number": number,
                    "skipped": skipped,
                    "connection": connection,
                },
            )
        )

    def close(self) -> None:
        self._stop_grabber()

    # the capture ----------------------------------------------------------------------------

    def _stop_grabber(self) -> None:
        join_s = min(self.params.stall_timeout_s, _CLOSE_JOIN_MAX_S) + 0.5
        if not self._grabber.stop(join_s):
            # Stuck in a backend read: it ends when the read times out, releasing the camera.
            self.log.warning(
                "the capture thread of %s is still in a read after %.3g s; it will release "
                "the camera when the read returns",
                self._target.label,
                join_s,
            )
        self._hand_over_counts()

    def _hand_over_counts(self) -> None:
        for name, n in self._grabber.take_counts().items():
            self.count(name, n)

    def _resolve(self) -> _Target:
        cv2 = self._cv2
        p = self.params
        device = p.device
        api = int(getattr(cv2, _BACKENDS[p.backend]))
        if isinstance(device, int):
            return _Target(device, api, False, f"camera device {device}")
        if _URL.match(device):
            if p.backend == "auto":
                api = int(cv2.CAP_FFMPEG)
            return _Target(device, api, True, redact_url(device))
        if p.backend == "auto" and device.startswith("/dev/") and sys.platform == "linux":
            api = int(cv2.CAP_V4L2)
        return _Target(device, api, False, device)

    def _new_capture(self) -> Any:
        cv2 = self._cv2
        t = self._target
        p = self.params
        if t.is_url and t.api == cv2.CAP_FFMPEG:
            # FFMPEG honours these: a dead host fails the open, and a stalled stream fails a
            # read, after the given time instead of blocking for minutes.
            timeouts = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                round(p.open_timeout_s * 1000),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                round(p.stall_timeout_s * 1000),
            ]
            return cv2.VideoCapture(t.source, cv2.CAP_FFMPEG, timeouts)
        return cv2.VideoCapture(t.source, t.api)

    def _configure(self, cap: Any) -> None:
        cv2 = self._cv2
        p = self.params
        if self._target.is_url:
            return
        if p.fourcc:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*p.fourcc))
        if p.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, p.width)
        if p.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, p.height)
        if p.fps:
            cap.set(cv2.CAP_PROP_FPS, p.fps)
        # A driver queue of one frame, where the backend supports it (V4L2): the grabber
        # reads continuously anyway, this only shortens the latency of the first frames.
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)

    def _connect(self, cancel: threading.Event) -> Any:
        """An opened, configured capture; ``_OpenFailure`` after ``open_timeout_s`` or on error.

        OpenCV's open can block (a device that never answers, a host that drops packets), so
        it runs on a helper thread; an attempt given up on releases its capture itself if it
        ever opens. Called from ``open()`` and from the grabber thread (reconnects).
        """
        lock = threading.Lock()
        box: list[Any] = []
        abandoned = False
        done = threading.Event()

        def attempt() -> None:
            try:
                result: Any = self._new_capture()
            except Exception as exc:  # e.g. cv2.error from a backend; reported below
                result = exc
            with lock:
                if abandoned:
                    if not isinstance(result, Exception):
                        result.release()
                else:
                    box.append(result)
            done.set()

        threading.Thread(target=attempt, name=f"camera-open-{self.id}", daemon=True).start()
        timeout_s = self.params.open_timeout_s
        t0 = time.monotonic()
        deadline = t0 + timeout_s + _OPEN_GRACE_S
        while not done.wait(max(min(_POLL_S, deadline - time.monotonic()), 0.0)):
            if cancel.is_set() or time.monotonic() >= deadline:
                with lock:
                    abandoned = not box
                if abandoned:
                    if cancel.is_set():
                        raise _OpenFailure("cancelled")
                    raise _OpenFailure(self._diagnose(timed_out=True), timed_out=True)
                break
        result = box[0]
        if isinstance(result, Exception):
            raise _OpenFailure(f"{type(result).__name__}: {result}")
        if not result.isOpened():
            result.release()
            # FFMPEG gives up by itself at open_timeout_s: that is a timeout too.
            timed_out = time.monotonic() - t0 >= 0.9 * timeout_s
            raise _OpenFailure(self._diagnose(timed_out=timed_out), timed_out=timed_out)
        try:
            self._configure(result)
        except Exception:
            result.release()
            raise
        return result

    def _diagnose(self, *, timed_out: bool) -> str:
        """Why the capture did not open, as precisely as can be found out, and what to do."""
        t = self._target
        waited = f"{self.params.open_timeout_s:g} s (open_timeout_s)"
        if t.is_url:
            return self._diagnose_url(str(t.source), timed_out=timed_out)
        if timed_out:
            return f"no answer within {waited}; check the device, or raise open_timeout_s"
        path = f"/dev/video{t.source}" if isinstance(t.source, int) else t.source
        if sys.platform == "linux" and path.startswith("/dev/"):
            if not os.path.exists(path):
                present = sorted(glob.glob("/dev/video*"))
                return (
                    f"{path} does not exist (video devices present: "
                    f"{', '.join(present) or 'none'}); check that the camera is plugged in "
                    "and params.device"
                )
            if not os.access(path, os.R_OK | os.W_OK):
                return f"no permission to use {path}; add this user to the 'video' group"
            return (
                f"{path} exists but did not open: another program may be using it, or it is "
                "not a capture node (many cameras have a second, metadata-only /dev/video node)"
            )
        if isinstance(t.source, int):
            return "no camera answered at this index; check that it is connected"
        if not os.path.exists(path):
            return f"no such device or file {path!r}; check params.device"
        return "OpenCV cannot read it as a video stream with this backend; check params.backend"

    def _diagnose_url(self, url: str, *, timed_out: bool) -> str:
        timeout_s = self.params.open_timeout_s
        waited = f"{timeout_s:g} s (open_timeout_s)"
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = parts.hostname
        try:
            port = parts.port or _DEFAULT_PORTS.get(scheme)
        except ValueError:
            return "the URL's port is not a number; check params.device"
        if not host or port is None:
            if timed_out:
                return f"no video within {waited}"
            return "OpenCV (FFMPEG) cannot read this URL; check its scheme, host and path"
        try:
            probe = socket.create_connection((host, port), timeout=min(2.0, timeout_s))
        except ConnectionRefusedError:
            return (
                f"connection refused: nothing listens on {host}:{port}; check that the camera "
                "or stream server is running and the port is right"
            )
        except socket.gaierror:
            return f"host {host!r} not found; check the URL"
        except TimeoutError:
            return f"{host}:{port} does not answer; check the address and the network"
        except OSError as exc:
            return f"{host}:{port} is unreachable ({exc.strerror or exc}); check the network"
        probe.close()
        if timed_out:
            return (
                f"{host}:{port} accepts connections but sent no video within {waited}; check "
                "the URL's path and that the camera streams, or raise open_timeout_s"
            )
        return (
            f"{host}:{port} answers but sent nothing OpenCV reads as video; check the URL's "
            "path, the credentials and the stream's format"
        )

    def _log_opened(self, cap: Any) -> None:
        cv2 = self._cv2
        try:
            backend = cap.getBackendName()
        except Exception:  # not every backend names itself
            backend = "?"
        self.log.info(
            "opened %s with %s: %dx%d at %.3g fps",
            self._target.label,
            backend,
            int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            float(cap.get(cv2.CAP_PROP_FPS)),
        )

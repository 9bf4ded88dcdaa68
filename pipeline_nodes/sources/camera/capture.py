"""Opening a camera with OpenCV: what ``device`` names, and an open bounded in time.

OpenCV's open can block for a long time (a device that never answers, a host that drops
packets), so :class:`CaptureOpener` runs it on a helper thread bounded by ``open_timeout_s``;
an attempt given up on releases its capture itself if it ever opens. For FFMPEG URLs its own
open and read timeouts are set too, so an abandoned attempt ends soon after, and a stalled
stream fails a read instead of blocking. A capture that does not open raises
:class:`OpenFailure` with the reason (:mod:`.diagnosis`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import threading
import time
from typing import Any

from pipeline_nodes.sources.camera.diagnosis import diagnose_device, diagnose_url, redact_url
from pipeline_nodes.sources.camera.params import CameraParams

__all__ = ["BACKENDS", "CaptureOpener", "CaptureTarget", "OpenFailure", "resolve_target"]

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
POLL_S = 0.1  # the longest a wait lasts before a cancel or stop is seen
_OPEN_GRACE_S = 0.25  # lets FFMPEG's own open timeout report before the thread is abandoned

_FFMPEG_OPTIONS = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_FFMPEG_OPTIONS_LOCK = threading.Lock()


def ffmpeg_options(given: str | None, rtsp_transport: str) -> str:
    """OpenCV's FFMPEG capture options (``key;value|key;value``): ``given`` (the user's own
    ``OPENCV_FFMPEG_CAPTURE_OPTIONS``, if any) with ``rtsp_transport`` set."""
    pairs = [p for p in (given or "").split("|") if p and not p.startswith("rtsp_transport;")]
    return "|".join([*pairs, f"rtsp_transport;{rtsp_transport}"])


BACKENDS = {
    "auto": "CAP_ANY",
    "v4l2": "CAP_V4L2",
    "ffmpeg": "CAP_FFMPEG",
    "gstreamer": "CAP_GSTREAMER",
}
"""``params.backend`` -> the OpenCV ``CAP_*`` constant it names."""


class OpenFailure(Exception):
    """A capture did not open; the message says why, ``timed_out`` whether it never answered."""

    def __init__(self, reason: str, *, timed_out: bool = False) -> None:
        super().__init__(reason)
        self.timed_out = timed_out


@dataclasses.dataclass(frozen=True)
class CaptureTarget:
    """What ``params.device`` names, resolved for OpenCV.

    Attributes:
        source: the device index, path or URL OpenCV opens.
        api: the OpenCV backend (``CAP_*``).
        is_url: a stream URL (then size, fps and fourcc are not requested).
        label: for messages; a URL's password is masked.
    """

    source: int | str
    api: int
    is_url: bool
    label: str


def resolve_target(cv2: Any, params: CameraParams) -> CaptureTarget:
    """The target of ``params.device`` with its backend: FFMPEG for URLs and V4L2 for
    ``/dev`` paths (on Linux) unless ``params.backend`` names one."""
    device = params.device
    api = int(getattr(cv2, BACKENDS[params.backend]))
    if isinstance(device, int):
        return CaptureTarget(device, api, False, f"camera device {device}")
    if _URL.match(device):
        if params.backend == "auto":
            api = int(cv2.CAP_FFMPEG)
        return CaptureTarget(device, api, True, redact_url(device))
    if params.backend == "auto" and device.startswith("/dev/") and sys.platform == "linux":
        api = int(cv2.CAP_V4L2)
    return CaptureTarget(device, api, False, device)


class CaptureOpener:
    """Opens (and reopens) one target: ``opener(cancel)`` returns an opened, configured
    ``cv2.VideoCapture`` or raises :class:`OpenFailure` after ``open_timeout_s`` or on error.

    Called from the node's ``open()`` and from the grabber thread (reconnects).
    """

    def __init__(self, cv2: Any, target: CaptureTarget, params: CameraParams, name: str) -> None:
        self._cv2 = cv2
        self.target = target
        self._params = params
        self._name = name

    def __call__(self, cancel: threading.Event) -> Any:
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

        threading.Thread(target=attempt, name=f"camera-open-{self._name}", daemon=True).start()
        timeout_s = self._params.open_timeout_s
        t0 = time.monotonic()
        deadline = t0 + timeout_s + _OPEN_GRACE_S
        while not done.wait(max(min(POLL_S, deadline - time.monotonic()), 0.0)):
            if cancel.is_set() or time.monotonic() >= deadline:
                with lock:
                    abandoned = not box
                if abandoned:
                    if cancel.is_set():
                        raise OpenFailure("cancelled")
                    raise OpenFailure(self.diagnose(timed_out=True), timed_out=True)
                break
        result = box[0]
        if isinstance(result, Exception):
            raise OpenFailure(f"{type(result).__name__}: {result}")
        if not result.isOpened():
            result.release()
            # FFMPEG gives up by itself at open_timeout_s: that is a timeout too.
            timed_out = time.monotonic() - t0 >= 0.9 * timeout_s
            raise OpenFailure(self.diagnose(timed_out=timed_out), timed_out=timed_out)
        try:
            self._configure(result)
        except Exception:
            result.release()
            raise
        return result

    def diagnose(self, *, timed_out: bool) -> str:
        """Why the capture did not open, as precisely as can be found out, and what to do."""
        t = self.target
        timeout_s = self._params.open_timeout_s
        if t.is_url:
            return diagnose_url(str(t.source), timed_out=timed_out, open_timeout_s=timeout_s)
        return diagnose_device(t.source, timed_out=timed_out, open_timeout_s=timeout_s)

    def _new_capture(self) -> Any:
        cv2 = self._cv2
        t = self.target
        p = self._params
        if t.is_url and t.api == cv2.CAP_FFMPEG:
            # FFMPEG honours these: a dead host fails the open, and a stalled stream fails a
            # read, after the given time instead of blocking for minutes.
            timeouts = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                round(p.open_timeout_s * 1000),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                round(p.stall_timeout_s * 1000),
            ]
            if str(t.source).lower().startswith("rtsp"):
                # OpenCV passes FFMPEG options only through this variable, read at each open
                with _FFMPEG_OPTIONS_LOCK:
                    before = os.environ.get(_FFMPEG_OPTIONS)
                    os.environ[_FFMPEG_OPTIONS] = ffmpeg_options(before, p.rtsp_transport)
                    try:
                        return cv2.VideoCapture(t.source, cv2.CAP_FFMPEG, timeouts)
                    finally:
                        if before is None:
                            del os.environ[_FFMPEG_OPTIONS]
                        else:
                            os.environ[_FFMPEG_OPTIONS] = before
            return cv2.VideoCapture(t.source, cv2.CAP_FFMPEG, timeouts)
        return cv2.VideoCapture(t.source, t.api)

    def _configure(self, cap: Any) -> None:
        cv2 = self._cv2
        p = self._params
        if self.target.is_url:
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

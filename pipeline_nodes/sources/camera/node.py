"""The ``camera`` source node: a live OpenCV capture (a device, or an RTSP / HTTP MJPEG URL).

The node opens the capture (:mod:`.capture`, bounded by ``open_timeout_s``), hands it to a
:class:`~.grabber.Grabber` thread that keeps only the newest frame and reconnects, and sends
each newer frame from ``process()``; a capture that does not open fails ``open()`` with the
reason (:mod:`.diagnosis`).
"""

from __future__ import annotations

import threading
import time
from typing import Any, ClassVar

import numpy as np

from pipeline import Frame, Node, NodeParams, Output
from pipeline_nodes.dependencies import import_cv2
from pipeline_nodes.sources.camera.capture import POLL_S, CaptureOpener, OpenFailure, resolve_target
from pipeline_nodes.sources.camera.grabber import Grabber
from pipeline_nodes.sources.camera.params import CameraParams

__all__ = ["CameraSource"]

_CLOSE_JOIN_MAX_S = 5.0


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

    Params: ClassVar[type[NodeParams]] = CameraParams

    frames = Output(
        Frame,
        description="(H, W, 3) uint8 BGR live frames; meta: device, frame_number, skipped, "
        "connection.",
    )

    def open(self) -> None:
        self._cv2 = import_cv2("camera")
        p = self.params
        self._target = resolve_target(self._cv2, p)
        self._connect = CaptureOpener(self._cv2, self._target, p, self.id)
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
        except OpenFailure as exc:
            error = TimeoutError if exc.timed_out else ConnectionError
            raise error(f"{self._where}: cannot open {self._target.label}: {exc}") from None
        self._grabber = Grabber(
            cap,
            self._connect,
            label=self._target.label,
            backoff_s=p.reconnect_backoff_s,
            backoff_max_s=p.reconnect_backoff_max_s,
            stall_timeout_s=p.stall_timeout_s,
            log=self.log,
            name=self.id,
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
            self._last, POLL_S, lambda shape: self.frames.allocate(shape, np.uint8)
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

    # the grabber ---------------------------------------------------------------------------

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

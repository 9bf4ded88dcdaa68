"""The camera's grabber thread: reads frames as fast as they come, keeps only the newest.

The grabber owns the capture: it reads frames into its own two buffers and keeps only the
newest, so the driver's and the network's queues never fill and the node never serves a stale
frame; :meth:`Grabber.take_newer` copies the newest frame into a slot the node allocates (one
copy, which also frees the grabber to decode the next frame at once). The grabber also
reconnects: a read that fails (the stream ended, or no frame came for ``stall_timeout_s``:
FFMPEG's read timeout is set to it) drops the capture and reopens it with exponential
backoff. Counters it keeps (``disconnects``, ``stalls``, ``reconnects``,
``reconnect_failures``) are taken by the node, on the node's own thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from pipeline_nodes.sources.camera.capture import OpenFailure

__all__ = ["Grabber"]


class Grabber:
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
        log: logging.Logger | logging.LoggerAdapter[logging.Logger],
        name: str,
    ) -> None:
        self._cap: Any = cap
        self._connect = connect
        self._label = label
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
        self._stall_timeout_s = stall_timeout_s
        self._log = log
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
            target=self._run, name=f"camera-grabber-{name}", daemon=True
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
                except OpenFailure as exc:
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

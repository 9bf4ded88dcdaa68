"""Pacing of sources, applied by the runtime the same way for every source.

A graph node of a source may say ``pace: realtime`` (the default) or ``pace: fast``, and
``max_fps: N``:

- ``realtime``: one ``process()`` call per frame period of the source's own rate
  (``Node.frame_rate()``: a video file's frame rate, the ``fps`` of the synthetic or image
  folder source). A source without a rate (a camera, which its device paces) is not held.
- ``fast``: as fast as the consumers take the frames (with ``when_full: block`` edges, the
  slowest consumer's rate).
- ``max_fps``: never more than N calls per second, whichever the pace.

``FramePacer`` keeps the schedule on the monotonic clock from the call number (no drift) and
restarts it after falling more than a second behind instead of sending a burst.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

__all__ = ["FramePacer", "Pace", "pace_rate"]

Pace = Literal["realtime", "fast"]

MAX_LAG_S = 1.0


def pace_rate(pace: str, frame_rate: float | None, max_fps: float | None) -> float | None:
    """Calls per second a source is held to, or None for unpaced.

    Args:
        pace: ``realtime`` or ``fast``.
        frame_rate: the source's own rate (``Node.frame_rate()``), None when it has none.
        max_fps: the graph's cap, None when there is none.
    """
    rate = frame_rate if pace == "realtime" and frame_rate and frame_rate > 0 else None
    if max_fps:
        rate = min(rate, max_fps) if rate else max_fps
    return rate


class FramePacer:
    """Hold a stream to ``fps`` on a monotonic clock: tick ``n`` is due at ``t0 + n / fps``.

    The schedule is computed from the tick number, not from the previous frame, so it does not
    drift. When the caller falls behind by more than ``max_lag_s`` (a slow consumer blocked the
    send), the clock restarts at the late tick rather than sending a burst to catch up.

    Args:
        fps: ticks per second (> 0).
        max_lag_s: lateness after which the schedule restarts.
        clock: a monotonic clock in seconds (injectable for tests).
        sleep: the sleep function (injectable for tests).
    """

    def __init__(
        self,
        fps: float,
        *,
        max_lag_s: float = MAX_LAG_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps!r}")
        self.period_s = 1.0 / fps
        self.max_lag_s = max_lag_s
        self._clock = clock
        self._sleep = sleep
        self._t0: float | None = None
        self._tick0 = 0
        self.restarts = 0

    def due(self, tick: int) -> float:
        """When tick ``tick`` (counted from the first call's tick) is due, on the clock."""
        now = self._clock()
        if self._t0 is None:
            self._t0, self._tick0 = now, tick
            return now
        due = self._t0 + (tick - self._tick0) * self.period_s
        if now - due > self.max_lag_s:
            self._t0, self._tick0 = now, tick
            self.restarts += 1
            return now
        return due

    def wait(self, tick: int) -> None:
        """Return when tick ``tick`` is due."""
        delay = self.due(tick) - self._clock()
        if delay > 0:
            self._sleep(delay)

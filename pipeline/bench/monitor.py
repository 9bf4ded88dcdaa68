"""The bench's run monitor: warm-up, reset, measured window, stop, and the progress line.

``BenchMonitor`` is called by the supervisor twice a second. It runs the warm-up until the
sinks have seen ``warmup`` frames and at least ``min_warmup_s`` have passed, then answers
``"reset"`` so every node starts its statistics afresh; it answers ``"stop"`` when the
measured window has lasted ``duration_s`` or the sinks have seen ``frames`` frames (checked
twice a second, so a run measures at least that many), and the graph drains. A graph that
ends by itself (a finite file) ends the bench too.

Statistics arrive asynchronously, so just after a reset some nodes still show their old
figures. A node's figures count as reset once its ``elapsed_s`` or ``calls`` went down from
what they were when the reset was asked; the warm-up lasts at least 2 s so that a fresh
window is always shorter than the old one. That first fresh report is also each node's CPU
baseline: ``cpu_s`` is the process's CPU since it started (the model load included), so CPU %
is the CPU spent from there to the end over the time in between; the window closes only once
every running node has reported again at least ``0.4 s`` after its baseline.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Literal

from pipeline.bench.prepare import Pace
from pipeline.runtime.stats import NodeStats

__all__ = ["DEFAULT_DURATION_S", "BenchMonitor", "BenchSettings", "Progress"]

DEFAULT_DURATION_S = 10.0
_ENDED_STATES = ("closed", "failed")
_MAX_FRESH_WAIT_S = 3.0
_MIN_CPU_WINDOW_S = 0.4


@dataclasses.dataclass(frozen=True)
class BenchSettings:
    """How to run a bench.

    Attributes:
        duration_s: measure this long after the warm-up (default 10 s when neither this
            nor ``frames`` is given).
        frames: or measure until the sinks have seen this many frames.
        warmup: frames at the sinks before measuring (0: measure from the start).
        pace: ``fast`` or ``realtime`` for the sources (applied when preparing the graph;
            recorded here).
        cpus: pin the graph to this many cores.
        min_warmup_s: the warm-up lasts at least this long.
        warmup_timeout_s: give up when the warm-up has not ended after this long.
        grace_s: after the stop, how long the graph may drain before it is forced.
        log_level: of the node processes.
    """

    duration_s: float | None = None
    frames: int | None = None
    warmup: int = 30
    pace: Pace | None = None
    cpus: int | None = None
    min_warmup_s: float = 2.0
    warmup_timeout_s: float = 120.0
    grace_s: float = 10.0
    log_level: str = "WARNING"

    def window(self) -> tuple[float | None, int | None]:
        """``(duration_s, frames)`` with the default duration filled in."""
        if self.duration_s is None and self.frames is None:
            return DEFAULT_DURATION_S, None
        return self.duration_s, self.frames


class Progress:
    """A one-line progress display on a stream (stderr).

    On a terminal the line is redrawn in place with ``\\r``; elsewhere (a log, CI) a line is
    printed when the phase changes and then every ``every_s`` seconds.
    """

    def __init__(
        self,
        stream: IO[str] | None,
        *,
        tty: bool | None = None,
        every_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.tty = bool(stream is not None and stream.isatty()) if tty is None else tty
        self.every_s = every_s
        self.clock = clock
        self._width = 0
        self._phase: str | None = None
        self._last = -math.inf

    def update(self, phase: str, text: str) -> None:
        """Show ``text``; ``phase`` names the stage (a change always prints a line)."""
        if self.stream is None:
            return
        now = self.clock()
        if self.tty:
            self.stream.write("\r" + text.ljust(self._width))
            self._width = len(text)
        elif phase != self._phase or now - self._last >= self.every_s:
            self.stream.write(text + "\n")
            self._last = now
        else:
            return
        self._phase = phase
        self.stream.flush()

    def finish(self) -> None:
        """End the redrawn line (on a terminal), so what follows starts on a fresh line."""
        if self.stream is not None and self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0


def _bar(fraction: float, width: int = 24) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


class BenchMonitor:
    """The bench's ``RunMonitor``: warm-up, reset, measured window, stop, progress.

    Args:
        sinks: ids of the graph's sinks (their ``calls`` are the frames that got through).
        settings: warm-up and window.
        progress: where to show progress, if anywhere.
        cpu_sampler: reads the machine's ``(busy, total)`` CPU time; sampled when the window
            starts and when it stops (``cpu_start``, ``cpu_end``).
    """

    def __init__(
        self,
        sinks: Sequence[str],
        settings: BenchSettings,
        progress: Progress | None = None,
        cpu_sampler: Callable[[], tuple[int, int] | None] | None = None,
    ) -> None:
        self.sinks = list(sinks)
        self.settings = settings
        self.duration_s, self.frames = settings.window()
        self.progress = progress
        self.phase: Literal["warmup", "measuring", "stopping"] = (
            "warmup" if settings.warmup > 0 else "measuring"
        )
        self.reset_at_s: float | None = None
        self.stop_reason: str | None = None
        self.baselines: dict[str, tuple[float, float]] = {}
        self._before_reset: dict[str, tuple[float, int]] = {}
        self._fresh: set[str] = set()
        self._sampler = cpu_sampler
        self.cpu_start: tuple[int, int] | None = None
        self.cpu_end: tuple[int, int] | None = None

    def _sample(self) -> tuple[int, int] | None:
        return self._sampler() if self._sampler is not None else None

    def _sink_frames(self, stats: Mapping[str, NodeStats], fresh_only: bool) -> int:
        if not self.sinks:
            return 0
        counts = []
        for sink in self.sinks:
            s = stats.get(sink)
            ok = s is not None and (sink in self._fresh or not fresh_only)
            counts.append(s.calls if ok and s is not None else 0)
        return min(counts)

    def _sink_fps(self, stats: Mapping[str, NodeStats]) -> float:
        rates = [
            stats[s].calls / stats[s].elapsed_s
            for s in self.sinks
            if s in self._fresh and stats[s].elapsed_s > 0
        ]
        return min(rates) if rates and len(rates) == len(self.sinks) else 0.0

    def _mark_fresh(self, stats: Mapping[str, NodeStats]) -> None:
        for node, s in stats.items():
            if node in self._fresh:
                continue
            before = self._before_reset.get(node)
            elapsed, calls = s.elapsed_s, s.calls
            if (
                self.reset_at_s is None
                or before is None
                or elapsed < before[0]
                or calls < before[1]
            ):
                self._fresh.add(node)
                self.baselines[node] = (s.cpu_s, elapsed)

    def _show(self, text: str) -> None:
        if self.progress is not None:
            self.progress.update(self.phase, text)

    def on_stats(
        self, stats: Mapping[str, NodeStats], elapsed_s: float
    ) -> Literal["reset", "stop"] | None:
        """Called by the supervisor about twice a second; see the module docstring."""
        s = self.settings
        if self.phase == "warmup":
            seen = self._sink_frames(stats, fresh_only=False)
            count = f"{min(seen, s.warmup)}/{s.warmup}"
            self._show(f"warm-up    {count} frames at the sinks  {elapsed_s:.1f} s")
            if seen >= s.warmup and elapsed_s >= s.min_warmup_s:
                self.phase = "measuring"
                self.reset_at_s = elapsed_s
                self.cpu_start = self._sample()
                self._before_reset = {n: (v.elapsed_s, v.calls) for n, v in stats.items()}
                return "reset"
            if elapsed_s >= s.warmup_timeout_s:
                return self._stop("warmup_timeout")
            return None
        self._mark_fresh(stats)
        if self.phase == "stopping":
            return None
        if self.cpu_start is None and self.reset_at_s is None:
            self.cpu_start = self._sample()  # no warm-up: the window starts now
        window = elapsed_s - (self.reset_at_s or 0.0)
        frames = self._sink_frames(stats, fresh_only=True)
        fps = self._sink_fps(stats)
        if self.frames is not None:
            done = frames / self.frames if self.frames else 1.0
            where = f"{frames}/{self.frames} frames"
        else:
            duration = self.duration_s or 0.0
            done = window / duration if duration else 1.0
            where = f"{min(window, duration):.1f}/{duration:.1f} s"
        self._show(f"measuring  {_bar(done)} {min(done, 1.0):4.0%}  {where}  {fps:.1f} frames/s")
        # Stop only once every node has reported twice since the reset (the first report is
        # its CPU baseline; CPU % needs some time after it), unless one is stuck.
        pending = [
            n
            for n, v in stats.items()
            if v.state not in _ENDED_STATES
            and (n not in self._fresh or v.elapsed_s - self.baselines[n][1] < _MIN_CPU_WINDOW_S)
        ]
        if pending and window < _MAX_FRESH_WAIT_S:
            return None
        if self.frames is not None and frames >= self.frames:
            return self._stop("frames")
        if self.frames is None and self.duration_s is not None and window >= self.duration_s:
            return self._stop("duration")
        return None

    def _stop(self, reason: str) -> Literal["stop"]:
        self.stop_reason = reason
        self.phase = "stopping"
        self.cpu_end = self._sample()
        self._show("stopping   the sources end their streams and the graph drains")
        return "stop"

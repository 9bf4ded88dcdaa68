"""Per-node statistics: counters and latency histograms, cheap enough for every message.

Timings go into log-scale histograms (48 buckets per decade from 1 us to 1000 s, so a
percentile is within 5 % of the true value) instead of keeping samples: recording is one
``log10`` and an increment, and a histogram of a whole run is a few KB. ``NodeStats`` is the
frozen record that ``Node.statistics()``, ``pipeline run --stats-json`` and the bench read.
"""

from __future__ import annotations

import dataclasses
import math
import resource
import sys
from collections.abc import Mapping
from typing import Any

__all__ = ["Histogram", "InputStats", "NodeStats", "OutputStats", "StatsCollector"]

_RSS_DIVISOR = 1024 * 1024 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes vs KiB
_PER_DECADE = 48
_MIN_EXP = -6  # 1 us
_BUCKETS = _PER_DECADE * 9  # up to 1000 s


class Histogram:
    """A log-scale histogram of durations in seconds."""

    __slots__ = ("count", "counts", "max", "total")

    def __init__(self) -> None:
        self.counts = [0] * (_BUCKETS + 1)
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        if seconds <= 1e-6:
            i = 0
        else:
            i = int((math.log10(seconds) - _MIN_EXP) * _PER_DECADE)
            if i > _BUCKETS:
                i = _BUCKETS
        self.counts[i] += 1
        self.count += 1
        self.total += seconds
        if seconds > self.max:
            self.max = seconds

    def percentile(self, q: float) -> float:
        """The q-th percentile (0..100) in seconds; 0.0 when empty."""
        if not self.count:
            return 0.0
        rank = q / 100 * self.count
        seen = 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= rank and c:
                # geometric middle of the bucket
                return float(min(10 ** (_MIN_EXP + (i + 0.5) / _PER_DECADE), self.max))
        return self.max

    def merge(self, other: Histogram) -> None:
        for i, c in enumerate(other.counts):
            self.counts[i] += c
        self.count += other.count
        self.total += other.total
        self.max = max(self.max, other.max)

    def to_dict(self) -> dict[str, Any]:
        nz = {str(i): c for i, c in enumerate(self.counts) if c}
        return {"n": self.count, "sum": self.total, "max": self.max, "b": nz}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Histogram:
        h = cls()
        h.count = int(d["n"])
        h.total = float(d["sum"])
        h.max = float(d["max"])
        for i, c in d["b"].items():
            h.counts[int(i)] = int(c)
        return h

    def summary_ms(self) -> dict[str, float]:
        return {
            "p50_ms": round(self.percentile(50) * 1e3, 4),
            "p95_ms": round(self.percentile(95) * 1e3, 4),
            "p99_ms": round(self.percentile(99) * 1e3, 4),
            "mean_ms": round(self.total / self.count * 1e3, 4) if self.count else 0.0,
            "max_ms": round(self.max * 1e3, 4),
        }


@dataclasses.dataclass(frozen=True)
class InputStats:
    """One input port: messages received, dropped (by the edge's policy or unmatched in a
    join), and the most messages waiting at once."""

    received: int
    dropped: int
    queue_peak: int


@dataclasses.dataclass(frozen=True)
class OutputStats:
    """One output port: messages sent, messages dropped by its edges' policies, and the
    seconds the node was held back waiting for a consumer (back-pressure or slots)."""

    sent: int
    dropped: int
    blocked_s: float = 0.0


@dataclasses.dataclass(frozen=True)
class NodeStats:
    """A node's statistics at one moment.

    Times in milliseconds. ``latency`` is from the source's capture (``t_capture_ns``) to the
    end of this node's ``process`` for that message.
    """

    node_id: str
    state: str
    inputs: Mapping[str, InputStats]
    outputs: Mapping[str, OutputStats]
    calls: int
    process_ms: Mapping[str, float]
    latency_ms: Mapping[str, float]
    busy_s: float
    elapsed_s: float
    counters: Mapping[str, int]
    cpu_s: float = 0.0
    max_rss_mb: float = 0.0
    pss_mb: float = 0.0  # proportional set size while the graph ran (the supervisor's sample)
    start_s: float = 0.0  # launch to Hello: process start, imports, building the node
    open_s: float = 0.0  # Hello to Ready: the node's open() (a model node loads its model)
    restarts: int = 0  # times its restart: policy started it again (the supervisor's count)
    process_hist: Histogram | None = dataclasses.field(default=None, repr=False, compare=False)
    latency_hist: Histogram | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def received(self) -> int:
        return sum(i.received for i in self.inputs.values())

    @property
    def sent(self) -> int:
        return sum(o.sent for o in self.outputs.values())

    @property
    def dropped(self) -> int:
        return sum(i.dropped for i in self.inputs.values())

    @property
    def fps(self) -> float:
        return self.calls / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain values (``--stats-json``, ``graph_statistics``), without the histograms."""
        d = dataclasses.asdict(dataclasses.replace(self, process_hist=None, latency_hist=None))
        del d["process_hist"], d["latency_hist"]
        d["fps"] = round(self.fps, 3)
        return d

    def to_wire(self) -> dict[str, Any]:
        """``to_dict`` plus the raw histograms (so a bench can merge or re-cut them)."""
        d = self.to_dict()
        if self.process_hist is not None:
            d["process_hist"] = self.process_hist.to_dict()
        if self.latency_hist is not None:
            d["latency_hist"] = self.latency_hist.to_dict()
        return d

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> NodeStats:
        """Rebuild from ``to_wire()`` or ``to_dict()`` output."""
        process_hist = d.get("process_hist")
        latency_hist = d.get("latency_hist")
        return cls(
            node_id=d["node_id"],
            state=d["state"],
            inputs={k: InputStats(**v) for k, v in d["inputs"].items()},
            outputs={k: OutputStats(**v) for k, v in d["outputs"].items()},
            calls=d["calls"],
            process_ms=d["process_ms"],
            latency_ms=d["latency_ms"],
            busy_s=d["busy_s"],
            elapsed_s=d["elapsed_s"],
            counters=d["counters"],
            cpu_s=d.get("cpu_s", 0.0),
            max_rss_mb=d.get("max_rss_mb", 0.0),
            pss_mb=d.get("pss_mb", 0.0),
            start_s=d.get("start_s", 0.0),
            open_s=d.get("open_s", 0.0),
            restarts=int(d.get("restarts", 0)),
            process_hist=Histogram.from_dict(process_hist) if process_hist else None,
            latency_hist=Histogram.from_dict(latency_hist) if latency_hist else None,
        )


class StatsCollector:
    """Mutable counters kept by the worker; ``snapshot()`` gives a ``NodeStats``."""

    def __init__(self, node_id: str, inputs: list[str], outputs: list[str]) -> None:
        self.node_id = node_id
        self.state = "created"
        self.received = dict.fromkeys(inputs, 0)
        self.dropped = dict.fromkeys(inputs, 0)
        self.queue_peak = dict.fromkeys(inputs, 0)
        self.out_sent = dict.fromkeys(outputs, 0)
        self.out_dropped = dict.fromkeys(outputs, 0)
        self.out_blocked: dict[str, float] = dict.fromkeys(outputs, 0.0)
        self.calls = 0
        self.process = Histogram()
        self.latency = Histogram()
        self.busy_s = 0.0
        self.t_start: float | None = None
        self.t_end: float | None = None
        self.counters: dict[str, int] = {}

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def reset(self, now: float) -> None:
        """Start afresh (the end of a warm-up): counts and timings from ``now`` on."""
        for table in (
            self.received,
            self.dropped,
            self.queue_peak,
            self.out_sent,
            self.out_dropped,
        ):
            for key in table:
                table[key] = 0
        self.out_blocked = dict.fromkeys(self.out_blocked, 0.0)
        self.calls = 0
        self.process = Histogram()
        self.latency = Histogram()
        self.busy_s = 0.0
        self.t_start = now
        self.counters.clear()

    def snapshot(self, now: float) -> NodeStats:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        start = self.t_start if self.t_start is not None else now
        end = self.t_end if self.t_end is not None else now
        return NodeStats(
            node_id=self.node_id,
            state=self.state,
            inputs={
                k: InputStats(self.received[k], self.dropped[k], self.queue_peak[k])
                for k in self.received
            },
            outputs={
                k: OutputStats(self.out_sent[k], self.out_dropped[k], round(self.out_blocked[k], 6))
                for k in self.out_sent
            },
            calls=self.calls,
            process_ms=self.process.summary_ms(),
            latency_ms=self.latency.summary_ms(),
            busy_s=round(self.busy_s, 6),
            elapsed_s=round(max(end - start, 0.0), 6),
            counters=dict(self.counters),
            cpu_s=round(usage.ru_utime + usage.ru_stime, 4),
            max_rss_mb=round(usage.ru_maxrss / _RSS_DIVISOR, 2),
        )

    def to_wire(self, now: float) -> dict[str, Any]:
        """A snapshot plus the raw histograms, as a worker reports it."""
        d = self.snapshot(now).to_dict()
        d["process_hist"] = self.process.to_dict()
        d["latency_hist"] = self.latency.to_dict()
        return d

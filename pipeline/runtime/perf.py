"""What a run cost to start and to keep in memory, measured by the supervisor.

- Start-up, per node: ``start_s`` from the launch to the node's ``Hello`` (a fresh interpreter
  or a fork, the imports, building the node and binding its inputs) and ``open_s`` from
  ``Hello`` to ``Ready`` (the node's ``open()``: a model node's model loading is this part).
- Memory: the proportional set size (PSS) of every node process and of the supervisor (the
  fork server's template has exited by then), read from ``/proc/PID/smaps_rollup`` twice a
  second while the graph runs. PSS divides each shared page among the processes that map
  it, so the sum is the memory the graph really takes (peak RSS counts a shared library
  once per process).
  Reported: each process's PSS at the moment the total was highest, and that total.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from typing import Any, Protocol

from pipeline.runtime.stats import NodeStats

__all__ = ["RunPerf", "read_pss_mb"]

SAMPLE_INTERVAL_S = 0.5


def read_pss_mb(pid: int) -> float | None:
    """The proportional set size of process ``pid`` in MB (None where unknown)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class _Watched(Protocol):
    @property
    def process(self) -> Any: ...

    exited: bool


class RunPerf:
    """Start-up marks and PSS samples of one run."""

    def __init__(self) -> None:
        self.t_launch: dict[str, float] = {}
        self.t_hello: dict[str, float] = {}
        self.t_ready: dict[str, float] = {}
        self.procs: Mapping[str, _Watched] = {}
        self.template_pid = 0  # a fork server kept alive for the run (restart: policies)
        self.forked = False  # nodes came from the fork server (its template is gone by now)
        self.next_sample = 0.0
        self.peak_total = 0.0
        self.peak: dict[str, float] = {}

    def launched(self, node_id: str) -> None:
        self.t_launch[node_id] = time.monotonic()

    def mark(self, node_id: str, event: str) -> None:
        (self.t_hello if event == "hello" else self.t_ready)[node_id] = time.monotonic()

    def watch(self, procs: Mapping[str, _Watched], forked: bool) -> None:
        self.procs = procs
        self.forked = forked

    def sample(self, now: float) -> None:
        """Read every process's PSS (at most twice a second); keep the highest total."""
        if now < self.next_sample:
            return
        self.next_sample = now + SAMPLE_INTERVAL_S
        rows: dict[str, float] = {}
        for node_id, proc in self.procs.items():
            if proc.exited:
                return  # a graph that is ending: not the running figure
            mb = read_pss_mb(proc.process.pid)
            if mb is None:
                return
            rows[node_id] = mb
        rows["(supervisor)"] = read_pss_mb(os.getpid()) or 0.0
        if self.template_pid:  # kept for restarts
            rows["(fork server)"] = read_pss_mb(self.template_pid) or 0.0
        total = sum(rows.values())
        if total > self.peak_total:
            self.peak_total = total
            self.peak = rows

    def annotate(self, stats: Mapping[str, NodeStats]) -> dict[str, NodeStats]:
        """The nodes' statistics with their start-up times and PSS filled in."""
        out = {}
        for node_id, s in stats.items():
            launch = self.t_launch.get(node_id)
            hello = self.t_hello.get(node_id)
            ready = self.t_ready.get(node_id)
            out[node_id] = dataclasses.replace(
                s,
                start_s=round(hello - launch, 4) if hello and launch else 0.0,
                open_s=round(ready - hello, 4) if ready and hello else 0.0,
                pss_mb=round(self.peak.get(node_id, 0.0), 2),
            )
        return out

    def memory(self) -> dict[str, Any]:
        """``{"launcher", "pss_mb": {process: MB}, "total_pss_mb"}`` (empty PSS: too short)."""
        return {
            "launcher": "fork_server" if self.forked else "spawn",
            "pss_mb": {k: round(v, 2) for k, v in self.peak.items()},
            "total_pss_mb": round(self.peak_total, 2),
        }

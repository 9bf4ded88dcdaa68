"""One bench: run a prepared graph under the bench monitor and turn its statistics into a
result document (graph identity, settings, per-node and end-to-end figures, bottleneck,
machine, conditions at the start and end, and how busy the cores were over the window).

``--cpus N`` pins the bench process to N of its allowed cores before the graph starts; node
processes inherit the mask, so a big machine can stand in for a small board. The mask is
restored afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from pipeline import __version__
from pipeline.bench.figures import summarise
from pipeline.bench.machine import conditions, cpu_times, machine_info
from pipeline.bench.monitor import BenchMonitor, BenchSettings, Progress
from pipeline.bench.prepare import PreparedGraph, topology
from pipeline.runtime.runner import run_graph

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "BenchError",
    "BenchMonitor",
    "BenchRun",
    "BenchSettings",
    "Progress",
    "check_cpus",
    "pinned_cpus",
    "run_prepared",
    "write_json",
]

SCHEMA = "pipeline-bench"
SCHEMA_VERSION = 1


class BenchError(Exception):
    """A bench cannot start as asked (e.g. ``--cpus`` beyond the cores available)."""


def check_cpus(n: int | None) -> list[int] | None:
    """The cores ``--cpus n`` would pin to (the first n this process may use).

    Raises:
        BenchError: n below 1, more than are available, or no affinity on this system.
    """
    if n is None:
        return None
    if not hasattr(os, "sched_setaffinity"):
        raise BenchError(
            "--cpus needs os.sched_setaffinity, which this system lacks (Linux has it)"
        )
    available = sorted(os.sched_getaffinity(0))
    if n < 1 or n > len(available):
        raise BenchError(
            f"--cpus {n}: this process may use {len(available)} "
            f"core{'s' if len(available) != 1 else ''} ({', '.join(map(str, available))}); "
            f"ask for 1 to {len(available)}"
        )
    return available[:n]


@contextlib.contextmanager
def pinned_cpus(n: int | None) -> Iterator[list[int] | None]:
    """Pin this process (and so every process it starts) to ``n`` cores, then restore."""
    chosen = check_cpus(n)
    if chosen is None:
        yield None
        return
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, chosen)
    try:
        yield chosen
    finally:
        os.sched_setaffinity(0, previous)


@dataclasses.dataclass
class BenchRun:
    """A finished bench: the result document, and how the run ended.

    Attributes:
        result: the JSON-ready result (see ``benchmarks/README.md`` for its fields).
        exit_code: 0 when the graph ran and drained cleanly.
        error: the failure, if any.
    """

    result: dict[str, Any]
    exit_code: int
    error: str | None


def _now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def run_prepared(
    prepared: PreparedGraph,
    settings: BenchSettings,
    *,
    progress: Progress | None = None,
    out: IO[str] | None = None,
    root: str | Path = "/",
) -> BenchRun:
    """Run one bench of a prepared graph.

    Args:
        prepared: from ``prepare_graph`` (``--set`` and ``--pace`` already applied).
        settings: window, warm-up, pinning.
        progress: where to show progress.
        out: where the runner prints node errors (default stderr).
        root: the folder system files are read under, for the machine description.

    Returns:
        The result and exit code; a failed run still carries what was measured.

    Raises:
        BenchError: ``settings.cpus`` cannot be honoured.
    """
    pinned = check_cpus(settings.cpus)
    topo = topology(prepared.graph)
    machine = machine_info(root)
    start_conditions = machine.pop("conditions")
    cores = pinned or (
        sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    )
    run_start = cpu_times(root, cores)
    monitor = BenchMonitor(
        prepared.graph.sinks(), settings, progress, cpu_sampler=lambda: cpu_times(root, cores)
    )
    started_at = _now_iso()
    t0 = time.monotonic()
    with pinned_cpus(settings.cpus) as cpu_ids:
        outcome = run_graph(
            prepared.graph,
            log_level=settings.log_level,
            live=False,
            out=out or sys.stderr,
            grace_s=settings.grace_s,
            monitor=monitor,
        )
    wall_s = time.monotonic() - t0
    if progress is not None:
        progress.finish()
    error = str(outcome.error) if outcome.error else None
    code = outcome.exit_code
    reason = monitor.stop_reason
    if reason == "warmup_timeout":
        error = error or (
            f"the warm-up did not end in {settings.warmup_timeout_s:.0f} s: the sinks saw "
            f"fewer than {settings.warmup} frames"
        )
        code = code or 1
    elif reason is None:
        reason = "failed" if code else ("interrupted" if outcome.stopped else "end_of_stream")
    summary = summarise(outcome.stats, topo, monitor.baselines)
    usage = _cpu_usage(
        monitor.cpu_start or run_start,
        monitor.cpu_end or cpu_times(root, cores),
        len(cores) if cores else machine["cpu"].get("cores"),
        summary["nodes"],
    )
    duration_s, frames = settings.window()
    warnings = provider_warnings(prepared, summary["nodes"])
    result = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "kind": "run",
        "pipeline_version": __version__,
        "started_at": started_at,
        "graph": {
            "name": prepared.name,
            "file": prepared.file,
            "hash": prepared.hash,
            "base_hash": prepared.base_hash,
            "topology": topo,
        },
        "settings": {
            "duration_s": duration_s,
            "frames": frames,
            "warmup": settings.warmup,
            "min_warmup_s": settings.min_warmup_s,
            "pace": settings.pace,
            "cpus": settings.cpus,
            "cpu_ids": cpu_ids,
            "sets": prepared.sets,
        },
        "run": {
            "exit_code": code,
            "error": error,
            "stop_reason": reason,
            "warmup_complete": settings.warmup == 0 or monitor.reset_at_s is not None,
            "wall_s": round(wall_s, 3),
            "cpu": usage,
        },
        **summary,
        "machine": machine,
        "conditions": {"start": start_conditions, "end": conditions(root)},
        "warnings": warnings,
    }
    return BenchRun(result, code, error)


_ACCELERATED = ("tensorrt", "cuda", "rocm", "openvino", "coreml", "dml", "migraphx", "qnn")


def provider_warnings(prepared: PreparedGraph, nodes: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """A line per model node that asked for an accelerator (``providers``) but ran without one.

    ONNX Runtime falls back to the CPU when a requested provider is missing from its build
    (a CPU wheel on a Jetson) or fails to start; the figures are then the CPU's.
    """
    warnings = []
    for node_id, figures in nodes.items():
        used = figures.get("execution_providers")
        params = prepared.graph.params.get(node_id)
        requested = getattr(params, "providers", None)
        if not used or not requested:
            continue
        asked = [str(p) for p in requested if any(a in str(p).lower() for a in _ACCELERATED)]
        ran = [p for p in used if any(a in p.lower() for a in _ACCELERATED)]
        if asked and not ran:
            warnings.append(
                f"node {node_id!r} asked for {', '.join(asked)} but ran on "
                f"{', '.join(used)}: this onnxruntime build lacks them or they failed to start, "
                "so these are CPU figures (benchmarks/README.md: a GPU build on a Jetson)"
            )
    return warnings


def _cpu_usage(
    start: tuple[int, int] | None,
    end: tuple[int, int] | None,
    cores: int | None,
    nodes: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any] | None:
    """How busy the bench's cores were over the window, and how much of that was the graph."""
    if start is None or end is None or not cores or end[1] <= start[1]:
        return None
    busy = 100 * (end[0] - start[0]) / (end[1] - start[1])
    graph = sum(float(n["cpu_pct"]) for n in nodes.values() if n.get("cpu_pct") is not None)
    return {"cores": cores, "busy_pct": round(busy, 1), "graph_pct": round(graph / cores, 1)}


def write_json(document: Mapping[str, Any], path: str | Path) -> None:
    """Write a result or sweep document as indented JSON, creating the folder."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")

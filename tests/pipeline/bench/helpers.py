"""Shared by the bench tests: the fake system folders, a tiny graph, stats and results."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from pipeline.runtime.stats import NodeStats

FIXTURES = Path(__file__).parent / "fixtures"
PROBES = "tests.pipeline.bench.probe_nodes"

SYNTHETIC = """\
graph: tiny
nodes:
  - id: camera
    node: synthetic
    params: {width: 64, height: 48, fps: 0, frames: {frames}}
  - id: resize
    node: resize
    params: {width: 32, height: 24}
    inputs:
      frames: camera/frames
  - id: sink
    node: discard
    inputs:
      messages: resize/resized
"""


def stats(
    busy: float,
    *,
    elapsed: float = 10.0,
    calls: int = 1000,
    inputs: dict[str, tuple[int, int, int]] | None = None,
    sent: int | None = None,
    cpu_s: float = 0.0,
) -> NodeStats:
    """A node's statistics as workers report them: busy fraction, and per input port
    ``(received, dropped, queue_peak)``."""
    return NodeStats.from_wire(
        {
            "node_id": "x",
            "state": "closed",
            "inputs": {
                p: {"received": r, "dropped": d, "queue_peak": q}
                for p, (r, d, q) in (inputs or {}).items()
            },
            "outputs": {"out": {"sent": calls if sent is None else sent, "dropped": 0}},
            "calls": calls,
            "process_ms": {
                "p50_ms": 1.0,
                "p95_ms": 2.0,
                "p99_ms": 3.0,
                "mean_ms": 1.2,
                "max_ms": 4.0,
            },
            "latency_ms": {
                "p50_ms": 5.0,
                "p95_ms": 6.0,
                "p99_ms": 7.0,
                "mean_ms": 5.5,
                "max_ms": 8.0,
            },
            "busy_s": busy * elapsed,
            "elapsed_s": elapsed,
            "counters": {},
            "cpu_s": cpu_s,
            "max_rss_mb": 50.0,
        }
    )


def chain(*nodes: tuple[str, str], queue: int = 4, when_full: str = "block") -> dict[str, Any]:
    """A topology of nodes in a line: ``(id, type)`` pairs, first the source, last the sink."""
    topo: dict[str, Any] = {}
    for i, (node, kind) in enumerate(nodes):
        role = "source" if i == 0 else ("sink" if i == len(nodes) - 1 else "transform")
        inputs = {}
        if i:
            port = "messages" if role == "sink" else "frames"
            inputs[port] = {"from": nodes[i - 1][0], "queue": queue, "when_full": when_full}
        topo[node] = {"type": kind, "role": role, "inputs": inputs}
    return topo


_RESULT: dict[str, Any] = {
    "schema": "pipeline-bench",
    "schema_version": 1,
    "kind": "run",
    "started_at": "2026-01-01T00:00:00+00:00",
    "graph": {"name": "detect", "file": "detect.yaml", "hash": "sha256:aaaa", "topology": {}},
    "settings": {"duration_s": 10.0, "frames": None, "warmup": 30, "pace": None, "cpus": None},
    "run": {"exit_code": 0, "error": None, "stop_reason": "duration", "warmup_complete": True},
    "nodes": {
        "detector": {
            "fps": 10.0,
            "process_ms": {"p50_ms": 90.0, "p95_ms": 99.0},
            "busy_pct": 97.0,
            "cpu_pct": 99.0,
            "max_rss_mb": 120.0,
        }
    },
    "end_to_end": {
        "throughput_fps": 10.0,
        "latency_ms": {"p50_ms": 100.0, "p95_ms": 120.0, "p99_ms": 130.0},
        "drop_pct": 0.0,
    },
    "bottleneck": {
        "node": "detector",
        "reason": "detector: busy 97% of the time",
        "busy_pct": 97.0,
    },
    "machine": {"hostname": "host", "device": {"model": None}},
}


def make_result(
    *,
    model: str | None = None,
    hostname: str = "host",
    graph_hash: str = "sha256:aaaa",
    fps: float = 10.0,
) -> dict[str, Any]:
    """A bench result document with the given device and throughput (latency scales with 1/fps)."""
    result = copy.deepcopy(_RESULT)
    result["graph"]["hash"] = graph_hash
    result["machine"] = {"hostname": hostname, "device": {"model": model}}
    result["end_to_end"]["throughput_fps"] = fps
    scale = 10.0 / fps
    result["end_to_end"]["latency_ms"] = {
        "p50_ms": 100.0 * scale,
        "p95_ms": 120.0 * scale,
        "p99_ms": 130.0 * scale,
    }
    result["nodes"]["detector"]["fps"] = fps
    return result

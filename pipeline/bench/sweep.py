"""A bench over a grid of params: one run per point of the cartesian product of every ``--set``.

``--set node.param=v1,v2,...`` gives one axis; values are YAML, so
``detector.input_size=[320,240],[640,480]`` is two sizes and ``detector.backend=tflite,
onnxruntime`` two strings. A ``--set`` with one value is the same at every point. Every point
is prepared and validated before the first one runs, so a bad value stops the sweep before
anything starts. The result is one table (a row per point) and one JSON file holding every
point's full result; the machine is recorded once.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import json
from collections.abc import Callable, Sequence
from typing import IO, Any

from pipeline import __version__
from pipeline.bench.monitor import BenchSettings
from pipeline.bench.prepare import ParamSet, PreparedGraph, parse_set
from pipeline.bench.report import format_table, run_notes
from pipeline.bench.run import SCHEMA, SCHEMA_VERSION, BenchRun

__all__ = [
    "Axis",
    "grid_points",
    "parse_grid",
    "point_label",
    "render_sweep",
    "run_sweep",
    "sweep_document",
]


@dataclasses.dataclass(frozen=True)
class Axis:
    """One ``--set`` of a sweep: a param and the values it takes.

    Attributes:
        node: node id.
        path: param name (and nested keys).
        values: the values, in the order given.
    """

    node: str
    path: tuple[str, ...]
    values: tuple[Any, ...]

    @property
    def key(self) -> str:
        """``node.param`` as written."""
        return ".".join((self.node, *self.path))


def parse_grid(sets: Sequence[str]) -> list[Axis]:
    """The axes of a sweep from its ``--set`` arguments.

    Raises:
        ValueError: a malformed ``--set``, or the same param given twice.
    """
    axes: list[Axis] = []
    for text in sets:
        node, path, values = parse_set(text, many=True)
        axis = Axis(node, path, tuple(values))
        if any(a.key == axis.key for a in axes):
            raise ValueError(f"--set {axis.key} is given twice; list every value in one --set")
        axes.append(axis)
    return axes


def grid_points(axes: Sequence[Axis]) -> list[list[ParamSet]]:
    """Every combination of the axes' values (the last axis varies fastest)."""
    combos = itertools.product(*(axis.values for axis in axes))
    return [
        [ParamSet(axis.node, axis.path, value) for axis, value in zip(axes, combo)]
        for combo in combos
    ]


def point_label(point: Sequence[ParamSet]) -> str:
    """``detector.num_threads=2 detector.backend="tflite"``."""
    return " ".join(f"{p.key}={json.dumps(p.value)}" for p in point)


def run_sweep(
    prepared: Sequence[tuple[Sequence[ParamSet], PreparedGraph]],
    settings: BenchSettings,
    run: Callable[[PreparedGraph, BenchSettings], BenchRun],
    *,
    log: IO[str] | None = None,
) -> list[tuple[Sequence[ParamSet], BenchRun]]:
    """Run every prepared point in turn.

    Args:
        prepared: each point's sets and its prepared graph.
        settings: the bench settings for every point.
        run: runs one bench (``run_prepared`` with its progress and machine root bound).
        log: where to print which point starts.
    """
    done = []
    for i, (point, graph) in enumerate(prepared, 1):
        if log is not None:
            log.write(f"[{i}/{len(prepared)}] {point_label(point)}\n")
            log.flush()
        done.append((point, run(graph, settings)))
    return done


def sweep_document(
    axes: Sequence[Axis],
    runs: Sequence[tuple[Sequence[ParamSet], BenchRun]],
    settings: BenchSettings,
    started_at: str | None = None,
) -> dict[str, Any]:
    """The sweep's JSON: the grid, the common settings, the machine once, every point."""
    first = runs[0][1].result if runs else {}
    points = []
    for point, run in runs:
        result = {k: v for k, v in run.result.items() if k != "machine"}
        points.append({"set": {p.key: p.value for p in point}, "result": result})
    duration_s, frames = settings.window()
    graph = dict(first.get("graph", {}))
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "kind": "sweep",
        "pipeline_version": __version__,
        "started_at": started_at
        or datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "graph": {
            "name": graph.get("name"),
            "file": graph.get("file"),
            "base_hash": graph.get("base_hash"),
            "topology": graph.get("topology"),
        },
        "grid": {axis.key: list(axis.values) for axis in axes},
        "settings": {
            "duration_s": duration_s,
            "frames": frames,
            "warmup": settings.warmup,
            "pace": settings.pace,
            "cpus": settings.cpus,
        },
        "machine": first.get("machine"),
        "points": points,
    }


def render_sweep(document: dict[str, Any]) -> str:
    """One row per point: its values, throughput, latency, drops and bottleneck."""
    keys = list(document.get("grid", {}))
    rows = [[*keys, "frames/s", "lat p50 ms", "lat p95 ms", "drops %", "bottleneck", "busy"]]
    for point in document.get("points", []):
        r = point["result"]
        e2e = r.get("end_to_end", {})
        lat = e2e.get("latency_ms", {})
        neck = r.get("bottleneck", {})
        failed = r.get("run", {}).get("exit_code")
        rows.append(
            [
                *(json.dumps(point["set"].get(k)) for k in keys),
                "failed" if failed else f"{e2e.get('throughput_fps', 0.0):.1f}",
                f"{lat.get('p50_ms', 0.0):.2f}",
                f"{lat.get('p95_ms', 0.0):.2f}",
                f"{e2e.get('drop_pct', 0.0):.1f}",
                str(neck.get("node")),
                "-" if neck.get("busy_pct") is None else f"{neck['busy_pct']:.0f}%",
            ]
        )
    graph = document.get("graph", {})
    title = f"sweep of {graph.get('name')!r} ({graph.get('file')}): {len(rows) - 1} points"
    # as `pipeline bench` does for a run: a busy machine, throttling, an incomplete warm-up;
    # a note that holds for every point (the governor) once
    by_note: dict[str, list[int]] = {}
    points = document.get("points", [])
    for i, point in enumerate(points, 1):
        for note in run_notes(point["result"]):
            by_note.setdefault(note, []).append(i)
    notes = []
    for note, where in by_note.items():
        if len(where) == len(points):
            notes.append(f"note: {note}")
        else:
            notes.append(
                f"note: point{'s' if len(where) > 1 else ''} {', '.join(map(str, where))}: {note}"
            )
    return "\n".join([title, "", format_table(rows, left=len(keys)), *notes])

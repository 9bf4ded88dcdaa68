"""Compare bench results side by side: a table with ratios to the first file, and a chart.

Results of different graphs (different graph hashes: the file changed, or ``--set`` or
``--pace`` changed params) measure different work, so they are refused unless forced;
differences in the bench settings (window, warm-up, pinning) are listed as notes. A sweep
file stands for its points (one column and one bar each, labelled with the ``--set`` values
that differ); points of sweeps of one graph file compare without ``--force``. The chart
(PNG, matplotlib's Agg backend, imported only here) shows throughput and capture-to-sink
latency p50/p95 per device. matplotlib is optional (``pip install '.[bench]'``); without it
the table still prints.
"""

from __future__ import annotations

import importlib
import json
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.bench.report import device_label, format_table
from pipeline.bench.run import SCHEMA, SCHEMA_VERSION

__all__ = [
    "CompareError",
    "check_same_graph",
    "compare_files",
    "differing_sets",
    "load_result",
    "render_compare",
    "sweep_points",
    "write_chart",
]


class CompareError(Exception):
    """Results that cannot be compared: unreadable, not bench results, different graphs."""


def load_result(path: str | Path) -> dict[str, Any]:
    """A bench result file, checked to be one.

    Raises:
        CompareError: unreadable, not JSON, not a bench run result, or a newer schema.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise CompareError(f"{path}: cannot read it: {exc.strerror}") from None
    except ValueError as exc:
        raise CompareError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise CompareError(f'{path}: not a `pipeline bench` result (no "schema": {SCHEMA!r})')
    if int(data.get("schema_version", 0)) > SCHEMA_VERSION:
        raise CompareError(
            f"{path}: written by a newer bench (schema version {data['schema_version']}, this "
            f"one reads up to {SCHEMA_VERSION}): upgrade edge-vision-pipeline"
        )
    if data.get("kind") not in ("run", "sweep"):
        raise CompareError(
            f"{path}: a {data.get('kind')} file; compare takes results of `pipeline bench "
            "GRAPH --out FILE` and `pipeline bench sweep ... --out FILE`"
        )
    if data.get("kind") == "sweep" and not data.get("points"):
        raise CompareError(f"{path}: a sweep file with no points")
    return data


def sweep_points(path: str | Path, sweep: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each point of a sweep file as a run result, named ``file [node.param=value ...]``."""
    out = {}
    for point in sweep.get("points", []):
        result = dict(point["result"])
        result["machine"] = sweep.get("machine") or {}
        result["sweep"] = {"file": str(path), "set": point.get("set", {})}
        label = " ".join(f"{k}={json.dumps(v)}" for k, v in point.get("set", {}).items())
        out[f"{path} [{label}]"] = result
    return out


def differing_sets(results: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """For each result, the ``--set`` values that differ between the results (a bar label)."""
    sets = {name: dict(r.get("settings", {}).get("sets") or {}) for name, r in results.items()}
    keys: list[str] = []
    for values in sets.values():
        keys += [k for k in values if k not in keys]
    differ = [
        k for k in keys if len({json.dumps(v.get(k), sort_keys=True) for v in sets.values()}) > 1
    ]
    return {
        name: " ".join(f"{k}={json.dumps(values.get(k))}" for k in differ)
        for name, values in sets.items()
    }


def check_same_graph(results: Mapping[str, Mapping[str, Any]]) -> str | None:
    """None when every result ran the same graph, else the message that says how they differ."""
    hashes = {name: str(r.get("graph", {}).get("hash")) for name, r in results.items()}
    if len(set(hashes.values())) <= 1:
        return None
    bases = {str(r.get("graph", {}).get("base_hash")) for r in results.values()}
    if all("sweep" in r for r in results.values()) and len(bases) == 1:
        return None  # the points of sweeps of one graph file: their --set values differ
    lines = ["these results are of different graphs (their graph hashes differ):"]
    for name, r in results.items():
        g = r.get("graph", {})
        sets = r.get("settings", {}).get("sets") or {}
        extra = f", with {' '.join(f'{k}={v!r}' for k, v in sets.items())}" if sets else ""
        lines.append(f"  {name}: graph {g.get('name')!r} {hashes[name][:19]}{extra}")
    lines.append(
        "the graph file, a --set or --pace differs; compare runs of the same graph "
        "(or pass --force to compare anyway)"
    )
    return "\n".join(lines)


def _settings_notes(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    notes = []
    keys = ("duration_s", "frames", "warmup", "pace", "cpus")
    for key in keys:
        values = {name: r.get("settings", {}).get(key) for name, r in results.items()}
        if len({json.dumps(v) for v in values.values()}) > 1:
            shown = ", ".join(f"{name}: {v}" for name, v in values.items())
            notes.append(f"settings differ in {key} ({shown})")
    for name, r in results.items():
        notes += [f"{name}: WARNING: {w}" for w in r.get("warnings", [])]
        if r.get("run", {}).get("exit_code"):
            notes.append(f"{name}: that run failed ({r['run'].get('error')})")
        if not r.get("run", {}).get("warmup_complete", True):
            notes.append(f"{name}: its warm-up never ended; its figures include it")
    return notes


def _fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def _ratio(value: float | None, first: float | None) -> str:
    if value is None or not first:
        return ""
    return f" ({value / first:.2f}x)"


Getter = Callable[[Mapping[str, Any]], "float | None"]


def _get(*path: str) -> Getter:
    def read(result: Mapping[str, Any]) -> float | None:
        value: Any = result
        for key in path:
            if not isinstance(value, Mapping) or key not in value:
                return None
            value = value[key]
        return None if value is None else float(value)

    return read


def render_compare(results: Mapping[str, Mapping[str, Any]]) -> str:
    """The side-by-side table, with each value's ratio to the first result's."""
    names = list(results)
    first = results[names[0]]
    header = ["", *names]
    rows: list[list[str]] = [header, ["device", *(device_label(r) for r in results.values())]]
    rows.append(["graph", *(str(r["graph"].get("name")) for r in results.values())])
    labels = differing_sets(results)
    if any(labels.values()):
        rows.append(["settings", *(labels[n] or "-" for n in names)])

    def add(label: str, get: Getter, digits: int, ratio: bool = True) -> None:
        base = get(first)
        cells = [label]
        for i, r in enumerate(results.values()):
            value = get(r)
            text = _fmt(value, digits)
            if ratio and i > 0:
                text += _ratio(value, base)
            cells.append(text)
        rows.append(cells)

    rows.append(["end to end", *[""] * len(names)])
    add("  throughput frames/s", _get("end_to_end", "throughput_fps"), 1)
    for q in ("p50", "p95", "p99"):
        add(f"  latency {q} ms", _get("end_to_end", "latency_ms", f"{q}_ms"), 2)
    add("  drops %", _get("end_to_end", "drop_pct"), 1, ratio=False)
    rows.append(
        ["  bottleneck", *(str(r.get("bottleneck", {}).get("node")) for r in results.values())]
    )
    node_ids: list[str] = []
    for r in results.values():
        node_ids += [n for n in r.get("nodes", {}) if n not in node_ids]
    for node in node_ids:
        rows.append([f"node {node}", *[""] * len(names)])
        add("  frames/s", _get("nodes", node, "fps"), 1)
        add("  process p50 ms", _get("nodes", node, "process_ms", "p50_ms"), 2)
        add("  process p95 ms", _get("nodes", node, "process_ms", "p95_ms"), 2)
        add("  busy %", _get("nodes", node, "busy_pct"), 0, ratio=False)
        add("  CPU %", _get("nodes", node, "cpu_pct"), 0, ratio=False)
        add("  peak RSS MB", _get("nodes", node, "max_rss_mb"), 0)
        used = [
            ", ".join(r.get("nodes", {}).get(node, {}).get("execution_providers") or {}) or "-"
            for r in results.values()
        ]
        if any(u != "-" for u in used):
            rows.append(["  runs on", *used])
    text = format_table(rows, left=1)
    notes = _settings_notes(results)
    reasons = [f"{n}: {r.get('bottleneck', {}).get('reason')}" for n, r in results.items()]
    return "\n".join(
        [text, "", "bottlenecks:", *(f"  {r}" for r in reasons)] + [f"note: {n}" for n in notes]
    )


def write_chart(results: Mapping[str, Mapping[str, Any]], path: str | Path) -> None:
    """A PNG of throughput and latency p50/p95 per result.

    Raises:
        ModuleNotFoundError: matplotlib is not installed.
    """
    # importlib, not an import statement: matplotlib is an optional extra, and the type
    # checker must pass on machines without it.
    matplotlib = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    plt = importlib.import_module("matplotlib.pyplot")

    settings = differing_sets(results)
    labels = []
    for name, r in results.items():
        # the device, then what differs between the bars (the sweep's values), else the file
        what = settings[name] or Path(str(r.get("sweep", {}).get("file") or name)).name
        labels.append(textwrap.fill(device_label(r), 22) + "\n" + textwrap.fill(what, 22))
    fps = [float(r.get("end_to_end", {}).get("throughput_fps") or 0.0) for r in results.values()]
    lat = [r.get("end_to_end", {}).get("latency_ms", {}) for r in results.values()]
    p50 = [float(x.get("p50_ms") or 0.0) for x in lat]
    p95 = [float(x.get("p95_ms") or 0.0) for x in lat]
    first = next(iter(results.values()))
    title = f"{first['graph'].get('name')}  ({str(first['graph'].get('hash'))[:19]})"

    xs = list(range(len(labels)))
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(9.0, 3.6 * len(labels)), 5.0))
    bars = left.bar(xs, fps, color="#4878a8")
    left.bar_label(bars, labels=[f"{v:.1f}" for v in fps], padding=2)
    left.set_title("throughput (frames/s at the sinks)")
    left.set_xticks(xs, labels, fontsize=8)
    left.set_ylabel("frames/s")
    width = 0.38
    b50 = right.bar([x - width / 2 for x in xs], p50, width, label="p50", color="#6aa56a")
    b95 = right.bar([x + width / 2 for x in xs], p95, width, label="p95", color="#d08a3c")
    right.bar_label(b50, labels=[f"{v:.1f}" for v in p50], padding=2, fontsize=8)
    right.bar_label(b95, labels=[f"{v:.1f}" for v in p95], padding=2, fontsize=8)
    right.set_title("latency, capture to sink (ms)")
    right.set_xticks(xs, labels, fontsize=8)
    right.set_ylabel("ms")
    right.legend()
    for ax in (left, right):
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        ax.margins(y=0.15)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(str(path), dpi=120)
    plt.close(fig)


def compare_files(paths: Sequence[str | Path], force: bool) -> dict[str, dict[str, Any]]:
    """Load result files for a comparison.

    Raises:
        CompareError: a file cannot be read, or the graphs differ and ``force`` is False.
    """
    results: dict[str, dict[str, Any]] = {}
    for path in paths:
        data = load_result(path)
        items = sweep_points(path, data) if data.get("kind") == "sweep" else {str(path): data}
        for first_name, result in items.items():
            name, n = first_name, 2
            while name in results:  # the same file twice still gets two columns
                name, n = f"{first_name}#{n}", n + 1
            results[name] = result
    if not force:
        problem = check_same_graph(results)
        if problem:
            raise CompareError(problem)
    return results

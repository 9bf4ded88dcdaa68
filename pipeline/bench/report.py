"""Plain-text reports of bench results: the run table, and the notes a reader needs.

``render_run`` prints what one bench measured: a header (graph, machine, window), one row
per node, the end-to-end figures with the bottleneck sentence, and notes about what may
have distorted the figures (a warm-up that never ended, thermal throttling, a CPU governor
that changes clocks with load). ``format_table`` is shared with compare and sweep.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "device_label",
    "format_table",
    "measured_something",
    "providers_line",
    "render_run",
    "run_notes",
]


def format_table(rows: Sequence[Sequence[str]], left: int = 1, gap: str = "  ") -> str:
    """Align ``rows`` (the first is the header) in columns.

    Args:
        rows: cells as strings.
        left: how many leading columns are left-aligned; the rest are right-aligned.
        gap: between columns.
    """
    if not rows:
        return ""
    widths = [max(len(r[i]) if i < len(r) else 0 for r in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            (cell.ljust(widths[i]) if i < left else cell.rjust(widths[i]))
            for i, cell in enumerate(row)
        ]
        lines.append(gap.join(cells).rstrip())
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def device_label(result: Mapping[str, Any]) -> str:
    """The device's model, else the host name: how a result is named in tables and charts."""
    machine = result.get("machine", {})
    model = machine.get("device", {}).get("model")
    return str(model or machine.get("hostname") or "unknown machine")


def _machine_line(result: Mapping[str, Any]) -> str:
    m = result.get("machine", {})
    cpu = m.get("cpu", {})
    settings = result.get("settings", {})
    parts = [f"on {device_label(result)}"]
    if cpu.get("model"):
        parts.append(str(cpu["model"]))
    cores = f"{cpu.get('cores')} cores" if cpu.get("cores") else None
    if settings.get("cpus"):
        ids = ",".join(map(str, settings.get("cpu_ids") or []))
        cores = f"{cores or '? cores'}, pinned to {settings['cpus']} ({ids})"
    if cores:
        parts.append(cores)
    if m.get("memory_mb"):
        parts.append(f"{m['memory_mb'] / 1024:.1f} GB")
    governor = (result.get("conditions", {}).get("start", {}).get("cpufreq") or {}).get("governor")
    if governor:
        parts.append(f"governor {governor}")
    return ", ".join(parts)


def _hottest(snapshot: Mapping[str, Any] | None) -> tuple[str, float] | None:
    zones = [z for z in (snapshot or {}).get("thermal", []) if z.get("temp_c") is not None]
    if not zones:
        return None
    zone = max(zones, key=lambda z: z["temp_c"])
    return str(zone.get("type") or zone.get("zone")), float(zone["temp_c"])


def measured_something(result: Mapping[str, Any]) -> bool:
    """True when a sink received frames: a run that failed before that has no figures."""
    return bool(result.get("nodes")) and result.get("end_to_end", {}).get("frames", 0) > 0


def run_notes(result: Mapping[str, Any]) -> list[str]:
    """Caveats about one result: an accelerator that fell back to the CPU, incomplete warm-up,
    early end, throttling, a busy machine, the governor."""
    notes = [f"WARNING: {w}" for w in result.get("warnings", [])]
    run = result.get("run", {})
    settings = result.get("settings", {})
    if not run.get("warmup_complete", True):
        notes.append(
            f"the graph ended during the warm-up ({settings.get('warmup')} frames): "
            "these figures include it"
        )
    elif run.get("stop_reason") == "end_of_stream" and settings.get("duration_s"):
        window = result.get("end_to_end", {}).get("window_s", 0.0)
        if window < float(settings["duration_s"]):
            notes.append(f"the graph ended by itself after {window:.1f} s of measuring")
    cond = result.get("conditions", {})
    for moment in ("start", "end"):
        throttling = (cond.get(moment) or {}).get("throttling")
        if throttling and throttling.get("throttled_now"):
            flags = ", ".join(throttling.get("flags", []))
            notes.append(f"the board was throttling at the {moment} of the run ({flags})")
            break
    end_throttle = (cond.get("end") or {}).get("throttling")
    start_throttle = (cond.get("start") or {}).get("throttling")
    if (
        end_throttle
        and end_throttle.get("throttled_since_boot")
        and not (start_throttle or {}).get("throttled_since_boot")
    ):
        notes.append("the board throttled during the run (get_throttled): figures are too low")
    usage = run.get("cpu")
    if usage:
        busy, graph, cores = usage["busy_pct"], usage["graph_pct"], usage["cores"]
        if busy - graph > 20:
            notes.append(
                f"other processes kept the {cores} cores about {busy - graph:.0f}% busy during "
                f"the window (all: {busy:.0f}%, this graph: {graph:.0f}%): the machine was not "
                "idle, so these figures are low"
            )
        elif busy >= 90:
            notes.append(
                f"the {cores} cores were {busy:.0f}% busy: the nodes competed for CPU time, and "
                "busy % includes waiting for a core"
            )
    governor = ((cond.get("start") or {}).get("cpufreq") or {}).get("governor")
    if governor and governor != "performance":
        notes.append(
            f"CPU governor {governor!r}: clocks follow the load; 'performance' gives "
            "steadier figures"
        )
    return notes


def _conditions_line(result: Mapping[str, Any]) -> str | None:
    cond = result.get("conditions", {})
    start, end = _hottest(cond.get("start")), _hottest(cond.get("end"))
    if start is None or end is None:
        return None
    return f"temperature {start[1]:.1f} -> {end[1]:.1f} °C ({end[0]})"


def providers_line(result: Mapping[str, Any]) -> str:
    """``faces: CPUExecutionProvider``: what each model node's frames really ran on."""
    parts = []
    for node, f in result.get("nodes", {}).items():
        used = f.get("execution_providers")
        if used:
            parts.append(f"{node}: {', '.join(used)}")
    return "; ".join(parts)


def render_run(result: Mapping[str, Any]) -> str:
    """The text report of one bench result."""
    graph = result.get("graph", {})
    settings = result.get("settings", {})
    run = result.get("run", {})
    e2e = result.get("end_to_end", {})
    lines = [
        f"bench {graph.get('name')!r} ({graph.get('file')}, {str(graph.get('hash', ''))[:19]})",
        _machine_line(result),
    ]
    window = f"measured {e2e.get('window_s', 0.0):.1f} s"
    if settings.get("warmup"):
        window += f" after {settings['warmup']} warm-up frames"
    window += f"; ended by {run.get('stop_reason')}"
    if settings.get("pace"):
        window += f"; pace {settings['pace']}"
    if settings.get("sets"):
        window += "; " + " ".join(f"{k}={v!r}" for k, v in settings["sets"].items())
    lines.append(window)
    if not result.get("nodes"):
        lines.append(f"error: {run.get('error') or 'no node reported statistics'}")
        return "\n".join(lines)
    rows = [
        [
            "node",
            "type",
            "frames/s",
            "proc p50",
            "p95",
            "p99 ms",
            "queue",
            "drops",
            "busy",
            "CPU",
            "RSS MB",
        ]
    ]
    for node, f in result.get("nodes", {}).items():
        proc = f.get("process_ms", {})
        queue = "-"
        if f.get("queue_capacity"):
            queue = f"{f.get('queue_peak')}/{f.get('queue_capacity')}"
        drops = str(f.get("dropped", 0))
        if f.get("dropped"):
            drops += f" ({f.get('drop_pct', 0.0):.0f}%)"
        rows.append(
            [
                node,
                str(f.get("type")),
                _num(f.get("fps")),
                _ms(proc.get("p50_ms")),
                _ms(proc.get("p95_ms")),
                _ms(proc.get("p99_ms")),
                queue,
                drops,
                f"{_num(f.get('busy_pct'), 0)}%",
                "-" if f.get("cpu_pct") is None else f"{f['cpu_pct']:.0f}%",
                _num(f.get("max_rss_mb"), 0),
            ]
        )
    lines += ["", format_table(rows, left=2), "", "end to end"]
    lines.append(
        f"  throughput   {e2e.get('throughput_fps', 0.0):.1f} frames/s "
        f"({e2e.get('frames', 0)} frames at the sinks)"
    )
    for sink, s in e2e.get("sinks", {}).items():
        lat = s.get("latency_ms", {})
        lines.append(
            f"  latency      capture -> {sink}: p50 {_ms(lat.get('p50_ms'))} ms, "
            f"p95 {_ms(lat.get('p95_ms'))} ms, p99 {_ms(lat.get('p99_ms'))} ms"
        )
    lines.append(
        f"  drops        {e2e.get('dropped', 0)} of {e2e.get('source_frames', 0)} frames "
        f"({e2e.get('drop_pct', 0.0):.1f}%)"
    )
    lines.append(f"  bottleneck   {result.get('bottleneck', {}).get('reason')}")
    used = providers_line(result)
    if used:
        lines.append(f"  runs on      {used}")
    extra = _conditions_line(result)
    if extra:
        lines.append(f"  conditions   {extra}")
    if run.get("error"):
        lines.append(f"error: {run['error']}")
    if measured_something(result):  # notes qualify figures: a run that measured nothing has none
        lines += [f"note: {n}" for n in run_notes(result)]
    return "\n".join(lines)

"""A plain-text table of node statistics, for ``pipeline run`` (live and at the end)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.runtime.stats import NodeStats

__all__ = ["render_table"]

_COLUMNS = (
    "node",
    "state",
    "recv",
    "sent",
    "drop",
    "qpeak",
    "fps",
    "proc p50",
    "proc p95",
    "lat p50",
    "lat p95",
    "start",
    "pss",
)


def _fmt_ms(value: float) -> str:
    return f"{value:.2f}ms" if value < 100 else f"{value:.0f}ms"


def _groups(rows: Mapping[str, NodeStats | None]) -> dict[str, tuple[str, list[NodeStats]]]:
    """The copies of each replicated node (``faces[0]``, ``faces[1]``), by its last copy's
    row (where the group's line goes)."""
    found: dict[str, list[str]] = {}
    for node_id in rows:
        if node_id.endswith("]") and "[" in node_id:
            found.setdefault(node_id.split("[", 1)[0], []).append(node_id)
    out: dict[str, tuple[str, list[NodeStats]]] = {}
    for group, ids in found.items():
        stats = [s for s in (rows[i] for i in ids) if s]
        if len(ids) > 1 and stats:
            out[ids[-1]] = (f"{group} ({len(ids)} copies)", stats)
    return out


def _group_line(name: str, stats: list[NodeStats]) -> list[str]:
    """A replicated node's totals: messages and frames per second of its copies together."""
    blank = ["-"] * 6
    return [
        name,
        "",
        str(sum(s.received for s in stats)),
        str(sum(s.sent for s in stats)),
        str(sum(s.dropped for s in stats)),
        str(max((i.queue_peak for s in stats for i in s.inputs.values()), default=0)),
        f"{sum(s.fps for s in stats):.1f}",
        *blank,
    ]


def render_table(
    rows: Mapping[str, NodeStats | None], memory: Mapping[str, Any] | None = None
) -> str:
    """One line per node from the statistics that workers report (None: not yet).

    ``start`` is launch to ready (process start and ``open()``); ``pss`` the node's
    proportional set size while the graph ran. ``memory`` (``RunResult.memory``) adds a
    line with the run's total PSS, supervisor and fork server included. The copies of a
    replicated node (``faces[0]``, ``faces[1]``) are followed by a line with their totals.
    """
    lines = [list(_COLUMNS)]
    groups = _groups(rows)
    for node_id, s in rows.items():
        if not s:
            lines.append([node_id, "starting", *[""] * (len(_COLUMNS) - 2)])
            continue
        qpeak = max((i.queue_peak for i in s.inputs.values()), default=0)
        lat = s.latency_ms
        proc = s.process_ms
        lines.append(
            [
                node_id,
                s.state,
                str(s.received),
                str(s.sent),
                str(s.dropped),
                str(qpeak),
                f"{s.fps:.1f}",
                _fmt_ms(proc["p50_ms"]),
                _fmt_ms(proc["p95_ms"]),
                _fmt_ms(lat["p50_ms"]) if lat["p50_ms"] else "-",
                _fmt_ms(lat["p95_ms"]) if lat["p95_ms"] else "-",
                f"{s.start_s + s.open_s:.2f}s" if s.start_s else "-",
                f"{s.pss_mb:.0f}MB" if s.pss_mb else "-",
            ]
        )
        group = groups.get(node_id)
        if group is not None:
            lines.append(_group_line(*group))
    widths = [max(len(row[i]) for row in lines) for i in range(len(_COLUMNS))]
    out = []
    for row in lines:
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [cell.rjust(widths[i + 2]) for i, cell in enumerate(row[2:])]
        out.append("  ".join(cells).rstrip())
    if memory and memory.get("total_pss_mb"):
        pss = memory.get("pss_mb", {})
        others = ", ".join(f"{k.strip('()')} {v:.0f}MB" for k, v in pss.items() if k[0] == "(")
        out.append(f"total PSS {memory['total_pss_mb']:.0f}MB ({others})")
    return "\n".join(out)

"""From the statistics every node reports to the figures a bench prints and saves.

Per node: frames/s, process time percentiles, queue peak against the edge's depth, drops,
busy % (``busy_s / elapsed_s``: time inside ``process()``), CPU % (process CPU seconds,
threads included, over the measured window) and peak RSS. End to end: throughput at the
sinks (the slowest sink when there are several: every frame must reach every sink), latency
from capture to the end of each sink's ``process()`` (and all sinks merged), and the drop
rate (every counted drop over the frames the sources sent).

The bottleneck is found from utilisation and back-pressure. With ``when_full: block`` a
producer waits inside ``send()`` for its consumer, so a jam looks like a run of nodes busy
near 100 %: the bottleneck is where the jam ends, the node whose input queue is full while
nothing after it is. With drop policies nothing waits, and the bottleneck is the busiest
saturated node (busy >= 80 %), with the drops before it. A paced source counts its waiting
for the next frame time as busy, so a source is named only when no later node is saturated:
then the source sets the pace. Sources with low CPU but high busy are waiting (pacing, a
device); with high CPU they are the slowest stage themselves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from pipeline.runtime.stats import Histogram, NodeStats

__all__ = ["SATURATED", "Bottleneck", "find_bottleneck", "node_figures", "summarise"]

SATURATED = 0.80
"""Busy fraction from which a node counts as saturated (the rest of a loaded node's time
goes to receiving, joining and bookkeeping outside ``process()``)."""

Stats = NodeStats
Topology = Mapping[str, Mapping[str, Any]]


@dataclasses.dataclass(frozen=True)
class Bottleneck:
    """The node that limits a graph's throughput, and why, in one sentence.

    Attributes:
        node: its id (None when the graph reported no statistics).
        reason: one sentence, e.g. ``"detector: busy 98% of the time, its input queue was
            full (peak 4/4) and 23% of frames were dropped before it"``.
        busy_pct: its busy percentage.
        kind: ``saturated`` (a node at its limit), ``jam_end`` (end of a back-pressure
            chain), ``source`` (the source sets the pace) or ``none`` (nothing saturated).
    """

    node: str | None
    reason: str
    busy_pct: float | None
    kind: str

    def to_dict(self) -> dict[str, Any]:
        """As stored in a result file."""
        return dataclasses.asdict(self)


def _util(s: Stats) -> float:
    return s.busy_s / s.elapsed_s if s.elapsed_s > 0 else 0.0


def _fps(s: Stats) -> float:
    return s.fps


def _pct(value: float) -> str:
    return f"{value:.1f}%" if 0 < value < 1 else f"{value:.0f}%"


def _is_full(peak: int, queue: int | None) -> bool:
    return bool(queue) and peak >= int(queue or 0)


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def node_figures(
    stats: Stats, info: Mapping[str, Any], baseline: tuple[float, float] | None
) -> dict[str, Any]:
    """One node's figures from its final statistics.

    Args:
        stats: the node's statistics as workers report them.
        info: the node's entry of ``prepare.topology()`` (type, role, input edges).
        baseline: ``(cpu_s, elapsed_s)`` at the start of the measured window, for CPU %;
            None when unknown (CPU % is then None).
    """
    elapsed = stats.elapsed_s
    edges = info.get("inputs", {})
    inputs: dict[str, dict[str, Any]] = {}
    for port, s in stats.inputs.items():
        edge = edges.get(port, {})
        inputs[port] = {
            "from": edge.get("from"),
            "received": s.received,
            "dropped": s.dropped,
            "queue_peak": s.queue_peak,
            "queue": edge.get("queue"),
            "when_full": edge.get("when_full"),
        }
    received = sum(i["received"] for i in inputs.values())
    dropped = sum(i["dropped"] for i in inputs.values())
    fullest = max(
        inputs.values(),
        key=lambda i: i["queue_peak"] / i["queue"] if i["queue"] else 0.0,
        default=None,
    )
    cpu_pct = None
    if baseline is not None and elapsed - baseline[1] >= 0.1:
        cpu_pct = round(100 * (stats.cpu_s - baseline[0]) / (elapsed - baseline[1]), 1)
    return {
        "type": info.get("type"),
        "role": info.get("role"),
        "state": stats.state,
        "frames": stats.calls,
        "fps": round(_fps(stats), 3),
        "elapsed_s": round(elapsed, 3),
        "received": received,
        "sent": stats.sent,
        "dropped": dropped,
        "drop_pct": round(100 * dropped / (received + dropped), 2) if received + dropped else 0.0,
        "output_dropped": sum(o.dropped for o in stats.outputs.values()),
        "queue_peak": fullest["queue_peak"] if fullest else None,
        "queue_capacity": fullest["queue"] if fullest else None,
        "inputs": inputs,
        "process_ms": dict(stats.process_ms),
        "latency_ms": dict(stats.latency_ms),
        "busy_pct": round(100 * _util(stats), 1),
        "cpu_pct": cpu_pct,
        "max_rss_mb": stats.max_rss_mb,
        **_providers(stats),
    }


PROVIDER_COUNTER = "frames_on_"  # counted per frame by the model nodes (pipeline_nodes.inference)


def _providers(stats: Stats) -> dict[str, Any]:
    """``execution_providers``: the provider a model node really ran on, frames per provider."""
    used = {
        name.removeprefix(PROVIDER_COUNTER): int(n)
        for name, n in stats.counters.items()
        if name.startswith(PROVIDER_COUNTER)
    }
    return {"execution_providers": used} if used else {}


def _consumers(topo: Topology, node: str) -> list[tuple[str, str, Mapping[str, Any]]]:
    """``(consumer, port, edge)`` for every edge out of ``node``."""
    return [
        (consumer, port, edge)
        for consumer, info in topo.items()
        for port, edge in info.get("inputs", {}).items()
        if edge.get("from") == node
    ]


def _blocked_by(stats: Mapping[str, Stats], topo: Topology, node: str) -> list[str]:
    """Consumers that made ``node`` wait: a ``block`` edge whose queue filled up."""
    out = []
    for consumer, port, edge in _consumers(topo, node):
        s = stats.get(consumer)
        if s is None or edge.get("when_full") != "block":
            continue
        peak = s.inputs[port].queue_peak if port in s.inputs else 0
        if _is_full(peak, edge.get("queue")):
            out.append(consumer)
    return out


def _jam_ends(stats: Mapping[str, Stats], topo: Topology) -> set[str]:
    ends = set()
    for node in stats:
        seen = {node}
        current = node
        while True:
            blockers = [b for b in _blocked_by(stats, topo, current) if b not in seen]
            if not blockers:
                break
            current = max(blockers, key=lambda b: _util(stats[b]))
            seen.add(current)
        if current != node:
            ends.add(current)
    return ends


def _explain_consumer(
    node: str, stats: Mapping[str, Stats], topo: Topology, cpu_pct: Mapping[str, float | None]
) -> str:
    s = stats[node]
    parts = []
    edges = topo.get(node, {}).get("inputs", {})
    full = [
        (port, i.queue_peak, int(edges[port]["queue"]))
        for port, i in s.inputs.items()
        if port in edges and _is_full(i.queue_peak, edges[port].get("queue"))
    ]
    if full:
        port, peak, queue = full[0]
        which = "its input queue" if len(edges) == 1 else f"its input queue {port!r}"
        parts.append(f"{which} was full (peak {peak}/{queue})")
    waiting = [
        str(edges[port]["from"])
        for port, _, _ in full
        if edges[port].get("when_full") == "block" and edges[port].get("from") in stats
    ]
    if waiting:
        parts.append(f"{', '.join(dict.fromkeys(waiting))} waited on it")
    received = s.received
    dropped = s.dropped
    if dropped:
        parts.append(
            f"{_pct(100 * dropped / (received + dropped))} of frames were dropped before it"
        )
    if not parts:
        parts.append("no node after it is saturated")
    cpu = cpu_pct.get(node)
    cpu_text = f" ({_pct(cpu)} CPU)" if cpu is not None else ""
    if _util(s) < SATURATED:
        return (
            f"{node}: {_join(parts)}; it was busy in process() only {_pct(100 * _util(s))} of "
            f"the time{cpu_text}, so its per-message cost outside process() or a lack of CPU "
            "time held it back"
        )
    return f"{node}: busy {_pct(100 * _util(s))} of the time{cpu_text}, {_join(parts)}"


def find_bottleneck(
    stats: Mapping[str, Stats],
    topo: Topology,
    cpu_pct: Mapping[str, float | None] | None = None,
) -> Bottleneck:
    """Which node limits the throughput, and why (see the module docstring for the rules).

    Args:
        stats: each node's statistics as workers report them.
        topo: ``prepare.topology()`` of the graph: role and input edges of each node.
        cpu_pct: each node's CPU % over the window, when known (it tells a pacing source
            from a busy one).

    Returns:
        The bottleneck with a one-sentence reason.
    """
    cpu = dict(cpu_pct or {})
    stats = {k: v for k, v in stats.items() if k in topo}
    if not stats:
        return Bottleneck(None, "no node reported statistics", None, "none")
    util = {n: _util(s) for n, s in stats.items()}
    is_source = {n: topo[n].get("role") == "source" for n in stats}
    saturated = {n for n in stats if not is_source[n] and util[n] >= SATURATED}
    unblocked = {n for n in saturated if not _blocked_by(stats, topo, n)}
    ends = {n for n in _jam_ends(stats, topo) if not is_source[n]}
    pool = unblocked | ends or saturated
    if pool:
        node = max(pool, key=lambda n: (util[n], -_fps(stats[n])))
        kind = "saturated" if node in saturated else "jam_end"
        reason = _explain_consumer(node, stats, topo, cpu)
        return Bottleneck(node, reason, round(100 * util[node], 1), kind)
    others = [n for n in stats if not is_source[n]]
    busiest = max(others, key=lambda n: util[n], default=None)
    after = (
        f"no node after it is saturated (busiest: {busiest} at {_pct(100 * util[busiest])})"
        if busiest
        else "it is the only node"
    )
    sources = [n for n in stats if is_source[n] and util[n] >= SATURATED]
    if sources:
        node = max(sources, key=lambda n: util[n])
        busy = _pct(100 * util[node])
        node_cpu = cpu.get(node)
        if node_cpu is not None and node_cpu < 50 * util[node]:
            reason = (
                f"{node}: the source sets the pace: busy {busy} of the time at "
                f"{_pct(node_cpu)} CPU (it waits for its next frame or for its device), "
                f"and {after}"
            )
        else:
            cpu_text = f" ({_pct(node_cpu)} CPU)" if node_cpu is not None else ""
            reason = (
                f"{node}: the source is the slowest stage: busy {busy} of the time{cpu_text} "
                f"making frames, and {after}"
            )
        return Bottleneck(node, reason, round(100 * util[node], 1), "source")
    node = max(stats, key=lambda n: util[n])
    reason = (
        f"{node}: busy only {_pct(100 * util[node])} of the time, the most of any node; no "
        "stage is saturated, so per-message overhead (transport, scheduling) or the "
        "sources' rate limits the throughput"
    )
    return Bottleneck(node, reason, round(100 * util[node], 1), "none")


def summarise(
    stats: Mapping[str, Stats],
    topo: Topology,
    baselines: Mapping[str, tuple[float, float]] | None = None,
) -> dict[str, Any]:
    """Per-node figures, end-to-end figures and the bottleneck of a finished run.

    Args:
        stats: each node's final statistics (with ``latency_hist`` for the sinks).
        topo: ``prepare.topology()`` of the graph.
        baselines: ``node -> (cpu_s, elapsed_s)`` at the start of the measured window.

    Returns:
        ``{"nodes": {...}, "end_to_end": {...}, "bottleneck": {...}}``.
    """
    baselines = baselines or {}
    nodes = {n: node_figures(stats[n], topo[n], baselines.get(n)) for n in topo if n in stats}
    # a node nobody reads from (a lone source is its own sink)
    sinks = [n for n in topo if n in stats and not _consumers(topo, n)]
    sources = [n for n in topo if topo[n].get("role") == "source" and n in stats]
    merged = Histogram()
    per_sink = {}
    for n in sinks:
        hist = stats[n].latency_hist
        if hist is not None:
            merged.merge(hist)
        per_sink[n] = {
            "frames": nodes[n]["frames"],
            "fps": nodes[n]["fps"],
            "latency_ms": nodes[n]["latency_ms"],
        }
    source_frames = sum(nodes[n]["sent"] for n in sources)
    dropped = sum(f["dropped"] for f in nodes.values())
    end_to_end = {
        "throughput_fps": min((nodes[n]["fps"] for n in sinks), default=0.0),
        "frames": min((nodes[n]["frames"] for n in sinks), default=0),
        "window_s": max((nodes[n]["elapsed_s"] for n in sinks), default=0.0),
        "latency_ms": merged.summary_ms(),
        "source_frames": source_frames,
        "dropped": dropped,
        "drop_pct": round(min(100.0, 100 * dropped / source_frames), 2) if source_frames else 0.0,
        "sinks": per_sink,
    }
    cpu = {n: f["cpu_pct"] for n, f in nodes.items()}
    bottleneck = find_bottleneck(stats, topo, cpu)
    return {"nodes": nodes, "end_to_end": end_to_end, "bottleneck": bottleneck.to_dict()}

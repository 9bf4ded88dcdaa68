"""Draw a graph: Mermaid (GitHub, docs) or Graphviz dot text, or an SVG (the preview page).

Every node is a box ``id`` over its type; every edge is labelled ``output -> input`` with its
queue and policy when they are not the defaults (``queue 4, block``).
"""

from __future__ import annotations

import html
import json
from typing import Literal

from pipeline.graph.spec import GraphSpec, NodeSpec

__all__ = ["FORMATS", "draw", "to_dot", "to_mermaid", "to_svg"]

FORMATS = ("mermaid", "dot", "svg")


def _edge_label(output: str, port: str, queue: int, when_full: str, transport: str) -> str:
    label = output if output == port else f"{output} → {port}"
    extra = []
    if queue != 4:
        extra.append(f"queue {queue}")
    if when_full != "block":
        extra.append(when_full)
    if transport != "shm":
        extra.append(transport)
    return label + (f" ({', '.join(extra)})" if extra else "")


def _edges(spec: GraphSpec) -> list[tuple[str, str, str]]:
    out = []
    for node in spec.nodes:
        for port, _, ref in node.input_refs():
            label = _edge_label(ref.port, port, ref.queue, ref.when_full, ref.transport)
            out.append((ref.node, node.id, label))
    return out


def _kind(node: NodeSpec, room: int = 0) -> str:
    """A node's type as drawn (its last ``room`` characters), with ``xN`` when replicated."""
    copies = f" x{node.replicas}" if node.replicas > 1 else ""
    kind = node.node[-(room - len(copies)) :] if room else node.node
    return kind + copies


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


def to_mermaid(spec: GraphSpec) -> str:
    """A ``flowchart LR`` in Mermaid syntax."""
    lines = ["flowchart LR"]
    for node in spec.nodes:
        lines.append(
            f'    {node.id}["{_mermaid_text(node.id)}<br/><i>{_mermaid_text(_kind(node))}</i>"]'
        )
    for producer, consumer, label in _edges(spec):
        lines.append(f'    {producer} -->|"{_mermaid_text(label)}"| {consumer}')
    return "\n".join(lines) + "\n"


def to_dot(spec: GraphSpec) -> str:
    """A Graphviz ``digraph`` (render with ``dot -Tsvg``)."""
    lines = [f"digraph {json.dumps(spec.graph)} {{", "    rankdir=LR;", "    node [shape=box];"]
    for node in spec.nodes:
        label = json.dumps(f"{node.id}\n{_kind(node)}")
        lines.append(f"    {json.dumps(node.id)} [label={label}];")
    for producer, consumer, label in _edges(spec):
        lines.append(
            f"    {json.dumps(producer)} -> {json.dumps(consumer)} [label={json.dumps(label)}];"
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def draw(spec: GraphSpec, fmt: Literal["mermaid", "dot", "svg"] = "mermaid") -> str:
    """The drawing of ``spec`` in ``fmt``."""
    if fmt == "svg":
        return to_svg(spec)
    return to_dot(spec) if fmt == "dot" else to_mermaid(spec)


_BOX_W, _BOX_H, _GAP_X, _GAP_Y, _PAD, _TOP = 150, 46, 96, 40, 12, 36


def _layers(spec: GraphSpec) -> dict[str, int]:
    """Each node's column: 0 for a source, else one after its furthest producer."""
    producers = {n.id: [ref.node for _, _, ref in n.input_refs()] for n in spec.nodes}
    depth: dict[str, int] = {}

    def of(node: str, seen: frozenset[str] = frozenset()) -> int:
        if node not in depth:
            before = [p for p in producers.get(node, []) if p in producers and p not in seen]
            depth[node] = 1 + max((of(p, seen | {node}) for p in before), default=-1)
        return depth[node]

    for node in producers:
        of(node)
    return depth


def to_svg(spec: GraphSpec) -> str:
    """A self-contained SVG: one column per depth from the sources, edges labelled by port."""
    depth = _layers(spec)
    columns: dict[int, list[str]] = {}
    for node in spec.nodes:
        columns.setdefault(depth[node.id], []).append(node.id)
    where: dict[str, tuple[float, float]] = {}
    for col, ids in columns.items():
        for row, node_id in enumerate(ids):
            where[node_id] = (
                _PAD + col * (_BOX_W + _GAP_X),
                _PAD + _TOP + row * (_BOX_H + _GAP_Y),
            )
    width = _PAD * 2 + len(columns) * _BOX_W + max(len(columns) - 1, 0) * _GAP_X
    rows = max(len(ids) for ids in columns.values())
    height = _PAD * 2 + _TOP + rows * _BOX_H + (rows - 1) * _GAP_Y
    esc = html.escape
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="system-ui, sans-serif" font-size="12">',
        f"<title>{esc(spec.graph)}</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#9ab"/></marker></defs>',
    ]
    for node in spec.nodes:
        for port, _, ref in node.input_refs():
            producer, consumer = ref.node, node.id
            if producer not in where:
                continue
            label = ref.port if ref.port == port else f"{ref.port} → {port}"
            (x0, y0), (x1, y1) = where[producer], where[consumer]
            if depth[consumer] - depth[producer] == 1:  # next column: straight across
                ax, ay, bx, by = x0 + _BOX_W, y0 + _BOX_H / 2, x1, y1 + _BOX_H / 2
                d = (
                    f"M{ax:.0f},{ay:.0f} C{ax + 40:.0f},{ay:.0f} "
                    f"{bx - 40:.0f},{by:.0f} {bx:.0f},{by:.0f}"
                )
                lx, ly = (ax + bx) / 2, (ay + by) / 2 - 5
            else:  # over the columns between: an arc above the boxes
                ax, ay, bx, by = x0 + _BOX_W * 0.7, y0, x1 + _BOX_W * 0.3, y1
                top = min(ay, by) - _TOP + 4
                d = f"M{ax:.0f},{ay:.0f} C{ax:.0f},{top:.0f} {bx:.0f},{top:.0f} {bx:.0f},{by:.0f}"
                lx, ly = (ax + bx) / 2, top + 10
            out.append(
                f'<path class="edge" d="{d}" fill="none" stroke="#9ab" marker-end="url(#arrow)">'
                f"<title>{esc(producer)}/{esc(ref.port)} → {esc(consumer)}.{esc(port)}</title>"
                "</path>"
            )
            out.append(
                f'<text x="{lx:.0f}" y="{ly:.0f}" text-anchor="middle" fill="#8a9" '
                f'font-size="10">{esc(label)}</text>'
            )
    for node in spec.nodes:
        x, y = where[node.id]
        out.append(
            f'<g class="node" data-node="{esc(node.id)}"><rect x="{x:.0f}" y="{y:.0f}" '
            f'width="{_BOX_W}" height="{_BOX_H}" rx="6" fill="#1d2833" stroke="#4878a8"/>'
            f'<text x="{x + _BOX_W / 2:.0f}" y="{y + 19:.0f}" text-anchor="middle" '
            f'fill="#eee" font-weight="bold">{esc(node.id)}</text>'
            f'<text x="{x + _BOX_W / 2:.0f}" y="{y + 35:.0f}" text-anchor="middle" '
            f'fill="#aab">{esc(_kind(node, 26))}</text></g>'
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"

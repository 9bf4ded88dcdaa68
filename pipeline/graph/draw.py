"""Draw a graph: Mermaid (GitHub, the preview page) or Graphviz dot text.

Every node is a box ``id`` over its type; every edge is labelled ``output -> input`` with its
queue and policy when they are not the defaults (``queue 4, block``).
"""

from __future__ import annotations

import json
from typing import Literal

from pipeline.graph.spec import GraphSpec

__all__ = ["FORMATS", "draw", "to_dot", "to_mermaid"]

FORMATS = ("mermaid", "dot")


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
        for port, ref in node.inputs.items():
            label = _edge_label(ref.port, port, ref.queue, ref.when_full, ref.transport)
            out.append((ref.node, node.id, label))
    return out


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


def to_mermaid(spec: GraphSpec) -> str:
    """A ``flowchart LR`` in Mermaid syntax."""
    lines = ["flowchart LR"]
    for node in spec.nodes:
        lines.append(
            f'    {node.id}["{_mermaid_text(node.id)}<br/><i>{_mermaid_text(node.node)}</i>"]'
        )
    for producer, consumer, label in _edges(spec):
        lines.append(f'    {producer} -->|"{_mermaid_text(label)}"| {consumer}')
    return "\n".join(lines) + "\n"


def to_dot(spec: GraphSpec) -> str:
    """A Graphviz ``digraph`` (render with ``dot -Tsvg``)."""
    lines = [f"digraph {json.dumps(spec.graph)} {{", "    rankdir=LR;", "    node [shape=box];"]
    for node in spec.nodes:
        label = json.dumps(f"{node.id}\n{node.node}")
        lines.append(f"    {json.dumps(node.id)} [label={label}];")
    for producer, consumer, label in _edges(spec):
        lines.append(
            f"    {json.dumps(producer)} -> {json.dumps(consumer)} [label={json.dumps(label)}];"
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def draw(spec: GraphSpec, fmt: Literal["mermaid", "dot"] = "mermaid") -> str:
    """The drawing of ``spec`` in ``fmt``."""
    return to_dot(spec) if fmt == "dot" else to_mermaid(spec)

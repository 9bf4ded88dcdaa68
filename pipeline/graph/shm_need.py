"""How much shared memory a graph may need, estimated before it runs.

Each output port of a running graph owns a pool of slots (``slot_pool_size`` of its edges),
each as large as one of its messages. Frames are the large messages: a node whose params
have ``width`` and ``height`` makes frames of ``width * height * 3`` bytes (a source, a
resize), and any other node that sends frames is taken to send frames as large as the
largest it receives (a colour conversion, an overlay). Where no size is known (a video
file's), nothing is counted: the figure is a lower bound where it cannot be exact, and an
upper bound of what the pools may grow to where it can.

``pipeline check`` (and ``pipeline run``, first) warns, at the node with the largest pool,
when that is more than /dev/shm has free: a graph that would otherwise start and fail on its
first frames, or, before segments were reserved up front, die of SIGBUS.
"""

from __future__ import annotations

import dataclasses
import shutil
from typing import TYPE_CHECKING

from pipeline.errors import ConfigIssue
from pipeline.messages import Frame
from pipeline.transport.plan import EdgePlan, slot_pool_size
from pipeline.transport.shm import SHM_DIR

if TYPE_CHECKING:
    from pipeline.graph.load import Marks
    from pipeline.graph.validate import ValidatedGraph

__all__ = ["PortNeed", "shm_issues", "shm_need"]

MIB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class PortNeed:
    """The most shared memory one output port's pool may hold."""

    node_id: str
    port: str
    slots: int
    frame_bytes: int

    @property
    def total(self) -> int:
        return self.slots * self.frame_bytes


def _own_size(params: object) -> int | None:
    width, height = getattr(params, "width", None), getattr(params, "height", None)
    if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
        return width * height * 3
    return None


def shm_need(graph: ValidatedGraph) -> list[PortNeed]:
    """Each frame output's pool, where its frame size can be known, largest first."""
    frame_bytes: dict[str, int | None] = {}
    for node_id in graph.topological_order():
        upstream = [frame_bytes.get(e.producer) for e in graph.edges if e.consumer == node_id]
        own = _own_size(graph.params.get(node_id))
        known = [size for size in upstream if size]
        frame_bytes[node_id] = own or (max(known) if known else None)
    needs = []
    for node_id, cls in graph.classes.items():
        size = frame_bytes.get(node_id)
        if not size:
            continue
        for port, output in cls.outputs.items():
            if not (isinstance(output.type, type) and issubclass(output.type, Frame)):
                continue
            edges = [e for e in graph.edges if e.producer == node_id and e.output == port]
            if not edges:
                continue
            plans = [
                EdgePlan(
                    e.producer,
                    e.output,
                    e.consumer,
                    e.input,
                    e.spec.queue,
                    e.spec.when_full,
                    e.spec.transport,
                    1,
                    "",
                )
                for e in edges
            ]
            needs.append(PortNeed(node_id, port, slot_pool_size(plans), size))
    return sorted(needs, key=lambda need: need.total, reverse=True)


def shm_issues(graph: ValidatedGraph, marks: Marks) -> list[ConfigIssue]:
    """A warning when the graph may need more shared memory than /dev/shm has free."""
    needs = shm_need(graph)
    total = sum(need.total for need in needs)
    try:
        usage = shutil.disk_usage(SHM_DIR)
    except OSError:
        return []
    if not needs or total <= usage.free:
        return []
    biggest = needs[0]
    index = next(i for i, node in enumerate(graph.spec.nodes) if node.id == biggest.node_id)
    hints = [
        f"node {need.node_id!r} output {need.port!r}: up to {need.slots} slots of "
        f"{need.frame_bytes / MIB:.1f} MiB = {need.total / MIB:.0f} MiB"
        for need in needs[:5]
    ]
    hints.append(
        "hint: shorten the queues of these edges, make frames smaller (a resize first), or "
        "give /dev/shm more room (Docker: --shm-size)"
    )
    return [
        marks.issue(
            ("nodes", index, "id"),
            f"this graph may need up to {total / MIB:.0f} MiB of shared memory for its frames, "
            f"and {SHM_DIR} has {usage.free / MIB:.0f} MiB free (of {usage.total / MIB:.0f})",
            hints=hints,
            severity="warning",
        )
    ]

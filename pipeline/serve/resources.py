"""Which resources a graph offers, under Viam's names, and the taps the server reads.

- ``rdk:service:vision/<id>`` for every node whose service has kind ``vision`` (detector,
  classifier, color_detector);
- ``rdk:service:mlmodel/<id>`` for every node whose service has kind ``mlmodel`` (every node
  that runs a model);
- ``rdk:component:camera/<id>`` for every source (a node with no inputs) that sends frames.

``with_taps(graph, endpoint)`` returns the graph plus one hidden ``ServeTap`` per output the
server reads (each camera's frames; each vision node's detections/classifications).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pipeline.graph.load import Marks
from pipeline.graph.spec import GraphSpec, NodeSpec
from pipeline.graph.validate import ValidatedGraph, validate_spec
from pipeline.messages import Classifications, Detections, Frame
from pipeline.serve.contract import NodeService, service_factory
from pipeline.serve.taps import TAP_NODE_TYPE

__all__ = ["Resources", "ServedNode", "build_resources", "tap_id", "with_taps"]


@dataclasses.dataclass
class ServedNode:
    """One graph node as the server sees it.

    Attributes:
        id: the node id (the resource name).
        type: the node type as written in the graph.
        service: what it offers remote callers (None: a camera only, or nothing).
        cameras: the sources upstream of it, nearest first (its default camera is the first).
        frames_port: for a source, the output port of its frames.
        detections_port / classifications_port: its outputs of those types.
    """

    id: str
    type: str
    service: NodeService | None = None
    cameras: tuple[str, ...] = ()
    frames_port: str | None = None
    detections_port: str | None = None
    classifications_port: str | None = None

    @property
    def kinds(self) -> frozenset[str]:
        return self.service.kinds if self.service is not None else frozenset()


@dataclasses.dataclass
class Resources:
    """The served nodes, by role."""

    nodes: dict[str, ServedNode]

    @property
    def vision(self) -> dict[str, ServedNode]:
        return {k: n for k, n in self.nodes.items() if "vision" in n.kinds}

    @property
    def mlmodel(self) -> dict[str, ServedNode]:
        return {k: n for k, n in self.nodes.items() if "mlmodel" in n.kinds}

    @property
    def cameras(self) -> dict[str, ServedNode]:
        return {k: n for k, n in self.nodes.items() if n.frames_port is not None}

    def names(self) -> list[tuple[str, str, str]]:
        """``(type, subtype, name)`` of every resource, in a stable order."""
        out = [("component", "camera", k) for k in self.cameras]
        out += [("service", "vision", k) for k in self.vision]
        out += [("service", "mlmodel", k) for k in self.mlmodel]
        return out

    def taps(self) -> list[tuple[str, str]]:
        """``(node, port)`` of every output the server reads."""
        taps: list[tuple[str, str]] = []
        for node in self.nodes.values():
            if node.frames_port is not None:
                taps.append((node.id, node.frames_port))
            if "vision" in node.kinds:
                for port in (node.detections_port, node.classifications_port):
                    if port is not None:
                        taps.append((node.id, port))
        return taps


def _port_of(cls: Any, message: type) -> str | None:
    for name, port in cls.outputs.items():
        if isinstance(port.type, type) and issubclass(port.type, message):
            return str(name)
    return None


def _upstream_sources(graph: ValidatedGraph, node_id: str) -> tuple[str, ...]:
    """Sources upstream of the node, nearest first (breadth-first against the edges)."""
    seen, queue, found = {node_id}, [node_id], []
    while queue:
        current = queue.pop(0)
        for edge in graph.edges_into(current):
            if edge.producer in seen:
                continue
            seen.add(edge.producer)
            if graph.classes[edge.producer].is_source():
                found.append(edge.producer)
            queue.append(edge.producer)
    return tuple(found)


def build_resources(graph: ValidatedGraph, *, with_services: bool = True) -> Resources:
    """The served nodes of a graph; services are built (not opened) when ``with_services``."""
    nodes: dict[str, ServedNode] = {}
    for spec in graph.spec.nodes:
        if spec.node == TAP_NODE_TYPE:
            continue
        cls = graph.classes[spec.id]
        served = ServedNode(id=spec.id, type=spec.node)
        if cls.is_source():
            served.frames_port = _port_of(cls, Frame)
        else:
            served.cameras = _upstream_sources(graph, spec.id)
        served.detections_port = _port_of(cls, Detections)
        served.classifications_port = _port_of(cls, Classifications)
        if with_services:
            factory = service_factory(spec.node, cls)
            if factory is not None:
                served.service = factory(graph.params[spec.id])
        if served.service is not None or served.frames_port is not None:
            nodes[spec.id] = served
    return Resources(nodes)


def tap_id(node: str, port: str) -> str:
    return f"_serve-{node}-{port}"


def with_taps(graph: ValidatedGraph, resources: Resources, endpoint: str) -> ValidatedGraph:
    """The graph plus a hidden tap per output the server reads (drop_oldest, queue 1)."""
    extra = [
        NodeSpec.model_validate(
            {
                "id": tap_id(node, port),
                "node": TAP_NODE_TYPE,
                "params": {"endpoint": endpoint, "node": node, "port": port},
                "inputs": {
                    "messages": {"from": f"{node}/{port}", "queue": 1, "when_full": "drop_oldest"}
                },
            }
        )
        for node, port in resources.taps()
    ]
    spec = GraphSpec.model_validate(
        {**graph.spec.model_dump(by_alias=True), "nodes": [*graph.spec.nodes, *extra]}
    )
    tapped, issues = validate_spec(spec, Marks(graph.file))
    if tapped is None:  # pragma: no cover - the taps are built to be valid
        raise RuntimeError("; ".join(i.format() for i in issues))
    return tapped

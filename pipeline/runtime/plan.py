"""Plan a validated graph's processes and edges once, before anything starts.

``plan_graph`` decides, for every edge, its queue, policy, transport, release batch and
where its consumer binds (an ``EdgePlan``), and for every output port the size of its slot
pool (a ``PortPlan``); ``NodePlan`` gathers one node's part. The supervisor sends each
worker its ``NodePlan`` inside a ``WorkerConfig``; the transport takes only the plans.
On a cluster, a ``Layout`` says which machine runs each node: an edge between two machines
is planned ``tcp`` (its consumer binds on its machine's address), one within a machine stays
on shared memory; the placement decides, not the graph file.
A node of ``replicas: N`` is planned as N instances, ``id[0]`` ... ``id[N-1]``, each with its
own edges (``pipeline.runtime.replicas``: how messages are spread over them and merged back).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pipeline.graph.validate import ValidatedGraph
from pipeline.runtime.replicas import instance_ids
from pipeline.transport.curve import RunKeys
from pipeline.transport.plan import EdgePlan, PortPlan, release_batch, slot_pool_size
from pipeline.usercode import search_folders

__all__ = [
    "GraphPlan",
    "Layout",
    "NodePlan",
    "WorkerConfig",
    "plan_graph",
    "rebind_candidates",
    "replan_moved",
]

TCP_BIND = "tcp://127.0.0.1:*"


@dataclasses.dataclass(frozen=True)
class NodePlan:
    """One node: what to build and its edges (inputs it binds, outputs it connects)."""

    node_id: str
    node_type: str
    params: Mapping[str, Any]
    index: int
    is_source: bool
    inputs: tuple[EdgePlan, ...]
    outputs: tuple[PortPlan, ...]
    module_paths: tuple[str, ...] = ()  # where a module:Class type's module is looked up
    pace: str = "realtime"  # a source's pace (pipeline.runtime.pacing)
    max_fps: float | None = None
    replica: int = 0  # which copy of a replicated node (pipeline.runtime.replicas)
    replicas: int = 1

    @property
    def group(self) -> str:
        """The graph node's id (``faces`` for the copy ``faces[1]``)."""
        return self.node_id.split("[", 1)[0]

    def to_wire(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "node_type": self.node_type,
            "params": dict(self.params),
            "index": self.index,
            "is_source": self.is_source,
            "inputs": [e.to_wire() for e in self.inputs],
            "outputs": [p.to_wire() for p in self.outputs],
            "module_paths": list(self.module_paths),
            "pace": self.pace,
            "max_fps": self.max_fps,
            "replica": self.replica,
            "replicas": self.replicas,
        }

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> NodePlan:
        return cls(
            node_id=d["node_id"],
            node_type=d["node_type"],
            params=d["params"],
            index=int(d["index"]),
            is_source=bool(d["is_source"]),
            inputs=tuple(EdgePlan.from_wire(e) for e in d["inputs"]),
            outputs=tuple(PortPlan.from_wire(p) for p in d["outputs"]),
            module_paths=tuple(d.get("module_paths", ())),
            pace=d.get("pace", "realtime"),
            max_fps=d.get("max_fps"),
            replica=int(d.get("replica", 0)),
            replicas=int(d.get("replicas", 1)),
        )


@dataclasses.dataclass(frozen=True)
class GraphPlan:
    """Every node's plan, in the graph file's order."""

    nodes: tuple[NodePlan, ...]

    def edges(self) -> Iterator[EdgePlan]:
        for node in self.nodes:
            yield from node.inputs

    def edges_from(self, node_id: str) -> list[EdgePlan]:
        return [e for e in self.edges() if e.producer == node_id]


@dataclasses.dataclass(frozen=True)
class WorkerConfig:
    """What a worker process needs: its node's plan and the run it belongs to."""

    plan: NodePlan
    control: str  # the supervisor's control endpoint
    shm_prefix: str  # names of this run's shared-memory segments start with it
    log_level: str = "INFO"
    stats_path: str = ""  # where the supervisor publishes every node's statistics
    keys: RunKeys | None = None  # CURVE keys of the run, for its tcp sockets (a cluster)
    stop_grace_s: float = 5.0  # after a SIGTERM, how long the node may drain before it unwinds
    activity_path: str = ""  # the run's activity board (pipeline.runtime.activity)
    generation: int = 0  # 0 at the start; 1, 2, ... for each restart of the node

    @property
    def node_id(self) -> str:
        return self.plan.node_id

    def to_wire(self) -> dict[str, Any]:
        return {
            "plan": self.plan.to_wire(),
            "control": self.control,
            "shm_prefix": self.shm_prefix,
            "log_level": self.log_level,
            "stats_path": self.stats_path,
            "keys": self.keys.to_wire() if self.keys else None,
            "stop_grace_s": self.stop_grace_s,
            "activity_path": self.activity_path,
            "generation": self.generation,
        }

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> WorkerConfig:
        return cls(
            plan=NodePlan.from_wire(d["plan"]),
            control=d["control"],
            shm_prefix=d["shm_prefix"],
            log_level=d.get("log_level", "INFO"),
            stats_path=d.get("stats_path", ""),
            keys=RunKeys.from_wire(d["keys"]) if d.get("keys") else None,
            stop_grace_s=float(d.get("stop_grace_s", 5.0)),
            activity_path=d.get("activity_path", ""),
            generation=int(d.get("generation", 0)),
        )


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where each node of a graph runs on a cluster.

    Attributes:
        hosts: node id -> the machine it runs on (a Ray node id): nodes with the same one
            share memory.
        addresses: node id -> that machine's address, where its tcp edges bind.
        names: node id -> how messages name that machine (host name or address).
    """

    hosts: Mapping[str, str]
    addresses: Mapping[str, str]
    names: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def crosses(self, producer: str, consumer: str) -> bool:
        return self.hosts[producer] != self.hosts[consumer]


def plan_graph(
    graph: ValidatedGraph, run_dir: str | Path, layout: Layout | None = None
) -> GraphPlan:
    """Plan every node and edge of ``graph``; ipc sockets go in ``run_dir``.

    With a ``layout`` (a cluster), an edge between machines is ``tcp``, bound on the
    consumer's machine's address, whatever its ``transport`` in the graph file says.
    """
    # a node of ``replicas: N`` is N instances (``faces[0]``...), each its own process
    copies = {node.id: instance_ids(node.id, node.replicas) for node in graph.spec.nodes}
    index = {iid: i for i, iid in enumerate(iid for ids in copies.values() for iid in ids)}
    joins = {
        node.id: len({e.input for e in graph.edges_into(node.id)}) > 1 for node in graph.spec.nodes
    }
    restarts = {node.id: node.restart != "never" for node in graph.spec.nodes}
    edges: list[EdgePlan] = []
    for edge in graph.edges:
        spec = edge.spec
        producers, consumers = copies[edge.producer], copies[edge.consumer]
        spread: Literal["", "free", "seq"] = ""
        if len(consumers) > 1:
            spread = "seq" if joins[edge.consumer] else "free"
        for k, producer in enumerate(producers):
            for consumer in consumers:
                tcp = spec.transport == "tcp"
                bind_tcp = TCP_BIND
                if layout is not None:
                    tcp = tcp or layout.crosses(producer, consumer)
                    address = layout.addresses[consumer]
                    bind_tcp = f"tcp://[{address}]:*" if ":" in address else f"tcp://{address}:*"
                # a streams input has one edge (and one socket) per upstream, and an input
                # fed by a replicated node one per copy of it
                bind = f"ipc://{run_dir}/{index[consumer]}-{edge.input}"
                if edge.list_index:
                    bind += f"-{edge.list_index}"
                if len(producers) > 1:
                    bind += f"-r{k}"
                batch = release_batch(spec.queue, spec.when_full)
                if tcp and layout is not None and restarts[edge.consumer]:
                    # a consumer that may be lost with its machine and restarted elsewhere:
                    # then its progress is what its producer saw released (the progress file
                    # is on that machine), so each release goes at once
                    batch = 1
                edges.append(
                    EdgePlan(
                        producer=producer,
                        output=edge.output,
                        consumer=consumer,
                        input=edge.input,
                        queue=spec.queue,
                        when_full=spec.when_full,
                        transport="tcp" if tcp else "shm",
                        release_batch=batch,
                        bind=bind_tcp if tcp else bind,
                        source=spec.source,
                        spread=spread,
                    )
                )
    nodes = []
    for node in graph.spec.nodes:
        cls = graph.classes[node.id]
        for k, iid in enumerate(copies[node.id]):
            outputs = []
            for port in cls.outputs:
                mine = tuple(e for e in edges if e.producer == iid and e.output == port)
                outputs.append(PortPlan(port, mine, slot_pool_size(mine)))
            nodes.append(
                NodePlan(
                    node_id=iid,
                    node_type=node.node,
                    params=dict(node.params),
                    index=index[iid],
                    is_source=cls.is_source(),
                    inputs=tuple(e for e in edges if e.consumer == iid),
                    outputs=tuple(outputs),
                    module_paths=search_folders(graph.file) if ":" in node.node else (),
                    pace=node.pace or "realtime",
                    max_fps=node.max_fps,
                    replica=k,
                    replicas=node.replicas,
                )
            )
    return GraphPlan(tuple(nodes))


def replan_moved(
    current: GraphPlan, fresh: GraphPlan, node_id: str, rebound: Collection[str] = ()
) -> GraphPlan:
    """The plan after ``node_id`` was placed on another machine (a cluster lost its own):
    ``fresh`` is the whole graph planned for the new ``Layout``.

    The moved node binds its inputs anew, so those edges are ``fresh``'s: shared memory
    from a producer now on its machine, tcp from one on another (a producer that kept
    running switches its sender to the new kind when told to connect again). So are its
    output edges named in ``rebound``: their consumers kept running and bind them anew
    (``protocol.Rebind``; ``rebind_candidates`` says which). Every other edge stays as
    ``current`` has it: it goes on with the socket its consumer bound, and the moved node
    connects to it as it is.
    """
    moved = {
        e.name: e
        for e in fresh.edges()
        if e.consumer == node_id or (e.producer == node_id and e.name in rebound)
    }

    def pick(edge: EdgePlan) -> EdgePlan:
        return moved.get(edge.name, edge)

    nodes = []
    for node in current.nodes:
        outputs = tuple(
            dataclasses.replace(port, edges=tuple(pick(e) for e in port.edges))
            for port in node.outputs
        )
        inputs = tuple(pick(e) for e in node.inputs)
        nodes.append(dataclasses.replace(node, inputs=inputs, outputs=outputs))
    return GraphPlan(tuple(nodes))


def rebind_candidates(current: GraphPlan, fresh: GraphPlan, node_id: str) -> list[EdgePlan]:
    """The output edges of the moved ``node_id`` whose transport the new placement changes
    (``fresh``'s plans): tcp to a consumer it now shares a machine with, shared memory to
    one it left. Not those into a copy's merged input (the moved node is one of a
    replicated node's copies): they keep their sockets."""
    node = next(n for n in current.nodes if n.node_id == node_id)
    if node.replicas > 1:
        return []
    before = {e.name: e for e in current.edges_from(node_id)}
    return [
        e
        for e in fresh.edges_from(node_id)
        if e.name in before and e.transport != before[e.name].transport
    ]

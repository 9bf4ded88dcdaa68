"""Whole-graph checks on a parsed ``GraphSpec``: node types, params, wiring, types, cycles.

Every problem is collected (never stop at the first) and located through the YAML marks:
duplicate ids, unknown node types, each node's params against its ``Params`` model, unknown
nodes or ports in input references, port type mismatches, required inputs left unconnected,
cycles, and outputs that nobody reads (a warning).
"""

from __future__ import annotations

import dataclasses
import graphlib
from collections.abc import Sequence
from typing import Protocol

from pydantic import ValidationError

from pipeline.checks import port_in_use
from pipeline.errors import ConfigIssue, NodeDefinitionError, RegistryError
from pipeline.graph.spec import EdgeSpec, GraphSpec, NodeSpec
from pipeline.node import Node
from pipeline.params import NodeParams
from pipeline.registry import load_node_class, suggest
from pipeline.usercode import search_folders

__all__ = ["Edge", "Marks", "ValidatedGraph", "validate_spec"]

PathKey = tuple[str | int, ...]


class Marks(Protocol):
    """Where each value of the graph file is (``pipeline.graph.load.Marks`` is one): the
    checks here only locate their issues, they never read YAML."""

    file: str
    values: dict[PathKey, tuple[int, int]]

    def at(self, path: PathKey, *, key: bool = False) -> tuple[int, int]: ...

    def issue(
        self,
        path: PathKey,
        message: str,
        *,
        key: bool = False,
        hints: Sequence[str] = (),
        severity: str = "error",
    ) -> ConfigIssue: ...


@dataclasses.dataclass(frozen=True)
class Edge:
    """One connection: ``producer/output -> consumer.input``."""

    producer: str
    output: str
    consumer: str
    input: str
    spec: EdgeSpec
    node_index: int = 0  # of the consumer in the graph file (for located errors)
    list_index: int | None = None  # in a streams input's list

    @property
    def path(self) -> tuple[str | int, ...]:
        """Where this edge is written in the graph file (for ``Marks``)."""
        path: tuple[str | int, ...] = ("nodes", self.node_index, "inputs", self.input)
        return path if self.list_index is None else (*path, self.list_index)


@dataclasses.dataclass
class ValidatedGraph:
    """A graph that passed every check: spec, node classes, params, edges, topology."""

    spec: GraphSpec
    file: str
    classes: dict[str, type[Node]]
    params: dict[str, NodeParams]
    edges: list[Edge]
    warnings: list[ConfigIssue] = dataclasses.field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.graph

    def node(self, node_id: str) -> NodeSpec:
        """The node of that id; a copy of a replicated node (``faces[1]``) is its node's."""
        group = node_id.split("[", 1)[0] if node_id.endswith("]") else node_id
        for node in self.spec.nodes:
            if node.id == group:
                return node
        raise KeyError(node_id)

    def sources(self) -> list[str]:
        return [n.id for n in self.spec.nodes if self.classes[n.id].is_source()]

    def sinks(self) -> list[str]:
        return [n.id for n in self.spec.nodes if not any(e.producer == n.id for e in self.edges)]

    def edges_from(self, node_id: str) -> list[Edge]:
        return [e for e in self.edges if e.producer == node_id]

    def edges_into(self, node_id: str) -> list[Edge]:
        return [e for e in self.edges if e.consumer == node_id]

    def topological_order(self) -> list[str]:
        """Node ids, every producer before its consumers (the graph has no cycle)."""
        sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter(
            {n.id: [] for n in self.spec.nodes}
        )
        for edge in self.edges:
            sorter.add(edge.consumer, edge.producer)
        return list(sorter.static_order())


def validate_spec(spec: GraphSpec, marks: Marks) -> tuple[ValidatedGraph | None, list[ConfigIssue]]:
    """Phases 3 and 4. Returns the validated graph (None if any error) and every issue."""
    issues: list[ConfigIssue] = []
    index: dict[str, int] = {}
    for i, node in enumerate(spec.nodes):
        if node.id in index:
            first_line = marks.at(("nodes", index[node.id], "id"))[0]
            issues.append(
                marks.issue(
                    ("nodes", i, "id"),
                    f"duplicate node id {node.id!r}",
                    hints=[f"first defined at line {first_line}"],
                )
            )
        else:
            index[node.id] = i

    classes: dict[str, type[Node]] = {}
    params: dict[str, NodeParams] = {}
    folders = search_folders(marks.file)
    for i, node in enumerate(spec.nodes):
        if node.id in classes:
            continue
        try:
            cls = load_node_class(node.node, search=folders)
        except NodeDefinitionError as exc:
            issues.append(
                marks.issue(
                    ("nodes", i, "node"),
                    f"node {node.id!r}: node type {node.node!r} is malformed: {exc}",
                )
            )
            continue
        except RegistryError as exc:
            hints = list(getattr(exc, "hints", ()))
            if ":" not in node.node:
                hints.append("`pipeline nodes` lists the available node types")
            issues.append(
                marks.issue(("nodes", i, "node"), f"node {node.id!r}: {exc}", hints=hints)
            )
            continue
        classes[node.id] = cls
        try:
            params[node.id] = cls.Params.model_validate(node.params)
        except ValidationError as exc:
            issues.extend(_param_issues(exc, cls, node, i, marks))

    for i, node in enumerate(spec.nodes):
        if node.id in params and index.get(node.id) == i:
            issues.extend(_node_checks(classes[node.id], params[node.id], node, i, marks))
    issues.extend(_serve_checks(spec, marks))

    edges: list[Edge] = []
    for i, node in enumerate(spec.nodes):
        node_cls = classes.get(node.id)
        if node_cls is None or index.get(node.id) != i:
            continue
        for port, k, ref in node.input_refs():
            path: tuple[str | int, ...] = ("nodes", i, "inputs", port)
            if k is not None and port in node_cls.inputs and not node_cls.inputs[port].streams:
                if k == 0:
                    issues.append(
                        marks.issue(
                            path,
                            f"input {port!r} of node {node.id!r} takes one upstream, "
                            f"got a list of {_count(node.inputs[port])}",
                            hints=[
                                "only a streams input (e.g. the frames of detector, classifier, "
                                "tensors, preview) takes a list, one entry per camera; write "
                                f"'{port}: <node>/<port>'"
                            ],
                        )
                    )
                continue
            if k is not None:
                path = (*path, k)
            if port not in node_cls.inputs:
                known = ", ".join(node_cls.inputs) or "none (it is a source)"
                hints = [f"node type {node.node!r} has inputs: {known}"]
                match = suggest(port, list(node_cls.inputs))
                if match:
                    hints.append(f"hint: did you mean {match!r}?")
                issues.append(
                    marks.issue(
                        path, f"node {node.id!r} has no input {port!r}", key=True, hints=hints
                    )
                )
                continue
            ref_path = (*path, "from") if (*path, "from") in marks.values else path
            producer = ref.node
            if producer not in index:
                match = suggest(producer, list(index))
                hints = [f"hint: did you mean '{match}/{ref.port}'?"] if match else []
                hints.append(f"nodes: {', '.join(index)}")
                issues.append(
                    marks.issue(
                        ref_path,
                        f"input {port!r} of node {node.id!r} refers to unknown node {producer!r}",
                        hints=hints,
                    )
                )
                continue
            pcls = classes.get(producer)
            if pcls is None:
                continue  # its type is already reported
            if ref.port not in pcls.outputs:
                outs = ", ".join(pcls.outputs) or "none (it is a sink)"
                hints = [f"node {producer!r} has outputs: {outs}"]
                match = suggest(ref.port, list(pcls.outputs))
                if match:
                    hints.append(f"hint: did you mean '{producer}/{match}'?")
                issues.append(
                    marks.issue(
                        ref_path,
                        f"input {port!r} of node {node.id!r} refers "
                        f"to unknown output {ref.from_!r}",
                        hints=hints,
                    )
                )
                continue
            out_type = pcls.outputs[ref.port].type
            in_type = node_cls.inputs[port].type
            if not issubclass(out_type, in_type):
                issues.append(
                    marks.issue(
                        ref_path,
                        f"type mismatch: {ref.from_!r} sends {out_type.__name__} but input "
                        f"{port!r} of node {node.id!r} takes {in_type.__name__}",
                    )
                )
                continue
            if producer == node.id:
                issues.append(
                    marks.issue(
                        ref_path,
                        f"node {node.id!r} reads its own output "
                        f"{ref.from_!r}: a graph must not have cycles",
                    )
                )
                continue
            if k is not None and any(
                e.consumer == node.id and e.input == port and e.producer == producer for e in edges
            ):
                issues.append(
                    marks.issue(
                        ref_path,
                        f"input {port!r} of node {node.id!r} lists {ref.from_!r} twice, or two "
                        f"outputs of {producer!r}",
                        hints=["list each upstream stream once"],
                    )
                )
                continue
            edges.append(Edge(producer, ref.port, node.id, port, ref, i, k))
        if node_cls.is_source():
            for key in ("restart", "restart_backoff_s", "max_restarts", "restart_window_s"):
                if key in node.model_fields_set and (key != "restart" or node.restart != "never"):
                    issues.append(
                        marks.issue(
                            ("nodes", i, key),
                            f"node {node.id!r}: {key} applies to nodes with inputs only, and "
                            f"{node.node!r} is a source",
                            key=True,
                            hints=[
                                "a restarted source would start its stream over (a file from "
                                "its first frame): restart the nodes after it instead"
                            ],
                        )
                    )
        elif node.restart != "never" and node.replicas > 1:
            issues.append(
                marks.issue(
                    ("nodes", i, "restart"),
                    f"node {node.id!r}: restart is not supported with replicas yet",
                    key=True,
                    hints=["keep one of the two: replicas: 1, or restart: never"],
                )
            )
        elif node.restart == "never":
            for key in ("restart_backoff_s", "max_restarts", "restart_window_s"):
                if key in node.model_fields_set:
                    issues.append(
                        marks.issue(
                            ("nodes", i, key),
                            f"node {node.id!r}: {key} has no effect without a restart policy",
                            key=True,
                            severity="warning",
                            hints=["add 'restart: on-failure' (or always) to the node"],
                        )
                    )
        if not node_cls.is_source():
            for key in ("pace", "max_fps"):
                if getattr(node, key) is not None:
                    issues.append(
                        marks.issue(
                            ("nodes", i, key),
                            f"node {node.id!r}: {key} applies to sources only, and "
                            f"{node.node!r} has inputs",
                            key=True,
                            hints=["a node with inputs runs at the rate its inputs arrive"],
                        )
                    )
        for port, spec_in in node_cls.inputs.items():
            if spec_in.required and port not in node.inputs:
                issues.append(
                    marks.issue(
                        ("nodes", i),
                        f"required input {port!r} of node {node.id!r} is not connected",
                        hints=[f"add under 'inputs:' a line '{port}: <node>/<port>'"],
                    )
                )

    for cycle in _cycles(list(index), [(e.producer, e.consumer) for e in edges]):
        first = min(cycle, key=lambda n: index[n])
        at = cycle.index(first)
        cycle = cycle[at:] + cycle[:at]  # start at the node written first: stable messages
        loop = " -> ".join([*cycle, cycle[0]])
        issues.append(
            marks.issue(
                ("nodes", index[first]),
                f"cycle in the graph: {loop}",
                hints=["a graph must be acyclic; remove one of these inputs"],
            )
        )

    if not any(i.severity == "error" for i in issues):
        issues.extend(_stream_issues(list(index), edges, classes, marks))
    if not any(i.severity == "error" for i in issues):
        issues.extend(_replica_issues(spec, index, edges, classes, marks))

    if any(i.severity == "error" for i in issues):
        return None, issues  # an unread output is often a consequence of those errors

    read = {(e.producer, e.output) for e in edges}
    for i, node in enumerate(spec.nodes):
        node_cls = classes.get(node.id)
        if node_cls is None or index.get(node.id) != i:
            continue
        for out in node_cls.outputs:
            if (node.id, out) not in read:
                issues.append(
                    marks.issue(
                        ("nodes", i, "id"),
                        f"output '{node.id}/{out}' is not read by any node",
                        severity="warning",
                    )
                )

    graph = ValidatedGraph(spec, marks.file, classes, params, edges)
    return graph, issues


def _count(refs: object) -> int:
    return len(refs) if isinstance(refs, list) else 1


def _stream_issues(
    nodes: list[str], edges: list[Edge], classes: dict[str, type[Node]], marks: Marks
) -> list[ConfigIssue]:
    """The wiring of several cameras: which sources' messages each edge carries (through
    ``source:`` filters), checked where a mix would go wrong.

    A ``source:`` filter must name a source the edge carries; the entries of one streams
    input come from different sources (a message says its stream by its ``source``); and an
    input joined with others on seq must not carry a mix of sources (seqs of different
    cameras are unrelated): it needs a ``source:`` filter.
    """
    into: dict[str, list[Edge]] = {}
    for edge in edges:
        into.setdefault(edge.consumer, []).append(edge)
    carried = _carried(nodes, edges, classes)

    issues: list[ConfigIssue] = []
    for edge in edges:
        want = edge.spec.source
        upstream = carried.get(edge.producer, set())
        if want and want not in upstream:
            at = (*edge.path, "source")
            issues.append(
                marks.issue(
                    at if at in marks.values else edge.path,
                    f"input {edge.input!r} of node {edge.consumer!r} picks source {want!r}, "
                    f"but {edge.spec.from_!r} carries no messages of it",
                    hints=[f"sources upstream of {edge.producer!r}: {', '.join(sorted(upstream))}"],
                )
            )
    for consumer, group in into.items():
        cls = classes[consumer]
        if any(spec.streams for spec in cls.inputs.values()):
            seen: dict[str, Edge] = {}
            for edge in group:
                for source in sorted(_edge_carries(edge, carried)):
                    first = seen.get(source)
                    if first is not None:
                        issues.append(
                            marks.issue(
                                edge.path,
                                f"streams input {edge.input!r} of node {consumer!r}: "
                                f"{first.spec.from_!r} and {edge.spec.from_!r} both carry the "
                                f"frames of source {source!r}",
                                hints=[
                                    "each entry of a streams input must come from a different "
                                    "source (camera): its messages are told apart by their "
                                    "source; pick one with {from: ..., source: <camera>}"
                                ],
                            )
                        )
                        break
                    seen[source] = edge
        elif len(group) > 1:
            sets = {edge.input: _edge_carries(edge, carried) for edge in group}
            fewest = min(sets.values(), key=len)
            for edge in group:
                mine = sets[edge.input]
                if len(mine) > 1 and mine != fewest:
                    pick = next(iter(fewest)) if len(fewest) == 1 else "<camera>"
                    issues.append(
                        marks.issue(
                            edge.path,
                            f"input {edge.input!r} of node {consumer!r} carries the messages of "
                            f"several sources ({', '.join(sorted(mine))}), joined on seq with "
                            "inputs that do not: the seqs of different cameras are unrelated",
                            hints=[
                                f"pick one camera's: {{from: {edge.spec.from_}, source: {pick}}}"
                            ],
                        )
                    )
    return issues


def _replica_issues(
    spec: GraphSpec,
    index: dict[str, int],
    edges: list[Edge],
    classes: dict[str, type[Node]],
    marks: Marks,
) -> list[ConfigIssue]:
    """``replicas: N`` (``pipeline.runtime.replicas``): not on a source (each copy would make
    the whole stream again), and not on a node fed the messages of several sources (their
    copies' results are merged back by seq, and the seqs of different cameras are unrelated).
    A node joining several inputs may be replicated: each seq goes to copy ``seq mod N``. A
    node fed straight by another replicated node may be too: the upstream copies' watermarks
    tell each copy what went to its siblings."""
    issues: list[ConfigIssue] = []
    carried = _carried(list(index), edges, classes)
    for node in spec.nodes:
        if node.replicas == 1 or index.get(node.id) is None:
            continue
        i = index[node.id]
        at = ("nodes", i, "replicas")
        if classes[node.id].is_source():
            issues.append(
                marks.issue(
                    at,
                    f"node {node.id!r}: a source cannot be replicated (replicas: "
                    f"{node.replicas}): each copy would produce the whole stream again",
                    key=True,
                    hints=["replicate the slow node after it, e.g. the detector"],
                )
            )
            continue
        into = [e for e in edges if e.consumer == node.id]
        sources: set[str] = set()
        for edge in into:
            sources |= _edge_carries(edge, carried)
        if len(sources) > 1:
            issues.append(
                marks.issue(
                    at,
                    f"node {node.id!r}: replicas: {node.replicas} on a node fed the messages "
                    f"of several sources ({', '.join(sorted(sources))}): its copies' results "
                    "are merged back in seq order, and the seqs of different cameras are "
                    "unrelated",
                    key=True,
                    hints=[
                        "use one replicated node per camera (inputs with {from: ..., "
                        "source: <camera>}), or no replicas"
                    ],
                )
            )
    return issues


def _carried(
    nodes: list[str], edges: list[Edge], classes: dict[str, type[Node]]
) -> dict[str, set[str]]:
    """Each node's sources: the source nodes whose messages it carries (after filters)."""
    into: dict[str, list[Edge]] = {}
    for edge in edges:
        into.setdefault(edge.consumer, []).append(edge)
    carried: dict[str, set[str]] = {}

    def carries(node_id: str) -> set[str]:  # the graph is acyclic here
        if node_id not in carried:
            if classes[node_id].is_source():
                carried[node_id] = {node_id}
            else:
                found: set[str] = set()
                for edge in into.get(node_id, []):
                    carries(edge.producer)
                    found |= _edge_carries(edge, carried)
                carried[node_id] = found
        return carried[node_id]

    for node_id in nodes:
        carries(node_id)
    return carried


def _edge_carries(edge: Edge, carried: dict[str, set[str]]) -> set[str]:
    """The sources whose messages travel on ``edge`` (after its ``source:`` filter)."""
    upstream = carried.get(edge.producer, set())
    want = edge.spec.source
    return ({want} & upstream) if want else set(upstream)


def _serve_checks(spec: GraphSpec, marks: Marks) -> list[ConfigIssue]:
    """The ``serve:`` section: its address is ``HOST:PORT``, and warn when the port is taken."""
    serve = spec.serve
    if serve is None or not serve.address:
        return []
    host, sep, port_text = serve.address.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        return [
            marks.issue(
                ("serve", "address"),
                f"serve.address {serve.address!r} is not HOST:PORT",
                hints=["e.g. address: 127.0.0.1:8081 (port 0 picks a free one)"],
            )
        ]
    port = int(port_text)
    if not port_in_use(host, port):
        return []
    return [
        marks.issue(
            ("serve", "address"),
            f"serve.address: port {port} on {host} is in use by another program (another "
            "graph's server or preview?): serving this graph will fail",
            hints=["set serve.address to a free port, or to HOST:0 to pick one"],
            severity="warning",
        )
    ]


def _node_checks(
    cls: type[Node], params: NodeParams, node: NodeSpec, index: int, marks: Marks
) -> list[ConfigIssue]:
    """The node type's own ``check(params)``: missing inputs, unwritable outputs, ports."""
    hook = next((vars(k)["check"] for k in cls.__mro__ if "check" in vars(k)), None)
    if not isinstance(hook, (classmethod, staticmethod)):
        return [
            marks.issue(
                ("nodes", index, "node"),
                f"node {node.id!r}: {cls.__qualname__}.check is not a classmethod: "
                "Node.check(cls, params) is the pre-run check hook",
                hints=["make it a @classmethod check(cls, params), or rename your method"],
            )
        ]
    try:
        found = list(cls.check(params))
    except Exception as exc:
        return [
            marks.issue(
                ("nodes", index, "node"),
                f"node {node.id!r}: {cls.__qualname__}.check() raised {type(exc).__name__}: {exc}",
            )
        ]
    issues = []
    for found_issue in found:
        parts = [p for p in found_issue.param.split(".") if p]
        issues.append(
            marks.issue(
                ("nodes", index, "params", *parts),
                f"params.{found_issue.param} of node {node.id!r}: {found_issue.message}",
                hints=found_issue.hints,
                severity=found_issue.severity,
            )
        )
    return issues


def _cycles(nodes: list[str], links: list[tuple[str, str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of nodes (Tarjan), in node order.

    Enough to report every independent loop of a graph file; a group with several loops is
    reported once (removing one input usually breaks them all, and the check runs again).
    """
    after: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in links:
        if b not in after[a]:
            after[a].append(b)
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(root: str) -> None:
        work = [(root, 0)]
        order[root] = low[root] = len(order)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, i = work[-1]
            if i < len(after[node]):
                work[-1] = (node, i + 1)
                nxt = after[node][i]
                if nxt not in order:
                    order[nxt] = low[nxt] = len(order)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], order[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == order[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(group)

    for n in nodes:
        if n not in order:
            visit(n)
    position = {n: i for i, n in enumerate(nodes)}
    cycles = []
    for group in sorted(groups, key=lambda g: min(position[n] for n in g)):
        members = set(group)
        start = min(group, key=lambda n: position[n])
        # the shortest way back to the start, inside the group (breadth first)
        came_from: dict[str, str] = {}
        frontier = [start]
        found = None
        while frontier and found is None:
            nxt_frontier = []
            for node in frontier:
                for nxt in after[node]:
                    if nxt == start:
                        found = node
                        break
                    if nxt in members and nxt not in came_from:
                        came_from[nxt] = node
                        nxt_frontier.append(nxt)
                if found is not None:
                    break
            frontier = nxt_frontier
        assert found is not None
        path = [found]
        while path[-1] != start:
            path.append(came_from[path[-1]])
        cycles.append(path[::-1])
    return cycles


def _param_issues(
    exc: ValidationError, cls: type[Node], node: NodeSpec, index: int, marks: Marks
) -> list[ConfigIssue]:
    issues = []
    fields = list(cls.Params.model_fields)
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if isinstance(p, (str, int)))
        path = ("nodes", index, "params", *loc)
        name = ".".join(str(p) for p in loc)
        if err["type"] == "extra_forbidden":
            hints = []
            match = suggest(str(loc[-1]), fields)
            if match:
                hints.append(f"hint: did you mean {match!r}?")
            hints.append(f"params of {node.node!r}: {', '.join(fields) or 'none'}")
            if loc[-1] in ("pace", "max_fps") and cls.is_source():
                hints.append(
                    f"{loc[-1]} is a key of the node, next to params: (pace: fast / realtime)"
                )
            issues.append(
                marks.issue(
                    path, f"unknown param {name!r} of node {node.id!r}", key=True, hints=hints
                )
            )
        elif err["type"] == "missing":
            issues.append(
                marks.issue(
                    ("nodes", index, "params") if node.params else ("nodes", index),
                    f"missing param {name!r} of node {node.id!r}",
                    hints=[_describe_field(cls, str(loc[0]))],
                )
            )
        else:
            msg = err["msg"][0].lower() + err["msg"][1:]
            issues.append(
                marks.issue(
                    path, f"params.{name} of node {node.id!r}: {msg}, got {err.get('input')!r}"
                )
            )
    return issues


def _describe_field(cls: type[Node], name: str) -> str:
    field = cls.Params.model_fields.get(name)
    if field is None or not field.description:
        return f"see `pipeline nodes {name}`"
    return f"{name}: {field.description}"

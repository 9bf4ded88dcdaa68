"""A graph file made ready for a bench: ``--set`` and ``--pace`` applied, validated, hashed.

``--set node.param=value`` changes a node's params before validation (a dotted path reaches
into nested params: ``detector.decoder_params.iou_threshold=0.4``); values are YAML, so
``[320,240]`` is a list and ``null`` is None. ``--pace fast|realtime`` sets the ``pace`` of
every source node (``pipeline.runtime.pacing``: the runtime paces every source the same
way). Errors come back as ``ConfigIssue`` objects, printed compiler-style like ``pipeline
check``; the file is read and checked by ``pipeline.graph.check_graph``, with these changes
as its overrides.

The graph hash identifies *what ran*: sha256 of a canonical JSON of the graph name, every
node's id, type, validated params (defaults filled in, so writing a default out does not
change it), pace and max_fps when set, and input edges, with nodes sorted by id. Comments,
layout, key order, node order and the ``description`` do not count; any param change, from
the file or from ``--set``/``--pace``, does. ``base_hash`` is the same for the file as
written, so the points of a sweep share it.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ConfigIssue, RegistryError
from pipeline.graph.load import check_graph
from pipeline.graph.spec import GraphSpec, Pace
from pipeline.graph.validate import ValidatedGraph
from pipeline.registry import load_node_class, suggest

__all__ = [
    "Pace",
    "ParamSet",
    "PreparedGraph",
    "describe_sets",
    "graph_hash",
    "parse_set",
    "prepare_graph",
    "topology",
]


@dataclasses.dataclass(frozen=True)
class ParamSet:
    """One ``--set node.path=value``.

    Attributes:
        node: the node id.
        path: the param name, then keys into nested mappings.
        value: the parsed YAML value.
    """

    node: str
    path: tuple[str, ...]
    value: Any

    @property
    def key(self) -> str:
        """``node.param[.sub]`` as written."""
        return ".".join((self.node, *self.path))


def parse_set(text: str, *, many: bool = False) -> tuple[str, tuple[str, ...], list[Any]]:
    """Split ``node.param=value`` into node id, param path and value(s).

    Args:
        text: the ``--set`` argument.
        many: the value is a comma-separated list (a sweep): ``1,2,4`` or
            ``[320,240],[640,480]``; commas inside brackets or quotes do not split.

    Returns:
        ``(node, path, values)``; ``values`` has one item unless ``many``.

    Raises:
        ValueError: with a message that names the argument and what is expected.
    """
    lhs, sep, rhs = text.partition("=")
    lhs = lhs.strip()
    shape = "node.param=v1,v2,..." if many else "node.param=value"
    if not sep or "." not in lhs:
        raise ValueError(f"--set {text!r}: expected {shape}")
    node, *path = lhs.split(".")
    if not node or not all(path):
        raise ValueError(f"--set {text!r}: expected {shape} (an empty name in {lhs!r})")
    if not rhs.strip():
        raise ValueError(f"--set {text!r}: no value after '='; write null for none")
    try:
        parsed = yaml.safe_load(f"[{rhs}]" if many else rhs)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"--set {text!r}: the value is not valid YAML ({problem})") from None
    values = parsed if many else [parsed]
    if not isinstance(values, list) or not values:
        raise ValueError(f"--set {text!r}: expected {shape}")
    return node, tuple(path), values


@dataclasses.dataclass
class PreparedGraph:
    """A validated graph with the bench's changes, and its identity.

    Attributes:
        graph: ready for ``run_graph``.
        file: the graph file as given.
        sets: every param changed, ``node.param -> value``, from ``--pace`` and ``--set``.
        hash: ``sha256:...`` of what runs.
        base_hash: ``sha256:...`` of the file as written.
        warnings: non-fatal issues (outputs nobody reads).
    """

    graph: ValidatedGraph
    file: str
    sets: dict[str, Any]
    hash: str
    base_hash: str
    warnings: list[ConfigIssue]

    @property
    def name(self) -> str:
        """The graph's name."""
        return self.graph.name


def _canonical(graph: ValidatedGraph) -> dict[str, Any]:
    nodes = []
    for node in sorted(graph.spec.nodes, key=lambda n: n.id):
        params = graph.params.get(node.id)
        entry = {
            "id": node.id,
            "node": node.node,
            "params": params.model_dump(mode="json") if params is not None else node.params,
            "inputs": {
                port: spec.model_dump(mode="json", by_alias=True)
                for port, spec in sorted(node.inputs.items())
            },
        }
        for key in ("pace", "max_fps"):
            if getattr(node, key) is not None:
                entry[key] = getattr(node, key)
        nodes.append(entry)
    return {"graph": graph.name, "nodes": nodes}


def graph_hash(graph: ValidatedGraph) -> str:
    """``sha256:<hex>`` of the graph's canonical JSON (see the module docstring)."""
    text = json.dumps(_canonical(graph), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def topology(graph: ValidatedGraph) -> dict[str, dict[str, Any]]:
    """Each node's type, role and input edges (producer, queue, policy): what the bottleneck
    analysis and a result file need to know about the graph's shape."""
    sources, sinks = set(graph.sources()), set(graph.sinks())
    out: dict[str, dict[str, Any]] = {}
    for node in graph.spec.nodes:
        role = "source" if node.id in sources else ("sink" if node.id in sinks else "transform")
        out[node.id] = {
            "type": node.node,
            "role": role,
            "inputs": {
                e.input: {"from": e.producer, "queue": e.spec.queue, "when_full": e.spec.when_full}
                for e in graph.edges_into(node.id)
            },
        }
    return out


def _is_source(type_id: str) -> bool:
    try:
        return load_node_class(type_id).is_source()
    except RegistryError:
        return False  # validation reports it


def _apply(
    spec: GraphSpec, sets: Sequence[ParamSet], pace: Pace | None, file: str
) -> tuple[GraphSpec, list[ConfigIssue], dict[str, Any]]:
    """The spec with ``pace`` on every source and the ``--set`` changes; the issues; and
    what changed, ``node.key -> value``."""
    applied: dict[str, Any] = {}
    if pace is not None:
        for node in spec.nodes:
            if _is_source(node.node):
                applied[f"{node.id}.pace"] = pace
        spec = spec.model_copy(
            update={
                "nodes": [
                    n.model_copy(update={"pace": pace}) if f"{n.id}.pace" in applied else n
                    for n in spec.nodes
                ]
            }
        )
    ids = [n.id for n in spec.nodes]
    params = {n.id: copy.deepcopy(dict(n.params)) for n in spec.nodes}
    issues = []
    for item in sets:
        if item.node not in params:
            match = suggest(item.node, ids)
            hints = [f"hint: did you mean '{match}'?"] if match else []
            hints.append(f"nodes: {', '.join(ids)}")
            issues.append(
                ConfigIssue(
                    file,
                    0,
                    0,
                    f"--set {item.key}",
                    f"--set {item.key}: graph {spec.graph!r} has no node {item.node!r}",
                    tuple(hints),
                )
            )
            continue
        target: Any = params[item.node]
        for depth, key in enumerate(item.path[:-1]):
            if target.get(key) is None:
                target[key] = {}
            target = target[key]
            if not isinstance(target, dict):
                where = ".".join((item.node, *item.path[: depth + 1]))
                issues.append(
                    ConfigIssue(
                        file,
                        0,
                        0,
                        f"--set {item.key}",
                        f"--set {item.key}: {where} is not a mapping, so it has no "
                        f"{item.path[depth + 1]!r}",
                    )
                )
                break
        else:
            target[item.path[-1]] = item.value
            applied[item.key] = item.value
    nodes = [n.model_copy(update={"params": params[n.id]}) for n in spec.nodes]
    return spec.model_copy(update={"nodes": nodes}), issues, applied


def prepare_graph(
    path: str | Path, sets: Sequence[ParamSet] = (), pace: Pace | None = None
) -> tuple[PreparedGraph | None, list[ConfigIssue]]:
    """Read, change and validate a graph file for a bench.

    Args:
        path: the graph file.
        sets: ``--set`` changes, applied in order after ``pace``.
        pace: ``fast`` or ``realtime`` for the sources, or None to keep the graph's.

    Returns:
        The prepared graph (None when there is any error) and every issue found, sorted by
        line, compiler-style (``pipeline check`` prints the same).
    """
    file = str(path)
    applied: dict[str, Any] = {}

    def overrides(spec: GraphSpec) -> tuple[GraphSpec, list[ConfigIssue]]:
        changed, issues, done = _apply(spec, sets, pace, file)
        applied.update(done)
        return changed, issues

    graph, issues = check_graph(path, overrides if (sets or pace) else None)
    if graph is None:
        return None, issues
    base = check_graph(path)[0] if (sets or pace) else graph
    warnings = [i for i in issues if i.severity == "warning"]
    graph.warnings = warnings
    prepared = PreparedGraph(
        graph=graph,
        file=file,
        sets=applied,
        hash=graph_hash(graph),
        base_hash=graph_hash(base) if base is not None else graph_hash(graph),
        warnings=warnings,
    )
    return prepared, issues


def describe_sets(sets: Mapping[str, Any]) -> str:
    """``detector.num_threads=2 camera.fps=0`` for a header line."""
    return " ".join(f"{k}={json.dumps(v)}" for k, v in sets.items())

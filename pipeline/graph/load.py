"""Read a graph file into a ``GraphSpec``, keeping the line and column of every value.

Values may use ``${VAR}`` / ``${VAR:-default}`` from the environment
(``pipeline.graph.envsubst``). Phases, each reporting every issue it finds before stopping:
YAML syntax; the graph schema
(unknown, missing or mistyped keys); then wiring and node params (``pipeline.graph.validate``).
Issues point at ``file:line:col`` through a table of YAML marks keyed by document path.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from pipeline.errors import ConfigError, ConfigIssue
from pipeline.graph import limits
from pipeline.graph.envsubst import UnsetVariableError, substitute
from pipeline.graph.shm_need import shm_issues
from pipeline.graph.spec import EdgeSpec, GraphSpec, NodeSpec, PlacementSpec
from pipeline.graph.validate import ValidatedGraph, validate_spec
from pipeline.registry import suggest

__all__ = [
    "Marks",
    "check_graph",
    "format_path",
    "load_graph",
    "parse_graph",
    "read_graph_file",
    "sort_issues",
]

PathKey = tuple[str | int, ...]


class Marks:
    """Line and column (1-based) of every key and value in a YAML document, by path."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.values: dict[PathKey, tuple[int, int]] = {}
        self.keys: dict[PathKey, tuple[int, int]] = {}

    def at(self, path: PathKey, *, key: bool = False) -> tuple[int, int]:
        """The position of ``path`` (of its key when ``key``), or of its nearest ancestor."""
        table = self.keys if key else self.values
        probe = tuple(path)
        while probe:
            if probe in table:
                return table[probe]
            if probe in self.values:
                return self.values[probe]
            probe = probe[:-1]
        return self.values.get((), (1, 1))

    def issue(
        self,
        path: PathKey,
        message: str,
        *,
        key: bool = False,
        hints: Sequence[str] = (),
        severity: str = "error",
    ) -> ConfigIssue:
        line, col = self.at(path, key=key)
        return ConfigIssue(
            self.file,
            line,
            col,
            format_path(path),
            message,
            tuple(hints),
            "warning" if severity == "warning" else "error",
        )


def format_path(path: PathKey) -> str:
    """``("nodes", 1, "inputs", "frames")`` -> ``nodes[1].inputs.frames``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


class _Builder:
    """Turns a composed YAML node tree into Python values, filling ``Marks``."""

    def __init__(self, marks: Marks) -> None:
        self.marks = marks
        self.issues: list[ConfigIssue] = []
        self.constructor = yaml.SafeLoader("")

    def build(self, node: yaml.Node, path: PathKey) -> Any:
        self.marks.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.constructor.construct_object(key_node, deep=True)
                if isinstance(key, (list, dict)):  # YAML allows them; a graph file does not
                    line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
                    self.issues.append(
                        ConfigIssue(
                            self.marks.file, line, col, format_path(path), "a key must be a word"
                        )
                    )
                    continue
                child = (*path, key if isinstance(key, (str, int)) else str(key))
                self.marks.keys[child] = (
                    key_node.start_mark.line + 1,
                    key_node.start_mark.column + 1,
                )
                if key in out:
                    self.issues.append(self.marks.issue(child, f"duplicate key {key!r}", key=True))
                out[key] = self.build(value_node, child)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        if isinstance(node, yaml.ScalarNode) and "${" in node.value:
            try:
                value = substitute(node)
            except UnsetVariableError as exc:
                self.issues.append(self.marks.issue(path, str(exc), hints=exc.hints))
                return node.value
            if value is not None:
                return value
        return self.constructor.construct_object(node, deep=True)


def _compose(text: str) -> yaml.Node | None:
    """The document's node tree: libyaml's parser where PyYAML has it, the pure-Python one
    for a text libyaml refuses (its error is the one reported, worded as it always was)."""
    *fast, last = limits.LOADERS
    for loader in fast:
        with contextlib.suppress(yaml.YAMLError):
            node: yaml.Node | None = yaml.compose(text, Loader=loader)
            return node
    result: yaml.Node | None = yaml.compose(text, Loader=last)
    return result


def parse_graph(
    text: str, file: str = "<graph>"
) -> tuple[GraphSpec | None, Marks, list[ConfigIssue]]:
    """Phases 1 and 2: YAML syntax and the graph schema. Returns the spec (None on errors)."""
    marks = Marks(file)
    too_big = limits.check_text(text, file)
    if too_big:
        return None, marks, too_big
    try:
        root = _compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        problem = exc.problem or "invalid YAML"
        context = f" ({exc.context})" if exc.context else ""
        return None, marks, [ConfigIssue(file, line, col, "", f"YAML syntax: {problem}{context}")]
    except yaml.YAMLError as exc:
        return None, marks, [ConfigIssue(file, 1, 1, "", f"YAML syntax: {exc}")]
    if root is None:
        return (
            None,
            marks,
            [ConfigIssue(file, 1, 1, "", "the file is empty; a graph needs 'graph:' and 'nodes:'")],
        )
    too_many = limits.check_composed(root, file)
    if too_many:
        return None, marks, too_many
    builder = _Builder(marks)
    try:
        data = builder.build(root, ())
    except yaml.MarkedYAMLError as exc:  # a tag no safe constructor knows ('=', !!python/...)
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or "invalid value"
        return None, marks, [ConfigIssue(file, line, col, "", f"YAML value: {problem}")]
    issues = list(builder.issues)
    if not isinstance(data, dict):
        issues.append(
            marks.issue(
                (), f"a graph file is a mapping with 'graph' and 'nodes', got {type(data).__name__}"
            )
        )
        return None, marks, issues
    try:
        spec = GraphSpec.model_validate(data)
    except ValidationError as exc:
        issues.extend(_schema_issues(exc, data, marks))
        return None, marks, issues
    return spec, marks, issues


def _model_for(loc: PathKey) -> type[BaseModel] | None:
    if len(loc) == 0:
        return GraphSpec
    if len(loc) == 2 and loc[0] == "nodes":
        return NodeSpec
    if len(loc) in (4, 5) and loc[0] == "nodes" and loc[2] == "inputs":
        return EdgeSpec
    if loc[-1:] == ("placement",):
        return PlacementSpec
    return None


def _schema_issues(exc: ValidationError, data: Any, marks: Marks) -> list[ConfigIssue]:
    issues = []
    for err in exc.errors():
        loc: PathKey = tuple(
            p
            for i, p in enumerate(err["loc"])
            if isinstance(p, (str, int)) and not (i == 4 and p in ("one", "many"))  # union tags
        )
        kind = err["type"]
        where = _describe(loc, data)
        if kind == "missing":
            parent, name = loc[:-1], loc[-1]
            issues.append(marks.issue(parent, f"missing key {name!r}{where}"))
        elif kind == "extra_forbidden":
            parent, name = loc[:-1], str(loc[-1])
            model = _model_for(parent)
            hints = []
            if model is not None:
                fields = [f.alias or n for n, f in model.model_fields.items()]
                match = suggest(name, fields)
                if match:
                    hints.append(f"hint: did you mean {match!r}?")
                hints.append(f"allowed keys: {', '.join(fields)}")
            issues.append(marks.issue(loc, f"unknown key {name!r}{where}", key=True, hints=hints))
        else:
            got = err.get("input")
            message = err["msg"][0].lower() + err["msg"][1:]
            if kind == "string_pattern_mismatch" and loc[-1] == "from":
                message = "an input must name an output as 'node/port'"
            elif kind == "string_pattern_mismatch" and loc[-1] == "id":
                message = (
                    "a node id must start with a letter or '_' and hold only letters, "
                    "digits, '_' and '-'"
                )
            if kind == "value_error":  # a validator's own sentence names what it got
                message = str(err.get("ctx", {}).get("error", message))
                issues.append(
                    marks.issue(loc, f"{format_path(loc) or 'document'}{where}: {message}")
                )
                continue
            issues.append(
                marks.issue(loc, f"{format_path(loc) or 'document'}{where}: {message}, got {got!r}")
            )
    return issues


def _describe(loc: PathKey, data: Any) -> str:
    """`` of node 'camera'`` when the location is inside a node that has an id."""
    if len(loc) >= 2 and loc[0] == "nodes" and isinstance(loc[1], int):
        nodes = data.get("nodes") if isinstance(data, dict) else None
        if isinstance(nodes, list) and loc[1] < len(nodes) and isinstance(nodes[loc[1]], dict):
            node_id = nodes[loc[1]].get("id")
            if isinstance(node_id, str):
                return f" in node {node_id!r}"
    return ""


def read_graph_file(path: str | Path) -> tuple[str | None, list[ConfigIssue]]:
    """A graph file's text, or None and the issue saying why it cannot be read."""
    file = str(path)
    try:
        with open(path, "rb") as stream:  # at most one byte past the limit: never a huge read
            data = stream.read(limits.MAX_FILE_BYTES + 1)
            if len(data) > limits.MAX_FILE_BYTES:
                size = max(os.fstat(stream.fileno()).st_size, len(data))
                return None, [limits.file_too_large(size, file)]
        return data.decode("utf-8"), []
    except OSError as exc:
        return None, [ConfigIssue(file, 0, 0, "", f"cannot read the graph file: {exc.strerror}")]
    except UnicodeDecodeError:
        return None, [ConfigIssue(file, 0, 0, "", "the graph file is not UTF-8 text")]


def check_graph(
    path: str | Path,
    overrides: Callable[[GraphSpec], tuple[GraphSpec, list[ConfigIssue]]] | None = None,
) -> tuple[ValidatedGraph | None, list[ConfigIssue]]:
    """Run every check on a graph file; returns the graph (None on errors) and all issues.

    ``overrides`` changes the parsed spec before its wiring and params are checked (the
    bench's ``--set`` and ``--pace``); it returns the new spec and its own issues.
    """
    text, unreadable = read_graph_file(path)
    if text is None:
        return None, unreadable
    spec, marks, issues = parse_graph(text, str(path))
    if spec is None:
        return None, sort_issues(issues)
    if overrides is not None:
        spec, changed = overrides(spec)
        issues.extend(changed)
    graph, more = validate_spec(spec, marks)
    issues.extend(more)
    if any(i.severity == "error" for i in issues):
        return None, sort_issues(issues)
    if graph is not None:
        issues.extend(shm_issues(graph, marks))
    return graph, sort_issues(issues)


def load_graph(path: str | Path) -> ValidatedGraph:
    """A validated graph from a file.

    Raises:
        ConfigError: with every issue found, when there is any error.
    """
    graph, issues = check_graph(path)
    if graph is None:
        raise ConfigError(issues)
    graph.warnings = [i for i in issues if i.severity == "warning"]
    return graph


def sort_issues(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    """Issues in file order, as a compiler prints them."""
    return sorted(issues, key=lambda i: (i.line, i.col))

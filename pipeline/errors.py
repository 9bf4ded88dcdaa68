"""Every error the framework raises, in one tree.

::

    PipelineError
    ├── ConfigError               a graph file is wrong; carries every ConfigIssue found
    ├── NodeError                 a node failed at run time (node id, method, seq, cause)
    │   ├── NodeOpenError
    │   ├── NodeProcessError
    │   ├── NodeExitError         its process ended without a word (killed, crashed)
    │   ├── NodeCrashLoopError    it crashed more often than its max_restarts allow
    │   └── NodePlacementError    no machine of the cluster can run it
    ├── ClusterError              the cluster cannot be reached or used
    ├── NodeDefinitionError       a Node subclass is malformed (ports vs process signature)
    ├── RegistryError             a node type cannot be found or imported
    ├── TransportError            a socket or shared-memory failure
    └── MissingDependencyError    an optional package is not installed (names the extra)

``EndOfStream`` (in ``pipeline.node``) is not an error: a source raises it when it has no more
frames.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

__all__ = [
    "ClusterError",
    "ConfigError",
    "ConfigIssue",
    "MissingDependencyError",
    "NodeDefinitionError",
    "NodeError",
    "NodeExitError",
    "NodeOpenError",
    "NodePlacementError",
    "NodeProcessError",
    "PipelineError",
    "RegistryError",
    "TransportError",
]


class PipelineError(Exception):
    """Base of every error raised by the framework."""


@dataclasses.dataclass(frozen=True)
class ConfigIssue:
    """One problem in a graph file, located compiler-style.

    Attributes:
        file: the graph file's path as given.
        line: 1-based line, 0 when unknown.
        col: 1-based column, 0 when unknown.
        path: where in the document, e.g. ``nodes[1].inputs.frames``.
        message: what is wrong.
        hints: extra lines that help ("did you mean ...", "node 'x' has outputs: ...").
        severity: ``error`` or ``warning``.
    """

    file: str
    line: int
    col: int
    path: str
    message: str
    hints: tuple[str, ...] = ()
    severity: Literal["error", "warning"] = "error"

    def format(self) -> str:
        """The issue as ``file:line:col: severity: message`` plus indented context lines."""
        where = self.file
        if self.line:
            where += f":{self.line}:{self.col}"
        lines = [f"{where}: {self.severity}: {self.message}"]
        if self.path:
            lines.append(f"    {self.path}")
        lines.extend(f"    {hint}" for hint in self.hints)
        return "\n".join(lines)


class ConfigError(PipelineError):
    """A graph file has one or more errors; ``issues`` lists every one found."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues = list(issues)
        errors = [i for i in self.issues if i.severity == "error"]
        super().__init__("\n".join(i.format() for i in errors) or "invalid graph")


class NodeDefinitionError(PipelineError):
    """A Node subclass is malformed: its ports and its ``process`` signature disagree."""


class RegistryError(PipelineError):
    """A node type cannot be found or imported."""


class TransportError(PipelineError):
    """A failure in sockets or shared memory."""


class MissingDependencyError(PipelineError, ImportError):
    """An optional package is missing; the message names what to install."""

    def __init__(self, package: str, extra: str | None = None, purpose: str = "") -> None:
        self.package = package
        self.extra = extra
        install = f"pip install '.[{extra}]'" if extra else f"pip install {package}"
        what = f" for {purpose}" if purpose else ""
        super().__init__(f"the package {package!r} is needed{what} but is not installed: {install}")


class NodeError(PipelineError):
    """A node failed at run time.

    Attributes:
        node_id: the node's id in the graph.
        method: ``open``, ``process``, ``flush`` or ``close``.
        seq: the input seq being processed, or ``None``.
        source: the source node of that seq, or ``""``.
    """

    def __init__(
        self, node_id: str, method: str, cause: str, seq: int | None = None, source: str = ""
    ) -> None:
        self.node_id = node_id
        self.method = method
        self.seq = seq
        self.source = source
        self.cause = cause
        where = f" on seq {seq}" + (f" from {source}" if source else "") if seq is not None else ""
        super().__init__(f"node {node_id!r} failed in {method}(){where}: {cause}")


class NodeOpenError(NodeError):
    """A node's ``open()`` raised: nothing else of it was called."""


class NodeProcessError(NodeError):
    """A node's ``process()``, ``flush()`` or ``close()`` raised."""


class NodeExitError(NodeError):
    """A node's process ended without reporting why: killed (SIGKILL, out of memory), crashed,
    or exited. ``method`` is the state it was in (e.g. ``running``), ``cause`` how it ended."""

    def __init__(self, node_id: str, exit: str, state: str) -> None:
        super().__init__(node_id, state, exit)
        self.args = (f"node {node_id!r} {exit} while {state}",)

    def __str__(self) -> str:
        return str(self.args[0])


class NodeCrashLoopError(NodeError):
    """A node under a ``restart:`` policy failed more than ``max_restarts`` times within
    ``restart_window_s``: the graph gives up. ``cause`` is its last error."""

    def __init__(self, node_id: str, failures: int, window_s: float, limit: int, last: str) -> None:
        super().__init__(node_id, "restart", last)
        self.failures = failures
        self.args = (
            f"node {node_id!r} is in a crash loop: it failed {failures} "
            f"time{'' if failures == 1 else 's'} within "
            f"{window_s:g} s (max_restarts: {limit}); its last error: {last}",
        )

    def __str__(self) -> str:
        return str(self.args[0])


class NodePlacementError(NodeError):
    """No machine of the cluster can run a node as its ``placement`` asks (or none did in
    time). ``method`` is ``place``."""

    def __init__(self, node_id: str, cause: str) -> None:
        super().__init__(node_id, "place", cause)
        self.args = (f"node {node_id!r} cannot be placed: {cause}",)

    def __str__(self) -> str:
        return str(self.args[0])


class ClusterError(PipelineError):
    """The cluster cannot be reached or used (a wrong address, Ray not installed)."""

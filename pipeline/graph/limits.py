"""Size limits on graph files, checked before anything is built from them.

A graph file is a few kilobytes; a hostile or broken one must not exhaust the machine. YAML
aliases are the trap: ``&a [*b, *b, ...]`` nine levels deep is a few hundred bytes that
expand to billions of values (the "billion laughs"), and an alias to a collection that is
still open (``&a [*a]``) is a cycle that expands forever. So, in this order and before the
document is composed:

1. the text is at most :data:`MAX_FILE_BYTES`;
2. one pass over the YAML *events* (a streaming parse: nothing is built) counts every value
   as it would be after aliases are expanded, and stops at the first value past
   :data:`MAX_VALUES`, at a collection nested deeper than :data:`MAX_DEPTH`, or at an alias
   to a collection that contains it;
3. after composing, ``nodes`` holds at most :data:`MAX_NODES` entries (each is a process).

Each refusal is a ``ConfigIssue`` located at the line and column where the limit was crossed,
saying what the limit is. Aliases that stay within the limits (a shared ``params`` block)
are fine.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from pipeline.errors import ConfigIssue

# The YAML parsers a graph file is read with, fastest first: libyaml's (in PyYAML's wheels;
# ~10x faster: ~0.4 ms against ~4 ms for a graph of a few nodes, on every `pipeline run`),
# then the pure-Python one, which decides about (and words the error for) any text libyaml
# refuses, so that what is accepted and what an error says stay as they were.
LOADERS: tuple[Any, ...] = (
    (yaml.CSafeLoader, yaml.SafeLoader)
    if getattr(yaml, "__with_libyaml__", False)
    else (yaml.SafeLoader,)
)

__all__ = [
    "LOADERS",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_NODES",
    "MAX_VALUES",
    "check_composed",
    "check_text",
    "file_too_large",
]

MAX_FILE_BYTES = 1024 * 1024  # the largest example graph is about 2 KB
MAX_VALUES = 100_000  # scalars and collections after alias expansion
MAX_DEPTH = 64  # nested mappings and lists
MAX_NODES = 256  # each node is an OS process


def _issue(file: str, mark: Any, message: str, hint: str) -> ConfigIssue:
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    return ConfigIssue(file, line, col, "", message, (f"hint: {hint}",))


def file_too_large(size: int, file: str) -> ConfigIssue:
    """The issue for a graph file of ``size`` bytes, above :data:`MAX_FILE_BYTES`."""
    return ConfigIssue(
        file,
        1,
        1,
        "",
        f"the graph file is {size} bytes; the most a graph file may hold is {MAX_FILE_BYTES} bytes",
        ("hint: a graph file describes nodes and edges; keep data in files it names",),
    )


def check_text(text: str, file: str) -> list[ConfigIssue]:
    """Issues for a graph text that is too large, expands too far or nests too deep.

    Returns an empty list when the text is within every limit, and also when it is not valid
    YAML: the syntax error is reported, located, by the parse that follows.
    """
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_FILE_BYTES:
        return [file_too_large(size, file)]
    for loader in LOADERS:
        try:
            return _check_events(yaml.parse(text, Loader=loader), file)
        except yaml.YAMLError:
            continue  # libyaml refused it: the pure-Python parser decides, as it always did
    return []  # not YAML: reported with its location by the parse that follows


def _check_events(events: Iterable[yaml.Event], file: str) -> list[ConfigIssue]:
    values = 0
    anchored: dict[str, int] = {}  # anchor -> values in the anchored value, expanded
    # open collections: (anchor or None, values counted before it started)
    open_collections: list[tuple[str | None, int]] = []
    for event in events:
        if isinstance(event, yaml.AliasEvent):
            anchor = event.anchor
            if any(name == anchor for name, _ in open_collections):
                return [
                    _issue(
                        file,
                        event.start_mark,
                        f"alias *{anchor} refers to a collection that contains it "
                        "(a cycle that never ends)",
                        f"copy the values instead of writing *{anchor} inside &{anchor}",
                    )
                ]
            values += anchored.get(anchor or "", 1)
        elif isinstance(event, yaml.ScalarEvent):
            values += 1
            if event.anchor is not None:
                anchored[event.anchor] = 1
        elif isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            values += 1
            open_collections.append((event.anchor, values - 1))
            if len(open_collections) > MAX_DEPTH:
                return [
                    _issue(
                        file,
                        event.start_mark,
                        f"values are nested more than {MAX_DEPTH} levels deep",
                        "a graph file needs a few levels; flatten this value",
                    )
                ]
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            if open_collections:
                anchor, before = open_collections.pop()
                if anchor is not None:
                    anchored[anchor] = values - before
        else:
            continue
        if values > MAX_VALUES:
            return [
                _issue(
                    file,
                    event.start_mark,
                    f"the graph holds more than {MAX_VALUES} values once its aliases are expanded",
                    "an alias (*name) repeats everything under its anchor (&name); "
                    "aliases of aliases multiply: refer to a smaller anchor, or none",
                )
            ]
    return []


def check_composed(root: yaml.Node, file: str) -> list[ConfigIssue]:
    """Issues for a composed document whose ``nodes`` list holds more than ``MAX_NODES``."""
    if not isinstance(root, yaml.MappingNode):
        return []
    for key, value in root.value:
        if (
            isinstance(key, yaml.ScalarNode)
            and key.value == "nodes"
            and isinstance(value, yaml.SequenceNode)
            and len(value.value) > MAX_NODES
        ):
            return [
                _issue(
                    file,
                    value.value[MAX_NODES].start_mark,
                    f"the graph has {len(value.value)} nodes; at most {MAX_NODES} are "
                    "allowed (each node is a process)",
                    "split the work into several graphs, or merge steps into fewer nodes",
                )
            ]
    return []

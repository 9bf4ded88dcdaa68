"""Find node classes by type id: entry points ``pipeline.nodes`` or ``package.module:Class``.

Built-in nodes register exactly as a plugin does, in ``pyproject.toml``::

    [project.entry-points."pipeline.nodes"]
    score_filter = "my_package.nodes:ScoreFilter"

A graph file may also name a class directly: ``node: my_package.nodes:ScoreFilter``.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points

from pipeline.errors import RegistryError
from pipeline.node import Node

__all__ = ["available_nodes", "load_node_class", "suggest"]

GROUP = "pipeline.nodes"


@lru_cache(maxsize=1)
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def available_nodes() -> list[str]:
    """Every registered node type id, sorted."""
    return sorted(_entry_points())


def suggest(name: str, choices: list[str]) -> str | None:
    """The closest of ``choices`` to ``name``, if any is close."""
    match = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return match[0] if match else None


def load_node_class(type_id: str) -> type[Node]:
    """The Node class for an entry-point name or a ``package.module:Class`` path.

    Raises:
        RegistryError: unknown name, import failure, or not a Node subclass.
    """
    if ":" in type_id:
        module_name, _, attr = type_id.partition(":")
        # A module path is looked up from the current folder too, so a node in ./my_nodes.py
        # works from a graph file without installing anything; the folder goes *last*, so a
        # stray cv2.py or numpy.py there never shadows the installed library.
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.append(os.getcwd())
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise RegistryError(
                f"cannot import module {module_name!r} for node {type_id!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        try:
            obj = getattr(module, attr)
        except AttributeError:
            raise RegistryError(f"module {module_name!r} has no attribute {attr!r}") from None
    else:
        eps = _entry_points()
        if type_id not in eps:
            hint = suggest(type_id, list(eps))
            extra = f"; did you mean {hint!r}?" if hint else ""
            raise RegistryError(f"unknown node type {type_id!r}{extra}")
        try:
            obj = eps[type_id].load()
        except Exception as exc:
            raise RegistryError(
                f"node type {type_id!r} ({eps[type_id].value}) failed to import: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    if not (isinstance(obj, type) and issubclass(obj, Node)):
        raise RegistryError(f"{type_id!r} is not a pipeline.Node subclass")
    return obj

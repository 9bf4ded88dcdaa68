"""Find node classes by type id: entry points ``pipeline.nodes`` or ``package.module:Class``.

Built-in nodes register exactly as a plugin does, in ``pyproject.toml``::

    [project.entry-points."pipeline.nodes"]
    score_filter = "my_package.nodes:ScoreFilter"

A graph file may also name a class directly: ``node: my_package.nodes:ScoreFilter`` (looked up
next to the graph file, then in the current folder, then installed packages:
``pipeline.usercode``).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points

from pipeline.errors import RegistryError
from pipeline.node import Node
from pipeline.usercode import import_user_module, search_folders

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


def load_node_class(type_id: str, search: Sequence[str] | None = None) -> type[Node]:
    """The Node class for an entry-point name or a ``package.module:Class`` path.

    ``search``: the folders a ``module:Class`` module is looked for in before installed
    packages (``pipeline.usercode.search_folders(graph_file)``; default: the current folder).
    A registered name never touches ``sys.path``.

    Raises:
        RegistryError: unknown name, import failure, or not a Node subclass
            (``UserImportError``, with ``hints``, for a ``module:Class`` import failure).
        NodeDefinitionError: the class is malformed (its process() signature).
    """
    if ":" in type_id:
        module_name, _, attr = type_id.partition(":")
        folders = tuple(search) if search is not None else search_folders()
        module = import_user_module(module_name, folders)
        try:
            obj = getattr(module, attr)
        except AttributeError:
            names = [
                n for n, v in vars(module).items() if isinstance(v, type) and issubclass(v, Node)
            ]
            hint = suggest(attr, names)
            extra = (
                f"; did you mean {hint!r}?"
                if hint
                else (f"; its node classes: {', '.join(names)}" if names else "")
            )
            raise RegistryError(
                f"module {module_name!r} ({getattr(module, '__file__', '?')}) has no "
                f"attribute {attr!r}{extra}"
            ) from None
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

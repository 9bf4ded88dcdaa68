"""The ``pipeline`` command: check, run, nodes, graph, new-node, schema; plugins add more.

Exit codes: 0 success (a graph that ended by itself), 1 runtime failure (a node failed, or a
stop had to be forced), 2 invalid graph or usage, and ``128 + signal`` for a run stopped by a
signal that drained cleanly: 130 Ctrl-C (SIGINT), 143 SIGTERM (``systemctl stop``: set
``SuccessExitStatus=143`` in the unit), 129 SIGHUP (the terminal or ssh session closed);
130 also for Ctrl-C before a graph started (while checking or loading). Packages add commands
through the ``pipeline.commands`` entry-point group: each entry point is a function
``register(subparsers)`` that adds its sub-command (``pipeline_nodes.inference`` adds ``models``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from pipeline import __version__
from pipeline.errors import ConfigIssue, RegistryError
from pipeline.graph.load import check_graph
from pipeline.graph.spec import graph_json_schema
from pipeline.graph.validate import ValidatedGraph
from pipeline.registry import available_nodes, load_node_class
from pipeline.serve.options import add_serve_arguments, serve_config

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT: a stop on purpose, not a failure
SCHEMA_PATH = Path(__file__).parent / "graph" / "schema.json"


def _print_issues(issues: Sequence[ConfigIssue]) -> tuple[int, int]:
    for issue in issues:
        print(issue.format(), file=sys.stderr)
    errors = sum(1 for i in issues if i.severity == "error")
    return errors, len(issues) - errors


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def cmd_check(args: argparse.Namespace) -> int:
    total_errors = 0
    for file in args.files:
        _, issues = check_graph(file)
        errors, warnings = _print_issues(issues)
        total_errors += errors
        if errors:
            print(
                f"{file}: {_plural(errors, 'error')}, {_plural(warnings, 'warning')}",
                file=sys.stderr,
            )
        else:
            print(f"{file}: ok" + (f" ({_plural(warnings, 'warning')})" if warnings else ""))
    return EXIT_USAGE if total_errors else EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline.runtime.runner import Launcher, run_graph
    from pipeline.runtime.table import render_table

    graph: ValidatedGraph | None
    if args.set:
        from pipeline.bench.prepare import ParamSet, parse_set, prepare_graph

        sets = []
        for text in args.set:
            try:
                node, path, values = parse_set(text)
            except ValueError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return EXIT_USAGE
            sets.append(ParamSet(node, path, values[0]))
        prepared, issues = prepare_graph(args.file, sets)
        graph = prepared.graph if prepared is not None else None
    else:
        graph, issues = check_graph(args.file)
    errors, _ = _print_issues(issues)
    if graph is None:
        print(f"{_plural(errors, 'error')}; nothing was started", file=sys.stderr)
        return EXIT_USAGE
    live = sys.stderr.isatty() if args.live is None else args.live
    launcher: Launcher | None = None  # None: nodes forked from a template where supported
    if args.cluster:
        from pipeline.cluster import RayLauncher
        from pipeline.errors import ClusterError

        try:
            launcher = RayLauncher(args.cluster)
        except ClusterError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    log_level = args.log_level or ("WARNING" if args.quiet else "INFO")
    server = None
    try:
        serving = serve_config(args, graph.spec.serve)
    except ValueError as exc:
        print(f"pipeline run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if serving is not None:
        from pipeline.serve.app import ServeError, start_server

        try:
            graph, server = start_server(graph, serving, log_level=log_level)
        except ServeError as exc:
            print(f"cannot serve the graph: {exc}; nothing was started", file=sys.stderr)
            return EXIT_USAGE
        print(f"serving on {', '.join(server.endpoints)}", file=sys.stderr)
    try:
        result = run_graph(
            graph,
            log_level=log_level,
            live=live,
            stats_json=args.stats_json,
            grace_s=args.grace,
            launcher=launcher,
        )
    finally:
        if server is not None:
            server.stop()
    failed = result.exit_code == EXIT_FAILED
    verdict = "failed" if failed else ("stopped" if result.stopped else "finished")
    with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
        if result.stats and not args.quiet:
            print(render_table(result.stats, result.memory), file=sys.stderr)
        print(f"graph {graph.name!r} {verdict} in {result.duration_s:.1f} s", file=sys.stderr)
        if args.stats_json:
            print(f"statistics written to {args.stats_json}", file=sys.stderr)
    return result.exit_code


def _type_name(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return " | ".join(map(str, schema["enum"]))
    if "anyOf" in schema:
        return " | ".join(_type_name(s) for s in schema["anyOf"])
    if "const" in schema:
        return repr(schema["const"])
    if schema.get("type") == "array":
        if "prefixItems" in schema:
            return f"[{', '.join(_type_name(s) for s in schema['prefixItems'])}]"
        return f"list[{_type_name(schema.get('items', {}))}]"
    return str(schema.get("type", "any"))


def _range(schema: dict[str, Any]) -> str:
    parts = []
    for key, sym in (
        ("minimum", ">="),
        ("exclusiveMinimum", ">"),
        ("maximum", "<="),
        ("exclusiveMaximum", "<"),
    ):
        if key in schema:
            parts.append(f"{sym} {schema[key]}")
    for sub in schema.get("anyOf", []):
        sub_range = _range(sub)
        if sub_range:
            parts.append(sub_range)
    return ", ".join(parts)


def describe_node(type_id: str) -> str:
    """The text ``pipeline nodes NAME`` prints: doc, ports and a params table."""
    cls = load_node_class(type_id)
    doc = (cls.__doc__ or "").strip().splitlines()
    lines = [f"{type_id}  ({cls.__module__}:{cls.__qualname__})"]
    if doc:
        lines.append(f"  {doc[0]}")
    for label, ports in (("inputs", cls.inputs), ("outputs", cls.outputs)):
        if ports:
            lines.append(f"  {label}:")
            for name, port in ports.items():
                extra = "" if getattr(port, "required", True) else " (optional)"
                if getattr(port, "streams", False):
                    extra += " (streams: a list of upstreams, one per camera)"
                desc = f"  {port.description}" if port.description else ""
                lines.append(f"    {name}: {port.type.__name__}{extra}{desc}")
        else:
            lines.append(f"  {label}: none")
    schema = cls.Params.model_json_schema()
    props = schema.get("properties", {})
    required = set(schema.get("required", []))
    if props:
        lines.append("  params:")
        for name, p in props.items():
            default = "required" if name in required else f"default {p.get('default')!r}"
            rng = _range(p)
            rng = f", {rng}" if rng else ""
            lines.append(f"    {name}: {_type_name(p)} ({default}{rng})")
            if p.get("description"):
                lines.append(f"        {p['description']}")
    else:
        lines.append("  params: none")
    return "\n".join(lines)


def summary_line(type_id: str, width: int) -> str:
    """``detector   Detect objects ...``: a type and its doc's first line."""
    try:
        cls = load_node_class(type_id)
    except RegistryError as exc:
        return f"{type_id.ljust(width)}  (cannot load: {exc})"
    doc = (cls.__doc__ or "").strip().splitlines()
    return f"{type_id.ljust(width)}  {doc[0] if doc else ''}".rstrip()


def cmd_nodes(args: argparse.Namespace) -> int:
    if not args.names and not args.all:
        names = available_nodes()
        width = max(map(len, names), default=0)
        for name in names:
            print(summary_line(name, width))
        print("\n`pipeline nodes NAME` shows a type's ports and params; --all shows every type's")
        return EXIT_OK
    names = args.names or available_nodes()
    failed = False
    for i, name in enumerate(names):
        try:
            text = describe_node(name)
        except RegistryError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed = True
            continue
        print(("\n" if i else "") + text)
    return EXIT_USAGE if failed else EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    text = graph_json_schema()
    if args.check:
        current = SCHEMA_PATH.read_text(encoding="utf-8") if SCHEMA_PATH.exists() else ""
        if current != text:
            print(f"{SCHEMA_PATH} is out of date: run `pipeline schema --write`", file=sys.stderr)
            return EXIT_FAILED
        print(f"{SCHEMA_PATH}: up to date")
    elif args.write:
        SCHEMA_PATH.write_text(text, encoding="utf-8")
        print(f"wrote {SCHEMA_PATH}")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_graph(args: argparse.Namespace) -> int:
    from pipeline.graph.draw import draw

    graph, issues = check_graph(args.file)
    errors, _ = _print_issues(issues)
    if graph is None:
        print(f"{_plural(errors, 'error')}; nothing drawn", file=sys.stderr)
        return EXIT_USAGE
    sys.stdout.write(draw(graph.spec, args.format))
    return EXIT_OK


def cmd_new_node(args: argparse.Namespace) -> int:
    from pipeline.scaffold import class_name, scaffold_node

    try:
        paths = scaffold_node(args.name, Path(args.dir), force=args.force)
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for path in paths:
        print(f"wrote {path}")
    print(
        f"use it in a graph next to it as `node: {args.name}:{class_name(args.name)}`; "
        f"test it with `pytest {paths[1]}`"
    )
    return EXIT_OK


_BUILT_IN = frozenset({"check", "run", "nodes", "graph", "new-node", "schema"})


def _command_word(argv: Sequence[str]) -> str | None:
    """The sub-command named in ``argv`` (its first word that is not an option), if any."""
    for word in argv:
        if word == "--":
            return None
        if not word.startswith("-"):
            return word
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser. ``command``: the sub-command about to run; a built-in one
    needs neither ``bench`` nor the plugins' commands, whose imports (the inference nodes,
    the cloud package: ~0.4 s) would otherwise delay every ``pipeline run``."""
    parser = argparse.ArgumentParser(
        prog="pipeline", description="Streaming vision pipelines: YAML graphs of node processes."
    )
    parser.add_argument("--version", action="version", version=f"pipeline {__version__}")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="only warnings and errors (no INFO lines)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("check", help="validate graph files without starting anything")
    p.add_argument("files", nargs="+", metavar="FILE", help="graph files (YAML)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("run", help="run a graph until its sinks see end of stream or Ctrl-C")
    p.add_argument("file", metavar="FILE", help="the graph file (YAML)")
    p.add_argument("--stats-json", metavar="FILE", help="write every node's statistics at the end")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NODE.PARAM=VALUE",
        help="change a param for this run (YAML value; repeatable), e.g. camera.path=a.mp4",
    )
    p.add_argument(
        "--log-level",
        default=None,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
        help="the nodes' log level (default INFO; WARNING with -q)",
    )
    live = p.add_mutually_exclusive_group()
    live.add_argument(
        "--live",
        dest="live",
        action="store_true",
        default=None,
        help="redraw a statistics table every second (default on a terminal)",
    )
    live.add_argument("--no-live", dest="live", action="store_false")
    p.add_argument(
        "--grace",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds to drain after Ctrl-C before forcing (default 5)",
    )
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="no INFO lines and no final statistics table",
    )
    p.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="run the nodes on a Ray cluster: auto, HEAD:6379 or ray://HEAD:10001; each node "
        "goes where its placement says, edges between machines are tcp with CURVE",
    )
    add_serve_arguments(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("nodes", help="list node types (with a NAME: its ports and params)")
    p.add_argument("names", nargs="*", metavar="NAME", help="node types to describe in full")
    p.add_argument("--all", action="store_true", help="describe every node type in full")
    p.set_defaults(func=cmd_nodes)

    p = sub.add_parser("graph", help="draw a graph file (Mermaid, Graphviz dot or SVG)")
    p.add_argument("file", metavar="FILE", help="the graph file (YAML)")
    p.add_argument(
        "--format",
        choices=["mermaid", "dot", "svg"],
        default="mermaid",
        help="mermaid (default), dot (Graphviz) or svg (an image, as the preview page shows)",
    )
    p.set_defaults(func=cmd_graph)

    p = sub.add_parser("new-node", help="write a node module and its test, ready to edit")
    p.add_argument("name", metavar="NAME", help="module name in snake_case, e.g. face_blur")
    p.add_argument("--dir", default=".", help="where to write the files (default: here)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=cmd_new_node)

    p = sub.add_parser("schema", help="print the graph file's JSON Schema")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--check", action="store_true", help="fail if the committed schema drifted")
    g.add_argument("--write", action="store_true", help="rewrite the committed schema")
    p.set_defaults(func=cmd_schema)

    if command in _BUILT_IN:
        return parser
    from pipeline.bench.cli import register as register_bench

    register_bench(sub)
    for ep in entry_points(group="pipeline.commands"):
        register: Callable[[Any], None] = ep.load()
        register(sub)
    return parser


def _current_folder_last() -> None:
    """``python -m pipeline.cli`` puts the current folder first on the path: move it last, so
    a stray ``cv2.py`` there cannot shadow a library (``module:Class`` nodes still resolve)."""
    here = ("", ".", os.getcwd())
    if sys.path and sys.path[0] in here:
        sys.path.append(sys.path.pop(0))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    _current_folder_last()
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_word(words))
    args = parser.parse_args(words)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:  # Ctrl-C before a graph started (while checking, loading)
        print("interrupted: stopped before anything started", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `pipeline nodes | head`: the reader left; not an error
        sys.stderr.close()
        return EXIT_OK
    return code


if __name__ == "__main__":
    sys.exit(main())

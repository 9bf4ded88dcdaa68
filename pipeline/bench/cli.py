"""The ``pipeline bench`` command: bench a graph, compare results, sweep params.

``register(subparsers)`` adds ``bench`` to the ``pipeline`` command line. Its first
positional word picks the form, so ``pipeline bench GRAPH`` stays short:

    pipeline bench GRAPH [--duration S | --frames N] [--warmup N] [--pace fast|realtime]
                         [--cpus N] [--out FILE.json] [--set node.param=value ...]
    pipeline bench compare A.json B.json ... [--chart FILE.png] [--force]
    pipeline bench sweep GRAPH --set node.param=v1,v2 ... [the bench options]

(argparse cannot mix an optional sub-command with a positional file, so this is one parser
with the options of all three, checked per form.) The report goes to stdout; progress,
graph errors and where files were written go to stderr. Exit codes: 0 done, 1 the graph
failed (or a requested chart could not be drawn), 2 invalid graph or usage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from pipeline.bench.compare import (
    CompareError,
    compare_files,
    load_result,
    render_compare,
    write_chart,
)
from pipeline.bench.monitor import BenchSettings, Progress
from pipeline.bench.prepare import ParamSet, PreparedGraph, parse_set, prepare_graph
from pipeline.bench.report import measured_something, render_run
from pipeline.bench.run import BenchError, BenchRun, check_cpus, run_prepared, write_json
from pipeline.bench.sweep import (
    grid_points,
    parse_grid,
    point_label,
    render_sweep,
    run_sweep,
    sweep_document,
)
from pipeline.errors import ConfigIssue

__all__ = ["main", "register"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_WARMUP = 30
USAGE = """
  pipeline bench GRAPH [--duration S | --frames N] [--warmup N] [--pace fast|realtime]
                       [--cpus N] [--out FILE.json] [--set node.param=value ...]
  pipeline bench compare A.json B.json ... [--chart FILE.png] [--force]
  pipeline bench sweep GRAPH --set node.param=v1,v2 ... [bench options]"""
DESCRIPTION = """\
Measure a graph's throughput and latency (per node and end to end), find its bottleneck,
and record the machine it ran on; compare results from several machines; sweep params.
The machine should be otherwise idle while a bench runs."""
_RUN_ONLY = ("duration", "frames", "pace", "cpus", "out", "sets")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``bench`` command to a ``pipeline`` command line's sub-parsers."""
    p = subparsers.add_parser(
        "bench",
        help="measure a graph's throughput and latency; compare and sweep results",
        usage=USAGE,
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "target",
        nargs="+",
        metavar="GRAPH | compare FILE... | sweep GRAPH",
        help="a graph file to bench; or `compare` and result files; or `sweep` and a graph",
    )
    run = p.add_argument_group("bench and sweep options")
    window = run.add_mutually_exclusive_group()
    window.add_argument(
        "--duration",
        type=_positive_float,
        metavar="S",
        help="seconds to measure after the warm-up (default 10)",
    )
    window.add_argument(
        "--frames",
        type=_positive_int,
        metavar="N",
        help="measure until the sinks have seen N frames (checked twice a second)",
    )
    run.add_argument(
        "--warmup",
        type=_non_negative_int,
        default=DEFAULT_WARMUP,
        metavar="N",
        help=f"frames at the sinks before measuring, and at least 2 s (default {DEFAULT_WARMUP})",
    )
    run.add_argument(
        "--pace",
        choices=["fast", "realtime"],
        help="sources as fast as the graph takes frames, or at their real rate",
    )
    run.add_argument(
        "--cpus", type=_positive_int, metavar="N", help="pin the whole graph to N cores"
    )
    run.add_argument("--out", metavar="FILE.json", help="write the result as JSON")
    run.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="NODE.PARAM=VALUE",
        help="change a node param (YAML value); for sweep: comma-separated values",
    )
    run.add_argument(
        "--grace", type=float, default=10.0, metavar="S", help="seconds to drain after the stop"
    )
    run.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
        help="of the node processes (default WARNING)",
    )
    run.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    cmp = p.add_argument_group("compare options")
    cmp.add_argument("--chart", metavar="FILE.png", help="draw throughput and latency per device")
    cmp.add_argument("--force", action="store_true", help="compare results of different graphs")
    p.set_defaults(func=cmd_bench)


def _error(text: str) -> int:
    print(f"error: {text}", file=sys.stderr)
    return EXIT_USAGE


def _print_issues(issues: Sequence[ConfigIssue]) -> int:
    for issue in issues:
        print(issue.format(), file=sys.stderr)
    return sum(1 for i in issues if i.severity == "error")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def cmd_bench(args: argparse.Namespace) -> int:
    """Run ``pipeline bench`` in the form its first positional word names."""
    target: list[str] = args.target
    if target[0] == "compare":
        misused = [f"--{k.replace('_', '-')}" for k in _RUN_ONLY if getattr(args, k)]
        if args.warmup != DEFAULT_WARMUP:
            misused.append("--warmup")
        if misused:
            return _error(f"{', '.join(misused)}: not options of `pipeline bench compare`")
        return _compare(args, target[1:])
    if args.chart or args.force:
        return _error("--chart and --force are options of `pipeline bench compare`")
    if target[0] == "sweep":
        return _sweep(args, target[1:])
    if len(target) != 1:
        return _error(
            f"`pipeline bench` takes one graph file, got {len(target)}: {' '.join(target)} "
            "(to compare results: pipeline bench compare A.json B.json)"
        )
    return _bench(args, target[0])


def _settings(args: argparse.Namespace) -> BenchSettings:
    return BenchSettings(
        duration_s=args.duration,
        frames=args.frames,
        warmup=args.warmup,
        pace=args.pace,
        cpus=args.cpus,
        grace_s=args.grace,
        log_level=args.log_level,
    )


def _runner(args: argparse.Namespace) -> Callable[[PreparedGraph, BenchSettings], BenchRun]:
    def run(prepared: PreparedGraph, settings: BenchSettings) -> BenchRun:
        progress = Progress(None if args.quiet else sys.stderr)
        return run_prepared(prepared, settings, progress=progress)

    return run


def _bench(args: argparse.Namespace, graph: str) -> int:
    try:
        sets = []
        for text in args.sets:
            node, path, values = parse_set(text)
            sets.append(ParamSet(node, path, values[0]))
        check_cpus(args.cpus)
    except (ValueError, BenchError) as exc:
        return _error(str(exc))
    prepared, issues = prepare_graph(graph, sets, args.pace)
    errors = _print_issues(issues)
    if prepared is None:
        print(f"{_plural(errors, 'error')}; nothing was started", file=sys.stderr)
        return EXIT_USAGE
    bench = _runner(args)(prepared, _settings(args))
    print(render_run(bench.result))
    if args.out and measured_something(bench.result):
        write_json(bench.result, args.out)
        print(f"result written to {args.out}", file=sys.stderr)
    elif args.out:
        print(f"nothing written to {args.out}: the graph measured nothing", file=sys.stderr)
    return bench.exit_code


def _is_sweep(path: str) -> bool:
    try:
        return load_result(path).get("kind") == "sweep"
    except CompareError:
        return False


def _compare(args: argparse.Namespace, files: list[str]) -> int:
    if len(files) < 2 and not (files and _is_sweep(files[0])):
        return _error("`pipeline bench compare` needs two or more result files, or a sweep file")
    try:
        results = compare_files(files, args.force)
    except CompareError as exc:
        return _error(str(exc))
    if len(results) < 2:
        return _error("`pipeline bench compare` needs two or more results (a sweep has several)")
    print(render_compare(results))
    if len({r["graph"].get("hash") for r in results.values()}) > 1:
        print("warning: these results are of different graphs (--force)", file=sys.stderr)
    if args.chart:
        try:
            write_chart(results, args.chart)
        except ModuleNotFoundError as exc:
            print(
                f"error: the chart needs matplotlib, which is not installed ({exc}): "
                "pip install 'edge-vision-pipeline[bench]' (or pip install matplotlib); "
                "the table above is complete",
                file=sys.stderr,
            )
            return EXIT_FAILED
        print(f"chart written to {args.chart}", file=sys.stderr)
    return EXIT_OK


def _sweep(args: argparse.Namespace, rest: list[str]) -> int:
    if len(rest) != 1:
        return _error(f"`pipeline bench sweep` takes one graph file, got {len(rest)}")
    if not args.sets:
        return _error("`pipeline bench sweep` needs --set node.param=v1,v2,... (one per param)")
    try:
        axes = parse_grid(args.sets)
        check_cpus(args.cpus)
    except (ValueError, BenchError) as exc:
        return _error(str(exc))
    points = grid_points(axes)
    prepared: list[tuple[list[ParamSet], PreparedGraph]] = []
    errors = 0
    for i, point in enumerate(points, 1):
        graph, issues = prepare_graph(rest[0], point, args.pace)
        bad = [x for x in issues if x.severity == "error"]
        if bad:
            print(f"point {i} ({point_label(point)}):", file=sys.stderr)
            errors += _print_issues(bad)
        elif i == 1:
            _print_issues(issues)  # warnings, once
        if graph is not None:
            prepared.append((point, graph))
    if errors:
        print(f"{_plural(errors, 'error')}; nothing was started", file=sys.stderr)
        return EXIT_USAGE
    settings = _settings(args)
    print(f"sweep: {_plural(len(points), 'point')}", file=sys.stderr)
    runs = run_sweep(prepared, settings, _runner(args), log=sys.stderr)
    document = sweep_document(axes, runs, settings)
    print(render_sweep(document))
    if args.out:
        write_json(document, args.out)
        print(f"sweep written to {args.out}", file=sys.stderr)
    return EXIT_FAILED if any(run.exit_code for _, run in runs) else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pipeline bench ...`` on its own (``argv`` starts with ``bench``), as
    ``pipeline.cli.main`` does (``python -m pipeline.bench``)."""
    parser = argparse.ArgumentParser(prog="pipeline")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register(sub)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code

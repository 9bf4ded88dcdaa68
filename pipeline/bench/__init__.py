"""Benchmark graphs: throughput, latency, bottleneck and machine identity, comparable across
devices.

``pipeline bench GRAPH`` runs a graph under a monitor (warm-up, reset, measured window,
stop), reads every node's statistics and writes a result that names the machine (CPU,
board, L4T release, clocks, temperatures, throttling) and the graph (a hash of what ran), so
the same YAML benched on a Raspberry Pi and on a Jetson can be compared with
``pipeline bench compare``. ``pipeline bench sweep`` runs a graph over a grid of params.
Modules: ``prepare`` (``--set``/``--pace``, validation, graph hash), ``monitor`` (warm-up,
window, progress), ``run`` (one bench and its result), ``figures`` (per-node and end-to-end
figures, bottleneck), ``machine`` and ``boards`` (the machine and its board), ``report``,
``compare``, ``sweep`` and ``cli`` (``register(subparsers)``).
"""

from pipeline.bench.compare import CompareError, compare_files, render_compare, write_chart
from pipeline.bench.figures import Bottleneck, find_bottleneck, summarise
from pipeline.bench.machine import conditions, machine_info
from pipeline.bench.monitor import BenchMonitor, BenchSettings, Progress
from pipeline.bench.prepare import ParamSet, PreparedGraph, graph_hash, parse_set, prepare_graph
from pipeline.bench.report import render_run
from pipeline.bench.run import (
    SCHEMA,
    SCHEMA_VERSION,
    BenchError,
    BenchRun,
    run_prepared,
    write_json,
)

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "BenchError",
    "BenchMonitor",
    "BenchRun",
    "BenchSettings",
    "Bottleneck",
    "CompareError",
    "ParamSet",
    "PreparedGraph",
    "Progress",
    "compare_files",
    "conditions",
    "find_bottleneck",
    "graph_hash",
    "machine_info",
    "parse_set",
    "prepare_graph",
    "render_compare",
    "render_run",
    "run_prepared",
    "summarise",
    "write_chart",
    "write_json",
]

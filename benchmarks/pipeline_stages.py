"""Pipeline benchmark: does running stages as separate processes pay, and what does it cost?

The graph is ``benchmarks/graphs/pipeline.yaml``: synthetic 640x480 frames -> a Lanczos
upscale to 1024x768 -> the SSDLite person detector -> a discard sink. Both heavy stages run
on one core each (OpenCV pinned to one thread with ``OPENCV_FOR_THREADS_NUM=1``, the detector
with ``num_threads: 1``), and they cost about the same (here ~20 ms and ~24 ms a frame):
that is the case a pipeline is for, since with two such stages on two cores the graph can
approach twice the rate of a loop that runs them one after another, while with one dominant
stage there is nothing to overlap. An upscale rather than a second detector because a
detector consumes frames and emits detections, so two cannot be chained; the Lanczos kernel
is an honest stand-in for a heavy per-pixel transform (colour conversion, normalisation). The
other stages (drawing a frame, the sink, four hops of transport) cost ~1 ms a frame and fit
on the second core beside the upscale.

One run reports, with the whole benchmark pinned to two cores (``--cpus``):

(a) the graph's throughput against its slowest stage alone: that stage's node object called
    in a loop in this process on a ready input (target >= 0.95: the framework adds little);
(b) the graph against the same node objects called one after another in one process loop
    (target >= 1.6x on 2 cores);
(c) the detector node in a graph (``benchmarks/graphs/detector.yaml`` with one thread)
    against the same model's bare runtime loop in one process: ``load_model``, the node's
    own preprocessing, ``infer`` and the decoder, nothing else (target >= 0.97);
(d) with ``--models``: ms per frame of every fetched catalog model with 1 and 2 runtime
    threads, inference alone and with preprocessing and decoding.

The graphs run through ``pipeline.bench`` (the same code as ``pipeline bench``). Results print
as a table and go to ``benchmarks/results/pipeline.json``. The machine must be otherwise idle:
the result records how busy its cores were and says so when other processes competed.

    .venv/bin/pipeline models fetch                 # once: the models
    .venv/bin/python benchmarks/pipeline_stages.py         # about 1.5 minutes
    .venv/bin/python benchmarks/pipeline_stages.py --quick --models
"""

from __future__ import annotations

import os

# Before anything imports OpenCV, here and in every node process (they inherit it): one
# thread per stage, or the one-process baseline would be parallel inside OpenCV too.
os.environ.setdefault("OPENCV_FOR_THREADS_NUM", "1")

import argparse
import functools
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from pipeline import Frame, Message, Node  # noqa: E402
from pipeline.bench import BenchSettings, ParamSet, prepare_graph, run_prepared  # noqa: E402
from pipeline.bench.machine import machine_info  # noqa: E402
from pipeline.bench.prepare import PreparedGraph  # noqa: E402
from pipeline.bench.run import check_cpus, pinned_cpus  # noqa: E402

PIPELINE_GRAPH = ROOT / "graphs" / "pipeline.yaml"
DETECTOR_GRAPH = ROOT / "graphs" / "detector.yaml"
RESULTS = ROOT / "results" / "pipeline.json"
TARGETS = {"graph_vs_slowest_alone": 0.95, "graph_vs_sequential": 1.6, "node_vs_bare": 0.97}


# --- node objects in one process ----------------------------------------------------------


class _LoopPort:
    """An output port for node objects called directly: keeps the last message sent and
    hands out one reusable buffer per shape (as a shared-memory slot would be)."""

    def __init__(self) -> None:
        self.last: Message | None = None
        self._buffers: dict[tuple[tuple[int, ...], str], np.ndarray] = {}

    def send(self, message: Message) -> None:
        self.last = message

    def allocate(self, shape: tuple[int, ...], dtype: Any = np.uint8) -> np.ndarray:
        key = (tuple(int(s) for s in shape), np.dtype(dtype).str)
        if key not in self._buffers:
            self._buffers[key] = np.empty(key[0], key[1])
        return self._buffers[key]


def _chain(prepared: PreparedGraph) -> list[tuple[str, Node, _LoopPort | None]]:
    """The graph's nodes, opened, in order along its single chain."""
    graph = prepared.graph
    order: list[str] = []
    current = graph.sources()[0]
    while True:
        order.append(current)
        nxt = [e.consumer for e in graph.edges_from(current)]
        if not nxt:
            break
        current = nxt[0]
    nodes = []
    for node_id in order:
        cls = graph.classes[node_id]
        port = _LoopPort() if cls.outputs else None
        ports = dict.fromkeys(cls.outputs, port) if port else {}
        node = cls(graph.params[node_id], node_id=node_id, ports=ports)
        node.open()
        nodes.append((node_id, node, port))
    return nodes


def _call(node: Node, message: Message | None) -> None:
    if message is None:
        node.process()
    else:
        (port,) = type(node).inputs
        node.process(**{port: message})


def _rate(fn: Callable[[], object], min_calls: int, min_s: float) -> float:
    """Calls per second of ``fn``, after 3 warm-up calls, over at least ``min_calls`` calls
    and ``min_s`` seconds."""
    for _ in range(3):
        fn()
    calls, t0 = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - t0 < min_s:
        fn()
        calls += 1
    return calls / (time.perf_counter() - t0)


def stages_in_one_process(
    prepared: PreparedGraph, min_calls: int, min_s: float
) -> tuple[dict[str, float], float]:
    """Each stage alone in a loop on a ready input, and all stages one after another."""
    nodes = _chain(prepared)
    try:
        inputs: dict[str, Message | None] = {}
        message: Message | None = None
        for node_id, node, port in nodes:
            inputs[node_id] = message
            _call(node, message)
            message = port.last if port else None
        alone = {
            node_id: _rate(functools.partial(_call, node, inputs[node_id]), min_calls, min_s)
            for node_id, node, _ in nodes
        }

        def one_frame() -> None:
            msg: Message | None = None
            for _, node, port in nodes:
                _call(node, msg)
                msg = port.last if port else None

        sequential = _rate(one_frame, min_calls, min_s)
    finally:
        for _, node, _ in nodes:
            node.close()
    return alone, sequential


# --- the bare model loop ------------------------------------------------------------------


class BareModel:
    """A catalog model run the way the model nodes run it, without the node: the same
    ``pipeline_nodes.inference.vision`` object (input preparation, model, decoder), stage by
    stage."""

    def __init__(self, name: str, threads: int | None) -> None:
        from pipeline_nodes.inference.models.store import model_info
        from pipeline_nodes.inference.params import ClassifierParams, DetectorParams
        from pipeline_nodes.inference.vision import Classifier, Detector

        self.task = model_info(name).get("task")
        self.vision: Detector | Classifier
        self._whole: Callable[[np.ndarray], Any]
        if self.task == "classification":
            self.vision = Classifier(ClassifierParams(model=name, num_threads=threads))
            self._whole = self.vision.classify
        else:
            self.vision = Detector(DetectorParams(model=name, num_threads=threads))
            self._whole = self.vision.detect
        self.model = self.vision.model
        self.spec = self.vision.input
        self.decoder = self.vision.decoder

    def tensor(self, image: np.ndarray) -> np.ndarray:
        from pipeline_nodes.inference.preprocess import prepare

        return prepare(image, self.spec)[0]

    def infer(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        return self.model.infer({self.spec.name: tensor})

    def frame(self, image: np.ndarray) -> Any:
        return self._whole(image)

    def close(self) -> None:
        self.vision.close()


def synthetic_image(width: int = 640, height: int = 480) -> np.ndarray:
    """One frame of the synthetic source (its node object, called once)."""
    from pipeline_nodes.sources.synthetic import SyntheticSource

    port = _LoopPort()
    node = SyntheticSource(
        SyntheticSource.Params.model_validate({"width": width, "height": height, "fps": 0}),
        node_id="camera",
        ports={"frames": port},
    )
    node.open()
    node.process()
    assert isinstance(port.last, Frame)
    return np.array(port.last.image)


def model_table(min_s: float) -> dict[str, Any]:
    """ms per frame of every fetched catalog model with 1 and 2 threads."""
    from pipeline_nodes.inference.models.catalog import catalog_names

    image = synthetic_image()
    table: dict[str, Any] = {}
    for name in catalog_names():
        row: dict[str, Any] = {}
        for threads in (1, 2):
            try:
                bare = BareModel(name, threads)
            except Exception as exc:  # not fetched, or its runtime is missing
                row = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
                break
            try:
                tensor = bare.tensor(image)
                infer_hz = _rate(functools.partial(bare.infer, tensor), 10, min_s)
                frame_hz = _rate(functools.partial(bare.frame, image), 10, min_s)
            finally:
                bare.close()
            row[str(threads)] = {
                "infer_ms": round(1e3 / infer_hz, 3),
                "frame_ms": round(1e3 / frame_hz, 3),
            }
        table[name] = row
        print(f"  {name:<24} " + _model_cells(row), flush=True)
    return table


def _model_cells(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"skipped: {row['error']}"
    return "  ".join(
        f"{threads} thread{'s' if threads != '1' else ''}: {r['infer_ms']:7.2f} ms infer, "
        f"{r['frame_ms']:7.2f} ms frame"
        for threads, r in row.items()
    )


# --- the run ------------------------------------------------------------------------------


def _prepare(path: Path, sets: list[ParamSet] | None = None) -> PreparedGraph:
    prepared, issues = prepare_graph(path, sets or [])
    if prepared is None:
        raise SystemExit("\n".join(i.format() for i in issues))
    return prepared


def _graph_run(prepared: PreparedGraph, settings: BenchSettings) -> dict[str, Any]:
    run = run_prepared(prepared, settings)
    if run.exit_code:
        raise SystemExit(f"the benchmark graph {prepared.name!r} failed: {run.error}")
    return run.result


def _mean(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: (a[k] + b[k]) / 2 for k in a}


def one_round(
    pipeline: PreparedGraph,
    detector_graph: PreparedGraph,
    model: str,
    image: np.ndarray,
    settings: BenchSettings,
    loop_s: float,
) -> dict[str, Any]:
    """Every measurement once. Each in-process figure is the mean of a loop just before and
    one just after the graph it is compared with, so a drift of the machine's speed during
    the round (a shared host) cancels out in the ratios."""
    alone_1, seq_1 = stages_in_one_process(pipeline, 20, loop_s)
    graph = _graph_run(pipeline, settings)
    alone_2, seq_2 = stages_in_one_process(pipeline, 20, loop_s)
    alone, sequential = _mean(alone_1, alone_2), (seq_1 + seq_2) / 2
    bare = BareModel(model, 1)
    try:
        frame = functools.partial(bare.frame, image)
        bare_1 = _rate(frame, 20, loop_s)
        node_graph = _graph_run(detector_graph, settings)
        bare_2 = _rate(frame, 20, loop_s)
    finally:
        bare.close()
    bare_fps = (bare_1 + bare_2) / 2
    graph_fps = float(graph["end_to_end"]["throughput_fps"])
    node_fps = float(node_graph["end_to_end"]["throughput_fps"])
    slowest = min(alone, key=lambda n: alone[n])
    return {
        "stages_alone_fps": alone,
        "slowest_stage": slowest,
        "sequential_fps": sequential,
        "graph_fps": graph_fps,
        "node_in_graph_fps": node_fps,
        "bare_loop_fps": bare_fps,
        "ratios": {
            "graph_vs_slowest_alone": graph_fps / alone[slowest],
            "graph_vs_sequential": graph_fps / sequential,
            "node_vs_bare": node_fps / bare_fps,
        },
        "graph": graph,
        "node_graph": node_graph,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="repeat everything (median)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per graph run")
    parser.add_argument("--quick", action="store_true", help="one short round (noisier)")
    parser.add_argument("--models", action="store_true", help="also time every catalog model")
    parser.add_argument(
        "--cpus", type=int, default=2, help="cores to pin the whole benchmark to (default 2)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rounds = 1 if args.quick else max(1, args.rounds)
    duration = 4.0 if args.quick else args.duration
    loop_s = 1.0 if args.quick else 2.0
    cpus = min(args.cpus, len(os.sched_getaffinity(0)))
    check_cpus(cpus)
    settings = BenchSettings(duration_s=duration, warmup=20, cpus=cpus)

    pipeline = _prepare(PIPELINE_GRAPH)
    detector_graph = _prepare(DETECTOR_GRAPH, [ParamSet("detector", ("num_threads",), 1)])
    detector_params: Any = detector_graph.graph.params["detector"]
    model = str(detector_params.model)
    results = []
    with pinned_cpus(cpus):
        image = synthetic_image()
        for i in range(rounds):
            print(f"round {i + 1}/{rounds}: {pipeline.file} and {detector_graph.file}", flush=True)
            results.append(one_round(pipeline, detector_graph, model, image, settings, loop_s))
            r = results[-1]["ratios"]
            print(
                "  (a) {graph_vs_slowest_alone:.2f}  (b) {graph_vs_sequential:.2f}  "
                "(c) {node_vs_bare:.2f}".format(**r),
                flush=True,
            )
        models = None
        if args.models:
            print("models (ms per frame, one process) ...", flush=True)
            models = model_table(0.5 if args.quick else 1.5)

    def median(key: str) -> float:
        return statistics.median(float(r[key]) for r in results)

    ratios = {k: statistics.median(r["ratios"][k] for r in results) for k in TARGETS}
    spread = {
        k: (min(r["ratios"][k] for r in results), max(r["ratios"][k] for r in results))
        for k in TARGETS
    }
    targets = {name: ratios[name] >= goal for name, goal in TARGETS.items()}
    # the round whose graph throughput is the median shows the per-stage detail
    middle = sorted(results, key=lambda r: r["graph_fps"])[len(results) // 2]
    graph = middle["graph"]
    alone = {
        k: statistics.median(r["stages_alone_fps"][k] for r in results)
        for k in middle["stages_alone_fps"]
    }

    print()
    print(f"{'stage':<10} {'alone frames/s':>15} {'ms':>8} {'in graph frames/s':>18} {'CPU %':>6}")
    for node_id, fps in alone.items():
        in_graph = graph["nodes"][node_id]
        cpu = in_graph["cpu_pct"]
        print(
            f"{node_id:<10} {fps:>15.1f} {1e3 / fps:>8.2f} {in_graph['fps']:>18.1f} "
            f"{'-' if cpu is None else f'{cpu:.0f}':>6}"
        )
    print()
    print(f"medians of {rounds} round{'s' if rounds > 1 else ''}:")
    neck = graph["bottleneck"]["reason"]
    print(f"graph                     {median('graph_fps'):8.1f} frames/s  (bottleneck: {neck})")
    slowest = middle["slowest_stage"]
    print(f"slowest stage alone       {alone[slowest]:8.1f} frames/s  ({slowest})")
    print(f"stages one after another  {median('sequential_fps'):8.1f} frames/s")
    node_fps = median("node_in_graph_fps")
    print(f"detector node in a graph  {node_fps:8.1f} frames/s  ({model}, 1 thread)")
    print(f"bare model loop           {median('bare_loop_fps'):8.1f} frames/s")
    print()
    labels = {
        "graph_vs_slowest_alone": "(a) graph / slowest stage alone",
        "graph_vs_sequential": f"(b) graph / one-process loop ({cpus} cores)",
        "node_vs_bare": "(c) detector node / bare model loop",
    }
    for name, label in labels.items():
        verdict = "met" if targets[name] else "NOT met"
        low, high = spread[name]
        print(
            f"{label:<42} {ratios[name]:5.2f}  (rounds {low:.2f}..{high:.2f})  "
            f"target >= {TARGETS[name]}: {verdict}"
        )
    for r in results:
        usage = r["graph"]["run"].get("cpu")
        if usage and usage["busy_pct"] - usage["graph_pct"] > 20:
            other = usage["busy_pct"] - usage["graph_pct"]
            print(
                f"\nwarning: other processes kept the cores {other:.0f}% busy during a graph "
                "run: the figures are low; run on an idle machine"
            )
            break

    args.out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "pipeline",
        "graphs": {
            "pipeline": {
                "file": str(PIPELINE_GRAPH.relative_to(ROOT.parent)),
                "hash": pipeline.hash,
            },
            "detector": {
                "file": str(DETECTOR_GRAPH.relative_to(ROOT.parent)),
                "hash": detector_graph.hash,
                "sets": detector_graph.sets,
            },
        },
        "settings": {
            "cpus": cpus,
            "rounds": rounds,
            "duration_s": duration,
            "loop_s": loop_s,
            "opencv_threads": os.environ["OPENCV_FOR_THREADS_NUM"],
        },
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "ratio_spread": {k: [round(v[0], 3), round(v[1], 3)] for k, v in spread.items()},
        "targets": {f"{k}>={TARGETS[k]}": v for k, v in targets.items()},
        "stages_alone_fps": {k: round(v, 2) for k, v in alone.items()},
        "sequential_fps": round(median("sequential_fps"), 2),
        "graph_fps": round(median("graph_fps"), 2),
        "detector": {
            "model": model,
            "threads": 1,
            "node_in_graph_fps": round(median("node_in_graph_fps"), 2),
            "bare_loop_fps": round(median("bare_loop_fps"), 2),
        },
        "median_round_graph": {
            "latency_ms": graph["end_to_end"]["latency_ms"],
            "bottleneck": graph["bottleneck"],
            "nodes": {
                k: {"fps": v["fps"], "busy_pct": v["busy_pct"], "cpu_pct": v["cpu_pct"]}
                for k, v in graph["nodes"].items()
            },
            "cpu": graph["run"].get("cpu"),
        },
        "rounds": [
            {k: v for k, v in r.items() if k not in ("graph", "node_graph")}
            | {"graph_cpu": r["graph"]["run"].get("cpu")}
            for r in results
        ],
        "models_ms": models,
        "machine": machine_info(),
    }
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

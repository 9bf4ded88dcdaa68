"""Two replicated stages in a row (``replicas:`` fed straight by ``replicas:``, kept in order
by watermarks, ``pipeline.runtime.replicas``) against today's workaround (an unreplicated
node between them) and one copy of each stage, in one run, rounds interleaved.

The graph: a synthetic camera (320x240, flat out) -> ``a`` -> ``b`` -> jsonl of the frames'
seqs, ``a`` and ``b`` each a ``Stage`` that waits ``--wait-ms`` per frame (an accelerator or
a remote service doing the work: four copies of a CPU-bound stage could not run side by side
on this 2-core machine) and spins ``--work-ms`` of CPU. Variants:

- ``chain``: ``a`` and ``b`` of ``replicas: 2``, ``b`` fed by ``a``'s copies (watermarks);
- ``between``: the same with an unreplicated relay (``mid``) between them (what ``pipeline
  check`` asked for before watermarks);
- ``single``: one copy of each (the 1x reference).

Per variant: frames/s at the sink after a warm-up, latency (capture to the sink's process,
p50), CPU per frame of every node together (after the warm-up), the merges that waited out
their patience (``merge_timeouts``), the results that came too late for the order
(``late_results``), and the watermarks sent per frame. Then the cost of a watermark at the
producer, in one process: sending a small message to a ``Distributor`` of two copies that
sends watermarks (a copy's) against one that does not (a camera's, unasked), on the fast path
and on ZeroMQ (``inproc``).

    .venv/bin/python benchmarks/replica_chain.py                 # about two minutes
    .venv/bin/python benchmarks/replica_chain.py --quick --rounds 1

Writes ``benchmarks/results/replica_chain.json`` (with the load average).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))  # benchmarks.bench_nodes, in every node process
sys.path.insert(0, str(ROOT))

from transport import machine, write_result  # noqa: E402

from pipeline.messages import Frame  # noqa: E402
from pipeline.runtime.replicas import Distributor, connect_senders  # noqa: E402
from pipeline.transport.channels import EdgeSender, InputEdge, RuntimeOutput  # noqa: E402
from pipeline.transport.fastpath import open_input, open_sender  # noqa: E402
from pipeline.transport.plan import EdgePlan, slot_pool_size  # noqa: E402
from pipeline.transport.shm import ShmReader, SlotPool  # noqa: E402

RESULTS = ROOT / "results" / "replica_chain.json"

HEAD = """\
graph: {name}
nodes:
  - id: camera
    node: synthetic
    params: {{width: 320, height: 240, fps: 0, frames: {frames}}}
  - id: a
    node: benchmarks.bench_nodes:Stage
    params: {{wait_ms: {wait}, work_ms: {work}}}
    replicas: {copies}
    inputs: {{frames: {{from: camera/frames, queue: 2}}}}
"""
MID = """\
  - id: mid
    node: benchmarks.bench_nodes:Stage
    inputs: {frames: {from: a/out, queue: 2}}
"""
TAIL = """\
  - id: b
    node: benchmarks.bench_nodes:Stage
    params: {{wait_ms: {wait}, work_ms: {work}}}
    replicas: {copies}
    inputs: {{frames: {{from: {into_b}, queue: 2}}}}
  - id: sink
    node: jsonl
    params: {{path: {out}}}
    inputs: {{messages: b/out}}
"""
VARIANTS = ("chain", "between", "single")


class _AfterWarmUp:
    """Every node's statistics at the first report after 0.5 s in which all have worked."""

    def __init__(self) -> None:
        self.first: dict[str, Any] = {}

    def on_stats(self, stats: Any, elapsed_s: float) -> None:
        if not self.first and elapsed_s >= 0.5 and all(s.calls for s in stats.values()):
            self.first = dict(stats)


def graph_text(variant: str, frames: int, wait: float, work: float, out: Path) -> str:
    copies = 1 if variant == "single" else 2
    fill = {"frames": frames, "wait": wait, "work": work, "copies": copies, "out": out}
    text = HEAD.format(name=f"chain_{variant}", **fill)
    if variant == "between":
        text += MID
    return text + TAIL.format(into_b="mid/out" if variant == "between" else "a/out", **fill)


def run_variant(variant: str, frames: int, wait: float, work: float, tmp: Path) -> dict[str, Any]:
    from pipeline import load_graph, run_graph

    out = tmp / f"{variant}.jsonl"
    path = tmp / f"{variant}.yaml"
    path.write_text(graph_text(variant, frames, wait, work, out))
    warm = _AfterWarmUp()
    load = os.getloadavg()[0]
    result = run_graph(load_graph(path), monitor=warm)
    if result.exit_code != 0:
        raise RuntimeError(f"{variant}: the graph failed: {result.error}")
    seqs = [json.loads(line)["seq"] for line in out.read_text().splitlines()]
    assert seqs == list(range(frames)), f"{variant}: frames lost or out of order"
    stats = result.stats
    first = warm.first
    assert first, "the run ended before its warm-up did: give it more frames"
    sink = stats["sink"]
    done = sink.received - first["sink"].received
    fps = done / (sink.elapsed_s - first["sink"].elapsed_s)
    cpu = sum(stats[k].cpu_s - first[k].cpu_s for k in stats)

    def total(counter: str) -> int:
        return sum(s.counters.get(counter, 0) for s in stats.values())

    return {
        "fps": fps,
        "cpu_ms_per_frame": 1000 * cpu / done,
        "latency_p50_ms": sink.latency_ms["p50_ms"],
        "merge_timeouts": total("merge_timeouts"),
        "late_results": total("late_results"),
        "watermarks_per_frame": total("watermarks_sent") / frames,
        "processes": len(stats),
        "load": [load, os.getloadavg()[0]],
    }


# the cost of a watermark at the producer ---------------------------------------------------
def _send_cost(transport: str, marks: bool, count: int, folder: Path) -> float:
    """Microseconds per ``send`` of a small message to a distributor of two copies."""
    ctx: zmq.Context[Any] = zmq.Context()
    reader = ShmReader()
    producer = "a[0]" if marks else "camera"  # a copy's distributor marks unasked
    inputs: list[InputEdge] = []
    senders: list[EdgeSender] = []
    for k in range(2):
        plan = EdgePlan(
            producer=producer,
            output="frames",
            consumer=f"b[{k}]",
            input="frames",
            queue=count + 4,  # never out of credit: the send alone is measured
            when_full="block",
            transport="shm",
            release_batch=1,
            bind=f"ipc://{folder}/{secrets.token_hex(4)}"
            if transport == "fast"
            else f"inproc://{secrets.token_hex(4)}",
            spread="seq",
        )
        if transport == "fast":
            edge = open_input(None, plan, reader)
            sender = open_sender(None, plan, edge.endpoint)
            edge.has_message()  # maps the ring
        else:
            edge = InputEdge(ctx, plan, reader)
            sender = EdgeSender(ctx, plan, edge.endpoint)
        inputs.append(edge)
        senders.append(sender)
    pool = SlotPool(f"pipeline-bench-{secrets.token_hex(4)}", max_slots=slot_pool_size([]) + 4)
    out = RuntimeOutput("frames", pool, type=Frame)
    connect_senders(out, senders)
    dist = out.edges[0]
    assert isinstance(dist, Distributor)
    image = np.zeros((8, 8, 3), np.uint8)  # inline: a descriptor-sized message
    frames = [Frame(image=image, seq=i, t_capture_ns=1, source="cam") for i in range(count)]
    t0 = time.perf_counter()
    for frame in frames:
        out.send(frame)
    spent = time.perf_counter() - t0
    assert dist.marks_sent == (count if marks else 0)
    out.close()
    for edge in inputs:
        edge.close()
    reader.close()
    ctx.term()
    return 1e6 * spent / count


def mark_cost(rounds: int, count: int) -> dict[str, Any]:
    """Per transport: microseconds per send with and without watermarks (median of rounds,
    interleaved), and the difference: a watermark's cost per frame."""
    found: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp:
        for transport in ("fast", "zmq"):
            runs: dict[str, list[float]] = {"marks": [], "none": []}
            for _ in range(rounds):
                for marks in (True, False):
                    cost = _send_cost(transport, marks, count, Path(tmp))
                    runs["marks" if marks else "none"].append(cost)
            with_marks = statistics.median(runs["marks"])
            without = statistics.median(runs["none"])
            found[transport] = {
                "us_per_send_with_watermarks": with_marks,
                "us_per_send_without": without,
                "us_per_watermark": with_marks - without,
                "rounds": runs,
            }
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median kept)")
    parser.add_argument("--wait-ms", type=float, default=10.0, help="each stage's wait per frame")
    parser.add_argument("--work-ms", type=float, default=1.0, help="each stage's CPU per frame")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = machine()
    frames = 400 if args.quick else 1200
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp:
        for r in range(args.rounds):
            for variant in VARIANTS:
                got = run_variant(variant, frames, args.wait_ms, args.work_ms, Path(tmp))
                runs[variant].append(got)
                print(
                    f"round {r + 1} {variant:8s} {got['fps']:7.1f} frames/s  "
                    f"{got['cpu_ms_per_frame']:5.2f} ms CPU/frame  "
                    f"p50 {got['latency_p50_ms']:6.1f} ms  merge timeouts "
                    f"{got['merge_timeouts']}  late {got['late_results']}  "
                    f"watermarks/frame {got['watermarks_per_frame']:.2f}  load {got['load']}"
                )

    def med(variant: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[variant])

    summary = {
        v: {
            k: med(v, k)
            for k in ("fps", "cpu_ms_per_frame", "latency_p50_ms", "watermarks_per_frame")
        }
        | {
            "merge_timeouts": sum(r["merge_timeouts"] for r in runs[v]),
            "late_results": sum(r["late_results"] for r in runs[v]),
        }
        for v in VARIANTS
    }
    ratios = {
        "chain_vs_single_fps": summary["chain"]["fps"] / summary["single"]["fps"],
        "chain_vs_between_fps": summary["chain"]["fps"] / summary["between"]["fps"],
        "chain_vs_between_cpu_per_frame": summary["chain"]["cpu_ms_per_frame"]
        / summary["between"]["cpu_ms_per_frame"],
        "chain_vs_between_latency_p50": summary["chain"]["latency_p50_ms"]
        / summary["between"]["latency_p50_ms"],
    }
    print()
    for v in VARIANTS:
        s = summary[v]
        print(
            f"{v:8s} {s['fps']:7.1f} frames/s  {s['cpu_ms_per_frame']:5.2f} ms CPU/frame  "
            f"p50 {s['latency_p50_ms']:6.1f} ms  merge timeouts {s['merge_timeouts']}  "
            f"late {s['late_results']}  watermarks/frame {s['watermarks_per_frame']:.2f}"
        )
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}x")
    cost = mark_cost(max(3, args.rounds), 2000 if args.quick else 5000)
    for transport, c in cost.items():
        print(
            f"watermark cost at the producer, {transport}: {c['us_per_send_with_watermarks']:.1f} "
            f"vs {c['us_per_send_without']:.1f} us per send: {c['us_per_watermark']:.1f} us"
        )
    write_result(
        args.out,
        "replica_chain",
        started,
        params={"frames": frames, "wait_ms": args.wait_ms, "work_ms": args.work_ms},
        summary=summary,
        ratios=ratios,
        watermark_cost=cost,
        runs=runs,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

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

Per variant, flat out: frames/s at the sink after a warm-up; paced (``--paced-fps``, below
what one copy of each stage can do): latency (capture to the sink's process, p50 and p95);
both: CPU per frame of every node together (after the warm-up), the merges that waited out
their patience (``merge_timeouts``), the results that came too late for the order
(``late_results``), and the watermarks sent per frame. Then the cost of a watermark at the
producer, in one process: sending a small message to a ``Distributor`` of two copies that
sends watermarks (a copy's) against one that does not (a camera's, unasked), on the fast path
and on ZeroMQ (``inproc``).

    .venv/bin/python benchmarks/replica_chain.py                 # about three minutes
    .venv/bin/python benchmarks/replica_chain.py --quick --rounds 1
    git archive main | tar -x -C /tmp/base && .venv/bin/python benchmarks/replica_chain.py \
        --base /tmp/base                                       # about four minutes

With ``--base DIR`` the ``between`` graph also runs on that checkout's code, interleaved
(``between@base``: the workaround as it was before watermarks, when a merge waited for a
sibling's next result).

Writes ``benchmarks/results/replica_chain.json`` (with the load average).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

ROOT = Path(__file__).resolve().parent
# the tree whose ``pipeline`` runs the graphs (``--base``: another checkout) and whose
# ``benchmarks.bench_nodes`` every node process imports
TREE = Path(os.environ.get("REPLICA_CHAIN_TREE", ROOT.parent))
sys.path.insert(0, str(TREE))
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
    params: {{width: 320, height: 240, fps: {fps}, frames: {frames}}}
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


def graph_text(
    variant: str, frames: int, wait: float, work: float, out: Path, fps: float = 0.0
) -> str:
    copies = 1 if variant == "single" else 2
    fill = {"frames": frames, "wait": wait, "work": work, "copies": copies, "out": out, "fps": fps}
    text = HEAD.format(name=f"chain_{variant}", **fill)
    if variant == "between":
        text += MID
    return text + TAIL.format(into_b="mid/out" if variant == "between" else "a/out", **fill)


def run_variant(
    variant: str, frames: int, wait: float, work: float, tmp: Path, fps: float = 0.0
) -> dict[str, Any]:
    """One run: flat out (``fps`` 0) for frames/s, or paced for latency."""
    from pipeline import load_graph, run_graph

    out = tmp / f"{variant}.jsonl"
    path = tmp / f"{variant}.yaml"
    path.write_text(graph_text(variant, frames, wait, work, out, fps))
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
        "latency_p95_ms": sink.latency_ms["p95_ms"],
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
    """Per transport: microseconds per send with and without watermarks (the best of rounds,
    interleaved), and the difference: a watermark's cost per frame."""
    found: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp:
        for transport in ("fast", "zmq"):
            runs: dict[str, list[float]] = {"marks": [], "none": []}
            for _ in range(rounds):
                for marks in (True, False):
                    cost = _send_cost(transport, marks, count, Path(tmp))
                    runs["marks" if marks else "none"].append(cost)
            with_marks = min(runs["marks"])  # the least disturbed by other work
            without = min(runs["none"])
            found[transport] = {
                "us_per_send_with_watermarks": with_marks,
                "us_per_send_without": without,
                "us_per_watermark": with_marks - without,
                "rounds": runs,
            }
    return found


def run_base(base: Path, variant: str, count: int, fps: float, args: argparse.Namespace) -> Any:
    """``run_variant`` in a fresh interpreter whose ``pipeline`` is ``base``'s."""
    shutil.copy(ROOT / "bench_nodes.py", base / "benchmarks" / "bench_nodes.py")  # its Stage
    env = {**os.environ, "PYTHONPATH": str(base), "REPLICA_CHAIN_TREE": str(base)}
    command = [sys.executable, __file__, "--one", variant, "--one-frames", str(count)]
    command += ["--one-fps", str(fps), "--wait-ms", str(args.wait_ms)]
    command += ["--work-ms", str(args.work_ms)]
    done = subprocess.run(command, env=env, cwd=base, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median kept)")
    parser.add_argument("--wait-ms", type=float, default=10.0, help="each stage's wait per frame")
    parser.add_argument("--work-ms", type=float, default=1.0, help="each stage's CPU per frame")
    parser.add_argument(
        "--paced-fps", type=float, default=60.0, help="the camera's rate for latency"
    )
    parser.add_argument(
        "--base",
        type=Path,
        help="a checkout of another commit (git archive main | tar -x -C DIR): its graph "
        "with a node between the stages runs too, interleaved (bench_nodes.py is copied in)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--one-frames", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--one-fps", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:  # one run, for --base: its figures as the last line
        with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp:
            got = run_variant(
                args.one, args.one_frames, args.wait_ms, args.work_ms, Path(tmp), args.one_fps
            )
        print(json.dumps(got))
        return 0
    started = machine()
    base = args.base.resolve() if args.base else None
    variants = [*VARIANTS, "between@base"] if base else list(VARIANTS)
    frames = 400 if args.quick else 1200
    paced_frames = 300 if args.quick else 600
    modes = {"flat": (0.0, frames), "paced": (args.paced_fps, paced_frames)}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {m: {v: [] for v in variants} for m in modes}
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp:
        for r in range(args.rounds):
            for mode, (fps, count) in modes.items():
                for variant in variants:
                    if base is not None and variant.endswith("@base"):
                        got = run_base(base, variant.split("@")[0], count, fps, args)
                    else:
                        got = run_variant(
                            variant, count, args.wait_ms, args.work_ms, Path(tmp), fps
                        )
                    runs[mode][variant].append(got)
                    print(
                        f"round {r + 1} {mode:5s} {variant:12s} {got['fps']:7.1f} frames/s  "
                        f"{got['cpu_ms_per_frame']:5.2f} ms CPU/frame  "
                        f"p50 {got['latency_p50_ms']:6.1f} ms  p95 {got['latency_p95_ms']:6.1f} ms"
                        f"  merge timeouts {got['merge_timeouts']}  late {got['late_results']}  "
                        f"watermarks/frame {got['watermarks_per_frame']:.2f}  load {got['load']}",
                        flush=True,
                    )

    keys = ("fps", "cpu_ms_per_frame", "latency_p50_ms", "latency_p95_ms", "watermarks_per_frame")
    summary = {
        mode: {
            v: {k: statistics.median(r[k] for r in runs[mode][v]) for k in keys}
            | {
                "merge_timeouts": sum(r["merge_timeouts"] for r in runs[mode][v]),
                "late_results": sum(r["late_results"] for r in runs[mode][v]),
            }
            for v in variants
        }
        for mode in modes
    }
    flat, paced = summary["flat"], summary["paced"]

    def ratio(table: dict[str, Any], key: str, a: str, b: str) -> float:
        return float(table[a][key] / table[b][key])

    ratios = {
        "chain_vs_single_fps": ratio(flat, "fps", "chain", "single"),
        "chain_vs_between_fps": ratio(flat, "fps", "chain", "between"),
        "chain_vs_between_cpu_per_frame": ratio(flat, "cpu_ms_per_frame", "chain", "between"),
        "chain_vs_between_paced_latency_p50": ratio(paced, "latency_p50_ms", "chain", "between"),
        "chain_vs_between_paced_cpu_per_frame": ratio(
            paced, "cpu_ms_per_frame", "chain", "between"
        ),
    }
    if base is not None:
        was = "between@base"
        ratios |= {
            "chain_vs_base_between_fps": ratio(flat, "fps", "chain", was),
            "chain_vs_base_between_cpu_per_frame": ratio(flat, "cpu_ms_per_frame", "chain", was),
            "chain_vs_base_between_paced_latency_p50": ratio(paced, "latency_p50_ms", "chain", was),
            "between_vs_base_between_paced_latency_p50": ratio(
                paced, "latency_p50_ms", "between", was
            ),
        }
    print()
    for mode in modes:
        for v in variants:
            s = summary[mode][v]
            print(
                f"{mode:5s} {v:12s} {s['fps']:7.1f} frames/s  {s['cpu_ms_per_frame']:5.2f} ms "
                f"CPU/frame  p50 {s['latency_p50_ms']:6.1f} ms  p95 {s['latency_p95_ms']:6.1f} ms"
                f"  merge timeouts {s['merge_timeouts']}  late {s['late_results']}  "
                f"watermarks/frame {s['watermarks_per_frame']:.2f}"
            )
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}x")
    cost = mark_cost(max(7, args.rounds), 2000 if args.quick else 4000)
    for transport, c in cost.items():
        print(
            f"watermark cost at the producer, {transport}: {c['us_per_send_with_watermarks']:.1f} "
            f"vs {c['us_per_send_without']:.1f} us per send: {c['us_per_watermark']:.1f} us"
        )
    write_result(
        args.out,
        "replica_chain",
        started,
        params={
            "base": str(base) if base else None,
            "frames": frames,
            "paced_frames": paced_frames,
            "paced_fps": args.paced_fps,
            "wait_ms": args.wait_ms,
            "work_ms": args.work_ms,
        },
        summary=summary,
        ratios=ratios,
        watermark_cost=cost,
        runs=runs,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

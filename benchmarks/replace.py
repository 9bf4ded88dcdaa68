"""A node restarted on a Ray cluster: after a crash (where it ran) against after its machine
left the cluster (placed again on another), side by side in one run.

A local Ray cluster on loopback (a head, and for each machine-loss run a Ray node that is
then removed; Ray's health checks every 0.5 s, 3 misses, as the tests' cluster), and the graph
synthetic (100 fps, head) -> relay (``restart: on-failure``, 0.05 s backoff) -> recorder (head):

- ``crash``: the relay (on a second Ray node) raises at frame 30; it runs again on the same
  Ray node, in the same ``NodeHost`` actor;
- ``machine_lost``: the relay runs on a Ray node of its own, which is removed (its raylet and
  workers killed) once 10 frames arrived; it is placed again on the head.

Per run: ``reported_s``, from the removal's start to the supervisor's report naming the lost
machine's nodes (Ray's failure detection); ``again_s``, from the node's end (as the
supervisor saw it) to its new incarnation's ``Ready`` (``running again X s after its end``,
less the backoff: for a lost machine this includes a new actor's start); the frames counted
lost, and whether sink received + counted losses == source sent; ``edges``, each edge's
transport at the end (``RunResult.edges``: after the move both of the relay's edges are
shared memory, the recorder having bound its input anew). Results: a table with the ratio,
and ``benchmarks/results/replace.json``.

``moved_edge``: what the relay -> recorder edge carries after the move, as it is now (shared
memory: the recorder binds it anew) against what it stayed before (tcp over loopback, with
the run's CURVE keys and the sealed bulk socket): the same 64x48 frames through a real edge
of each kind in this one process, producer and consumer taking turns (queue 4, block), best
of ``--repeat`` rounds, interleaved; frames/s, and CPU per frame of the whole process (the
ZeroMQ I/O thread's encryption included).

    .venv/bin/python benchmarks/replace.py            # about two minutes
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import re
import secrets
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transport import machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results" / "replace.json"
BACKOFF_S = 0.05
HEALTH = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 500,
    "health_check_timeout_ms": 500,
    "health_check_failure_threshold": 3,
}
GRAPH = """
graph: replace_bench
nodes:
  - id: camera
    node: synthetic
    params: {{width: 64, height: 48, fps: 100, frames: 0}}
    placement: {{labels: {{site: a}}}}
  - id: relay
    node: tests.integration.nodes_for_tests:Relay
    params: {{fail_at: {fail_at}}}
    inputs: {{frames: {{from: camera/frames, queue: 4}}}}
    placement: {{labels: {{site: {site}}}}}
    restart: on-failure
    restart_backoff_s: {{initial: {backoff}, max: 1}}
  - id: rec
    node: tests.integration.nodes_for_tests:Recorder
    params: {{path: {rec}}}
    inputs: {{frames: relay/out}}
    placement: {{labels: {{site: a}}}}
"""
AGAIN = re.compile(r"running again ([0-9.]+) s after its end")


class _Lines(io.StringIO):
    """The supervisor's messages, each with when it was written."""

    def __init__(self) -> None:
        super().__init__()
        self.stamped: list[tuple[float, str]] = []

    def write(self, text: str) -> int:
        self.stamped.append((time.monotonic(), text))
        return super().write(text)


class _Monitor:
    """Removes ``doomed`` (if any) once 10 frames arrived; stops the graph 20 frames after
    the relay's restart."""

    def __init__(self, cluster: Any, doomed: Any) -> None:
        self.cluster, self.doomed = cluster, doomed
        self.removed_at: float | None = None
        self.resumed_from: int | None = None
        self.before: Any = None  # called just before the removal

    def on_stats(self, stats: Any, elapsed_s: float) -> str | None:
        rec, relay = stats.get("rec"), stats.get("relay")
        received = rec.inputs["frames"].received if rec else 0
        if self.doomed is not None and self.removed_at is None and received >= 10:
            self.removed_at = time.monotonic()
            if self.before is not None:
                self.before()
            threading.Thread(target=self.cluster.remove_node, args=(self.doomed,)).start()
        if relay is not None and relay.restarts and self.resumed_from is None:
            self.resumed_from = received
        if self.resumed_from is not None and received >= self.resumed_from + 20:
            return "stop"
        return None


def once(cluster: Any, kind: str, tmp: Path, i: int) -> dict[str, Any]:
    from pipeline import load_graph, run_graph
    from pipeline.cluster import RayLauncher

    doomed = None
    if kind == "machine_lost":
        doomed = cluster.add_node(num_cpus=1, labels={"site": f"gone{i}"})
        cluster.wait_for_nodes()
    rec = tmp / f"rec-{kind}-{i}.jsonl"
    graph = tmp / f"graph-{kind}-{i}.yaml"
    graph.write_text(
        GRAPH.format(
            fail_at=30 if kind == "crash" else -1,
            site="b" if kind == "crash" else f"gone{i}",
            backoff=BACKOFF_S,
            rec=rec,
        )
    )
    if kind == "machine_lost":  # the head may take it once its machine is gone
        text = graph.read_text().replace(f"labels: {{site: gone{i}}}", "resources: {CPU: 1}")
        graph.write_text(text)
    out = _Lines()
    monitor = _Monitor(cluster, doomed)
    launcher = RayLauncher(cluster.address)
    import ray

    # the relay asks for a CPU: hold the head's and the second node's so that it starts on
    # the doomed one; the head's are given back as soon as the graph runs
    hold: list[Any] = []
    if kind == "machine_lost":
        hold = [
            ray.remote(_Hold).options(num_cpus=2, label_selector={"site": s}).remote()
            for s in ("a", "b")
        ]
        ray.get([h.ready.remote() for h in hold], timeout=60)
        monitor.before = lambda: ray.kill(hold[0])
    try:
        result = run_graph(load_graph(graph), launcher=launcher, out=out, monitor=monitor)
    finally:
        if ray.is_initialized():
            for actor in hold:
                ray.kill(actor)
    text = out.getvalue()
    if result.exit_code != 0:
        raise RuntimeError(f"{kind} run {i} failed: {result.error}\n{text}")
    match = AGAIN.search(text)
    if match is None:
        raise RuntimeError(f"no restart seen:\n{text}")
    reported = next((t for t, line in out.stamped if "that machine held" in line), None)
    stats = result.stats
    sent = stats["camera"].sent
    lost = sum(s.counters.get("lost_on_restart", 0) for s in stats.values())
    got = len(rec.read_text().splitlines())
    return {
        "reported_s": round(reported - monitor.removed_at, 3)
        if reported is not None and monitor.removed_at is not None
        else None,
        "again_s": round(float(match.group(1)) - BACKOFF_S, 3),
        "lost": lost,
        "sent": sent,
        "received": got,
        "counts_hold": got + lost == sent,
        "restarts": stats["relay"].restarts,
        "edges": getattr(result, "edges", None),  # None: a tree before RunResult.edges
    }


class _Hold:
    def ready(self) -> bool:
        return True


def moved_edge(transport: str, frames: int, folder: Path) -> dict[str, float]:
    """``frames`` 64x48 frames through one real edge of ``transport`` (``shm``: the fast
    path; ``tcp``: loopback with the run's CURVE keys), producer and consumer in turns."""
    import zmq

    from pipeline.messages import Frame
    from pipeline.transport.channels import RuntimeOutput
    from pipeline.transport.curve import Gatekeeper, RunKeys
    from pipeline.transport.fastpath import open_input, open_sender
    from pipeline.transport.plan import EdgePlan, slot_pool_size
    from pipeline.transport.shm import ShmReader, SlotPool

    tcp = transport == "tcp"
    keys = RunKeys.generate() if tcp else None
    ctx: zmq.Context[Any] = zmq.Context()
    gate = Gatekeeper(ctx, keys) if keys is not None else None
    bind = "tcp://127.0.0.1:*" if tcp else f"ipc://{folder}/moved-{transport}"
    plan = EdgePlan("relay", "out", "rec", "frames", 4, "block", "shm", 1, bind)
    plan = EdgePlan(**{**plan.to_wire(), "transport": transport})
    reader = ShmReader()
    edge = open_input(ctx, plan, reader, keys=keys)
    if gate is not None:
        gate.watch(edge.sock)
    pool = SlotPool(f"pipeline-bench-{secrets.token_hex(4)}", max_slots=slot_pool_size([plan]))
    port = RuntimeOutput(
        "out", pool, [open_sender(ctx, plan, edge.endpoint, edge.key, keys=keys)], Frame
    )
    poller = zmq.Poller()
    poller.register(edge.sock, zmq.POLLIN)
    sent = received = 0
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        while received < frames:
            if sent < frames and sent - received < plan.queue:
                image = port.allocate((48, 64, 3))
                image[0, 0, 0] = sent & 0xFF
                port.send(Frame(image=image, seq=sent, t_capture_ns=1, source="cam"))
                port.end_call()
                sent += 1
                continue
            while not edge.has_message():
                if edge.may_sleep():
                    poller.poll(100)
            message, n, _, _ = edge.recv()
            if not isinstance(message, Frame) or int(message.image[0, 0, 0]) != received & 0xFF:
                raise RuntimeError(f"{transport} edge: frame {received} arrived wrong")
            del message
            edge.release(n)
            received += 1
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        port.close()
        edge.close()
        reader.close()
        if gate is not None:
            gate.close()
        ctx.term()
    return {"fps": round(frames / wall), "cpu_us_per_frame": round(cpu / frames * 1e6, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--frames", type=int, default=3000, help="per moved_edge round")
    parser.add_argument("--repeat", type=int, default=5, help="moved_edge rounds")
    args = parser.parse_args()
    measured_on = machine()  # the load average as it starts
    moved: dict[str, list[dict[str, float]]] = {"shm": [], "tcp": []}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeat):  # interleaved
            for transport in moved:
                moved[transport].append(moved_edge(transport, args.frames, Path(folder)))
    best = {k: max(rounds, key=lambda r: r["fps"]) for k, rounds in moved.items()}
    from ray.cluster_utils import Cluster

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 2,
                "labels": {"site": "a"},
                "include_dashboard": False,
                "_system_config": HEALTH,
            },
        )
        gc.collect()
    cluster.add_node(num_cpus=2, labels={"site": "b"})
    cluster.wait_for_nodes()
    rows: dict[str, list[dict[str, Any]]] = {"crash": [], "machine_lost": []}
    try:
        with tempfile.TemporaryDirectory() as folder:
            for i in range(args.runs):  # interleaved: both see the same machine load
                for kind in rows:
                    rows[kind].append(once(cluster, kind, Path(folder), i))
                    print(kind, rows[kind][-1], flush=True)
    finally:
        cluster.shutdown()
    summary = {
        kind: {
            "again_s_median": round(statistics.median(r["again_s"] for r in runs), 3),
            "again_s_max": max(r["again_s"] for r in runs),
            "reported_s_median": round(
                statistics.median(r["reported_s"] for r in runs if r["reported_s"] is not None),
                3,
            )
            if any(r["reported_s"] is not None for r in runs)
            else None,
            "lost_max": max(r["lost"] for r in runs),
            "counts_hold": all(r["counts_hold"] for r in runs),
        }
        for kind, runs in rows.items()
    }
    crash, lost = summary["crash"], summary["machine_lost"]
    ratio = lost["again_s_median"] / crash["again_s_median"]
    print(f"{'restart':<14} {'again p50':>10} {'again max':>10} {'reported':>9} {'lost max':>9}")
    for kind, s in summary.items():
        reported = f"{s['reported_s_median']:.2f}s" if s["reported_s_median"] is not None else "-"
        print(
            f"{kind:<14} {s['again_s_median']:>9.3f}s {s['again_s_max']:>9.3f}s "
            f"{reported:>9} {s['lost_max']:>9}  counts hold: {s['counts_hold']}"
        )
    print(f"placed again after a machine loss: {ratio:.1f}x the time of a restart in place")
    shm, tcp = best["shm"], best["tcp"]
    print(
        f"the moved edge after the move: shm {shm['fps']:.0f} frames/s "
        f"({shm['cpu_us_per_frame']:.0f} µs CPU/frame) against loopback tcp {tcp['fps']:.0f} "
        f"({tcp['cpu_us_per_frame']:.0f} µs): {shm['fps'] / tcp['fps']:.1f}x the frames/s, "
        f"{tcp['cpu_us_per_frame'] / shm['cpu_us_per_frame']:.1f}x less CPU per frame"
    )
    RESULTS.write_text(
        json.dumps(
            {
                "machine": measured_on,
                "ray_health": HEALTH,
                "runs": rows,
                "summary": summary,
                "machine_lost_over_crash_ratio": round(ratio, 2),
                "moved_edge": {
                    "best": best,
                    "rounds": moved,
                    "frames_per_round": args.frames,
                    "shm_over_tcp_fps": round(shm["fps"] / tcp["fps"], 2),
                    "tcp_over_shm_cpu": round(tcp["cpu_us_per_frame"] / shm["cpu_us_per_frame"], 2),
                },
                "load_avg_at_end": os.getloadavg(),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

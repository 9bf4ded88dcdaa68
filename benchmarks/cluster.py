"""Cluster benchmark: a 1080p frame over a cross-host (tcp) edge, ours against plain pyzmq.

Two processes on this machine over tcp on loopback (what an edge between two Ray nodes is),
in one run, side by side:

- ours, tcp edge: the producer fills a frame in its port's shared memory and sends it
  (``RuntimeOutput`` + ``EdgeSender``): the buffer goes to ZeroMQ without a copy, and the
  consumer's ``InputEdge`` views the received frame without a copy; credits, queue 4. Every
  tcp edge is CURVE-encrypted (the consumer's own server key, handed to the producer);
- ours, on a cluster: the same with the run's client keys checked by the ZAP gatekeeper, as
  ``pipeline run --cluster`` plans an edge between machines;
- plain pyzmq PUSH/PULL tcp, ``copy=False`` (zero-copy send of a ready array), HWM 4;
- plain pyzmq PUSH/PULL tcp, ``copy=True`` (the frame bytes copied into the message), HWM 4;
- plain pyzmq PUSH/PULL tcp, ``copy=False`` with CURVE: what libzmq's encryption costs alone
  (our edge cannot run without CURVE any more; the committed ``cluster.txt`` also holds a run
  from before tcp edges were always encrypted, with our edge's CURVE-off figure).

Each runs flat out for throughput (frames/s, the consumer's receive rate), then paced at
30 fps for one-way latency (send stamp to the consumer's receive; p50). Results print as a
table with ratios and go to ``benchmarks/results/cluster.json``.

    .venv/bin/python benchmarks/cluster.py            # about a minute
    .venv/bin/python benchmarks/cluster.py --quick

``--replicas`` measures instead the face graph with 1 vs 2 detector replicas (``replicas:``,
``pipeline.runtime.replicas``): a decode-light source (the sample video's first 50 frames,
decoded once, sent over and over) -> BlazeFace (``face_full_range``, one thread) -> jsonl of
the detections, on one machine (``run_graph``) and on a local Ray cluster of two Ray nodes
(one CPU each; the detector placed by ``{CPU: 1}``, so two replicas land one on each, and
one replica is measured both where Ray puts it and pinned to the other Ray node, so that
its frames cross tcp with CURVE as one of the two replicas' do). It
prints frames/s at the sink, the ratio 2 vs 1 replica, and CPU seconds per frame (every
node's, and the detectors', per process() call after a warm-up: the supervisor's and Ray's
own processes are not counted), and writes ``benchmarks/results/cluster-replicas.json``:

    .venv/bin/python benchmarks/cluster.py --replicas          # a few minutes
    .venv/bin/python benchmarks/cluster.py --replicas --quick
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import secrets
import struct
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from pipeline.messages import Frame
from pipeline.transport.channels import EdgeSender, InputEdge, RuntimeOutput
from pipeline.transport.curve import Gatekeeper, RunKeys
from pipeline.transport.plan import EdgePlan, slot_pool_size
from pipeline.transport.shm import ShmReader, SlotPool

RESULTS = Path(__file__).parent / "results" / "cluster.json"
REPLICA_RESULTS = Path(__file__).parent / "results" / "cluster-replicas.json"
ROOT = Path(__file__).resolve().parent
W, H = 1920, 1080
PLAN = EdgePlan(
    producer="p",
    output="frames",
    consumer="c",
    input="frames",
    queue=4,
    when_full="block",
    transport="tcp",
    release_batch=2,
    bind="tcp://127.0.0.1:*",
)
STAMP = struct.Struct("<qq")


def _pace(i: int, t0: float, fps: float) -> None:
    if fps:
        due = t0 + i / fps
        while time.perf_counter() < due:
            time.sleep(max(0.0, min(0.002, due - time.perf_counter())))


def _summary(stamps: list[int], latencies: list[int]) -> dict[str, Any]:
    n = len(stamps)
    seconds = (stamps[-1] - stamps[0]) / 1e9 if n > 1 else 0.0
    return {
        "frames": n,
        "fps": (n - 1) / seconds if seconds else 0.0,
        "p50_ms": float(np.percentile(latencies, 50)) / 1e6 if latencies else 0.0,
    }


# --- ours -----------------------------------------------------------------------------------


def ours_consumer(conn: Any, keys_wire: dict[str, str] | None, n: int) -> None:
    keys = RunKeys.from_wire(keys_wire) if keys_wire else None
    ctx: zmq.Context[Any] = zmq.Context()
    gate = Gatekeeper(ctx, keys) if keys else None
    reader = ShmReader()
    edge = InputEdge(ctx, PLAN, reader, keys=keys)
    conn.send((edge.endpoint, edge.key))
    stamps: list[int] = []
    latencies: list[int] = []
    touched = 0
    while len(stamps) < n:
        edge.sock.poll(10_000)
        message, k, _, t_send = edge.recv()
        now = time.monotonic_ns()
        if message is None:
            break
        assert isinstance(message, Frame)
        touched += int(message.image[0, 0, 0])
        stamps.append(now)
        latencies.append(now - t_send)
        edge.release(k)
    edge.flush_releases()
    conn.send(_summary(stamps, latencies))
    edge.close()
    reader.close()
    if gate:
        gate.close()
    ctx.term()


def ours_producer(
    endpoint: str, server_key: str, keys_wire: dict[str, str] | None, n: int, fps: float
) -> None:
    keys = RunKeys.from_wire(keys_wire) if keys_wire else None
    ctx: zmq.Context[Any] = zmq.Context()
    pool = SlotPool(f"pipeline-bench-{os.getpid()}-{secrets.token_hex(3)}", slot_pool_size([PLAN]))
    port = RuntimeOutput(
        "frames", pool, [EdgeSender(ctx, PLAN, endpoint, server_key, keys=keys)], Frame
    )
    t0 = time.perf_counter()
    for i in range(n):
        _pace(i, t0, fps)
        image = port.allocate((H, W, 3))
        image[0, 0, 0] = i & 255
        port.send(Frame(image=image, seq=i, t_capture_ns=time.monotonic_ns(), source="p"))
        port.end_call()
    port.send_eos()
    port.wait_released()
    port.close(linger_ms=1000)
    ctx.term()


def run_ours(cluster: bool, n: int, fps: float) -> dict[str, Any]:
    keys = RunKeys.generate().to_wire() if cluster else None
    parent, child = mp.Pipe()
    consumer = mp.Process(target=ours_consumer, args=(child, keys, n))
    consumer.start()
    endpoint, server_key = parent.recv()
    producer = mp.Process(target=ours_producer, args=(endpoint, server_key, keys, n, fps))
    producer.start()
    result: dict[str, Any] = parent.recv()
    producer.join(60)
    consumer.join(60)
    return result


# --- plain pyzmq ----------------------------------------------------------------------------


def zmq_consumer(conn: Any, n: int, keys_wire: dict[str, str] | None = None) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, 4)
    if keys_wire:  # CURVE without a ZAP check: libzmq's encryption alone
        keys = RunKeys.from_wire(keys_wire)
        sock.curve_server = True
        sock.curve_publickey = keys.server_public.encode()
        sock.curve_secretkey = keys.server_secret.encode()
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    conn.send(f"tcp://127.0.0.1:{port}")
    stamps: list[int] = []
    latencies: list[int] = []
    touched = 0
    for _ in range(n):
        head, frame = sock.recv_multipart(copy=False)
        now = time.monotonic_ns()
        _, t_send = STAMP.unpack(head.bytes)
        image = np.frombuffer(frame.buffer, np.uint8).reshape(H, W, 3)
        touched += int(image[0, 0, 0])
        stamps.append(now)
        latencies.append(now - t_send)
    conn.send(_summary(stamps, latencies))
    sock.close(0)
    ctx.term()


def zmq_producer(
    endpoint: str, n: int, fps: float, copy: bool, keys_wire: dict[str, str] | None = None
) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, 4)
    if keys_wire:
        keys = RunKeys.from_wire(keys_wire)
        sock.curve_serverkey = keys.server_public.encode()
        sock.curve_publickey = keys.client_public.encode()
        sock.curve_secretkey = keys.client_secret.encode()
    sock.connect(endpoint)
    frames = [np.zeros((H, W, 3), np.uint8) for _ in range(8)]  # ready-made, reused
    t0 = time.perf_counter()
    for i in range(n):
        _pace(i, t0, fps)
        image = frames[i % len(frames)]
        image[0, 0, 0] = i & 255
        sock.send(STAMP.pack(i, time.monotonic_ns()), zmq.SNDMORE)
        sock.send(image, copy=copy)
    sock.close(linger=5000)
    ctx.term()


def run_zmq(copy: bool, n: int, fps: float, curve: bool = False) -> dict[str, Any]:
    keys = RunKeys.generate().to_wire() if curve else None
    parent, child = mp.Pipe()
    consumer = mp.Process(target=zmq_consumer, args=(child, n, keys))
    consumer.start()
    endpoint = parent.recv()
    producer = mp.Process(target=zmq_producer, args=(endpoint, n, fps, copy, keys))
    producer.start()
    result: dict[str, Any] = parent.recv()
    producer.join(60)
    consumer.join(60)
    return result


METHODS = {
    "ours tcp edge (CURVE)": lambda n, fps: run_ours(False, n, fps),
    "ours, cluster (+ZAP)": lambda n, fps: run_ours(True, n, fps),
    "pyzmq tcp copy=False": lambda n, fps: run_zmq(False, n, fps),
    "pyzmq tcp copy=True": lambda n, fps: run_zmq(True, n, fps),
    "pyzmq copy=False, CURVE": lambda n, fps: run_zmq(False, n, fps, curve=True),
}


FACE_GRAPH = """\
graph: faces_replicated
nodes:
  - id: camera
    node: benchmarks.bench_nodes:PreloadedVideo
    params: {{path: {video}, frames: {frames}, preload: 50}}
    placement: {{labels: {{site: a}}}}
  - id: faces
    node: detector
    params: {{model: face_full_range, num_threads: 1, default_minimum_confidence: 0.6}}
    replicas: {replicas}
    inputs: {{frames: {{from: camera/frames, queue: 2}}}}
    placement: {{resources: {{CPU: 1}}{where}}}
  - id: sink
    node: jsonl
    params: {{path: {out}}}
    inputs: {{messages: faces/detections}}
    placement: {{labels: {{site: a}}}}
"""


def _face_run(
    replicas: int, frames: int, tmp: Path, launcher: Any, remote: bool = False
) -> dict[str, Any]:
    """One run of the face graph; frames/s at the sink and CPU seconds per frame."""
    from pipeline import load_graph, run_graph

    path = tmp / f"faces-{replicas}.yaml"
    path.write_text(
        FACE_GRAPH.format(
            video=ROOT.parent / "samples" / "people.mp4",
            frames=frames,
            replicas=replicas,
            out=tmp / "faces.jsonl",
            where=", labels: {site: b}" if remote else "",
        )
    )
    warm = _AfterWarmUp()
    result = run_graph(load_graph(path), launcher=launcher, monitor=warm)
    if result.exit_code != 0:
        raise RuntimeError(f"the face graph failed: {result.error}")
    stats = result.stats
    sink = stats["sink"]
    assert sink.received == frames, f"{sink.received} of {frames} detections arrived"
    first = warm.first
    assert first, "the run ended before its warm-up did: give it more frames"
    copies = [k for k in stats if k.startswith("faces")]

    def cpu_per_call(nodes: list[str]) -> float:
        """CPU seconds per process() call of these nodes since the warm-up (each node's
        figures are from its own reports: consistent within a node)."""
        cpu = sum(stats[n].cpu_s - first[n].cpu_s for n in nodes)
        calls = sum(stats[n].calls - first[n].calls for n in nodes)
        return cpu / calls

    detector = cpu_per_call(copies)
    return {
        "fps": (sink.received - first["sink"].received)
        / (sink.elapsed_s - first["sink"].elapsed_s),
        "cpu_ms_per_frame": 1000 * (cpu_per_call(["camera"]) + detector + cpu_per_call(["sink"])),
        "detector_cpu_ms_per_frame": 1000 * detector,
        "detector_p50_ms": max(stats[k].process_ms["p50_ms"] for k in copies),
        "per_replica": {k: stats[k].received for k in copies},
    }


class _AfterWarmUp:
    """Keeps every node's statistics from the first report after 0.5 s of running (the
    warm-up: first inferences, connections): the figures count from there."""

    def __init__(self) -> None:
        self.first: dict[str, Any] = {}

    def on_stats(self, stats: Any, elapsed_s: float) -> None:
        if not self.first and elapsed_s >= 0.5 and all(s.calls for s in stats.values()):
            self.first = dict(stats)


def replicas_main(args: argparse.Namespace) -> int:
    import tempfile

    sys.path.insert(0, str(ROOT.parent))  # benchmarks.bench_nodes, in every node process
    frames = 400 if args.quick else 1200
    places = ["one machine"]
    cluster = None
    try:
        import ray
        from ray.cluster_utils import Cluster

        from pipeline.cluster import RayLauncher

        cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 1, "include_dashboard": False, "labels": {"site": "a"}},
        )
        cluster.add_node(num_cpus=1, labels={"site": "b"})
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level="WARNING")
        places.append("Ray, 2 nodes")
    except ImportError:
        print("ray is not installed (the 'cluster' extra): one machine only")
    results: dict[str, dict[str, Any]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.rounds):  # alternate, keep each one's best: a shared machine
                for place in places:
                    ray_run = place != "one machine" and cluster is not None
                    for replicas, remote in ((1, False), (1, True), (2, False)):
                        if remote and not ray_run:
                            continue
                        launcher = RayLauncher(cluster.address) if ray_run else None
                        run = _face_run(replicas, frames, Path(tmp), launcher, remote)
                        key = f"{place}, {replicas} replica{'s' if replicas > 1 else ''}"
                        key += " (other node: tcp)" if remote else ""
                        best = results.get(key)
                        if best is None or run["fps"] > best["fps"]:
                            results[key] = run
    finally:
        if cluster is not None:
            import ray

            ray.shutdown()
            cluster.shutdown()
    print(f"face graph: {frames} preloaded 640x360 frames -> BlazeFace (1 thread) -> jsonl")
    print(
        f"{'where, detector copies':<42}{'frames/s':>9}{'vs 1':>7}{'CPU ms/frame':>14}"
        f"{'detector CPU ms/frame':>23}"
    )
    ratios = {}
    for key, r in results.items():
        one = results[key.rsplit(",", 1)[0] + ", 1 replica"]["fps"]
        ratio = r["fps"] / one
        if key.endswith("2 replicas"):
            ratios[key.rsplit(",", 1)[0]] = ratio
            tcp = results.get(key.rsplit(",", 1)[0] + ", 1 replica (other node: tcp)")
            if tcp:
                ratios[key.rsplit(",", 1)[0] + " vs 1 replica across tcp"] = r["fps"] / tcp["fps"]
        print(
            f"{key:<42}{r['fps']:>9.1f}{ratio:>6.2f}x{r['cpu_ms_per_frame']:>14.1f}"
            f"{r['detector_cpu_ms_per_frame']:>23.1f}"
        )
    print(
        f"this machine has {os.cpu_count()} cores (load {os.getloadavg()[0]:.1f}): two "
        "machines' worth of cores is not available here"
    )
    REPLICA_RESULTS.write_text(
        json.dumps(
            {
                "machine": {
                    "platform": platform.platform(),
                    "python": sys.version.split()[0],
                    "cpus": os.cpu_count(),
                    "load": os.getloadavg()[0],
                },
                "frames": frames,
                "results": results,
                "ratio_2_vs_1": ratios,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"written to {REPLICA_RESULTS}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames")
    parser.add_argument("--rounds", type=int, default=2, help="alternated rounds; best kept")
    parser.add_argument(
        "--replicas", action="store_true", help="the face graph with 1 vs 2 detector replicas"
    )
    args = parser.parse_args(argv)
    if args.replicas:
        return replicas_main(args)
    mp.set_start_method("spawn")
    n = 150 if args.quick else 400
    lat_n = 45 if args.quick else 90
    results: dict[str, dict[str, Any]] = {}
    for _ in range(args.rounds):  # alternate, keep each method's best: the machine is shared
        for name, run in METHODS.items():
            flat = run(n, 0.0)
            paced = run(lat_n, 30.0)
            best = results.get(name)
            if best is None or flat["fps"] > best["fps"]:
                results[name] = {"fps": flat["fps"], "frames": flat["frames"]}
            p50 = min(paced["p50_ms"], results[name].get("p50_ms", float("inf")))
            results[name]["p50_ms"] = p50
    base = results["pyzmq tcp copy=False"]["fps"]
    base_curve = results["pyzmq copy=False, CURVE"]["fps"]
    ours = results["ours tcp edge (CURVE)"]["fps"]
    print(f"1920x1080 BGR frames over tcp on loopback ({n} flat out, {lat_n} at 30 fps)")
    print(f"{'method':<24}{'frames/s':>10}{'vs pyzmq copy=False':>22}{'p50 ms':>9}")
    for name, r in results.items():
        print(f"{name:<24}{r['fps']:>10.0f}{r['fps'] / base:>21.2f}x{r['p50_ms']:>9.2f}")
    zmq_cost = 1 - base_curve / base
    print(f"our tcp edge: {ours / base_curve:.2f}x plain pyzmq copy=False with CURVE too")
    print(f"CURVE costs {zmq_cost:.0%} of plain pyzmq's throughput at 1080p (libzmq's own)")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": {
                    "platform": platform.platform(),
                    "python": sys.version.split()[0],
                    "cpus": os.cpu_count(),
                    "load": os.getloadavg()[0],
                },
                "frame": [H, W, 3],
                "results": results,
                "ratios": {
                    "ours_tcp_curve_vs_pyzmq_copy_false_curve": ours / base_curve,
                    "ours_tcp_curve_vs_pyzmq_copy_false": ours / base,
                    "pyzmq_curve_cost": zmq_cost,
                },
            },
            indent=2,
        )
        + "\n"
    )
    print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

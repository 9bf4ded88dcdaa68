"""Cluster benchmark: a 1080p frame over a cross-host (tcp) edge, ours against plain pyzmq.

Two processes on this machine over tcp on loopback (what an edge between two Ray nodes is),
in one run, side by side:

- ours, CURVE off: our edge's machinery (``RuntimeOutput`` + ``EdgeSender`` -> ``InputEdge``,
  credits, queue 4, the frame from the port's shared memory to ZeroMQ without a copy, viewed
  without a copy on receive) on a plain tcp socket. Not something a run can do (every tcp
  edge is encrypted): a benchmark-only subclass, to show what encryption costs;
- ours, sealed: a real tcp edge as a run makes it: CURVE for the handshake, heads and small
  messages, the frame's bytes sealed with an AEAD in pieces on the edge's bulk connection (a
  plain TCP socket, ``pipeline.transport.bulk``); "cluster" adds the run's keys and the ZAP
  gatekeeper, as
  ``pipeline run --cluster`` plans an edge between machines; "CURVE only" is the edge as it
  was before the bulk path (every byte through libzmq's CURVE; the producer's threshold
  raised, benchmark only);
- plain pyzmq PUSH/PULL tcp, ``copy=False`` (zero-copy send of a ready array) and
  ``copy=True``, HWM 4 (with glibc's malloc defaults, as a program of one's own has them);
- plain pyzmq ``copy=False`` with CURVE: libzmq's own encryption (what every tcp edge used
  before the bulk path);
- plain pyzmq ``copy=False`` + AES-256-GCM / ChaCha20-Poly1305 (``cryptography``,
  ``encrypt_into`` into a reused buffer, ``decrypt_into`` in place): the prototype that
  decided the bulk path, and which cipher.

Each runs flat out for throughput (frames/s, the consumer's receive rate), then paced at
30 fps for one-way latency (send stamp to the consumer's receive; p50). The main table is
1080p; a second one repeats the encryption rows at 640x480 and 224x224. The rounds alternate
the methods (the machine may be shared): frames/s is each method's best round, and the
"paired" ratios are the median over rounds of two methods' ratio in the same round. CPU per
frame is counted per side (all threads) and per thread (``/proc/self/task/*/schedstat``, the
ZeroMQ I/O threads too): the busiest thread bounds frames/s where every busy thread has a
core of its own, the sum of all where the cores are the limit (this 2-core machine). The
"glibc defaults" row is the sealed edge's receiving side without
``bulk.keep_receive_buffers`` (glibc's malloc defaults), in the same run. Results print as
tables with ratios and the targets, go to ``benchmarks/results/cluster.json`` (with the load
average), and are put at the top of ``benchmarks/results/cluster.txt`` (earlier runs kept
below).

    .venv/bin/python benchmarks/cluster.py            # about six minutes (3 rounds)
    .venv/bin/python benchmarks/cluster.py --quick --rounds 1

``--replicas`` measures instead the face graph with 1 vs 2 detector replicas (``replicas:``,
``pipeline.runtime.replicas``): a decode-light source (the sample video's first 50 frames,
decoded once, sent over and over) -> a face detector (one thread per copy) -> jsonl of
the detections, with BlazeFace (``face_full_range``: light, the source and sink are a sixth
of the CPU) and CenterFace (heavy: the copies are nearly all of it), on one machine
(``run_graph``) and on a local Ray cluster of two Ray nodes (one CPU each; the detector
placed by ``{CPU: 1}``, so two replicas land one on each, and one replica is measured both
where Ray puts it and pinned to the other Ray node, so that its frames cross tcp as one of
the two replicas' do). It prints frames/s at the sink, the ratio 2 vs 1 replica, the
ceiling of that ratio on this machine's cores given the measured CPU per frame (and with a
core per copy: "two machines' worth"), CPU per frame (every node's, the detectors', the
rest's, per process() call after a warm-up: the supervisor's and Ray's own processes are
not counted), the cores the nodes kept busy, and frames/s per busy core against one copy's;
it writes ``benchmarks/results/cluster-replicas.json`` and puts the tables at the top of
``cluster-replicas.txt``:

    .venv/bin/python benchmarks/cluster.py --replicas --rounds 2   # about eight minutes
    .venv/bin/python benchmarks/cluster.py --replicas --quick --rounds 1 --model CenterFace
"""

from __future__ import annotations

import argparse
import dataclasses
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
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from pipeline.messages import Frame
from pipeline.transport import bulk
from pipeline.transport.bulk import default_cipher
from pipeline.transport.channels import EdgeSender, InputEdge, RuntimeOutput
from pipeline.transport.curve import Gatekeeper, RunKeys
from pipeline.transport.plan import EdgePlan, slot_pool_size
from pipeline.transport.shm import ShmReader, SlotPool

RESULTS = Path(__file__).parent / "results" / "cluster.json"
HD = (1080, 1920, 3)
SMALLER = ((480, 640, 3), (224, 224, 3))
REPLICA_RESULTS = Path(__file__).parent / "results" / "cluster-replicas.json"
ROOT = Path(__file__).resolve().parent
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
AEADS = {"aes-256-gcm": AESGCM, "chacha20-poly1305": ChaCha20Poly1305}
Shape = tuple[int, int, int]


def _pace(i: int, t0: float, fps: float) -> None:
    if fps:
        due = t0 + i / fps
        while time.perf_counter() < due:
            time.sleep(max(0.0, min(0.002, due - time.perf_counter())))


def _threads_ns() -> dict[int, int]:
    """CPU nanoseconds each thread of this process has run (``/proc/self/task/*/schedstat``:
    the ZeroMQ I/O thread's too), by thread id."""
    out: dict[int, int] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/schedstat", encoding="ascii") as f:
                out[int(tid)] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return out


def _thread_ms(before: dict[int, int], frames: int) -> list[float]:
    """CPU ms per frame of each thread since ``before`` (those that ran), busiest first."""
    after = _threads_ns()
    ms = [(ns - before.get(tid, 0)) / 1e6 / max(frames, 1) for tid, ns in after.items()]
    return sorted((m for m in ms if m >= 0.005), reverse=True)


def _summary(
    stamps: list[int], latencies: list[int], cpu_s: float, threads: list[float] | None = None
) -> dict[str, Any]:
    n = len(stamps)
    seconds = (stamps[-1] - stamps[0]) / 1e9 if n > 1 else 0.0
    return {
        "threads_ms": threads or [],  # the consumer's threads, CPU ms per frame
        "frames": n,
        "fps": (n - 1) / seconds if seconds else 0.0,
        "p50_ms": float(np.percentile(latencies, 50)) / 1e6 if latencies else 0.0,
        "cpu_ms": cpu_s / max(n - 1, 1) * 1e3,  # the consumer's, all its threads
    }


# --- ours -----------------------------------------------------------------------------------
# CURVE off: the plan says shm (no CURVE, no bulk socket) on a tcp address, and the ends
# then act as a tcp edge (arrays as frames). Benchmark only: a run never does this.
PLAIN_PLAN = dataclasses.replace(PLAN, transport="shm")


def _input_edge(ctx: zmq.Context[Any], mode: str, reader: ShmReader, keys: RunKeys | None):
    if mode.endswith("-defaults"):  # the receiving side with glibc's malloc defaults
        bulk._heap_kept = False
        mode = mode.removesuffix("-defaults")
    else:
        bulk.keep_receive_buffers()  # what every tcp input edge does (CURVE off: by hand)
    if mode == "off":
        edge = InputEdge(ctx, PLAIN_PLAN, reader)
        edge.tcp = True
        edge._view = None
        return edge
    return InputEdge(ctx, PLAN, reader, keys=keys)


def ours_consumer(conn: Any, mode: str, keys_wire: dict[str, str] | None, n: int) -> None:
    keys = RunKeys.from_wire(keys_wire) if keys_wire else None
    ctx: zmq.Context[Any] = zmq.Context()
    gate = Gatekeeper(ctx, keys) if keys else None
    reader = ShmReader()
    edge = _input_edge(ctx, mode, reader, keys)
    conn.send((edge.endpoint, edge.key))
    stamps: list[int] = []
    latencies: list[int] = []
    touched = 0
    cpu0 = 0.0
    threads0: dict[int, int] = {}
    while len(stamps) < n:
        edge.sock.poll(10_000)
        message, k, _, t_send = edge.recv()
        now = time.monotonic_ns()
        if message is None:
            break
        assert isinstance(message, Frame)
        touched += int(message.image[0, 0, 0])
        if not stamps:
            cpu0 = time.process_time()
            threads0 = _threads_ns()
        stamps.append(now)
        latencies.append(now - t_send)
        del message
        edge.release(k)
    edge.flush_releases()
    threads = _thread_ms(threads0, len(stamps) - 1)
    conn.send(_summary(stamps, latencies, time.process_time() - cpu0, threads))
    edge.close()
    reader.close()
    if gate:
        gate.close()
    ctx.term()


def ours_producer(
    conn: Any,
    endpoint: str,
    server_key: str,
    mode: str,
    keys_wire: dict[str, str] | None,
    n: int,
    fps: float,
    shape: Shape,
) -> None:
    keys = RunKeys.from_wire(keys_wire) if keys_wire else None
    mode = mode.removesuffix("-defaults")
    ctx: zmq.Context[Any] = zmq.Context()
    pool = SlotPool(f"pipeline-bench-{os.getpid()}-{secrets.token_hex(3)}", slot_pool_size([PLAN]))
    if mode == "off":
        sender = EdgeSender(ctx, PLAIN_PLAN, endpoint)
        sender.tcp = True
    else:
        sender = EdgeSender(ctx, PLAN, endpoint, server_key, keys=keys)
        if mode == "curve" and sender.bulk is not None:  # every message on CURVE: as before
            sender.bulk.MIN_BYTES = 1 << 62
    port = RuntimeOutput("frames", pool, [sender], Frame)
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    threads0 = _threads_ns()
    for i in range(n):
        _pace(i, t0, fps)
        image = port.allocate(shape)
        image[0, 0, 0] = i & 255
        port.send(Frame(image=image, seq=i, t_capture_ns=time.monotonic_ns(), source="p"))
        port.end_call()
    port.send_eos()
    port.wait_released()
    conn.send(((time.process_time() - cpu0) / n * 1e3, _thread_ms(threads0, n)))
    port.close(linger_ms=1000)
    ctx.term()


def run_ours(mode: str, n: int, fps: float, shape: Shape) -> dict[str, Any]:
    keys = RunKeys.generate().to_wire() if mode == "cluster" else None
    parent, child = mp.Pipe()
    consumer = mp.Process(target=ours_consumer, args=(child, mode, keys, n))
    consumer.start()
    endpoint, server_key = parent.recv()
    mine, theirs = mp.Pipe()
    producer = mp.Process(
        target=ours_producer, args=(theirs, endpoint, server_key, mode, keys, n, fps, shape)
    )
    producer.start()
    result: dict[str, Any] = parent.recv()
    result["cpu_ms_producer"], result["threads_ms_producer"] = mine.recv()
    producer.join(60)
    consumer.join(60)
    return result


# --- plain pyzmq ----------------------------------------------------------------------------


def zmq_consumer(
    conn: Any, n: int, shape: Shape, keys_wire: dict[str, str] | None, aead: str, key: bytes
) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, 4)
    if keys_wire:  # CURVE without a ZAP check: libzmq's encryption alone
        keys = RunKeys.from_wire(keys_wire)
        sock.curve_server = True
        sock.curve_publickey = keys.server_public.encode()
        sock.curve_secretkey = keys.server_secret.encode()
    opener = AEADS[aead](key) if aead else None
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    conn.send(f"tcp://127.0.0.1:{port}")
    nbytes = int(np.prod(shape))
    stamps: list[int] = []
    latencies: list[int] = []
    touched = 0
    cpu0 = 0.0
    threads0: dict[int, int] = {}
    for _ in range(n):
        head, frame = sock.recv_multipart(copy=False)
        if not stamps:
            cpu0 = time.process_time()
            threads0 = _threads_ns()
        _, t_send = STAMP.unpack(head.bytes)
        if opener is not None:  # open in place, in the received frame
            buf = np.frombuffer(frame, np.uint8)
            opener.decrypt_into(head.bytes[:12], buf, head.bytes, buf[:nbytes])
            image = buf[:nbytes].reshape(shape)
        else:
            image = np.frombuffer(frame.buffer, np.uint8).reshape(shape)
        now = time.monotonic_ns()
        touched += int(image[0, 0, 0])
        stamps.append(now)
        latencies.append(now - t_send)
    threads = _thread_ms(threads0, len(stamps) - 1)
    conn.send(_summary(stamps, latencies, time.process_time() - cpu0, threads))
    sock.close(0)
    ctx.term()


def zmq_producer(
    conn: Any,
    endpoint: str,
    n: int,
    fps: float,
    copy: bool,
    shape: Shape,
    keys_wire: dict[str, str] | None,
    aead: str,
    key: bytes,
) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, 4)
    if keys_wire:
        keys = RunKeys.from_wire(keys_wire)
        sock.curve_serverkey = keys.server_public.encode()
        sock.curve_publickey = keys.client_public.encode()
        sock.curve_secretkey = keys.client_secret.encode()
    sealer = AEADS[aead](key) if aead else None
    sock.connect(endpoint)
    frames = [np.zeros(shape, np.uint8) for _ in range(8)]  # ready-made, reused
    # sealed copies, reused: more than can be queued (HWM 4 each side, one on the wire)
    sealed = [np.empty(frames[0].nbytes + 16, np.uint8) for _ in range(16)]
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    threads0 = _threads_ns()
    for i in range(n):
        _pace(i, t0, fps)
        image = frames[i % len(frames)]
        image[0, 0, 0] = i & 255
        head = STAMP.pack(i, time.monotonic_ns())  # its first 12 bytes: a unique nonce
        if sealer is not None:
            out = sealed[i % len(sealed)]
            sealer.encrypt_into(head[:12], image.reshape(-1), head, out)
            sock.send_multipart([head, out], copy=False)
        else:
            sock.send(head, zmq.SNDMORE)
            sock.send(image, copy=copy)
    threads = _thread_ms(threads0, n)  # before close: the I/O thread is gone after term()
    sock.close(linger=5000)
    ctx.term()  # waits until everything was sent
    conn.send(((time.process_time() - cpu0) / n * 1e3, threads))


def run_zmq(
    copy: bool, n: int, fps: float, shape: Shape, curve: bool = False, aead: str = ""
) -> dict[str, Any]:
    keys = RunKeys.generate().to_wire() if curve else None
    key = secrets.token_bytes(32)
    parent, child = mp.Pipe()
    consumer = mp.Process(target=zmq_consumer, args=(child, n, shape, keys, aead, key))
    consumer.start()
    endpoint = parent.recv()
    mine, theirs = mp.Pipe()
    producer = mp.Process(
        target=zmq_producer, args=(theirs, endpoint, n, fps, copy, shape, keys, aead, key)
    )
    producer.start()
    result: dict[str, Any] = parent.recv()
    result["cpu_ms_producer"], result["threads_ms_producer"] = mine.recv()
    producer.join(60)
    consumer.join(60)
    return result


METHODS = {
    "ours tcp, CURVE off": lambda n, fps, sh: run_ours("off", n, fps, sh),
    "ours tcp, CURVE only": lambda n, fps, sh: run_ours("curve", n, fps, sh),
    "ours tcp, sealed": lambda n, fps, sh: run_ours("edge", n, fps, sh),
    "ours cluster, sealed": lambda n, fps, sh: run_ours("cluster", n, fps, sh),
    "ours tcp, sealed, glibc defaults": lambda n, fps, sh: run_ours("edge-defaults", n, fps, sh),
    "pyzmq copy=False": lambda n, fps, sh: run_zmq(False, n, fps, sh),
    "pyzmq copy=True": lambda n, fps, sh: run_zmq(True, n, fps, sh),
    "pyzmq copy=False, CURVE": lambda n, fps, sh: run_zmq(False, n, fps, sh, curve=True),
    "pyzmq + AES-256-GCM": lambda n, fps, sh: run_zmq(False, n, fps, sh, aead="aes-256-gcm"),
    "pyzmq + ChaCha20-Poly1305": lambda n, fps, sh: run_zmq(
        False, n, fps, sh, aead="chacha20-poly1305"
    ),
}
SMALLER_METHODS = (
    "ours tcp, CURVE off",
    "ours tcp, CURVE only",
    "ours tcp, sealed",
    "pyzmq copy=False",
    "pyzmq copy=False, CURVE",
    "pyzmq + AES-256-GCM",
    "pyzmq + ChaCha20-Poly1305",
)


def measure(
    names: tuple[str, ...], shape: Shape, n: int, lat_n: int, rounds: int
) -> dict[str, dict[str, Any]]:
    """Each method once per round, the rounds alternated (the machine is shared): its best
    frames/s, every round's frames/s (``per_round``, for ratios of methods measured side by
    side), the least contended round's CPU per frame per side and per thread."""
    results: dict[str, dict[str, Any]] = {}
    for _ in range(rounds):
        for name in names:
            flat = METHODS[name](n, 0.0, shape)
            paced = METHODS[name](lat_n, 30.0, shape) if lat_n else {"p50_ms": 0.0}
            best = results.get(name)
            cpu = (flat["cpu_ms_producer"], flat["cpu_ms"])
            threads = {"producer": flat["threads_ms_producer"], "consumer": flat["threads_ms"]}
            busiest = max([*threads["producer"], *threads["consumer"], 0.0])
            per_round = [flat["fps"]]
            if best is not None:  # the least contended round's CPU time, per side
                cpu = (min(cpu[0], best["cpu_ms"][0]), min(cpu[1], best["cpu_ms"][1]))
                per_round = [*best["per_round"], flat["fps"]]
                if best["busiest_ms"] <= busiest:
                    threads, busiest = best["threads_ms"], best["busiest_ms"]
            if best is None or flat["fps"] > best["fps"]:
                results[name] = {"fps": flat["fps"], "frames": flat["frames"]}
            results[name]["per_round"] = per_round
            results[name]["cpu_ms"] = list(cpu)
            results[name]["threads_ms"] = threads
            results[name]["busiest_ms"] = busiest
            p50 = min(paced["p50_ms"], results[name].get("p50_ms", float("inf")))
            results[name]["p50_ms"] = p50
    return results


def paired(results: dict[str, dict[str, Any]], name: str, base: str) -> float:
    """The median over rounds of ``name``'s frames/s over ``base``'s in the same round
    (measured a few seconds apart: steadier than a ratio of two bests on a shared machine)."""
    ratios = [a / b for a, b in zip(results[name]["per_round"], results[base]["per_round"]) if b]
    return float(np.median(ratios)) if ratios else 0.0


_OUT: list[str] = []


def say(text: str = "") -> None:
    """Print a line of the results, and keep it for the .txt file."""
    print(text, flush=True)
    _OUT.append(text)


def write_txt(path: Path) -> None:
    """This run's lines first, then the earlier runs the file had (a history of runs)."""
    old = path.read_text() if path.exists() else ""
    text = "\n".join(_OUT) + "\n"
    if old.strip():
        text += "\n\n" + old
    path.write_text(text)
    print(f"written to {path}")


def _commit() -> str:
    import subprocess

    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT.parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except OSError:
        return "an unknown commit"
    return f"commit {done.stdout.strip()}" if done.returncode == 0 else "an unknown commit"


def table(title: str, results: dict[str, dict[str, Any]], latency: bool = True) -> None:
    base = results["pyzmq copy=False"]["fps"]
    say(title)
    say(
        f"{'method':<30}{'frames/s':>9}{'vs pyzmq copy=False':>20}"
        + (f"{'p50 ms':>8}" if latency else "")
        + f"{'CPU ms/frame: producer':>23}{'consumer':>9}{'busiest thread':>15}"
    )
    for name, r in results.items():
        line = f"{name:<30}{r['fps']:>9.0f}{r['fps'] / base:>19.2f}x"
        line += f"{r['p50_ms']:>8.2f}" if latency else ""
        say(line + f"{r['cpu_ms'][0]:>23.2f}{r['cpu_ms'][1]:>9.2f}{r['busiest_ms']:>15.2f}")


def cpu_cost(results: dict[str, dict[str, Any]], name: str, base: str) -> float:
    """What ``name`` costs against ``base`` where the cores are the limit: 1 - the ratio of
    their CPU time per frame (producer and consumer together)."""
    return 1 - sum(results[base]["cpu_ms"]) / sum(results[name]["cpu_ms"])


def thread_cost(results: dict[str, dict[str, Any]], name: str, base: str) -> float:
    """What ``name`` costs against ``base`` with a core for each busy thread (the edge then
    goes as fast as its busiest thread): 1 - the ratio of their busiest threads' CPU time."""
    return 1 - results[base]["busiest_ms"] / results[name]["busiest_ms"]


FACE_GRAPH = """\
graph: faces_replicated
nodes:
  - id: camera
    node: benchmarks.bench_nodes:PreloadedVideo
    params: {{path: {video}, frames: {frames}, preload: 50}}
    placement: {{labels: {{site: a}}}}
  - id: faces
    node: detector
    params: {{model: {model}, num_threads: 1, default_minimum_confidence: 0.6}}
    replicas: {replicas}
    inputs: {{frames: {{from: camera/frames, queue: 2}}}}
    placement: {{resources: {{CPU: 1}}{where}}}
  - id: sink
    node: jsonl
    params: {{path: {out}}}
    inputs: {{messages: faces/detections}}
    placement: {{labels: {{site: a}}}}
"""
# the face detectors measured: BlazeFace (light: the source and sink are a sixth of the work)
# and CenterFace (heavy: the copies are nearly all of it); frames per run, --quick's
FACE_MODELS = {
    "BlazeFace": ("face_full_range", 1200, 400),
    "CenterFace": ("centerface", 300, 100),
}


def _face_run(
    model: str, replicas: int, frames: int, tmp: Path, launcher: Any, remote: bool = False
) -> dict[str, Any]:
    """One run of the face graph; frames/s at the sink and CPU seconds per frame."""
    from pipeline import load_graph, run_graph

    path = tmp / f"faces-{replicas}.yaml"
    path.write_text(
        FACE_GRAPH.format(
            video=ROOT.parent / "samples" / "people.mp4",
            model=model,
            frames=frames,
            replicas=replicas,
            out=tmp / "faces.jsonl",
            where=", labels: {site: b}" if remote else "",
        )
    )
    warm = _AfterWarmUp()
    load = os.getloadavg()[0]
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
    camera, out = cpu_per_call(["camera"]), cpu_per_call(["sink"])
    fps = (sink.received - first["sink"].received) / (sink.elapsed_s - first["sink"].elapsed_s)
    per_frame = camera + detector + out
    return {
        "fps": fps,
        "cpu_ms_per_frame": 1000 * per_frame,
        "detector_cpu_ms_per_frame": 1000 * detector,
        "camera_cpu_ms_per_frame": 1000 * camera,
        "sink_cpu_ms_per_frame": 1000 * out,
        # the cores the graph's nodes kept busy (the supervisor's and Ray's not counted)
        "cores_used": per_frame * fps,
        "detector_p50_ms": max(stats[k].process_ms["p50_ms"] for k in copies),
        "per_replica": {k: stats[k].received for k in copies},
        "load": [load, os.getloadavg()[0]],
    }


class _AfterWarmUp:
    """Keeps every node's statistics from the first report after 0.5 s of running (the
    warm-up: first inferences, connections): the figures count from there."""

    def __init__(self) -> None:
        self.first: dict[str, Any] = {}

    def on_stats(self, stats: Any, elapsed_s: float) -> None:
        if not self.first and elapsed_s >= 0.5 and all(s.calls for s in stats.values()):
            self.first = dict(stats)


def ceiling_fps(copies: int, detector_ms: float, rest_ms: float, cores: float) -> float:
    """The most frames/s a graph can give with ``copies`` of a detector that takes
    ``detector_ms`` of CPU per frame, the rest of the graph ``rest_ms``, on ``cores`` cores:
    each copy is one thread (one core at most), and all of it shares the cores."""
    return 1000 * min(copies / detector_ms, cores / (detector_ms + rest_ms))


def replicas_main(args: argparse.Namespace) -> int:
    import tempfile

    sys.path.insert(0, str(ROOT.parent))  # benchmarks.bench_nodes, in every node process
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
    models = {k: v for k, v in FACE_MODELS.items() if not args.model or k in args.model}
    results: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in models}
    load_before = os.getloadavg()
    commit = _commit()  # what is measured: the tree as the run starts
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.rounds):  # alternate, keep each one's best: a shared machine
                for name, (model, frames, quick_frames) in models.items():
                    for place in places:
                        ray_run = place != "one machine" and cluster is not None
                        for replicas, remote in ((1, False), (1, True), (2, False)):
                            if remote and not ray_run:
                                continue
                            launcher = RayLauncher(cluster.address) if ray_run else None
                            count = quick_frames if args.quick else frames
                            run = _face_run(model, replicas, count, Path(tmp), launcher, remote)
                            run["frames"] = count
                            key = f"{place}, {replicas} replica{'s' if replicas > 1 else ''}"
                            key += " (other node: tcp)" if remote else ""
                            best = results[name].get(key)
                            rounds = [*(best["per_round"] if best else []), run["fps"]]
                            if best is None or run["fps"] > best["fps"]:
                                results[name][key] = run
                            results[name][key]["per_round"] = rounds
    finally:
        if cluster is not None:
            import ray

            ray.shutdown()
            cluster.shutdown()
    load_after = os.getloadavg()
    cores = os.cpu_count() or 1
    say(
        f"# benchmarks/cluster.py --replicas --rounds {args.rounds}"
        f"{' --quick' if args.quick else ''} at {commit}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cores} cores, load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after"
    )
    say(
        "# frames/s: at the sink after a 0.5 s warm-up, the best of the rounds ('paired': the "
        "median over rounds of 2 vs 1 in the same round); CPU ms/frame: "
        "every node's, per frame\n# (the supervisor's and Ray's processes not counted); cores: "
        "the cores the nodes kept busy (CPU/frame x frames/s);\n# ceiling: the most this "
        f"machine's {cores} cores allow with that CPU per frame (each copy one thread, all "
        "of it sharing the cores)"
    )
    ratios: dict[str, float] = {}
    for name, res in results.items():
        model, frames, quick_frames = FACE_MODELS[name]
        say()
        say(
            f"face graph, {name} ({model}, 1 thread per copy): "
            f"{quick_frames if args.quick else frames} preloaded 640x360 frames -> detector "
            "-> jsonl"
        )
        say(
            f"{'where, detector copies':<42}{'frames/s':>9}{'vs 1':>7}{'ceiling':>9}"
            f"{'CPU ms/frame':>13}{'detector':>9}{'rest':>6}{'cores':>7}{'per core vs 1':>15}"
        )
        for key, r in res.items():
            place = key.rsplit(",", 1)[0]
            one = res[place + ", 1 replica"]
            copies = 2 if key.endswith("2 replicas") else 1
            rest = r["camera_cpu_ms_per_frame"] + r["sink_cpu_ms_per_frame"]
            # the ceiling of 2 vs 1 from the 1-copy run's CPU per frame (the less contended)
            d1 = one["detector_cpu_ms_per_frame"]
            r1 = one["camera_cpu_ms_per_frame"] + one["sink_cpu_ms_per_frame"]
            ceiling = ceiling_fps(copies, d1, r1, cores) / ceiling_fps(1, d1, r1, cores)
            ratio = r["fps"] / one["fps"]
            pairs = [a / b for a, b in zip(r["per_round"], one["per_round"]) if b]
            paired_ratio = float(np.median(pairs)) if pairs else 0.0
            # frames/s per busy core against one copy's: what replication costs in CPU (1.00x:
            # nothing); times the ceiling, what these copies would give with the cores free
            per_core = (r["fps"] / r["cores_used"]) / (one["fps"] / one["cores_used"])
            if copies == 2:
                ratios[f"{name}, {place}: per busy core"] = per_core
                ratios[f"{name}, {place}: paired"] = paired_ratio
                # with a core for each copy and one for the rest, from the CPU per frame
                # measured here (the copies' own, contending for this machine's caches)
                ratios[f"{name}, {place}: estimate with a core per copy"] = ceiling_fps(
                    2, r["detector_cpu_ms_per_frame"], rest, 3
                ) / ceiling_fps(1, d1, r1, 3)
                ratios[f"{name}, {place}"] = ratio
                ratios[f"{name}, {place}: ceiling here"] = ceiling
                ratios[f"{name}, {place}: with a core per copy"] = ceiling_fps(
                    2, d1, r1, 3
                ) / ceiling_fps(1, d1, r1, 3)
                tcp = res.get(place + ", 1 replica (other node: tcp)")
                if tcp:
                    ratios[f"{name}, {place} vs 1 replica across tcp"] = r["fps"] / tcp["fps"]
            say(
                f"{key:<42}{r['fps']:>9.1f}{ratio:>6.2f}x{ceiling:>8.2f}x"
                f"{r['cpu_ms_per_frame']:>13.1f}{r['detector_cpu_ms_per_frame']:>9.1f}"
                f"{rest:>6.1f}{r['cores_used']:>7.2f}{per_core:>14.2f}x"
            )
        for place in places:
            if f"{name}, {place}" not in ratios:
                continue
            say(
                f"{name}, {place}: 2 copies give {ratios[f'{name}, {place}']:.2f}x one (paired "
                f"{ratios[f'{name}, {place}: paired']:.2f}x), against a ceiling of "
                f"{ratios[f'{name}, {place}: ceiling here']:.2f}x on {cores} free cores; per "
                f"busy core {ratios[f'{name}, {place}: per busy core']:.2f}x; with a core for "
                "each copy and one for the rest (two machines' worth) the CPU per frame "
                "measured here gives "
                f"{ratios[f'{name}, {place}: estimate with a core per copy']:.2f}x (an "
                "estimate, not a measurement)"
            )
    say(
        f"\nthis machine has {cores} cores, shared with other work (load average "
        f"{load_before[0]:.1f} -> {load_after[0]:.1f}): two machines' worth of cores is not "
        "available here; the ceiling column says what these cores allow"
    )
    REPLICA_RESULTS.write_text(
        json.dumps(
            {
                "machine": {
                    "platform": platform.platform(),
                    "python": sys.version.split()[0],
                    "cpus": cores,
                    "load": [load_before[0], load_after[0]],
                },
                "results": results,
                "ratio_2_vs_1": ratios,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"written to {REPLICA_RESULTS}")
    write_txt(REPLICA_RESULTS.with_suffix(".txt"))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames")
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds; best kept")
    parser.add_argument(
        "--replicas", action="store_true", help="the face graph with 1 vs 2 detector replicas"
    )
    parser.add_argument(
        "--model",
        action="append",
        choices=sorted(FACE_MODELS),
        help="with --replicas: only this detector (again for more); default: all",
    )
    args = parser.parse_args(argv)
    if args.replicas:
        return replicas_main(args)
    mp.set_start_method("spawn")
    n = 150 if args.quick else 400
    lat_n = 45 if args.quick else 90
    load_before = os.getloadavg()
    commit = _commit()  # what is measured: the tree as the run starts
    hd = measure(tuple(METHODS), HD, n, lat_n, args.rounds)
    smaller = {
        f"{w}x{h}": measure(SMALLER_METHODS, (h, w, c), n * 4, 0, args.rounds)
        for h, w, c in SMALLER
    }
    load_after = os.getloadavg()
    say(
        f"# benchmarks/cluster.py --rounds {args.rounds}{' --quick' if args.quick else ''} at "
        f"{commit}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} "
        f"cores, load average {load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    say(
        "# frames/s: each method's best round; 'paired': the median over rounds of two methods' "
        "ratio in the same round;\n# CPU ms/frame: all threads of a side, least contended round; "
        "busiest thread: the one thread with the most CPU\n# per frame (what bounds frames/s when "
        "every busy thread has a core of its own)"
    )
    table(f"1920x1080 BGR frames over tcp on loopback ({n} flat out, {lat_n} at 30 fps)", hd)
    off, sealed = "ours tcp, CURVE off", "ours tcp, sealed"
    base = hd["pyzmq copy=False"]["fps"]
    ratios: dict[str, float] = {
        "ours_curve_off_vs_pyzmq_copy_false": hd[off]["fps"] / base,
        "ours_curve_off_vs_pyzmq_copy_false_paired": paired(hd, off, "pyzmq copy=False"),
        "ours_sealed_vs_pyzmq_copy_false": hd[sealed]["fps"] / base,
        "sealed_cost": 1 - hd[sealed]["fps"] / hd[off]["fps"],
        "sealed_cost_paired": 1 - paired(hd, sealed, off),
        "sealed_cpu_cost": cpu_cost(hd, sealed, off),
        "sealed_busiest_thread_cost": thread_cost(hd, sealed, off),
        "cluster_sealed_cost": 1 - hd["ours cluster, sealed"]["fps"] / hd[off]["fps"],
        "curve_only_cost": 1 - hd["ours tcp, CURVE only"]["fps"] / hd[off]["fps"],
        "curve_only_cpu_cost": cpu_cost(hd, "ours tcp, CURVE only", off),
        "pyzmq_curve_cost": 1 - hd["pyzmq copy=False, CURVE"]["fps"] / base,
        "pyzmq_aes_gcm_cost": 1 - hd["pyzmq + AES-256-GCM"]["fps"] / base,
        "pyzmq_chacha_cost": 1 - hd["pyzmq + ChaCha20-Poly1305"]["fps"] / base,
        "pyzmq_curve_cpu_cost": cpu_cost(hd, "pyzmq copy=False, CURVE", "pyzmq copy=False"),
        "pyzmq_aes_gcm_cpu_cost": cpu_cost(hd, "pyzmq + AES-256-GCM", "pyzmq copy=False"),
        "sealed_kept_vs_defaults_paired": paired(hd, sealed, "ours tcp, sealed, glibc defaults"),
        "sealed_cpu_kept_vs_defaults": cpu_cost(hd, "ours tcp, sealed, glibc defaults", sealed),
    }
    say()
    say(
        "target tcp edge >= 0.9x pyzmq copy=False: CURVE off "
        f"{ratios['ours_curve_off_vs_pyzmq_copy_false']:.2f}x "
        f"(paired {ratios['ours_curve_off_vs_pyzmq_copy_false_paired']:.2f}x); sealed "
        f"{ratios['ours_sealed_vs_pyzmq_copy_false']:.2f}x"
    )
    say(
        f"target encryption costs <= 30% at 1080p: sealed costs {ratios['sealed_cost']:.0%} of "
        f"frames/s (paired {ratios['sealed_cost_paired']:.0%}), {ratios['sealed_cpu_cost']:.0%} "
        f"of CPU per frame, {ratios['sealed_busiest_thread_cost']:.0%} on the busiest thread "
        f"(CURVE only: {ratios['curve_only_cost']:.0%}, {ratios['curve_only_cpu_cost']:.0%} of "
        f"CPU; cluster form {ratios['cluster_sealed_cost']:.0%})"
    )
    say(
        "the sealed edge's receiving side with bulk.keep_receive_buffers against glibc's "
        f"malloc defaults: {ratios['sealed_kept_vs_defaults_paired']:.2f}x frames/s (paired), "
        f"{ratios['sealed_cpu_kept_vs_defaults']:.0%} less CPU"
    )
    say(
        f"on plain pyzmq at 1080p: CURVE costs {ratios['pyzmq_curve_cost']:.0%} "
        f"({ratios['pyzmq_curve_cpu_cost']:.0%} of CPU), AES-256-GCM "
        f"{ratios['pyzmq_aes_gcm_cost']:.0%} ({ratios['pyzmq_aes_gcm_cpu_cost']:.0%} of CPU), "
        f"ChaCha20-Poly1305 {ratios['pyzmq_chacha_cost']:.0%}"
    )
    for size, res in smaller.items():
        say()
        table(f"{size} BGR frames, {n * 4} flat out", res, latency=False)
        cost = 1 - res[sealed]["fps"] / res[off]["fps"]
        ratios[f"sealed_cost_{size}"] = cost
        ratios[f"sealed_cost_paired_{size}"] = 1 - paired(res, sealed, off)
        ratios[f"sealed_cpu_cost_{size}"] = cpu_cost(res, sealed, off)
        curve_cpu = cpu_cost(res, "ours tcp, CURVE only", off)
        ratios[f"curve_only_cpu_cost_{size}"] = curve_cpu
        say(
            f"sealed costs our edge {cost:.0%} at {size} (paired "
            f"{ratios[f'sealed_cost_paired_{size}']:.0%}; "
            f"{ratios[f'sealed_cpu_cost_{size}']:.0%} in CPU time per frame; "
            f"CURVE only {curve_cpu:.0%})"
        )
    say(f"\nbulk cipher on this machine: {default_cipher()}")
    write_txt(RESULTS.with_suffix(".txt"))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": {
                    "platform": platform.platform(),
                    "python": sys.version.split()[0],
                    "cpus": os.cpu_count(),
                    "load": [load_before[0], load_after[0]],
                    "bulk_cipher": default_cipher(),
                },
                "frame": list(HD),
                "results": hd,
                "smaller": smaller,
                "ratios": ratios,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

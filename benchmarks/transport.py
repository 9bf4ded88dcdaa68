"""Transport benchmark: move frames between two processes, ours against what a user would pick.

For 224x224, 640x480 and 1920x1080 uint8 BGR frames, in one run:

- ours, in place: the producer node allocates each frame in its port's shared memory and
  writes into it; a ZeroMQ descriptor goes to the consumer node, which views it with no copy;
- ours, copy in: the producer sends a ready-made array; the port copies it into a slot once;
- ``multiprocessing.Queue`` (pickles through a pipe);
- pyzmq PUSH/PULL over ipc:// with copies (the frame bytes through the socket), HWM 4;
- a numpy memcpy of the frame in one process (the physical floor of "copy the frame once");
- ours without the fast path's spin before sleeping (``PIPELINE_FAST_PATH_SPIN_US=0``, in
  place): every wait sleeps and is woken by a doorbell, as before the spin;
- ours through ZeroMQ (``PIPELINE_FAST_PATH=0``: the descriptor over a ZeroMQ PAIR socket, as
  before the same-host fast path), in place: the before/after of the fast path in one run;
- with ``--peers``: dora-rs and eclipse-zenoh (``benchmarks/peers.py``; ``pip install -e
  '.[peers]'``), same sizes, same pacing; a peer that is not installed is skipped, saying so.

Each method runs flat out for throughput (frames/s, GB/s) and then paced for one-way latency
(capture stamp to the end of the consumer's ``process()``; p50 and p99). Ours runs as a real
graph through ``pipeline.run_graph``: two node processes started by the supervisor, with
back-pressure (``when_full: block``, queue 4): a run that lost a frame is an error, not a
figure. Beside the whole run's rate, ours prints its steady rate (``fps_steady``: the
consumer's frames from its 10th percent to its last, without start-up and shut-down).
Results print as a table with ratios to ours and go to ``benchmarks/results/transport.json``.

    .venv/bin/python benchmarks/transport.py            # about 2 minutes
    .venv/bin/python benchmarks/transport.py --quick    # about 1 minute, fewer frames
    .venv/bin/python benchmarks/transport.py --peers    # with dora-rs and zenoh beside ours
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline import load_graph, run_graph

SIZES = {"224x224": (224, 224), "640x480": (640, 480), "1920x1080": (1920, 1080)}
RESULTS = Path(__file__).parent / "results" / "transport.json"


def ours(
    width: int,
    height: int,
    frames: int,
    fps: float,
    mode: str,
    fast: bool = True,
    spin: bool = True,
) -> dict[str, Any]:
    graph_text = f"""
graph: transport_bench
nodes:
  - id: producer
    node: bench_nodes:FrameSource
    params: {{width: {width}, height: {height}, frames: {frames}, fps: {fps}, mode: {mode}}}
  - id: consumer
    node: bench_nodes:Touch
    params: {{skip: {frames // 10}}}
    inputs:
      frames: {{from: producer/frames, queue: 4, when_full: block}}
"""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "graph.yaml"
        path.write_text(graph_text)
        settings = {"PIPELINE_FAST_PATH": "1" if fast else "0"}
        if not spin:
            settings["PIPELINE_FAST_PATH_SPIN_US"] = "0"
        old = {name: os.environ.get(name) for name in settings}
        os.environ.update(settings)
        try:
            result = run_graph(load_graph(path), log_level="WARNING")
        finally:
            for name, value in old.items():
                if value is None:
                    del os.environ[name]
                else:
                    os.environ[name] = value
    if result.exit_code:
        raise RuntimeError(f"benchmark graph failed: {result.error}")
    consumer = result.stats["consumer"]
    producer = result.stats["producer"]
    if consumer.calls != frames:  # block is lossless: anything else is a bug, not a figure
        raise RuntimeError(f"benchmark graph lost frames: {consumer.calls} of {frames} arrived")
    steady_ns = consumer.counters.get("steady_ns", 0)
    return {
        # both processes' CPU per frame (start-up included): less noisy than frames/s on a
        # shared machine
        "cpu_us_per_frame": (producer.cpu_s + consumer.cpu_s) / max(consumer.calls, 1) * 1e6,
        "frames": consumer.calls,
        "seconds": consumer.elapsed_s,
        "fps": consumer.fps,
        # from the consumer's 10th percent frame to its last: no start-up, no shut-down
        "fps_steady": consumer.counters.get("steady_frames", 0) / steady_ns * 1e9
        if steady_ns
        else 0.0,
        "p50_ms": consumer.latency_ms["p50_ms"],
        "p99_ms": consumer.latency_ms["p99_ms"],
    }


# --- baselines ------------------------------------------------------------------------------


def _spin_until(t: float) -> None:
    while time.perf_counter() < t:
        pass


def _queue_producer(q: Any, shape: tuple[int, ...], frames: int, fps: float) -> None:
    frame = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    period = 1.0 / fps if fps else 0.0
    nxt = time.perf_counter()
    for i in range(frames):
        if period:
            _spin_until(nxt)
            nxt += period
        frame[0, 0, 0] = i & 0xFF
        q.put((time.monotonic_ns(), frame))
    q.put(None)


def _zmq_producer(endpoint: str, shape: tuple[int, ...], frames: int, fps: float) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, 4)
    sock.connect(endpoint)
    frame = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    period = 1.0 / fps if fps else 0.0
    nxt = time.perf_counter()
    for i in range(frames):
        if period:
            _spin_until(nxt)
            nxt += period
        frame[0, 0, 0] = i & 0xFF
        sock.send_multipart([time.monotonic_ns().to_bytes(8, "little"), frame], copy=True)
    sock.send_multipart([b"", b""])
    sock.close(linger=-1)
    ctx.term()


def _summarise(latencies_ns: list[int], t0: float, t1: float, n: int) -> dict[str, Any]:
    lat = np.array(latencies_ns, dtype=np.float64) / 1e6
    return {
        "frames": n,
        "seconds": t1 - t0,
        "fps": n / (t1 - t0) if t1 > t0 else 0.0,
        "p50_ms": float(np.percentile(lat, 50)) if n else 0.0,
        "p99_ms": float(np.percentile(lat, 99)) if n else 0.0,
    }


def mp_queue(width: int, height: int, frames: int, fps: float) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue(maxsize=4)
    proc = ctx.Process(target=_queue_producer, args=(q, (height, width, 3), frames, fps))
    proc.start()
    lat: list[int] = []
    item = q.get()
    t0 = time.perf_counter()
    while item is not None:
        t_send, frame = item
        _ = frame[0, 0, 0]
        lat.append(time.monotonic_ns() - t_send)
        item = q.get()
    t1 = time.perf_counter()
    proc.join()
    return _summarise(lat[1:], t0, t1, len(lat) - 1)


def pyzmq_copy(width: int, height: int, frames: int, fps: float) -> dict[str, Any]:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, 4)
    with tempfile.TemporaryDirectory() as tmp:
        endpoint = f"ipc://{tmp}/bench"
        sock.bind(endpoint)
        proc = mp.get_context("spawn").Process(
            target=_zmq_producer, args=(endpoint, (height, width, 3), frames, fps)
        )
        proc.start()
        lat: list[int] = []
        stamp, data = sock.recv_multipart(copy=True)
        t0 = time.perf_counter()
        while stamp:
            frame = np.frombuffer(data, np.uint8).reshape(height, width, 3)
            _ = frame[0, 0, 0]
            lat.append(time.monotonic_ns() - int.from_bytes(stamp, "little"))
            stamp, data = sock.recv_multipart(copy=True)
        t1 = time.perf_counter()
        proc.join()
    sock.close(linger=0)
    ctx.term()
    return _summarise(lat[1:], t0, t1, len(lat) - 1)


def memcpy(width: int, height: int, frames: int) -> dict[str, Any]:
    src = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    # A ring of destinations larger than the caches, like frames arriving one after another.
    ring = max(2, (64 << 20) // src.nbytes)
    dsts = [np.empty_like(src) for _ in range(ring)]
    for d in dsts:
        np.copyto(d, src)
    times = []
    t0 = time.perf_counter()
    for i in range(frames):
        a = time.perf_counter_ns()
        np.copyto(dsts[i % ring], src)
        times.append(time.perf_counter_ns() - a)
    t1 = time.perf_counter()
    lat = np.array(times, np.float64) / 1e6
    return {
        "frames": frames,
        "seconds": t1 - t0,
        "fps": frames / (t1 - t0),
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
    }


# --- the run --------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """Who measured: enough to tell this machine from another (and how busy it was)."""
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = 0.0
    with contextlib.suppress(OSError, ValueError):
        mem_gb = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    return {
        "hostname": platform.node(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "memory_gb": round(mem_gb, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_avg_at_start": os.getloadavg(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_result(path: Path, benchmark: str, started: dict[str, Any], **sections: Any) -> None:
    """A benchmark's result file: which benchmark, the machine (``machine()`` as the run
    began), the load average at its end, the command line, then ``sections``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": benchmark,
        "machine": started,
        "load_avg_at_end": os.getloadavg(),
        "command": " ".join([f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
        **sections,
    }
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwritten to {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames per method")
    parser.add_argument("--peers", action="store_true", help="dora-rs and zenoh beside ours")
    parser.add_argument("--sizes", default=",".join(SIZES), help="comma-separated subset")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    started = machine()  # the load average before this run added its own
    sizes = {k: SIZES[k] for k in args.sizes.split(",")}
    skipped: dict[str, str] = {}
    peer_fns: dict[str, Any] = {}
    if args.peers:
        import peers

        for label, (name, fn) in peers.PEERS.items():
            why = peers.available(name)
            if why:
                skipped[label] = why
                print(f"peer {label} skipped: {why}", flush=True)
            else:
                peer_fns[label] = fn
    scale = 0.4 if args.quick else 1.0

    def n(base: int) -> int:
        return max(50, int(base * scale))

    # (flat-out frames, paced frames, paced fps) per size. Ours is paced at the same rate at
    # every size, so latencies compare sizes and not wake-up rates (a vCPU that idled longer
    # between frames wakes slower); the baselines are paced below what each can sustain.
    plan = {
        "224x224": (n(20000), n(600), 200.0),
        "640x480": (n(15000), n(600), 200.0),
        "1920x1080": (n(10000), n(600), 200.0),
    }
    baseline_rate = {
        "mp_queue": {"224x224": 50.0, "640x480": 50.0, "1920x1080": 20.0},
        "pyzmq_copy": {"224x224": 200.0, "640x480": 200.0, "1920x1080": 60.0},
    }
    slow_plan = {"224x224": n(4000), "640x480": n(1500), "1920x1080": n(300)}
    results: dict[str, dict[str, Any]] = {}
    for size, (w, h) in sizes.items():
        flat, paced, rate = plan[size]
        slow = slow_plan[size]
        frame_bytes = w * h * 3
        row: dict[str, Any] = {}
        for label, fn in (
            ("ours_inplace", lambda f, r, w=w, h=h: ours(w, h, f, r, "inplace")),
            ("ours_copy_in", lambda f, r, w=w, h=h: ours(w, h, f, r, "copy")),
            ("ours_nospin", lambda f, r, w=w, h=h: ours(w, h, f, r, "inplace", spin=False)),
            ("ours_zmq", lambda f, r, w=w, h=h: ours(w, h, f, r, "inplace", fast=False)),
        ):
            thr = fn(flat, 0.0)
            lat = fn(paced, rate)
            row[label] = {
                "fps": thr["fps"],
                "fps_steady": thr["fps_steady"],
                "p50_ms": lat["p50_ms"],
                "p99_ms": lat["p99_ms"],
                "cpu_us_per_frame": thr["cpu_us_per_frame"],
            }
            print(
                f"{size:>9} {label:<13} {thr['fps']:>9.0f} frames/s   p50 {lat['p50_ms']:.3f} ms"
                f"   CPU {thr['cpu_us_per_frame']:.0f} us/frame (both processes)"
                f"   steady {thr['fps_steady']:.0f} frames/s",
                flush=True,
            )
        for label, base in (("mp_queue", mp_queue), ("pyzmq_copy", pyzmq_copy)):
            thr = base(w, h, slow, 0.0)
            lat = base(w, h, min(paced, slow), baseline_rate[label][size])
            row[label] = {"fps": thr["fps"], "p50_ms": lat["p50_ms"], "p99_ms": lat["p99_ms"]}
            print(
                f"{size:>9} {label:<13} {thr['fps']:>9.0f} frames/s   p50 {lat['p50_ms']:.3f} ms",
                flush=True,
            )
        for label, fn in peer_fns.items():
            peer_flat = min(flat, n(5000))
            try:
                thr = fn(w, h, peer_flat, 0.0)
                lat = fn(w, h, paced, rate)
            except Exception as exc:  # a peer's failure is reported, not fatal
                skipped[f"{label}@{size}"] = f"failed: {exc}"
                print(f"{size:>9} {label:<13} failed: {exc}", flush=True)
                continue
            row[label] = {
                "fps": thr["fps"],
                "p50_ms": lat["p50_ms"],
                "p99_ms": lat["p99_ms"],
                "lost_flat_out": thr["lost"],
                "lost_paced": lat["lost"],
            }
            print(
                f"{size:>9} {label:<13} {thr['fps']:>9.0f} frames/s   p50 {lat['p50_ms']:.3f} ms"
                f"   lost {thr['lost']}/{peer_flat} flat out, {lat['lost']}/{paced} paced",
                flush=True,
            )
        mc = memcpy(w, h, n(2000))
        row["numpy_memcpy"] = {"fps": mc["fps"], "p50_ms": mc["p50_ms"], "p99_ms": mc["p99_ms"]}
        for r in row.values():
            r["gb_s"] = r["fps"] * frame_bytes / 1e9
        results[size] = row

    print()
    header = (
        f"{'size':>9}  {'method':<13} {'frames/s':>10} {'GB/s':>7} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'fps ours/x':>11} {'p50 x/ours':>11}"
    )
    print(header)
    print("-" * len(header))
    for size, row in results.items():
        ref = row["ours_inplace"]
        for label, r in row.items():
            ratio = ref["fps"] / r["fps"] if r["fps"] else float("inf")
            lat_ratio = r["p50_ms"] / ref["p50_ms"] if ref["p50_ms"] else float("inf")
            r["fps_ours_over_x"] = round(ratio, 3)
            r["p50_x_over_ours"] = round(lat_ratio, 3)
            print(
                f"{size:>9}  {label:<13} {r['fps']:>10.0f} {r['gb_s']:>7.2f} "
                f"{r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} {ratio:>10.2f}x {lat_ratio:>10.2f}x"
            )
    targets: dict[str, bool] = {}
    if "1920x1080" in results:
        big = results["1920x1080"]["ours_inplace"]
        targets["inplace_1080p_fps>=10000"] = big["fps"] >= 10000
        targets["inplace_1080p_p50<=0.3ms"] = big["p50_ms"] <= 0.3
    if "224x224" in results:
        small = results["224x224"]["ours_inplace"]
        targets["inplace_224_fps>=37000"] = small["fps"] >= 37000
        targets["inplace_224_p50<=0.15ms"] = small["p50_ms"] <= 0.15
    for size, row in results.items():
        for label in peer_fns:
            if label in row:
                ok = row[label]["fps_ours_over_x"] >= 1 and row[label]["p50_x_over_ours"] >= 1
                targets[f"ahead_of_{label}_at_{size}"] = ok
    print()
    for name, ok in targets.items():
        print(f"target {name}: {'met' if ok else 'NOT met'}")
    write_result(args.out, "transport", started, results=results, skipped=skipped, targets=targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())

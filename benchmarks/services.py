"""Services benchmark: the graph's gRPC door against the same model called in-process.

In one run, beside a running 30 fps graph (synthetic 640x480 source -> BlazeFace full range
detector -> JSONL), served with ``pipeline run --serve``:

- ``Infer`` with a 1x192x192x3 float32 tensor (the model's input) and ``GetDetections`` with
  a 640x480 JPEG, over gRPC (grpclib clients, the request encoded once, 1 and 8 concurrent
  clients each on its own HTTP/2 connection), and the same model (``load_model`` /
  ``load_detector`` with the node's params; for detections, JPEG decoding included) called
  in-process by 1 and 8 threads: requests/s, p50 and p99 latency; ``Infer`` also over the
  Unix socket (local callers);
- the graph's output rate (lines its JSONL sink writes per second) while idle and while 8
  clients call ``Infer`` flat out;
- CPU per request: the in-process calls' process time, and the server process's CPU (from
  /proc) per request served, which a busy machine distorts far less than latency.

Priorities: the server runs at nice 10 (its default, so that the graph gets the CPU first); the
benchmark's in-process calls and its client processes run at that same niceness, so the
comparison is at equal priority, and the graph (nice 0) is measured against callers of the
server's priority. On a machine shared with other work the load average is recorded: compare
ratios from one run, not absolute figures across runs.

Targets (issue 9): the service adds at most 1 ms to an Infer's p50, reaches >= 0.8x the
in-process rate with 8 clients, and the graph keeps >= 0.95 of its frame rate. Results print
as a table and go to ``benchmarks/results/services.json``.

    .venv/bin/python benchmarks/services.py            # about 90 s
    .venv/bin/python benchmarks/services.py --quick    # about 45 s
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = "face_full_range"
GRAPH = """
graph: bench_services
nodes:
  - id: camera
    node: synthetic
    params: {{width: 640, height: 480, fps: 30, frames: 0}}
  - id: faces
    node: detector
    params: {{model: {model}, num_threads: 1}}
    inputs: {{frames: camera/frames}}
  - id: log
    node: jsonl
    params: {{path: {log}}}
    inputs: {{messages: faces/detections}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _summary(latencies_s: list[float], elapsed_s: float) -> dict[str, float]:
    lat = np.array(latencies_s) * 1e3
    return {
        "requests": len(lat),
        "rate_per_s": round(len(lat) / elapsed_s, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 3) if len(lat) else 0.0,
        "p99_ms": round(float(np.percentile(lat, 99)), 3) if len(lat) else 0.0,
    }


def in_process(fn: Callable[[], Any], threads: int, duration_s: float) -> dict[str, float]:
    """``threads`` threads call ``fn`` in a loop for ``duration_s``."""
    fn()  # warm up
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + duration_s

    def loop() -> None:
        mine = []
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            fn()
            mine.append(time.perf_counter() - t)
        with lock:
            latencies.extend(mine)

    t0, c0 = time.perf_counter(), time.process_time()
    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    summary = _summary(latencies, time.perf_counter() - t0)
    summary["cpu_ms_per_request"] = round((time.process_time() - c0) / len(latencies) * 1e3, 3)
    return summary


def _client_process(
    address: str, method: str, payload: bytes, clients: int, duration_s: float, out: Any
) -> None:
    """A process running ``clients`` concurrent gRPC clients flat out; sends latencies back."""
    from grpclib.client import Channel
    from grpclib.const import Cardinality
    from grpclib.encoding.base import CodecBase
    from viam.gen.service.vision.v1 import vision_pb2

    from pipeline.rpc.flat_tensors import parse_infer_response

    class Raw(CodecBase):  # the request goes as the bytes encoded once; replies come as bytes
        __content_subtype__ = "proto"

        def encode(self, message: Any, message_type: Any) -> bytes:
            return bytes(message)

        def decode(self, data: bytes, message_type: Any) -> Any:
            return data

    path = (
        "/viam.service.mlmodel.v1.MLModelService/Infer"
        if method == "infer"
        else "/viam.service.vision.v1.VisionService/GetDetections"
    )

    async def call(channel: Any) -> None:
        async with channel.request(path, Cardinality.UNARY_UNARY, bytes, bytes, timeout=30) as s:
            await s.send_message(payload, end=True)
            reply = await s.recv_message()
        if method == "infer":  # what a client does with the reply: arrays
            parse_infer_response(reply)
        else:
            vision_pb2.GetDetectionsResponse.FromString(reply)

    async def one(stop_at: float) -> list[float]:
        if address.startswith("unix:"):
            channel = Channel(path=address[len("unix:") :], codec=Raw())
        else:
            host, port = address.rsplit(":", 1)
            channel = Channel(host, int(port), codec=Raw())
        try:
            await call(channel)  # warm up: connect
            latencies = []
            while time.perf_counter() < stop_at:
                t = time.perf_counter()
                await call(channel)
                latencies.append(time.perf_counter() - t)
            return latencies
        finally:
            channel.close()

    async def main() -> tuple[list[float], float]:
        t0 = time.perf_counter()
        results = await asyncio.gather(*(one(t0 + duration_s) for _ in range(clients)))
        return [x for r in results for x in r], time.perf_counter() - t0

    latencies, elapsed = asyncio.run(main())
    out.put((latencies, elapsed))


def over_grpc(
    address: str, method: str, payload: bytes, clients: int, duration_s: float, server_pid: int
) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(
        target=_client_process, args=(address, method, payload, clients, duration_s, queue)
    )
    cpu0, t0 = _cpu_s(server_pid), time.monotonic()
    proc.start()
    latencies, elapsed = queue.get(timeout=duration_s + 120)
    cpu1, t1 = _cpu_s(server_pid), time.monotonic()
    proc.join(30)
    summary = _summary(latencies, elapsed)
    # the server's CPU per request, less what it spends anyway (receiving the graph's frames
    # from the taps), measured idle; the clients' own work is not counted
    busy = (cpu1 - cpu0) - IDLE_CPU_PER_S[0] * (t1 - t0)
    summary["server_cpu_ms_per_request"] = round(busy / len(latencies) * 1e3, 3)
    return summary


IDLE_CPU_PER_S = [0.0]  # the server's CPU seconds per second with no request


def _server_pid(parent: int) -> int | None:
    """The pid of ``python -m pipeline.serve.app`` started by ``pipeline run`` (``parent``)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and b"pipeline.serve.app" in cmdline:
            return int(proc.name)
    return None


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _lines_between(log: Path, t0_ns: int, t1_ns: int) -> int:
    count = 0
    for text in log.read_text().splitlines():
        try:
            t = json.loads(text)["t_written_ns"]
        except (ValueError, KeyError):
            continue
        count += t0_ns <= t < t1_ns
    return count


def graph_rate(log: Path, duration_s: float) -> float:
    t0 = time.monotonic_ns()
    time.sleep(duration_s)
    t1 = time.monotonic_ns()
    time.sleep(0.3)  # let the last lines be written
    return _lines_between(log, t0, t1) / duration_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 s per measurement, not 5")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "services.json"))
    args = parser.parse_args()
    duration = 2.0 if args.quick else 5.0

    from grpclib.client import Channel
    from viam.gen.component.camera.v1 import camera_grpc, camera_pb2
    from viam.gen.service.mlmodel.v1 import mlmodel_pb2
    from viam.gen.service.vision.v1 import vision_pb2

    from pipeline.rpc.flat_tensors import to_flat_tensors
    from pipeline.serve.images import decode_image
    from pipeline_nodes.inference import load_detector, load_model

    tmp = Path(tempfile.mkdtemp(prefix="bench-services-"))
    log = tmp / "faces.jsonl"
    graph = tmp / "graph.yaml"
    graph.write_text(GRAPH.format(model=MODEL, log=log))
    address = f"127.0.0.1:{_free_port()}"
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "run",
            str(graph),
            "--no-live",
            "-q",
            "--serve",
            address,
            "--unix-socket",
            str(tmp / "serve.sock"),
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    results: dict[str, Any] = {}
    load_at_start = os.getloadavg()
    os.setpriority(os.PRIO_PROCESS, 0, 10)  # the server's niceness (the graph keeps 0)
    try:
        assert run.stderr is not None
        for line in run.stderr:
            if line.startswith("serving on"):
                break
        else:
            raise SystemExit("the graph did not start serving")
        threading.Thread(target=lambda: [None for _ in run.stderr], daemon=True).start()

        async def first_image() -> bytes:
            host, port = address.rsplit(":", 1)
            channel = Channel(host, int(port))
            try:
                for _ in range(300):
                    try:
                        reply = await camera_grpc.CameraServiceStub(channel).GetImages(
                            camera_pb2.GetImagesRequest(name="camera")
                        )
                        return bytes(reply.images[0].image)
                    except Exception:
                        await asyncio.sleep(0.1)
                raise SystemExit("no frame")
            finally:
                channel.close()

        jpeg = asyncio.run(first_image())
        server_pid = _server_pid(run.pid)
        if server_pid is None:
            raise SystemExit("cannot find the server process")
        assert decode_image(jpeg).shape == (480, 640, 3)
        tensor = np.random.default_rng(0).random((1, 192, 192, 3), dtype=np.float32)
        infer_payload = mlmodel_pb2.InferRequest(
            name="faces", input_tensors=to_flat_tensors({"input": tensor})
        ).SerializeToString()
        detect_payload = vision_pb2.GetDetectionsRequest(
            name="faces", image=jpeg, width=640, height=480, mime_type="image/jpeg"
        ).SerializeToString()

        cpu0, t0 = _cpu_s(server_pid), time.monotonic()
        results["graph_fps_idle"] = round(graph_rate(log, duration), 2)
        IDLE_CPU_PER_S[0] = (_cpu_s(server_pid) - cpu0) / (time.monotonic() - t0)
        results["server_idle_cpu_percent"] = round(IDLE_CPU_PER_S[0] * 100, 2)
        model = load_model(MODEL, num_threads=1)
        detector = load_detector(MODEL, num_threads=1)
        for clients in (1, 8):
            results[f"infer_in_process_{clients}"] = in_process(
                lambda: model.infer({"input": tensor}), clients, duration
            )
            results[f"infer_service_{clients}"] = over_grpc(
                address, "infer", infer_payload, clients, duration, server_pid
            )
            results[f"infer_service_unix_{clients}"] = over_grpc(
                f"unix:{tmp / 'serve.sock'}", "infer", infer_payload, clients, duration, server_pid
            )
            results[f"detect_in_process_{clients}"] = in_process(
                lambda: detector.detect(decode_image(jpeg)), clients, duration
            )
            results[f"detect_service_{clients}"] = over_grpc(
                address, "detect", detect_payload, clients, duration, server_pid
            )
        # the graph while 8 clients call Infer flat out
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        load = ctx.Process(
            target=_client_process,
            args=(address, "infer", infer_payload, 8, duration + 2.0, queue),
        )
        load.start()
        time.sleep(1.0)
        results["graph_fps_loaded"] = round(graph_rate(log, duration), 2)
        results["infer_service_8_during_graph_check"] = _summary(*queue.get(timeout=120))
        load.join(30)
        model.close()
        detector.close()
    finally:
        run.send_signal(signal.SIGINT)
        try:
            run.wait(30)
        except subprocess.TimeoutExpired:
            run.kill()

    inf1, inf8 = results["infer_in_process_1"], results["infer_in_process_8"]
    svc1, svc8 = results["infer_service_1"], results["infer_service_8"]
    results["verdict"] = {
        "infer_added_p50_ms": round(svc1["p50_ms"] - inf1["p50_ms"], 3),
        "infer_added_server_cpu_ms": round(
            svc1["server_cpu_ms_per_request"] - inf1["cpu_ms_per_request"], 3
        ),
        "infer_rate_ratio_8_clients": round(svc8["rate_per_s"] / max(inf8["rate_per_s"], 1e-9), 3),
        "graph_fps_ratio_under_load": round(
            results["graph_fps_loaded"] / max(results["graph_fps_idle"], 1e-9), 3
        ),
        "targets": "added p50 <= 1 ms; rate ratio >= 0.8; graph fps ratio >= 0.95",
    }
    results["machine"] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_avg_at_start": load_at_start,
        "load_avg_at_end": os.getloadavg(),
        "nice_of_server_clients_and_in_process_calls": 10,
        "model": MODEL,
        "duration_s": duration,
    }
    print(f"{'measurement':<34} {'req/s':>8} {'p50 ms':>9} {'p99 ms':>9} {'cpu ms/req':>10}")
    for key, value in results.items():
        if isinstance(value, dict) and "rate_per_s" in value:
            cpu = value.get("cpu_ms_per_request", value.get("server_cpu_ms_per_request", ""))
            print(
                f"{key:<34} {value['rate_per_s']:>8} {value['p50_ms']:>9} "
                f"{value['p99_ms']:>9} {cpu:>10}"
            )
    print(f"graph fps idle {results['graph_fps_idle']}, under load {results['graph_fps_loaded']}")
    print(json.dumps(results["verdict"], indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Cloud benchmark: uploads/s and GetInference requests/s through ``pipeline cloud serve``.

In one run, against a server started here (a subprocess; TLS with its self-signed
certificate; SQLite; one inference worker per core by default):

- uploads/s of 640x480 JPEGs through ``DataSyncService.DataCaptureUpload`` (each with an
  idempotency key, stored durably: blob fsynced, row committed) with 1 and 8 clients;
- ``MLInferenceService.GetInference`` requests/s and p50 latency with 1 and 8 clients, for a
  small model (BlazeFace short-range, LiteRT) and a larger one (CenterFace, ONNX Runtime) on
  the astronaut photo (512x512 JPEG; the worker decodes it and runs the same Detector the
  graph's node runs);
- the same work in this process with no server (decode + ``Detector.detect``, one thread): the
  in-process rate per core that the server's rate per core (rate / workers) is compared with,
  and the CPU time per request of each (server process and workers together), which a busy
  shared machine does not distort as much as wall-clock rates.

Clients are coroutines in this process, each with its own connection. Results print as a table
and go to ``benchmarks/results/cloud.json``.

    .venv/bin/python benchmarks/cloud.py                 # about 1 minute
    .venv/bin/python benchmarks/cloud.py --seconds 3     # quicker, noisier
    .venv/bin/python benchmarks/cloud.py --ray           # local pool vs Ray workers (~3 min)

``--ray`` instead compares, on the same data and 8 clients, the local pool (1 and 2 worker
processes) with Ray workers (``--workers ray://...``, 1 and 2 replicas; and 2 replicas with
the server as a Ray driver) on a one-machine Ray cluster it starts, to
``benchmarks/results/cloud_ray.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from skimage import data as skdata

RESULTS = Path(__file__).parent / "results" / "cloud.json"
RAY_RESULTS = Path(__file__).parent / "results" / "cloud_ray.json"
MODELS = ("face_short_range", "centerface")  # a 1 ms model and a 30 ms one


def start_server(data: Path, workers: int | str, *extra: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "cloud", "serve", "--data", str(data),
         "--address", "127.0.0.1:0", "--workers", str(workers), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("serving on "):
            address = line.split()[2]
            threading.Thread(target=lambda: [None for _ in proc.stdout or []], daemon=True).start()
            return proc, address
    raise RuntimeError("the server did not start")


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its children (the workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        me, parent = int(stat.parent.name), int(fields[1])
        if me == pid or parent == pid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def jpeg(image_bgr: np.ndarray, quality: int = 90) -> bytes:
    return bytes(cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes())


async def upload_clients(creds: Any, data: bytes, clients: int, seconds: float) -> dict[str, Any]:
    from viam.gen.app.datasync.v1 import data_sync_grpc, data_sync_pb2

    from pipeline_cloud.client import CloudClient

    request = data_sync_pb2.DataCaptureUploadRequest(
        metadata=data_sync_pb2.UploadMetadata(
            component_type="camera", component_name="bench", method_name="GetImages",
            type=data_sync_pb2.DATA_TYPE_BINARY_SENSOR, file_extension=".jpg",
            mime_type="image/jpeg",
        ),
        sensor_contents=[data_sync_pb2.SensorData(binary=data)],
    )  # fmt: skip
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def one() -> None:
        async with CloudClient(creds) as client:
            stub = data_sync_grpc.DataSyncServiceStub(client.channel)
            await client.authenticate()
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                key = {"idempotency-key": str(uuid.uuid4())}
                await stub.DataCaptureUpload(request, metadata=client.metadata(key))
                latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(clients)))
    elapsed = time.perf_counter() - t0
    return _summary(latencies, elapsed, clients)


async def infer_clients(creds: Any, request: Any, clients: int, seconds: float) -> dict[str, Any]:
    from viam.gen.app.mlinference.v1 import ml_inference_grpc

    from pipeline_cloud.client import CloudClient

    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def one() -> None:
        async with CloudClient(creds) as client:
            stub = ml_inference_grpc.MLInferenceServiceStub(client.channel)
            await client.authenticate()
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                reply = await stub.GetInference(request, metadata=client.metadata())
                latencies.append(time.perf_counter() - t0)
                assert reply.annotations.bboxes, "the face was not found"

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(clients)))
    return _summary(latencies, time.perf_counter() - t0, clients)


def _summary(latencies: list[float], elapsed: float, clients: int) -> dict[str, Any]:
    return {
        "clients": clients,
        "requests": len(latencies),
        "seconds": round(elapsed, 3),
        "per_s": round(len(latencies) / elapsed, 2),
        "p50_ms": round(statistics.median(latencies) * 1e3, 2) if latencies else None,
        "p95_ms": round(float(np.percentile(latencies, 95)) * 1e3, 2) if latencies else None,
    }


def in_process(model: str, image_jpeg: bytes, seconds: float) -> dict[str, Any]:
    from pipeline_nodes.inference import load_detector

    latencies = []
    cpu0 = time.process_time()
    with load_detector(model, num_threads=1) as detector:
        for _ in range(5):  # warm-up
            detector.detect(cv2.imdecode(np.frombuffer(image_jpeg, np.uint8), cv2.IMREAD_COLOR))
        stop_at = time.perf_counter() + seconds
        t_start = time.perf_counter()
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            image = cv2.imdecode(np.frombuffer(image_jpeg, np.uint8), cv2.IMREAD_COLOR)
            found = detector.detect(image)
            latencies.append(time.perf_counter() - t0)
            assert len(found)
    row = _summary(latencies, time.perf_counter() - t_start, 1)
    row["cpu_ms_per_request"] = round((time.process_time() - cpu0) / len(latencies) * 1e3, 2)
    return row


@dataclasses.dataclass(frozen=True)
class Seeded:
    """A data folder with an organisation, its API key, each model of ``MODELS`` as version 1
    and one uploaded JPEG: what the inference benchmarks ask for."""

    org_id: str
    key_id: str
    key: str
    items: dict[str, str]  # model name -> its registry item id
    image_id: str


def seed(data: Path, image_jpeg: bytes) -> Seeded:
    from pipeline_cloud.blobs import BlobStore
    from pipeline_cloud.db import open_database
    from pipeline_cloud.registry import Registry
    from pipeline_cloud.store import Store, UploadMeta
    from pipeline_nodes.inference.models.store import resolve_model

    sessions = open_database(data)
    blobs = BlobStore(data / "blobs")
    store, registry = Store(sessions, blobs), Registry(sessions, blobs)
    org = store.create_org("bench")
    key_id, key = store.create_key(org.id)
    items = {}
    for name in MODELS:
        model = Path(resolve_model(name))
        items[name] = registry.create_version(
            org.id, name, "object_detection", model.name, model.read_bytes(), version="1"
        ).item_id
    image_id, _ = store.upload(
        org.id, UploadMeta(file_ext=".jpg", mime_type="image/jpeg"), image_jpeg
    )
    sessions.kw["bind"].dispose()
    return Seeded(org.id, key_id, key, items, image_id)


def ray_comparison(seconds: float, out: Path) -> int:
    """GetInference requests/s with 8 clients: the local pool (1 and 2 worker processes)
    against Ray workers (1 and 2 replicas) on a one-machine Ray cluster started here, reached
    with Ray Client (``ray://``) and as a driver (the head's ``HOST:PORT``)."""
    import socket
    import warnings

    from ray.cluster_utils import Cluster
    from viam.gen.app.mlinference.v1 import ml_inference_pb2

    from pipeline_cloud.client import Credentials

    load_at_start = os.getloadavg()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        client_port = sock.getsockname()[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 2,
                "include_dashboard": False,
                "ray_client_server_port": client_port,
            },
        )
    client = f"ray://127.0.0.1:{client_port}"
    setups: list[tuple[str, int | str, tuple[str, ...], int]] = [
        ("local pool, 1 worker", 1, (), 1),
        ("local pool, 2 workers", 2, (), 2),
        ("ray:// (Ray Client), 1 replica", client, ("--replicas", "1"), 1),
        ("ray:// (Ray Client), 2 replicas", client, ("--replicas", "2"), 2),
        ("Ray driver (HEAD:PORT), 2 replicas", cluster.address, ("--replicas", "2"), 2),
    ]  # fmt: skip
    astronaut_jpeg = jpeg(cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR))
    rows: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="cloud-bench-ray-") as tmp:
            data = Path(tmp)
            seeded = seed(data, astronaut_jpeg)
            org_id, key_id, key = seeded.org_id, seeded.key_id, seeded.key
            items, image_id = seeded.items, seeded.image_id
            for (label, workers, extra, n), (name, item_id) in itertools.product(
                setups, items.items()
            ):
                # a server per model: each replica holds a CPU of the 2-CPU cluster
                proc, address = start_server(data, workers, *extra)
                try:
                    creds = Credentials(address, key_id, key)
                    request = ml_inference_pb2.GetInferenceRequest(
                        registry_item_id=item_id, registry_item_version="1",
                        binary_data_id=image_id, organization_id=org_id,
                    )  # fmt: skip
                    asyncio.run(infer_clients(creds, request, 8, 3.0))  # start, load, warm
                    row = asyncio.run(infer_clients(creds, request, 8, seconds))
                    row.update(setup=label, model=name, workers_or_replicas=n)
                    rows.append(row)
                    print(
                        f"{name:16s} {label:36s} {row['per_s']:8.1f}/s  p50 "
                        f"{row['p50_ms']} ms  p95 {row['p95_ms']} ms"
                    )
                finally:
                    proc.terminate()
                    proc.wait(60)
    finally:
        cluster.shutdown()
    ratios: dict[str, dict[str, float]] = {}
    for name in items:
        by = {r["setup"]: r["per_s"] for r in rows if r["model"] == name}
        ratios[name] = {
            "ray_client_1_vs_local_1": round(by[setups[2][0]] / by[setups[0][0]], 3),
            "ray_client_2_vs_local_2": round(by[setups[3][0]] / by[setups[1][0]], 3),
            "ray_driver_2_vs_local_2": round(by[setups[4][0]] / by[setups[1][0]], 3),
            "ray_client_2_vs_ray_client_1": round(by[setups[3][0]] / by[setups[2][0]], 3),
        }
        print(f"{name}: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios[name].items()))
    report = {
        "benchmark": "cloud, local pool vs Ray workers",
        "command": "python benchmarks/cloud.py " + " ".join(sys.argv[1:]),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "ray_cluster": "one Ray node on this machine, 2 CPUs; one CPU per replica",
        },
        "clients": 8,
        "inference_image": "skimage astronaut 512x512 JPEG",
        "rows": rows,
        "ratios": ratios,
        "load_average_at_start": load_at_start,
        "load_average_at_end": os.getloadavg(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results: {out}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="per measurement")
    parser.add_argument("--workers", type=int, default=0, help="inference workers (0: cores)")
    parser.add_argument(
        "--ray",
        action="store_true",
        help="instead: the local pool against Ray workers (1 and 2 replicas), to "
        "results/cloud_ray.json",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.ray:
        return ray_comparison(args.seconds, args.out or RAY_RESULTS)
    args.out = args.out or RESULTS

    from pipeline_cloud.client import Credentials
    from pipeline_cloud.inference import default_workers

    workers = args.workers or default_workers()
    load_at_start = os.getloadavg()
    cv2.setNumThreads(1)
    frame = cv2.resize(cv2.cvtColor(skdata.chelsea(), cv2.COLOR_RGB2BGR), (640, 480))
    frame_jpeg = jpeg(frame)
    astronaut_jpeg = jpeg(cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR))
    results: dict[str, Any] = {"uploads": [], "inference": {}}

    with tempfile.TemporaryDirectory(prefix="cloud-bench-") as tmp:
        data = Path(tmp)
        seeded = seed(data, astronaut_jpeg)
        org_id, key_id, key = seeded.org_id, seeded.key_id, seeded.key
        items, image_id = seeded.items, seeded.image_id
        proc, address = start_server(data, workers)
        try:
            from viam.gen.app.mlinference.v1 import ml_inference_pb2

            creds = Credentials(address, key_id, key)
            for clients in (1, 8):
                cpu0 = tree_cpu_s(proc.pid)
                row = asyncio.run(upload_clients(creds, frame_jpeg, clients, args.seconds))
                row["server_cpu_ms_per_request"] = round(
                    (tree_cpu_s(proc.pid) - cpu0) / max(1, row["requests"]) * 1e3, 2
                )
                results["uploads"].append(row)
                print(
                    f"upload {clients} client(s): {row['per_s']:8.1f}/s  p50 "
                    f"{row['p50_ms']} ms  server CPU {row['server_cpu_ms_per_request']} ms/req"
                )
            for name, item_id in items.items():
                request = ml_inference_pb2.GetInferenceRequest(
                    registry_item_id=item_id, registry_item_version="1",
                    binary_data_id=image_id, organization_id=org_id,
                )  # fmt: skip
                asyncio.run(infer_clients(creds, request, workers * 2, 2.0))  # load everywhere
                rows = results["inference"][name] = {"server": []}
                for clients in (1, 8):
                    cpu0 = tree_cpu_s(proc.pid)
                    row = asyncio.run(infer_clients(creds, request, clients, args.seconds))
                    row["server_cpu_ms_per_request"] = round(
                        (tree_cpu_s(proc.pid) - cpu0) / max(1, row["requests"]) * 1e3, 2
                    )
                    rows["server"].append(row)
                    print(
                        f"{name} {clients} client(s): {row['per_s']:8.1f}/s  p50 "
                        f"{row['p50_ms']} ms  server CPU {row['server_cpu_ms_per_request']} ms/req"
                    )
        finally:
            proc.terminate()
            proc.wait(30)
    for name, rows in results["inference"].items():
        local = rows["in_process"] = in_process(name, astronaut_jpeg, args.seconds)
        server8 = rows["server"][1]
        rows["per_core_ratio_8_clients"] = round(server8["per_s"] / workers / local["per_s"], 3)
        rows["cpu_ratio_8_clients"] = round(
            local["cpu_ms_per_request"] / server8["server_cpu_ms_per_request"], 3
        )
        print(
            f"{name} in-process, 1 thread: {local['per_s']:8.1f}/s  p50 {local['p50_ms']} ms  "
            f"CPU {local['cpu_ms_per_request']} ms/req"
        )
        print(
            f"{name}: server (8 clients) per core / in-process per core = "
            f"{rows['per_core_ratio_8_clients']:.2f} by rate, "
            f"{rows['cpu_ratio_8_clients']:.2f} by CPU time per request (target >= 0.8)"
        )
    print(f"uploads with 8 clients: {results['uploads'][1]['per_s']:.0f}/s (target >= 200)")
    report = {
        "benchmark": "cloud",
        "command": "python benchmarks/cloud.py " + " ".join(sys.argv[1:]),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "workers": workers,
            "python": platform.python_version(),
        },
        "upload_jpeg_bytes": len(frame_jpeg),
        "inference_image": "skimage astronaut 512x512 JPEG",
        "models": {
            "face_short_range": "BlazeFace 128x128, LiteRT",
            "centerface": "CenterFace at 512x512, ONNX Runtime",
        },
        **results,
        "load_average_at_start": load_at_start,
        "load_average_at_end": os.getloadavg(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

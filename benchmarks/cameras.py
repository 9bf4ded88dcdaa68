"""Cameras benchmark: 8 cameras into one shared detector node, or into 8 detector nodes?

Eight synthetic 640x480 streams at 15 fps each (120 frames/s offered) go into a face
detector, in one run, as:

- ``separate``: 8 detector nodes, one per camera (8 processes, 8 copies of the model);
- ``shared``: one detector node with a streams input of 8 cameras (round-robin);
- ``shared+batch``: the same with ``max_batch: 8`` (one model run for the frames of every
  camera that has one waiting, ``batch_timeout_ms: 10``, the default).

Each detector input is ``queue: 1, when_full: drop_oldest``, as an NVR wants: a busy detector
works on fresh frames and the rest is dropped and counted, not queued. A sink (``LatencySink``
below) records, per camera, when each result arrived and its latency (capture to result).
Reported per configuration, over a window after a warm-up: total results/s, frames dropped,
per-stream p50/p95 latency (the median over the cameras, and the worst camera), the
proportional set size (PSS, shared pages split between the processes that map them) of all
the graph's processes and of the detectors alone, and CPU (cores busy, from /proc). Nothing
is asserted: the figures are the result.

Models: ``centerface`` (ONNX Runtime, dynamic batch axis: batching is real) at 320x256 and
``face_full_range`` (BlazeFace on LiteRT: a batch of one, so batching only groups the calls;
``--models`` chooses). One runtime thread per detector. The machine should be otherwise idle;
the result records the load average before and after.

    .venv/bin/pipeline models fetch                 # once
    .venv/bin/python benchmarks/cameras.py          # about 3 minutes
    .venv/bin/python benchmarks/cameras.py --seconds 10 --models centerface
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from pydantic import Field  # noqa: E402

from pipeline import Detections, Input, Node, NodeParams, load_graph, run_graph  # noqa: E402
from pipeline.runtime.stats import NodeStats  # noqa: E402

STREAMS = 8
FPS = 15
MODEL_PARAMS: dict[str, dict[str, Any]] = {
    "centerface": {"input_size": [320, 256]},
    "face_full_range": {},
}


class LatencySink(Node):
    """Record each result's camera, arrival time and latency; write them as JSON at close."""

    class Params(NodeParams):
        path: str = Field(description="Where the records go (JSON).")

    detections = Input(Detections, streams=True)

    def open(self) -> None:
        self._rows: list[tuple[str, int, int]] = []

    def process(self, detections: Detections) -> None:
        self._rows.append((detections.source, time.monotonic_ns(), detections.t_capture_ns))

    def close(self) -> None:
        Path(self.params.path).write_text(json.dumps(self._rows))


def graph_text(kind: str, model: str, frames: int, out: Path) -> str:
    params = {"model": model, "num_threads": 1, **MODEL_PARAMS.get(model, {})}
    if kind == "shared+batch":
        params.update(max_batch=STREAMS, batch_timeout_ms=10)
    lines = [f"graph: cameras_{kind.replace('+', '_')}", "nodes:"]
    cams = [f"cam{i}" for i in range(1, STREAMS + 1)]
    for cam in cams:
        lines.append(
            f"  - {{id: {cam}, node: synthetic, "
            f"params: {{width: 640, height: 480, fps: {FPS}, frames: {frames}}}}}"
        )
    edge = "{{from: {}/frames, queue: 1, when_full: drop_oldest}}"
    if kind == "separate":
        for cam in cams:
            lines.append(
                f"  - {{id: det_{cam}, node: detector, params: {json.dumps(params)}, "
                f"inputs: {{frames: {edge.format(cam)}}}}}"
            )
        sink_inputs = "[" + ", ".join(f"det_{c}/detections" for c in cams) + "]"
    else:
        streams = ", ".join(edge.format(c) for c in cams)
        lines.append(
            f"  - {{id: det, node: detector, params: {json.dumps(params)}, "
            f"inputs: {{frames: [{streams}]}}}}"
        )
        sink_inputs = "det/detections"
    lines.append(
        f"  - {{id: sink, node: benchmarks.cameras:LatencySink, params: {{path: {out}}}, "
        f"inputs: {{detections: {sink_inputs}}}}}"
    )
    return "\n".join(lines) + "\n"


def children(pid: int) -> dict[int, str]:
    """The direct children of ``pid`` and their node ids (from the command line)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            found[int(entry.name)] = (entry / "comm").read_text().strip()
    return found


def pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0


def is_detector(pid: int) -> bool:
    """A node process running a detector (it has the model runtime mapped)."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False
    return "onnxruntime" in maps or "litert" in maps or "tflite" in maps


class Monitor:
    """Watches the run (``RunMonitor``): once results flow, a warm-up of ``warmup_s``, then
    statistics reset, CPU measured over ``seconds``, PSS in the middle, and a stop."""

    def __init__(self, warmup_s: float, seconds: float) -> None:
        self.warmup_s = warmup_s
        self.seconds = seconds
        self.result: dict[str, Any] = {}
        self.window: tuple[int, int] = (0, 0)
        self.flowing: float | None = None
        self.t0 = 0
        self.procs: dict[int, str] = {}
        self.ticks0: dict[int, int] = {}
        self.pss: dict[int, int] = {}

    def on_stats(self, stats: Mapping[str, NodeStats], elapsed_s: float) -> str | None:
        if self.result:
            return None  # measured; the graph drains
        now = time.monotonic()
        if self.flowing is None:
            if stats["sink"].received:
                self.flowing = now
            return None
        if not self.t0:
            if now - self.flowing < self.warmup_s:
                return None
            self.procs = children(os.getpid())
            self.ticks0 = {p: cpu_ticks(p) for p in self.procs}
            self.t0 = time.monotonic_ns()
            return "reset"
        held = (time.monotonic_ns() - self.t0) / 1e9
        if not self.pss and held >= self.seconds / 2:
            self.pss = {p: pss_kib(p) for p in self.procs}
        if held < self.seconds:
            return None
        t1 = time.monotonic_ns()
        ticks1 = {p: cpu_ticks(p) for p in self.procs}
        hz = os.sysconf("SC_CLK_TCK")
        busy_s = sum(ticks1[p] - self.ticks0[p] for p in self.procs) / hz
        detectors = [p for p in self.procs if is_detector(p)]
        self.window = (self.t0, t1)
        self.result = {
            "processes": len(self.procs),
            "detector_processes": len(detectors),
            "pss_total_mb": round(sum(self.pss.values()) / 1024, 1),
            "pss_detectors_mb": round(sum(self.pss.get(p, 0) for p in detectors) / 1024, 1),
            "cpu_cores": round(busy_s / ((t1 - self.t0) / 1e9), 2),
        }
        return "stop"


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def measure(kind: str, model: str, seconds: float, warmup_s: float, tmp: Path) -> dict[str, Any]:
    rows_path = tmp / f"{kind}-{model}.json"
    graph_path = tmp / f"{kind}-{model}.yaml"
    graph_path.write_text(graph_text(kind, model, 0, rows_path))
    monitor = Monitor(warmup_s, seconds)
    result = run_graph(load_graph(graph_path), out=io.StringIO(), monitor=monitor)  # type: ignore[arg-type]
    if result.exit_code != 0 or not monitor.result:
        raise SystemExit(f"{kind} {model}: the graph failed: {result.error}")
    rows = json.loads(rows_path.read_text())
    t0, t1 = monitor.window
    window_s = (t1 - t0) / 1e9
    per_stream: dict[str, list[float]] = {}
    for source, arrived, captured in rows:
        if t0 <= arrived <= t1:
            per_stream.setdefault(source, []).append((arrived - captured) / 1e6)
    p50s = [pct(v, 0.5) for v in per_stream.values()]
    p95s = [pct(v, 0.95) for v in per_stream.values()]
    fps = [len(v) / window_s for v in per_stream.values()]
    detectors = [s for n, s in result.stats.items() if n.startswith("det")]
    received = sum(s.received for s in detectors)
    dropped = sum(s.dropped for s in detectors)
    return {
        "config": kind,
        "model": model,
        "results_per_s": round(sum(len(v) for v in per_stream.values()) / window_s, 1),
        "offered_per_s": STREAMS * FPS,
        "streams_seen": len(per_stream),
        "slowest_stream_per_s": round(min(fps), 1) if fps else 0.0,
        "latency_p50_ms_median_stream": round(statistics.median(p50s), 1) if p50s else None,
        "latency_p95_ms_median_stream": round(statistics.median(p95s), 1) if p95s else None,
        "latency_p95_ms_worst_stream": round(max(p95s), 1) if p95s else None,
        "dropped_fraction": round(dropped / max(1, received + dropped), 3),
        **monitor.result,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="measured window per run")
    parser.add_argument("--warmup", type=float, default=6.0, help="seconds before measuring")
    parser.add_argument(
        "--models", nargs="+", default=["centerface", "face_full_range"], help="face models"
    )
    parser.add_argument("--out", default=str(ROOT / "results" / "cameras.json"))
    args = parser.parse_args()
    load_before = os.getloadavg()
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-cameras-") as tmp:
        for model in args.models:
            for kind in ("separate", "shared", "shared+batch"):
                run = measure(kind, model, args.seconds, args.warmup, Path(tmp))
                runs.append(run)
                print(
                    f"{model:16} {kind:13} {run['results_per_s']:6.1f} results/s "
                    f"(slowest camera {run['slowest_stream_per_s']:5.1f}/s, dropped "
                    f"{run['dropped_fraction']:.0%})  latency p50 "
                    f"{run['latency_p50_ms_median_stream']} ms p95 "
                    f"{run['latency_p95_ms_median_stream']} ms (worst camera "
                    f"{run['latency_p95_ms_worst_stream']})  PSS {run['pss_total_mb']} MB "
                    f"(detectors {run['pss_detectors_mb']} MB in {run['detector_processes']}) "
                    f" CPU {run['cpu_cores']} cores",
                    flush=True,
                )
    document = {
        "benchmark": "cameras",
        "command": "python benchmarks/cameras.py " + " ".join(sys.argv[1:]),
        "streams": STREAMS,
        "fps_per_stream": FPS,
        "frame": [640, 480],
        "cpu_count": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "runs": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(document, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()

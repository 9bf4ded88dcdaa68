"""A reliability record: a 5-node 1080p graph for N minutes, sampled as it runs.

    .venv/bin/python benchmarks/soak.py                    # 10 minutes, 1080p at 30 fps
    .venv/bin/python benchmarks/soak.py --minutes 1 --out /tmp/soak.json

The graph (every edge ``block``, so nothing may be lost)::

    camera (synthetic 1920x1080) -> color (to rgb) -> resize (640x360) -> log (jsonl)
                                                   \\-> sink (discard, 1080p)

Every ``--sample-s`` seconds it records, per node: the messages received, sent and dropped
(from the statistics the nodes report), the process's RSS and PSS (``/proc/PID/smaps_rollup``)
and open file descriptors; and for the run: the shared-memory segments and their bytes in
/dev/shm. At the end it checks that nothing was lost (camera sent = color received = color
sent = resize received = sink received = resize sent = log received = lines in the jsonl
file, and no drop anywhere) and how the resources moved between the first sample after the
warm-up and the last, and writes it all to ``--out`` (default
``benchmarks/results/soak.json``). The exit code is 1 when a frame was lost or the run
failed. The machine may be shared: the frame rate can fall behind the camera's pace, which
is recorded (``fps``), but losses, memory, descriptors and shared memory must not move.
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import os
import platform
import sys
import tempfile
import textwrap
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pipeline.graph.load import load_graph
from pipeline.runtime import runner
from pipeline.transport.shm import SHM_DIR

GRAPH = """
graph: soak
nodes:
  - id: camera
    node: synthetic
    params: {{width: {width}, height: {height}, fps: {fps}, frames: 0}}
  - id: color
    node: color
    params: {{to: rgb}}
    inputs: {{frames: {{from: camera/frames, queue: 4, when_full: block}}}}
  - id: resize
    node: resize
    params: {{width: 640, height: 360}}
    inputs: {{frames: {{from: color/converted, queue: 4, when_full: block}}}}
  - id: log
    node: jsonl
    params: {{path: {log}, fsync_interval_s: 5}}
    inputs: {{messages: {{from: resize/resized, queue: 4, when_full: block}}}}
  - id: sink
    node: discard
    inputs: {{messages: {{from: color/converted, queue: 4, when_full: block}}}}
"""


def _as_dict(stats: Any) -> dict[str, Any]:
    """A node's statistics as a plain dict, whichever form the runtime hands over."""
    if hasattr(stats, "to_dict"):
        result: dict[str, Any] = stats.to_dict()
        return result
    return dict(stats)


def process_sample(pid: int) -> dict[str, int] | None:
    """RSS and PSS in KiB and open descriptors of a live process; None once it is gone."""
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    values = {}
    for line in rollup.splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            values[key.lower() + "_kib"] = int(rest.split()[0])
    return {**values, "fds": fds}


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (the node processes of an in-process run)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return sorted(found)


def shm_sample(prefix: str) -> dict[str, int]:
    """This run's shared-memory segments: how many, and their bytes."""
    segments = [p for p in SHM_DIR.glob(prefix + "*") if p.is_file()]
    return {"segments": len(segments), "bytes": sum(p.stat().st_size for p in segments)}


def counts(stats: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """Per node: received, dropped (inputs) and sent (outputs), summed over ports."""
    out = {}
    for node_id, raw in stats.items():
        node = _as_dict(raw)
        inputs = node.get("inputs", {}).values()
        outputs = node.get("outputs", {}).values()
        out[node_id] = {
            "received": sum(int(_as_dict(i)["received"]) for i in inputs),
            "dropped": sum(int(_as_dict(i)["dropped"]) for i in inputs)
            + sum(int(_as_dict(o).get("dropped", 0)) for o in outputs),
            "sent": sum(int(_as_dict(o)["sent"]) for o in outputs),
        }
    return out


class SoakMonitor:
    """Samples the run every ``sample_s`` and stops it after ``duration_s``."""

    def __init__(self, duration_s: float, sample_s: float, pids: dict[str, int]) -> None:
        self.duration_s = duration_s
        self.sample_s = sample_s
        self.pids = pids
        self.samples: list[dict[str, Any]] = []
        self.next_sample = 0.0
        self.prefix = f"pipeline-{os.getpid()}-"

    def on_stats(self, stats: Mapping[str, Any], elapsed_s: float) -> Literal["stop"] | None:
        if elapsed_s >= self.next_sample:
            self.next_sample = elapsed_s + self.sample_s
            self.samples.append(self.sample(stats, elapsed_s))
            last = self.samples[-1]
            print(
                f"{elapsed_s:7.0f} s  camera sent {last['counts']['camera']['sent']:>8}  "
                f"log received {last['counts'].get('log', {}).get('received', 0):>8}  "
                f"shm {last['shm']['segments']} segments",
                flush=True,
            )
        return "stop" if elapsed_s >= self.duration_s else None

    def sample(self, stats: Mapping[str, Any], elapsed_s: float) -> dict[str, Any]:
        processes = {"supervisor": process_sample(os.getpid())}
        # by node id where the runtime says which process runs which node; else by pid
        named = self.pids or {f"pid {pid}": pid for pid in children(os.getpid())}
        for node_id, pid in named.items():
            processes[node_id] = process_sample(pid)
        return {
            "t_s": round(elapsed_s, 1),
            "counts": counts(stats),
            "processes": processes,
            "shm": shm_sample(self.prefix),
        }


def growth(samples: list[dict[str, Any]], warmup_s: float) -> dict[str, Any]:
    """How each resource moved from the first sample after the warm-up to the last."""
    steady = [s for s in samples if s["t_s"] >= warmup_s] or samples
    first, last = steady[0], steady[-1]
    result: dict[str, Any] = {
        "from_t_s": first["t_s"],
        "to_t_s": last["t_s"],
        "shm_segments": [first["shm"]["segments"], last["shm"]["segments"]],
        "shm_bytes": [first["shm"]["bytes"], last["shm"]["bytes"]],
        "processes": {},
    }
    for name, start in first["processes"].items():
        end = last["processes"].get(name)
        if start is None or end is None:
            continue
        result["processes"][name] = {
            key: [start[key], end[key], end[key] - start[key]] for key in start if key in end
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--fps", type=float, default=30.0, help="camera pace; 0: unpaced")
    parser.add_argument("--warmup-s", type=float, default=30.0)
    parser.add_argument("--out", default="benchmarks/results/soak.json")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="soak-") as folder:
        log = Path(folder) / "soak.jsonl"
        graph_file = Path(folder) / "soak.yaml"
        graph_file.write_text(
            textwrap.dedent(
                GRAPH.format(width=args.width, height=args.height, fps=args.fps, log=log)
            )
        )
        graph = load_graph(graph_file)
        pids: dict[str, int] = {}
        monitor = SoakMonitor(args.minutes * 60, args.sample_s, pids)
        extra: dict[str, Any] = {}
        if "launcher" in inspect.signature(runner.run_graph).parameters:

            def launcher(cfg: Any) -> Any:
                process = runner.launch_local(cfg)  # type: ignore[attr-defined]
                pids[cfg.node_id] = process.pid
                return process

            extra["launcher"] = launcher
        started_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        t0 = time.monotonic()
        result = runner.run_graph(graph, live=False, out=sys.stdout, monitor=monitor, **extra)
        wall_s = time.monotonic() - t0
        lines = sum(1 for _ in log.open(encoding="utf-8")) if log.exists() else 0

    final = counts(result.stats)
    chain = {
        "camera sent": final["camera"]["sent"],
        "color received": final["color"]["received"],
        "color sent": final["color"]["sent"],
        "resize received": final["resize"]["received"],
        "sink received": final["sink"]["received"],
        "resize sent": final["resize"]["sent"],
        "log received": final["log"]["received"],
        "lines written": lines,
    }
    dropped = sum(node["dropped"] for node in final.values())
    lost = len(set(chain.values())) != 1 or dropped != 0
    moved = growth(monitor.samples, args.warmup_s)
    document = {
        "benchmark": "soak",
        "started_at": started_at,
        "command": "python benchmarks/soak.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "note": "a shared development machine: other work ran at the same time",
        },
        "settings": vars(args),
        "run": {
            "exit_code": result.exit_code,
            "error": str(result.error) if result.error else None,
            "wall_s": round(wall_s, 1),
            "fps": round(chain["camera sent"] / max(wall_s, 1e-9), 2),
        },
        "chain": chain,
        "dropped": dropped,
        "nothing_lost": not lost,
        "growth_after_warmup": moved,
        "samples": monitor.samples,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({"chain": chain, "dropped": dropped, "growth": moved}, indent=1))
    print(f"written to {out}")
    if lost:
        print("LOST FRAMES: the counts along the chain differ", file=sys.stderr)
    return 1 if lost or result.exit_code else 0


if __name__ == "__main__":
    sys.exit(main())

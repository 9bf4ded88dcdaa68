"""Memory and start-up of whole graphs: nodes forked from the fork server against a fresh
interpreter per node (``PIPELINE_FORK_SERVER=0``, how every node started before), in one run.

For each launcher, ``pipeline run`` runs as a user runs it (a new process):

- memory: ``graphs/detect_faces.yaml`` (the default face graph), total PSS of its node
  processes, supervisor and template while it ran (``--stats-json``: ``memory``), and each
  node's PSS;
- (first, one untimed run, so that the modules' bytecode is cached as in a user's install)
- start-up: a 3-node graph of ``graphs/synthetic.yaml``'s kind (synthetic source -> resize ->
  jsonl) of a few frames: from the command to the first frame at the sink (the sink's first
  line's arrival, seen by polling its file) and to the command's exit; each node's
  ``start_s`` (process start, imports, building) and ``open_s`` (``open()``) from the stats.

Results print as a table with ratios and go to ``benchmarks/results/footprint.json``.

``--base DIR``: also compare with another version of the code (``git archive main | tar -x -C
DIR``, run from there with ``PYTHONPATH``, same venv), both with the fork server, interleaved
run by run (base, now, base, now...) so that a machine whose load swings treats both alike:
the start-up (median and best of ``--repeat`` runs each, and the CPU time of the whole run:
the command, its nodes and the template) and the face graph's PSS (``--memory-repeat`` runs
each).

    .venv/bin/python benchmarks/footprint.py            # about a minute
    .venv/bin/python benchmarks/footprint.py --base /tmp/fpbase --repeat 15
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from transport import machine, write_result

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results" / "footprint.json"
PIPELINE = str(Path(sys.executable).with_name("pipeline"))

SMALL_GRAPH = """
graph: startup
nodes:
  - id: camera
    node: synthetic
    params: {{width: 320, height: 240, fps: 0, frames: 3}}
  - id: resize
    node: resize
    params: {{width: 160, height: 120}}
    inputs:
      frames: camera/frames
  - id: log
    node: jsonl
    params: {{path: {out}}}
    inputs:
      messages: resize/resized
"""


def _env(fork_server: bool, base: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PIPELINE_FORK_SERVER"] = "1" if fork_server else "0"
    if base is not None:
        env["PYTHONPATH"] = str(base)
    # As a user's install runs: with the modules' bytecode cached (``__pycache__``). An
    # environment with PYTHONDONTWRITEBYTECODE=1 and no cache compiles ~90 modules of the
    # framework from source on every start (~0.1-0.2 s); ``warm_up`` writes the cache once.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def warm_up(tmp: Path, base: Path | None = None) -> None:
    """One untimed run of each graph, so every module's bytecode is cached."""
    startup(True, tmp, base)


def memory(fork_server: bool, tmp: Path, base: Path | None = None) -> dict[str, Any]:
    stats = tmp / f"faces-{int(fork_server)}.json"
    subprocess.run(
        [PIPELINE, "run", "graphs/detect_faces.yaml", "--stats-json", str(stats), "--quiet"],
        cwd=ROOT,
        env=_env(fork_server, base),
        check=True,
        capture_output=True,
    )
    data = json.loads(stats.read_text())
    mem = data["memory"]
    return {
        "total_pss_mb": mem["total_pss_mb"],
        "pss_mb": mem["pss_mb"],
        "max_rss_mb_sum": round(sum(n["max_rss_mb"] for n in data["nodes"].values()), 1),
        "duration_s": data["duration_s"],
    }


def startup(fork_server: bool, tmp: Path, base: Path | None = None) -> dict[str, Any]:
    out = tmp / f"startup-{int(fork_server)}-{time.monotonic_ns()}.jsonl"
    graph = tmp / "startup.yaml"
    graph.write_text(SMALL_GRAPH.format(out=out))
    stats = tmp / "startup-stats.json"
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [PIPELINE, "run", str(graph), "--stats-json", str(stats), "--quiet"],
        cwd=tmp,
        env=_env(fork_server, base),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first = None
    while True:
        # wait4: the run's CPU time, its nodes' included (the command reaps them)
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            break
        if first is None and out.exists() and out.stat().st_size > 0:
            first = time.monotonic() - t0
        time.sleep(0.001)
    total = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"pipeline run failed ({proc.returncode}) on {graph}")
    if first is None and out.exists() and out.stat().st_size > 0:
        first = total  # written and flushed only at the end
    nodes = json.loads(stats.read_text())["nodes"]
    return {
        "first_frame_s": first,
        "exit_s": total,
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 4),
        "start_s": {k: v["start_s"] for k, v in nodes.items()},
        "open_s": {k: v["open_s"] for k, v in nodes.items()},
    }


def _summary(runs: list[dict[str, Any]], mems: list[dict[str, Any]]) -> dict[str, Any]:
    firsts = [r["first_frame_s"] for r in runs if r["first_frame_s"] is not None]
    return {
        "first_frame_s_median": round(statistics.median(firsts), 4),
        "first_frame_s_best": round(min(firsts), 4),
        "exit_s_median": round(statistics.median(r["exit_s"] for r in runs), 4),
        "cpu_s_median": round(statistics.median(r["cpu_s"] for r in runs), 4),
        "detect_faces_total_pss_mb": [m["total_pss_mb"] for m in mems],
        "detect_faces_total_pss_mb_median": statistics.median(m["total_pss_mb"] for m in mems),
        "detect_faces_pss_mb": [m["pss_mb"] for m in mems],
        "startup_runs": runs,
    }


def compare(base: Path, tmp: Path, repeat: int, memory_repeat: int) -> dict[str, Any]:
    """The base tree against this one, both on the fork server, interleaved run by run."""
    warm_up(tmp, base)
    runs: dict[str, list[dict[str, Any]]] = {"base": [], "now": []}
    mems: dict[str, list[dict[str, Any]]] = {"base": [], "now": []}
    for _ in range(memory_repeat):
        for label, tree in (("base", base), ("now", None)):
            mems[label].append(memory(True, tmp, tree))
    for _ in range(repeat):
        for label, tree in (("base", base), ("now", None)):
            runs[label].append(startup(True, tmp, tree))
    out: dict[str, Any] = {k: _summary(runs[k], mems[k]) for k in runs}
    b, n = out["base"], out["now"]
    out["ratios_base_over_now"] = {
        key: round(b[key] / n[key], 2)
        for key in (
            "first_frame_s_median",
            "first_frame_s_best",
            "exit_s_median",
            "cpu_s_median",
            "detect_faces_total_pss_mb_median",
        )
    }
    for label in ("base", "now"):
        s = out[label]
        print(
            f"{label:<5} fork server: first frame median {s['first_frame_s_median']:.3f} s, "
            f"best {s['first_frame_s_best']:.3f} s, CPU {s['cpu_s_median']:.3f} s; face graph "
            f"PSS {s['detect_faces_total_pss_mb']} MB",
            flush=True,
        )
    print(f"base / now: {out['ratios_base_over_now']}", flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="start-up runs per launcher")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--base",
        type=Path,
        help="a copy of another version's tree (git archive): compared, interleaved",
    )
    parser.add_argument("--memory-repeat", type=int, default=3, help="face graph runs, --base")
    args = parser.parse_args()
    started = machine()  # the load average before this run added its own
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        warm_up(tmp)
        for label, fork in (("spawn", False), ("fork_server", True)):
            mem = memory(fork, tmp)
            runs = [startup(fork, tmp) for _ in range(args.repeat)]
            firsts = [r["first_frame_s"] for r in runs if r["first_frame_s"] is not None]
            results[label] = {
                "detect_faces_memory": mem,
                "startup_runs": runs,
                "first_frame_s_median": statistics.median(firsts) if firsts else None,
                "exit_s_median": statistics.median(r["exit_s"] for r in runs),
            }
            print(
                f"{label:<12} detect_faces total PSS {mem['total_pss_mb']:7.1f} MB   "
                f"3-node graph: first frame {results[label]['first_frame_s_median']:.3f} s, "
                f"exit {results[label]['exit_s_median']:.3f} s",
                flush=True,
            )
        if args.base is not None:
            results["base_vs_now"] = compare(args.base, tmp, args.repeat, args.memory_repeat)
    before, after = results["spawn"], results["fork_server"]
    ratios = {
        "pss_spawn_over_fork_server": round(
            before["detect_faces_memory"]["total_pss_mb"]
            / after["detect_faces_memory"]["total_pss_mb"],
            2,
        ),
        "first_frame_spawn_over_fork_server": round(
            before["first_frame_s_median"] / after["first_frame_s_median"], 2
        ),
        "exit_spawn_over_fork_server": round(before["exit_s_median"] / after["exit_s_median"], 2),
    }
    targets = {
        "detect_faces_total_pss<=160MB": after["detect_faces_memory"]["total_pss_mb"] <= 160,
        "first_frame<=0.3s": after["first_frame_s_median"] <= 0.3,
    }
    print()
    for name, value in ratios.items():
        print(f"{name}: {value}x")
    for name, ok in targets.items():
        print(f"target {name}: {'met' if ok else 'NOT met'}")
    write_result(args.out, "footprint", started, results=results, ratios=ratios, targets=targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How long a restarted node takes to run again, and what keeping the fork server costs.

A graph with a ``restart:`` policy keeps the fork server's template for the whole run, so a
restarted node is forked from it (as every node was at the start); without a fork server
(``PIPELINE_FORK_SERVER=0``) a restart starts a fresh interpreter (``launch_local``). Both in
one run, ``pipeline run`` as a user runs it, several times each:

- restart latency: from the supervisor seeing the node's death to the new node's ``Ready``
  (the ``running again X s after its end`` line, minus the 0.01 s backoff of the graph);
- total PSS of the run while it ran (``--stats-json``: ``memory``), the template's included.

The graph: synthetic (fast) -> a relay that SIGKILLs itself at frame 100 of its first life
(``tests.integration.nodes_for_tests:Crasher``, ``restart: on-failure``) -> a recorder.
Results print as a table with ratios and go to ``benchmarks/results/restart.json``.

    .venv/bin/python benchmarks/restart.py            # about half a minute
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from transport import machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results" / "restart.json"
PIPELINE = str(Path(sys.executable).with_name("pipeline"))
BACKOFF_S = 0.01

GRAPH = """
graph: restart_bench
nodes:
  - {{id: camera, node: synthetic, params: {{width: 320, height: 240, fps: 0, frames: 400}}}}
  - id: relay
    node: tests.integration.nodes_for_tests:Crasher
    params: {{marker: {marker}, at: 100, how: kill}}
    restart: on-failure
    restart_backoff_s: {{initial: {backoff}, max: 1}}
    inputs: {{frames: {{from: camera/frames, queue: 4}}}}
  - id: rec
    node: tests.integration.nodes_for_tests:Recorder
    params: {{path: {rec}}}
    inputs: {{frames: relay/out}}
"""
AGAIN = re.compile(r"running again ([0-9.]+) s after its end")


def once(fork_server: bool, tmp: Path, i: int) -> dict[str, Any]:
    marker = tmp / f"relay-{int(fork_server)}-{i}"
    graph = tmp / f"graph-{int(fork_server)}-{i}.yaml"
    graph.write_text(GRAPH.format(marker=marker, rec=tmp / "rec.jsonl", backoff=BACKOFF_S))
    stats = tmp / "stats.json"
    env = dict(os.environ, PIPELINE_FORK_SERVER="1" if fork_server else "0")
    done = subprocess.run(
        [PIPELINE, "run", str(graph), "--no-live", "--stats-json", str(stats)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    match = AGAIN.search(done.stderr + done.stdout)
    if match is None:
        raise RuntimeError(f"no restart seen:\n{done.stderr}")
    data = json.loads(stats.read_text())
    return {
        "restart_s": round(float(match.group(1)) - BACKOFF_S, 4),
        "total_pss_mb": data["memory"]["total_pss_mb"],
        "template_pss_mb": data["memory"]["pss_mb"].get("(fork server)", 0.0),
        "restarts": data["nodes"]["relay"]["restarts"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rows: dict[str, list[dict[str, Any]]] = {"fork_server": [], "fresh_interpreter": []}
    with tempfile.TemporaryDirectory() as folder:
        for i in range(args.runs):  # interleaved: both see the same machine load
            rows["fork_server"].append(once(True, Path(folder), i))
            rows["fresh_interpreter"].append(once(False, Path(folder), i))
    summary = {
        name: {
            "restart_s_median": round(statistics.median(r["restart_s"] for r in runs), 4),
            "restart_s_max": max(r["restart_s"] for r in runs),
            "total_pss_mb_median": round(statistics.median(r["total_pss_mb"] for r in runs), 1),
            "template_pss_mb_median": round(
                statistics.median(r["template_pss_mb"] for r in runs), 1
            ),
        }
        for name, runs in rows.items()
    }
    fork, fresh = summary["fork_server"], summary["fresh_interpreter"]
    ratio = fresh["restart_s_median"] / fork["restart_s_median"]
    print(f"{'launcher':<18} {'restart p50':>12} {'restart max':>12} {'total PSS':>10}")
    for name, s in summary.items():
        print(
            f"{name:<18} {s['restart_s_median']:>11.3f}s {s['restart_s_max']:>11.3f}s "
            f"{s['total_pss_mb_median']:>8.1f}MB"
        )
    print(f"a restart from the fork server is {ratio:.1f}x faster than a fresh interpreter")
    RESULTS.write_text(
        json.dumps(
            {
                "machine": machine(),
                "runs": rows,
                "summary": summary,
                "fresh_over_fork_restart_ratio": round(ratio, 2),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

"""The ``video_file`` source's two decoders side by side: PyAV (the default) and OpenCV.

Each run is a fresh process that imports ``cv2`` and ``av`` first (as the fork server's template
does for the face graph), then opens the capture the ``video_file`` node opens (PyAV's, or
OpenCV's ``VideoCapture``) on the sample video and reads every frame into one buffer of the
frame's shape, as the node reads into a slot. It reports the CPU time per frame and how much
the process's memory grew (private and PSS, from ``/proc/self/smaps_rollup``) from after the
imports to after the last frame. The two decoders alternate run by run (``--repeat`` pairs) so
that a machine whose load swings treats both alike; the medians and their ratios go to
``benchmarks/results/video_decode.json``.

    .venv/bin/python benchmarks/video_decode.py            # about 20 s
    .venv/bin/python benchmarks/video_decode.py --repeat 9
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results" / "video_decode.json"
VIDEO = ROOT / "samples" / "people.mp4"

CHILD = r"""
import json, sys, time
from pathlib import Path
import cv2, av, numpy as np  # what the template imports for the face graph
from pipeline_nodes.sources import video_file

def rollup():
    out = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if rest.strip().endswith("kB"):
                out[key] = int(rest.split()[0])
    return out

before = rollup()
cpu0 = time.process_time()
if sys.argv[2] == "pyav":  # the capture the node opens, each decoder's
    cap = video_file._AvCapture(av, Path(sys.argv[1]))
else:
    cap = cv2.VideoCapture(sys.argv[1], cv2.CAP_ANY)
ok, first = cap.read()
image = np.empty_like(first)
frames = 1
while True:
    ok, _ = cap.read(image)
    if not ok:
        break
    frames += 1
cpu = time.process_time() - cpu0
after = rollup()
cap.release()
print(json.dumps({
    "frames": frames,
    "cpu_ms_per_frame": 1000 * cpu / frames,
    "private_mb": (after["Private_Dirty"] + after["Private_Clean"]
                   - before["Private_Dirty"] - before["Private_Clean"]) / 1024,
    "pss_mb": (after["Pss"] - before["Pss"]) / 1024,
}))
"""


def run_once(decoder: str, video: Path) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(video), decoder],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per decoder, alternating")
    parser.add_argument("--video", type=Path, default=VIDEO)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {"pyav": [], "opencv": []}
    for i in range(args.repeat):
        for decoder in ("opencv", "pyav") if i % 2 else ("pyav", "opencv"):
            result = run_once(decoder, args.video)
            runs[decoder].append(result)
            print(
                f"{decoder:7s} {result['frames']} frames  CPU {result['cpu_ms_per_frame']:.2f} "
                f"ms/frame  private +{result['private_mb']:.1f} MB  PSS +{result['pss_mb']:.1f} MB",
                flush=True,
            )
    median = {
        d: {
            k: statistics.median(r[k] for r in rs)
            for k in ("cpu_ms_per_frame", "private_mb", "pss_mb")
        }
        for d, rs in runs.items()
    }
    ratios = {
        f"{k}_opencv_over_pyav": round(median["opencv"][k] / median["pyav"][k], 2)
        for k in ("cpu_ms_per_frame", "private_mb", "pss_mb")
    }
    load = os.getloadavg()
    out = {
        "video": str(
            args.video.relative_to(ROOT) if args.video.is_relative_to(ROOT) else args.video
        ),
        "repeat": args.repeat,
        "load_average": [round(x, 2) for x in load],
        "median": median,
        "ratios": ratios,
        "runs": runs,
    }
    for d, m in median.items():
        print(
            f"median {d:7s} CPU {m['cpu_ms_per_frame']:.2f} ms/frame, "
            f"private +{m['private_mb']:.1f} MB, PSS +{m['pss_mb']:.1f} MB"
        )
    print("opencv / pyav:", ratios, " load", out["load_average"])
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()

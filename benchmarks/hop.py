"""One hop's Python work per message, in one process: what a small frame costs each side.

A 224x224 frame goes through a real fast-path edge (ring in a memfd, Unix datagram doorbell,
a slot of shared memory) and back, producer and consumer taking turns in one thread, so the
figures are the CPU time of the code alone (``time.thread_time_ns``: another process taking
the core does not count), without wake-ups:

- producer: ``allocate`` + write a byte + ``Frame(...)`` + ``send`` + ``end_call`` (what a
  camera node and its output port do per frame);
- consumer: take from the ring, decode, queue for the join, ``process`` (reads one byte),
  release the credit, the statistics (what the worker does per message).

With ``--base DIR`` (a checkout of another commit, e.g. ``git archive main | tar -x -C
DIR``) the same measurement runs on that code too, interleaved, and the ratios are printed:
the before/after of a change, in one run on one machine. The best of ``--repeat`` rounds is
kept (the least disturbed by other jobs on a shared machine).

    .venv/bin/python benchmarks/hop.py
    .venv/bin/python benchmarks/hop.py --base /tmp/base --repeat 7
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results" / "hop.json"


def measure(frames: int) -> dict[str, float]:
    """Per-message CPU (µs) of each side on the code importable as ``pipeline``."""
    import secrets
    import tempfile

    import numpy as np

    from pipeline import Frame, Input, Message, Node
    from pipeline.runtime.join import Joiner
    from pipeline.runtime.lifecycle import NodeDriver
    from pipeline.runtime.stats import StatsCollector
    from pipeline.transport.channels import RuntimeOutput
    from pipeline.transport.fastpath import open_input, open_sender
    from pipeline.transport.plan import EdgePlan, release_batch, slot_pool_size
    from pipeline.transport.shm import ShmReader, SlotPool

    class Touch(Node):
        frames = Input(Message)

        def process(self, frames: Message) -> None:
            if isinstance(frames, Frame):
                _ = frames.image[0, 0, 0]

    with tempfile.TemporaryDirectory() as folder:
        name = secrets.token_hex(4)
        plan = EdgePlan(
            "cam", "frames", "sink", "frames", 4, "block", "shm",
            release_batch(4, "block"), f"ipc://{folder}/{name}",
        )  # fmt: skip
        reader = ShmReader()
        consumer = open_input(None, plan, reader)
        sender = open_sender(None, plan, consumer.endpoint)
        pool = SlotPool(f"pipeline-hop-{name}", max_slots=slot_pool_size([plan]))
        port = RuntimeOutput("frames", pool, [sender], type=Frame)
        stats = StatsCollector("sink", ["frames"], [])
        node = Touch(Touch.Params(), node_id="sink", ports={}, services=None, log=None)
        driver = NodeDriver(node, stats, [], ["frames"])
        joiner: Joiner[Any] = Joiner(["frames"])

        def release(token: Any) -> None:
            token[0].release(token[1])

        clock = time.thread_time_ns
        warm = min(1000, frames // 5)
        producer_ns = consumer_ns = 0
        try:
            for i in range(frames + warm):
                a = clock()
                image = port.allocate((224, 224, 3), np.uint8)
                image[0, 0, 0] = i & 0xFF
                port.send(Frame(image=image, seq=i, t_capture_ns=time.monotonic_ns(), source="cam"))
                port.end_call()
                b = clock()
                while consumer.has_message():
                    message, n, _, _ = consumer.recv()
                    assert message is not None
                    driver.push(joiner, "frames", message, (consumer, n))
                driver.drain(joiner, release)
                c = clock()
                if i >= warm:
                    producer_ns += b - a
                    consumer_ns += c - b
        finally:
            port.close()
            consumer.close()
            reader.close()
    return {"producer_us": producer_ns / frames / 1e3, "consumer_us": consumer_ns / frames / 1e3}


def run_tree(tree: Path, frames: int) -> dict[str, float]:
    """``measure`` in a fresh interpreter importing ``pipeline`` from ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, __file__, "--one", str(frames)],
        env=env,
        cwd=tree,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, help="another checkout to compare, interleaved")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one)))
        return 0
    load_start = os.getloadavg()
    trees = {"now": ROOT} | ({"base": args.base.resolve()} if args.base else {})
    runs: dict[str, list[dict[str, float]]] = {label: [] for label in trees}
    for round_ in range(args.repeat):
        for label, tree in trees.items():
            r = run_tree(tree, args.frames)
            runs[label].append(r)
            print(
                f"round {round_ + 1} {label:>4}: producer {r['producer_us']:.2f} µs, "
                f"consumer {r['consumer_us']:.2f} µs per message",
                flush=True,
            )
    best = {
        label: min(rs, key=lambda r: r["producer_us"] + r["consumer_us"])
        for label, rs in runs.items()
    }
    result: dict[str, Any] = {
        "benchmark": "hop",
        "machine": {
            "hostname": platform.node(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "command": " ".join(["benchmarks/hop.py", *sys.argv[1:]]),
        "load_avg_at_start": load_start,
        "load_avg_at_end": os.getloadavg(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "best_us": best,
        "runs": runs,
    }
    print()
    for label, r in best.items():
        print(
            f"best {label:>4}: producer {r['producer_us']:.2f} µs, "
            f"consumer {r['consumer_us']:.2f} µs"
        )
    if "base" in best:
        ratios = {
            side: best["base"][side] / best["now"][side] for side in ("producer_us", "consumer_us")
        }
        result["base_over_now"] = {k: round(v, 3) for k, v in ratios.items()}
        print(
            f"base / now: producer {ratios['producer_us']:.2f}x, "
            f"consumer {ratios['consumer_us']:.2f}x"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

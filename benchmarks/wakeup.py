"""Wake-up cost: how fast one process wakes another that sleeps in ``poll``, by the carrier.

The fast path's doorbell (``pipeline.transport.fastpath``) is one byte on a Unix datagram
socket; ``os.eventfd`` (a counter in the kernel, the futex-like carrier Linux offers to
Python) and a pipe are the alternatives. Two processes, in one run:

- ping-pong: each wakes the other in turn (both hot, as on a busy edge): one-way time and
  the waker's CPU per round trip;
- paced: one wakes the other every 5 ms (the sleeper's core idles in between, as at 200
  frames/s): the send-to-awake time, p50 and p90.

Results print and go to ``benchmarks/results/wakeup.json``.

    .venv/bin/python benchmarks/wakeup.py            # about 10 seconds
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from transport import machine, write_result

RESULTS = Path(__file__).parent / "results" / "wakeup.json"

# (fd to poll, send one wake-up, take what is waiting: how many wake-ups that was)
Carrier = tuple[int, Callable[[], None], Callable[[], int]]


def _dgram() -> tuple[Carrier, Carrier]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    c, d = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)

    def pair(tx: socket.socket, rx: socket.socket) -> Carrier:
        return rx.fileno(), lambda: tx.send(b"!") and None, lambda: len(rx.recv(16))

    return pair(a, b), pair(c, d)


def _eventfd() -> tuple[Carrier, Carrier]:
    def one() -> Carrier:
        fd = os.eventfd(0, os.EFD_NONBLOCK)
        return fd, lambda: os.eventfd_write(fd, 1), lambda: os.eventfd_read(fd)

    return one(), one()


def _pipe() -> tuple[Carrier, Carrier]:
    def one() -> Carrier:
        r, w = os.pipe()
        return r, lambda: os.write(w, b"!") and None, lambda: len(os.read(r, 16))

    return one(), one()


CARRIERS: dict[str, Callable[[], tuple[Carrier, Carrier]]] = {
    "unix_dgram": _dgram,
    "eventfd": _eventfd,
    "pipe": _pipe,
}


def ping_pong(make: Callable[[], tuple[Carrier, Carrier]], n: int) -> dict[str, float]:
    (to_child_fd, to_child, child_drain), (to_parent_fd, to_parent, parent_drain) = make()
    pid = os.fork()
    if pid == 0:
        p = select.poll()
        p.register(to_child_fd, select.POLLIN)
        for _ in range(n):
            p.poll()
            child_drain()
            to_parent()
        os._exit(0)
    p = select.poll()
    p.register(to_parent_fd, select.POLLIN)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        to_child()
        p.poll()
        parent_drain()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    os.waitpid(pid, 0)
    return {"one_way_us": wall / n / 2 * 1e6, "waker_cpu_us_per_round_trip": cpu / n * 1e6}


def paced(make: Callable[[], tuple[Carrier, Carrier]], n: int, period_s: float) -> dict[str, float]:
    (fd, send, drain), _ = make()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        p = select.poll()
        p.register(fd, select.POLLIN)
        woke: list[int] = []
        while len(woke) < n:  # a late sleeper takes several wake-ups at once (eventfd, pipe)
            p.poll()
            now = time.monotonic_ns()
            woke.extend([now] * drain())
        data = ",".join(map(str, woke)).encode()
        os.write(w, len(data).to_bytes(8, "little") + data)
        os._exit(0)
    sent = []
    for _ in range(n):
        due = time.perf_counter() + period_s
        while time.perf_counter() < due:
            pass  # the sender spins: only the sleeper's wake-up is measured
        sent.append(time.monotonic_ns())
        send()
    size = int.from_bytes(os.read(r, 8), "little")
    data = b""
    while len(data) < size:
        data += os.read(r, size - len(data))
    os.waitpid(pid, 0)
    woke = [int(x) for x in data.decode().split(",")]
    lat = sorted((b - a) / 1000 for a, b in zip(sent, woke, strict=True))
    return {"p50_us": lat[len(lat) // 2], "p90_us": lat[int(len(lat) * 0.9)]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    started = machine()  # the load average before this run added its own
    if not hasattr(os, "eventfd"):
        print("os.eventfd is not available here (Linux, Python 3.10+)")
        return 1
    results: dict[str, Any] = {}
    for name, make in CARRIERS.items():
        hot = ping_pong(make, 5000)
        cold = paced(make, 300, 0.005)
        results[name] = {**hot, **cold}
        print(
            f"{name:<11} ping-pong one-way {hot['one_way_us']:6.2f} us "
            f"(waker CPU {hot['waker_cpu_us_per_round_trip']:.2f} us/round trip)   "
            f"paced 5 ms: p50 {cold['p50_us']:6.1f} us  p90 {cold['p90_us']:6.1f} us",
            flush=True,
        )
    ref = results["unix_dgram"]
    ratios = {
        f"{name}_{key}_over_unix_dgram": round(r[key] / ref[key], 2)
        for name, r in results.items()
        if name != "unix_dgram"
        for key in ("one_way_us", "p50_us")
    }
    for name, value in ratios.items():
        print(f"{name}: {value}x")
    write_result(args.out, "wakeup", started, results=results, ratios=ratios)
    return 0


if __name__ == "__main__":
    sys.exit(main())

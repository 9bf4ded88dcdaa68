"""Which carrier brings an encrypted 1080p edge under 30 % of the plain one's cost?

A tcp edge's bulk bytes used to go on a ZeroMQ PAIR socket: the producer sealed the whole
frame (AES-256-GCM) into a buffer, ZeroMQ's I/O thread copied that buffer into the kernel
later, and the consumer opened the frame in place once ZeroMQ had received all of it.
AES-GCM runs near memory speed here, so sealing and opening each added a pass over 6 MB that
was no longer in any cache. What replaced it (``pipeline.transport.bulk``): a plain TCP
socket written from the node's own thread, the frame sealed in pieces that fit in L2 (each
piece sent while it is still in cache) and opened piece by piece into the destination.

Two processes on loopback, in one run, the same frames, ``--window`` frames in flight (the
consumer returns one credit byte per frame, as an edge's queue does):

- ``zmq``: ZeroMQ PAIR, ``copy=False`` both ends (our bulk socket, unencrypted);
- ``zmq_sealed``: the same with the whole frame sealed and opened in place (the old design);
- ``tcp``: a plain TCP socket, ``sendall``/``recv_into`` straight from and into the frame;
- ``tcp_sealed_<KiB>``: the same with the frame sealed in pieces of that size;
- ``edge_sealed_<KiB>``: the edge's own ``BulkSender`` and ``BulkReceiver`` (hello, bulk
  header, a receiving thread that opens each piece into the node's array).

Results print and go to ``benchmarks/results/bulk_carrier.json``. Needs the ``cluster``
extra (``cryptography``).

    .venv/bin/python benchmarks/bulk_carrier.py            # about half a minute
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pipeline.transport import bulk

sys.path.insert(0, str(Path(__file__).resolve().parent))

from transport import machine, write_result

RESULTS = Path(__file__).parent / "results" / "bulk_carrier.json"
FRAME = 1920 * 1080 * 3
TAG = 16
KEY = AESGCM.generate_key(bit_length=256)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return r.ru_utime + r.ru_stime


def _nonce(frame: int, piece: int) -> bytes:
    return (frame << 32 | piece).to_bytes(12, "little")


def _pieces(size: int) -> list[tuple[int, int]]:
    return [(off, min(size, FRAME - off)) for off in range(0, FRAME, size)]


# --- producers (in the child) -------------------------------------------------------------
def _produce_tcp(port: int, frames: int, window: int, piece: int) -> float:
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    src = memoryview(np.random.randint(0, 255, FRAME, dtype=np.uint8))
    aead = AESGCM(KEY)
    buf = memoryview(bytearray(piece + TAG)) if piece else None
    c0 = _cpu()
    for i in range(frames):
        if i >= window:
            s.recv(1)  # a credit
        if buf is None:
            s.sendall(src)
            continue
        for k, (off, n) in enumerate(_pieces(piece)):
            aead.encrypt_into(_nonce(i, k), src[off : off + n], None, buf[: n + TAG])
            s.sendall(buf[: n + TAG])
    for _ in range(min(window, frames)):
        s.recv(1)
    s.close()
    return (_cpu() - c0) / frames


def _produce_zmq(port: int, frames: int, window: int, sealed: bool) -> float:
    ctx = zmq.Context()
    s = ctx.socket(zmq.PAIR)
    s.connect(f"tcp://127.0.0.1:{port}")
    src = np.random.randint(0, 255, FRAME, dtype=np.uint8)
    aead = AESGCM(KEY)
    bufs = [bytearray(FRAME + TAG) for _ in range(window + 1)]
    c0 = _cpu()
    for i in range(frames):
        if i >= window:
            s.recv()  # a credit
        if sealed:
            buf = bufs[i % len(bufs)]  # free again: window credits came back
            aead.encrypt_into(_nonce(i, 0), memoryview(src), None, buf)
            s.send(buf, copy=False)
        else:
            s.send(src, copy=False)
    for _ in range(min(window, frames)):
        s.recv()
    cpu = (_cpu() - c0) / frames
    s.close(linger=1000)
    ctx.term()
    return cpu


def _produce_edge(secrets_: Any, ctl: socket.socket, frames: int, window: int, piece: int) -> float:
    sender = bulk.BulkSender(None, "bench.frames", secrets_, piece)
    src = np.random.randint(0, 255, FRAME, dtype=np.uint8)
    c0 = _cpu()
    for i in range(frames):
        if i >= window:
            ctl.recv(1)  # a credit
        ctl.sendall(sender.send(i + 1, b"", [src.data]))  # the descriptor (CURVE's, here)
    for _ in range(min(window, frames)):
        ctl.recv(1)
    sender.close()
    return (_cpu() - c0) / frames


# --- consumers (in the parent) ------------------------------------------------------------
def _consume_edge(receiver: Any, ctl: socket.socket, frames: int) -> tuple[float, float]:
    desc = memoryview(bytearray(bulk.DESC_SIZE))
    c0, t0 = _cpu(), time.perf_counter()
    for _ in range(frames):
        got = 0
        while got < len(desc):
            got += ctl.recv_into(desc[got:])
        (part,) = receiver.parts_for(b"", bytes(desc))
        frame = np.frombuffer(part, np.uint8)
        int(frame[::4096].sum())
        del frame, part
        ctl.send(b"!")
    return frames / (time.perf_counter() - t0), (_cpu() - c0) / frames


def _consume_tcp(srv: socket.socket, frames: int, piece: int) -> tuple[float, float]:
    c, _ = srv.accept()
    dst = np.empty(FRAME, np.uint8)
    dmv = memoryview(dst)
    aead = AESGCM(KEY)
    buf = memoryview(bytearray(piece + TAG)) if piece else None
    c0, t0 = _cpu(), time.perf_counter()
    for i in range(frames):
        if buf is None:
            got = 0
            while got < FRAME:
                got += c.recv_into(dmv[got:], FRAME - got)
        else:
            for k, (off, n) in enumerate(_pieces(piece)):
                got = 0
                while got < n + TAG:
                    got += c.recv_into(buf[got : n + TAG], n + TAG - got)
                aead.decrypt_into(_nonce(i, k), buf[: n + TAG], None, dmv[off : off + n])
        int(dst[::4096].sum())  # the node looks at the frame
        c.send(b"!")
    wall = time.perf_counter() - t0
    c.close()
    return frames / wall, (_cpu() - c0) / frames


def _consume_zmq(s: zmq.Socket[Any], frames: int, sealed: bool) -> tuple[float, float]:
    aead = AESGCM(KEY)
    c0, t0 = _cpu(), time.perf_counter()
    for i in range(frames):
        msg = s.recv(copy=False)
        buf = np.frombuffer(msg, np.uint8).data
        if sealed:  # opened in place, in the received message (as the bulk socket does)
            aead.decrypt_into(_nonce(i, 0), buf, None, buf[: len(buf) - TAG])
        frame = np.frombuffer(buf, np.uint8, FRAME)
        int(frame[::4096].sum())
        s.send(b"!")
    return frames / (time.perf_counter() - t0), (_cpu() - c0) / frames


def run_edge(method: str, frames: int, window: int) -> dict[str, Any]:
    """The bulk path of a real tcp edge (``pipeline.transport.bulk``): ``BulkSender`` in the
    child, ``BulkReceiver`` (its receiving thread opens the pieces) here; the descriptors and
    credits on a socket pair (a tcp edge's CURVE socket carries them)."""
    piece = int(method.rsplit("_", 1)[1]) << 10
    ctx = zmq.Context()
    receiver = bulk.BulkReceiver(ctx, "bench.frames", "tcp://127.0.0.1:*", "k" * 40, window)
    mine, theirs = socket.socketpair()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the producer
        os.close(r)
        mine.close()
        cpu = _produce_edge(receiver.secrets, theirs, frames, window, piece)
        os.write(w, repr(cpu).encode())
        os._exit(0)
    os.close(w)
    theirs.close()
    fps, consumer_cpu = _consume_edge(receiver, mine, frames)
    producer_cpu = float(os.read(r, 64).decode())
    os.close(r)
    os.waitpid(pid, 0)
    mine.close()
    receiver.close()
    receiver.gate.close()
    ctx.term()
    return {
        "frames_per_s": round(fps, 1),
        "cpu_ms_per_frame": {
            "producer": round(producer_cpu * 1000, 3),
            "consumer": round(consumer_cpu * 1000, 3),
        },
    }


def run(method: str, frames: int, window: int) -> dict[str, Any]:
    if method.startswith("edge_sealed_"):
        return run_edge(method, frames, window)
    piece = int(method.rsplit("_", 1)[1]) << 10 if method.startswith("tcp_sealed_") else 0
    if method.startswith("tcp"):
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]
    else:
        ctx = zmq.Context()
        zsock = ctx.socket(zmq.PAIR)
        port = zsock.bind_to_random_port("tcp://127.0.0.1")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the producer
        os.close(r)
        if method.startswith("tcp"):
            srv.close()
            cpu = _produce_tcp(port, frames, window, piece)
        else:
            cpu = _produce_zmq(port, frames, window, method == "zmq_sealed")
        os.write(w, repr(cpu).encode())
        os._exit(0)
    os.close(w)
    if method.startswith("tcp"):
        fps, consumer_cpu = _consume_tcp(srv, frames, piece)
        srv.close()
    else:
        fps, consumer_cpu = _consume_zmq(zsock, frames, method == "zmq_sealed")
        zsock.close(linger=0)
        ctx.term()
    producer_cpu = float(os.read(r, 64).decode())
    os.close(r)
    os.waitpid(pid, 0)
    return {
        "frames_per_s": round(fps, 1),
        "cpu_ms_per_frame": {
            "producer": round(producer_cpu * 1000, 3),
            "consumer": round(consumer_cpu * 1000, 3),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--window", type=int, default=2, help="frames in flight")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--pieces", default="256,1024", help="piece sizes in KiB, sealed tcp")
    args = parser.parse_args()
    pieces = args.pieces.split(",")
    methods = ["zmq", "zmq_sealed", "tcp"] + [f"tcp_sealed_{k}" for k in pieces]
    methods += [f"edge_sealed_{k}" for k in pieces]
    started = machine()  # the load average before this run added its own
    rounds: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    for _ in range(args.rounds):
        for m in methods:
            rounds[m].append(run(m, args.frames, args.window))
    results = {}
    for m in methods:
        best = sorted(rounds[m], key=lambda r: r["frames_per_s"])[len(rounds[m]) // 2]
        results[m] = {**best, "rounds": rounds[m]}
    ratios = {
        "zmq_sealed_cost": round(
            1 - results["zmq_sealed"]["frames_per_s"] / results["zmq"]["frames_per_s"], 3
        ),
        "tcp_over_zmq": round(results["tcp"]["frames_per_s"] / results["zmq"]["frames_per_s"], 2),
    }
    for k in pieces:
        m = f"tcp_sealed_{k}"
        ratios[f"{m}_cost"] = round(
            1 - results[m]["frames_per_s"] / results["tcp"]["frames_per_s"], 3
        )
        e = f"edge_sealed_{k}"
        ratios[f"{e}_cost_vs_tcp"] = round(
            1 - results[e]["frames_per_s"] / results["tcp"]["frames_per_s"], 3
        )
        ratios[f"{e}_cost_vs_zmq"] = round(
            1 - results[e]["frames_per_s"] / results["zmq"]["frames_per_s"], 3
        )
        ratios[f"{m}_over_zmq_sealed"] = round(
            results[m]["frames_per_s"] / results["zmq_sealed"]["frames_per_s"], 2
        )
    print(f"1920x1080 frames on loopback, {args.window} in flight, median of {args.rounds} rounds")
    print(f"{'method':18s} {'frames/s':>9s}  CPU ms/frame: producer consumer")
    for m in methods:
        r = results[m]
        c = r["cpu_ms_per_frame"]
        print(f"{m:18s} {r['frames_per_s']:9.1f}  {c['producer']:22.3f} {c['consumer']:8.3f}")
    for k, v in ratios.items():
        print(f"{k}: {v}")
    write_result(RESULTS, "bulk_carrier", started, results=results, ratios=ratios)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Which carrier could bring an encrypted 1080p edge under 30 % of the plain one's cost?

Today a tcp edge's bulk bytes go on a ZeroMQ PAIR socket (``pipeline.transport.bulk``): the
producer seals the whole frame (AES-256-GCM) into a buffer, ZeroMQ's I/O thread copies that
buffer into the kernel later, and the consumer opens the frame in place once ZeroMQ has
received all of it. AES-GCM runs near memory speed here, so sealing and opening each add a
pass over 6 MB that is no longer in any cache. The alternative measured here: a plain TCP
socket written from the node's own thread, the frame sealed in pieces that fit in L2 (each
piece sent while it is still in cache) and opened piece by piece into the destination.

Two processes on loopback, in one run, the same frames, ``--window`` frames in flight (the
consumer returns one credit byte per frame, as an edge's queue does):

- ``zmq``: ZeroMQ PAIR, ``copy=False`` both ends (our bulk socket, unencrypted);
- ``zmq_sealed``: the same with the whole frame sealed and opened in place (today's design);
- ``tcp``: a plain TCP socket, ``sendall``/``recv_into`` straight from and into the frame;
- ``tcp_sealed_<KiB>``: the same with the frame sealed in pieces of that size.

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
class InlineSender:
    """``bulk.BulkSender`` as it was first written (benchmark only): seals the parts of each
    message in pieces and sends each piece from the node's thread, no sending thread."""

    def __init__(self, ctx: Any, edge: str, secrets_: bulk.EdgeSecrets, piece: int = 0) -> None:
        self.edge = edge
        self.secrets = secrets_
        self.sealer = bulk.Sealer(secrets_, edge, piece)
        self.MIN_BYTES = bulk.BULK_MIN
        self.address = bulk._split(secrets_.bulk_endpoint)
        self.sock: socket.socket | None = None
        self._scratch = memoryview(bytearray(self.sealer.piece + bulk.TAG))
        self._retry_at = 0.0
        self.sent = 0  # messages sent
        self.failed = 0  # messages whose bytes could not be sent
        self.connects = 0

    def _connect(self) -> socket.socket | None:
        if time.monotonic() < self._retry_at:
            return None
        try:
            sock = socket.create_connection(self.address, timeout=bulk.CONNECT_S)
        except OSError:
            self._retry_at = time.monotonic() + bulk.RETRY_S
            return None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            bulk.say_hello(sock, self.secrets, self.edge)
            sock.settimeout(bulk.SEND_S)
        except OSError:
            sock.close()
            self._retry_at = time.monotonic() + bulk.RETRY_S
            return None
        self.connects += 1
        return sock

    def send(self, n: int, head: bytes, parts: list[Any]) -> bytes:
        """Seal and send the parts of message ``n``; the descriptor to send with its head
        (also when the bytes could not be sent: the consumer then drops the head)."""
        views = [memoryview(p).cast("B") for p in parts]
        desc, header, ad = self.sealer.next([len(v) for v in views])
        for _attempt in (0, 1):
            sock = self.sock
            if sock is None:
                sock = self.sock = self._connect()
                if sock is None:
                    break
            try:
                self._send(sock, header.raw, ad, views)
            except TimeoutError:
                self.drop()  # the consumer is gone or stuck: do not wait again at once
                self._retry_at = time.monotonic() + bulk.RETRY_S
                break
            except OSError:
                self.drop()  # the consumer closed it (restarted, or refused what came)
                continue
            self.sent += 1
            return desc
        self.failed += 1
        return desc

    def _send(self, sock: socket.socket, header: bytes, ad: bytes, views: list[memoryview]) -> None:
        out = self._scratch
        piece = self.sealer.piece
        seal = self.sealer.seal
        k = 0
        first = True
        for v in views:
            for off in range(0, max(1, len(v)), piece):
                chunk = v[off : off + piece]
                sealed = out[: len(chunk) + bulk.TAG]
                seal(k, ad, chunk, sealed)
                if first:  # the header goes with the first piece: one segment, one call
                    first = False
                    sent = sock.sendmsg([header, sealed])
                    if sent < len(header):
                        sock.sendall(memoryview(header)[sent:])
                        sent = len(header)
                    sent -= len(header)
                    if sent < len(sealed):
                        sock.sendall(sealed[sent:])
                else:
                    sock.sendall(sealed)
                k += 1

    def released(self, upto: int, keep: int) -> None:
        """Message ``upto`` and those before it arrived (nothing to free: each piece was in
        the kernel when ``send`` returned)."""

    def drop(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def close(self, linger_ms: int = 0) -> None:
        self.drop()


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


def _produce_edge(
    secrets_: Any, ctl: socket.socket, frames: int, window: int, piece: int, inline: bool
) -> float:
    sender = (InlineSender if inline else bulk.BulkSender)(None, "bench.frames", secrets_, piece)
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
        cpu = _produce_edge(
            receiver.secrets, theirs, frames, window, piece, method.startswith("edge_inline")
        )
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
    if method.startswith(("edge_sealed_", "edge_inline_")):
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
    methods += [f"edge_sealed_{k}" for k in pieces] + [f"edge_inline_{k}" for k in pieces]
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
        ratios[f"{e}_over_inline"] = round(
            results[e]["frames_per_s"] / results[f"edge_inline_{k}"]["frames_per_s"], 2
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

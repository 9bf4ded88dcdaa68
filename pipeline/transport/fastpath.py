"""The same-host fast path: an edge's descriptors over a Unix datagram socket, no ZeroMQ.

On one host a message is a small descriptor (the envelope and a msgpack body naming the
shared-memory slots of its arrays). Through ZeroMQ each one costs three thread wake-ups (the
application, the sender's I/O thread, the receiver's I/O thread) and on a 2-core machine the
two I/O threads compete with the nodes themselves; that was most of a small frame's hop. Here
the descriptor is one ``sendmsg`` on a connected ``AF_UNIX``/``SOCK_DGRAM`` socket and one
``recv`` at the consumer:

- the kernel queue of the consumer's socket is the ring: ordered, message-bounded, with the
  memory ordering of a system call on every architecture (no hand-made barriers on ARM);
- it is also the doorbell: a ``send`` wakes the consumer only when it sleeps in ``poll`` on
  the socket; while it is busy, the descriptors just queue;
- credits come back the same way: the consumer sends the number of the last message it
  released (8 bytes, batched as before) to the producer's own socket.

Every guarantee of ``pipeline.transport.channels`` holds, because the flow control is the
same code (``EdgeSender.offer``: credits, ``block``/``drop_newest``/``drop_oldest``, drops
counted into the next envelope, end of stream after every waiting message and never
dropped); only the carrier differs. A consumer that crashed refuses datagrams: the producer
keeps its messages in flight (``block`` waits; the drop policies drop and count) until the
supervisor, which saw the crash through the node's pidfd, stops the graph.

The sockets live in the run folder (mode 0700: nobody else can reach them), the consumer's at
``<edge address>.dg``, the producer's beside it with ``.r``; the consumer binds at planning
time as before and its address travels as ``unix://PATH``. A descriptor larger than one
datagram (a message with big inline fields) goes as parts that the consumer joins. ZeroMQ
still sets up the run (control) and carries edges between hosts (``transport: tcp``).
``PIPELINE_FAST_PATH=0`` sends same-host edges through ZeroMQ again.
"""

from __future__ import annotations

import collections
import contextlib
import os
import select
import socket
import time
from typing import Any

from pipeline.errors import TransportError
from pipeline.messages import Message
from pipeline.transport import codec
from pipeline.transport.channels import _REL, EdgeSender, InputEdge, _Pending
from pipeline.transport.plan import EdgePlan
from pipeline.transport.shm import ShmReader, Slot

__all__ = [
    "UnixEdgeSender",
    "UnixInputEdge",
    "enabled",
    "input_path",
    "open_input",
    "open_sender",
]

SCHEME = "unix://"
DATAGRAM = 32 * 1024  # bytes per datagram; larger descriptors go in parts
_PART = b"P"  # first byte of a part that more parts follow
_LAST = b"L"  # first byte of the last part
_DONTWAIT = socket.MSG_DONTWAIT
_POLLIN = select.POLLIN


def enabled() -> bool:
    """Whether same-host edges take the fast path (``PIPELINE_FAST_PATH=0`` turns it off)."""
    return os.environ.get("PIPELINE_FAST_PATH", "1") != "0" and hasattr(socket, "AF_UNIX")


def input_path(plan: EdgePlan) -> str:
    """The consumer's socket path for a same-host edge planned at ``ipc://PATH``."""
    if not plan.bind.startswith("ipc://"):
        raise TransportError(f"edge {plan.name}: no same-host address in {plan.bind!r}")
    return plan.bind[len("ipc://") :] + ".dg"


def _dgram_socket() -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    return sock


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


class UnixEdgeSender(EdgeSender):
    """The producer's end of a fast-path edge (``EdgeSender``'s flow control, a datagram
    socket for a carrier)."""

    def __init__(self, plan: EdgePlan, endpoint: str) -> None:
        self.plan = plan
        self.name = plan.name
        self.endpoint = endpoint
        self.queue = plan.queue
        self.policy = plan.when_full
        self.tcp = False
        self.peer = endpoint[len(SCHEME) :]
        self.path = self.peer + ".r"
        self.usock = _dgram_socket()
        _unlink(self.path)
        self.usock.bind(self.path)
        self.usock.connect(self.peer)
        self.sock = self.usock  # pollable like the ZeroMQ one
        self._poll = select.poll()
        self._poll.register(self.usock.fileno(), _POLLIN)
        self.gone = False  # the consumer's socket refused us: it exited or crashed
        self.inflight: collections.deque[tuple[int, list[Slot]]] = collections.deque()
        self.waiting: collections.deque[_Pending] = collections.deque()
        self.n = 0
        self.unreported_drops = 0
        self.dropped = 0
        self.blocked_s = 0.0
        self.ended = False

    # credits -------------------------------------------------------------------------------
    def collect(self) -> None:
        """Take every release that has arrived; free the slots they held."""
        upto = -1
        recv = self.usock.recv
        while True:
            try:
                data = recv(64, _DONTWAIT)
            except BlockingIOError:
                break
            except OSError:
                break
            if len(data) == 8:
                upto = max(upto, _REL.unpack(data)[0])
        if upto >= 0:
            inflight = self.inflight
            while inflight and inflight[0][0] <= upto:
                for slot in inflight.popleft()[1]:
                    slot.refs -= 1
        if self.waiting:
            self._flush_waiting()

    def wait_release(self, timeout_ms: int) -> bool:
        """Block up to ``timeout_ms`` for a release; True if one came."""
        if self._poll.poll(timeout_ms):
            self.collect()
            return True
        return False

    # sending -------------------------------------------------------------------------------
    def _send(self, item: _Pending) -> None:
        self.n += 1
        for slot in item.slots:
            slot.refs += 1
        self.inflight.append((self.n, item.slots))
        env = codec.envelope(codec.MSG, self.n, self.unreported_drops, time.monotonic_ns())
        self.unreported_drops = 0
        self._put(env + item.body_s)

    def _put(self, data: bytes) -> None:
        if self.gone:
            return
        try:
            if len(data) <= DATAGRAM:
                self.usock.send(data)
                return
            view = memoryview(data)
            for start in range(0, len(data), DATAGRAM):
                last = start + DATAGRAM >= len(data)
                self.usock.send((_LAST if last else _PART) + view[start : start + DATAGRAM])
        except (ConnectionRefusedError, FileNotFoundError, BrokenPipeError):
            # The consumer is gone; the supervisor has seen it (pidfd) and stops the graph.
            self.gone = True

    def send_eos(self) -> None:
        """Deliver every waiting message, then end of stream (never dropped)."""
        while self.waiting:
            self.wait_release(100)
        env = codec.envelope(codec.EOS, self.n, self.unreported_drops, time.monotonic_ns())
        self.unreported_drops = 0
        self._put(env)
        self.ended = True

    def close(self, linger_ms: int = 0) -> None:
        """Close (a sent datagram is in the consumer's queue already: nothing lingers)."""
        self.usock.close()
        _unlink(self.path)


class UnixInputEdge(InputEdge):
    """The consumer's end of a fast-path edge: binds ``<edge address>.dg``."""

    def __init__(self, plan: EdgePlan, reader: ShmReader) -> None:
        self.plan = plan
        self.name = plan.name
        self.port = plan.input
        self.tcp = False
        self.release_every = plan.release_batch
        self._unreleased = 0
        self._release_upto = 0
        self._release_sent = 0
        self.path = input_path(plan)
        self.peer = self.path + ".r"
        self.usock = _dgram_socket()
        _unlink(self.path)
        self.usock.bind(self.path)
        self.sock = self.usock  # registered in the worker's poller
        self.endpoint = SCHEME + self.path
        self.reader = reader
        self.ended = False
        self._view = self._shm_view
        self._next: bytes | None = None
        self._connected = False

    def has_message(self) -> bool:
        if self._next is not None:
            return True
        try:
            self._next = self.usock.recv(DATAGRAM + 1, _DONTWAIT)
        except BlockingIOError:
            return False
        return True

    def _take(self) -> bytes:
        data = self._next
        self._next = None
        if data is None:
            data = self.usock.recv(DATAGRAM + 1)
        kind = data[:1]
        if kind != _PART and kind != _LAST:
            return data
        parts = [data[1:]]
        while kind == _PART:  # the rest of a large descriptor is on its way
            data = self.usock.recv(DATAGRAM + 1)
            kind = data[:1]
            parts.append(data[1:])
        return b"".join(parts)

    def recv(self) -> tuple[Message | None, int, int, int]:
        """(message or None at end of stream, n, dropped, t_send_ns) of the next message."""
        head = self._take()
        kind, n, dropped, t_send = codec.unpack_envelope(head)
        if kind == codec.EOS:
            self.ended = True
            return None, n, dropped, t_send
        body = memoryview(head)[codec.ENVELOPE_SIZE :]
        message = codec.decode_body(body, self._view, ())
        return message, n, dropped, t_send

    def flush_releases(self) -> None:
        """Send the releases held back for batching (before the node waits for input)."""
        if not self._unreleased and self._release_sent == self._release_upto:
            return
        self._unreleased = 0
        try:
            if not self._connected:
                self.usock.connect(self.peer)
                self._connected = True
            self.usock.send(_REL.pack(self._release_upto), _DONTWAIT)
            self._release_sent = self._release_upto
        except BlockingIOError:
            pass  # the producer's queue is full of releases: this one goes with the next
        except OSError:
            pass  # the producer is gone; nothing waits for this credit

    def close(self) -> None:
        self.usock.close()
        _unlink(self.path)


def open_sender(ctx: Any, plan: EdgePlan, endpoint: str) -> EdgeSender:
    """The producer's end for the address the consumer bound (fast path or ZeroMQ)."""
    if endpoint.startswith(SCHEME):
        return UnixEdgeSender(plan, endpoint)
    return EdgeSender(ctx, plan, endpoint)


def open_input(ctx: Any, plan: EdgePlan, reader: ShmReader) -> InputEdge:
    """The consumer's end: the fast path for a same-host edge where enabled, else ZeroMQ."""
    # A Unix socket path has at most 107 bytes (a very long TMPDIR keeps ZeroMQ's ipc://).
    same_host = not plan.tcp and enabled() and plan.bind.startswith("ipc://")
    if same_host and len(input_path(plan).encode()) + 2 <= 107:
        return UnixInputEdge(plan, reader)
    return InputEdge(ctx, plan, reader)

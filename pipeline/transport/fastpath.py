"""The same-host fast path: descriptors in a shared-memory ring, a Unix-socket doorbell.

On one host a message is a small descriptor (the envelope and a msgpack body naming the
shared-memory slots of its arrays). Through ZeroMQ each one costs three thread wake-ups (the
application, the sender's I/O thread, the receiver's I/O thread) and on a 2-core machine the
I/O threads compete with the nodes themselves; that was most of a small frame's hop. Here:

- **the ring**: each edge has a ring of ``queue + 2`` fixed entries in a shared-memory file
  (``memfd``, made by the producer and handed to the consumer over the socket, so nothing
  is left in ``/dev/shm`` whatever happens). The producer writes a descriptor into the next
  entry and advances ``head``; the consumer copies it out and advances ``tail``. While both
  are busy a hop costs no system call at all;
- **credits in the same ring**: the consumer stores the number of the last message it
  released in ``released``; the producer reads it (``EdgeSender``'s flow control is
  unchanged: ``block``, ``drop_newest``, ``drop_oldest``, drops counted into the next
  envelope, end of stream after every waiting message and never dropped);
- **the doorbell**: a connected ``AF_UNIX``/``SOCK_DGRAM`` socket pair. A side that is about
  to sleep sets its ``sleeping`` word, checks the ring once more, and sleeps in ``poll`` on
  its socket; the other side, after publishing, sends one byte only if that word is set. The
  check-after-set on both sides is ordered by a full memory barrier (``_fence``: releasing
  and re-taking a private lock is a sequentially consistent read-modify-write pair on x86
  and ARM alike), so no wake-up is lost and no hand-written atomics are needed;
- **a short spin before sleeping**, only when the other side is known to be running (the
  consumer took a message within the spin budget; the producer waits for a credit from a
  consumer that is awake): up to 40 µs, yielding the core at every turn, backing off after
  a spin that saw nothing (``_Spin``). On a busy edge most sleeps, doorbells and wake-ups
  go away; an idle or a slow edge sleeps at once, as before;
- **a watermark** (``send_mark``: nothing below seq ``s`` comes on this edge any more, from
  a replicated producer to the copies it did not send ``s`` to) is a word of the ring's
  header, ``s + 1``, stored after every entry published before it: many watermarks while
  the consumer is busy are one store each, and never take an entry. The consumer reads it
  before the entries (``read_mark``) and checks it with the head before it sleeps; the
  doorbell rings for it as for a message. A consumer asks for them (``ask_marks``) with
  another word, which the producer reads;
- a descriptor larger than an entry (a message with big inline fields) goes over the socket,
  in order, its entry marked as such.

A consumer that crashed leaves the producer's messages in flight (``block`` waits, the drop
policies drop and count) until the supervisor, which saw the crash through the node's
pidfd, stops the graph; a doorbell to a dead consumer is ignored. Under a ``restart:``
policy the supervisor sends the producer a ``Rewire`` instead: ``reconnect`` counts what was
in flight as lost and hands a fresh ring to the new consumer. A restarted *producer* sends
its consumer a second ring: the consumer reads the old one to its last head, then switches
(its socket is not connected to one peer, so the new producer's datagrams get through).
The sockets live in the run folder (mode 0700: nobody else can reach them): the
consumer's at ``<edge address>.dg``, the producer's beside it with ``.r``; the consumer's
address travels as ``unix://PATH``. ZeroMQ still sets up the run (control) and carries
edges between hosts (``transport: tcp``).
``PIPELINE_FAST_PATH=0`` sends same-host edges through ZeroMQ again.
"""

from __future__ import annotations

import _thread
import array
import collections
import contextlib
import mmap
import os
import platform
import select
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from pipeline.errors import TransportError
from pipeline.messages import Message
from pipeline.transport import codec
from pipeline.transport.channels import EdgeSender, InputEdge, _Pending
from pipeline.transport.curve import RunKeys
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
ENTRY = 4096  # bytes per ring entry: a frame's descriptor is ~200, detections a few KB
DATAGRAM = 32 * 1024  # an oversized descriptor goes over the socket in parts of this size
_HEADER = 512
# 8-byte words of the ring's header, each on its own cache line
_HEAD, _TAIL, _RELEASED, _C_SLEEPING, _P_SLEEPING, _MARK, _WANTS = 0, 8, 16, 24, 32, 40, 48
_OVERSIZE = 0xFFFFFFFF
_LEN = struct.Struct("<I")
_LEN_ENV = struct.Struct("<I" + codec.ENVELOPE_FORMAT[1:])  # an entry's length + envelope
_ENV_SIZE = codec.ENVELOPE_SIZE
_HEAD_W, _TAIL_W, _RELEASED_W = _HEAD // 8, _TAIL // 8, _RELEASED // 8
_C_SLEEPING_W, _P_SLEEPING_W, _MARK_W = _C_SLEEPING // 8, _P_SLEEPING // 8, _MARK // 8
_WANTS_W = _WANTS // 8
_REL = struct.Struct("<q")
_RING = b"R"  # the producer's first datagram: the ring's file descriptor and size
_WAKE = b"!"
_PART = b"P"  # a part of an oversized descriptor that more parts follow
_LAST = b"L"  # its last part
_DONTWAIT = socket.MSG_DONTWAIT
_POLLIN = select.POLLIN


class _Fence:
    """A full memory barrier: ``fence()`` releases then re-takes a private lock, a release
    and an acquire read-modify-write (glibc's semaphore post and trywait under CPython's
    lock), which no load or store crosses in either direction on x86 (locked instructions)
    or ARMv8 (a release followed by an acquire is ordered). One per edge end: an end is used
    by one thread at a time."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self._lock.acquire()

    def __call__(self) -> None:
        self._lock.release()
        self._lock.acquire(False)


def _no_fence() -> None:
    """Stands in for an ordering-only barrier where the hardware keeps that order anyway."""


# x86 keeps stores in order with stores and loads with loads and later stores (TSO): a
# barrier that only orders those (an entry written before the head that publishes it, the
# head read before the entry, the entry read before the tail that frees it) costs nothing
# there. Only a store followed by a load of another word (the check-after-set of the
# sleeping flags) needs the full barrier on every architecture.
_TSO = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")


def _ordering_fence(full: _Fence) -> Callable[[], None]:
    return _no_fence if _TSO else full


def _spin_budget_ns() -> int:
    try:
        return max(0, int(float(os.environ.get("PIPELINE_FAST_PATH_SPIN_US", "40")) * 1000))
    except ValueError:
        return 40_000


class _Spin:
    """A short wait for the other side's next step, without sleeping, taken only when that
    side is known to be running (it just published; it is awake and holds our messages).

    Sleeping costs a doorbell (a system call on the other side, in its hot loop) and a
    wake-up (tens of microseconds on an idle core). The spin yields the core at every turn
    (``sched_yield``: on an oversubscribed machine the side we wait for may be waiting for
    this very core) and is adaptive: after a spin that saw nothing, the next ones are
    skipped for a while (doubling up to 64), so a side that waits for a stalled or slower
    peer soon sleeps at once, as without spinning. ``PIPELINE_FAST_PATH_SPIN_US`` sets the
    budget (default 40 µs; 0: never spin).
    """

    __slots__ = ("backoff", "budget_ns", "hits", "misses", "skip")

    def __init__(self) -> None:
        self.budget_ns = _spin_budget_ns()
        self.skip = 0  # spins still to skip after a miss
        self.backoff = 1
        self.hits = 0
        self.misses = 0

    def wait(self, ctl: memoryview, word: int, old: int) -> bool:
        """Spin until ``ctl[word]`` is no longer ``old`` (True) or the budget is spent."""
        if self.skip:
            self.skip -= 1
            return False
        now = time.monotonic_ns
        deadline = now() + self.budget_ns
        while ctl[word] == old:
            if now() > deadline:
                self.misses += 1
                self.skip = self.backoff
                self.backoff = min(64, self.backoff * 2)
                return False
            _yield()
        self.hits += 1
        self.backoff = 1
        return True


_yield = getattr(os, "sched_yield", lambda: None)


def enabled() -> bool:
    """Whether same-host edges take the fast path (``PIPELINE_FAST_PATH=0`` turns it off)."""
    return (
        os.environ.get("PIPELINE_FAST_PATH", "1") != "0"
        and hasattr(socket, "AF_UNIX")
        and hasattr(os, "memfd_create")
        and hasattr(socket, "send_fds")
    )


def input_path(plan: EdgePlan) -> str:
    """The consumer's socket path for a same-host edge planned at ``ipc://PATH``."""
    if not plan.bind.startswith("ipc://"):
        raise TransportError(f"edge {plan.name}: no same-host address in {plan.bind!r}")
    return plan.bind[len("ipc://") :] + ".dg"


def _dgram_socket(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    _unlink(path)
    sock.bind(path)
    return sock


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _drain(sock: socket.socket, keep: collections.deque[bytes]) -> None:
    """Read every waiting datagram: wake-ups are dropped, parts of descriptors kept."""
    while True:
        try:
            data = sock.recv(DATAGRAM + 1, _DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        if data != _WAKE:
            keep.append(data)


_FDS_SPACE = socket.CMSG_SPACE(array.array("i").itemsize) if hasattr(socket, "CMSG_SPACE") else 0


def _recv_fds(sock: socket.socket, size: int) -> tuple[bytes, list[int]]:
    """One datagram and the file descriptor it carries, if any, without waiting
    (``socket.recv_fds`` ignores its flags before Python 3.12: it would wait)."""
    data, ancdata, _, _ = sock.recvmsg(size, _FDS_SPACE, _DONTWAIT)
    fds = array.array("i")
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    return data, list(fds)


class UnixEdgeSender(EdgeSender):
    """The producer's end of a fast-path edge: ``EdgeSender``'s flow control on a ring."""

    def __init__(self, plan: EdgePlan, endpoint: str) -> None:
        self.plan = plan
        self.name = plan.name
        self.endpoint = endpoint
        self.queue = plan.queue
        self.policy = plan.when_full
        self.tcp = False
        self.entries = plan.queue + 2  # the queue, end of stream, and one spare
        self.fence = _Fence()
        self.order = _ordering_fence(self.fence)
        self.spin = _Spin()
        self._side: collections.deque[bytes] = collections.deque()
        self._open_ring(endpoint)
        self.inflight: collections.deque[tuple[int, list[Slot]]] = collections.deque()
        self.waiting: collections.deque[_Pending] = collections.deque()
        self.n = 0
        self.unreported_drops = 0
        self.dropped = 0
        self.blocked_s = 0.0
        self.ended = False
        self.lost = 0
        self.epoch = 0
        self.on_wait: Callable[[], None] | None = None

    def _open_ring(self, endpoint: str) -> None:
        """Bind the producer's socket, make a fresh ring and hand it to the consumer."""
        self.endpoint = endpoint
        self.peer = endpoint[len(SCHEME) :]
        self.path = self.peer + ".r"
        self.usock = _dgram_socket(self.path)
        self.usock.connect(self.peer)
        self.sock = self.usock  # pollable like the ZeroMQ one
        self._poll = select.poll()
        self._poll.register(self.usock.fileno(), _POLLIN)
        self._side.clear()
        size = _HEADER + self.entries * ENTRY
        fd = os.memfd_create(f"pipeline-ring-{self.plan.name}"[:200], os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            self.mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            self.gone = False  # the consumer's socket refused us: it exited or crashed
            try:
                socket.send_fds(self.usock, [_RING + _REL.pack(self.entries)], [fd])
            except (ConnectionRefusedError, FileNotFoundError):
                self.gone = True
        finally:
            os.close(fd)
        self.ctl = memoryview(self.mm).cast("Q")
        self.head = 0
        self.seen = 0  # the last release read from the ring

    def _close_ring(self) -> None:
        self.usock.close()
        _unlink(self.path)
        with contextlib.suppress(BufferError):
            self.ctl.release()
            self.mm.close()

    def reconnect(self, endpoint: str, server_key: str = "", delivered: int = 0) -> int:
        """Hand a fresh ring to the restarted consumer (``EdgeSender.reconnect``)."""
        lost = self._forget_inflight(delivered)
        self._close_ring()
        self._open_ring(endpoint)
        self._resend_end()
        return lost

    # credits -------------------------------------------------------------------------------
    def collect(self) -> None:
        """Take every release the consumer has stored; free the slots they held."""
        inflight = self.inflight
        if inflight:
            upto = self.seen = self.ctl[_RELEASED_W]
            while inflight and inflight[0][0] <= upto:
                for slot in inflight.popleft()[1]:
                    slot.refs -= 1
        if self.waiting:
            self._flush_waiting()

    def wait_release(self, timeout_ms: int) -> bool:
        """Block up to ``timeout_ms`` for a release; True if one came."""
        ctl = self.ctl
        if ctl[_RELEASED_W] == self.seen and not ctl[_C_SLEEPING_W] and self.spin.budget_ns:
            # the consumer is awake, working through our messages: its credit is near
            self.spin.wait(ctl, _RELEASED_W, self.seen)
        if ctl[_RELEASED_W] == self.seen:
            ctl[_P_SLEEPING_W] = 1
            self.fence()  # the flag is stored before we look at the releases once more
            if ctl[_RELEASED_W] == self.seen:
                self._poll.poll(timeout_ms)
            ctl[_P_SLEEPING_W] = 0
            _drain(self.usock, self._side)
        if ctl[_RELEASED_W] != self.seen:
            self.collect()
            return True
        self._waited()
        return False

    # sending -------------------------------------------------------------------------------
    def _send(self, item: _Pending) -> None:
        n = self.n = self.n + 1
        self.marked = item.seq  # the message itself says nothing below it comes
        slots = item.slots
        for slot in slots:
            slot.refs += 1
        self.inflight.append((n, slots))
        drops = self.unreported_drops
        self.unreported_drops = 0
        self._publish(codec.MSG, n, drops, item.body_s)

    def _publish(self, kind: bytes, n: int, drops: int, body: bytes) -> None:
        """Write one descriptor (the envelope, then ``body``) into the ring, waiting for an
        entry if the ring is full."""
        ctl = self.ctl
        head = self.head
        epoch = self.epoch
        while head - ctl[_TAIL_W] >= self.entries:
            if self.gone:
                return
            self._poll.poll(10)  # only a consumer that stopped reading gets here
            _drain(self.usock, self._side)
            self._waited()
            if self.epoch != epoch:
                return  # the consumer was restarted meanwhile: this one was counted lost
        mm = self.mm
        off = _HEADER + (head % self.entries) * ENTRY
        size = _ENV_SIZE + len(body)
        small = size + 4 <= ENTRY
        if small:
            _LEN_ENV.pack_into(mm, off, size, kind, n, drops, time.monotonic_ns())
            mm[off + 4 + _ENV_SIZE : off + 4 + size] = body
        else:
            _LEN.pack_into(mm, off, _OVERSIZE)
        self.order()  # the entry is written before the head says so
        self.head = head + 1
        ctl[_HEAD_W] = head + 1
        self.fence()  # the head is stored before we look whether the consumer sleeps
        if ctl[_C_SLEEPING_W]:
            self._ring_bell()
        if not small:  # after the entry: the consumer reads the parts as they come
            self._send_parts(codec.envelope(kind, n, drops, time.monotonic_ns()) + body)

    def _send_parts(self, data: bytes) -> None:
        view = memoryview(data)
        for start in range(0, len(data), DATAGRAM):
            last = start + DATAGRAM >= len(data)
            self._datagram((_LAST if last else _PART) + view[start : start + DATAGRAM])

    def _ring_bell(self) -> None:
        self._datagram(_WAKE, wait=False)

    def _datagram(self, data: bytes, wait: bool = True) -> None:
        if self.gone:
            return
        try:
            self.usock.send(data, 0 if wait else _DONTWAIT)
        except BlockingIOError:
            pass  # the consumer's socket holds wake-ups already: it will wake
        except (ConnectionRefusedError, FileNotFoundError, BrokenPipeError):
            # The consumer is gone; the supervisor has seen it (pidfd) and stops the graph.
            self.gone = True

    @property
    def wants_marks(self) -> bool:
        """The consumer asked for watermarks (a word of the ring's header)."""
        return bool(self.ctl[_WANTS_W])

    @wants_marks.setter
    def wants_marks(self, value: bool) -> None:
        pass  # the consumer's to say

    def send_mark(self, seq: int) -> None:
        """A watermark (``EdgeSender.send_mark``): a word of the ring's header, not an entry."""
        ctl = self.ctl
        self.order()  # the entries published before it are seen first
        ctl[_MARK_W] = seq + 1
        self.fence()  # stored before we look whether the consumer sleeps
        if ctl[_C_SLEEPING_W]:
            self._ring_bell()

    def send_eos(self) -> None:
        """Deliver every waiting message, then end of stream (never dropped)."""
        while self.waiting:
            self.wait_release(100)
        drops = self.unreported_drops
        self.unreported_drops = 0
        self._publish(codec.EOS, self.n, drops, b"")
        self.ended = True

    def close(self, linger_ms: int = 0) -> None:
        """Close (the ring stays mapped by the consumer until it closes too)."""
        self._close_ring()


class UnixInputEdge(InputEdge):
    """The consumer's end of a fast-path edge: binds ``<edge address>.dg``."""

    def __init__(self, plan: EdgePlan, reader: ShmReader, segment_prefix: str = "") -> None:
        self.plan = plan
        self.segment_prefix = segment_prefix
        self.name = plan.name
        self.port = plan.input
        self.tcp = False
        self.takes_marks = bool(plan.spread)
        self.release_every = plan.release_batch
        self._unreleased = 0
        self._release_upto = 0
        self.path = input_path(plan)
        self.peer = self.path + ".r"
        self.usock = _dgram_socket(self.path)
        self.sock = self.usock  # registered in the worker's poller: the doorbell
        self.endpoint = SCHEME + self.path
        self.reader = reader
        self.ended = False
        self.eos_pending = False
        self.progress: memoryview | None = None
        self.progress_at = 0
        self.malformed = 0
        self.key = ""  # same host, in the run's 0700 folder: no CURVE handshake
        # rings handed over after the first: a restarted producer's (its data, its fd)
        self._rings: collections.deque[tuple[bytes, int]] = collections.deque()
        self._view = self._shm_view
        self._side: collections.deque[bytes] = collections.deque()
        self.mm: mmap.mmap | None = None
        self.ctl: memoryview | None = None
        self.entries = 0
        self.tail = 0
        self._next: bytes | None = None
        self._sleeping = False
        self.fence = _Fence()
        self.order = _ordering_fence(self.fence)
        self.spin = _Spin()
        self._last_ns = 0  # when the last message was taken from the ring
        self._asked = False  # for watermarks (ask_marks)
        self._word = 0  # the watermark word as may_sleep last saw it

    def _take(self) -> None:
        """Read every waiting datagram: wake-ups are dropped, parts of descriptors kept, and
        a ring (the producer's first datagram; a restarted producer's) kept to be mapped."""
        while True:
            try:
                data, fds = _recv_fds(self.usock, DATAGRAM + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if fds:
                if data.startswith(_RING) and len(fds) == 1:
                    self._rings.append((data, fds[0]))
                else:
                    for fd in fds:
                        os.close(fd)
                    raise TransportError(f"edge {self.name}: a file came that is not a ring")
            elif data.startswith(_RING):
                raise TransportError(f"edge {self.name}: a ring came without its file")
            elif data != _WAKE:
                self._side.append(data)

    def _attach(self) -> bool:
        """Map the next ring the producer sent; False until one came. A ring after the
        first is a restarted producer's: it is taken once the old ring is read to its end
        (the dead producer wrote nothing after its last head)."""
        if not self._rings:
            self._take()
            if not self._rings:
                return False
        data, fd = self._rings.popleft()
        try:
            entries = _REL.unpack_from(data, 1)[0]
            size = _HEADER + entries * ENTRY
            if os.fstat(fd).st_size < size:
                raise TransportError(f"edge {self.name}: the ring is smaller than it says")
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self._unmap()
        self.mm = mm
        self.ctl = memoryview(mm).cast("Q")
        self.entries = entries
        self.tail = 0
        self._sleeping = False
        if self._asked:
            self.ctl[_WANTS_W] = 1
        return True

    def _unmap(self) -> None:
        if self.ctl is not None and self.mm is not None:
            with contextlib.suppress(BufferError):
                self.ctl.release()
                self.mm.close()
        self.ctl = None
        self.mm = None

    def has_message(self) -> bool:
        if self._next is not None or self.eos_pending:
            return True
        ctl = self.ctl
        if ctl is None:
            if not self._attach():
                return False
            ctl = self.ctl
            assert ctl is not None
        if self._sleeping:
            self._sleeping = False
            ctl[_C_SLEEPING_W] = 0
        tail = self.tail
        if ctl[_HEAD_W] == tail:
            if self._rings and self._attach():  # the producer was restarted
                return self.has_message()
            return False
        self.order()  # the head is read before the entry
        mm = self.mm
        assert mm is not None
        off = _HEADER + (tail % self.entries) * ENTRY
        (n,) = _LEN.unpack_from(mm, off)
        data = mm[off + 4 : off + 4 + n] if n != _OVERSIZE else self._parts()
        self.order()  # the entry is copied out before the producer may reuse it
        self.tail = tail + 1
        ctl[_TAIL_W] = tail + 1
        self._next = data
        self._last_ns = time.monotonic_ns()
        return True

    def ask_marks(self) -> None:
        """Ask the producer for watermarks (``InputEdge.ask_marks``): a word of the ring's
        header (set when the ring comes, if it has not yet)."""
        self._asked = True
        if self.ctl is not None:
            self.ctl[_WANTS_W] = 1

    def read_mark(self) -> int:
        """The producer's watermark (``InputEdge.read_mark``), from the ring's header: read
        before the entries, so every message below it is in the ring already."""
        ctl = self.ctl
        if ctl is not None and self.takes_marks:
            word = ctl[_MARK_W]
            self.order()  # the mark is read before the head
            if word - 1 > self.mark:
                self.mark = word - 1
        return self.mark

    def _parts(self) -> bytes:
        """An oversized descriptor: its parts came over the socket before its entry."""
        chunks = []
        while True:
            while not self._side:
                if self._rings:  # the producer died half-way through it: a malformed one
                    return b""
                select.select([self.usock], [], [], 1.0)
                self._take()
            data = self._side.popleft()
            chunks.append(data[1:])
            if data[:1] == _LAST:
                return b"".join(chunks)

    def may_sleep(self) -> bool:
        """Called before the worker sleeps on this edge's socket: ask for a doorbell, and
        say False if a message came in the meantime (then it must not sleep)."""
        if self._next is not None or self.eos_pending:
            return False
        ctl = self.ctl
        if ctl is None:
            return not self._attach()
        spin = self.spin
        # a message came just now: the producer is running, the next one is near
        recent = spin.budget_ns and time.monotonic_ns() - self._last_ns < spin.budget_ns
        if recent and spin.wait(ctl, _HEAD_W, self.tail):
            return False
        self._take()  # old wake-ups would end the sleep at once
        if self._rings:
            return False  # a restarted producer's ring: look again
        self._sleeping = True
        ctl[_C_SLEEPING_W] = 1
        self.fence()  # the flag is stored before we look at the head (and mark) once more
        word, self._word = self._word, ctl[_MARK_W]
        # a watermark that came as it fell asleep did not ring: look again (once)
        return bool(ctl[_HEAD_W] == self.tail) and word == self._word

    def recv(self) -> tuple[Message | None, int, int, int]:
        """(message or None at end of stream, n, dropped, t_send_ns) of the next message."""
        if self.eos_pending:
            self.eos_pending = False
            self.ended = True
            return None, 0, 0, 0
        if self._next is None and not self.has_message():
            raise TransportError(f"edge {self.name}: recv() with no message waiting")
        head = self._next
        assert head is not None
        self._next = None
        return self._decode(head, [])

    def flush_releases(self) -> None:
        """Store the releases held back for batching; ring the producer if it waits."""
        if not self._unreleased or self.ctl is None:
            return
        self._unreleased = 0
        ctl = self.ctl
        self.order()  # done with the released slots before the producer may refill them
        ctl[_RELEASED_W] = self._release_upto
        self.fence()  # the release is stored before we look whether the producer sleeps
        if ctl[_P_SLEEPING_W]:
            # not connected: a restarted producer binds the same path with a new socket
            with contextlib.suppress(OSError):  # BlockingIOError: it has a wake-up already
                self.usock.sendto(_WAKE, _DONTWAIT, self.peer)

    def close(self) -> None:
        self.usock.close()
        _unlink(self.path)
        self._unmap()
        while self._rings:
            os.close(self._rings.popleft()[1])


def open_sender(
    ctx: Any, plan: EdgePlan, endpoint: str, server_key: str = "", *, keys: RunKeys | None = None
) -> EdgeSender:
    """The producer's end for the address the consumer bound (fast path or ZeroMQ; ``keys``:
    the run's CURVE keys for an edge that crosses machines)."""
    if endpoint.startswith(SCHEME):
        return UnixEdgeSender(plan, endpoint)
    return EdgeSender(ctx, plan, endpoint, server_key, keys=keys)


def open_input(
    ctx: Any,
    plan: EdgePlan,
    reader: ShmReader,
    segment_prefix: str = "",
    *,
    keys: RunKeys | None = None,
) -> InputEdge:
    """The consumer's end: the fast path for a same-host edge where enabled, else ZeroMQ."""
    # A Unix socket path has at most 107 bytes (a very long TMPDIR keeps ZeroMQ's ipc://).
    same_host = not plan.tcp and enabled() and plan.bind.startswith("ipc://")
    if same_host and len(input_path(plan).encode()) + 2 <= 107:
        return UnixInputEdge(plan, reader, segment_prefix)
    return InputEdge(ctx, plan, reader, segment_prefix, keys=keys)

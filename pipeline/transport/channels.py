"""ZeroMQ edges with credits, and the runtime's output ports.

One ZeroMQ PAIR socket per edge carries descriptors one way and releases the other way. The
consumer binds (``ipc://`` in the run folder, or ``tcp://`` for the between-hosts form), the
producer connects. Flow control is by credits, not by ZeroMQ's high-water marks: an edge of
``queue: N`` has at most N messages that the consumer has not yet released, so at most N
slots of shared memory are held for it.

When an edge has no credit, its ``when_full`` policy decides:

- ``block``: the producer waits for a release (lossless back-pressure);
- ``drop_newest``: the new message is not sent to this edge, and counted;
- ``drop_oldest``: the new message waits at the producer in a mailbox of N; when it is full
  its oldest waiting message is dropped and counted. A release sends the oldest waiting one,
  so a slow consumer always gets the freshest messages.

Drops travel in the next envelope, so the consumer's input statistics count them.
End of stream bypasses credits and policies: it is sent after every waiting message, in
order, and never dropped.
"""

from __future__ import annotations

import collections
import math
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import zmq

from pipeline.errors import TransportError
from pipeline.messages import Message
from pipeline.node import refuse_message
from pipeline.transport import codec
from pipeline.transport.curve import RunKeys, connect_as_client, require_run_client
from pipeline.transport.plan import EdgePlan
from pipeline.transport.shm import ShmReader, Slot, SlotPool

if TYPE_CHECKING:
    from pipeline.transport import bulk

__all__ = ["EdgeSender", "InputEdge", "RuntimeOutput"]

_REL = struct.Struct("<q")
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)  # plain ints: enum arithmetic costs a microsecond per message


_NOTHING = object()  # no dtype asked yet
HANDSHAKE_MS = 2000  # a peer that has not completed the handshake by then is dropped


def _bulk(edge: str) -> Any:
    """``pipeline.transport.bulk`` (it needs ``cryptography``: the cluster extra)."""
    try:
        from pipeline.transport import bulk
    except ImportError as exc:
        raise TransportError(
            f"edge {edge}: a tcp edge is encrypted with the cryptography package, which is not "
            f"installed ({exc}): pip install 'edge-vision-pipeline[cluster]'"
        ) from None
    return bulk


GENERATION_SHIFT = 40  # a restarted node's first message number: generation << 40


class _Pending:
    __slots__ = ("body_b", "body_s", "buffers", "bulk_bytes", "seq", "slots")

    def __init__(
        self,
        body_s: bytes,
        body_b: bytes | None,
        buffers: list[Any],
        slots: list[Slot],
        seq: int = 0,
    ):
        self.body_s = body_s
        self.body_b = body_b
        self.buffers = buffers
        self.bulk_bytes = sum([b.nbytes for b in buffers]) if buffers else 0
        self.slots = slots
        self.seq = seq  # the message's (a replicated consumer may be chosen by it)


class EdgeSender:
    """The producer's end of one edge: connects to ``endpoint``, where the consumer bound
    (a tcp edge is a CURVE client of the consumer's ``server_key``; with ``keys``, of the
    run's client keys: ``pipeline.transport.curve``)."""

    bulk: bulk.BulkSender | None = None  # a tcp edge's sealed arrays (pipeline.transport.bulk)
    # the node's progress file and this edge's place in it: the last message number sent,
    # which a consumer of a node that died counts its losses against (a ZeroMQ edge only:
    # the fast path loses nothing it sent)
    progress: memoryview | None = None
    progress_at = 0
    # the consumer asked for watermarks (``InputEdge.ask_marks``: a node that passes them on);
    # the highest seq the consumer was told nothing below of (by a message or a watermark)
    wants_marks = False
    marked = -1
    marks_sent = 0

    def __init__(
        self,
        ctx: zmq.Context[Any],
        plan: EdgePlan,
        endpoint: str,
        server_key: str = "",
        *,
        keys: RunKeys | None = None,
    ) -> None:
        self.plan = plan
        self.name = plan.name
        self.endpoint = endpoint
        self.queue = plan.queue
        self.policy = plan.when_full
        self.tcp = plan.tcp
        self.ctx = ctx
        self.keys = keys
        self.sock = self._connect(endpoint, server_key)
        self.inflight: collections.deque[tuple[int, list[Slot]]] = collections.deque()
        self.waiting: collections.deque[_Pending] = collections.deque()
        self.n = 0
        self.unreported_drops = 0
        self.dropped = 0
        self.blocked_s = 0.0  # time the producer waited for this consumer (back-pressure)
        self.ended = False
        self.lost = 0  # messages in flight to a consumer that died (restart: policies)
        self.epoch = 0  # how many times the edge was connected again
        # Called while the producer waits for a credit that does not come: the worker
        # reads its control socket there, so a Rewire reaches a producer blocked on a
        # consumer that died.
        self.on_wait: Callable[[], None] | None = None

    def _connect(self, endpoint: str, server_key: str) -> Any:
        if self.tcp and not server_key:
            raise TransportError(f"edge {self.name}: a tcp edge needs its consumer's CURVE key")
        if self.tcp:  # its big arrays go sealed on a socket of their own
            sealed = _bulk(self.name)
            edge_secrets = sealed.EdgeSecrets.from_wire(server_key, self.name)
            server_key = edge_secrets.curve_key
            if self.bulk is not None:  # a restarted consumer's: a new bulk socket too
                self.bulk.close(0)
            self.bulk = sealed.BulkSender(self.ctx, self.name, edge_secrets)
        sock = self.ctx.socket(zmq.PAIR)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        if server_key:
            # the consumer's key came from the supervisor: only this producer knows it. On a
            # cluster the client keys are the run's (``keys``), which the consumer's
            # gatekeeper checks; otherwise a fresh pair
            if self.keys is not None:
                connect_as_client(sock, self.keys, server_key)
            else:
                public, secret = zmq.curve_keypair()
                sock.curve_serverkey = server_key.encode("ascii")
                sock.curve_publickey = public
                sock.curve_secretkey = secret
        sock.connect(endpoint)
        return sock

    # a restarted consumer ------------------------------------------------------------------
    def _forget_inflight(self, delivered: int) -> int:
        """The consumer died: free what it held; the messages after ``delivered`` (the last
        one it was done with) are lost, counted in ``lost``. Returns how many."""
        lost = 0
        while self.inflight:
            n, slots = self.inflight.popleft()
            if n > delivered:
                lost += 1
            for slot in slots:
                slot.refs -= 1
        self.lost += lost
        self.epoch += 1
        return lost

    def reconnect(self, endpoint: str, server_key: str = "", delivered: int = 0) -> int:
        """Connect to the restarted consumer at ``endpoint``; count what was in flight to the
        dead one after ``delivered`` as lost. Waiting messages (``drop_oldest``) go to the new
        one; an end of stream already sent is sent again. Returns the messages lost."""
        lost = self._forget_inflight(delivered)
        self.sock.close(linger=0)
        self.endpoint = endpoint
        self.sock = self._connect(endpoint, server_key)
        self._resend_end()
        return lost

    def hand_over(self, new: EdgeSender, delivered: int = 0) -> int:
        """The restarted consumer now takes another transport (it was placed again on
        another machine: shm became tcp, or tcp shm): ``new``, already connected to it,
        takes this edge over: its message numbers, counters and ``drop_oldest`` mailbox
        (what was in flight after ``delivered`` is counted lost, as ``reconnect`` does), and
        an end of stream already sent is sent again. This sender is closed. Returns the
        messages lost."""
        lost = self._forget_inflight(delivered)
        new.n, new.epoch, new.on_wait = self.n, self.epoch, self.on_wait
        new.lost, new.dropped, new.blocked_s = self.lost, self.dropped, self.blocked_s
        new.unreported_drops = self.unreported_drops
        new.progress, new.progress_at = self.progress, self.progress_at
        for item in self.waiting:
            if not new._carries(item):
                # encoded for the other transport only: it cannot go on this one
                for slot in item.slots:
                    slot.refs -= 1
                new.lost += 1
                lost += 1
            else:
                new.waiting.append(item)
        self.waiting.clear()
        new.ended = self.ended
        self.close(0)
        # this object becomes the new sender: whoever holds it (the port, a replicated
        # consumer's distributor, a producer waiting in ``offer`` for a credit) goes on with it
        self.__class__ = new.__class__
        self.__dict__ = new.__dict__
        self._resend_end()
        return lost

    def _carries(self, item: _Pending) -> bool:
        """Whether ``item`` was encoded for this edge's transport (it changed: hand_over)."""
        return item.body_b is not None if self.tcp else bool(item.body_s)

    def _resend_end(self) -> None:
        if self.waiting:
            self._flush_waiting()
        if self.ended:
            self.ended = False
            self.send_eos()

    def _waited(self) -> None:
        if self.on_wait is not None:
            self.on_wait()

    # credits -------------------------------------------------------------------------------
    def collect(self) -> None:
        """Take every release that has arrived; free the slots they held."""
        sock = self.sock
        # EVENTS is a cheap flag read; a NOBLOCK recv that raises zmq.Again costs far more.
        while sock.getsockopt(_EVENTS) & _POLLIN:
            (upto,) = _REL.unpack(sock.recv(copy=True))
            if upto < 0:  # not a release: the consumer asks for watermarks
                self.wants_marks = True
                continue
            inflight = self.inflight
            while inflight and inflight[0][0] <= upto:
                for slot in inflight.popleft()[1]:
                    slot.refs -= 1
            if self.bulk is not None:
                self.bulk.released(upto, self.queue + 1)
        if self.waiting:
            self._flush_waiting()

    def wait_release(self, timeout_ms: int) -> bool:
        """Block up to ``timeout_ms`` for a release; True if one came."""
        if self.sock.poll(timeout_ms, zmq.POLLIN):
            self.collect()
            return True
        self._waited()
        return False

    # sending -------------------------------------------------------------------------------
    def offer(self, item: _Pending) -> None:
        self.collect()
        if self.policy == "block":
            if len(self.inflight) >= self.queue:
                t0 = time.perf_counter()
                while len(self.inflight) >= self.queue:
                    self.wait_release(100)
                self.blocked_s += time.perf_counter() - t0
                if not self._carries(item):
                    # its consumer was placed on another machine meanwhile and the edge
                    # changed transport (hand_over): this one, encoded for the old, is lost
                    self.lost += 1
                    return
            self._send(item)
        elif self.policy == "drop_newest":
            if len(self.inflight) >= self.queue:
                self._drop()
                return
            self._send(item)
        else:  # drop_oldest
            for slot in item.slots:
                slot.refs += 1
            self.waiting.append(item)
            if len(self.waiting) > self.queue:
                old = self.waiting.popleft()
                for slot in old.slots:
                    slot.refs -= 1
                self._drop()
            self._flush_waiting()

    def _drop(self) -> None:
        self.unreported_drops += 1
        self.dropped += 1

    def _flush_waiting(self) -> None:
        while self.waiting and len(self.inflight) < self.queue:
            item = self.waiting.popleft()
            for slot in item.slots:
                slot.refs -= 1  # the mailbox's reference; _send takes the edge's own
            self._send(item)

    def _send(self, item: _Pending) -> None:
        self.n += 1
        self.marked = item.seq  # the message itself says nothing below it comes
        for slot in item.slots:
            slot.refs += 1
        self.inflight.append((self.n, item.slots))
        env = codec.envelope(codec.MSG, self.n, self.unreported_drops, time.monotonic_ns())
        self.unreported_drops = 0
        if self.tcp:
            assert item.body_b is not None
            head = env + item.body_b
            if self.bulk is not None and item.bulk_bytes >= self.bulk.MIN_BYTES:
                desc = self.bulk.send(self.n, head, item.buffers)
                self.sock.send_multipart([head, desc], copy=False)
            else:
                self.sock.send_multipart([head, *item.buffers], copy=False)
        else:
            self.sock.send(env + item.body_s, copy=True)
        if self.progress is not None:
            self.progress[self.progress_at] = self.n

    def advance(self, seq: int) -> None:
        """Nothing below ``seq`` comes on this edge any more: a watermark, unless it says
        nothing new (a message of that seq was sent), or less (messages waiting in the
        ``drop_oldest`` mailbox: the oldest one's seq)."""
        if self.waiting and self.waiting[0].seq < seq:
            seq = self.waiting[0].seq
        if seq > self.marked and not self.ended:
            self.marked = seq
            self.marks_sent += 1
            self.send_mark(seq)

    def send_mark(self, seq: int) -> None:
        """A watermark: nothing below ``seq`` comes on this edge any more (a replicated
        producer's ``Distributor`` tells the copies it did not send a seq to). It bypasses
        credits, goes after every message sent before it, and never waits."""
        self.sock.send(codec.envelope(codec.MARK, seq, 0, time.monotonic_ns()))

    def send_eos(self) -> None:
        """Deliver every waiting message, then end of stream (never dropped)."""
        while self.waiting:
            self.wait_release(100)
        env = codec.envelope(codec.EOS, self.n, self.unreported_drops, time.monotonic_ns())
        self.unreported_drops = 0
        self.sock.send(env)
        self.ended = True

    def close(self, linger_ms: int = 0) -> None:
        """Close; ``linger_ms`` lets queued messages (end of stream) still go out."""
        if self.bulk is not None:
            self.bulk.close(linger_ms)
        self.sock.close(linger=linger_ms)


class RuntimeOutput:
    """``self.<output>`` of a node in a running graph: a slot pool and the port's edges.

    ``send`` refuses a message that is not of the port's declared ``type``.
    """

    def __init__(
        self,
        name: str,
        pool: SlotPool,
        edges: list[EdgeSender] | None = None,
        type: type[Message] = Message,
    ) -> None:
        self.name = name
        self.type = type
        self.pool = pool
        self.edges: list[EdgeSender] = []
        self._allocated: list[Slot] = []
        self._made: list[tuple[np.ndarray, Slot]] = []  # allocate()'s arrays, this call
        # allocate()'s last request: (shape asked, dtype asked, shape, dtype, bytes)
        self._last_shape: tuple[Any, ...] = ((), _NOTHING, (), None, 0)
        self.sent = 0
        self.has_tcp = False
        self.has_shm = False
        self.wait_s = 0.0
        for edge in edges or ():
            self.connect(edge)

    def connect(self, edge: EdgeSender) -> None:
        """Add a consumer's edge (the wiring, before the first send)."""
        self.edges.append(edge)
        self.has_tcp = any(e.tcp for e in self.edges)
        self.has_shm = any(not e.tcp for e in self.edges)

    def reset_counters(self) -> None:
        """Sent, dropped and waiting time from zero (statistics reset)."""
        self.sent = 0
        self.wait_s = 0.0
        for edge in self.edges:
            edge.dropped = 0
            edge.blocked_s = 0.0

    def _pool_acquire(self, nbytes: int) -> Slot | None:
        try:
            return self.pool.acquire(nbytes)
        except TransportError as exc:  # no room in /dev/shm: say for which edges
            edges = ", ".join(f"{e.plan.consumer}.{e.plan.input}" for e in self.edges)
            raise TransportError(f"output {self.name!r} (to {edges or 'nothing'}): {exc}") from exc

    def _acquire(self, nbytes: int) -> Slot:
        slot = self._pool_acquire(nbytes)
        if slot is not None:
            return slot
        t0 = time.monotonic()
        warned = False
        while slot is None:
            if not self.edges:
                raise TransportError(f"output {self.name!r}: every shared-memory slot is held")
            for edge in self.edges:
                edge.collect()
            slot = self._pool_acquire(nbytes)
            if slot is None:
                self.edges[0].wait_release(20) if len(self.edges) == 1 else time.sleep(0.0005)
                if not warned and time.monotonic() - t0 > 5:
                    warned = True
                    import logging

                    logging.getLogger("pipeline.transport").warning(
                        "output %r has waited 5 s for a free slot: a consumer holds its inputs",
                        self.name,
                    )
        self.wait_s += time.monotonic() - t0
        return slot

    def allocate(self, shape: tuple[int, ...], dtype: npt.DTypeLike = np.uint8) -> np.ndarray:
        last = self._last_shape
        if last[1] is dtype and type(shape) is tuple and last[0] == shape:  # as last time
            shape, dt, nbytes = last[2], last[3], last[4]
        else:
            asked = shape
            dt = np.dtype(dtype)
            shape = tuple(map(int, shape))
            nbytes = math.prod(shape) * dt.itemsize
            if type(asked) is tuple:
                self._last_shape = (asked, dtype, shape, dt, nbytes)
        slot = self._acquire(max(nbytes, 1))
        self._allocated.append(slot)
        view = slot.view(shape, dt)
        self._made.append((view, slot))
        return view

    def send(self, message: Message) -> None:
        if not isinstance(message, self.type):
            refuse_message(self.name, self.type, message)
        held: list[Slot] = []  # slots this message lives in; this port holds one ref on each
        arrays_s: list[tuple[str, np.ndarray, str, Any]] = []
        arrays_b: list[tuple[str, np.ndarray, str, Any]] = []
        buffers: list[Any] = []
        for name, arr in message.wire_arrays().items():
            if type(arr) is not np.ndarray:
                arr = np.asarray(arr)
            if arr.nbytes <= codec.INLINE_MAX:
                raw = arr.tobytes()
                arrays_s.append((name, arr, "i", raw))
                arrays_b.append((name, arr, "i", raw))
                continue
            # The array allocate() gave (the usual case): its slot at offset 0, found by
            # identity; reading an array's address costs microseconds.
            slot = None
            for view, made in self._made:
                if view is arr:
                    slot = made
                    break
            offset = 0
            if slot is None and arr.flags.c_contiguous:
                slot = self._slot_of(arr)  # a part of an allocated array
                if slot is not None:
                    offset = arr.__array_interface__["data"][0] - slot.address
            if slot is None:  # made elsewhere: copied into a slot once
                slot = self._acquire(arr.nbytes)
                dst = slot.view(arr.shape, arr.dtype)
                np.copyto(dst, arr)
                arr = dst
            else:
                slot.refs += 1
            held.append(slot)
            arrays_s.append((name, arr, "s", (slot.name, offset)))
            if self.has_tcp:
                arrays_b.append((name, arr, "b", len(buffers) + 1))
                buffers.append(arr.reshape(-1).view(np.uint8).data)
        try:
            body_s = codec.pack_body(message, arrays_s) if self.has_shm else b""
            body_b = codec.pack_body(message, arrays_b) if self.has_tcp else None
        except TypeError as exc:
            for slot in held:
                slot.refs -= 1
            raise TypeError(
                f"output {self.name!r}: message meta and fields must be msgpack-serialisable "
                f"(plain str, int, float, bool, list, dict, bytes): {exc}"
            ) from None
        item = _Pending(body_s, body_b, buffers, held, message.seq)
        for edge in self.edges:
            wanted = edge.plan.source
            if not wanted or wanted == message.source:
                edge.offer(item)
        for slot in held:
            slot.refs -= 1
        self.sent += 1

    def _slot_of(self, arr: np.ndarray) -> Slot | None:
        base = arr.base
        for slot in self._allocated:
            if base is slot.array or slot.contains(arr):
                return slot
        return None

    def end_call(self) -> None:
        """Reclaim buffers allocated during the last process() call (sent or not)."""
        if self._allocated:
            for slot in self._allocated:
                slot.refs -= 1
            self._allocated.clear()
            self._made.clear()

    def has_waiting(self) -> bool:
        return any(edge.waiting for edge in self.edges)

    def poll_waiting(self) -> None:
        for edge in self.edges:
            if edge.waiting or edge.inflight:
                edge.collect()

    def send_eos(self) -> None:
        for edge in self.edges:
            if not edge.ended:
                edge.send_eos()

    def wait_released(self) -> None:
        """Block until consumers released every message: only then may the slots go away
        (a consumer maps a slot when it first sees it, which can be after we ended)."""
        for edge in self.edges:
            while edge.inflight:
                edge.wait_release(100)

    def close(self, linger_ms: int = 0) -> None:
        for edge in self.edges:
            edge.close(linger_ms)
        self.pool.close()


class InputEdge:
    """The consumer's end of one edge: binds ``plan.bind``; ``endpoint`` is the bound address
    (a tcp edge is a CURVE server with a key of its own, ``key``; with ``keys`` it also
    admits only the run's client key: ``pipeline.transport.curve``)."""

    bulk: bulk.BulkReceiver | None = None  # a tcp edge's sealed arrays (pipeline.transport.bulk)
    # a producer that died and was restarted: which incarnation's messages arrive now, the
    # last number heard from it, and per earlier incarnation [last heard, last sent]
    _gen = -1  # none yet: what a producer sent before this edge heard from it is not counted
    _last_n = 0
    _unsent: dict[int, list[int | None]] | None = None
    lost_upstream = 0  # sent by a producer that died, never arrived (counted lost)
    # watermarks (``codec.MARK``), taken only on an edge to a copy of a replicated node (its
    # plan has a ``spread``: a ``Distributor`` sends them); ``mark``: the highest heard,
    # nothing below it comes any more (-1: none yet)
    takes_marks = False
    mark = -1
    _asking = False

    def __init__(
        self,
        ctx: zmq.Context[Any],
        plan: EdgePlan,
        reader: ShmReader,
        segment_prefix: str = "",
        *,
        keys: RunKeys | None = None,
    ) -> None:
        self.plan = plan
        self.segment_prefix = segment_prefix
        self.name = plan.name
        self.port = plan.input
        self.tcp = plan.tcp
        self.takes_marks = bool(plan.spread)
        # Releases are credits back to the producer, sent in batches of up to
        # ``plan.release_batch`` (see ``pipeline.transport.plan.release_batch``).
        self.release_every = plan.release_batch
        self._unreleased = 0
        self._release_upto = 0
        self.sock = ctx.socket(zmq.PAIR)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.key = ""  # what a producer needs (tcp edges: bulk.EdgeSecrets, on the wire)
        self.curve_key = ""  # the CURVE server key (tcp edges)
        if self.tcp:
            # Anyone on the machine (or the network) can reach a tcp port: only a peer that
            # knows this key, handed to the producer through the supervisor, gets through the
            # handshake; a stranger that connects and says nothing is dropped after 2 s.
            public, secret = zmq.curve_keypair()
            self.sock.curve_server = True
            self.sock.curve_publickey = public
            self.sock.curve_secretkey = secret
            self.sock.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_MS)
            # a producer whose machine vanished sends no FIN: its silence past the heartbeat
            # frees this PAIR socket for its next incarnation (a restart: policy)
            self.sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
            self.sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 4000)
            self.curve_key = public.decode("ascii")
            if keys is not None:
                # on a cluster, the context's gatekeeper also wants the run's client key
                require_run_client(self.sock)
        self.sock.bind(plan.bind)
        self.endpoint: str = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        if self.tcp:
            # big arrays come sealed on a socket of their own; its keys and token go to the
            # producer with the CURVE key, through the supervisor (pipeline.transport.bulk)
            receiver = _bulk(self.name).BulkReceiver
            self.bulk = receiver(ctx, self.name, plan.bind, self.curve_key, plan.queue)
            self.bulk.gate.watch(self.sock)
            self.key = self.bulk.secrets.to_wire()
        self.reader = reader
        self.ended = False
        self.eos_pending = False
        self.progress: memoryview | None = None  # the node's progress board (int64 per input)
        self.progress_at = 0
        self.malformed = 0
        # a tcp edge carries its arrays as frames: a shared-memory reference on it is refused
        self._view: codec.ShmView | None = None if self.tcp else self._shm_view

    def _shm_view(
        self, name: str, offset: int, shape: tuple[int, ...], dtype: np.dtype
    ) -> np.ndarray:
        if self.segment_prefix and not name.startswith(self.segment_prefix + "-"):
            raise codec.MalformedMessage(f"segment {name!r} is not one of this run's")
        if offset:
            count = math.prod(shape)
            flat = self.reader.view(name, (offset + count * dtype.itemsize,), np.dtype(np.uint8))
            return flat[offset:].view(dtype).reshape(shape)
        return self.reader.view(name, shape, dtype)

    def has_message(self) -> bool:
        return self.eos_pending or bool(self.sock.getsockopt(_EVENTS) & _POLLIN)

    def may_sleep(self) -> bool:
        """Before the worker sleeps on ``sock``: False if it must look again first (a
        transport that needs to ask for a wake-up, ``pipeline.transport.fastpath``)."""
        return True

    def read_mark(self) -> int:
        """The edge's watermark (``mark``), read before its messages are taken: a transport
        that keeps it beside the messages (the fast path's ring) reads it here."""
        if self._asking:
            self.ask_marks()
        return self.mark

    def ask_marks(self) -> None:
        """Ask the producer for watermarks (a node that passes them on; a producer that is a
        copy of a replicated node sends them unasked): a release of -1, sent again by
        ``read_mark`` until the socket takes it (a tcp peer still in its handshake)."""
        try:
            self.sock.send(_REL.pack(-1), zmq.NOBLOCK)
            self._asking = False
        except zmq.ZMQError:
            self._asking = True

    def recv(self) -> tuple[Message | None, int, int, int]:
        """(message or None at end of stream, n, dropped, t_send_ns) of the next message; a
        watermark gives (None, -1, 0, t_send_ns), the edge not ended."""
        if self.eos_pending:
            self.eos_pending = False
            self.ended = True
            return None, 0, 0, 0
        if self.tcp:  # big buffers follow: take them without a copy
            frames = self.sock.recv_multipart(copy=False)
            head = frames[0].bytes
            if self.bulk is not None and len(frames) == 2 and len(frames[1]) == self.bulk.DESC_SIZE:
                return self._decode(head, [head, *self._open_bulk(head, frames[1].bytes)])
            buffers: list[Any] = [f.buffer for f in frames]
        else:  # one small frame: bytes are cheaper than a zmq.Frame here
            head = self.sock.recv(copy=True)
            buffers = []
        return self._decode(head, buffers)

    def _open_bulk(self, head: bytes, desc: bytes) -> list[memoryview]:
        """The arrays of a message whose bytes came sealed on the bulk socket; a message
        whose part failed is dropped, counted, and its credit given back."""
        assert self.bulk is not None
        try:
            _, n, _, _ = codec.unpack_envelope(head)
        except codec.MalformedMessage:
            self.malformed += 1
            raise
        try:
            return self.bulk.parts_for(head, desc)
        except codec.MalformedMessage:
            self.malformed += 1
            self.release(n)  # the producer must not run out of credit
            raise

    def _decode(self, head: bytes, buffers: list[Any]) -> tuple[Message | None, int, int, int]:
        """The message in ``head`` (envelope + body) and ``buffers`` (its tcp frames)."""
        try:
            kind, n, dropped, t_send = codec.unpack_envelope(head)
        except codec.MalformedMessage:
            self.malformed += 1
            raise
        if kind == codec.MARK:
            return self._take_mark(n, len(head), t_send)
        if n >> GENERATION_SHIFT != self._gen:
            self._next_incarnation(n >> GENERATION_SHIFT)
        self._last_n = n
        if kind == codec.EOS:
            self.ended = True
            return None, n, dropped, t_send
        body = memoryview(head)[codec.ENVELOPE_SIZE :]
        try:
            message = codec.decode_body(body, self._view, buffers)
        except TransportError:
            # dropped, but its credit goes back: the producer must not run out of slots
            self.malformed += 1
            self.release(n)
            raise
        return message, n, dropped, t_send

    def _take_mark(self, seq: int, size: int, t_send: int) -> tuple[None, int, int, int]:
        if not self.takes_marks or size != codec.ENVELOPE_SIZE:
            self.malformed += 1
            why = "with bytes after its envelope" if self.takes_marks else "on an edge not spread"
            raise codec.MalformedMessage(f"edge {self.name}: a watermark {why}")
        if seq > self.mark:
            self.mark = seq
        return None, -1, 0, t_send

    def _next_incarnation(self, gen: int) -> None:
        """The first message of a restarted producer: the dead one's are all in."""
        if self._gen >= 0:
            self._note(self._gen, 0, self._last_n)
        self._gen = gen

    def producer_died(self, sent: int) -> None:
        """The producer's incarnation died having sent up to message ``sent`` (its progress
        file, read by the supervisor): what never arrived is counted in ``lost_upstream``,
        once its next incarnation's first message shows nothing more is coming."""
        self._note(sent >> GENERATION_SHIFT, 1, sent)

    def _note(self, gen: int, which: int, n: int) -> None:
        if self._unsent is None:
            self._unsent = {}
        pair = self._unsent.setdefault(gen, [None, None])
        pair[which] = n
        heard, sent = pair
        if heard is not None and sent is not None:
            self.lost_upstream += max(0, sent - heard)
            del self._unsent[gen]

    def end_now(self) -> None:
        """Take end of stream as received (its producer ended before this node restarted):
        the next ``recv`` returns it."""
        self.eos_pending = True

    def release(self, n: int) -> None:
        """Give message ``n`` (and every one before it) back to the producer."""
        progress = self.progress
        if progress is not None and n > progress[self.progress_at]:
            progress[self.progress_at] = n  # the supervisor reads it if this node dies
        self._release_upto = n
        self._unreleased += 1
        if self._unreleased >= self.release_every:
            self.flush_releases()

    def flush_releases(self) -> None:
        """Send the releases held back for batching (before the node waits for input)."""
        if not self._unreleased:
            return
        self._unreleased = 0
        try:
            self.sock.send(_REL.pack(self._release_upto), zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # the producer is gone; nothing waits for this credit

    def close(self) -> None:
        if self.bulk is not None:
            self.bulk.close()
        self.sock.close(linger=0)

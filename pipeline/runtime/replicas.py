"""Replicated nodes (``replicas: N``): N copies of one node, its messages spread over them,
their results merged back in seq order.

The planner (``pipeline.runtime.plan``) turns a node ``faces`` of ``replicas: 2`` into two
instances, ``faces[0]`` and ``faces[1]``: two processes (on a cluster, two placements, which
Ray spreads over the machines that fit). Every edge into the node becomes one edge per
instance, every edge out of it one edge per instance too; the node's code does not know it
is replicated (``Node.replica`` and ``Node.replicas`` say which copy it is, for logs).

- **Spreading** (``Distributor``, the producer's end): the edges of one output port to the
  instances of one replicated input are one ``EdgeSender`` for ``RuntimeOutput``; each
  message goes to exactly one instance. ``spread: free`` (a node with one input): the next
  instance, round-robin, that has a free credit on its edge, so a slow copy does not hold the
  others up; when none has, ``block`` waits for the first credit of any, and the drop
  policies apply to the next one in turn. ``spread: seq`` (a node that joins several inputs
  on seq): instance ``seq mod N``, so the messages of one seq meet in the same copy whatever
  upstream sends them. End of stream goes to every instance.
- **Merging** (``MergedInput``, the consumer's end): the edges from the N instances of a
  replicated producer into one input are one ``InputEdge`` for the worker's loops. Each edge
  is FIFO and monotonic in seq: the merge delivers the smallest head once every edge that
  has not ended has a head (a k-way merge), so the input sees the seqs in order, exactly as
  from one node. A copy that has nothing to say for a seq (its message was dropped upstream,
  or the node sends nothing for it) would hold the merge until its next message: after
  ``patience_s`` (at least ``MERGE_WAIT_S``, and 4x the longest gap seen between two
  messages of one edge) the others' heads go on without it, and a message of that copy that
  then comes too late for the order (a seq below one already delivered) is dropped and
  counted on the input (``late_results`` in the node's counters; a merge that waited out
  its patience counts ``merge_timeouts``).
- **Watermarks**, so that a replicated node may feed another: each copy of the consumer
  merges the results of every copy of the producer, but a producer's copy sends a seq to one
  consumer copy only. So a ``Distributor`` that sends seq ``s`` to one copy tells the others
  that nothing below ``s`` comes from it any more (``codec.MARK``: a message of its own on
  ZeroMQ and tcp edges, a word of the ring's header on the fast path; a copy with older
  messages waiting in its ``drop_oldest`` mailbox is told the oldest one's seq; a copy whose
  message was dropped is told too), and the merge goes past an empty edge whose watermark
  is at or above the head it would deliver. A copy's distributor sends them always; another
  producer's (a camera spreading over the copies of the first replicated node) only to a
  copy that asked (``InputEdge.ask_marks``): a node feeding a replicated node asks its
  inputs, and passes on (``worker._pass_marks``) the least over its inputs of the first
  message waiting for ``process`` or else what that input said, so an idle copy (its frames
  went to a sibling, or were dropped) holds no merge downstream. That assumes a node sends,
  while it processes a message, messages of that seq (``Message.derive``); a result that
  comes after all below a watermark is counted late, as above. The patience stays as the
  fallback (a copy that sends nothing for long).

Statistics: each instance reports its own (``faces[0]``, ``faces[1]``); the table adds a
line with the group's totals (``pipeline.runtime.table``).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from pipeline.errors import TransportError
from pipeline.messages import Message
from pipeline.transport.channels import EdgeSender, InputEdge, RuntimeOutput, _Pending

__all__ = [
    "MERGE_WAIT_S",
    "NO_MORE",
    "Distributor",
    "MergedInput",
    "connect_senders",
    "instance_id",
    "instance_ids",
    "merge_inputs",
    "sockets_of",
    "split_instance",
]

log = logging.getLogger("pipeline.replicas")

MERGE_WAIT_S = 2.0  # the least a merge waits for a silent copy before the others go on
WAIT_SLICE_MS = 3  # a distributor waiting for a credit looks at every copy this often
NO_MORE = (1 << 63) - 1  # a merge whose every edge ended: nothing at all comes any more
_INSTANCE = re.compile(r"^(?P<group>[A-Za-z_][A-Za-z0-9_-]*)\[(?P<k>\d+)\]$")


def instance_id(node_id: str, k: int, replicas: int) -> str:
    """The id of copy ``k`` of a node: ``faces[0]``; the node's own id when it has one copy."""
    return node_id if replicas == 1 else f"{node_id}[{k}]"


def instance_ids(node_id: str, replicas: int) -> list[str]:
    return [instance_id(node_id, k, replicas) for k in range(replicas)]


def split_instance(node_id: str) -> tuple[str, int] | None:
    """``faces[1]`` -> ``("faces", 1)``; None for a node that is not a copy (a graph id
    cannot hold brackets, so there is no confusion)."""
    m = _INSTANCE.match(node_id)
    return (m["group"], int(m["k"])) if m else None


def group_of(node_id: str) -> str:
    found = split_instance(node_id)
    return found[0] if found else node_id


# spreading ---------------------------------------------------------------------------------
class Distributor(EdgeSender):
    """The edges of one output port to every copy of a replicated consumer's input, as one
    ``EdgeSender``: each message goes to one copy (see the module docstring)."""

    def __init__(self, senders: Sequence[EdgeSender]) -> None:
        subs = sorted(senders, key=lambda s: (split_instance(s.plan.consumer) or ("", 0))[1])
        self.subs = subs
        first = subs[0].plan
        self.plan = dataclasses.replace(first, consumer=group_of(first.consumer))
        self.name = self.plan.name
        self.endpoint = ""
        self.queue = first.queue
        self.policy = first.when_full
        self.by_seq = first.spread == "seq"
        self.tcp = any(s.tcp for s in subs)
        self.has_shm = any(not s.tcp for s in subs)
        self.turn = 0
        self.ended = False
        self._blocked_s = 0.0  # waiting for a credit of any copy
        self.unreported_drops = 0
        self.n = 0
        # watermarks: a copy's distributor sends them always (the next node's copies merge
        # its results), another only to a copy that asked (``InputEdge.ask_marks``: it
        # passes them on)
        self.marks_unasked = split_instance(first.producer) is not None

    # what RuntimeOutput reads of its edges -----------------------------------------------
    @property
    def inflight(self) -> collections.deque[tuple[int, list[Any]]]:
        out: collections.deque[tuple[int, list[Any]]] = collections.deque()
        for s in self.subs:
            out.extend(s.inflight)
        return out

    @inflight.setter
    def inflight(self, value: collections.deque[tuple[int, list[Any]]]) -> None:
        pass  # each copy's edge keeps its own

    @property
    def waiting(self) -> collections.deque[_Pending]:
        out: collections.deque[_Pending] = collections.deque()
        for s in self.subs:
            out.extend(s.waiting)
        return out

    @waiting.setter
    def waiting(self, value: collections.deque[_Pending]) -> None:
        pass  # each copy's edge keeps its own

    @property
    def dropped(self) -> int:
        return sum(s.dropped for s in self.subs)

    @dropped.setter
    def dropped(self, value: int) -> None:
        for s in self.subs:
            s.dropped = value

    @property
    def blocked_s(self) -> float:
        return self._blocked_s + sum(s.blocked_s for s in self.subs)

    @blocked_s.setter
    def blocked_s(self, value: float) -> None:
        self._blocked_s = value
        for s in self.subs:
            s.blocked_s = value

    # flow control ------------------------------------------------------------------------
    def collect(self) -> None:
        for s in self.subs:
            s.collect()

    def wait_release(self, timeout_ms: int) -> bool:
        """Up to ``timeout_ms`` for a release on any copy's edge.

        It sleeps on one edge at a time (an edge's wait is its own: a socket, or the fast
        path's doorbell): the copy given a message longest ago (next in turn), whose credit
        is likeliest to come first, in slices of ``WAIT_SLICE_MS`` (1 ms where a copy's queue
        is 1: its copy would idle while a release waits to be seen), looking at the others'
        releases between slices without waiting. (It used to sleep 1 ms on each busy copy in
        turn: twice the wake-ups with two copies, a CPU cost of 1.4 ms per frame for the
        source of a CenterFace graph, ``benchmarks/cluster.py --replicas``.)"""
        subs = self.subs
        busy = [s for s in subs if s.inflight]
        if not busy:
            return False
        if len(busy) == 1:
            return busy[0].wait_release(timeout_ms)
        first = subs[self.turn] if subs[self.turn].inflight else busy[0]
        others = [s for s in busy if s is not first]
        slice_ms = 1 if min(s.queue for s in busy) < 2 else WAIT_SLICE_MS
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if first.wait_release(max(0, min(slice_ms, left_ms))):
                return True
            for s in others:
                held = len(s.inflight)
                s.collect()
                if len(s.inflight) < held:
                    return True
            if left_ms <= slice_ms:
                return False

    def _free(self) -> EdgeSender | None:
        """The next copy in turn with a free credit (and nothing waiting for one)."""
        subs = self.subs
        count = len(subs)
        for i in range(count):
            k = (self.turn + i) % count
            s = subs[k]
            if len(s.inflight) < s.queue and not s.waiting:
                self.turn = (k + 1) % count
                return s
        return None

    def offer(self, item: _Pending) -> None:
        self.n += 1
        subs = self.subs
        for s in subs:
            s.collect()
        target = subs[item.seq % len(subs)] if self.by_seq else self._choose()
        target.offer(item)
        self.advance(item.seq)  # the copies that did not get it (nor drop it) learn so

    def advance(self, seq: int) -> None:
        """Nothing below ``seq`` comes on this port any more (it was just sent to one copy;
        or the node's inputs said so and it processed what came before): a watermark to
        every copy not yet told (``EdgeSender.advance``: a copy sent ``seq`` was told by
        the message; one with older messages in its ``drop_oldest`` mailbox is told the
        oldest one's seq); a copy of another producer than a copy only if it asked."""
        if seq < 0 or self.ended:
            return
        unasked = self.marks_unasked
        for s in self.subs:
            if unasked or s.wants_marks:
                s.advance(seq)

    @property
    def marks_sent(self) -> int:
        return sum(s.marks_sent for s in self.subs)

    @marks_sent.setter
    def marks_sent(self, value: int) -> None:
        pass  # each copy's edge counts its own

    def _choose(self) -> EdgeSender:
        """The copy of ``spread: free``: the next with a free credit; else ``block`` waits
        for one, and a drop policy takes the next in turn (its edge applies the policy)."""
        subs = self.subs
        target = self._free()
        if target is None and self.policy == "block":
            t0 = time.perf_counter()
            while target is None:
                self.wait_release(100)
                target = self._free()
            self._blocked_s += time.perf_counter() - t0
        if target is None:  # a drop policy: the next copy's edge applies it
            target = subs[self.turn]
            self.turn = (self.turn + 1) % len(subs)
        return target

    def send_eos(self) -> None:
        for s in self.subs:
            if not s.ended:
                s.send_eos()
        self.ended = True

    def close(self, linger_ms: int = 0) -> None:
        for s in self.subs:
            s.close(linger_ms)


def connect_senders(out: RuntimeOutput, senders: Sequence[EdgeSender]) -> None:
    """Connect an output port's edges, those to the copies of one replicated input (planned
    with a ``spread``) gathered into one ``Distributor`` each."""
    groups: dict[tuple[str, str], list[EdgeSender]] = {}
    for sender in senders:
        plan = sender.plan
        if not plan.spread:
            out.connect(sender)
            continue
        groups.setdefault((group_of(plan.consumer), plan.input), []).append(sender)
    for group in groups.values():
        dist = Distributor(group)
        out.connect(dist)
        out.has_shm = out.has_shm or dist.has_shm  # a mix of machines: both bodies are needed


# merging -----------------------------------------------------------------------------------
class MergedInput(InputEdge):
    """The edges from every copy of a replicated producer into one input, as one
    ``InputEdge`` delivering their messages in seq order (see the module docstring)."""

    def __init__(
        self, edges: Sequence[InputEdge], count: Callable[[str, int], None] | None = None
    ) -> None:
        self.edges = sorted(edges, key=lambda e: (split_instance(e.plan.producer) or ("", 0))[1])
        for edge in self.edges:  # the copies of a producer send their watermarks unasked
            edge.takes_marks = True
        first = self.edges[0].plan
        self.plan = dataclasses.replace(
            first, producer=group_of(first.producer), queue=sum(e.plan.queue for e in edges)
        )
        self.name = self.plan.name
        self.port = first.input
        self.tcp = any(e.tcp for e in self.edges)
        self.sock = self.edges[0].sock
        self.endpoint = ""
        self.key = ""
        self.ended = False
        self._count = count
        count_edges = len(self.edges)
        self.heads: list[collections.deque[tuple[Message, int, int]]] = [
            collections.deque() for _ in range(count_edges)
        ]
        # per edge, its messages not yet given back, in order, and those the node is done with
        self._held: list[collections.deque[int]] = [collections.deque() for _ in range(count_edges)]
        self._done: list[set[int]] = [set() for _ in range(count_edges)]
        self._tokens: dict[int, tuple[int, int]] = {}
        self.n = 0
        self._drops = 0  # to report with the next message delivered
        self._error: TransportError | None = None
        self.last_seq: int | None = None
        self.late = 0
        self.passed_over = 0
        self._stalled_since: float | None = None
        self._last_arrival = [0.0] * count_edges
        self._max_gap = 0.0
        self._pick: int | None = None
        self._passed: set[int] = set()  # edges the merge went on without, until they speak

    @property
    def socks(self) -> list[Any]:
        return [e.sock for e in self.edges]

    @property
    def malformed(self) -> int:
        return sum(e.malformed for e in self.edges)

    @malformed.setter
    def malformed(self, value: int) -> None:
        pass

    def ask_marks(self) -> None:
        pass  # the copies of a replicated producer send them unasked

    def read_mark(self) -> int:
        """Nothing below this comes out of the merge any more: the least, over the edges
        that have not ended, of the head waiting or the edge's watermark as of its last
        look (a later one could be above messages not yet taken); a large number once every
        edge ended."""
        low = NO_MORE
        for i, edge in enumerate(self.edges):
            if edge.ended:
                continue
            q = self.heads[i]
            seq = q[0][0].seq if q else edge.mark
            if seq < low:
                low = seq
        return low

    @property
    def patience_s(self) -> float:
        return max(MERGE_WAIT_S, 4 * self._max_gap)

    def _pull(self) -> None:
        """Take whatever has arrived on every edge (without blocking)."""
        now = time.monotonic()
        for i, edge in enumerate(self.edges):
            edge.read_mark()  # before the messages: every one below it is in already
            while not edge.ended and edge.has_message():
                try:
                    message, n, dropped, t_send = edge.recv()
                except TransportError as exc:
                    if self._error is None:
                        self._error = exc
                    continue
                self._drops += dropped
                if message is None:
                    if n < 0:
                        continue  # a watermark: now in edge.mark
                    break  # end of stream
                if self._last_arrival[i]:
                    self._max_gap = max(self._max_gap, now - self._last_arrival[i])
                self._last_arrival[i] = now
                self._held[i].append(n)
                if self.last_seq is not None and message.seq < self.last_seq:
                    # its turn passed while the merge waited no more: too late for the order
                    self.late += 1
                    self._drops += 1
                    if self._count is not None:
                        self._count("late_results", 1)
                    self._give_back(i, n)
                    continue
                self.heads[i].append((message, n, t_send))
                self._passed.discard(i)

    def _ready(self) -> int | None:
        """The edge whose head goes next; -1 at the end of every edge; None: not yet."""
        heads = self.heads
        edges = self.edges
        best = -1
        for i, q in enumerate(heads):
            if q and (best < 0 or q[0][0].seq < heads[best][0][0].seq):
                best = i
        if best < 0:  # nothing waits: the end, once every edge has ended
            return -1 if all(e.ended for e in edges) else None
        seq = heads[best][0][0].seq
        # an edge with nothing waiting holds the merge, unless it ended, or was passed over,
        # or its watermark says that nothing below this seq comes on it any more
        empty_live = any(
            not q and not edges[i].ended and i not in self._passed and edges[i].mark < seq
            for i, q in enumerate(heads)
        )
        if not empty_live:
            self._stalled_since = None
            return best
        now = time.monotonic()
        if self._stalled_since is None:
            self._stalled_since = now
            return None
        waited = now - self._stalled_since
        if waited < self.patience_s:
            return None
        self._stalled_since = None
        self.passed_over += 1
        if self._count is not None:
            self._count("merge_timeouts", 1)
        self._passed.update(i for i, q in enumerate(heads) if not q and not self.edges[i].ended)
        if self.passed_over == 1 or self.passed_over % 100 == 0:
            log.warning(
                "input %r: a copy of %r sent nothing for %.1f s while the others had results: "
                "going on without it (%d times so far)",
                self.port,
                self.plan.producer,
                waited,
                self.passed_over,
            )
        return best

    def has_message(self) -> bool:
        if self.ended:
            return False
        if self._pick is None:
            self._pull()
            self._pick = self._ready()
        return self._pick is not None or self._error is not None

    def may_sleep(self) -> bool:
        return all([e.may_sleep() for e in self.edges])

    def _take_error(self) -> TransportError | None:
        exc, self._error = self._error, None
        return exc

    def recv(self) -> tuple[Message | None, int, int, int]:
        """The next message in seq order (a malformed one on an edge raises here, once)."""
        exc = self._take_error()
        if exc is None and self._pick is None:
            self.has_message()
            exc = self._take_error()
        if exc is not None:
            raise exc
        pick, self._pick = self._pick, None
        if pick is None:
            raise TransportError(f"edge {self.name}: recv() with no message waiting")
        drops, self._drops = self._drops, 0
        if pick < 0:
            self.ended = True
            return None, self.n, drops, 0
        message, n, t_send = self.heads[pick].popleft()
        self._stalled_since = None
        self.n += 1
        self._tokens[self.n] = (pick, n)
        self.last_seq = message.seq
        return message, self.n, drops, t_send

    def release(self, n: int) -> None:
        found = self._tokens.pop(n, None)
        if found is not None:
            self._give_back(*found)

    def _give_back(self, i: int, n: int) -> None:
        """Message ``n`` of edge ``i`` is done with; give back, in order, every message of
        that edge before which all are done (a release is cumulative)."""
        held, done, edge = self._held[i], self._done[i], self.edges[i]
        done.add(n)
        while held and held[0] in done:
            first = held.popleft()
            done.discard(first)
            edge.release(first)

    def flush_releases(self) -> None:
        for edge in self.edges:
            edge.flush_releases()

    def close(self) -> None:
        for edge in self.edges:
            edge.close()


def merge_inputs(
    inputs: Sequence[InputEdge], count: Callable[[str, int], None] | None = None
) -> list[InputEdge]:
    """A node's input edges, those from the copies of one replicated producer into one input
    gathered into one ``MergedInput`` each (in the place of the first of them)."""
    out: list[InputEdge] = []
    groups: dict[tuple[str, str, str], list[InputEdge]] = {}
    for edge in inputs:
        found = split_instance(edge.plan.producer)
        if found is None:
            out.append(edge)
            continue
        key = (found[0], edge.plan.output, edge.plan.input)
        if key not in groups:
            groups[key] = []
            out.append(edge)  # a placeholder, replaced below
        groups[key].append(edge)
    merged = {id(group[0]): MergedInput(group, count) for group in groups.values()}
    return [merged.get(id(edge), edge) for edge in out]


def sockets_of(edge: InputEdge) -> list[Any]:
    """What the worker's poller waits on for an input edge."""
    return edge.socks if isinstance(edge, MergedInput) else [edge.sock]

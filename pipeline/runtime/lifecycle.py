"""The one lifecycle sequence of a node, for the runtime's worker and for ``run_node``.

``NodeDriver`` calls ``open``, then ``process`` (a source: until ``EndOfStream`` or a stop;
a consumer: once per joined input set), ``flush`` and ``close`` - close also after a failure,
never after a failed open. It keeps the statistics of every call (calls, busy time, process
and latency histograms, received, dropped, queue peaks), moves through ``NodeState``, and
records the first failure as a ``NodeError`` naming the method and the input seq.

Where the messages come from is the caller's business: the worker reads ZeroMQ edges and
releases each message's credit after ``process``; ``run_node`` feeds lists. Both push into a
``Joiner`` through ``push`` and let ``drain`` call ``process`` for every ready set.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from pipeline.errors import NodeError, NodeOpenError, NodeProcessError
from pipeline.messages import Message
from pipeline.node import EndOfStream, Node
from pipeline.runtime.join import Joiner, Streams
from pipeline.runtime.pacing import FramePacer, pace_rate
from pipeline.runtime.protocol import NodeState
from pipeline.runtime.stats import StatsCollector

__all__ = ["CallScoped", "NodeDriver"]

T = TypeVar("T")

CHECK_INTERVAL_S = 0.01  # how often a source's loop looks at its control socket
BATCH_QUIET_S = 0.002  # a partial batch goes once nothing new arrived for this long


class CallScoped(Protocol):
    """An output port that reclaims what was allocated during one ``process`` call."""

    def end_call(self) -> None: ...


READ_ONLY_HINT = (
    " (inputs are read-only views of shared memory: copy the array first, "
    "image = frames.image.copy(), or write into a buffer from "
    "self.<output>.allocate(shape, dtype) and send that)"
)


class ActivityLike(Protocol):
    """Where a driver notes the call it is in (``pipeline.runtime.activity.Activity``)."""

    def begin(self, method: str, seq: int | None = None) -> None: ...

    def end(self) -> None: ...


class _NoActivity:
    def begin(self, method: str, seq: int | None = None) -> None:
        pass

    def end(self) -> None:
        pass


class NodeDriver:
    """Runs one node's lifecycle and keeps its statistics.

    Args:
        node: the node instance (built with its ports).
        stats: where the counters go.
        ports: the node's output ports (``end_call`` after every call).
        connected: the input ports that have an edge; the others are passed as ``None``.
        trace: when given, the name of every lifecycle call is appended (``run_node``).
        pace: a source's pace, ``realtime`` or ``fast`` (see ``pipeline.runtime.pacing``).
        max_fps: a source's cap on ``process()`` calls per second.
        activity: told the method and seq of every call as it starts and ends, so that a
            supervisor sees a node that hangs (the worker's activity board).
    """

    def __init__(
        self,
        node: Node,
        stats: StatsCollector,
        ports: Sequence[CallScoped] = (),
        connected: Iterable[str] = (),
        trace: list[str] | None = None,
        pace: str = "realtime",
        max_fps: float | None = None,
        activity: ActivityLike | None = None,
    ) -> None:
        self.node = node
        self.pace = pace
        self.max_fps = max_fps
        self.pacer: FramePacer | None = None
        self.activity: ActivityLike = activity or _NoActivity()
        self.stats = stats
        self.ports = list(ports)
        self.trace = trace
        linked = set(connected)
        self.unconnected: dict[str, None] = {p: None for p in type(node).inputs if p not in linked}
        self.state = NodeState.CREATED
        self.opened = False
        self.seq: int | None = None  # of the input set being processed
        self.source = ""
        self.failure: NodeError | None = None
        self.exception: BaseException | None = None
        self.traceback = ""
        self.batch = (1, 0.0)  # (max_batch, timeout_s) of a streams input
        self.batch_due: float | None = None  # when a partial batch waiting must go

    # states --------------------------------------------------------------------------------
    def enter(self, state: NodeState) -> None:
        self.state = self.state.advance(state)
        self.stats.state = state.value

    def _fail(self, method: str, exc: BaseException) -> None:
        kind = NodeOpenError if method == "open" else NodeProcessError
        seq = self.seq if method == "process" else None
        source = self.source if method == "process" else ""
        cause = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, ValueError) and "read-only" in str(exc):
            cause += READ_ONLY_HINT
            if hasattr(exc, "add_note"):  # Python 3.11+: shown with the traceback too
                exc.add_note(READ_ONLY_HINT.strip(" ()"))
        error = kind(self.node.id, method, cause, seq, source)
        error.__cause__ = exc
        self.failure = error
        self.exception = exc
        self.traceback = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.stats.t_end = time.monotonic()
        self.enter(NodeState.FAILED)

    # the sequence ----------------------------------------------------------------------------
    def open(self) -> bool:
        """``open()``; False when it raised (``failure`` says why; nothing else is called)."""
        self.enter(NodeState.OPENING)
        if self.trace is not None:
            self.trace.append("open")
        self.activity.begin("open")
        try:
            self.node.open()
            if self.node.is_source():
                # A source's own rate is known once it is open (a video file's frame rate).
                own = self.node.frame_rate() if self.pace == "realtime" else None
                rate = pace_rate(self.pace, own, self.max_fps)
                self.pacer = FramePacer(rate) if rate else None
        except Exception as exc:
            self._fail("open", exc)
            return False
        finally:
            self.activity.end()
        self.opened = True
        if any(spec.streams for spec in type(self.node).inputs.values()):
            try:
                max_batch, timeout_s = self.node.batching()
                if int(max_batch) < 1 or float(timeout_s) < 0:
                    raise ValueError(
                        f"batching() must return (max_batch >= 1, timeout_s >= 0), "
                        f"got {(max_batch, timeout_s)!r}"
                    )
            except Exception as exc:
                self._fail("open", exc)
                return False
            self.batch = (int(max_batch), float(timeout_s))
        self.enter(NodeState.READY)
        return True

    def run(self, feed: Callable[[], None]) -> bool:
        """Start, let ``feed`` call ``process`` until the inputs end, then ``flush()``.

        Returns False when a method raised; ``failure`` names it and the input seq.
        """
        self.enter(NodeState.RUNNING)
        self.stats.t_start = time.monotonic()
        method = "process"
        try:
            feed()
            method = "flush"
            self.enter(NodeState.FLUSHING)
            self.seq = None
            self.source = ""
            if self.trace is not None:
                self.trace.append("flush")
            self.activity.begin("flush")
            self.node.flush()
            self.activity.end()
            self._end_call()
        except Exception as exc:
            self.activity.end()
            self._fail(method, exc)
            return False
        return True

    def close(self) -> bool:
        """``close()``, once, if ``open()`` succeeded; False if the node has failed.

        An exception from ``close()`` is the node's failure when nothing failed before;
        after an earlier failure it is only logged (the first error is the one reported).
        """
        if self.opened:
            self.opened = False
            if self.trace is not None:
                self.trace.append("close")
            self.activity.begin("close")
            try:
                self.node.close()
            except Exception as exc:
                if self.failure is None:
                    self._fail("close", exc)
                else:
                    self.node.log.exception("close() raised after an earlier failure")
            finally:
                self.activity.end()
        if self.stats.t_end is None:
            self.stats.t_end = time.monotonic()
        return self.failure is None

    def finish(self) -> None:
        """The end of stream went out on every output: the node is closed."""
        self.enter(NodeState.CLOSED)

    def _end_call(self) -> None:
        for port in self.ports:
            port.end_call()

    # sources -----------------------------------------------------------------------------------
    def run_source(
        self, tick: Callable[[], bool] | None = None, max_calls: int | None = None
    ) -> None:
        """Call a source's ``process()`` until ``EndOfStream``, ``max_calls``, or until
        ``tick()`` (called about every 10 ms) answers True (a stop).

        A paced source waits for each call's time before it; the wait counts as busy time
        of the call (the bench tells a pacing source from a busy one by its CPU time).
        """
        node = self.node
        stats = self.stats
        trace = self.trace
        pacer = self.pacer
        activity = self.activity
        perf = time.perf_counter
        next_check = 0.0
        n = 0
        while True:
            if tick is not None:
                now = time.monotonic()
                if now >= next_check:
                    next_check = now + CHECK_INTERVAL_S
                    if tick():
                        return
            if max_calls is not None and stats.calls >= max_calls:
                return
            t0 = perf()
            if pacer is not None and not _wait_until(pacer.due(n), tick):
                return  # stopped while waiting for the next frame's time
            n += 1
            if trace is not None:
                trace.append("process")
            activity.begin("process")
            try:
                node.process()
            except EndOfStream:
                activity.end()
                self._end_call()
                return
            dt = perf() - t0
            activity.end()
            self._end_call()
            stats.calls += 1
            stats.busy_s += dt
            stats.process.add(dt)

    # consumers ---------------------------------------------------------------------------------
    def push(self, joiner: Joiner[T], port: str, message: Message, token: T) -> None:
        """One arrival on an input: counted, queued for the join."""
        stats = self.stats
        stats.received[port] += 1
        depth = joiner.push(port, message, token)
        if depth > stats.queue_peak[port]:
            stats.queue_peak[port] = depth

    def drain(self, joiner: Joiner[T], release: Callable[[T], None] | None = None) -> int:
        """Call ``process`` for every input set the joiner has ready; returns how many.

        ``release(token)`` is called for every message once the node is done with it
        (processed, or dropped because its partner in the join can never come).
        """
        if len(joiner.queues) == 1 and self.trace is None:
            return self._drain_one(joiner, release)
        stats = self.stats
        node = self.node
        trace = self.trace
        unconnected = self.unconnected
        activity = self.activity
        perf = time.perf_counter
        mono_ns = time.monotonic_ns
        processed = 0
        while True:
            ready, lost = joiner.pop()
            for port, token in lost:
                stats.dropped[port] += 1
                if release is not None:
                    release(token)
            if ready is None:
                return processed
            kwargs: dict[str, Any] = dict(unconnected)
            t_capture = 0
            for port, (message, _) in ready.items():
                kwargs[port] = message
                if message.t_capture_ns and (not t_capture or message.t_capture_ns < t_capture):
                    t_capture = message.t_capture_ns
            first = next(iter(ready.values()))[0]
            self.seq = first.seq
            self.source = first.source
            del first
            if trace is not None:
                trace.append("process")
            activity.begin("process", self.seq)
            t0 = perf()
            node.process(**kwargs)
            dt = perf() - t0
            end_ns = mono_ns()
            activity.end()
            kwargs.clear()
            self._end_call()
            if release is not None:
                for _, token in ready.values():
                    release(token)
            ready = None
            processed += 1
            stats.calls += 1
            stats.busy_s += dt
            stats.process.add(dt)
            if t_capture:
                stats.latency.add((end_ns - t_capture) * 1e-9)

    def _drain_one(self, joiner: Joiner[T], release: Callable[[T], None] | None) -> int:
        """``drain`` for a node with one connected input (the usual case): nothing to join,
        so each arrival is a ready set; the same calls, counts and releases, less work."""
        ((port, queue),) = joiner.queues.items()
        stats = self.stats
        process = self.node.process
        unconnected = self.unconnected
        activity = self.activity
        ports = self.ports
        perf = time.perf_counter
        mono_ns = time.monotonic_ns
        add_process = stats.process.add
        add_latency = stats.latency.add
        processed = 0
        while queue:
            message, token = queue.popleft()
            seq = self.seq = message.seq
            self.source = message.source
            t_capture = message.t_capture_ns
            activity.begin("process", seq)
            t0 = perf()
            if unconnected:
                process(**unconnected, **{port: message})
            else:
                process(**{port: message})
            dt = perf() - t0
            end_ns = mono_ns()  # the latency ends with process(), not with the book-keeping
            activity.end()
            message = None  # type: ignore[assignment]  # the node is done with it
            for out in ports:
                out.end_call()
            if release is not None:
                release(token)
            processed += 1
            stats.calls += 1
            stats.busy_s += dt
            add_process(dt)
            if t_capture:
                add_latency((end_ns - t_capture) * 1e-9)
        return processed

    # a streams input -------------------------------------------------------------------------
    def push_stream(self, streams: Streams[T], stream: str, message: Message, token: T) -> None:
        """One arrival on one stream of a streams input: counted, queued."""
        stats = self.stats
        port = streams.port
        stats.received[port] += 1
        depth = streams.push(stream, message, token, time.monotonic())
        if depth > stats.queue_peak[port]:
            stats.queue_peak[port] = depth

    def drain_streams(self, streams: Streams[T], release: Callable[[T], None] | None = None) -> int:
        """Call ``process`` (or ``process_batch``) for what the streams have waiting,
        round-robin; returns how many messages were processed.

        With ``max_batch > 1`` a batch goes when it is full, when every live stream has a
        message waiting, when the streams ended, when nothing new arrived for
        ``BATCH_QUIET_S`` (a node that keeps up runs what came; one that is busy finds full
        batches waiting), or when the oldest waited ``timeout_s``; otherwise ``batch_due``
        says when to come back.
        """
        stats = self.stats
        node = self.node
        port = streams.port
        max_batch, timeout_s = self.batch
        perf = time.perf_counter
        mono_ns = time.monotonic_ns
        processed = 0
        self.batch_due = None
        while streams.waiting:
            partial = max_batch > 1 and streams.waiting < max_batch and timeout_s > 0
            if partial and not (
                streams.every_live_stream_waits() or len(streams.ended) == len(streams.queues)
            ):
                oldest, newest = streams.oldest(), streams.newest()
                assert oldest is not None
                assert newest is not None
                due = min(oldest + timeout_s, newest + min(timeout_s, BATCH_QUIET_S))
                if time.monotonic() < due:
                    self.batch_due = due
                    return processed
            taken = streams.take(max_batch)
            first = taken[0][0]
            self.seq = first.seq
            self.source = first.source
            del first
            if self.trace is not None:
                self.trace.append("process")
            t0 = perf()
            if max_batch == 1:
                node.process(**{port: taken[0][0]})
            else:
                node.process_batch(**{port: [m for m, _ in taken]})
            dt = perf() - t0
            self._end_call()
            now_ns = mono_ns()
            for message, token in taken:
                if message.t_capture_ns:
                    stats.latency.add((now_ns - message.t_capture_ns) * 1e-9)
                if release is not None:
                    release(token)
            processed += len(taken)
            taken.clear()
            stats.calls += 1
            stats.busy_s += dt
            stats.process.add(dt)
        return processed


def _wait_until(due: float, tick: Callable[[], bool] | None) -> bool:
    """Sleep until ``due`` (monotonic), asking ``tick`` every 50 ms; False if it said stop."""
    while True:
        delay = due - time.monotonic()
        if delay <= 0:
            return True
        time.sleep(min(delay, 0.05))
        if tick is not None and delay > 0.05 and tick():
            return False

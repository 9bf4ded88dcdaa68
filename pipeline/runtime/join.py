"""Joining several inputs on the source frame's ``seq``, shared by the runtime and the harness.

Each input keeps a FIFO of arrivals (in seq order, as every edge delivers them). A set is
ready when every input's head has the same seq. A head whose seq is below another input's
head can never be matched (its partner was dropped or filtered upstream): it is dropped and
counted. When an input has ended, whatever waits on the others can never be matched either.

A streams input (several upstreams of one port, e.g. cameras into one detector) is not
joined: ``Streams`` serves its upstreams round-robin, one message at a time or in batches.
"""

from __future__ import annotations

import collections
from typing import Generic, TypeVar

from pipeline.messages import Message

__all__ = ["Joiner", "Streams"]

T = TypeVar("T")


class Joiner(Generic[T]):
    """Queues per input of ``(message, token)``; ``token`` is what the caller must release."""

    def __init__(self, inputs: list[str]) -> None:
        self.queues: dict[str, collections.deque[tuple[Message, T]]] = {
            name: collections.deque() for name in inputs
        }
        self.ended: set[str] = set()

    def push(self, port: str, message: Message, token: T) -> int:
        """Queue an arrival; returns the input's queue length."""
        q = self.queues[port]
        q.append((message, token))
        return len(q)

    def end(self, port: str) -> None:
        self.ended.add(port)

    @property
    def all_ended(self) -> bool:
        return len(self.ended) == len(self.queues) and not any(self.queues.values())

    def pop(self) -> tuple[dict[str, tuple[Message, T]] | None, list[tuple[str, T]]]:
        """The next ready set (or None) and the arrivals dropped on the way (port, token)."""
        dropped: list[tuple[str, T]] = []
        queues = self.queues
        if len(queues) == 1:
            ((port, q),) = queues.items()
            return ({port: q.popleft()} if q else None), dropped
        while True:
            empty = [p for p, q in queues.items() if not q]
            if empty:
                if any(p in self.ended for p in empty):
                    for p, q in queues.items():
                        while q:
                            dropped.append((p, q.popleft()[1]))
                return None, dropped
            top = max(q[0][0].seq for q in queues.values())
            behind = False
            for p, q in queues.items():
                while q and q[0][0].seq < top:
                    dropped.append((p, q.popleft()[1]))
                    behind = True
            if not behind:
                return {p: q.popleft() for p, q in queues.items()}, dropped


class Streams(Generic[T]):
    """The queues of a streams input, one per upstream (stream), served round-robin.

    Nothing is joined: ``take(n)`` hands out up to ``n`` waiting arrivals, one from each
    stream in turn starting after the stream served last, so a stream with a backlog never
    starves the others and a stalled one holds nobody up. Each stream stays in its order.
    """

    def __init__(self, port: str, streams: list[str]) -> None:
        self.port = port
        self.queues: dict[str, collections.deque[tuple[Message, T, float]]] = {
            name: collections.deque() for name in streams
        }
        self.order = list(self.queues)
        self.turn = 0
        self.ended: set[str] = set()
        self.waiting = 0

    def push(self, stream: str, message: Message, token: T, now: float) -> int:
        """Queue an arrival (at monotonic time ``now``); returns the stream's queue length."""
        q = self.queues[stream]
        q.append((message, token, now))
        self.waiting += 1
        return len(q)

    def end(self, stream: str) -> None:
        self.ended.add(stream)

    @property
    def all_ended(self) -> bool:
        return len(self.ended) == len(self.queues) and not self.waiting

    def every_live_stream_waits(self) -> bool:
        """Every stream that has not ended has a message waiting (a batch cannot grow by
        waiting for another stream)."""
        return all(q or name in self.ended for name, q in self.queues.items())

    def newest(self) -> float | None:
        """The arrival time of the latest message waiting, None when none waits."""
        tails = [q[-1][2] for q in self.queues.values() if q]
        return max(tails) if tails else None

    def oldest(self) -> float | None:
        """The arrival time of the longest-waiting message, None when none waits."""
        heads = [q[0][2] for q in self.queues.values() if q]
        return min(heads) if heads else None

    def take(self, n: int) -> list[tuple[Message, T]]:
        """Up to ``n`` waiting arrivals, round-robin over the streams."""
        out: list[tuple[Message, T]] = []
        order = self.order
        count = len(order)
        empty_in_a_row = 0
        while len(out) < n and self.waiting and empty_in_a_row < count:
            q = self.queues[order[self.turn]]
            self.turn = (self.turn + 1) % count
            if q:
                message, token, _ = q.popleft()
                self.waiting -= 1
                out.append((message, token))
                empty_in_a_row = 0
            else:
                empty_in_a_row += 1
        return out

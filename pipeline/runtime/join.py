"""Joining several inputs on the source frame's ``seq``, shared by the runtime and the harness.

Each input keeps a FIFO of arrivals (in seq order, as every edge delivers them). A set is
ready when every input's head has the same seq. A head whose seq is below another input's
head can never be matched (its partner was dropped or filtered upstream): it is dropped and
counted. When an input has ended, whatever waits on the others can never be matched either.
"""

from __future__ import annotations

import collections
from typing import Generic, TypeVar

from pipeline.messages import Message

__all__ = ["Joiner"]

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

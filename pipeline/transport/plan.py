"""What the transport needs to know about an edge and an output port, decided once.

``pipeline.runtime.plan`` computes these from a validated graph; the supervisor sends them
to each worker (``to_wire``/``from_wire``: plain values, JSON or msgpack), and the transport
(``pipeline.transport.channels``) takes nothing else. Nothing here knows about graph files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal

__all__ = ["EdgePlan", "PortPlan", "edge_name", "release_batch", "slot_pool_size"]

WhenFull = Literal["block", "drop_oldest", "drop_newest"]
Transport = Literal["shm", "tcp"]


def edge_name(producer: str, output: str, consumer: str, input: str) -> str:
    """``producer/output->consumer.input``: how logs, errors and the wiring name an edge."""
    return f"{producer}/{output}->{consumer}.{input}"


def release_batch(queue: int, when_full: str) -> int:
    """How many releases a consumer may hold back before sending them as one credit.

    On a lossless edge of queue N up to N/2 (one message instead of N/2, and the producer
    still has credits in hand); on a drop edge every release goes at once, for freshness.
    """
    return max(1, queue // 2) if when_full == "block" else 1


@dataclasses.dataclass(frozen=True)
class EdgePlan:
    """One edge, planned: its two ends, its flow control and where the consumer binds.

    Attributes:
        producer, output: the sending node and its output port.
        consumer, input: the receiving node and its input port.
        queue: messages in flight (not yet released) before ``when_full`` applies.
        when_full: ``block``, ``drop_oldest`` or ``drop_newest``.
        transport: ``shm`` (descriptors, arrays in shared memory) or ``tcp`` (buffers as frames).
        release_batch: releases the consumer may batch into one credit message.
        bind: the address the consumer binds (``ipc://...`` or ``tcp://host:*``); the actual
            endpoint, known after binding, reaches the producer through the supervisor.
        source: when set, the producer sends on this edge only the messages of that source
            (one camera's results out of a node serving several); the others are not sent.
        spread: empty for an ordinary edge; on an edge to one copy of a replicated node
            (``pipeline.runtime.replicas``), how the producer chooses the copy of each
            message among the edges of the group: ``free`` (the next copy with a free
            credit) or ``seq`` (copy ``seq mod N``: the node joins several inputs).
    """

    producer: str
    output: str
    consumer: str
    input: str
    queue: int
    when_full: WhenFull
    transport: Transport
    release_batch: int
    bind: str
    source: str = ""
    spread: Literal["", "free", "seq"] = ""

    @property
    def name(self) -> str:
        return edge_name(self.producer, self.output, self.consumer, self.input)

    @property
    def tcp(self) -> bool:
        return self.transport == "tcp"

    @property
    def slots(self) -> int:
        """Shared-memory slots this edge can hold at once (a drop_oldest mailbox doubles it)."""
        return self.queue * (2 if self.when_full == "drop_oldest" else 1)

    def to_wire(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> EdgePlan:
        return cls(**d)


def slot_pool_size(edges: Sequence[EdgePlan]) -> int:
    """Slots of an output port's pool: what its edges can hold, two in the making, doubled
    for messages whose slots are released while new ones are being filled."""
    return 2 * (2 + sum(e.slots for e in edges))


@dataclasses.dataclass(frozen=True)
class PortPlan:
    """One output port: its edges and the size of its slot pool."""

    port: str
    edges: tuple[EdgePlan, ...]
    slots: int

    def to_wire(self) -> dict[str, Any]:
        return {"port": self.port, "edges": [e.to_wire() for e in self.edges], "slots": self.slots}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> PortPlan:
        return cls(d["port"], tuple(EdgePlan.from_wire(e) for e in d["edges"]), int(d["slots"]))

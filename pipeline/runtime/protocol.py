"""The control protocol between the supervisor and its node workers, and a node's states.

Every control message is a small frozen dataclass; ``encode`` and ``decode`` are the one
place where one becomes bytes (msgpack: ``{"t": kind, **fields}``) and back. A message
whose kind or fields are unknown is a ``ProtocolError``, never silently ignored.

Worker -> supervisor: ``Hello`` (the endpoints it bound), ``Ready`` (opened), ``OpenFailed``,
``StatsReport`` (twice a second), ``Failed`` (a lifecycle method raised), ``Done``,
``Rewired`` (it reconnected edges to a restarted consumer), ``Rebound`` (it bound inputs
anew, their producer placed on another machine).
Supervisor -> worker: ``Wiring`` (where its outputs connect), ``Start``, ``Stop`` (a source
ends its stream), ``Reset`` (statistics afresh), ``Abort`` (unwind now), ``Rewire`` (a
consumer was restarted: connect again, count what was in flight), ``InputEnded`` (to a
restarted node: these producers had already ended their streams), ``ProducerDied`` (to the
consumers of a node that died: what it had sent on their edges), ``Rebind`` (to a consumer
whose producer was placed again on another machine: bind those inputs anew, of the kind the
new placement plans).

To add a kind: write a dataclass here, decorate it with ``@control("kind")``, and handle it
in ``Worker.on_control`` (supervisor -> worker) or ``Supervisor.on_message`` (worker ->
supervisor); both dispatch on the class with ``match``.

``NodeState`` is the one set of states. The worker moves through them (``NodeState.advance``
refuses an impossible step) and reports them; the supervisor's view of each node follows the
same transitions.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

import msgpack

from pipeline.errors import PipelineError

__all__ = [
    "Abort",
    "ControlMessage",
    "Done",
    "Failed",
    "Hello",
    "InputEnded",
    "NodeState",
    "OpenFailed",
    "ProducerDied",
    "ProtocolError",
    "Ready",
    "Rebind",
    "Rebound",
    "Reset",
    "Rewire",
    "Rewired",
    "Start",
    "StatsReport",
    "Stop",
    "Wiring",
    "control",
    "decode",
    "encode",
]


class ProtocolError(PipelineError):
    """A control message that cannot be understood (unknown kind, wrong fields, bad state)."""


class NodeState(str, enum.Enum):
    """Where a node is in its lifecycle (the values are what statistics show)."""

    CREATED = "created"
    OPENING = "opening"
    READY = "ready"
    RUNNING = "running"
    FLUSHING = "flushing"
    CLOSED = "closed"
    FAILED = "failed"

    @property
    def ended(self) -> bool:
        return self in (NodeState.CLOSED, NodeState.FAILED)

    def reaches(self, new: NodeState) -> bool:
        """``new`` is this state or follows it through allowed steps (an observer that
        samples a node's state, like the supervisor, may miss the steps in between)."""
        seen = {self}
        todo = [self]
        while todo:
            for nxt in _TRANSITIONS[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return new in seen

    def advance(self, new: NodeState) -> NodeState:
        """``new`` if a node may go there from this state; raises ProtocolError otherwise."""
        if new is not self and new not in _TRANSITIONS[self]:
            raise ProtocolError(f"a node cannot go from {self.value} to {new.value}")
        return new


_TRANSITIONS: dict[NodeState, frozenset[NodeState]] = {
    NodeState.CREATED: frozenset({NodeState.OPENING, NodeState.FAILED}),
    NodeState.OPENING: frozenset({NodeState.READY, NodeState.FAILED}),
    # READY -> CLOSED: aborted before the start
    NodeState.READY: frozenset({NodeState.RUNNING, NodeState.CLOSED, NodeState.FAILED}),
    NodeState.RUNNING: frozenset({NodeState.FLUSHING, NodeState.FAILED}),
    NodeState.FLUSHING: frozenset({NodeState.CLOSED, NodeState.FAILED}),
    NodeState.CLOSED: frozenset(),
    NodeState.FAILED: frozenset(),
}


class ControlMessage:
    """Base of every control message; ``kind`` is its name on the wire."""

    kind: ClassVar[str] = ""
    _names: ClassVar[tuple[str, ...]] = ()

    def to_wire(self) -> dict[str, Any]:
        d = {name: getattr(self, name) for name in self._names}
        d["t"] = self.kind
        return d


_KINDS: dict[str, type[ControlMessage]] = {}
C = TypeVar("C", bound=type[ControlMessage])


def control(kind: str) -> Callable[[C], C]:
    """Register a frozen dataclass as the control message ``kind``."""

    def register(cls: C) -> C:
        if kind in _KINDS:
            raise ValueError(f"control message kind {kind!r} is already {_KINDS[kind].__name__}")
        cls.kind = kind
        cls._names = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
        _KINDS[kind] = cls
        return cls

    return register


_packb = msgpack.Packer(use_bin_type=True).pack


def encode(message: ControlMessage) -> bytes:
    """The message as bytes for a control socket."""
    data: bytes = _packb(message.to_wire())
    return data


def decode(data: bytes) -> ControlMessage:
    """A message from a control socket's bytes.

    Raises:
        ProtocolError: not msgpack, an unknown kind, or fields that do not fit the kind.
    """
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise ProtocolError(f"a control message is not msgpack: {exc}") from None
    if not isinstance(raw, dict):
        raise ProtocolError(f"a control message is a map, got {type(raw).__name__}")
    kind = raw.pop("t", None)
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError(f"unknown control message kind {kind!r}; known: {', '.join(_KINDS)}")
    try:
        return cls(**raw)
    except TypeError as exc:
        raise ProtocolError(f"control message {kind!r}: {exc}") from None


# worker -> supervisor ------------------------------------------------------------------------


@control("hello")
@dataclasses.dataclass(frozen=True)
class Hello(ControlMessage):
    """The worker bound its inputs: edge name -> endpoint to connect to, and for tcp edges
    the CURVE server key a producer needs to get in (``keys``)."""

    endpoints: Mapping[str, str]
    keys: Mapping[str, str] = dataclasses.field(default_factory=dict)


@control("ready")
@dataclasses.dataclass(frozen=True)
class Ready(ControlMessage):
    """``open()`` returned: the node waits for ``Start``."""


@control("open_failed")
@dataclasses.dataclass(frozen=True)
class OpenFailed(ControlMessage):
    """Building or opening the node raised: nothing else of it was called."""

    error: str
    tb: str


@control("stats")
@dataclasses.dataclass(frozen=True)
class StatsReport(ControlMessage):
    """The node's statistics (``StatsCollector.to_wire()``), twice a second."""

    stats: Mapping[str, Any]


@control("error")
@dataclasses.dataclass(frozen=True)
class Failed(ControlMessage):
    """A lifecycle method raised: which one, on which input seq, and the traceback."""

    method: str
    seq: int | None
    source: str
    error: str
    tb: str
    stats: Mapping[str, Any] | None = None


@control("done")
@dataclasses.dataclass(frozen=True)
class Done(ControlMessage):
    """The node flushed, closed and sent end of stream on every output."""

    stats: Mapping[str, Any]


@control("rewired")
@dataclasses.dataclass(frozen=True)
class Rewired(ControlMessage):
    """The producer connected these edges to their restarted consumers (``Rewire``)."""

    edges: list[str]


@control("rebound")
@dataclasses.dataclass(frozen=True)
class Rebound(ControlMessage):
    """The consumer bound these input edges anew (``Rebind``): edge name -> endpoint, and
    for tcp edges the key a producer needs, as in ``Hello``."""

    endpoints: Mapping[str, str]
    keys: Mapping[str, str] = dataclasses.field(default_factory=dict)


# supervisor -> worker ------------------------------------------------------------------------


@control("wiring")
@dataclasses.dataclass(frozen=True)
class Wiring(ControlMessage):
    """Where the node's output edges connect: edge name -> endpoint (and the consumer's CURVE
    server key for a tcp edge)."""

    endpoints: Mapping[str, str]
    keys: Mapping[str, str] = dataclasses.field(default_factory=dict)


@control("start")
@dataclasses.dataclass(frozen=True)
class Start(ControlMessage):
    """Every node is ready: run."""


@control("stop")
@dataclasses.dataclass(frozen=True)
class Stop(ControlMessage):
    """A source ends its stream (the graph then drains)."""


@control("reset")
@dataclasses.dataclass(frozen=True)
class Reset(ControlMessage):
    """Start the statistics afresh (the end of a bench's warm-up)."""


@control("abort")
@dataclasses.dataclass(frozen=True)
class Abort(ControlMessage):
    """Unwind now: close the node and exit."""


@control("rewire")
@dataclasses.dataclass(frozen=True)
class Rewire(ControlMessage):
    """The consumers of these edges were restarted: connect to their new endpoints (and
    CURVE keys, for tcp). ``delivered``: edge name -> the last message number the dead
    consumer was done with; what was in flight after it is counted as lost."""

    endpoints: Mapping[str, str]
    keys: Mapping[str, str]
    delivered: Mapping[str, int]


@control("input_ended")
@dataclasses.dataclass(frozen=True)
class InputEnded(ControlMessage):
    """To a restarted node: the producers of these input edges had already sent end of
    stream to its previous incarnation; take it as this one's."""

    edges: list[str]


@control("producer_died")
@dataclasses.dataclass(frozen=True)
class ProducerDied(ControlMessage):
    """To the consumer of a node that died and is restarted: the last message number the
    dead incarnation sent on each of these edges (its progress file). What the consumer
    never received of those (a ZeroMQ edge's queue, lost with the process) it counts as
    ``lost_on_restart``."""

    sent: dict[str, int]


@control("rebind")
@dataclasses.dataclass(frozen=True)
class Rebind(ControlMessage):
    """To a consumer that kept running: the producer of these input edges died and is placed
    again on another machine, where the edges take another transport (shared memory from a
    producer now on the consumer's machine, tcp from one now elsewhere). ``edges``: each
    edge's new plan (``EdgePlan.to_wire()``). The consumer binds each anew, reads what the
    dead producer left in the old socket first, and answers ``Rebound``."""

    edges: list[dict[str, Any]]

"""The control protocol: one encode/decode for every kind; unknown kinds and impossible
state changes are errors, not ignored."""

from __future__ import annotations

import msgpack
import pytest

from pipeline.runtime import protocol as p
from pipeline.runtime.protocol import NodeState, ProtocolError

EVERY_KIND = [
    p.Hello({"cam/frames->sink.frames": "ipc:///tmp/x"}),
    p.Ready(),
    p.OpenFailed("OSError: no such file", "Traceback ..."),
    p.StatsReport({"node_id": "a", "calls": 3}),
    p.Failed("process", 12, "cam", "ValueError: bad", "Traceback ...", {"calls": 1}),
    p.Failed("flush", None, "", "ValueError: bad", "Traceback ..."),
    p.Done({"node_id": "a"}),
    p.Wiring({"cam/frames->sink.frames": "ipc:///tmp/x"}),
    p.Start(),
    p.Stop(),
    p.Reset(),
    p.Abort(),
    p.Rewire({"a/o->b.i": "unix:///tmp/x.dg"}, {}, {"a/o->b.i": 41}),
    p.Rewired(["a/o->b.i"]),
    p.InputEnded(["a/o->b.i"]),
    p.ProducerDied({"a/o->b.i": (1 << 40) + 7}),
    p.Rebind(
        [
            {
                "producer": "a",
                "output": "o",
                "consumer": "b",
                "input": "i",
                "queue": 4,
                "when_full": "block",
                "transport": "shm",
                "release_batch": 2,
                "bind": "ipc:///tmp/run/1-i",
                "source": "",
                "spread": "",
            }
        ]
    ),
    p.Rebound({"a/o->b.i": "unix:///tmp/run/1-i.dg"}),
]


@pytest.mark.parametrize("message", EVERY_KIND, ids=lambda m: m.kind)
def test_every_kind_survives_the_wire(message):
    assert p.decode(p.encode(message)) == message


def test_kinds_are_distinct_names_on_the_wire():
    kinds = [type(m).kind for m in EVERY_KIND]
    assert len(set(kinds)) == len({type(m) for m in EVERY_KIND}) == 17


def test_an_unknown_kind_is_an_error_naming_it():
    with pytest.raises(ProtocolError, match="unknown control message kind 'pause'"):
        p.decode(msgpack.packb({"t": "pause"}))


def test_wrong_fields_are_an_error():
    with pytest.raises(ProtocolError, match="'hello'"):
        p.decode(msgpack.packb({"t": "hello", "endpoint": "x"}))
    with pytest.raises(ProtocolError, match="not msgpack"):
        p.decode(b"\xc1")
    with pytest.raises(ProtocolError, match="a map"):
        p.decode(msgpack.packb([1, 2]))


def test_a_kind_is_registered_once():
    with pytest.raises(ValueError, match="already"):
        p.control("stop")(type("Other", (p.ControlMessage,), {}))


def test_states_move_only_forward():
    s = NodeState.CREATED
    for step in (NodeState.OPENING, NodeState.READY, NodeState.RUNNING, NodeState.FLUSHING):
        s = s.advance(step)
    assert s.advance(NodeState.CLOSED) is NodeState.CLOSED
    with pytest.raises(ProtocolError, match="from running to opening"):
        NodeState.RUNNING.advance(NodeState.OPENING)
    with pytest.raises(ProtocolError, match="from created to running"):
        NodeState.CREATED.advance(NodeState.RUNNING)  # one step at a time
    assert NodeState.CREATED.reaches(NodeState.RUNNING)  # an observer may miss steps
    assert not NodeState.CLOSED.reaches(NodeState.RUNNING)
    assert NodeState.FAILED.ended and NodeState.CLOSED.ended and not NodeState.RUNNING.ended

"""Watermarks between copies of two replicated nodes (``pipeline.runtime.replicas``): an
upstream copy that sends a seq to one downstream copy tells the others that nothing below it
comes from it any more, so their merges go on at once instead of waiting (``patience_s``)
for a seq that went to a sibling. On each transport an edge can take: ZeroMQ (``inproc``,
as ``ipc``), the same-host fast path (a word of the ring's header) and a sealed tcp edge."""

from __future__ import annotations

import secrets
import select
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from pipeline.messages import Frame
from pipeline.runtime import replicas
from pipeline.runtime.replicas import Distributor, MergedInput
from pipeline.transport import codec
from pipeline.transport.channels import EdgeSender, InputEdge, RuntimeOutput
from pipeline.transport.fastpath import UnixEdgeSender, UnixInputEdge, open_input, open_sender
from pipeline.transport.plan import EdgePlan, WhenFull
from pipeline.transport.shm import ShmReader
from tests.pipeline.runtime.test_replicas import Wires  # the same edges, output and close

TRANSPORTS = ["zmq", "fast", "tcp"]


class Copies(Wires):
    """``a[0..N-1] -> b[0..M-1]``: every pair an edge of one transport, each ``a[i]``'s
    port a ``Distributor``, each ``b[j]``'s input a ``MergedInput``; all in this process."""

    def __init__(self, folder: Path, transport: str) -> None:
        super().__init__()
        self.folder = folder
        self.transport = transport
        self.counted: dict[str, int] = {}

    def bind(self) -> str:
        """Where the next edge's consumer binds, on this transport."""
        if self.transport == "tcp":
            return "tcp://127.0.0.1:*"
        if self.transport == "fast":
            return f"ipc://{self.folder}/{secrets.token_hex(4)}"
        return ""  # inproc

    def edge(self, plan: EdgePlan) -> tuple[EdgeSender, InputEdge]:
        if self.transport == "fast":
            consumer = open_input(None, plan, self.reader)
            assert isinstance(consumer, UnixInputEdge)
            sender = open_sender(None, plan, consumer.endpoint)
            assert isinstance(sender, UnixEdgeSender)
        else:
            consumer = InputEdge(self.ctx, plan, self.reader)
            sender = EdgeSender(self.ctx, plan, consumer.endpoint, consumer.key)
        self.inputs.append(consumer)
        return sender, consumer

    def build(
        self,
        producers: int,
        consumers: int,
        spread: str = "free",
        queue: int = 8,
        when: WhenFull = "block",
        names: list[str] | None = None,
    ) -> tuple[list[RuntimeOutput], list[MergedInput]]:
        into: list[list[InputEdge]] = [[] for _ in range(consumers)]
        outs = []
        for i in range(producers):
            senders = []
            name = names[i] if names else f"a[{i}]"
            for j in range(consumers):
                sender, edge = self.edge(
                    self.plan(name, f"b[{j}]", queue, spread, when, self.bind())
                )
                senders.append(sender)
                into[j].append(edge)
            outs.append(self.output(senders))
        merged = [MergedInput(edges, self.count) for edges in into]
        return outs, merged

    def count(self, name: str, n: int) -> None:
        self.counted[name] = self.counted.get(name, 0) + n


@pytest.fixture(params=TRANSPORTS)
def copies(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch) -> Iterator[Copies]:
    # a merge that waited for its patience would show in passed_over / merge_timeouts; make
    # it long enough that a test which needed it would time out instead of passing slowly
    monkeypatch.setattr(replicas, "MERGE_WAIT_S", 60.0)
    made = Copies(tmp_path, request.param)
    yield made
    made.close()


def send(out: RuntimeOutput, seq: int) -> None:
    image = out.allocate((64, 128, 3))  # 24 KB: in shared memory (tcp: a frame of its own)
    image[:] = seq % 256
    out.send(Frame(image=image, seq=seq, t_capture_ns=1, source="cam"))
    out.end_call()


def ready(merged: MergedInput, timeout_s: float = 5.0) -> bool:
    """Whether the merge has something to deliver within ``timeout_s``, sleeping on its
    sockets as the worker does."""
    deadline = time.monotonic() + timeout_s
    while not merged.has_message():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if merged.may_sleep():
            select.select(merged.socks, [], [], min(left, 0.05))
    return True


def take(merged: MergedInput) -> Frame | None:
    assert ready(merged), f"the merge of {merged.name} did not go on"
    message, n, _, _ = merged.recv()
    if message is not None:
        merged.release(n)
        merged.flush_releases()
    assert message is None or isinstance(message, Frame)
    return message


def test_a_seq_sent_to_a_sibling_does_not_hold_the_merge(copies):
    # by seq: a[0] gets the even seqs and sends them all to b[0]; a[1] the odd ones, all to
    # b[1]: b[0] never hears a message from a[1], only its watermarks
    (a0, a1), (b0, b1) = copies.build(2, 2, spread="seq")
    for seq in range(6):
        send(a0 if seq % 2 == 0 else a1, seq)
    assert [take(b0).seq for _ in range(3)] == [0, 2, 4]
    assert [take(b1).seq for _ in range(2)] == [1, 3]
    # 5 waits at b[1]: a[0] said "nothing below 4", and its next may be below 5
    assert not ready(b1, 0.05)
    send(a0, 6)  # to b[0]; a watermark of 6 to b[1]
    assert take(b1).seq == 5
    assert not ready(b0, 0.05)  # 6 waits for a[1], which said "nothing below 5"
    for out in (a0, a1):
        out.send_eos()
    assert take(b0).seq == 6
    assert take(b0) is None and take(b1) is None
    assert b0.passed_over == b1.passed_over == 0 and b0.late == b1.late == 0
    assert copies.counted == {}  # no merge_timeouts, no late_results
    # one watermark per message to the copy that did not get it, none to the one that did
    marks = [out.edges[0].marks_sent for out in (a0, a1)]
    assert isinstance(a0.edges[0], Distributor) and marks == [4, 3]


def test_copies_spreading_freely_deliver_every_seq_once_in_order(copies):
    (a0, a1), (b0, b1) = copies.build(2, 2, spread="free", queue=64)
    for seq in range(40):  # a[0] and a[1] take turns in runs of different lengths
        send(a0 if (seq // 3) % 2 == 0 else a1, seq)
    for out in (a0, a1):
        out.send_eos()
    seen: list[list[int]] = [[], []]
    for k, merged in enumerate((b0, b1)):
        while (message := take(merged)) is not None:
            seen[k].append(message.seq)
    assert seen[0] == sorted(seen[0]) and seen[1] == sorted(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(40)) and seen[0] and seen[1]
    assert b0.passed_over == b1.passed_over == 0 and copies.counted == {}


def take_counted(merged: MergedInput) -> tuple[int, int]:
    """(seq, drops reported with it) of the next message."""
    assert ready(merged)
    message, n, dropped, _ = merged.recv()
    assert message is not None
    merged.release(n)
    merged.flush_releases()
    return message.seq, dropped


def credits_back(out: RuntimeOutput) -> None:
    """Wait until the copies gave every credit of ``out`` back (a tcp release takes a while)."""
    dist = out.edges[0]
    assert isinstance(dist, Distributor)
    deadline = time.monotonic() + 5
    while any(s.inflight for s in dist.subs):
        assert time.monotonic() < deadline, "the credits did not come back"
        dist.wait_release(10)


def test_a_seq_dropped_for_a_full_copy_does_not_hold_its_merge(copies):
    # drop_newest, queue 1, by seq: a copy's edge that is full drops the seq and hears a
    # watermark instead, so the drop holds no merge
    (a0, a1), (b0, b1) = copies.build(2, 2, spread="seq", queue=1, when="drop_newest")
    send(a0, 0)
    send(a0, 2)  # b[0]'s edge from a[0] still holds 0: dropped, a watermark of 2 instead
    assert not ready(b0, 0.05)  # a[1] has said nothing yet: it may still send seq 0
    send(a1, 1)  # to b[1]; "nothing below 1" to b[0]
    assert take_counted(b0) == (0, 0)
    send(a1, 3)  # b[1]'s edge from a[1] still holds 1: dropped
    credits_back(a0)
    send(a0, 4)  # to b[0], whose credit is back
    assert not ready(b0, 0.05)  # a[1] said "nothing below 3": 4 waits for it
    assert take_counted(b1) == (1, 0)
    credits_back(a1)
    send(a1, 5)  # to b[1]; "nothing below 5" to b[0]
    assert take_counted(b0) == (4, 1)  # the drop of 2 comes with a[0]'s next message
    assert not ready(b1, 0.05)  # 5 waits: a[0] said "nothing below 4" to b[1]
    credits_back(a0)
    send(a0, 6)
    assert take_counted(b1) == (5, 1)  # the drop of 3 comes with a[1]'s next message
    assert b0.passed_over == b1.passed_over == 0 and copies.counted == {}


def test_a_copy_with_messages_in_its_mailbox_is_told_no_more_than_the_oldest(copies):
    # drop_oldest keeps messages waiting at the producer: a watermark overtaking them must
    # not say more than the oldest waiting one's seq
    (a0,), _ = copies.build(1, 2, spread="seq", queue=1, when="drop_oldest")
    send(a0, 0)  # to b[0]
    send(a0, 2)  # waits in b[0]'s mailbox
    dist = a0.edges[0]
    assert isinstance(dist, Distributor) and len(dist.subs[0].waiting) == 1
    send(a0, 3)  # to b[1]; b[0] may be told 2 at most, not 3
    assert dist.subs[0].marked == 2


def test_a_watermark_on_an_edge_that_is_not_spread_is_refused(tmp_path):
    ctx: zmq.Context[Any] = zmq.Context()
    reader = ShmReader()
    plan = EdgePlan("cam", "frames", "sink", "frames", 2, "block", "shm", 1, "inproc://wm-x")
    edge = InputEdge(ctx, plan, reader)
    raw = ctx.socket(zmq.PAIR)
    raw.connect(edge.endpoint)
    try:
        raw.send(codec.envelope(codec.MARK, 7, 0, 1))
        assert edge.sock.poll(5000)
        with pytest.raises(codec.MalformedMessage, match="watermark on an edge not spread"):
            edge.recv()
        edge.takes_marks = True
        raw.send(codec.envelope(codec.MARK, 7, 0, 1) + b"more")
        assert edge.sock.poll(5000)
        with pytest.raises(codec.MalformedMessage, match="bytes after its envelope"):
            edge.recv()
        raw.send(codec.envelope(codec.MARK, 7, 0, 1))
        assert edge.sock.poll(5000)
        assert edge.recv() == (None, -1, 0, 1) and edge.mark == 7 and not edge.ended
        assert edge.malformed == 2
    finally:
        raw.close(linger=0)
        edge.close()
        reader.close()
        ctx.term()


def test_the_envelope_knows_the_watermark_kind_and_refuses_a_negative_one():
    assert codec.unpack_envelope(codec.envelope(codec.MARK, 5, 0, 9)) == (codec.MARK, 5, 0, 9)
    with pytest.raises(codec.MalformedMessage, match="negative"):
        codec.unpack_envelope(codec.envelope(codec.MARK, -2, 0, 9))
    with pytest.raises(codec.MalformedMessage, match="unknown message kind"):
        codec.unpack_envelope(codec.envelope(b"X", 5, 0, 9))


def test_a_producer_that_is_no_copy_sends_watermarks_only_to_a_copy_that_asked(copies):
    # a camera spreading over the copies of a node: only a copy that passes watermarks on
    # (it feeds another replicated node) asks for them; the other hears none
    (cam,), (b0, b1) = copies.build(1, 2, spread="seq", names=["cam"])
    plain = [m.edges[0] for m in (b0, b1)]
    dist = cam.edges[0]
    assert isinstance(dist, Distributor) and not dist.marks_unasked
    plain[1].ask_marks()
    deadline = time.monotonic() + 5
    while not dist.subs[1].wants_marks:  # the request travels like a release
        assert time.monotonic() < deadline
        plain[1].has_message()  # the fast path's ring comes with the first look
        plain[1].read_mark()  # a tcp edge: asked again until its handshake is done
        dist.collect()
        time.sleep(0.001)
    for seq in range(4):
        send(cam, seq)
    assert dist.marks_sent == 2  # 0 and 2 told to copy 1; nothing to copy 0
    assert [take(b1).seq for _ in range(2)] == [1, 3] and plain[1].mark == 2
    assert [take(b0).seq for _ in range(2)] == [0, 2] and plain[0].mark == -1


def test_a_copy_tells_an_unreplicated_consumer_it_has_nothing_below_a_seq(copies):
    # copies feeding one node (plain edges, no spread): a copy that has processed up to
    # seq 5 and sent nothing (its node's inputs said so: worker._pass_marks) tells the
    # merge, which then delivers the other copy's 3 without waiting for it
    (a0, a1), (sink,) = copies.build(2, 1, spread="")
    assert not any(isinstance(out.edges[0], Distributor) for out in (a0, a1))
    send(a0, 3)
    assert not ready(sink, 0.05)  # a[1] may still send 0, 1 or 2
    a1.edges[0].advance(5)
    assert take(sink).seq == 3
    a1.edges[0].advance(5)  # nothing new: not sent again
    send(a1, 5)
    a1.edges[0].advance(5)  # its message said as much: nothing sent
    a0.edges[0].advance(5)  # a[0] is past 5 too: the merge may deliver a[1]'s 5
    assert [out.edges[0].marks_sent for out in (a0, a1)] == [1, 1]
    assert take(sink).seq == 5
    assert sink.passed_over == 0 and copies.counted == {}

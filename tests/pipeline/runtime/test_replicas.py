"""Replicated nodes at the transport level, in one process over ``inproc://``: the
``Distributor`` (each message to exactly one copy: the next with a free credit, or by seq)
and the ``MergedInput`` (the copies' results back in seq order); and how the planner expands
a node of ``replicas: N``."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from pipeline.graph.load import check_graph, load_graph
from pipeline.messages import Frame
from pipeline.runtime import replicas
from pipeline.runtime.plan import plan_graph
from pipeline.runtime.replicas import Distributor, MergedInput, connect_senders, split_instance
from pipeline.runtime.stats import InputStats, NodeStats, OutputStats
from pipeline.runtime.table import render_table
from pipeline.transport.channels import EdgeSender, InputEdge, RuntimeOutput
from pipeline.transport.plan import EdgePlan, WhenFull, slot_pool_size
from pipeline.transport.shm import ShmReader, SlotPool


class Wires:
    """Edges between named ends in this process; closes everything at the end."""

    def __init__(self) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.reader = ShmReader()
        self.inputs: list[InputEdge] = []
        self.outputs: list[RuntimeOutput] = []

    def plan(
        self,
        producer: str,
        consumer: str,
        queue: int = 2,
        spread: Any = "",
        when: WhenFull = "block",
        bind: str = "",
    ) -> EdgePlan:
        return EdgePlan(
            producer=producer,
            output="frames",
            consumer=consumer,
            input="frames",
            queue=queue,
            when_full=when,
            transport="tcp" if bind.startswith("tcp://") else "shm",
            release_batch=1,
            bind=bind or f"inproc://edge-{secrets.token_hex(4)}",
            spread=spread,
        )

    def edge(self, plan: EdgePlan) -> tuple[EdgeSender, InputEdge]:
        consumer = InputEdge(self.ctx, plan, self.reader)
        self.inputs.append(consumer)
        return EdgeSender(self.ctx, plan, consumer.endpoint), consumer

    def output(self, senders: list[EdgeSender]) -> RuntimeOutput:
        pool = SlotPool(
            f"pipeline-test-{secrets.token_hex(4)}",
            max_slots=slot_pool_size([s.plan for s in senders]),
        )
        out = RuntimeOutput("frames", pool, type=Frame)
        connect_senders(out, senders)
        self.outputs.append(out)
        return out

    def close(self) -> None:
        for out in self.outputs:
            out.close()
        for edge in self.inputs:
            edge.close()
        self.reader.close()
        self.ctx.term()


@pytest.fixture
def wires() -> Iterator[Wires]:
    made = Wires()
    yield made
    made.close()


def send(out: RuntimeOutput, seq: int) -> None:
    image = out.allocate((32, 64, 3))  # 6 KB: in shared memory
    image[:] = seq % 256
    out.send(Frame(image=image, seq=seq, t_capture_ns=1, source="cam"))
    out.end_call()


def take(edge: InputEdge, timeout_s: float = 5.0) -> tuple[Frame | None, int, int]:
    """The next message (or end of stream) on ``edge``; watermarks (an edge to a copy hears
    them from a distributor: tests/pipeline/runtime/test_watermarks.py) are passed over."""
    deadline = time.monotonic() + timeout_s
    while True:
        while not edge.has_message():
            assert time.monotonic() < deadline, f"nothing arrived on {edge.name}"
            edge.sock.poll(10) if not isinstance(edge, MergedInput) else time.sleep(0.001)
        message, n, dropped, _ = edge.recv()
        if message is not None or n >= 0:
            break
    assert message is None or isinstance(message, Frame)
    return message, n, dropped


def waiting(edge: InputEdge) -> bool:
    return bool(edge.sock.poll(0))


# spreading -----------------------------------------------------------------------------------
def test_each_message_goes_to_one_copy_preferring_the_next_with_a_free_credit(wires):
    a, in_a = wires.edge(wires.plan("cam", "det[0]", queue=2, spread="free"))
    b, in_b = wires.edge(wires.plan("cam", "det[1]", queue=2, spread="free"))
    out = wires.output([a, b])
    assert len(out.edges) == 1 and isinstance(out.edges[0], Distributor)
    assert out.edges[0].name == "cam/frames->det.frames"  # the group, as logs show it

    for seq in range(4):  # round-robin while both have credits
        send(out, seq)
    got_a = [take(in_a)[0].seq for _ in range(2)]
    got_b = [take(in_b)[0].seq for _ in range(2)]
    assert (got_a, got_b) == ([0, 2], [1, 3])
    # copy 0 holds its two (a slow copy); copy 1 gives its credits back: the next messages
    # all go to copy 1, and sending never waits for copy 0
    in_b.release(2)
    for seq in range(4, 6):
        send(out, seq)
    assert [take(in_b)[0].seq for _ in range(2)] == [4, 5]
    assert not waiting(in_a)  # not even a watermark: copy 0 did not ask for them
    assert a.n == 2 and b.n == 4  # sent per copy: every message exactly once

    # end of stream reaches every copy, after their messages
    in_a.release(2)
    in_b.release(4)
    out.send_eos()
    assert take(in_a)[0] is None and take(in_b)[0] is None


def test_a_node_joining_inputs_gets_each_seq_at_copy_seq_mod_n(wires):
    ends = [wires.edge(wires.plan("cam", f"j[{k}]", queue=8, spread="seq")) for k in range(3)]
    out = wires.output([s for s, _ in ends])
    for seq in (0, 1, 2, 3, 4, 7, 9):
        send(out, seq)
    out.send_eos()
    for k, (_, edge) in enumerate(ends):
        seqs = []
        while (message := take(edge)[0]) is not None:
            seqs.append(message.seq)
        assert seqs == [s for s in (0, 1, 2, 3, 4, 7, 9) if s % 3 == k]


def test_when_no_copy_has_a_credit_block_waits_for_the_first_that_frees_one(wires):
    import threading

    a, in_a = wires.edge(wires.plan("cam", "det[0]", queue=1, spread="free"))
    b, in_b = wires.edge(wires.plan("cam", "det[1]", queue=1, spread="free"))
    out = wires.output([a, b])
    send(out, 0)
    send(out, 1)
    done = threading.Event()
    t = threading.Thread(target=lambda: (send(out, 2), done.set()), daemon=True)
    t.start()
    assert not done.wait(0.2)  # both copies are full: the producer is held (back-pressure)
    take(in_a)
    _, n, _ = take(in_b)
    in_b.release(n)  # copy 1 frees its credit first
    assert done.wait(5)
    t.join()
    assert take(in_b)[0].seq == 2
    assert out.edges[0].blocked_s > 0


def test_a_producer_held_by_full_copies_sleeps_on_one_and_sees_any_release(wires):
    """Both copies full: the distributor sleeps on the copy given a message longest ago, in
    slices, and looks at the other's releases between them (it used to sleep 1 ms on each in
    turn: a wake-up every half millisecond, 1.4 ms of CPU per frame for a CenterFace
    graph's source); a release of the other copy still lets it go on."""
    import threading

    a, _ = wires.edge(wires.plan("cam", "det[0]", queue=2, spread="free"))
    b, in_b = wires.edge(wires.plan("cam", "det[1]", queue=2, spread="free"))
    out = wires.output([a, b])
    for seq in range(4):
        send(out, seq)
    calls = {"a": 0, "b": 0}
    for name, sender in (("a", a), ("b", b)):

        def counted(timeout_ms: int, name: str = name, inner: Any = sender.wait_release) -> bool:
            calls[name] += 1
            return bool(inner(timeout_ms))

        sender.wait_release = counted  # type: ignore[method-assign]
    done = threading.Event()
    t = threading.Thread(target=lambda: (send(out, 4), done.set()), daemon=True)
    t0 = time.monotonic()
    t.start()
    assert not done.wait(0.3)  # held
    held_s = time.monotonic() - t0
    # copy 0 is next in turn (given message 2 before copy 1 got 3): it is the one slept on
    assert calls["b"] == 0 and 0 < calls["a"] <= held_s * 1000 / replicas.WAIT_SLICE_MS + 2
    for _ in range(2):
        take(in_b)
    in_b.release(2)  # the other copy frees its credits
    assert done.wait(5)
    t.join()
    assert take(in_b)[0].seq == 4


# merging -------------------------------------------------------------------------------------
def merged_pair(wires: Wires, queue: int = 8) -> tuple[RuntimeOutput, RuntimeOutput, MergedInput]:
    a, in_a = wires.edge(wires.plan("det[0]", "sink", queue=queue))
    b, in_b = wires.edge(wires.plan("det[1]", "sink", queue=queue))
    counted: dict[str, int] = {}
    merged = MergedInput([in_b, in_a], lambda name, n: counted.update({name: n}))
    return wires.output([a]), wires.output([b]), merged


def test_the_merge_delivers_the_copies_results_in_seq_order(wires):
    out_a, out_b, merged = merged_pair(wires)
    assert merged.name == "det/frames->sink.frames"
    for seq in (0, 3, 4, 8):
        send(out_a, seq)
    for seq in (1, 2, 5, 6, 7, 9):
        send(out_b, seq)
    out_a.send_eos()
    out_b.send_eos()
    seqs = []
    while (message := take(merged)[0]) is not None:
        seqs.append(message.seq)
    assert seqs == list(range(10))
    assert merged.ended


def test_the_merge_waits_for_a_copy_that_has_not_answered_yet(wires):
    out_a, out_b, merged = merged_pair(wires)
    send(out_a, 1)
    send(out_a, 2)
    deadline = time.monotonic() + 5
    while not waiting_on(merged.edges[0]) and time.monotonic() < deadline:
        time.sleep(0.001)
    assert not merged.has_message()  # copy 1 may still be working on seq 0
    send(out_b, 0)
    send(out_b, 5)
    assert [take(merged)[0].seq for _ in range(3)] == [0, 1, 2]
    assert merged.passed_over == 0


def waiting_on(edge: InputEdge) -> bool:
    return bool(edge.sock.poll(0))


def test_a_silent_copy_does_not_stall_the_merge_and_its_late_result_is_dropped(wires, monkeypatch):
    monkeypatch.setattr(replicas, "MERGE_WAIT_S", 0.2)
    out_a, out_b, merged = merged_pair(wires)
    send(out_a, 1)
    send(out_a, 2)
    # copy 1 sends nothing for seq 0 (dropped upstream, or nothing to say): after the
    # merge's patience the others go on
    assert take(merged)[0].seq == 1
    assert take(merged)[0].seq == 2  # and it does not wait again for the same silent copy
    send(out_b, 0)  # too late for the order: dropped, counted with the next message
    send(out_b, 3)
    send(out_a, 4)
    message, _, dropped = take(merged)
    assert (message.seq, dropped, merged.late) == (3, 1, 1)
    assert merged.passed_over == 1
    # its credit went back all the same: copy 1's producer holds nothing for it
    merged.flush_releases()
    sender_b = out_b.edges[0]
    deadline = time.monotonic() + 5
    while len(sender_b.inflight) > 1 and time.monotonic() < deadline:
        sender_b.wait_release(10)
    assert [n for n, _ in sender_b.inflight] == [2]  # seq 3, still held by the node
    out_b.send_eos()
    assert take(merged)[0].seq == 4


def test_releases_go_back_to_each_copy_in_order(wires):
    out_a, out_b, merged = merged_pair(wires, queue=2)
    send(out_a, 0)
    send(out_a, 1)
    send(out_b, 2)
    tokens = [take(merged)[1] for _ in range(2)]
    merged.release(tokens[1])  # seq 1 first: seq 0 is still held, nothing goes back yet
    merged.flush_releases()
    sender_a = out_a.edges[0]
    sender_a.wait_release(50)
    assert len(sender_a.inflight) == 2
    merged.release(tokens[0])
    merged.flush_releases()
    deadline = time.monotonic() + 5
    while sender_a.inflight and time.monotonic() < deadline:
        sender_a.wait_release(10)
    assert not sender_a.inflight


# planning ------------------------------------------------------------------------------------
GRAPH = """\
graph: rep
nodes:
  - {id: cam, node: synthetic, params: {frames: 3}}
  - id: faces
    node: detector
    params: {model: face_short_range}
    replicas: 2
    inputs: {frames: cam/frames}
  - id: log
    node: jsonl
    params: {path: faces.jsonl}
    inputs: {messages: faces/detections}
  - id: boxes
    node: detector
    params: {model: face_short_range}
    inputs: {frames: cam/frames}
  - id: overlay
    node: overlay
    replicas: 3
    inputs: {frames: cam/frames, detections: boxes/detections}
  - id: sink
    node: jsonl
    params: {path: out.jsonl}
    inputs: {messages: overlay/annotated}
"""


def test_the_planner_makes_one_process_per_copy_and_an_edge_per_pair(tmp_path: Path):
    path = tmp_path / "g.yaml"
    path.write_text(GRAPH)
    graph = load_graph(path)
    plan = plan_graph(graph, tmp_path)
    ids = [n.node_id for n in plan.nodes]
    assert ids == [
        "cam",
        "faces[0]",
        "faces[1]",
        "log",
        "boxes",
        "overlay[0]",
        "overlay[1]",
        "overlay[2]",
        "sink",
    ]
    assert sorted(n.index for n in plan.nodes) == list(range(9))  # shm pools, activity slots
    assert [(n.replica, n.replicas) for n in plan.nodes if n.group == "overlay"] == [
        (0, 3),
        (1, 3),
        (2, 3),
    ]
    assert graph.node("faces[1]").id == "faces"  # its timeouts and placement are the node's
    edges = list(plan.edges())
    names = [e.name for e in edges]
    assert len(names) == len(set(names)) and len({e.bind for e in edges}) == len(edges)
    to_faces = [e for e in edges if e.consumer.startswith("faces")]
    assert {e.spread for e in to_faces} == {"free"}  # one input: the next free copy
    to_overlay = [e for e in edges if e.consumer.startswith("overlay")]
    assert {e.spread for e in to_overlay} == {"seq"}  # a join: by seq, the inputs meet
    # one edge per copy from each producer: 3 from boxes, 3 from cam
    assert len([e for e in to_overlay if e.input == "detections"]) == 3
    assert len([e for e in to_overlay if e.input == "frames"]) == 3
    # the copies' results come back to one node: an edge from each copy, merged there
    assert [e.spread for e in edges if e.consumer == "log"] == ["", ""]
    assert [e.spread for e in edges if e.consumer == "sink"] == ["", "", ""]
    assert all(split_instance(e.producer) for e in edges if e.consumer == "sink")


def test_a_replicated_node_fed_by_another_replicated_node_gets_an_edge_from_each_copy(
    tmp_path: Path,
):
    # once refused; the upstream copies' watermarks now tell each copy what went to its
    # siblings (tests/pipeline/runtime/test_watermarks.py)
    path = tmp_path / "g.yaml"
    path.write_text(GRAPH.replace("boxes/detections", "faces/detections"))
    graph, issues = check_graph(path)
    assert graph is not None and not [i for i in issues if i.severity == "error"], issues
    edges = plan_graph(load_graph(path), tmp_path).edges()
    pairs = [(e.producer, e.consumer, e.spread) for e in edges if e.input == "detections"]
    assert sorted(pairs) == [
        (f"faces[{i}]", f"overlay[{j}]", "seq") for i in range(2) for j in range(3)
    ]


def test_the_table_shows_each_copy_and_the_group_total():
    def row(node_id: str, received: int, fps_calls: int) -> NodeStats:
        return NodeStats(
            node_id=node_id,
            state="running",
            inputs={"frames": InputStats(received, 0, 2)},
            outputs={"detections": OutputStats(received, 0)},
            calls=fps_calls,
            process_ms={"p50_ms": 1.0, "p95_ms": 2.0},
            latency_ms={"p50_ms": 0.0, "p95_ms": 0.0},
            busy_s=0.1,
            elapsed_s=1.0,
            counters={},
        )

    text = render_table({"faces[0]": row("faces[0]", 30, 30), "faces[1]": row("faces[1]", 20, 20)})
    lines = text.splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["faces[0]", "faces[1]", "faces"]
    total = lines[3].split()
    assert total[:5] == ["faces", "(2", "copies)", "50", "50"]
    assert "50.0" in total


def test_a_drawing_marks_a_replicated_node_with_its_copies(tmp_path: Path):
    from pipeline.graph.draw import to_mermaid, to_svg

    path = tmp_path / "g.yaml"
    path.write_text(GRAPH)
    spec = load_graph(path).spec
    assert "detector x2" in to_mermaid(spec) and "overlay x3" in to_svg(spec)
    assert "synthetic x" not in to_mermaid(spec)

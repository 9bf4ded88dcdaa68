"""The parts of restart: policies that need no running graph: the table's column, the
statistics on the wire, the edge's accounting of a dead consumer, a cluster's re-planning."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import zmq

from pipeline import load_graph
from pipeline.errors import NodeCrashLoopError
from pipeline.messages import Detections
from pipeline.runtime.plan import Layout, plan_graph, rebind_candidates, replan_moved
from pipeline.runtime.stats import NodeStats, StatsCollector
from pipeline.runtime.table import render_table
from pipeline.transport import codec
from pipeline.transport.channels import EdgeSender, InputEdge, _Pending
from pipeline.transport.fastpath import UnixEdgeSender, UnixInputEdge
from pipeline.transport.plan import EdgePlan
from pipeline.transport.rebind import RebindingInput
from pipeline.transport.shm import ShmReader


def stats(node: str, restarts: int = 0) -> NodeStats:
    s = StatsCollector(node, ["frames"], ["out"]).snapshot(0.0)
    return dataclasses.replace(s, restarts=restarts)


def test_the_table_shows_restarts_once_a_node_restarted():
    quiet = render_table({"a": stats("a"), "b": stats("b")})
    assert "restarts" not in quiet
    table = render_table({"a": stats("a"), "b": stats("b", restarts=2), "c": None})
    header, row_a, row_b, _ = table.splitlines()
    assert header.split()[-1] == "restarts"
    assert row_a.split()[-1] == "0"
    assert row_b.split()[-1] == "2"


def test_restarts_cross_the_wire():
    s = stats("a", restarts=3)
    assert NodeStats.from_wire(s.to_wire()).restarts == 3
    assert s.to_dict()["restarts"] == 3


def test_crash_loop_message_names_the_node_the_count_and_the_last_error():
    error = NodeCrashLoopError("faces", 6, 60.0, 5, "node 'faces' was killed by SIGKILL")
    assert str(error) == (
        "node 'faces' is in a crash loop: it failed 6 times within 60 s (max_restarts: 5); "
        "its last error: node 'faces' was killed by SIGKILL"
    )
    assert error.node_id == "faces"


def item(seq: int = 0) -> _Pending:
    message = Detections(seq=seq)
    inline = [(k, a, "i", a.tobytes()) for k, a in message.wire_arrays().items()]
    return _Pending(codec.pack_body(message, inline), None, [], [])


def numbers_read(edge: Any) -> list[int]:
    """The message numbers ``edge`` gives, read as the worker's loop asks it."""
    numbers = []
    while edge.has_message() or not edge.may_sleep():
        if edge.has_message():
            numbers.append(edge.recv()[1])
    return numbers


def _plan(tmp_path: Path) -> EdgePlan:
    return EdgePlan("a", "o", "b", "i", 4, "block", "shm", 2, f"ipc://{tmp_path}/e")


def test_a_reconnected_edge_counts_what_the_dead_consumer_had_not_done(tmp_path):
    plan = _plan(tmp_path)
    reader = ShmReader()
    dead = UnixInputEdge(plan, reader)
    sender = UnixEdgeSender(plan, dead.endpoint)
    for _ in range(4):
        sender.offer(item())
    got = []
    while dead.has_message():
        got.append(dead.recv()[1])
    assert got == [1, 2, 3, 4]
    dead.close()  # it was done with 1 and 2 only (its progress file says so)
    new = UnixInputEdge(plan, reader)
    assert sender.reconnect(new.endpoint, "", delivered=2) == 2
    assert sender.lost == 2 and not sender.inflight
    sender.offer(item())
    assert new.has_message()
    assert new.recv()[1] == 5  # numbering goes on: late releases free nothing new
    sender.send_eos()
    assert new.has_message() and new.recv()[0] is None
    sender.close()
    new.close()


def test_a_restarted_producer_s_ring_is_taken_after_the_old_one_is_read(tmp_path):
    plan = _plan(tmp_path)
    edge = UnixInputEdge(plan, ShmReader())
    old = UnixEdgeSender(plan, edge.endpoint)
    old.offer(item())
    old.offer(item())
    assert edge.has_message()  # maps the first ring
    old.usock.close()  # it dies: its ring stays mapped by the consumer
    new = UnixEdgeSender(plan, edge.endpoint)
    new.n = 1 << 40
    new.offer(item())
    assert numbers_read(edge) == [1, 2, (1 << 40) + 1]
    edge.release((1 << 40) + 1)
    edge.flush_releases()
    new.collect()
    assert not new.inflight
    new.close()
    edge.close()


def test_an_ended_input_is_taken_as_ended(tmp_path):
    edge = UnixInputEdge(_plan(tmp_path), ShmReader())
    edge.end_now()
    assert edge.has_message() and not edge.may_sleep()
    assert edge.recv()[0] is None and edge.ended
    edge.close()


def test_a_moved_consumer_s_inputs_are_planned_anew_and_other_edges_kept(tmp_path):
    graph_file = tmp_path / "g.yaml"
    graph_file.write_text(
        "graph: g\n"
        "nodes:\n"
        "  - {id: camera, node: synthetic}\n"
        "  - {id: relay, node: color, params: {to: gray}, inputs: {frames: camera/frames}}\n"
        "  - {id: sink, node: discard, inputs: {messages: relay/converted}}\n"
    )
    graph = load_graph(graph_file)
    hosts = {"camera": "A", "relay": "B", "sink": "A"}
    addresses = {"A": "10.0.0.1", "B": "10.0.0.2"}

    def layout(where: dict[str, str]) -> Layout:
        return Layout(where, {n: addresses[h] for n, h in where.items()})

    before = plan_graph(graph, tmp_path, layout(hosts))
    fresh = plan_graph(graph, tmp_path, layout({**hosts, "relay": "A"}))
    after = replan_moved(before, fresh, "relay")
    edges = {e.name: e for e in after.edges()}
    into, out_of = "camera/frames->relay.frames", "relay/converted->sink.messages"
    assert {e.name: e.transport for e in before.edges()} == {into: "tcp", out_of: "tcp"}
    # the relay binds its input anew, on the camera's machine now: shared memory
    assert edges[into].transport == "shm" and edges[into].bind.startswith("ipc://")
    # the sink kept running: its socket stays, and the relay connects to it as it is
    assert edges[out_of] == {e.name: e for e in before.edges()}[out_of]
    # every node's plan agrees with the others' on each edge
    camera = next(n for n in after.nodes if n.node_id == "camera")
    assert camera.outputs[0].edges[0] == edges[into]


def test_a_sender_whose_consumer_changed_transport_hands_the_edge_over(tmp_path):
    ctx: zmq.Context[Any] = zmq.Context()
    reader = ShmReader()
    plan = _plan(tmp_path)
    zmq_plan = dataclasses.replace(plan, bind=f"ipc://{tmp_path}/z")
    old_consumer = InputEdge(ctx, zmq_plan, reader)
    sender = EdgeSender(ctx, zmq_plan, old_consumer.endpoint)
    for _ in range(3):
        sender.offer(item())
    sender.send_eos()
    old_consumer.close()
    new_consumer = UnixInputEdge(plan, reader)
    held = sender  # the port (or a waiting offer) holds this very object
    lost = sender.hand_over(UnixEdgeSender(plan, new_consumer.endpoint), delivered=1)
    assert lost == 2 and held.lost == 2 and not held.inflight
    assert isinstance(held, UnixEdgeSender)  # it became the new kind
    assert new_consumer.has_message() and new_consumer.recv()[0] is None  # its end again
    held.ended = False
    held.offer(item())
    assert new_consumer.has_message()
    assert new_consumer.recv()[1] == 4  # the numbering goes on
    # a message encoded for shared memory only cannot go on tcp: it is counted lost
    probe = EdgeSender.__new__(EdgeSender)
    probe.tcp = True
    assert held._carries(item()) and not probe._carries(item())
    held.close()
    new_consumer.close()
    ctx.term()


def test_a_consumer_counts_what_a_dead_producer_sent_that_never_arrived(tmp_path):
    # the counting is the InputEdge's, whatever the transport (a ZeroMQ edge is where a dead
    # producer's queue is lost; a fast-path edge takes a restarted producer's ring at once)
    plan = _plan(tmp_path)
    edge = UnixInputEdge(plan, ShmReader())

    def life(n0: int, count: int) -> None:
        sender = UnixEdgeSender(plan, edge.endpoint)
        sender.n = n0
        for _ in range(count):
            sender.offer(item())
        got = []
        while edge.has_message() or not edge.may_sleep():  # as the worker's loop asks
            if edge.has_message():
                got.append(edge.recv()[1])
        assert got == [n0 + k + 1 for k in range(count)]
        sender.close()  # it dies (its ring stays mapped by the consumer)

    life(0, 3)  # the first life: 1, 2, 3 arrived; it had sent 5 (two in its queue, lost)
    edge.producer_died(5)
    assert edge.lost_upstream == 0  # not yet: more of the dead one's may still come
    life(1 << 40, 1)  # the restarted producer's first message: nothing more is coming
    assert edge.lost_upstream == 2
    life(2 << 40, 1)
    edge.producer_died((1 << 40) + 1)  # the second life died: everything it sent arrived
    assert edge.lost_upstream == 2
    edge.close()


def _moving_graph(tmp_path: Path, replicas: int = 1) -> Any:
    graph_file = tmp_path / "g.yaml"
    graph_file.write_text(
        "graph: g\n"
        "nodes:\n"
        "  - {id: camera, node: synthetic}\n"
        "  - {id: relay, node: color, params: {to: gray}, inputs: {frames: camera/frames},"
        f" replicas: {replicas}}}\n"
        "  - {id: sink, node: discard, inputs: {messages: relay/converted}}\n"
    )
    return load_graph(graph_file)


def test_a_moved_producer_s_edge_to_a_live_consumer_is_planned_anew_when_its_kind_changes(
    tmp_path,
):
    graph = _moving_graph(tmp_path)
    addresses = {"A": "10.0.0.1", "B": "10.0.0.2"}

    def layout(where: dict[str, str]) -> Layout:
        return Layout(where, {n: addresses[h] for n, h in where.items()})

    hosts = {"camera": "A", "relay": "B", "sink": "A"}
    before = plan_graph(graph, tmp_path, layout(hosts))
    fresh = plan_graph(graph, tmp_path, layout({**hosts, "relay": "A"}))
    out_of = "relay/converted->sink.messages"
    # the relay now shares the sink's machine: that edge changes kind (tcp -> shm)
    (candidate,) = rebind_candidates(before, fresh, "relay")
    assert candidate.name == out_of and candidate.transport == "shm"
    after = replan_moved(before, fresh, "relay", {out_of})
    assert {e.name: e.transport for e in after.edges()} == {
        "camera/frames->relay.frames": "shm",
        out_of: "shm",
    }
    # the producer's plan of the edge and its consumer's agree
    relay = next(n for n in after.nodes if n.node_id == "relay")
    sink = next(n for n in after.nodes if n.node_id == "sink")
    assert relay.outputs[0].edges == sink.inputs
    # away from the sink's machine again: shm -> tcp
    back = plan_graph(graph, tmp_path, layout(hosts))
    (away,) = rebind_candidates(after, back, "relay")
    assert away.transport == "tcp" and away.bind.startswith("tcp://10.0.0.1:")
    # a move that changes no edge's kind has nothing to bind anew
    assert rebind_candidates(before, before, "relay") == []
    # a replicated node's copy: its edges are merged in the consumer's input, kept as they are
    copies = _moving_graph(tmp_path, replicas=2)
    spread = {**hosts, "relay[0]": "B", "relay[1]": "B"}
    spread.pop("relay")
    moved = {**spread, "relay[0]": "A"}
    assert (
        rebind_candidates(
            plan_graph(copies, tmp_path, layout(spread)),
            plan_graph(copies, tmp_path, layout(moved)),
            "relay[0]",
        )
        == []
    )


def test_an_input_bound_anew_reads_the_old_socket_first_then_becomes_the_new_edge(tmp_path):
    ctx: zmq.Context[Any] = zmq.Context()
    reader = ShmReader()
    plan = _plan(tmp_path)
    zmq_plan = dataclasses.replace(plan, bind=f"ipc://{tmp_path}/z")
    old = InputEdge(ctx, zmq_plan, reader)
    board = memoryview(bytearray(8)).cast("q")  # the node's progress file
    old.progress, old.progress_at = board, 0
    dead = EdgeSender(ctx, zmq_plan, old.endpoint)
    dead.offer(item())
    assert old.sock.poll(5000) and old.recv()[1] == 1
    old.release(1)
    dead.offer(item())
    assert old.sock.poll(5000)  # message 2 waits in the old socket as the producer dies
    dead.close()
    retired: list[InputEdge] = []
    edge: InputEdge = RebindingInput(old, UnixInputEdge(plan, reader), retired.append)
    edge.producer_died(5)  # it had sent 5: 3, 4 and 5 were in its ZeroMQ queue, lost with it
    assert edge.has_message() and edge.recv()[1] == 2  # the old socket's, first
    edge.release(2)
    assert board[0] == 2 and not retired
    # the producer's next incarnation, on the machine of the consumer now: shared memory
    moved = UnixEdgeSender(plan, edge.endpoint)
    moved.n = 1 << 40
    moved.offer(item())
    assert numbers_read(edge) == [(1 << 40) + 1]
    assert retired == [old]  # out of the worker's poller, closed
    assert type(edge) is UnixInputEdge  # it became the new edge: nothing in between now
    assert edge.lost_upstream == 3  # 3, 4, 5: sent by the dead one, never arrived
    edge.release((1 << 40) + 1)
    edge.flush_releases()
    moved.collect()
    assert not moved.inflight and board[0] == (1 << 40) + 1
    moved.close()
    edge.close()
    ctx.term()

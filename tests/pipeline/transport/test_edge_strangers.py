"""An edge is no way in: on a tcp edge only the producer that the supervisor gave the
consumer's CURVE key gets through; a stranger's bytes (a 1-byte message, a shared-memory
reference to /etc/passwd) never reach the node, a stranger holding the connection does not
starve it, and a malformed message from the real producer is refused and its credit returned.
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq

from pipeline.messages import Frame
from pipeline.transport import codec
from pipeline.transport.channels import EdgeSender, InputEdge, RuntimeOutput
from pipeline.transport.plan import EdgePlan, slot_pool_size
from pipeline.transport.shm import ShmReader, SlotPool

RUN = "pipeline-1-abcdef"


def plan(transport: str, bind: str) -> EdgePlan:
    return EdgePlan(
        producer="cam",
        output="frames",
        consumer="sink",
        input="frames",
        queue=4,
        when_full="block",
        transport=transport,  # type: ignore[arg-type]
        release_batch=1,
        bind=bind,
    )


class Edge:
    """A consumer's input edge and, once ``connect`` is called, its real producer."""

    def __init__(self, transport: str = "tcp") -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        bind = "tcp://127.0.0.1:*" if transport == "tcp" else f"inproc://e-{secrets.token_hex(4)}"
        self.plan = plan(transport, bind)
        self.reader = ShmReader()
        self.consumer = InputEdge(self.ctx, self.plan, self.reader, RUN)
        self.port: RuntimeOutput | None = None

    def connect(self) -> None:
        sender = EdgeSender(self.ctx, self.plan, self.consumer.endpoint, self.consumer.key)
        pool = SlotPool(f"{RUN}-9-{secrets.token_hex(3)}", max_slots=slot_pool_size([self.plan]))
        self.port = RuntimeOutput("frames", pool, [sender], type=Frame)

    def send(self, seq: int) -> None:
        assert self.port is not None
        image = self.port.allocate((48, 64, 3))
        image[:] = seq
        self.port.send(Frame(image=image, seq=seq, source="cam"))
        self.port.end_call()

    def receive(self, timeout_s: float = 5.0) -> Frame:
        deadline = time.monotonic() + timeout_s
        while not self.consumer.sock.poll(50):
            assert time.monotonic() < deadline, "nothing arrived"
        message, _n, _dropped, _t = self.consumer.recv()
        assert isinstance(message, Frame)
        return message

    def close(self) -> None:
        if self.port is not None:
            self.port.close()
        self.consumer.close()
        self.reader.close()
        self.ctx.term()


@pytest.fixture
def edges() -> Iterator[list[Edge]]:
    made: list[Edge] = []
    yield made
    for edge in made:
        edge.close()


def stranger(ctx: zmq.Context[Any], endpoint: str) -> zmq.Socket[Any]:
    sock = ctx.socket(zmq.PAIR)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def passwd_message() -> bytes:
    body = msgpack.packb(
        {
            "k": "frame",
            "q": 1,
            "c": 0,
            "s": "x",
            "m": {},
            "f": {},
            "a": [["image", "|u1", [64], "s", ["../../etc/passwd", 0]]],
        },
        use_bin_type=True,
    )
    return codec.envelope(codec.MSG, 0, 0, 0) + body


def test_a_stranger_who_connects_first_never_reaches_the_node(edges):
    edge = Edge()
    edges.append(edge)
    intruder = stranger(edge.ctx, edge.consumer.endpoint)
    intruder.send(b"x", zmq.NOBLOCK)  # the 1-byte message that crashed a consumer
    intruder.send(passwd_message(), zmq.NOBLOCK)
    edge.connect()
    for seq in range(3):
        edge.send(seq)
    # only the real producer's frames arrive, in order
    assert [int(edge.receive().image[0, 0, 0]) for _ in range(3)] == [0, 1, 2]
    assert not edge.consumer.sock.poll(300)  # and nothing else
    intruder.close()


def test_a_stranger_holding_a_connection_does_not_starve_the_edge(edges):
    edge = Edge()
    edges.append(edge)
    port = int(edge.consumer.endpoint.rsplit(":", 1)[1])
    silent = socket.create_connection(("127.0.0.1", port))  # connects, says nothing
    try:
        edge.connect()
        edge.send(7)
        assert int(edge.receive(timeout_s=10).image[0, 0, 0]) == 7
    finally:
        silent.close()


def test_a_tcp_edge_without_the_key_cannot_be_wired():
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        with pytest.raises(Exception, match="CURVE key"):
            EdgeSender(ctx, plan("tcp", "tcp://127.0.0.1:1"), "tcp://127.0.0.1:1")
    finally:
        ctx.term()


def keyed_client(edge: Edge) -> zmq.Socket[Any]:
    """A peer that has the key: what a buggy real producer could send."""
    sock = edge.ctx.socket(zmq.PAIR)
    sock.setsockopt(zmq.LINGER, 0)
    if edge.plan.tcp:
        public, secret = zmq.curve_keypair()
        sock.curve_serverkey = edge.consumer.curve_key.encode()
        sock.curve_publickey = public
        sock.curve_secretkey = secret
    sock.connect(edge.consumer.endpoint)
    return sock


def test_a_tcp_edge_never_reads_shared_memory_even_from_its_producer(edges):
    edge = Edge("tcp")
    edges.append(edge)
    client = keyed_client(edge)
    client.send(passwd_message())
    assert edge.consumer.sock.poll(5000)
    with pytest.raises(codec.MalformedMessage, match="does not use"):
        edge.consumer.recv()
    assert edge.consumer.malformed == 1
    # its credit went back to the producer, so a block edge does not run dry
    assert client.poll(2000)
    assert client.recv() != b""
    client.close()


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd",  # a path
        "pipeline-2-ffffff-0-0-1",  # well-formed, but another run's segment
    ],
)
def test_a_shm_edge_reads_only_its_own_runs_segments(edges, name):
    edge = Edge("shm")
    edges.append(edge)
    client = keyed_client(edge)
    body = msgpack.packb(
        {
            "k": "frame",
            "q": 1,
            "c": 0,
            "s": "x",
            "m": {},
            "f": {},
            "a": [["image", "|u1", [8, 8], "s", [name, 0]]],
        },
        use_bin_type=True,
    )
    client.send(codec.envelope(codec.MSG, 0, 0, 0) + body)
    assert edge.consumer.sock.poll(5000)
    with pytest.raises(codec.MalformedMessage):
        edge.consumer.recv()
    client.send(b"\x01")  # 1 byte: not even an envelope
    assert edge.consumer.sock.poll(5000)
    with pytest.raises(codec.MalformedMessage, match="shorter than"):
        edge.consumer.recv()
    assert edge.consumer.malformed == 2
    client.close()


def test_received_arrays_cannot_be_objects(edges):
    edge = Edge("shm")
    edges.append(edge)
    client = keyed_client(edge)
    body = msgpack.packb(
        {
            "k": "tensors",
            "q": 1,
            "c": 0,
            "s": "x",
            "m": {},
            "f": {},
            "a": [["t", "|O", [1], "i", np.zeros(1, np.int64).tobytes()]],
        },
        use_bin_type=True,
    )
    client.send(codec.envelope(codec.MSG, 0, 0, 0) + body)
    assert edge.consumer.sock.poll(5000)
    with pytest.raises(codec.MalformedMessage, match="not a plain array type"):
        edge.consumer.recv()
    client.close()

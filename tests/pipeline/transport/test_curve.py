"""A tcp edge with the run's CURVE keys: the run's producer gets through (frames intact, zero
copies on receive), strangers are refused and counted, and nothing reaches the consumer."""

from __future__ import annotations

import secrets
import time
from typing import Any

import pytest
import zmq

from pipeline.messages import Frame
from pipeline.runtime.plan import WorkerConfig
from pipeline.transport.channels import EdgeSender, InputEdge, RuntimeOutput
from pipeline.transport.curve import Gatekeeper, RunKeys
from pipeline.transport.plan import EdgePlan, slot_pool_size
from pipeline.transport.shm import ShmReader, SlotPool

PLAN = EdgePlan(
    producer="cam",
    output="frames",
    consumer="sink",
    input="frames",
    queue=4,
    when_full="block",
    transport="tcp",
    release_batch=1,
    bind="tcp://127.0.0.1:*",
)


class Guarded:
    """The consumer's end of a tcp edge with the run's keys, behind a gatekeeper."""

    def __init__(self, keys: RunKeys) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.gate = Gatekeeper(self.ctx, keys)
        self.reader = ShmReader()
        self.edge = InputEdge(self.ctx, PLAN, self.reader, keys=keys)
        self.gate.watch(self.edge.sock)

    def wait_refused(self, n: int, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.gate.refused < n:
            assert time.monotonic() < deadline, f"refused {self.gate.refused}, wanted {n}"
            time.sleep(0.02)

    def close(self) -> None:
        self.edge.close()
        self.reader.close()
        self.gate.close()
        self.ctx.term()


@pytest.fixture
def keys() -> RunKeys:
    return RunKeys.generate()


@pytest.fixture
def guarded(keys: RunKeys):
    g = Guarded(keys)
    yield g
    g.close()


def test_the_runs_producer_gets_through_with_its_frames_intact(keys, guarded):
    ctx: zmq.Context[Any] = zmq.Context()
    pool = SlotPool(f"pipeline-test-{secrets.token_hex(4)}", max_slots=slot_pool_size([PLAN]))
    port = RuntimeOutput(
        "frames",
        pool,
        [EdgeSender(ctx, PLAN, guarded.edge.endpoint, guarded.edge.key, keys=keys)],
        Frame,
    )
    try:
        for seq in range(5):
            image = port.allocate((1080, 1920, 3))
            image[:] = seq + 1
            port.send(Frame(image=image, seq=seq, t_capture_ns=1, source="cam"))
            port.end_call()
            assert guarded.edge.sock.poll(10_000)
            message, n, _, _ = guarded.edge.recv()
            assert isinstance(message, Frame)
            assert message.seq == seq and n == seq + 1
            assert message.image.shape == (1080, 1920, 3)
            assert int(message.image[0, 0, 0]) == seq + 1 == int(message.image[-1, -1, -1])
            assert not message.image.flags.writeable and not message.image.flags.owndata
            guarded.edge.release(n)
        assert guarded.gate.refused == 0
    finally:
        port.close()
        ctx.term()


def _stranger(ctx: zmq.Context[Any], endpoint: str, setup: Any) -> zmq.Socket[Any]:
    sock = ctx.socket(zmq.PAIR)
    sock.setsockopt(zmq.LINGER, 0)
    setup(sock)
    sock.connect(endpoint)
    sock.send(b"E" + bytes(20), zmq.NOBLOCK)  # an end of stream, if it got through
    return sock


def test_a_peer_without_curve_is_refused_and_counted(guarded):
    ctx: zmq.Context[Any] = zmq.Context()
    sock = _stranger(ctx, guarded.edge.endpoint, lambda s: None)
    guarded.wait_refused(1)
    assert not guarded.edge.sock.poll(200)
    sock.close()
    ctx.term()


def test_a_peer_with_other_keys_is_refused_and_counted(keys, guarded):
    ctx: zmq.Context[Any] = zmq.Context()

    def wrong_server(sock: zmq.Socket[Any]) -> None:  # does not know the run's server key
        sock.curve_serverkey, _ = zmq.curve_keypair()
        sock.curve_publickey, sock.curve_secretkey = zmq.curve_keypair()

    def wrong_client(sock: zmq.Socket[Any]) -> None:  # knows it, but is not the run's client
        sock.curve_serverkey = guarded.edge.curve_key.encode()
        sock.curve_publickey, sock.curve_secretkey = zmq.curve_keypair()

    a = _stranger(ctx, guarded.edge.endpoint, wrong_server)
    guarded.wait_refused(1)
    b = _stranger(ctx, guarded.edge.endpoint, wrong_client)
    guarded.wait_refused(2)
    assert not guarded.edge.sock.poll(200)
    assert not guarded.edge.ended
    a.close()
    b.close()
    ctx.term()


def test_the_keys_travel_in_the_workers_config_and_never_show_their_secrets(keys):
    assert keys.server_secret not in repr(keys) and keys.client_secret not in repr(keys)
    assert RunKeys.from_wire(keys.to_wire()) == keys
    assert len({keys.server_public, keys.client_public, keys.server_secret}) == 3
    assert RunKeys.generate() != keys  # made fresh for every run


def test_a_worker_config_carries_the_keys(keys):
    from pipeline.runtime.plan import NodePlan

    plan = NodePlan("n", "discard", {}, 0, False, (PLAN,), ())
    cfg = WorkerConfig(plan, "tcp://127.0.0.1:1", "pipeline-1-x", keys=keys)
    again = WorkerConfig.from_wire(cfg.to_wire())
    assert again.keys == keys
    assert WorkerConfig.from_wire(WorkerConfig(plan, "ipc://c", "p").to_wire()).keys is None

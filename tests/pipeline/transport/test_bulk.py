"""A tcp edge's bulk path: frames arrive byte-identical, sealed; a stranger on the bulk socket
is refused and counted; a forged, truncated, replayed or misplaced bulk message is dropped and
counted, its credit goes back, and the edge goes on."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from pipeline.errors import TransportError
from pipeline.messages import Frame, Tensors
from pipeline.transport import bulk, codec
from pipeline.transport.channels import EdgeSender, InputEdge, RuntimeOutput
from pipeline.transport.curve import Gatekeeper, RunKeys
from pipeline.transport.plan import slot_pool_size
from pipeline.transport.shm import ShmReader, SlotPool
from tests.pipeline.transport.test_curve import PLAN  # the same tcp edge


def wait_for(condition: Any, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


class Consumer:
    """The consumer's end of a tcp edge (with the run's keys on a cluster)."""

    def __init__(self, keys: RunKeys | None = None) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.keys = keys
        if keys is not None:
            Gatekeeper(self.ctx, keys)  # what a worker of a cluster run makes first
        self.reader = ShmReader()
        self.edge = InputEdge(self.ctx, PLAN, self.reader, keys=keys)
        assert self.edge.bulk is not None
        self.gate = self.edge.bulk.gate
        self.secrets = bulk.EdgeSecrets.from_wire(self.edge.key)

    def recv(self, timeout_s: float = 10.0) -> tuple[Any, int]:
        assert self.edge.sock.poll(int(timeout_s * 1000)), "nothing arrived"
        message, n, _, _ = self.edge.recv()
        return message, n

    def close(self) -> None:
        self.edge.close()
        self.reader.close()
        self.gate.close()
        self.ctx.term()


@pytest.fixture(params=["edge", "cluster"])
def consumer(request: Any) -> Iterator[Consumer]:
    c = Consumer(RunKeys.generate() if request.param == "cluster" else None)
    yield c
    c.close()


def test_frames_arrive_byte_identical_and_sealed(consumer):
    ctx: zmq.Context[Any] = zmq.Context()
    sender = EdgeSender(ctx, PLAN, consumer.edge.endpoint, consumer.edge.key, keys=consumer.keys)
    pool = SlotPool(f"pipeline-test-{secrets.token_hex(4)}", max_slots=slot_pool_size([PLAN]))
    port = RuntimeOutput("frames", pool, [sender])
    rng = np.random.default_rng(7)
    try:
        for seq, shape in enumerate([(1080, 1920, 3), (480, 640, 3), (8, 8, 3), (1080, 1920, 3)]):
            want = rng.integers(0, 256, shape, dtype=np.uint8)
            image = port.allocate(shape)
            image[:] = want
            port.send(Frame(image=image, seq=seq, t_capture_ns=5, source="cam"))
            port.end_call()
            message, n = consumer.recv()
            assert isinstance(message, Frame) and message.seq == seq
            assert message.image.tobytes() == want.tobytes()
            assert not message.image.flags.writeable
            consumer.edge.release(n)
        # two arrays in one message, one big and one small, neither in shared memory
        big = rng.standard_normal((300, 300)).astype(np.float32)
        small = np.arange(10, dtype=np.int64)
        port.send(Tensors(tensors={"big": big, "small": small}, seq=9, source="cam"))
        message, n = consumer.recv()
        assert isinstance(message, Tensors)
        assert message.tensors["big"].tobytes() == big.tobytes()
        assert message.tensors["small"].tolist() == small.tolist()
        consumer.edge.release(n)
        assert sender.bulk is not None
        assert sender.bulk.sent == 4  # the 8x8 frame stayed on the CURVE socket
        assert consumer.edge.malformed == 0 and consumer.gate.refused == 0
    finally:
        port.close()
        ctx.term()


def test_the_secrets_never_show_and_a_wrong_string_is_refused_naming_the_edge(consumer):
    s = consumer.secrets
    assert bulk.EdgeSecrets.from_wire(s.to_wire()) == s
    assert s.token.hex() not in repr(s) and s.key.hex() not in repr(s)
    assert bulk.EdgeSecrets.generate(s.curve_key, s.bulk_endpoint).key != s.key
    with pytest.raises(TransportError, match=r"edge cam\.frames"):
        bulk.EdgeSecrets.from_wire(s.curve_key, "cam.frames")  # a CURVE key alone: old version


@pytest.mark.parametrize("how", ["no mechanism", "wrong token", "other edge", "curve"])
def test_a_stranger_on_the_bulk_socket_is_refused_and_counted(consumer, how):
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.PAIR)
    sock.setsockopt(zmq.LINGER, 0)
    if how == "wrong token":
        sock.plain_username = consumer.edge.name.encode()
        sock.plain_password = secrets.token_bytes(24)
    elif how == "other edge":
        sock.plain_username = b"other.edge"
        sock.plain_password = consumer.secrets.token
    elif how == "curve":
        sock.curve_serverkey = consumer.edge.curve_key.encode()
        sock.curve_publickey, sock.curve_secretkey = zmq.curve_keypair()
    sock.connect(consumer.secrets.bulk_endpoint)
    sock.send(b"PB1" + bytes(24), zmq.NOBLOCK)
    try:
        wait_for(lambda: consumer.gate.refused >= 1, "the stranger was not refused")
        assert not consumer.edge.bulk.sock.poll(200)  # nothing got in (it may try again)
    finally:
        sock.close()
        ctx.term()


class Insider:
    """Someone who learned the edge's token (it travels in the clear) and talks to the bulk
    socket, beside a producer that holds the CURVE key and seals like the real one."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.curve = self.ctx.socket(zmq.PAIR)
        self.curve.setsockopt(zmq.LINGER, 0)
        self.curve.curve_serverkey = consumer.edge.curve_key.encode()
        if consumer.keys is not None:
            self.curve.curve_publickey = consumer.keys.client_public.encode()
            self.curve.curve_secretkey = consumer.keys.client_secret.encode()
        else:
            self.curve.curve_publickey, self.curve.curve_secretkey = zmq.curve_keypair()
        self.curve.connect(consumer.edge.endpoint)
        self.bulk = self.ctx.socket(zmq.PAIR)
        self.bulk.setsockopt(zmq.LINGER, 0)
        self.bulk.plain_username = consumer.edge.name.encode()
        self.bulk.plain_password = consumer.secrets.token
        self.bulk.connect(consumer.secrets.bulk_endpoint)
        self.sealer = bulk.Sealer(consumer.secrets, consumer.edge.name)
        self.n = 0

    def seal(self, value: int) -> tuple[bytes, bytes, list[bytes]]:
        """(head, descriptor, bulk message) of the next frame, filled with ``value``."""
        self.n += 1
        image = np.full((200, 300, 3), value, np.uint8)
        body = codec.pack_body(
            Frame(image=image, seq=self.n, source="cam"), [("image", image, "b", 1)]
        )
        head = codec.envelope(codec.MSG, self.n, 0, 0) + body
        out = [bytearray(image.nbytes + bulk.TAG)]
        desc, bulk_head = self.sealer.seal(head, [image.reshape(-1).data], out)
        return head, desc, [bulk_head, *map(bytes, out)]

    def send(self, head: bytes, desc: bytes, frames: list[bytes] | None) -> None:
        if frames is not None:
            self.bulk.send_multipart(frames)
        self.curve.send_multipart([head, desc])

    def expect(self, value: int) -> None:
        message, n = self.consumer.recv()
        assert isinstance(message, Frame)
        assert message.image.shape == (200, 300, 3)
        assert (message.image == value).all()
        self.consumer.edge.release(n)

    def expect_dropped(self, match: str) -> None:
        before = self.consumer.edge.malformed
        with pytest.raises(codec.MalformedMessage, match=match):
            self.consumer.recv()
        assert self.consumer.edge.malformed == before + 1
        assert self.curve.poll(5000), "the dropped message's credit did not come back"
        self.curve.recv()

    def close(self) -> None:
        self.curve.close()
        self.bulk.close()
        self.ctx.term()


@pytest.fixture
def insider(consumer: Consumer) -> Iterator[Insider]:
    i = Insider(consumer)
    yield i
    i.close()


def test_a_forged_or_truncated_bulk_message_is_dropped_and_the_edge_goes_on(insider):
    insider.send(*insider.seal(1))
    insider.expect(1)
    head, desc, frames = insider.seal(2)
    forged = bytearray(frames[1])
    forged[1000] ^= 1
    insider.send(head, desc, [frames[0], bytes(forged)])
    insider.expect_dropped("fails its tag")
    head, desc, frames = insider.seal(3)
    insider.send(head, desc, [frames[0], frames[1][:-100]])  # truncated
    insider.expect_dropped("fails its tag|shorter")
    head, desc, frames = insider.seal(4)
    insider.send(head, desc, [frames[0], frames[1], frames[1]])  # a part too many
    insider.expect_dropped("parts")
    insider.send(*insider.seal(5))
    insider.expect(5)
    assert insider.consumer.gate.refused == 0  # the insider got in: it had the token


def test_a_replayed_bulk_message_is_dropped_and_counted(insider):
    head, desc, frames = insider.seal(1)
    insider.send(head, desc, frames)
    insider.expect(1)
    rejected = insider.consumer.edge.bulk.rejected
    insider.bulk.send_multipart(frames)  # the same bulk message again: seen before
    insider.send(*insider.seal(2))
    insider.expect(2)
    assert insider.consumer.edge.bulk.rejected == rejected + 1
    # message 1's bytes presented as message 3's: its counter rewritten, so its tag fails
    head, desc, _ = insider.seal(3)
    salt, counter, _ = bulk.Opener.descriptor(desc)
    insider.send(head, desc, [bulk.bulk_head(salt, counter), frames[1]])
    insider.expect_dropped("fails its tag")
    # a bulk message of another producer incarnation (another salt) never counts
    old = bulk.Sealer(insider.consumer.secrets, insider.consumer.edge.name)
    insider.sealer, new = old, insider.sealer
    _, _, stale = insider.seal(4)
    insider.sealer = new
    insider.bulk.send_multipart(stale)
    insider.send(*insider.seal(5))
    insider.expect(5)
    assert insider.consumer.edge.bulk.rejected == rejected + 2


def test_reordered_bulk_messages_find_their_heads_and_swapped_ones_fail(insider):
    a, b = insider.seal(1), insider.seal(2)
    insider.bulk.send_multipart(b[2])  # message 2's bytes come first
    insider.bulk.send_multipart(a[2])
    insider.send(a[0], a[1], None)
    insider.send(b[0], b[1], None)
    insider.expect(1)
    insider.expect(2)
    # message 3's part under message 4's head (and the reverse): both fail their tags
    c, d = insider.seal(3), insider.seal(4)
    insider.bulk.send_multipart([c[2][0], d[2][1]])
    insider.bulk.send_multipart([d[2][0], c[2][1]])
    insider.send(c[0], c[1], None)
    insider.expect_dropped("fails its tag")
    insider.send(d[0], d[1], None)
    insider.expect_dropped("fails its tag")
    insider.send(*insider.seal(5))
    insider.expect(5)


def test_a_head_whose_bulk_message_never_comes_is_dropped(insider, monkeypatch):
    monkeypatch.setattr(bulk, "WAIT_MS", 300)
    head, desc, _ = insider.seal(1)
    insider.send(head, desc, None)
    insider.expect_dropped("did not come")
    insider.send(*insider.seal(2))
    insider.expect(2)


def test_each_producer_incarnation_seals_under_its_own_key(consumer):
    one = bulk.Sealer(consumer.secrets, "e")
    two = bulk.Sealer(consumer.secrets, "e")
    part = bytes(64)
    outs = [bytearray(64 + bulk.TAG), bytearray(64 + bulk.TAG)]
    one.seal(b"h", [part], [outs[0]])
    two.seal(b"h", [part], [outs[1]])  # same counter, same bytes: another key
    assert one.salt != two.salt and outs[0] != outs[1]
    # the salt (an input of the key) is carried by CURVE only: the bulk socket shows a hash
    _, bulk_head = one.seal(b"h", [part], [outs[0]])
    assert one.salt[:8] not in bulk_head and bulk.Opener.bulk_head(bulk_head) is not None


RECEIVE_FRAMES = """
import multiprocessing as mp, resource, secrets, sys
import zmq
from pipeline.messages import Frame
from pipeline.transport import bulk
from pipeline.transport.channels import EdgeSender, InputEdge, RuntimeOutput
from pipeline.transport.plan import EdgePlan, slot_pool_size
from pipeline.transport.shm import ShmReader, SlotPool

PLAN = EdgePlan(producer="cam", output="frames", consumer="sink", input="frames", queue=4,
                when_full="block", transport="tcp", release_batch=1, bind="tcp://127.0.0.1:*")


def produce(conn):  # its own process: only the receiving side's faults are counted
    endpoint, key = conn.recv()
    ctx = zmq.Context()
    pool = SlotPool(f"pipeline-test-{secrets.token_hex(4)}", max_slots=slot_pool_size([PLAN]))
    port = RuntimeOutput("frames", pool, [EdgeSender(ctx, PLAN, endpoint, key)])
    for seq in range(240):
        image = port.allocate((1080, 1920, 3))
        image[0, 0, 0] = seq & 255
        port.send(Frame(image=image, seq=seq, t_capture_ns=5, source="cam"))
        port.end_call()
    port.send_eos()
    port.wait_released()
    port.close()
    ctx.term()


if __name__ == "__main__":
    if sys.argv[1] == "glibc defaults":
        bulk._heap_kept = False  # as if keep_receive_buffers() had not been called
    mine, theirs = mp.get_context("fork").Pipe()
    producer = mp.get_context("fork").Process(target=produce, args=(theirs,))
    producer.start()  # before this process has a ZeroMQ context
    ctx = zmq.Context()
    reader = ShmReader()
    edge = InputEdge(ctx, PLAN, reader)
    mine.send((edge.endpoint, edge.key))
    held = []
    for seq in range(240):
        if seq == 40:  # after the warm-up: buffers made, sockets connected
            faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        assert edge.sock.poll(10_000), "nothing arrived"
        message, n, _, _ = edge.recv()
        assert message.seq == seq and message.image[0, 0, 0] == seq & 255
        held.append((message, n))
        if len(held) > 2:  # the node holds a couple, as a worker's inputs do
            message, n = held.pop(0)
            del message
            edge.release(n)
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / 200)
    for _, n in held:
        edge.release(n)
    held.clear()
    edge.flush_releases()
    producer.join(20)
    edge.close()
    reader.close()
    ctx.term()
"""


def _faults_per_frame(how: str, tmp: Path) -> float:
    import subprocess
    import sys

    script = tmp / "receive_frames.py"
    script.write_text(RECEIVE_FRAMES)
    done = subprocess.run(
        [sys.executable, str(script), how],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return float(done.stdout.split()[-1])


def test_a_receiving_process_reuses_its_message_buffers_without_page_faults(tmp_path):
    """libzmq mallocs each received 6 MB frame; with glibc's defaults a fresh process hands
    that memory back to the kernel on free, so later frames are written into fresh pages
    (30-180 faults per frame on the receiving side in 6 fresh processes of 6, 1,500 if every
    frame; about 0.1 when kept). A process with a tcp input keeps freed buffers mapped
    (``bulk.keep_receive_buffers``; the script run with "glibc defaults" shows the faults).
    Over 200 frames a heap that grows once more (a busy machine let one more frame be in
    flight: 1,500 faults once) stays below the bound; a heap handed back again does not."""
    assert bulk.keep_receive_buffers()  # glibc: this machine's and CI's
    per_frame = [_faults_per_frame("kept", tmp_path) for _ in range(2)]
    assert max(per_frame) < 12, f"page faults per 1080p frame received: {per_frame}"

"""One edge's two ends in one process over ``inproc://``: credits, policies, end of stream,
release batching and the port's type check, without spawning a graph."""

from __future__ import annotations

import secrets
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import zmq

from pipeline.messages import Detections, Frame
from pipeline.testing import make_frame
from pipeline.transport.channels import EdgeSender, InputEdge, RuntimeOutput
from pipeline.transport.plan import EdgePlan, WhenFull, release_batch, slot_pool_size
from pipeline.transport.shm import ShmReader, SlotPool


class Link:
    """A producer's output port with one edge to a consumer's input, in this process."""

    def __init__(self, when_full: WhenFull, queue: int, batch: int | None = None) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        name = secrets.token_hex(4)
        self.plan = EdgePlan(
            producer="cam",
            output="frames",
            consumer="sink",
            input="frames",
            queue=queue,
            when_full=when_full,
            transport="shm",
            release_batch=release_batch(queue, when_full) if batch is None else batch,
            bind=f"inproc://edge-{name}",
        )
        self.reader = ShmReader()
        self.consumer = InputEdge(self.ctx, self.plan, self.reader)
        self.sender = EdgeSender(self.ctx, self.plan, self.consumer.endpoint)
        pool = SlotPool(f"pipeline-test-{name}", max_slots=slot_pool_size([self.plan]))
        self.port = RuntimeOutput("frames", pool, [self.sender], type=Frame)

    def send(self, seq: int) -> None:
        image = self.port.allocate((64, 128, 3))  # 24 KB: travels in shared memory
        image[:] = seq
        self.port.send(Frame(image=image, seq=seq, t_capture_ns=1, source="cam"))
        self.port.end_call()

    def recv(self, timeout_ms: int = 5000) -> tuple[Frame | None, int, int]:
        assert self.consumer.sock.poll(timeout_ms), "nothing arrived"
        message, n, dropped, _ = self.consumer.recv()
        assert message is None or isinstance(message, Frame)
        return message, n, dropped

    def close(self) -> None:
        self.port.close()
        self.consumer.close()
        self.reader.close()
        self.ctx.term()


@pytest.fixture
def links() -> Iterator[list[Link]]:
    made: list[Link] = []
    yield made
    for link in made:
        link.close()


def make(links: list[Link], when_full: WhenFull, queue: int, batch: int | None = None) -> Link:
    link = Link(when_full, queue, batch)
    links.append(link)
    return link


def wait_until_in(thread: threading.Thread, function: str, timeout: float = 10.0) -> None:
    """Wait until ``thread`` is executing ``function`` (somewhere on its stack)."""
    deadline = time.monotonic() + timeout
    while True:
        frame = sys._current_frames().get(thread.ident or 0)
        while frame is not None:
            if frame.f_code.co_name == function:
                return
            frame = frame.f_back
        assert time.monotonic() < deadline, f"{thread.name} never reached {function}()"
        time.sleep(0.001)


def test_the_consumer_sees_the_frame_the_producer_wrote(links):
    link = make(links, "block", 4)
    link.send(7)
    frame, n, dropped = link.recv()
    assert frame is not None and frame.seq == 7 and n == 1 and dropped == 0
    assert frame.image.shape == (64, 128, 3) and int(frame.image[5, 5, 1]) == 7
    assert not frame.image.flags.writeable


def test_block_holds_the_producer_until_a_release(links):
    link = make(links, "block", 2, batch=1)
    link.send(0)
    link.send(1)  # no credit left now
    third = threading.Thread(target=link.send, args=(2,))
    third.start()
    wait_until_in(third, "wait_release")  # the producer waits for a credit
    first, n1, _ = link.recv()
    second, _, _ = link.recv()
    assert (first and first.seq, second and second.seq) == (0, 1)
    assert third.is_alive() and not link.consumer.has_message()  # held back, not sent
    link.consumer.release(n1)
    third.join(10)
    assert not third.is_alive()
    last, _, dropped = link.recv()
    assert last is not None and last.seq == 2 and dropped == 0
    assert link.sender.blocked_s > 0 and link.sender.dropped == 0


def test_drop_newest_keeps_the_first_and_counts_the_rest(links):
    link = make(links, "drop_newest", 2)
    for seq in range(5):
        link.send(seq)
    got = [link.recv() for _ in range(2)]
    assert [m.seq for m, _, _ in got if m] == [0, 1]
    assert not link.consumer.has_message()
    assert link.sender.dropped == 3
    link.consumer.release(got[-1][1])
    link.send(5)
    frame, _, dropped = link.recv()
    assert frame is not None and frame.seq == 5
    assert dropped == 3  # the drops travel in the next envelope, for the consumer's statistics


def test_drop_oldest_delivers_the_freshest_after_a_release(links):
    link = make(links, "drop_oldest", 2)
    for seq in range(5):
        link.send(seq)
    got = [link.recv() for _ in range(2)]
    assert [m.seq for m, _, _ in got if m] == [0, 1]
    assert link.sender.dropped == 1  # seq 2: the mailbox of 2 kept 3 and 4
    link.consumer.release(got[-1][1])
    assert link.sender.wait_release(5000)  # the release arrives; the mailbox goes out
    fresh = [link.recv() for _ in range(2)]
    assert [m.seq for m, _, _ in fresh if m] == [3, 4]
    assert fresh[0][2] == 1


def test_end_of_stream_comes_after_every_waiting_message(links):
    link = make(links, "drop_oldest", 1)
    for seq in range(3):
        link.send(seq)  # 0 in flight, 1 dropped, 2 waiting at the producer
    seen: list[int | None] = []

    def consume() -> None:
        while True:
            frame, n, _ = link.recv()
            seen.append(frame.seq if frame else None)
            if frame is None:
                return
            del frame
            link.consumer.release(n)

    reader = threading.Thread(target=consume)
    reader.start()
    link.port.send_eos()
    link.port.wait_released()
    reader.join(10)
    assert seen == [0, 2, None]
    assert link.consumer.ended


def test_end_of_stream_is_never_dropped_when_the_queue_is_full(links):
    link = make(links, "drop_newest", 1)
    link.send(0)
    link.send(1)  # dropped: no credit
    link.port.send_eos()  # no credit either, and still sent
    frame, _, _ = link.recv()
    end, _, dropped = link.recv()
    assert frame is not None and frame.seq == 0
    assert end is None and dropped == 1


def test_releases_are_batched_up_to_the_plans_batch(links):
    link = make(links, "block", 4)  # batch of 2
    assert link.plan.release_batch == 2
    for seq in range(3):
        link.send(seq)
    ns = [link.recv()[1] for _ in range(3)]
    link.consumer.release(ns[0])
    assert not link.sender.sock.poll(0)  # held back
    link.consumer.release(ns[1])
    assert link.sender.sock.poll(5000)
    assert link.sender.sock.recv() == (2).to_bytes(8, "little")  # one credit for both
    assert not link.sender.sock.poll(0)
    link.consumer.release(ns[2])
    link.consumer.flush_releases()  # before a consumer waits for input
    assert link.sender.sock.recv() == (3).to_bytes(8, "little")


def test_a_drop_edge_releases_every_message_at_once():
    assert release_batch(8, "drop_oldest") == 1
    assert release_batch(8, "block") == 4
    assert release_batch(1, "block") == 1


def test_a_message_of_the_wrong_type_is_refused_naming_port_and_types(links):
    link = make(links, "block", 2)
    detections = Detections(seq=0)
    with pytest.raises(TypeError, match="output 'frames' sends Frame, got Detections"):
        link.port.send(detections)
    assert link.port.sent == 0 and not link.consumer.has_message()


def test_an_array_sent_from_outside_the_pool_is_copied_in_once(links):
    link = make(links, "block", 2)
    link.port.send(make_frame(128, 64, seq=3))
    frame, _, _ = link.recv()
    assert frame is not None and frame.seq == 3
    assert np.array_equal(frame.image, make_frame(128, 64, seq=3).image)


def test_allocate_gives_what_each_call_asks_when_the_request_changes():
    pool = SlotPool(f"pipeline-test-{secrets.token_hex(4)}", max_slots=8)
    port = RuntimeOutput("frames", pool, type=Frame)
    try:
        asks: list[tuple[Any, Any, tuple[int, ...], np.dtype]] = [
            ((4, 6, 3), np.uint8, (4, 6, 3), np.dtype(np.uint8)),
            ((4, 6, 3), np.uint8, (4, 6, 3), np.dtype(np.uint8)),  # the same: remembered
            ((np.int64(4), 6, 3), np.uint8, (4, 6, 3), np.dtype(np.uint8)),
            ([2, 5], np.uint8, (2, 5), np.dtype(np.uint8)),
            (np.array([3, 2]), np.uint8, (3, 2), np.dtype(np.uint8)),
            ((4, 6, 3), np.float32, (4, 6, 3), np.dtype(np.float32)),
            ((4, 6, 3), "uint8", (4, 6, 3), np.dtype(np.uint8)),
            ((), np.float32, (), np.dtype(np.float32)),
        ]
        for shape, dtype, want_shape, want_dtype in asks:
            arr = port.allocate(shape, dtype)
            assert arr.shape == want_shape and arr.dtype == want_dtype
            assert all(type(d) is int for d in arr.shape)
            port.end_call()
    finally:
        port.close()

"""The same-host fast path (``pipeline.transport.fastpath``): one edge's two ends over Unix
datagram sockets in one process. The guarantees are those of the ZeroMQ edge: credits,
block/drop_newest/drop_oldest, end of stream after every message, drops counted, and a
consumer that vanished neither hangs nor crashes a producer that does not wait for it."""

from __future__ import annotations

import os
import secrets
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from pipeline.messages import Detections, Frame, Message
from pipeline.transport import fastpath
from pipeline.transport.channels import RuntimeOutput
from pipeline.transport.fastpath import UnixEdgeSender, UnixInputEdge, open_input, open_sender
from pipeline.transport.plan import EdgePlan, WhenFull, release_batch, slot_pool_size
from pipeline.transport.shm import ShmReader, SlotPool
from tests.pipeline.transport.test_channels import wait_until_in


class Link:
    """A producer's output port with one fast-path edge to a consumer's input."""

    def __init__(self, folder: Path, when_full: WhenFull, queue: int, batch: int | None) -> None:
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
            bind=f"ipc://{folder}/{name}",
        )
        self.reader = ShmReader()
        consumer = open_input(None, self.plan, self.reader)
        assert isinstance(consumer, UnixInputEdge)
        self.consumer = consumer
        assert self.consumer.endpoint.startswith("unix://")
        sender = open_sender(None, self.plan, self.consumer.endpoint)
        assert isinstance(sender, UnixEdgeSender)
        self.sender = sender
        pool = SlotPool(f"pipeline-test-{name}", max_slots=slot_pool_size([self.plan]))
        self.port = RuntimeOutput("frames", pool, [self.sender], type=Frame)

    def send(self, seq: int) -> None:
        image = self.port.allocate((64, 128, 3))  # 24 KB: travels in shared memory
        image[:] = seq & 0xFF
        self.port.send(Frame(image=image, seq=seq, t_capture_ns=1, source="cam"))
        self.port.end_call()

    def recv(self, timeout_s: float = 5.0) -> tuple[Frame | None, int, int]:
        message, n, dropped = self.recv_any(timeout_s)
        assert message is None or isinstance(message, Frame)
        return message, n, dropped

    def recv_any(self, timeout_s: float = 5.0) -> tuple[Message | None, int, int]:
        """The next message, sleeping on the doorbell as the worker does."""
        deadline = time.monotonic() + timeout_s
        while not self.consumer.has_message():
            left = deadline - time.monotonic()
            assert left > 0, "nothing arrived"
            if self.consumer.may_sleep():
                select.select([self.consumer.sock], [], [], left)
        message, n, dropped, _ = self.consumer.recv()
        return message, n, dropped

    def close(self) -> None:
        self.port.close()
        self.consumer.close()
        self.reader.close()


@pytest.fixture
def links(tmp_path: Path) -> Iterator[list[Link]]:
    made: list[Link] = []
    yield made
    for link in made:
        link.close()


def make(
    links: list[Link], folder: Path, when_full: WhenFull, queue: int, batch: int | None = None
) -> Link:
    link = Link(folder, when_full, queue, batch)
    links.append(link)
    return link


def test_the_consumer_sees_the_frame_the_producer_wrote(links, tmp_path):
    link = make(links, tmp_path, "block", 4)
    link.send(7)
    frame, n, dropped = link.recv()
    assert frame is not None and frame.seq == 7 and n == 1 and dropped == 0
    assert frame.image.shape == (64, 128, 3) and int(frame.image[5, 5, 1]) == 7
    assert not frame.image.flags.writeable


def test_block_holds_the_producer_until_a_release(links, tmp_path):
    link = make(links, tmp_path, "block", 2, batch=1)
    link.send(0)
    link.send(1)  # no credit left now
    third = threading.Thread(target=link.send, args=(2,))
    third.start()
    wait_until_in(third, "wait_release")
    first, n1, _ = link.recv()
    second, _, _ = link.recv()
    assert (first and first.seq, second and second.seq) == (0, 1)
    assert third.is_alive() and not link.consumer.has_message()  # held back, not sent
    assert link.consumer.may_sleep()  # nothing came: the consumer may sleep
    link.consumer.release(n1)
    third.join(10)
    assert not third.is_alive()
    last, _, dropped = link.recv()
    assert last is not None and last.seq == 2 and dropped == 0
    assert link.sender.blocked_s > 0 and link.sender.dropped == 0


def test_block_is_lossless_and_in_order_for_many_messages(links, tmp_path):
    link = make(links, tmp_path, "block", 4)
    got: list[int] = []

    def consume() -> None:
        while True:
            frame, n, dropped = link.recv()
            assert dropped == 0
            if frame is None:
                link.consumer.flush_releases()
                return
            got.append(frame.seq)
            assert int(frame.image[0, 0, 0]) == frame.seq & 0xFF
            del frame
            link.consumer.release(n)

    reader = threading.Thread(target=consume)
    reader.start()
    for seq in range(2000):
        link.send(seq)
    link.port.send_eos()
    link.port.wait_released()
    reader.join(30)
    assert got == list(range(2000))
    assert link.sender.dropped == 0


def test_drop_newest_keeps_the_first_and_counts_the_rest(links, tmp_path):
    link = make(links, tmp_path, "drop_newest", 2)
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
    assert dropped == 3


def test_drop_oldest_delivers_the_freshest_after_a_release(links, tmp_path):
    link = make(links, tmp_path, "drop_oldest", 2)
    for seq in range(5):
        link.send(seq)
    got = [link.recv() for _ in range(2)]
    assert [m.seq for m, _, _ in got if m] == [0, 1]
    assert link.sender.dropped == 1
    link.consumer.release(got[-1][1])
    assert link.sender.wait_release(5000)
    fresh = [link.recv() for _ in range(2)]
    assert [m.seq for m, _, _ in fresh if m] == [3, 4]
    assert fresh[0][2] == 1


def test_end_of_stream_comes_after_every_waiting_message(links, tmp_path):
    link = make(links, tmp_path, "drop_oldest", 1)
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


def test_end_of_stream_is_never_dropped_when_the_queue_is_full(links, tmp_path):
    link = make(links, tmp_path, "drop_newest", 1)
    link.send(0)
    link.send(1)  # dropped: no credit
    link.port.send_eos()
    frame, _, _ = link.recv()
    end, _, dropped = link.recv()
    assert frame is not None and frame.seq == 0
    assert end is None and dropped == 1


def released(link: Link) -> int:
    return int(link.sender.ctl[fastpath._RELEASED // 8])


def test_releases_are_batched_into_one_credit_in_the_ring(links, tmp_path):
    link = make(links, tmp_path, "block", 4)  # batch of 2
    for seq in range(3):
        link.send(seq)
    ns = [link.recv()[1] for _ in range(3)]
    link.consumer.release(ns[0])
    assert released(link) == 0  # held back
    link.consumer.release(ns[1])
    assert released(link) == 2  # one credit for both
    link.consumer.release(ns[2])
    link.consumer.flush_releases()  # before a consumer waits for input
    assert released(link) == 3
    assert not select.select([link.sender.sock], [], [], 0)[0]  # no wake-up: it did not wait


def test_a_waiting_producer_is_woken_by_the_release(links, tmp_path):
    link = make(links, tmp_path, "block", 1)
    link.send(0)
    frame, n, _ = link.recv()
    del frame
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(link.sender.wait_release(10_000)))
    waiter.start()
    wait_until_in(waiter, "wait_release")
    while not link.sender.ctl[fastpath._P_SLEEPING // 8]:
        time.sleep(0.001)  # it has asked for the doorbell
    t0 = time.monotonic()
    link.consumer.release(n)
    waiter.join(10)
    assert woke == [True] and time.monotonic() - t0 < 5  # woken, not timed out
    assert not link.sender.inflight


def test_small_messages_and_descriptors_larger_than_an_entry_arrive_whole(links, tmp_path):
    link = make(links, tmp_path, "block", 4)
    port = RuntimeOutput("detections", SlotPool(f"pipeline-test-{secrets.token_hex(4)}", 8))
    port.connect(link.sender)
    small = Detections(
        seq=1, xyxy=np.array([[0.1, 0.2, 0.3, 0.4]], np.float32), confidence=[0.9], class_id=[1]
    )
    # more parts than the consumer's socket queues: sent while the consumer reads them
    big = Detections(seq=2, meta={"note": "x" * (14 * fastpath.DATAGRAM + 17)})
    got: list[tuple[Message | None, int, int]] = []
    reader = threading.Thread(target=lambda: got.extend(link.recv_any() for _ in range(2)))
    reader.start()
    port.send(small)
    port.send(big)
    reader.join(20)
    (first, n1, _), (second, n2, _) = got
    assert isinstance(first, Detections) and np.array_equal(first.xyxy, small.xyxy)
    assert isinstance(second, Detections) and second.meta["note"] == big.meta["note"]
    assert (n1, n2) == (1, 2)
    port.pool.close()


def test_a_crashed_consumer_neither_hangs_nor_crashes_a_dropping_producer(links, tmp_path):
    link = make(links, tmp_path, "drop_newest", 2)
    link.send(0)
    assert link.recv()[0] is not None
    assert link.consumer.may_sleep()  # it asked for the doorbell, then died
    link.consumer.usock.close()  # what the kernel does when the consumer process dies
    os.unlink(link.consumer.path)
    for seq in range(1, 6):
        link.send(seq)
    link.port.send_eos()  # nobody to deliver to: returns, counted as lost by the supervisor
    assert link.sender.gone  # its doorbell was refused: no more datagrams to it
    assert link.sender.dropped >= 3
    link.consumer.usock = link.consumer.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)


def test_the_fast_path_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_FAST_PATH", "0")
    plan = EdgePlan("a", "o", "b", "i", 2, "block", "shm", 1, f"ipc://{tmp_path}/e")
    ctx: zmq.Context[Any] = zmq.Context()
    edge = open_input(ctx, plan, ShmReader())
    try:
        assert not isinstance(edge, UnixInputEdge) and edge.endpoint.startswith("ipc://")
    finally:
        edge.close()
        ctx.term()


def test_an_allocated_array_and_a_part_of_one_travel_without_a_copy(links, tmp_path):
    link = make(links, tmp_path, "block", 4)
    image = link.port.allocate((64, 128, 3))
    image[:] = np.arange(64, dtype=np.uint8)[:, None, None]
    link.port.send(Frame(image=image, seq=0, t_capture_ns=1, source="cam"))
    link.port.send(Frame(image=image[10:20], seq=1, t_capture_ns=1, source="cam"))  # rows
    link.port.end_call()
    whole, _, _ = link.recv()
    part, _, _ = link.recv()
    assert whole is not None and part is not None
    assert np.array_equal(whole.image, image) and np.array_equal(part.image, image[10:20])
    assert link.port.pool.slots and len(link.port.pool.slots) == 1  # one slot: no copy made


def test_a_consumer_that_just_took_a_message_spins_for_the_next_instead_of_sleeping(
    links, tmp_path, monkeypatch
):
    monkeypatch.setenv("PIPELINE_FAST_PATH_SPIN_US", "20000000")  # long enough for any load
    link = make(links, tmp_path, "block", 4)
    link.send(0)
    assert link.recv()[0] is not None  # the producer is known to be running now
    slept: list[bool] = []
    spinner = threading.Thread(target=lambda: slept.append(link.consumer.may_sleep()))
    spinner.start()
    wait_until_in(spinner, "wait")  # spinning on the ring's head
    link.send(1)
    spinner.join(30)
    assert slept == [False]  # the message came during the spin: no sleep
    assert not link.consumer.ctl[fastpath._C_SLEEPING // 8]  # and no doorbell asked for
    assert link.consumer.spin.hits == 1
    frame, _, _ = link.recv()
    assert frame is not None and frame.seq == 1


def test_a_consumer_sleeps_at_once_when_spinning_is_off_or_the_producer_is_quiet(
    links, tmp_path, monkeypatch
):
    monkeypatch.setenv("PIPELINE_FAST_PATH_SPIN_US", "0")
    link = make(links, tmp_path, "block", 4)
    link.send(0)
    assert link.recv()[0] is not None
    assert link.consumer.may_sleep()  # asked for the doorbell without spinning
    assert link.consumer.ctl[fastpath._C_SLEEPING // 8] == 1
    assert link.consumer.spin.hits == link.consumer.spin.misses == 0
    monkeypatch.setenv("PIPELINE_FAST_PATH_SPIN_US", "1000")
    quiet = make(links, tmp_path, "block", 4)
    assert quiet.consumer.may_sleep() is False  # it maps the ring first, then looks again
    quiet.send(0)
    assert quiet.recv()[0] is not None
    quiet.consumer._last_ns -= 10**9  # its last message came a second ago
    assert quiet.consumer.may_sleep()
    assert quiet.consumer.spin.hits == quiet.consumer.spin.misses == 0


def test_a_spin_that_sees_nothing_backs_off_doubling():
    ring = memoryview(bytearray(8)).cast("Q")
    spin = fastpath._Spin()
    spin.budget_ns = 200_000
    t0 = time.monotonic_ns()
    assert not spin.wait(ring, 0, 0)
    assert time.monotonic_ns() - t0 >= 200_000 and spin.misses == 1
    skipped = 0
    while spin.misses != 2:
        skipped += int(not spin.wait(ring, 0, 0) and spin.misses == 1)
    assert skipped == 1  # one skipped after the first miss, then two, four ... up to 64
    for _ in range(200):
        spin.wait(ring, 0, 0)
    assert spin.skip <= 64 and spin.backoff == 64
    ring[0] = 1
    spin.skip = 0
    assert spin.wait(ring, 0, 0) and spin.backoff == 1  # a hit: spinning is worth it again


def test_a_producer_waiting_for_an_awake_consumer_spins_for_the_credit(
    links, tmp_path, monkeypatch
):
    monkeypatch.setenv("PIPELINE_FAST_PATH_SPIN_US", "20000000")
    link = make(links, tmp_path, "block", 1)
    link.send(0)
    frame, n, _ = link.recv()
    del frame
    assert not link.consumer.ctl[fastpath._C_SLEEPING // 8]  # awake, holding our message
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(link.sender.wait_release(10_000)))
    waiter.start()
    wait_until_in(waiter, "wait")
    link.consumer.release(n)
    waiter.join(30)
    assert woke == [True] and link.sender.spin.hits == 1
    assert not link.sender.ctl[fastpath._P_SLEEPING // 8]  # it never asked for a doorbell
    assert not link.sender.inflight

"""Pacing of sources by the runtime: the schedule, the rate a pace gives, and the driver
holding a source to it (``pipeline.runtime.pacing``, ``NodeDriver.run_source``)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from pipeline import EndOfStream, Frame, Node, NodeParams, Output
from pipeline.runtime.pacing import FramePacer, pace_rate
from pipeline.testing import run_node


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 9))
        self.now += seconds


def test_frame_pacer_schedules_from_the_tick_number_without_drift() -> None:
    clock = FakeClock()
    pacer = FramePacer(10, clock=clock, sleep=clock.sleep)
    pacer.wait(0)  # the first tick is due at once
    assert clock.sleeps == []
    clock.now += 0.03  # the caller spent 30 ms on the frame
    pacer.wait(1)
    assert clock.sleeps == [pytest.approx(0.07)]  # due 0.1 s after tick 0, not after the work
    clock.now += 0.25  # late: tick 2 was due at 100.2, tick 3 at 100.3
    pacer.wait(2)
    assert len(clock.sleeps) == 1  # a late tick goes at once
    pacer.wait(4)  # a skipped tick (an undecodable frame) keeps its time slot
    assert clock.now == pytest.approx(100.4)


def test_frame_pacer_restarts_its_clock_after_falling_far_behind() -> None:
    clock = FakeClock()
    pacer = FramePacer(10, clock=clock, sleep=clock.sleep, max_lag_s=1.0)
    pacer.wait(0)
    clock.now += 5.0  # the consumer held the source up for 5 s
    pacer.wait(1)
    assert pacer.restarts == 1
    pacer.wait(2)  # paced from the restart, no burst of 49 frames
    assert clock.sleeps == [pytest.approx(0.1)]


def test_the_rate_of_a_pace():
    assert pace_rate("realtime", 25.0, None) == 25.0
    assert pace_rate("realtime", None, None) is None  # a camera paces itself
    assert pace_rate("fast", 25.0, None) is None
    assert pace_rate("fast", 25.0, 10.0) == 10.0  # max_fps caps either pace
    assert pace_rate("realtime", 25.0, 10.0) == 10.0
    assert pace_rate("realtime", 5.0, 10.0) == 5.0
    assert pace_rate("realtime", None, 10.0) == 10.0


class Ticker(Node):
    """A source with a frame rate of its own that counts to ``frames``."""

    class Params(NodeParams):
        fps: float | None = 50.0
        frames: int = 11

    frames = Output(Frame)

    def open(self) -> None:
        self.n = 0

    def frame_rate(self) -> float | None:
        return self.params.fps

    def process(self) -> None:
        if self.n >= self.params.frames:
            raise EndOfStream
        image = np.zeros((2, 2, 3), np.uint8)
        self.frames.send(Frame(image=image, seq=self.n, t_capture_ns=time.monotonic_ns()))
        self.n += 1


def span_s(run) -> float:
    stamps = [m.t_capture_ns for m in run.sent["frames"]]
    return (stamps[-1] - stamps[0]) / 1e9


def test_realtime_holds_a_source_to_its_own_rate():
    run = run_node(Ticker)  # pace: realtime is the default
    assert len(run.sent["frames"]) == 11
    assert 10 * 0.02 * 0.97 <= span_s(run) < 10 * 0.02 + 0.3


def test_fast_does_not_wait_and_max_fps_caps_it():
    t0 = time.monotonic()
    fast = run_node(Ticker, {"fps": 1.0}, pace="fast")
    assert time.monotonic() - t0 < 2  # 11 frames at 1 fps would take 10 s
    assert len(fast.sent["frames"]) == 11
    capped = run_node(Ticker, {"fps": 1000.0}, max_fps=50)
    assert span_s(capped) >= 10 * 0.02 * 0.97


def test_a_source_without_a_rate_is_not_held():
    t0 = time.monotonic()
    run = run_node(Ticker, {"fps": None, "frames": 200})
    assert len(run.sent["frames"]) == 200 and time.monotonic() - t0 < 2


def test_a_source_that_cannot_say_its_rate_fails_in_open():
    class NoRate(Ticker):
        def frame_rate(self) -> float | None:
            raise ValueError("no usable frame rate")

    run = run_node(NoRate, raise_errors=False)
    assert run.failed_in == "open" and run.calls == ["open"]
    assert str(run.error) == "no usable frame rate"
    fast = run_node(NoRate, pace="fast")  # not asked when it is not paced
    assert len(fast.sent["frames"]) == 11


def test_pacing_counts_as_busy_time():
    run = run_node(Ticker, {"fps": 100.0, "frames": 21})
    assert run.stats.busy_s >= 0.2 * 0.9

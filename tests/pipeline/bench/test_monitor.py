"""The bench monitor (warm-up, reset, window, stop) and the progress line, without processes."""

from __future__ import annotations

import io

from pipeline.bench.monitor import BenchMonitor, BenchSettings, Progress
from pipeline.runtime.stats import NodeStats


def snap(calls: int, elapsed: float, cpu_s: float = 0.0, state: str = "running") -> NodeStats:
    return NodeStats(
        node_id="x",
        state=state,
        inputs={},
        outputs={},
        calls=calls,
        process_ms={},
        latency_ms={},
        busy_s=0.0,
        elapsed_s=elapsed,
        counters={},
        cpu_s=cpu_s,
    )


def test_warmup_waits_for_frames_and_time_then_resets():
    m = BenchMonitor(["sink"], BenchSettings(warmup=20, frames=100, min_warmup_s=2.0))
    assert m.on_stats({"sink": snap(5, 0.5)}, 0.5) is None  # too few frames
    assert m.on_stats({"sink": snap(500, 1.0)}, 1.0) is None  # enough frames, too early
    assert m.on_stats({"sink": snap(900, 2.0)}, 2.0) == "reset"
    assert m.phase == "measuring" and m.reset_at_s == 2.0


def test_stale_figures_after_a_reset_do_not_end_the_window():
    samples = iter([(1, 10), (2, 20), (3, 30)])
    m = BenchMonitor(
        ["sink"],
        BenchSettings(warmup=20, frames=100, min_warmup_s=2.0),
        cpu_sampler=lambda: next(samples),
    )
    assert m.on_stats({"sink": snap(900, 2.0, cpu_s=1.0)}, 2.0) == "reset"
    assert m.cpu_start == (1, 10)
    # the sink has not reset yet: 1300 calls are warm-up calls, not 100 measured ones
    assert m.on_stats({"sink": snap(1300, 2.5, cpu_s=1.5)}, 2.5) is None
    assert "sink" not in m.baselines
    # now it has: elapsed went down; that first fresh report is the CPU baseline
    assert m.on_stats({"sink": snap(40, 0.4, cpu_s=1.7)}, 3.0) is None
    assert m.baselines["sink"] == (1.7, 0.4)
    assert m.on_stats({"sink": snap(120, 0.9, cpu_s=2.2)}, 3.5) == "stop"
    assert m.stop_reason == "frames"
    assert m.cpu_end == (2, 20)
    assert m.baselines["sink"] == (1.7, 0.4)  # kept from the first fresh report
    assert m.on_stats({"sink": snap(200, 1.4)}, 4.0) is None  # draining: nothing more to ask


def test_a_reset_is_also_seen_when_only_calls_went_down():
    m = BenchMonitor(["sink"], BenchSettings(warmup=1, frames=10, min_warmup_s=0.0))
    assert m.on_stats({"sink": snap(50, 0.5)}, 0.5) == "reset"
    # a later report with a longer window but fewer calls than before the reset
    assert m.on_stats({"sink": snap(8, 0.6)}, 1.1) is None
    assert "sink" in m.baselines


def test_duration_counts_from_the_reset():
    m = BenchMonitor(["sink"], BenchSettings(warmup=10, duration_s=3.0, min_warmup_s=2.0))
    assert m.on_stats({"sink": snap(100, 2.5)}, 2.5) == "reset"
    assert m.on_stats({"sink": snap(50, 0.5)}, 3.0) is None
    assert m.on_stats({"sink": snap(200, 2.9)}, 5.4) is None
    assert m.on_stats({"sink": snap(210, 3.0)}, 5.5) == "stop"
    assert m.stop_reason == "duration"


def test_without_warmup_the_window_starts_at_once():
    m = BenchMonitor(["a", "b"], BenchSettings(warmup=0, frames=100))
    assert m.phase == "measuring"
    # every sink must have seen the frames
    assert m.on_stats({"a": snap(150, 0.5), "b": snap(60, 0.5)}, 0.5) is None
    assert m.baselines == {"a": (0.0, 0.5), "b": (0.0, 0.5)}
    assert m.on_stats({"a": snap(300, 1.0), "b": snap(100, 1.0)}, 1.0) == "stop"


def test_default_window_is_ten_seconds():
    assert BenchSettings().window() == (10.0, None)
    assert BenchSettings(frames=5).window() == (None, 5)


def test_a_warmup_that_never_ends_stops_the_graph():
    m = BenchMonitor(["sink"], BenchSettings(warmup=10, warmup_timeout_s=5.0))
    assert m.on_stats({"sink": snap(0, 4.5)}, 4.5) is None
    assert m.on_stats({"sink": snap(0, 5.0)}, 5.0) == "stop"
    assert m.stop_reason == "warmup_timeout"


def test_progress_off_a_terminal_prints_a_line_per_phase_and_every_few_seconds():
    now = [0.0]
    out = io.StringIO()
    p = Progress(out, tty=False, every_s=5.0, clock=lambda: now[0])
    p.update("warmup", "warm-up 1/30")
    p.update("warmup", "warm-up 2/30")  # same phase, too soon: not printed
    now[0] = 1.0
    p.update("measuring", "measuring 0.5 s")  # new phase: printed
    now[0] = 6.5
    p.update("measuring", "measuring 6.0 s")  # 5 s later: printed
    p.finish()
    assert out.getvalue() == "warm-up 1/30\nmeasuring 0.5 s\nmeasuring 6.0 s\n"


def test_progress_on_a_terminal_redraws_one_line():
    out = io.StringIO()
    p = Progress(out, tty=True)
    p.update("warmup", "warm-up 10/30 frames")
    p.update("measuring", "measuring")
    p.finish()
    assert out.getvalue() == "\rwarm-up 10/30 frames\rmeasuring" + " " * 11 + "\n"


def test_monitor_shows_a_bar_while_measuring():
    out = io.StringIO()
    m = BenchMonitor(
        ["sink"], BenchSettings(warmup=0, duration_s=4.0), Progress(out, tty=False, every_s=0.0)
    )
    m.on_stats({"sink": snap(100, 1.0)}, 1.0)
    line = out.getvalue().splitlines()[-1]
    assert "[######------------------]  25%  1.0/4.0 s  100.0 frames/s" in line


def test_the_window_ends_only_once_every_node_has_reported_twice_since_the_reset():
    m = BenchMonitor(["sink"], BenchSettings(warmup=10, frames=100, min_warmup_s=0.0))
    before = {"camera": snap(5000, 1.0, state="running"), "sink": snap(4990, 1.0)}
    assert m.on_stats(before, 1.0) == "reset"
    # the sink has its frames, but the camera's figures are still from before the reset
    stale_camera = {"camera": snap(5600, 1.5, state="running"), "sink": snap(300, 0.5)}
    assert m.on_stats(stale_camera, 1.5) is None
    fresh = {"camera": snap(900, 0.9, state="running"), "sink": snap(600, 1.0)}
    assert m.on_stats(fresh, 2.0) is None  # the camera's CPU baseline is only now known
    again = {"camera": snap(1400, 1.4, state="running"), "sink": snap(1100, 1.5)}
    assert m.on_stats(again, 2.5) == "stop"
    assert m.baselines == {"camera": (0.0, 0.9), "sink": (0.0, 0.5)}


def test_a_node_that_has_ended_does_not_hold_the_window_open():
    m = BenchMonitor(["sink"], BenchSettings(warmup=0, frames=10))
    ended = {"camera": snap(50, 0.2, state="closed"), "sink": snap(50, 0.5)}
    assert m.on_stats(ended, 0.5) is None  # the sink's baseline is new
    ended["sink"] = snap(80, 1.0)
    assert m.on_stats(ended, 1.0) == "stop"

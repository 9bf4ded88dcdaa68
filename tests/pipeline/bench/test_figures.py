"""Bottleneck detection and the end-to-end figures, on made-up statistics."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline.bench.figures import find_bottleneck, node_figures, summarise
from pipeline.runtime.stats import Histogram
from tests.pipeline.bench.helpers import chain, stats

FOUR = chain(
    ("camera", "synthetic"), ("resize", "resize"), ("detector", "detector"), ("sink", "discard")
)
CASES = [
    pytest.param(
        # A lossless chain jammed behind the detector: everything before it waits inside
        # send() (busy ~100%), its queue is full, the sink idles.
        FOUR,
        {
            "camera": stats(1.0),
            "resize": stats(0.99, inputs={"frames": (1000, 0, 4)}),
            "detector": stats(0.97, inputs={"frames": (1000, 0, 4)}),
            "sink": stats(0.02, inputs={"messages": (1000, 0, 1)}),
        },
        {"camera": 30.0, "resize": 40.0, "detector": 99.0, "sink": 2.0},
        "detector",
        "saturated",
        "detector: busy 97% of the time (99% CPU), its input queue was full (peak 4/4) "
        "and resize waited on it",
        id="blocking-chain-jammed-behind-the-detector",
    ),
    pytest.param(
        # A camera-like source (paced) into a slow detector that drops the oldest frames:
        # the source waits for its frame times, not for the detector.
        chain(
            ("camera", "synthetic"),
            ("detector", "detector"),
            ("sink", "discard"),
            when_full="drop_oldest",
        ),
        {
            "camera": stats(1.0, calls=1300),
            "detector": stats(0.98, inputs={"frames": (1000, 300, 4)}),
            "sink": stats(0.01, inputs={"messages": (1000, 0, 1)}),
        },
        {},
        "detector",
        "saturated",
        "detector: busy 98% of the time, its input queue was full (peak 4/4) "
        "and 23% of frames were dropped before it",
        id="drop-oldest-before-a-slow-detector",
    ),
    pytest.param(
        # Nothing downstream is saturated and the source mostly sleeps: it sets the pace.
        chain(("camera", "synthetic"), ("resize", "resize"), ("sink", "discard")),
        {
            "camera": stats(1.0),
            "resize": stats(0.2, inputs={"frames": (1000, 0, 1)}),
            "sink": stats(0.01, inputs={"messages": (1000, 0, 1)}),
        },
        {"camera": 2.0},
        "camera",
        "source",
        "camera: the source sets the pace: busy 100% of the time at 2% CPU (it waits for its "
        "next frame or for its device), and no node after it is saturated (busiest: resize at 20%)",
        id="paced-source-sets-the-pace",
    ),
    pytest.param(
        # The source burns CPU making frames (decoding a video): it is the slowest stage.
        chain(("camera", "video_file"), ("resize", "resize"), ("sink", "discard")),
        {
            "camera": stats(0.99),
            "resize": stats(0.3, inputs={"frames": (1000, 0, 2)}),
            "sink": stats(0.01, inputs={"messages": (1000, 0, 1)}),
        },
        {"camera": 97.0},
        "camera",
        "source",
        "camera: the source is the slowest stage: busy 99% of the time (97% CPU) making frames, "
        "and no node after it is saturated (busiest: resize at 30%)",
        id="decoding-source-is-the-slowest-stage",
    ),
    pytest.param(
        # The sink's queue is full and the node before it waits, though the sink's process()
        # is nearly free: its per-message cost or CPU starvation holds the graph back.
        chain(("camera", "synthetic"), ("resize", "resize"), ("sink", "discard")),
        {
            "camera": stats(1.0),
            "resize": stats(0.9, inputs={"frames": (1000, 0, 4)}),
            "sink": stats(0.003, inputs={"messages": (1000, 0, 4)}),
        },
        {"sink": 12.0},
        "sink",
        "jam_end",
        "sink: its input queue was full (peak 4/4) and resize waited on it; it was busy in "
        "process() only 0.3% of the time (12% CPU), so its per-message cost outside process() "
        "or a lack of CPU time held it back",
        id="jam-ends-at-a-cheap-sink",
    ),
    pytest.param(
        # Nothing is near its limit: the overhead between nodes limits the throughput.
        chain(("camera", "synthetic"), ("resize", "resize"), ("sink", "discard")),
        {
            "camera": stats(0.5),
            "resize": stats(0.4, inputs={"frames": (1000, 0, 2)}),
            "sink": stats(0.01, inputs={"messages": (1000, 0, 1)}),
        },
        {},
        "camera",
        "none",
        "camera: busy only 50% of the time, the most of any node; no stage is saturated, so "
        "per-message overhead (transport, scheduling) or the sources' rate limits the throughput",
        id="nothing-saturated",
    ),
]


@pytest.mark.parametrize(("topo", "node_stats", "cpu", "node", "kind", "reason"), CASES)
def test_find_bottleneck(topo, node_stats, cpu, node, kind, reason):
    found = find_bottleneck(node_stats, topo, cpu)
    assert (found.node, found.kind) == (node, kind)
    assert found.reason == reason


def test_slow_branch_of_a_fan_out_is_the_bottleneck():
    topo = {
        "camera": {"type": "synthetic", "role": "source", "inputs": {}},
        "log": {
            "type": "jsonl",
            "role": "sink",
            "inputs": {"messages": {"from": "camera", "queue": 8, "when_full": "block"}},
        },
        "sink": {
            "type": "discard",
            "role": "sink",
            "inputs": {"messages": {"from": "camera", "queue": 4, "when_full": "block"}},
        },
    }
    node_stats = {
        "camera": stats(1.0),
        "log": stats(0.95, inputs={"messages": (1000, 0, 8)}),
        "sink": stats(0.01, inputs={"messages": (1000, 0, 1)}),
    }
    found = find_bottleneck(node_stats, topo)
    assert found.node == "log"
    assert "camera waited on it" in found.reason


def test_no_statistics_no_bottleneck():
    found = find_bottleneck({}, FOUR)
    assert found.node is None and found.kind == "none"


def test_node_figures_cpu_is_measured_from_the_window_baseline():
    s = stats(0.5, elapsed=10.0, calls=200, cpu_s=9.0, inputs={"frames": (200, 50, 3)})
    info = FOUR["resize"]
    f = node_figures(s, info, baseline=(4.0, 0.5))
    assert f["cpu_pct"] == pytest.approx(100 * 5.0 / 9.5, abs=0.05)
    assert f["fps"] == 20.0
    assert f["busy_pct"] == 50.0
    assert (f["queue_peak"], f["queue_capacity"]) == (3, 4)
    assert f["drop_pct"] == 20.0
    assert node_figures(s, info, baseline=None)["cpu_pct"] is None


def test_summarise_end_to_end_takes_the_slowest_sink_and_merges_latency():
    topo = {
        "camera": {"type": "synthetic", "role": "source", "inputs": {}},
        "a": {
            "type": "discard",
            "role": "sink",
            "inputs": {"messages": {"from": "camera", "queue": 4, "when_full": "drop_newest"}},
        },
        "b": {
            "type": "discard",
            "role": "sink",
            "inputs": {"messages": {"from": "camera", "queue": 4, "when_full": "block"}},
        },
    }
    fast, slow = Histogram(), Histogram()
    for _ in range(100):
        fast.add(0.010)
        slow.add(0.030)
    node_stats = {
        "camera": stats(1.0, calls=1000, sent=1000),
        "a": dataclasses.replace(
            stats(0.5, calls=900, inputs={"messages": (900, 100, 4)}), latency_hist=fast
        ),
        "b": dataclasses.replace(
            stats(0.2, calls=1000, inputs={"messages": (1000, 0, 1)}), latency_hist=slow
        ),
    }
    e2e = summarise(node_stats, topo)["end_to_end"]
    assert e2e["throughput_fps"] == 90.0
    assert e2e["frames"] == 900
    assert e2e["source_frames"] == 1000
    assert e2e["dropped"] == 100
    assert e2e["drop_pct"] == 10.0
    assert set(e2e["sinks"]) == {"a", "b"}
    # the merged histogram holds both sinks: its median sits between them, p95 at the slow one
    assert 10.0 <= e2e["latency_ms"]["p50_ms"] <= 30.0
    assert e2e["latency_ms"]["p95_ms"] == pytest.approx(30.0, rel=0.05)

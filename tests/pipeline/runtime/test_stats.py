"""Statistics: log-scale histograms and the typed record that crosses the wire."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.runtime.stats import Histogram, NodeStats, StatsCollector


@pytest.mark.parametrize("q", [50, 95, 99])
def test_histogram_percentiles_are_within_five_percent(q):
    rng = np.random.default_rng(0)
    samples = rng.lognormal(mean=-6, sigma=1.0, size=20000)
    h = Histogram()
    for s in samples:
        h.add(float(s))
    assert h.percentile(q) == pytest.approx(np.percentile(samples, q), rel=0.05)
    assert h.count == 20000


def test_histogram_roundtrips_through_a_dict_and_merges():
    h = Histogram()
    for s in (0.001, 0.002, 0.003):
        h.add(s)
    back = Histogram.from_dict(h.to_dict())
    assert back.percentile(50) == h.percentile(50)
    back.merge(h)
    assert back.count == 6


def test_node_stats_cross_the_wire_with_their_histograms():
    collector = StatsCollector("det", ["frames"], ["detections"])
    collector.received["frames"] = 7
    collector.calls = 7
    for ms in (1, 2, 3, 40):
        collector.process.add(ms / 1e3)
    wire = collector.to_wire(0.0)
    back = NodeStats.from_wire(json.loads(json.dumps(wire)))
    assert back.inputs["frames"].received == 7 and back.calls == 7
    assert back.process_hist is not None and back.process_hist.count == 4
    assert back.process_hist.percentile(50) == pytest.approx(0.002, rel=0.05)
    here = collector.snapshot(0.0).to_dict()
    assert {k: v for k, v in back.to_dict().items() if k not in ("cpu_s", "max_rss_mb")} == {
        k: v for k, v in here.items() if k not in ("cpu_s", "max_rss_mb")
    }
    assert "process_hist" not in back.to_dict() and "process_hist" in back.to_wire()

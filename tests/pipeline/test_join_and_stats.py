"""The seq joiner and the statistics histogram."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.runtime.join import Joiner
from pipeline.runtime.stats import Histogram
from pipeline.testing import make_frame


def test_joiner_waits_for_every_input():
    j: Joiner[int] = Joiner(["a", "b"])
    j.push("a", make_frame(seq=0), 10)
    assert j.pop() == (None, [])
    j.push("b", make_frame(seq=0), 20)
    ready, lost = j.pop()
    assert ready is not None and {k: v[1] for k, v in ready.items()} == {"a": 10, "b": 20}
    assert lost == []


def test_joiner_drops_heads_that_can_no_longer_match():
    j: Joiner[int] = Joiner(["a", "b"])
    for s in (0, 1, 2):
        j.push("a", make_frame(seq=s), s)
    j.push("b", make_frame(seq=2), 102)
    ready, lost = j.pop()
    assert ready is not None and ready["a"][0].seq == 2
    assert lost == [("a", 0), ("a", 1)]


def test_joiner_drops_what_waits_when_another_input_ended():
    j: Joiner[int] = Joiner(["a", "b"])
    j.push("a", make_frame(seq=5), 5)
    j.end("b")
    ready, lost = j.pop()
    assert ready is None and lost == [("a", 5)]
    j.end("a")
    assert j.all_ended


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

"""Joining several inputs on seq."""

from __future__ import annotations

from pipeline.runtime.join import Joiner
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

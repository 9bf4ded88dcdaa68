"""The uploader's policy and its durable spool (no server needed)."""

from __future__ import annotations

import collections
import subprocess
import sys

import numpy as np
import pytest

from pipeline import Detections
from pipeline_nodes.sinks.spool import Spool
from pipeline_nodes.sinks.uploader import should_take


def _dets(*confidences: float) -> Detections:
    n = len(confidences)
    return Detections(
        xyxy=np.tile(np.array([[0.1, 0.1, 0.2, 0.2]], np.float32), (n, 1)),
        confidence=np.array(confidences, np.float32),
        class_id=np.zeros(n, np.int32),
        class_names=["face"] * n,
    )


@pytest.mark.parametrize(
    ("n_seen", "every_n", "dets", "min_conf", "expected"),
    [
        (1, 3, None, None, None),  # the first of every 3 is taken
        (2, 3, None, None, "every_n"),
        (4, 3, None, None, None),
        (1, 1, None, 0.5, "confidence"),  # no detections at all
        (1, 1, _dets(), 0.5, "confidence"),  # an empty Detections
        (1, 1, _dets(0.3, 0.49), 0.5, "confidence"),
        (1, 1, _dets(0.3, 0.5), 0.5, None),  # one at the threshold is enough
    ],
)
def test_should_take_policy(n_seen, every_n, dets, min_conf, expected):
    recent: collections.deque[float] = collections.deque()
    assert should_take(n_seen, every_n, dets, min_conf, recent, None, 0.0) == expected


def test_should_take_caps_frames_per_minute():
    recent: collections.deque[float] = collections.deque()
    taken = []
    for second in range(0, 180, 5):  # one frame every 5 s for 3 minutes, at most 4 a minute
        if should_take(1, 1, None, None, recent, 4, float(second)) is None:
            recent.append(float(second))
            taken.append(second)
    assert len(taken) == 12
    for t in taken:
        assert sum(1 for u in taken if t <= u < t + 60) <= 4


def test_spool_keeps_records_across_instances_oldest_first(tmp_path):
    spool = Spool(tmp_path, 1 << 20)
    ids = [spool.put({"n": i}, bytes([i]) * 10)[0] for i in range(3)]
    spool.close()
    again = Spool(tmp_path, 1 << 20)
    assert again.backlog == 3
    first = again.oldest()
    assert first is not None
    assert (first.id, first.header["n"], first.payload) == (ids[0], 0, b"\0" * 10)
    assert again.remove(first)
    nxt = again.oldest()
    assert nxt is not None
    assert nxt.id == ids[1]
    # New records continue the order after a restart.
    new_id, _ = again.put({"n": 3}, b"x")
    files = sorted(p.name for p in tmp_path.glob("*.rec"))
    assert files[-1].endswith(f"-{new_id}.rec")


def test_full_spool_drops_oldest_but_never_the_record_in_flight(tmp_path):
    record_size = 4 + 40 + 1000  # about: header length, JSON header, payload
    spool = Spool(tmp_path, 3 * record_size + 100)
    ids = [spool.put({"n": i}, b"p" * 1000)[0] for i in range(3)]
    in_flight = spool.oldest()
    assert in_flight is not None
    assert in_flight.id == ids[0]
    _, dropped = spool.put({"n": 3}, b"p" * 1000)
    assert dropped == 1
    assert spool.dropped == 1
    remaining = {p.name.split("-", 1)[1][:-4] for p in tmp_path.glob("*.rec")}
    assert ids[0] in remaining  # being sent: kept
    assert ids[1] not in remaining  # the oldest waiting one went
    too_big_id, dropped = spool.put({}, b"x" * (10 * record_size))
    assert dropped == 1
    assert too_big_id not in {p.name for p in tmp_path.glob("*.rec")}


def test_spool_removes_half_written_records_and_refuses_a_second_writer(tmp_path):
    (tmp_path / ".00000000000000000001-x.rec.tmp").write_bytes(b"half")
    spool = Spool(tmp_path, 1 << 20)
    assert spool.backlog == 0
    assert not list(tmp_path.glob("*.tmp"))
    other = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from pipeline_nodes.sinks.spool import Spool; Spool(__import__('pathlib').Path({str(tmp_path)!r}), 100)",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert other.returncode != 0
    assert "is in use by process" in other.stderr
    spool.close()


def test_an_unreadable_record_is_dropped_and_counted(tmp_path):
    spool = Spool(tmp_path, 1 << 20)
    spool.put({"n": 0}, b"a")
    good, _ = spool.put({"n": 1}, b"b")
    first = sorted(tmp_path.glob("*.rec"))[0]
    first.write_bytes(b"\x00\x00\x00\x05{bad")
    record = spool.oldest()
    assert record is not None
    assert record.id == good
    assert (spool.dropped, spool.unreadable) == (1, 1)
    assert not first.exists()
    spool.close()

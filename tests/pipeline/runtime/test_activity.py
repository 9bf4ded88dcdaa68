"""The activity board: what each node is in, read safely while the node writes it."""

from __future__ import annotations

import struct
import time

from pipeline.runtime.activity import RECORD_SIZE, Activity, ActivityBoard


def test_a_call_is_read_with_its_method_seq_and_start(tmp_path):
    board = ActivityBoard(tmp_path / "activity", 3)
    node = Activity(tmp_path / "activity", 2)
    assert board.read(2) == ("idle", None, 0)
    before = time.monotonic_ns()
    node.begin("process", 41)
    method, seq, since = board.read(2)
    assert (method, seq) == ("process", 41)
    assert before <= since <= time.monotonic_ns()
    node.end()
    assert board.read(2) == ("idle", None, 0)
    assert board.read(0) == ("idle", None, 0)  # other nodes' records are untouched
    node.close()
    board.close()


def test_a_record_being_written_is_not_taken_for_a_call_from_time_zero(tmp_path):
    # A writer preempted between the method and the start time (a busy machine) once made a
    # node look stuck for as long as the machine had been up.
    board = ActivityBoard(tmp_path / "activity", 1)
    node = Activity(tmp_path / "activity", 0)
    node.begin("process", 7)
    node.end()
    with open(tmp_path / "activity", "r+b") as f:
        f.write(struct.pack("<I", 5))  # odd version: a write in progress
        f.write(struct.pack("<i", 2))  # method 'process' written, start time not yet
    assert board.read(0) is None  # unknown for now, never "since 0"
    with open(tmp_path / "activity", "r+b") as f:
        f.write(struct.pack("<I", 6))  # whole again, but the start is 0: not a real call
    assert board.read(0) == ("idle", None, 0)
    node.close()
    board.close()


def test_versions_wrap_and_keep_their_parity(tmp_path):
    board = ActivityBoard(tmp_path / "activity", 1)
    node = Activity(tmp_path / "activity", 0)
    node._version = 0xFFFFFFFE
    node.begin("close")
    assert board.read(0)[0] == "close"
    assert RECORD_SIZE == 32
    node.close()
    board.close()

"""Tests of the JSONL sink: records of detections and classifications, rotation by size, and
output that survives a failed start, a kill and a power cut."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline import Classifications, Detections, Tensors
from pipeline.testing import make_frame, run_node
from pipeline_nodes.files import partial_path, writable_folder
from pipeline_nodes.sinks.jsonl import JsonlSink, message_record, rotate


def two_people(image_wh=(640, 480)) -> Detections:
    return Detections(
        xyxy=[[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 1.0, 1.0]],
        confidence=[0.9, 0.42],
        class_id=[0, 0],
        class_names=["person", "person"],
        keypoints=np.array([[[0.15, 0.25]], [[0.75, 0.75]]], np.float32),
        image_wh=image_wh,
        seq=7,
        source="cam",
        t_capture_ns=123,
    )


def test_detections_record_has_labelled_boxes_normalised_and_in_pixels():
    record = message_record(two_people())
    assert (record["kind"], record["seq"], record["source"]) == ("detections", 7, "cam")
    assert record["image_wh"] == [640, 480]
    first, second = record["detections"]
    assert first == {
        "label": "person",
        "class_id": 0,
        "confidence": pytest.approx(0.9),
        "xyxy": pytest.approx([0.1, 0.2, 0.3, 0.4]),
        "xyxy_px": pytest.approx([64.0, 96.0, 192.0, 192.0]),
        "keypoints": [[0.15, 0.25]],  # rounded to 6 digits: float32 noise is gone
    }
    assert second["xyxy_px"] == pytest.approx([320.0, 240.0, 640.0, 480.0])
    assert "xyxy" not in record  # no raw arrays besides the structured list
    json.dumps(record)


def test_detections_record_has_no_pixels_when_the_image_size_is_unknown():
    dets = Detections(xyxy=[[0, 0, 1, 1]], confidence=[1.0], class_id=[3], seq=1)
    (only,) = message_record(dets)["detections"]
    assert only == {"label": "3", "class_id": 3, "confidence": 1.0, "xyxy": [0, 0, 1, 1]}


def test_classifications_record_lists_labels_best_first():
    c = Classifications(class_names=["cat", "dog"], confidence=[0.8, 0.1], class_id=[5, 2])
    assert message_record(c)["classifications"] == [
        {"label": "cat", "class_id": 5, "confidence": pytest.approx(0.8)},
        {"label": "dog", "class_id": 2, "confidence": pytest.approx(0.1)},
    ]


def test_other_messages_keep_fields_and_summarise_big_arrays():
    t = Tensors(tensors={"small": np.arange(3, dtype=np.float32), "big": np.zeros((100, 100))})
    record = message_record(t)
    assert record["small"] == [0.0, 1.0, 2.0]
    assert record["big"] == {"shape": [100, 100], "dtype": "<f8"}
    assert record["order"] == ["small", "big"]
    frame = message_record(make_frame(64, 48))
    assert frame["image"] == {"shape": [48, 64, 3], "dtype": "|u1"}


def test_sink_writes_one_line_per_message_with_latency(tmp_path):
    path = tmp_path / "logs" / "out.jsonl"
    dets = [two_people().replace(seq=i, meta={"note": b"\x01"}) for i in range(3)]
    run_node(JsonlSink, {"path": str(path)}, inputs={"messages": dets})
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["seq"] for line in lines] == [0, 1, 2]
    assert all(len(line["detections"]) == 2 for line in lines)
    assert all(line["latency_ms"] > 0 for line in lines)
    assert lines[0]["meta"] == {"note": "01"}  # bytes in meta are written as hex


def test_rotate_shifts_backups_and_drops_the_oldest(tmp_path):
    path = tmp_path / "log.jsonl"
    for name, text in [("log.jsonl", "new"), ("log.jsonl.1", "old"), ("log.jsonl.2", "older")]:
        (tmp_path / name).write_text(text)
    rotate(path, backups=2)
    assert not path.exists()
    assert (tmp_path / "log.jsonl.1").read_text() == "new"
    assert (tmp_path / "log.jsonl.2").read_text() == "old"
    assert not (tmp_path / "log.jsonl.3").exists()  # "older" fell off


def test_rotate_without_backups_removes_the_file(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text("x")
    rotate(path, backups=0)
    assert list(tmp_path.iterdir()) == []


def test_sink_rotates_by_size_and_keeps_the_newest_lines(tmp_path):
    path = tmp_path / "log.jsonl"
    messages = [two_people().replace(seq=i) for i in range(40)]
    run_node(
        JsonlSink,
        {"path": str(path), "max_bytes": 2000, "backups": 2},
        inputs={"messages": messages},
    )
    files = [path, path.with_name("log.jsonl.1"), path.with_name("log.jsonl.2")]
    assert not path.with_name("log.jsonl.3").exists()
    seqs = []
    for file in reversed(files):  # oldest backup first
        assert 0 < file.stat().st_size <= 2000
        seqs += [json.loads(line)["seq"] for line in file.read_text().splitlines()]
    line_size = len(path.read_text().splitlines()[0]) + 1
    assert seqs == list(range(40 - len(seqs), 40))  # the newest lines, in order, none torn
    assert len(seqs) >= 3 * (2000 // line_size) - 3


def test_append_continues_the_size_count(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text("x" * 1990 + "\n")
    run_node(
        JsonlSink,
        {"path": str(path), "append": True, "max_bytes": 2000, "backups": 1},
        inputs={"messages": [two_people()]},
    )
    assert path.with_name("log.jsonl.1").read_text() == "x" * 1990 + "\n"
    assert json.loads(path.read_text())["seq"] == 7


def test_unwritable_folder_fails_open_naming_node_and_folder(tmp_path):
    (tmp_path / "a_file").write_text("")
    run = run_node(
        JsonlSink,
        {"path": str(tmp_path / "a_file" / "log.jsonl")},
        inputs={"messages": []},
        node_id="log",
        raise_errors=False,
    )
    assert run.failed_in == "open"
    assert "'log'" in str(run.error)
    assert "set 'path'" in str(run.error)


def test_writable_folder_is_created(tmp_path):
    folder = writable_folder(tmp_path / "a" / "b", node_id="n", param="folder")
    assert folder.is_dir()
    assert list(folder.iterdir()) == []  # the probe file is gone


# what was written survives --------------------------------------------------------------------


YESTERDAY = '{"seq": 1, "note": "yesterday"}\n'


def test_a_run_without_records_leaves_the_previous_file(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text(YESTERDAY)
    run = run_node(JsonlSink, {"path": str(path)}, inputs={"messages": []})
    assert run.calls == ["open", "flush", "close"]
    assert path.read_text() == YESTERDAY
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.jsonl"]  # no partial left


def test_the_first_record_replaces_the_old_file_and_each_line_is_flushed(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text(YESTERDAY)
    node = JsonlSink(JsonlSink.Params(path=str(path), fsync_interval_s=3600), node_id="log")
    node.open()
    assert path.read_text() == YESTERDAY  # open() alone changes nothing
    node.process(messages=two_people().replace(seq=1))
    # the new file, with its first line, took the old one's place in one rename
    assert [json.loads(line)["seq"] for line in path.read_text().splitlines()] == [1]
    assert not partial_path(path).exists()
    node.process(messages=two_people().replace(seq=2))
    # flushed per record: another reader sees both lines before close()
    assert [json.loads(line)["seq"] for line in path.read_text().splitlines()] == [1, 2]
    node.close()


def test_lines_are_synced_at_most_fsync_interval_after_writing(tmp_path, monkeypatch):
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    path = tmp_path / "log.jsonl"
    messages = [two_people().replace(seq=i) for i in range(5)]
    run_node(JsonlSink, {"path": str(path), "fsync_interval_s": 0}, inputs={"messages": messages})
    assert len(synced) >= 5  # every line, then the folder at the end
    synced.clear()
    run_node(
        JsonlSink, {"path": str(path), "fsync_interval_s": 3600}, inputs={"messages": messages}
    )
    # the folder after the first line's rename, then the file and the folder at close
    assert len(synced) == 3


def test_append_keeps_the_old_lines_and_adds_after_them(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text(YESTERDAY)
    run_node(JsonlSink, {"path": str(path), "append": True}, inputs={"messages": [two_people()]})
    lines = path.read_text().splitlines()
    assert lines[0] == YESTERDAY.strip()
    assert json.loads(lines[1])["seq"] == 7


def children(pid: int) -> list[int]:
    """Child processes of ``pid`` (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def holder_of(path: Path, parent: int) -> int | None:
    """The child of ``parent`` that has ``path`` open (the node that writes it)."""
    for child in children(parent):
        try:
            fds = list(Path(f"/proc/{child}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == str(path):
                    return child
            except OSError:
                continue
    return None


LOG_GRAPH = """
    graph: log
    nodes:
      - {id: camera, node: synthetic, params: {width: 64, height: 48, fps: 200, frames: 0}}
      - id: log
        node: jsonl
        params: {path: {tmp}/log.jsonl}
        inputs: {messages: camera/frames}
"""


def start(graph: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "run", str(graph), "--no-live", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


SLOW_FAIL = """
import time

from pipeline import Frame, Input, Node


class CameraTimesOut(Node):
    frames = Input(Frame)

    def open(self) -> None:
        time.sleep(2.0)  # every other node has opened by now
        raise TimeoutError("the camera did not answer in 2 s")

    def process(self, frames: Frame) -> None:
        pass
"""


@pytest.mark.integration
def test_a_graph_that_fails_to_start_keeps_the_previous_output(write_graph, tmp_path):
    (tmp_path / "log.jsonl").write_text(YESTERDAY)
    (tmp_path / "slow_fail.py").write_text(SLOW_FAIL)
    graph = write_graph(
        LOG_GRAPH
        + """
      - id: broken
        node: slow_fail:CameraTimesOut
        inputs: {frames: camera/frames}
"""
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "run", str(graph), "--no-live"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,  # slow_fail.py is found in the current folder
    )
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out
    assert "the camera did not answer" in out
    assert (tmp_path / "log.jsonl").read_text() == YESTERDAY


@pytest.mark.integration
def test_sigkilled_writer_loses_no_line_it_received(write_graph, tmp_path, shm_segments):
    path = tmp_path / "log.jsonl"
    proc = start(write_graph(LOG_GRAPH))
    try:
        deadline = time.monotonic() + 30
        while not path.exists() or len(path.read_text().splitlines()) < 50:
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "no lines appeared"
            time.sleep(0.05)
        writer = holder_of(path, proc.pid)
        assert writer is not None
        os.kill(writer, signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "node 'log' was killed by SIGKILL" in out
    text = path.read_text()
    assert text.endswith("\n")  # no torn line
    seqs = [json.loads(line)["seq"] for line in text.splitlines()]
    assert len(seqs) >= 50
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # none missing in between
    assert shm_segments(proc.pid) == []

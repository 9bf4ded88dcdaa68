"""Tests of the video writer: codec choice, the files it writes, and a file that survives Ctrl-C."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import struct
import subprocess
import sys
import time
from contextlib import nullcontext as does_not_raise
from pathlib import Path

import av
import cv2
import numpy as np
import pydantic
import pytest

from pipeline import Frame
from pipeline.testing import run_node
from pipeline_nodes.sinks.video_writer import VideoWriterSink, choose_codec, video_fps
from pipeline_nodes.sources.synthetic import SyntheticSource


@pytest.mark.parametrize(
    ("path", "codec", "h264", "expected", "raises"),
    [
        ("out/a.mp4", None, True, ("mp4", "h264", True), does_not_raise()),
        ("out/a.MP4", None, True, ("mp4", "h264", True), does_not_raise()),  # any case
        ("a.m4v", None, True, ("mp4", "h264", True), does_not_raise()),
        ("a.mov", None, True, ("mov", "h264", True), does_not_raise()),
        ("a.avi", None, True, ("avi", "mjpeg", False), does_not_raise()),  # not fragmented
        # an explicit codec wins over the extension's default
        ("a.mp4", "mpeg4", True, ("mp4", "mpeg4", True), does_not_raise()),
        # no H.264 encoder in this FFmpeg: MPEG-4 part 2 instead
        ("a.mp4", None, False, ("mp4", "mpeg4", True), does_not_raise()),
        ("a.mp4", "h264", False, ("mp4", "mpeg4", True), does_not_raise()),
        # a codec the container cannot hold
        ("a.avi", "h264", True, None, pytest.raises(ValueError, match=r"does not go in a \.avi")),
        ("a.mp4", "mjpeg", True, None, pytest.raises(ValueError, match=r"mjpeg in \.avi")),
        # unknown extension
        ("a.webm", None, True, None, pytest.raises(ValueError, match=r"'\.webm'")),
        ("video", None, True, None, pytest.raises(ValueError, match="without extension")),
    ],
)
def test_choose_codec(path, codec, h264, expected, raises):
    with raises:
        assert choose_codec(path, codec, h264) == expected


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({"video_fps": 12.5}, 12.5),  # the source's rate
        ({}, 30.0),  # no rate: the default
        ({"video_fps": 0}, 30.0),  # unknown (0) rate from a container
        ({"video_fps": float("nan")}, 30.0),
        ({"video_fps": "fast"}, 30.0),
        ({"video_fps": 90000}, 30.0),  # a time base, not a rate
    ],
)
def test_video_fps(meta, expected):
    assert video_fps(meta, 30.0) == expected


def test_codec_param_is_one_of_the_known_codecs():
    with pytest.raises(pydantic.ValidationError, match="codec"):
        VideoWriterSink.Params(path="a.avi", codec="MJPG")


def synthetic_frames(n: int, width: int = 160, height: int = 120) -> list[Frame]:
    return run_node(
        SyntheticSource, {"width": width, "height": height, "fps": 0, "frames": n}
    ).sent["frames"]


def read_video(path: Path) -> tuple[list[np.ndarray], float]:
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), f"cannot open {path}"
    fps = capture.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    capture.release()
    return frames, fps


@pytest.mark.parametrize("name", ["clip.mp4", "clip.avi"])
def test_writes_every_frame_at_the_params_fps(tmp_path, name):
    frames = synthetic_frames(20)
    path = tmp_path / "videos" / name  # the folder is created
    run = run_node(VideoWriterSink, {"path": str(path), "fps": 15}, inputs={"frames": frames})
    assert run.calls[-1] == "close"
    images, fps = read_video(path)
    assert len(images) == 20
    assert fps == pytest.approx(15.0)
    assert images[0].shape == (120, 160, 3)
    for original, decoded in zip(frames, images):
        # lossy, but each decoded frame is its own frame (the square moves)
        assert np.abs(original.image.astype(int) - decoded.astype(int)).mean() < 8


def test_rate_comes_from_the_source_meta(tmp_path):
    frames = [f.replace(meta={"video_fps": 12.5}) for f in synthetic_frames(5)]
    path = tmp_path / "clip.mp4"
    run_node(VideoWriterSink, {"path": str(path)}, inputs={"frames": frames})
    assert read_video(path)[1] == pytest.approx(12.5)


def test_other_sizes_and_colours_are_fitted_to_the_first_frame(tmp_path):
    first = Frame(image=np.full((48, 64, 3), 200, np.uint8), seq=0)
    bigger = Frame(image=np.full((96, 128, 3), 200, np.uint8), seq=1)
    grey = Frame(image=np.full((48, 64), 200, np.uint8), seq=2)
    rgb = Frame(image=np.full((48, 64, 3), (0, 0, 255), np.uint8), seq=3, meta={"color": "rgb"})
    path = tmp_path / "mixed.avi"
    run = run_node(
        VideoWriterSink, {"path": str(path)}, inputs={"frames": [first, bigger, grey, rgb]}
    )
    assert run.stats.counters == {"resized": 1}
    images, _ = read_video(path)
    assert [i.shape for i in images] == [(48, 64, 3)] * 4
    assert abs(int(images[2].mean()) - 200) < 6  # grey became BGR
    b, _, r = images[3].reshape(-1, 3).mean(axis=0)
    assert b > 200 and r < 40  # RGB blue stays blue


def test_no_frame_leaves_no_file(tmp_path):
    path = tmp_path / "empty.mp4"
    run = run_node(VideoWriterSink, {"path": str(path)}, inputs={"frames": []})
    assert run.calls == ["open", "flush", "close"]
    assert list(tmp_path.iterdir()) == []  # open()'s codec probe is removed too


def test_an_existing_video_stays_until_the_first_frame(tmp_path):
    path = tmp_path / "old.avi"
    path.write_bytes(b"yesterday's recording")
    run_node(VideoWriterSink, {"path": str(path)}, inputs={"frames": []})
    assert path.read_bytes() == b"yesterday's recording"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        # the folder would be under a file
        ("{tmp}/a_file/video.mp4", "cannot write in the folder"),
        # the path is a folder
        ("{tmp}", "is a folder"),
        # no codec for the extension
        ("{tmp}/video.webm", "no video container is known for '.webm'"),
    ],
)
def test_bad_path_fails_open_naming_the_node(tmp_path, path, message):
    (tmp_path / "a_file").write_text("not a folder")
    path = path.replace("{tmp}", str(tmp_path))
    run = run_node(
        VideoWriterSink, {"path": path}, inputs={"frames": []}, node_id="rec", raise_errors=False
    )
    assert run.failed_in == "open"
    assert run.calls == ["open"]
    assert "'rec'" in str(run.error)
    assert message in str(run.error)


@pytest.mark.integration
def test_file_is_complete_after_ctrl_c(write_graph, tmp_path, shm_segments):
    graph = write_graph("""
        graph: record_live
        nodes:
          - {id: camera, node: synthetic, params: {width: 160, height: 120, fps: 30, frames: 0}}
          - id: rec
            node: pipeline_nodes.sinks.video_writer:VideoWriterSink
            params: {path: {tmp}/live.mp4}
            inputs: {frames: camera/frames}
    """)
    stats_json = tmp_path / "stats.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "run",
            str(graph),
            "--no-live",
            "--stats-json",
            str(stats_json),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    video = tmp_path / "live.mp4"
    try:
        deadline = time.monotonic() + 30
        while not video.exists():  # the writer opens the file on the first frame
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the video never appeared"
            time.sleep(0.05)
        first = video.stat().st_size
        while video.stat().st_size <= first:  # a later fragment (1 s, ~30 frames) is written
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the video never grew"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, out  # stopped by Ctrl-C, drained
    assert shm_segments(proc.pid) == []
    received = json.loads(stats_json.read_text())["nodes"]["rec"]["inputs"]["frames"]["received"]
    images, fps = read_video(video)
    assert received > 10
    assert len(images) == received  # every frame that reached the writer is in the file
    assert fps == pytest.approx(30.0)


# a file that survives a kill ------------------------------------------------------------------


def top_level_boxes(path: Path) -> list[str]:
    """The MP4 boxes at the top of the file, in order (ftyp, moov, moof, mdat, ...)."""
    data = path.read_bytes()
    boxes, at = [], 0
    while at + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[at : at + 8])
        boxes.append(kind.decode("ascii"))
        if size < 8:
            break
        at += size
    return boxes


def test_mp4_is_fragmented_h264_with_a_keyframe_each_fragment(tmp_path):
    path = tmp_path / "clip.mp4"
    frames = synthetic_frames(50)
    run_node(
        VideoWriterSink, {"path": str(path), "fps": 10, "fragment_s": 2}, inputs={"frames": frames}
    )
    boxes = top_level_boxes(path)
    assert boxes[:2] == ["ftyp", "moov"]  # the header first: playable from the start
    assert boxes.count("moof") == 3  # 50 frames, a fragment every 20
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"  # what browsers play
        assert stream.codec_context.pix_fmt == "yuv420p"
        keyframes = [i for i, p in enumerate(container.demux(stream)) if p.is_keyframe]
    assert keyframes == [0, 20, 40]


def test_each_finished_fragment_is_synced_to_the_disk(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(Path(os.readlink(f"/proc/self/fd/{fd}")).name)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    run_node(
        VideoWriterSink,
        {"path": str(tmp_path / "clip.mp4"), "fps": 10, "fragment_s": 1},
        inputs={"frames": synthetic_frames(35)},
    )
    # fragments end at frames 10 (then the file is renamed: its folder is synced), 20 and 30;
    # the last one ends at close
    partial, folder = ".clip.mp4.partial", tmp_path.name
    assert synced == [partial, folder, "clip.mp4", "clip.mp4", "clip.mp4", folder]


def test_an_existing_video_is_replaced_only_once_a_fragment_is_complete(tmp_path):
    path = tmp_path / "old.mp4"
    path.write_bytes(b"yesterday's recording")
    node = VideoWriterSink(
        VideoWriterSink.Params(path=str(path), fps=10, fragment_s=1), node_id="rec"
    )
    node.open()
    frames = synthetic_frames(12)
    for frame in frames[:10]:  # the first fragment is not finished yet
        node.process(frames=frame)
    assert path.read_bytes() == b"yesterday's recording"
    node.process(frames=frames[10])  # a keyframe: fragment one is complete
    assert top_level_boxes(path)[:3] == ["ftyp", "moov", "moof"]
    node.process(frames=frames[11])
    node.close()
    assert len(read_video(path)[0]) == 12
    assert [p.name for p in tmp_path.iterdir()] == ["old.mp4"]  # no partial file left


def test_a_short_run_replaces_the_old_video_at_close(tmp_path):
    path = tmp_path / "old.mp4"
    path.write_bytes(b"yesterday's recording")
    run_node(VideoWriterSink, {"path": str(path)}, inputs={"frames": synthetic_frames(3)})
    assert len(read_video(path)[0]) == 3


def test_odd_sizes_are_cropped_to_even_ones(tmp_path):
    path = tmp_path / "odd.mp4"
    frames = [Frame(image=np.full((49, 65, 3), 120, np.uint8), seq=i) for i in range(3)]
    run = run_node(VideoWriterSink, {"path": str(path)}, inputs={"frames": frames})
    assert run.stats.counters == {}  # cropped by a pixel, not resized
    images, _ = read_video(path)
    assert [i.shape for i in images] == [(48, 64, 3)] * 3


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def holder_of(path: Path, parent: int) -> int | None:
    """The child of ``parent`` that has ``path`` open for writing: the node writing it."""
    for child in children(parent):
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{child}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) == str(path):
                        return child
    return None


@pytest.mark.integration
def test_sigkilled_writer_leaves_a_playable_video_missing_at_most_the_last_fragment(
    write_graph, tmp_path, shm_segments
):
    # the same frames go to the video and to a jsonl log: the log's lines tell how many
    # frames the writer had been given when it was killed
    graph = write_graph("""
        graph: record_and_kill
        nodes:
          - {id: camera, node: synthetic, params: {width: 320, height: 240, fps: 30, frames: 0}}
          - id: rec
            node: video_writer
            params: {path: {tmp}/live.mp4, fragment_s: 0.5}
            inputs: {frames: {from: camera/frames, queue: 2}}
          - id: log
            node: jsonl
            params: {path: {tmp}/live.jsonl}
            inputs: {messages: {from: camera/frames, queue: 2}}
    """)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "run", str(graph), "--no-live"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    video, log = tmp_path / "live.mp4", tmp_path / "live.jsonl"
    try:
        deadline = time.monotonic() + 40
        while top_level_boxes(video).count("moof") < 4 if video.exists() else True:
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "four fragments were never written"
            time.sleep(0.05)
        writer = holder_of(tmp_path / "live.mp4", proc.pid)
        assert writer is not None
        os.kill(writer, signal.SIGKILL)
        given = len(log.read_text().splitlines())  # frames the camera had sent by now
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "node 'rec' was killed by SIGKILL" in out
    assert shm_segments(proc.pid) == []
    assert not (tmp_path / ".live.mp4.partial").exists()
    with av.open(str(video)) as container:  # plays: every frame decodes
        decoded = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    assert len(decoded) >= 4 * 15
    assert decoded[0].shape == (240, 320, 3)
    # at most the last fragment (15 frames), plus the frames in flight on the two edges
    assert given - len(decoded) <= 15 + 2 + 2 + 2

"""Tests of the video writer: codec choice, the files it writes, and a file that survives Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from contextlib import nullcontext as does_not_raise
from pathlib import Path

import cv2
import numpy as np
import pydantic
import pytest

from nodes.sinks.video_writer import VideoWriterSink, choose_fourcc, video_fps
from nodes.sources.synthetic import SyntheticSource
from pipeline import Frame
from pipeline.testing import run_node


@pytest.mark.parametrize(
    ("path", "fourcc", "expected", "raises"),
    [
        ("out/a.mp4", None, "mp4v", does_not_raise()),
        ("out/a.MP4", None, "mp4v", does_not_raise()),  # any case
        ("a.mov", None, "mp4v", does_not_raise()),
        ("a.avi", None, "MJPG", does_not_raise()),
        # an explicit fourcc wins over the extension
        ("a.avi", "XVID", "XVID", does_not_raise()),
        ("a.mkv", "MJPG", "MJPG", does_not_raise()),
        # unknown extension and no fourcc
        ("a.mkv", None, None, pytest.raises(ValueError, match="set 'fourcc'")),
        ("video", None, None, pytest.raises(ValueError, match="without extension")),
    ],
)
def test_choose_fourcc(path, fourcc, expected, raises):
    with raises:
        assert choose_fourcc(path, fourcc) == expected


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


def test_fourcc_param_must_be_four_characters():
    with pytest.raises(pydantic.ValidationError):
        VideoWriterSink.Params(path="a.avi", fourcc="MJPEG")


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
        ("{tmp}/video.webm", "no codec is known for '.webm'"),
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
            node: nodes.sinks.video_writer:VideoWriterSink
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
        time.sleep(1.0)  # about 30 more frames
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert shm_segments(proc.pid) == []
    received = json.loads(stats_json.read_text())["nodes"]["rec"]["inputs"]["frames"]["received"]
    images, fps = read_video(video)
    assert received > 10
    assert len(images) == received  # every frame that reached the writer is in the file
    assert fps == pytest.approx(30.0)

"""The video file source on short videos written by the tests (mp4v and MJPG, as OpenCV writes)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
from pydantic import ValidationError
from source_harness import LiveSource, sent_frames
from source_media import decode_all, mean_abs_diff, rotate_mp4, wipe_mjpg_frame, write_video

from pipeline import EndOfStream, Frame
from pipeline.testing import NodeRun, run_node
from pipeline_nodes.sources.video_file import VideoFileSource

CODEC_NOISE = 6.0  # mean absolute difference per pixel a codec may add to these frames


@pytest.fixture(params=["pyav", "opencv"])
def decoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test twice: decoding with PyAV (the default), and with OpenCV where PyAV is absent."""
    if request.param == "opencv":
        monkeypatch.setitem(sys.modules, "av", None)  # import av raises ImportError
    return str(request.param)


def run_fast(*args: Any, **kwargs: Any) -> NodeRun:
    """``run_node`` with ``pace: fast``: these tests are about the frames, not their timing."""
    return run_node(*args, pace="fast", **kwargs)


def assert_same_pictures(
    sent: Sequence[Frame], written: Sequence[np.ndarray], indices: Sequence[int]
) -> None:
    for frame, index in zip(sent, indices, strict=True):
        errors = [mean_abs_diff(frame.image, w) for w in written]
        assert errors[index] < CODEC_NOISE, f"frame {index} differs by {errors[index]:.1f}"
        assert int(np.argmin(errors)) == index  # closest to its own frame, not a neighbour


@pytest.mark.parametrize(
    ("fourcc", "suffix"),
    [
        ("mp4v", ".mp4"),  # MPEG-4 part 2, what OpenCV writes without an H.264 encoder
        ("MJPG", ".avi"),  # motion JPEG: every frame a key frame
    ],
)
def test_video_file_sends_every_frame_with_its_index_time_and_picture(
    tmp_path: Path, fourcc: str, suffix: str, decoder: str
) -> None:
    path = tmp_path / f"clip{suffix}"
    written = write_video(path, 24, fps=20, fourcc=fourcc)
    run = run_fast(VideoFileSource, {"path": str(path)}, node_id="clip")
    frames = sent_frames(run)
    assert len(frames) == 24
    assert [f.seq for f in frames] == list(range(24))
    assert [f.meta["frame_index"] for f in frames] == list(range(24))
    assert [f.meta["pos_ms"] for f in frames] == pytest.approx([i * 50.0 for i in range(24)])
    assert {f.meta["video_fps"] for f in frames} == {20.0}
    assert {f.meta["path"] for f in frames} == {str(path)}
    assert all(f.source == "clip" and f.image.shape == (120, 160, 3) for f in frames)
    assert_same_pictures(frames, written, range(24))
    assert run.calls[-3:] == ["process", "flush", "close"]  # the last process() ended it
    assert run.stats.counters == {}


def test_video_file_decodes_straight_into_the_slots_it_allocates(
    tmp_path: Path, decoder: str
) -> None:
    path = tmp_path / "clip.mp4"
    write_video(path, 5)
    live = LiveSource(VideoFileSource, {"path": str(path)})
    try:
        for _ in range(5):
            live.call()
        with pytest.raises(EndOfStream):
            live.call()
    finally:
        live.close()
    allocated = {id(a) for a in live.port.allocated}
    assert len(live.frames) == 5
    assert all(id(f.image) in allocated for f in live.frames)  # no copy on the way


def test_video_file_loops_from_start_frame_and_counts_the_passes(
    tmp_path: Path, decoder: str
) -> None:
    path = tmp_path / "clip.avi"
    write_video(path, 5, fourcc="MJPG")
    run = run_fast(
        VideoFileSource, {"path": str(path), "loop": True, "start_frame": 1}, max_calls=10
    )
    frames = sent_frames(run)
    assert [f.meta["frame_index"] for f in frames] == [1, 2, 3, 4] * 2 + [1, 2]
    assert [f.meta["loop"] for f in frames] == [0] * 4 + [1] * 4 + [2] * 2
    assert [f.seq for f in frames] == list(range(10))  # seq never restarts
    assert run.error is None


def test_video_file_sends_only_the_frames_from_start_to_before_end(
    tmp_path: Path, decoder: str
) -> None:
    path = tmp_path / "clip.mp4"
    written = write_video(path, 20)
    run = run_fast(VideoFileSource, {"path": str(path), "start_frame": 5, "end_frame": 9})
    frames = sent_frames(run)
    assert [f.meta["frame_index"] for f in frames] == [5, 6, 7, 8]
    assert [f.seq for f in frames] == [0, 1, 2, 3]
    assert_same_pictures(frames, written, [5, 6, 7, 8])


@pytest.mark.parametrize("start", [0, 11, 12, 13, 37, 59])
def test_video_file_start_frame_past_key_frames_starts_at_that_frame(
    tmp_path: Path, decoder: str, start: int
) -> None:
    path = tmp_path / "clip.mp4"
    written = write_video(path, 60)  # mp4v as OpenCV writes it: a key frame every 12 frames
    run = run_fast(
        VideoFileSource,
        {"path": str(path), "start_frame": start, "loop": True},
        max_calls=(60 - start) + 2,
    )
    frames = sent_frames(run)
    one_pass = list(range(start, 60))
    indices = (one_pass * 3)[: len(one_pass) + 2]  # and again from start_frame
    assert [f.meta["frame_index"] for f in frames] == indices
    assert [f.meta["pos_ms"] for f in frames] == pytest.approx([i * 50.0 for i in indices])
    assert_same_pictures(frames, written, indices)


def test_video_file_end_frame_must_come_after_start_frame() -> None:
    with pytest.raises(ValidationError, match="end_frame"):
        VideoFileSource.Params.model_validate({"path": "x.mp4", "start_frame": 10, "end_frame": 10})


def test_video_file_start_frame_past_the_end_fails_open(tmp_path: Path, decoder: str) -> None:
    path = tmp_path / "clip.mp4"
    write_video(path, 5)
    run = run_fast(
        VideoFileSource, {"path": str(path), "start_frame": 5}, node_id="clip", raise_errors=False
    )
    assert isinstance(run.error, ValueError)
    assert "video_file 'clip'" in str(run.error)
    assert "has 5 frames" in str(run.error)
    assert run.calls == ["open"]


def test_video_file_realtime_pace_follows_the_frame_rate(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    write_video(path, 11, fps=20)
    run = run_node(VideoFileSource, {"path": str(path), "fps_override": 50}, pace="realtime")
    stamps = np.array([f.t_capture_ns for f in sent_frames(run)]) / 1e9
    span = stamps[-1] - stamps[0]
    # The runtime starts one process() call per 1/50 s; a frame is stamped after its decode,
    # so one decode's jitter (a busy machine) may shift a stamp.
    assert span >= 10 * 0.02 - 0.03  # not early: 10 intervals of 1/50 s
    assert span < 10 * 0.02 + 0.5  # and not far behind
    assert np.median(np.diff(stamps)) >= 0.02 * 0.75
    frames = sent_frames(run)
    assert {f.meta["video_fps"] for f in frames} == {50.0}
    assert [f.meta["pos_ms"] for f in frames] == pytest.approx([i * 20.0 for i in range(11)])


def test_video_file_fast_pace_does_not_wait(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    write_video(path, 30, fps=5)  # 6 s of video
    t0 = time.monotonic()
    run = run_node(VideoFileSource, {"path": str(path)}, pace="fast")
    assert len(sent_frames(run)) == 30
    assert time.monotonic() - t0 < 3


def test_video_file_skips_and_counts_a_corrupt_frame_in_the_middle(
    tmp_path: Path, decoder: str
) -> None:
    path = tmp_path / "damaged.avi"
    written = write_video(path, 20, fourcc="MJPG")
    wipe_mjpg_frame(path, 10)
    assert len(decode_all(path)) == 10  # a plain read loop stops at the damage
    run = run_fast(VideoFileSource, {"path": str(path)})
    frames = sent_frames(run)
    indices = [f.meta["frame_index"] for f in frames]
    assert indices == [*range(10), *range(11, 20)]
    assert [f.seq for f in frames] == list(range(19))
    assert run.stats.counters == {"corrupt_frames": 1}
    assert_same_pictures(frames, written, indices)
    assert run.error is None


def test_video_file_decodes_with_pyav_the_ffmpeg_video_writer_maps_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "clip.mp4"
    written = write_video(path, 6)
    opened: list[str] = []
    real_open = av.open

    def spy(file: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(av, "open", spy)
    run = run_fast(VideoFileSource, {"path": str(path)})
    frames = sent_frames(run)
    assert opened == [str(path)] * 2  # the probe and the pass
    assert_same_pictures(frames, written, range(6))
    assert "av" in VideoFileSource.preload_modules  # the fork server's template imports it


def test_video_file_on_pyav_does_not_import_opencv(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    write_video(path, 3)
    script = (
        "import sys\n"
        "from pipeline.testing import run_node\n"
        "from pipeline_nodes.sources.video_file import VideoFileSource\n"
        f"run = run_node(VideoFileSource, {{'path': {str(path)!r}}}, pace='fast')\n"
        "assert run.error is None, run.error\n"
        "print(sum(1 for c in run.calls if c == 'process'), 'cv2' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=50, check=True
    )
    assert done.stdout.split() == ["4", "False"]  # 3 frames, then the end; no cv2 mapped


def test_video_file_property_numbers_are_opencvs() -> None:
    from pipeline_nodes.sources import video_file

    for name in (
        "CAP_PROP_POS_MSEC",
        "CAP_PROP_POS_FRAMES",
        "CAP_PROP_FPS",
        "CAP_PROP_FRAME_COUNT",
    ):
        assert getattr(video_file, name) == getattr(cv2, name)


def test_video_file_turns_a_rotated_video_upright_with_opencv(tmp_path: Path) -> None:
    path = tmp_path / "phone.mp4"
    written = write_video(path, 5)
    rotate_mp4(path)
    assert av.open(str(path)).streams.video[0].codec_context.width == 160  # stored sideways
    run = run_fast(VideoFileSource, {"path": str(path)})
    frames = sent_frames(run)
    assert all(f.image.shape == (160, 120, 3) for f in frames)  # shown upright
    upright = [cv2.rotate(w, cv2.ROTATE_90_CLOCKWISE) for w in written]
    assert_same_pictures(frames, upright, range(5))


def test_video_file_missing_file_fails_open_naming_node_and_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.mp4"
    run = run_fast(VideoFileSource, {"path": str(path)}, node_id="clip", raise_errors=False)
    assert isinstance(run.error, FileNotFoundError)
    assert "video_file 'clip'" in str(run.error)
    assert str(path) in str(run.error)
    assert "params.path" in str(run.error)
    assert run.calls == ["open"]


@pytest.mark.parametrize(
    "content",
    [
        b"this is not a video\n" * 50,  # a text file with a video's name
        b"",  # an empty file
    ],
)
def test_video_file_that_is_not_a_video_fails_open_naming_node_and_path(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "notes.mp4"
    path.write_bytes(content)
    run = run_fast(VideoFileSource, {"path": str(path)}, node_id="clip", raise_errors=False)
    assert isinstance(run.error, ValueError)
    assert "video_file 'clip'" in str(run.error)
    assert f"cannot read {str(path)!r} as a video" in str(run.error)
    assert run.calls == ["open"]


def test_video_file_truncated_mp4_fails_open(tmp_path: Path) -> None:
    path = tmp_path / "cut.mp4"
    write_video(path, 20)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # an interrupted copy: the index is lost
    run = run_fast(VideoFileSource, {"path": str(path)}, node_id="clip", raise_errors=False)
    assert isinstance(run.error, ValueError)
    assert str(path) in str(run.error)


def test_video_file_folder_path_fails_open_and_points_to_image_folder(tmp_path: Path) -> None:
    run = run_fast(VideoFileSource, {"path": str(tmp_path)}, raise_errors=False)
    assert isinstance(run.error, IsADirectoryError)
    assert "image_folder" in str(run.error)

"""The committed sample video ``samples/people.mp4`` and the script that makes it."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
from source_harness import sent_frames

from pipeline.testing import run_node
from pipeline_nodes.sources.video_file import VideoFileSource

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = ROOT / "samples" / "people.mp4"
SCRIPT = ROOT / "scripts" / "make_sample_video.py"
FRAMES, FPS, SIZE = 250, 20.0, (640, 360)  # 12.5 s


def test_committed_sample_video_reads_with_the_expected_frames_fps_and_size() -> None:
    assert SAMPLE.stat().st_size < 5_000_000  # small enough to commit
    run = run_node(VideoFileSource, {"path": str(SAMPLE)}, pace="fast")
    frames = sent_frames(run)
    assert len(frames) == FRAMES
    assert {f.meta["video_fps"] for f in frames} == {FPS}
    assert {f.image.shape for f in frames} == {(SIZE[1], SIZE[0], 3)}
    assert frames[-1].meta["pos_ms"] == (FRAMES - 1) * 1000 / FPS
    assert run.stats.counters == {}  # no damaged frame
    # a real video: consecutive frames differ a little (motion), the scenes a lot
    images = [f.image.astype(np.int16) for f in frames]
    steps = [float(np.abs(b - a).mean()) for a, b in itertools.pairwise(images)]
    assert 0 < np.median(steps) < 10
    assert float(np.abs(images[0] - images[-1]).mean()) > 30


def test_regenerating_the_sample_gives_the_same_video(tmp_path: Path) -> None:
    out = tmp_path / "people.mp4"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"{FRAMES} frames" in done.stdout
    assert "20 fps" in done.stdout
    fresh, committed = cv2.VideoCapture(str(out)), cv2.VideoCapture(str(SAMPLE))
    assert fresh.get(cv2.CAP_PROP_FPS) == committed.get(cv2.CAP_PROP_FPS) == FPS
    count = 0
    while True:
        ok_a, a = fresh.read()
        ok_b, b = committed.read()
        assert ok_a == ok_b, f"frame counts differ at frame {count}"
        if not ok_a:
            break
        if count % 25 == 0:  # same seed, same pictures (within encoder rounding)
            assert float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()) < 1.0
        count += 1
    assert count == FRAMES

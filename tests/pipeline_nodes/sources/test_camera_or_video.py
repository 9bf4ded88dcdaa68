"""camera_or_video: the camera when one opens, else the video; graphs/live_detect.yaml live."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from source_media import write_video

from pipeline.testing import run_node
from pipeline_nodes.sources.camera_or_video import CameraOrVideo

ROOT = Path(__file__).resolve().parents[3]


def test_without_a_camera_it_plays_the_video_and_says_so(tmp_path, caplog):
    video = tmp_path / "clip.mp4"
    write_video(video, 4)
    run = run_node(
        CameraOrVideo,
        params={
            "device": str(tmp_path / "no_such_camera"),
            "open_timeout_s": 0.5,
            "video": str(video),
            "loop": False,
        },
        max_calls=20,
    )
    frames = run.sent["frames"]
    assert [f.seq for f in frames] == [0, 1, 2, 3]
    assert all(f.meta["live"] is False for f in frames)
    assert frames[0].image.shape == (120, 160, 3)
    assert "no camera" in caplog.text and str(video) in caplog.text


@pytest.mark.integration
def test_live_detect_graph_serves_annotated_frames_live(tmp_path):
    """`pipeline run graphs/live_detect.yaml` on a machine without a camera: the page is live."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "run",
            str(ROOT / "graphs" / "live_detect.yaml"),
            "--no-live",
            "--set",
            f"camera.device={tmp_path}/no_such_camera",
            "--set",
            "camera.open_timeout_s=0.5",
            "--set",
            "preview.port=0",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    url: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if m := re.search(r"open (http://\S+) in a browser", line):
                url.append(m.group(1).rstrip("/"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 45
        stats: dict = {}
        while time.monotonic() < deadline:
            if url:
                try:
                    with urllib.request.urlopen(url[0] + "/stats.json", timeout=5) as reply:
                        stats = json.loads(reply.read())
                except (urllib.error.URLError, ConnectionError):
                    stats = {}
                faces = stats.get("nodes", {}).get("faces", {})
                if faces and faces.get("outputs", {}).get("detections", {}).get("sent", 0) >= 3:
                    break
            assert proc.poll() is None, "".join(lines)
            time.sleep(0.2)
        else:
            pytest.fail(f"no detections reached the page; stats {stats}\n{''.join(lines)}")
        with urllib.request.urlopen(url[0] + "/snapshot.jpg", timeout=5) as reply:
            assert reply.headers["Content-Type"] == "image/jpeg"
            assert reply.read(3) == b"\xff\xd8\xff"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        reader.join(5)
        assert proc.stderr is not None
        proc.stderr.close()
    text = "".join(lines)
    assert "no camera" in text and "playing samples/people.mp4 instead" in text
    assert proc.returncode != 1, text

"""The sources in real graphs: node processes, shared memory, statistics, and Ctrl-C for a camera.

The video and image sources run with ``run_graph`` in this process; the camera, which never
ends by itself, runs as ``pipeline run`` in a child process that the test stops with SIGINT
after the MJPEG server it reads was stopped and restarted.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from mjpeg_server import MjpegServer, wait_until
from source_media import decode_all, wipe_mjpg_frame, write_video

from pipeline import load_graph, run_graph
from pipeline.transport.shm import SHM_DIR

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
LOG = "tests.pipeline_nodes.sources.source_graph_nodes:FrameLog"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def segments(pid: int) -> list[str]:
    """The shared-memory segments of the run supervised by process ``pid``."""
    return sorted(p.name for p in SHM_DIR.glob(f"pipeline-{pid}-*"))


def test_video_file_and_image_folder_deliver_every_frame_through_real_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(ROOT))  # node processes import the FrameLog test node
    video = tmp_path / "damaged.avi"
    write_video(video, 30, fourcc="MJPG", size=(320, 240))
    wipe_mjpg_frame(video, 12)
    expected_video = decode_all(video)[:12] + decode_all_after(video, 12)
    folder = tmp_path / "shots"
    folder.mkdir()
    # above the 16 KiB that travel inline in a message, so they go through shared memory
    images = [np.full((90, 120, 3), 10 * i, np.uint8) for i in range(12)]
    for i, image in enumerate(images):
        cv2.imwrite(str(folder / f"shot{i}.png"), image)
    graph = tmp_path / "graph.yaml"
    graph.write_text(
        textwrap.dedent(f"""
        graph: file_sources
        nodes:
          - id: video
            node: pipeline_nodes.sources.video_file:VideoFileSource
            pace: fast
            params: {{path: {video}}}
          - id: shots
            node: pipeline_nodes.sources.image_folder:ImageFolderSource
            params: {{path: {folder}, pattern: "*.png"}}
          - id: video_log
            node: {LOG}
            params: {{path: {tmp_path}/video.jsonl}}
            inputs: {{frames: {{from: video/frames, queue: 2, when_full: block}}}}
          - id: shots_log
            node: {LOG}
            params: {{path: {tmp_path}/shots.jsonl}}
            inputs: {{frames: shots/frames}}
        """)
    )
    result = run_graph(load_graph(graph), out=io.StringIO())
    assert result.exit_code == 0, result.error
    assert segments(os.getpid()) == []  # run_graph supervised from this process
    rows = read_jsonl(tmp_path / "video.jsonl")
    assert [r["seq"] for r in rows] == list(range(29))
    assert [r["meta"]["frame_index"] for r in rows] == [*range(12), *range(13, 30)]
    # decoded into shared memory, the pixels are those OpenCV decodes in this process
    assert [r["sum"] for r in rows] == [int(f.sum(dtype=np.uint64)) for f in expected_video]
    assert result.stats["video"].counters == {"corrupt_frames": 1}
    shots = read_jsonl(tmp_path / "shots.jsonl")
    assert [r["meta"]["file"] for r in shots] == [f"shot{i}.png" for i in range(12)]
    assert [r["sum"] for r in shots] == [int(i.sum(dtype=np.uint64)) for i in images]


def decode_all_after(path: Path, damaged: int) -> list[np.ndarray]:
    """The frames after a damaged one, read by retrying past it as the node does."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    index = 0
    while True:
        ok, frame = cap.read()
        if ok:
            if index > damaged:
                frames.append(frame)
        elif index != damaged:
            break
        index += 1
    cap.release()
    return frames


def test_camera_in_a_running_graph_reconnects_after_its_server_restarts(tmp_path: Path) -> None:
    server = MjpegServer(fps=30).start()
    log = tmp_path / "camera.jsonl"
    graph = tmp_path / "camera.yaml"
    graph.write_text(
        textwrap.dedent(f"""
        graph: camera_reconnect
        nodes:
          - id: camera
            node: pipeline_nodes.sources.camera:CameraSource
            params:
              device: {server.url}
              open_timeout_s: 5
              reconnect_backoff_s: 0.1
              reconnect_backoff_max_s: 0.5
          - id: log
            node: {LOG}
            params: {{path: {log}}}
            inputs: {{frames: {{from: camera/frames, queue: 2, when_full: drop_oldest}}}}
        """)
    )
    stats_json = tmp_path / "stats.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "pipeline.cli", "run", str(graph), "--no-live"]
    proc = subprocess.Popen(
        [*command, "--stats-json", str(stats_json)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    restarted: MjpegServer | None = None
    try:
        wait_until(lambda: len(read_jsonl(log)) >= 10, 30, "frames from the camera")
        server.stop()  # the camera goes away ...
        seen = len(read_jsonl(log))
        time.sleep(0.5)  # ... for half a second, long enough for failed reconnect attempts
        assert proc.poll() is None, "the graph ended when the camera went away"
        restarted = MjpegServer(server.port, first_number=10_000).start()  # ... and comes back
        wait_until(
            lambda: sum(r["number"] >= 10_000 for r in read_jsonl(log)) >= 5,
            20,
            "frames after the reconnect",
        )
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if restarted is not None:
            restarted.stop()
        server.stop()
    assert proc.returncode == 130, out  # stopped by Ctrl-C, drained
    assert segments(proc.pid) == []
    rows = read_jsonl(log)
    seqs = [r["seq"] for r in rows]
    assert seqs == sorted(set(seqs))  # increasing across the reconnect (drops allowed)
    numbers = [r["number"] for r in rows]
    assert numbers == sorted(set(numbers))
    assert any(r["meta"]["connection"] == 1 for r in rows[:seen])
    assert {r["meta"]["connection"] for r in rows if r["number"] >= 10_000} == {2}
    counters = json.loads(stats_json.read_text())["nodes"]["camera"]["counters"]
    assert counters["disconnects"] >= 1
    assert counters["reconnects"] >= 1

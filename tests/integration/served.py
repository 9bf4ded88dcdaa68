"""A graph run by `pipeline run --serve` in a subprocess, for tests that call it as Viam."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
VIDEO = REPO / "samples" / "people.mp4"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def served_graph_text(tmp: Path) -> str:
    return f"""
graph: served
nodes:
  - id: camera
    node: video_file
    params: {{path: {VIDEO}, loop: true}}
    pace: realtime
  - id: faces
    node: detector
    params: {{model: face_short_range, num_threads: 1, default_minimum_confidence: 0.5}}
    inputs:
      frames: {{from: camera/frames, queue: 1, when_full: drop_oldest}}
  - id: kind
    node: classifier
    params: {{model: face_classifier, num_threads: 1, top_k: 2}}
    inputs:
      frames: {{from: camera/frames, queue: 1, when_full: drop_oldest}}
  - id: log
    node: jsonl
    params: {{path: {tmp / "faces.jsonl"}}}
    inputs:
      messages: faces/detections
"""


class ServedGraph:
    """``pipeline run GRAPH --serve ...`` until ``stop()``; its stderr is kept in ``lines``."""

    def __init__(self, graph: Path, *args: str, wait_frames: bool = True) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "run", str(graph), "--no-live", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        self._serving = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._serving.wait(45):
            self.stop()
            raise AssertionError("the server did not start:\n" + "".join(self.lines))

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            if line.startswith("serving on"):
                self._serving.set()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> int:
        """Ctrl-C (SIGINT to `pipeline run` alone), then its exit code (130 after a drained stop)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(5)
        if self.process.stderr is not None:
            self.process.stderr.close()
        return int(self.process.returncode)


async def wait_for_frames(address: str, camera: str = "camera", timeout_s: float = 30) -> None:
    """Until the camera has sent its first frame (GetImages stops answering UNAVAILABLE)."""
    from grpclib import GRPCError, Status
    from grpclib.client import Channel
    from viam.gen.component.camera.v1 import camera_grpc, camera_pb2

    host, port = address.rsplit(":", 1)
    channel = Channel(host, int(port))
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                await camera_grpc.CameraServiceStub(channel).GetImages(
                    camera_pb2.GetImagesRequest(name=camera), timeout=5
                )
                return
            except GRPCError as exc:
                if exc.status != Status.UNAVAILABLE or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
    finally:
        channel.close()


def sdk_options(**dial: Any) -> Any:
    """RobotClient options for a direct dial: sessions on (the SDK's default)."""
    from viam.robot.client import RobotClient
    from viam.rpc.dial import DialOptions

    api_key = dial.pop("api_key", None)
    if api_key is not None:
        options = RobotClient.Options.with_api_key(api_key=api_key[1], api_key_id=api_key[0])
        options.dial_options.disable_webrtc = True
        return options
    return RobotClient.Options(dial_options=DialOptions(disable_webrtc=True, **dial))


def run_sdk(coroutine: Any) -> Any:
    """``asyncio.run`` for Viam SDK code; collects the sockets the SDK leaves to the GC
    (its authenticated channel, its heartbeat thread's channel) under a ResourceWarning filter."""
    import gc
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            return asyncio.run(coroutine)
        finally:
            gc.collect()

"""The ``camera_or_video`` source: a live camera when one opens, else a video file.

For a demo that works on any machine: ``graphs/live_detect.yaml`` shows the camera when
there is one, and the sample video (looping, at its own pace) when there is none.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
from pydantic import Field

from pipeline import Frame, Message, Node, NodeParams, Output, ParamIssue
from pipeline.checks import input_file
from pipeline_nodes.sources.camera.node import CameraSource
from pipeline_nodes.sources.camera.params import CameraParams
from pipeline_nodes.sources.video_file import VideoFileSource

__all__ = ["CameraOrVideo"]


class CameraOrVideo(Node):
    """Send a live camera's frames, or a video file's when no camera opens.

    The camera is tried first (``device``, within ``open_timeout_s``); if it cannot be
    opened, a warning says why and the node plays ``video`` instead (looping, at the file's
    rate under the default ``pace: realtime``, unless ``loop`` is false). Frames carry
    ``meta["live"]``: true from the camera, false from the file.
    """

    class Params(NodeParams):
        device: int | str = Field(
            0, description="The camera: a device index (0), a device path, or a stream URL."
        )
        width: int | None = Field(None, ge=16, le=16384, description="Requested camera width.")
        height: int | None = Field(None, ge=16, le=16384, description="Requested height.")
        open_timeout_s: float = Field(
            3.0, gt=0, le=600, description="How long to try the camera before the video."
        )
        video: str = Field(
            "samples/people.mp4",
            min_length=1,
            description="The video file played when no camera opens.",
        )
        loop: bool = Field(True, description="Play the video again after its last frame.")

    frames = Output(Frame, description="(H, W, 3) uint8 BGR; meta: live, and the source's own.")

    @classmethod
    def check(cls, params: Params) -> Iterator[ParamIssue]:
        yield from input_file("video", params.video, "video file")

    def open(self) -> None:
        p = self.params
        camera = CameraParams.model_validate(
            {
                "device": p.device,
                "width": p.width,
                "height": p.height,
                "open_timeout_s": p.open_timeout_s,
            }
        )
        self.live = True
        self._inner: Node = self._make(CameraSource, camera)
        try:
            self._inner.open()
        except Exception as exc:
            self.log.warning("no camera (%s): playing %s instead", exc, p.video)
            self.live = False
            video = VideoFileSource.Params.model_validate({"path": p.video, "loop": p.loop})
            self._inner = self._make(VideoFileSource, video)
            self._inner.open()

    def _make(self, cls: type[Node], params: NodeParams) -> Node:
        return cls(
            params, node_id=self.id, ports={"frames": self}, services=self._services, log=self.log
        )

    # the inner node sends through this object, which marks and forwards
    def send(self, message: Message) -> None:
        self.frames.send(message.replace(meta={**message.meta, "live": self.live}))

    def allocate(self, shape: tuple[int, ...], dtype: npt.DTypeLike = np.uint8) -> np.ndarray:
        return self.frames.allocate(shape, dtype)

    def frame_rate(self) -> float | None:
        return self._inner.frame_rate()  # the video's rate (pace: realtime); a camera: None

    def process(self) -> None:
        self._inner.process()

    def close(self) -> None:
        self._inner.close()

"""The ``detector`` node: objects in each frame, boxes normalised to the original image."""

from __future__ import annotations

from typing import ClassVar

from pipeline import Detections, Frame, Input, NodeParams, Output
from pipeline_nodes.inference.model_node import ModelNode
from pipeline_nodes.inference.params import DetectorParams
from pipeline_nodes.inference.vision import Detector
from pipeline_nodes.meta import derived_meta

__all__ = ["DetectorNode"]


class DetectorNode(ModelNode[Detector]):
    """Detect objects in each frame with a model: boxes normalised to the original image.

    One ``Detections`` per frame (empty when nothing is found), with the frame's seq, so an
    overlay joins them, and the frame's meta (which file, frame or device it is) plus
    ``model`` and ``inference_ms``. Boxes are xyxy in 0..1 of the image the source captured,
    mapped back through this node's letterbox and every upstream resize or crop; keypoints
    too. Ends when its input ends; with a slow model put ``when_full: drop_oldest`` on its
    input edge to keep it on fresh frames. From Python: ``pipeline_nodes.inference.load_detector``.

    Several cameras, one model: list them, ``frames: [cam1/frames, cam2/frames]``. They are
    served in turn (a stalled camera holds up nobody), each ``Detections`` carries its
    frame's ``source``, and a per-camera consumer picks its own with
    ``{from: faces/detections, source: cam1}``. ``max_batch`` > 1 runs the waiting frames of
    several cameras in one model run where the model allows it.

    Example:
        - id: faces
          node: detector
          params: {model: face_short_range, default_minimum_confidence: 0.6}
          inputs: {frames: {from: camera/frames, queue: 1, when_full: drop_oldest}}
    """

    Params: ClassVar[type[NodeParams]] = DetectorParams

    frames = Input(
        Frame, streams=True, description="(H, W, 3) uint8 BGR frames; one or several cameras."
    )
    detections = Output(Detections, description="Boxes normalised to the source image.")

    def load(self) -> Detector:
        return Detector(self.params)

    def process(self, frames: Frame) -> None:
        found = self.vision.detect(frames.image, frames.meta.get("transforms", ()))
        self._send(frames, found)

    def process_batch(self, frames: list[Frame]) -> None:  # type: ignore[override]
        images = [f.image for f in frames]
        transforms = [f.meta.get("transforms", ()) for f in frames]
        for frame, found in zip(frames, self.vision.detect_batch(images, transforms)):
            self._send(frame, found)

    def _send(self, frame: Frame, found: Detections) -> None:
        self.detections.send(
            found.replace(
                seq=frame.seq,
                t_capture_ns=frame.t_capture_ns,
                source=frame.source,
                meta=derived_meta(frame.meta, found.meta),
            )
        )

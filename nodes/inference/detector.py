"""The ``detector`` node: objects in each frame, boxes normalised to the original image."""

from __future__ import annotations

from typing import ClassVar

from nodes.inference.model_node import ModelNode
from nodes.inference.params import DetectorParams
from nodes.inference.vision import Detector
from nodes.meta import derived_meta
from pipeline import Detections, Frame, Input, NodeParams, Output

__all__ = ["DetectorNode"]


class DetectorNode(ModelNode[Detector]):
    """Detect objects in each frame with a model: boxes normalised to the original image.

    One ``Detections`` per frame (empty when nothing is found), with the frame's seq, so an
    overlay joins them, and the frame's meta (which file, frame or device it is) plus
    ``model`` and ``inference_ms``. Boxes are xyxy in 0..1 of the image the source captured,
    mapped back through this node's letterbox and every upstream resize or crop; keypoints
    too. Ends when its input ends; with a slow model put ``when_full: drop_oldest`` on its
    input edge to keep it on fresh frames. From Python: ``nodes.inference.load_detector``.

    Example:
        - id: faces
          node: detector
          params: {model: face_short_range, default_minimum_confidence: 0.6}
          inputs: {frames: {from: camera/frames, queue: 1, when_full: drop_oldest}}
    """

    Params: ClassVar[type[NodeParams]] = DetectorParams

    frames = Input(Frame, description="(H, W, 3) uint8 BGR frames.")
    detections = Output(Detections, description="Boxes normalised to the source image.")

    def load(self) -> Detector:
        return Detector(self.params)

    def process(self, frames: Frame) -> None:
        found = self.vision.detect(frames.image, frames.meta.get("transforms", ()))
        self.detections.send(
            found.replace(
                seq=frames.seq,
                t_capture_ns=frames.t_capture_ns,
                source=frames.source,
                meta=derived_meta(frames.meta, found.meta),
            )
        )

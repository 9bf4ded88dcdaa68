"""The ``classifier`` node: the top-k labels of each frame."""

from __future__ import annotations

from typing import ClassVar

from pipeline import Classifications, Frame, Input, NodeParams, Output
from pipeline_nodes.inference.model_node import ModelNode
from pipeline_nodes.inference.params import ClassifierParams
from pipeline_nodes.inference.vision import Classifier
from pipeline_nodes.meta import derived_meta

__all__ = ["ClassifierNode"]


class ClassifierNode(ModelNode[Classifier]):
    """Classify each frame with a model: the top-k labels with their confidence.

    One ``Classifications`` per frame (possibly empty after the thresholds), with the frame's
    seq and meta (which file, frame or device it is) plus ``model``. Ends when its input
    ends. From Python: ``pipeline_nodes.inference.load_classifier``.

    Example:
        - id: is_face
          node: classifier
          params: {model: face_classifier, top_k: 1}
          inputs: {frames: crop/frames}
    """

    Params: ClassVar[type[NodeParams]] = ClassifierParams

    frames = Input(
        Frame, streams=True, description="(H, W, 3) uint8 BGR frames; one or several cameras."
    )
    classifications = Output(Classifications, description="Top-k labels, best first.")

    def load(self) -> Classifier:
        return Classifier(self.params)

    def process(self, frames: Frame) -> None:
        found = self.vision.classify(frames.image)
        self.classifications.send(
            found.replace(
                seq=frames.seq,
                t_capture_ns=frames.t_capture_ns,
                source=frames.source,
                meta=derived_meta(frames.meta, found.meta),
            )
        )

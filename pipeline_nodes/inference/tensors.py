"""The ``tensors`` node: a model's raw outputs for each frame."""

from __future__ import annotations

from pipeline import Frame, Input, Output, Tensors
from pipeline_nodes.inference.model_node import ModelNode
from pipeline_nodes.inference.vision import VisionModel
from pipeline_nodes.meta import derived_meta

__all__ = ["TensorsNode"]


class TensorsNode(ModelNode[VisionModel]):
    """Run a model on each frame and send its raw outputs, by name.

    The frame is prepared as for ``detector`` (resize, colour, mean/std, layout). One
    ``Tensors`` per frame with the frame's seq and meta; ``meta["transforms"]`` maps the model
    input back to the original image. Ends when its input ends.

    Example:
        - id: raw
          node: tensors
          params: {model: centerface, input_size: [320, 224]}
          inputs: {frames: camera/frames}
    """

    frames = Input(
        Frame, streams=True, description="(H, W, 3) uint8 BGR frames; one or several cameras."
    )
    tensors = Output(Tensors, description="The model's outputs by name.")

    def load(self) -> VisionModel:
        return VisionModel(self.params)

    def process(self, frames: Frame) -> None:
        outputs, transforms, _ = self.vision.run(frames.image, frames.meta.get("transforms", ()))
        self.tensors.send(
            frames.derive(
                Tensors,
                tensors=outputs,
                meta=derived_meta(
                    frames.meta, {"model": self.params.model, "transforms": transforms}
                ),
            )
        )

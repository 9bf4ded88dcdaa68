"""Inference: model runtimes (ONNX Runtime, LiteRT/TFLite), the model service and its nodes.

From your own code: :func:`load_detector` and :func:`load_classifier` (an image in,
``Detections`` or ``Classifications`` out, exactly as the ``detector`` and ``classifier``
nodes compute them) and :func:`load_model` (raw tensors in and out).
"""

from pipeline_nodes.inference.service import load_model
from pipeline_nodes.inference.vision import (
    Classifier,
    Detector,
    VisionModel,
    load_classifier,
    load_detector,
)

__all__ = [
    "Classifier",
    "Detector",
    "VisionModel",
    "load_classifier",
    "load_detector",
    "load_model",
]

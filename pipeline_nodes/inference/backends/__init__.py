"""Model runtimes behind one interface: ``Model``, its ``ModelMetadata`` and input checking.

The runtime-specific classes live in ``onnxruntime`` and ``tflite`` beside this package's
``base``; neither imports its runtime until a model is loaded, so importing them is cheap and
works on machines that lack one of the runtimes. Most callers use
``pipeline_nodes.inference.service.load_model`` rather than these classes directly.
"""

from pipeline_nodes.inference.backends.base import (
    InvalidTensorError,
    Model,
    ModelMetadata,
    TensorInfo,
)

__all__ = ["InvalidTensorError", "Model", "ModelMetadata", "TensorInfo"]

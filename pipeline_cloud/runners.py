"""Registry models as the inference workers run them: the graph nodes' own model objects.

:func:`load_runner` builds a ``pipeline_nodes.inference.vision.Detector`` or ``Classifier``
(what the
``detector`` and ``classifier`` nodes run) from a model file and the node params stored with
its version, and keeps the raw outputs of the last run, so one pass over the model gives both
the output tensors and the decoded annotations of ``GetInference``. A TensorFlow SavedModel
runs in TensorFlow (:mod:`pipeline_cloud.tf_backend`) behind the same objects.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline_cloud.inference import InferenceResult

__all__ = ["load_runner"]


class Runner:
    """A loaded model: ``infer(image) -> InferenceResult``; ``close()``."""

    def __init__(self, vision: Any, kind: str, cleanup: tempfile.TemporaryDirectory[str] | None):
        self.vision = vision
        self.kind = kind
        self._cleanup = cleanup

    def infer(self, image: np.ndarray) -> InferenceResult:
        if self.kind == "classification":
            found = self.vision.classify(image)
            classes = [(str(n), float(c)) for n, c in zip(found.class_names, found.confidence)]
            boxes: list[tuple[str, tuple[float, float, float, float], float]] = []
        else:
            found = self.vision.detect(image)
            boxes = [
                (str(n), (float(x0), float(y0), float(x1), float(y1)), float(c))
                for n, (x0, y0, x1, y1), c in zip(found.class_names, found.xyxy, found.confidence)
            ]
            classes = []
        outputs = {k: np.asarray(v) for k, v in self.vision.last_run.outputs.items()}
        return InferenceResult(outputs=outputs, boxes=boxes, classifications=classes)

    def close(self) -> None:
        self.vision.close()
        if self._cleanup is not None:
            self._cleanup.cleanup()


def _recording(base: type[Any]) -> type[Any]:
    """``base`` (Detector or Classifier) that keeps its last ``run()`` as ``last_run``."""

    class Recording(base):  # type: ignore[misc]
        last_run: Any = None

        def run(self, image: np.ndarray, transforms: Sequence[Mapping[str, Any]] = ()) -> Any:
            result = super().run(image, transforms)
            self.last_run = result
            return result

    Recording.__name__ = f"Recording{base.__name__}"
    return Recording


def load_runner(
    model_type: str, framework: str, path: Path, run_params: Mapping[str, Any]
) -> Runner:
    """Load a registry model version for inference."""
    from pipeline_nodes.inference import vision
    from pipeline_nodes.inference.params import ClassifierParams, DetectorParams

    params = dict(run_params)
    params.setdefault("num_threads", 1)
    params_cls: type[Any]
    if model_type == "classification":
        cls, params_cls, kind = _recording(vision.Classifier), ClassifierParams, "classification"
        params.pop("decoder", None)
        params.pop("decoder_params", None)
    else:
        cls, params_cls, kind = _recording(vision.Detector), DetectorParams, "detection"
        params.pop("activation", None)
    if framework != "tensorflow":
        params["backend"] = "onnxruntime" if framework == "onnx" else "tflite"
        return Runner(cls(params_cls(model=str(path), **params)), kind, None)

    from pipeline_cloud.model_files import extract_saved_model
    from pipeline_cloud.tf_backend import TensorFlowModel

    cleanup = tempfile.TemporaryDirectory(prefix="saved_model-")
    folder = extract_saved_model(path, Path(cleanup.name))
    params.pop("num_threads", None)
    model = TensorFlowModel.load(folder, labels=params.get("labels"))
    # The vision objects load their model with pipeline_nodes.inference.service.load_model, which
    # knows ONNX and TFLite; hand them the TensorFlow model instead (a worker runs one job at
    # a time, so swapping the loader for the construction is safe).
    original = vision.__dict__["load_model"]
    setattr(vision, "load_model", lambda *_a, **_k: model)  # noqa: B010
    try:
        obj = cls(params_cls(model=str(folder), **params))
    finally:
        setattr(vision, "load_model", original)  # noqa: B010
    return Runner(obj, kind, cleanup)

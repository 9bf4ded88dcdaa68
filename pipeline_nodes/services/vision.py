"""The services of the model nodes and of ``color_detector``: see ``pipeline_nodes.services``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pipeline.messages import Classifications, Detections
from pipeline.params import NodeParams
from pipeline.serve.contract import ModelInfo, NodeService, TensorSpec
from pipeline_nodes.inference.params import ClassifierParams, DetectorParams, ModelParams
from pipeline_nodes.inference.vision import Classifier, Detector, VisionModel

__all__ = [
    "ClassifierService",
    "ColorDetectorService",
    "DetectorService",
    "TensorsService",
    "classifier_service",
    "color_detector_service",
    "detector_service",
    "tensors_service",
]

_CLASS_OUTPUT_HINTS = ("class", "label", "categor")


class _ModelService(NodeService):
    """A node's model, loaded in the server process with the node's params."""

    model_type = "tensors"

    def __init__(self, params: ModelParams) -> None:
        self.params = params
        self._vision: VisionModel | None = None

    def _load(self) -> VisionModel:
        return VisionModel(self.params)

    @property
    def vision(self) -> VisionModel:
        if self._vision is None:
            raise RuntimeError("the service is not open")
        return self._vision

    def open(self) -> None:
        self._vision = self._load()

    def close(self) -> None:
        if self._vision is not None:
            self._vision.close()
            self._vision = None

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model; an input whose dtype converts to the model's without loss (uint8
        pixels to a float32 input) is converted, as a Viam client sending images expects;
        any other mismatch is refused by the model with every problem named."""
        declared = {t.name: t.dtype for t in self.vision.model.metadata().inputs}
        conformed = {}
        for name, value in inputs.items():
            want = declared.get(name)
            if (
                want is not None
                and value.dtype.name != want
                and value.dtype.kind in "uif"
                and np.can_cast(value.dtype, want, "safe")
            ):
                value = value.astype(want)
            conformed[name] = value
        return self.vision.model.infer(conformed)

    def _labels_of(self, name: str, index: int, count: int) -> tuple[tuple[str, ...], str]:
        return (), "value"

    def model_info(self) -> ModelInfo:
        meta = self.vision.model.metadata()
        outputs = []
        for i, t in enumerate(meta.outputs):
            labels, label_type = self._labels_of(t.name, i, len(meta.outputs))
            outputs.append(TensorSpec(t.name, t.dtype, tuple(t.shape), "", labels, label_type))
        return ModelInfo(
            name=meta.name,
            type=self.model_type,
            description=meta.description
            or f"{meta.name} on {meta.backend} ({', '.join(meta.providers)})",
            inputs=tuple(TensorSpec(t.name, t.dtype, tuple(t.shape)) for t in meta.inputs),
            outputs=tuple(outputs),
        )


class DetectorService(_ModelService):
    """A ``detector`` node: Viam vision (detections) and ML model."""

    kinds = frozenset({"vision", "mlmodel"})
    detects = True
    model_type = "object_detector"

    def _load(self) -> VisionModel:
        assert isinstance(self.params, DetectorParams)
        return Detector(self.params)

    def detect(self, image: np.ndarray) -> Detections:
        detector = self.vision
        assert isinstance(detector, Detector)
        return detector.detect(image)

    def _labels_of(self, name: str, index: int, count: int) -> tuple[tuple[str, ...], str]:
        labels = self.vision.labels
        if labels and any(hint in name.lower() for hint in _CLASS_OUTPUT_HINTS):
            return tuple(labels), "value"
        return (), "value"


class ClassifierService(_ModelService):
    """A ``classifier`` node: Viam vision (classifications, up to its ``top_k``) and ML model."""

    kinds = frozenset({"vision", "mlmodel"})
    classifies = True
    model_type = "classifier"

    def _load(self) -> VisionModel:
        assert isinstance(self.params, ClassifierParams)
        return Classifier(self.params)

    def classify(self, image: np.ndarray) -> Classifications:
        classifier = self.vision
        assert isinstance(classifier, Classifier)
        return classifier.classify(image)

    def _labels_of(self, name: str, index: int, count: int) -> tuple[tuple[str, ...], str]:
        return tuple(self.vision.labels), "axis"


class TensorsService(_ModelService):
    """A ``tensors`` node: Viam ML model only."""

    kinds = frozenset({"mlmodel"})


class ColorDetectorService(NodeService):
    """A ``color_detector`` node: Viam vision (detections), no model."""

    kinds = frozenset({"vision"})
    detects = True

    def __init__(self, params: Any) -> None:
        self.params = params

    def open(self) -> None:
        from pipeline_nodes.dependencies import import_cv2

        import_cv2("the color_detector service")

    def detect(self, image: np.ndarray) -> Detections:
        from pipeline_nodes.vision.color_detector import detect_color

        p = self.params
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"color_detector needs an (H, W, 3) BGR image, got {image.shape}")
        boxes, fill = detect_color(
            image,
            p.detect_color,
            p.hue_tolerance,
            p.saturation_cutoff,
            p.value_cutoff,
            p.segment_size_px,
        )
        h, w = image.shape[:2]
        label = p.label or p.detect_color
        return Detections(
            xyxy=boxes / np.array([w, h, w, h], np.float32),
            confidence=fill,
            class_id=np.zeros(len(boxes), np.int32),
            class_names=[label] * len(boxes),
            image_wh=(w, h),
        )


def detector_service(params: NodeParams) -> NodeService:
    assert isinstance(params, DetectorParams)
    return DetectorService(params)


def classifier_service(params: NodeParams) -> NodeService:
    assert isinstance(params, ClassifierParams)
    return ClassifierService(params)


def tensors_service(params: NodeParams) -> NodeService:
    assert isinstance(params, ModelParams)
    return TensorsService(params)


def color_detector_service(params: NodeParams) -> NodeService:
    return ColorDetectorService(params)

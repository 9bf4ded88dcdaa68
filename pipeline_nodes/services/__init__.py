"""What the built-in nodes offer remote callers when a graph is served (``pipeline run --serve``).

Registered under ``[project.entry-points."pipeline.services"]`` by node type:
``detector`` (vision: detections; mlmodel), ``classifier`` (vision: classifications;
mlmodel), ``tensors`` (mlmodel) and ``color_detector`` (vision: detections, no model). Each is
built from the node's validated params and runs the very objects the node runs
(``pipeline_nodes.inference.Detector``/``Classifier``, ``detect_color``), so a client's image goes
through the node's own preprocessing, decoding and thresholds.
"""

from pipeline_nodes.services.vision import (
    ClassifierService,
    ColorDetectorService,
    DetectorService,
    TensorsService,
    classifier_service,
    color_detector_service,
    detector_service,
    tensors_service,
)

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

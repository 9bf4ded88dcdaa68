"""The params of the model nodes (``detector``, ``classifier``, ``tensors``).

They are also the keyword arguments of :func:`pipeline_nodes.inference.vision.load_detector` and
:func:`~pipeline_nodes.inference.vision.load_classifier`, so a model configured in a graph file
and one
loaded from Python code take the same options and run the same way.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from pipeline import NodeParams
from pipeline_nodes.inference.decoders import THRESHOLD_OPTIONS, default_threshold
from pipeline_nodes.inference.models.catalog import CATALOG

__all__ = ["ClassifierParams", "DetectorParams", "ModelParams"]


def _threshold_defaults() -> str:
    """What ``default_minimum_confidence`` is when not given, model by model."""
    models = ", ".join(
        f"{spec.name} {value:g}"
        for spec in CATALOG.values()
        if (value := default_threshold(spec.decoder, spec.decoder_params)) is not None
    )
    kinds = ", ".join(f"{k} {default_threshold(k):g}" for k in THRESHOLD_OPTIONS)
    return f"default: the catalog model's ({models}), else the decoder's ({kinds})"


class ModelParams(NodeParams):
    """Params shared by the nodes that run a model."""

    model: str = Field(
        description="A catalog name (see `pipeline models list`) or a .onnx/.tflite file."
    )
    backend: Literal["auto", "onnxruntime", "tflite"] = Field(
        "auto", description="Runtime; auto picks by file suffix."
    )
    providers: list[str] | None = Field(
        None,
        description="ONNX Runtime execution providers by preference, e.g. [tensorrt, cuda, "
        "cpu]; unavailable ones are skipped, CPU is the fallback.",
    )
    num_threads: int | None = Field(None, ge=1, le=64, description="CPU threads for the runtime.")
    labels: list[str] | str | None = Field(
        None, description="Class names, or a label file with one name per line."
    )
    input_size: tuple[int, int] | None = Field(
        None, description="Model input (width, height); default: the model's or the catalog's."
    )
    resize: Literal["letterbox", "stretch"] | None = Field(
        None, description="How a frame is fitted to the input; default: the catalog's."
    )
    mean: float | list[float] | None = Field(None, description="Subtracted from 0..255 pixels.")
    std: float | list[float] | None = Field(None, description="Divides after the mean.")
    color: Literal["RGB", "BGR", "GRAY"] | None = Field(
        None, description="Channel order the model wants (frames are BGR)."
    )
    layout: Literal["NHWC", "NCHW"] | None = Field(None, description="Input tensor layout.")
    input_name: str | None = Field(None, description="The model input to feed (default: first).")
    remap_outputs: dict[str, str] | None = Field(
        None, description="Model output name -> role the decoder expects (e.g. 537: heatmap)."
    )
    max_batch: int = Field(
        1,
        ge=1,
        le=64,
        description="Several cameras into one node: run up to this many waiting frames (one "
        "per camera in turn) through the model at once, where it has a dynamic batch axis "
        "(centerface, person_ssdlite on ONNX Runtime; others run them one by one). For GPU or "
        "NPU providers: on a CPU a batch is slower per frame than one frame at a time.",
    )
    batch_timeout_ms: float = Field(
        10.0,
        ge=0,
        le=10000,
        description="With max_batch > 1: the longest a frame waits for a batch to fill (a batch "
        "goes at once when every camera has a frame waiting).",
    )


class DetectorParams(ModelParams):
    """Params of the ``detector`` node and of
    :func:`~pipeline_nodes.inference.vision.load_detector`."""

    decoder: str | None = Field(
        None, description="Decoder kind: ssd, blazeface, centerface, yolo (default: catalog's)."
    )
    decoder_params: dict[str, Any] = Field(
        default_factory=dict, description="Decoder options, over the catalog's defaults."
    )
    default_minimum_confidence: float | None = Field(
        None,
        ge=0,
        le=1,
        description=f"Detections below this are dropped; {_threshold_defaults()}.",
    )
    label_confidences: dict[str, float] = Field(
        default_factory=dict,
        description="Per-label minimum confidence; labels not listed use the default.",
    )


class ClassifierParams(ModelParams):
    """Params of the ``classifier`` node and of
    :func:`~pipeline_nodes.inference.vision.load_classifier`."""

    top_k: int = Field(5, ge=1, le=1000, description="How many classes to report.")
    activation: Literal["auto", "softmax", "sigmoid", "none"] = Field(
        "auto", description="auto: softmax when outputs are not probabilities already."
    )
    default_minimum_confidence: float = Field(
        0.0, ge=0, le=1, description="Classes below this are not reported."
    )
    label_confidences: dict[str, float] = Field(
        default_factory=dict, description="Per-label minimum confidence."
    )
    output_name: str | None = Field(None, description="The model output to read (default: first).")

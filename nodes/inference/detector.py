"""Inference nodes: ``detector``, ``classifier`` and ``tensors`` on the model service.

All three load a model (a catalog name from ``pipeline models list`` or a file) in
``open()``, turn each frame into the model's input (resize or letterbox, colour order,
mean/std, layout; see ``nodes.inference.preprocess``), run it, and send one message per
frame with the frame's seq, so a downstream overlay can join them. Boxes are normalised to
the *original* image: they are mapped back through the node's own resize and through every
transform recorded upstream in ``meta["transforms"]``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from pipeline import (
    Classifications,
    Detections,
    Frame,
    Input,
    Node,
    NodeParams,
    Output,
    Tensors,
)

__all__ = ["ClassifierNode", "DetectorNode", "TensorsNode"]

# The option each decoder kind uses for its confidence threshold.
_THRESHOLD_OPTION = {
    "blazeface": "min_confidence",
    "centerface": "min_confidence",
    "ssd": "default_minimum_confidence",
    "yolo": "default_minimum_confidence",
}


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


class _ModelNode(Node):
    """Loads the model and builds the input spec; subclasses decode."""

    Params: ClassVar[type[NodeParams]] = ModelParams

    def open(self) -> None:
        from nodes.inference.preprocess import input_spec
        from nodes.inference.service import load_model

        p = self.params
        self._catalog = _catalog_info(p.model)
        self.model = load_model(
            p.model,
            backend=p.backend,
            providers=p.providers,
            num_threads=p.num_threads,
            labels=p.labels,
        )
        meta = self.model.metadata()
        inputs = {t.name: t for t in meta.inputs}
        name = p.input_name or self._catalog.get("input", {}).get("name") or meta.inputs[0].name
        if name not in inputs:
            raise ValueError(
                f"model {p.model!r} has no input {name!r}; its inputs: {', '.join(inputs)}"
            )
        self.spec = input_spec(
            inputs[name],
            self._catalog.get("input"),
            {
                "size": p.input_size,
                "resize": p.resize,
                "mean": p.mean,
                "std": p.std,
                "color": p.color,
                "layout": p.layout,
            },
        )
        # The model's own labels, else the catalog's (a file that carries none).
        self.labels = list(meta.labels) or list(self._catalog.get("labels") or [])
        self.log.info(
            "model %s (%s, %s): input %s %s %s",
            p.model,
            meta.backend,
            ", ".join(meta.providers),
            name,
            self.spec.layout,
            self.spec.size or "frame size",
        )

    def run(
        self, frame: Frame
    ) -> tuple[dict[str, np.ndarray], list[dict[str, Any]], tuple[int, int]]:
        """Model outputs for a frame, the transforms from the original image to the model
        input, and the model input's (width, height)."""
        from nodes.inference.preprocess import prepare

        tensor, records = prepare(frame.image, self.spec)
        outputs = self.model.infer({self.spec.name: tensor})
        remap = self.params.remap_outputs or {}
        if remap:
            outputs = {remap.get(k, k): v for k, v in outputs.items()}
        transforms = list(frame.meta.get("transforms", [])) + records
        size = (
            (tensor.shape[3], tensor.shape[2])
            if self.spec.layout == "NCHW"
            else (tensor.shape[2], tensor.shape[1])
        )
        return outputs, transforms, (int(size[0]), int(size[1]))

    def close(self) -> None:
        model = getattr(self, "model", None)
        if model is not None:
            model.close()


def _catalog_info(model: str) -> dict[str, Any]:
    """The catalog entry of a model name ({} for a file path or an unknown name)."""
    if Path(model).suffix in (".onnx", ".tflite") or Path(model).exists():
        return {}
    from nodes.inference.models.store import model_info

    try:
        return dict(model_info(model))
    except LookupError:
        return {}


class DetectorParams(ModelParams):
    decoder: str | None = Field(
        None, description="Decoder kind: ssd, blazeface, centerface, yolo (default: catalog's)."
    )
    decoder_params: dict[str, Any] = Field(
        default_factory=dict, description="Decoder options, over the catalog's defaults."
    )
    default_minimum_confidence: float | None = Field(
        None, ge=0, le=1, description="Detections below this are dropped (default: decoder's)."
    )
    label_confidences: dict[str, float] = Field(
        default_factory=dict,
        description="Per-label minimum confidence; labels not listed use the default.",
    )


class DetectorNode(_ModelNode):
    """Detect objects in each frame with a model: boxes normalised to the original image.

    One ``Detections`` per frame (empty when nothing is found), with the frame's seq, so an
    overlay joins them. Boxes are xyxy in 0..1 of the image the source captured, mapped back
    through this node's letterbox and every upstream resize or crop; keypoints too. Ends when
    its input ends; with a slow model put ``when_full: drop_oldest`` on its input edge to
    keep it on fresh frames.

    Example:
        - id: faces
          node: detector
          params: {model: face_short_range, default_minimum_confidence: 0.6}
          inputs: {frames: {from: camera/frames, queue: 1, when_full: drop_oldest}}
    """

    Params: ClassVar[type[NodeParams]] = DetectorParams

    frames = Input(Frame, description="(H, W, 3) uint8 BGR frames.")
    detections = Output(Detections, description="Boxes normalised to the source image.")

    def open(self) -> None:
        super().open()
        from nodes.inference.decoders import make_decoder

        p = self.params
        kind = p.decoder or self._catalog.get("decoder")
        if not kind:
            raise ValueError(
                f"model {p.model!r} is not in the catalog: say which decoder to use with "
                "params.decoder (ssd, blazeface, centerface or yolo)"
            )
        options = (
            dict(self._catalog.get("decoder_params", {}))
            if not p.decoder or (p.decoder == self._catalog.get("decoder"))
            else {}
        )
        options.update(p.decoder_params)
        threshold = _THRESHOLD_OPTION.get(kind)
        floor = min([p.default_minimum_confidence or 1.0, *p.label_confidences.values()])
        if threshold and (p.default_minimum_confidence is not None or p.label_confidences):
            options[threshold] = floor
        if kind in ("ssd", "yolo") and "labels" not in options and self.labels:
            options["labels"] = tuple(self.labels)
        self.decoder = make_decoder(kind, **options)
        self.default_confidence = p.default_minimum_confidence

    def process(self, frames: Frame) -> None:
        from nodes.transforms import geometry

        t0 = time.perf_counter()
        outputs, transforms, input_wh = self.run(frames)
        found = self.decoder.decode(outputs, input_wh)
        assert isinstance(found, Detections)
        xyxy = geometry.map_boxes_back(found.xyxy, transforms) if transforms else found.xyxy
        keypoints = found.keypoints
        if keypoints is not None and transforms:
            keypoints = geometry.map_points_back(keypoints, transforms)
        names = list(found.class_names)
        if self.labels:
            names = [
                self.labels[int(i)] if 0 <= int(i) < len(self.labels) else n
                for i, n in zip(found.class_id, names)
            ]
        image_wh = geometry.original_wh(transforms) if transforms else (frames.width, frames.height)
        result = frames.derive(
            Detections,
            xyxy=xyxy,
            confidence=found.confidence,
            class_id=found.class_id,
            class_names=names,
            keypoints=keypoints,
            image_wh=image_wh,
            meta={
                "model": self.params.model,
                "inference_ms": round((time.perf_counter() - t0) * 1e3, 3),
            },
        )
        self.detections.send(self._filter(result))

    def _filter(self, found: Detections) -> Detections:
        p = self.params
        if not len(found) or (p.default_minimum_confidence is None and not p.label_confidences):
            return found
        default = p.default_minimum_confidence or 0.0
        floors = np.array(
            [p.label_confidences.get(n, default) for n in found.class_names], np.float32
        )
        return found.where(found.confidence >= floors)


class ClassifierParams(ModelParams):
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


class ClassifierNode(_ModelNode):
    """Classify each frame with a model: the top-k labels with their confidence.

    One ``Classifications`` per frame (possibly empty after the thresholds), with the frame's
    seq. Ends when its input ends.

    Example:
        - id: is_face
          node: classifier
          params: {model: face_classifier, top_k: 1}
          inputs: {frames: crop/frames}
    """

    Params: ClassVar[type[NodeParams]] = ClassifierParams

    frames = Input(Frame, description="(H, W, 3) uint8 BGR frames.")
    classifications = Output(Classifications, description="Top-k labels, best first.")

    def open(self) -> None:
        super().open()
        from nodes.inference.decoders import make_decoder

        p = self.params
        options: dict[str, Any] = {"top_k": p.top_k}
        if p.activation != "auto":
            options["activation"] = p.activation
        elif self._catalog.get("decoder_params", {}).get("activation"):
            options["activation"] = self._catalog["decoder_params"]["activation"]
        if self.labels:
            options["labels"] = tuple(self.labels)
        self.decoder = make_decoder("classification", **options)

    def process(self, frames: Frame) -> None:
        outputs, _, input_wh = self.run(frames)
        name = self.params.output_name or next(iter(outputs))
        if name not in outputs:
            raise ValueError(f"model has no output {name!r}; outputs: {', '.join(outputs)}")
        found = self.decoder.decode({name: outputs[name]}, input_wh)
        assert isinstance(found, Classifications)
        p = self.params
        floors = np.array(
            [p.label_confidences.get(n, p.default_minimum_confidence) for n in found.class_names],
            np.float32,
        )
        keep = found.confidence >= floors if len(found) else np.zeros(0, bool)
        self.classifications.send(
            frames.derive(
                Classifications,
                class_names=[n for n, k in zip(found.class_names, keep) if k],
                confidence=found.confidence[keep],
                class_id=found.class_id[keep],
                meta={"model": p.model},
            )
        )


class TensorsNode(_ModelNode):
    """Run a model on each frame and send its raw outputs, by name.

    The frame is prepared as for ``detector`` (resize, colour, mean/std, layout). One
    ``Tensors`` per frame with the frame's seq; ends when its input ends.

    Example:
        - id: raw
          node: tensors
          params: {model: centerface, input_size: [320, 224]}
          inputs: {frames: camera/frames}
    """

    frames = Input(Frame, description="(H, W, 3) uint8 BGR frames.")
    tensors = Output(Tensors, description="The model's outputs by name.")

    def process(self, frames: Frame) -> None:
        outputs, transforms, _ = self.run(frames)
        self.tensors.send(
            frames.derive(
                Tensors,
                tensors=outputs,
                meta={"model": self.params.model, "transforms": transforms},
            )
        )

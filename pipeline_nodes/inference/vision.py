"""Vision models from your own code: an image in, ``Detections`` or ``Classifications`` out.

:func:`load_detector` and :func:`load_classifier` load a model (a catalog name from
``pipeline models list`` or a ``.onnx``/``.tflite`` file) with the same options as the
``detector`` and ``classifier`` nodes (their params, as keyword arguments) and return a
:class:`Detector` or :class:`Classifier`. These objects *are* what the nodes run: the input
preparation (resize or letterbox, colour order, mean/std, layout), the output remapping, the
decoder and the per-label confidence thresholds are the same code, so a model behaves the same
in a graph and in a script. :func:`pipeline_nodes.inference.service.load_model` is the level below:
raw tensors in and out.

Example::

    from pipeline_nodes.inference import load_detector

    with load_detector("face_short_range", default_minimum_confidence=0.6) as faces:
        found = faces.detect(image)  # (H, W, 3) uint8 BGR
        print(found.pixels(), found.class_names, found.confidence)

Boxes are xyxy normalised to 0..1 of the image given, origin at the top-left.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import numpy as np

from pipeline.messages import Classifications, Detections
from pipeline_nodes.inference.backends.base import Model
from pipeline_nodes.inference.decoders import (
    THRESHOLD_OPTIONS,
    Decoder,
    default_threshold,
    make_decoder,
)
from pipeline_nodes.inference.decoders.base import thresholds_for
from pipeline_nodes.inference.params import ClassifierParams, DetectorParams, ModelParams
from pipeline_nodes.inference.preprocess import ModelInput, model_input, prepare
from pipeline_nodes.inference.service import load_model

__all__ = [
    "Classifier",
    "Detector",
    "ModelRun",
    "VisionModel",
    "load_classifier",
    "load_detector",
]


def load_detector(model: str | Path, **params: Any) -> Detector:
    """A :class:`Detector` for ``model``, configured like the ``detector`` node.

    Args:
        model: a catalog name (``pipeline models list``) or a ``.onnx``/``.tflite`` file.
        **params: the ``detector`` node's params
        (:class:`~pipeline_nodes.inference.params.DetectorParams`):
            ``default_minimum_confidence``, ``label_confidences``, ``decoder``,
            ``decoder_params``, ``input_size`` (width, height), ``num_threads``, ...

    Raises:
        pydantic.ValidationError: an unknown param or a bad value (a ``ValueError``).
        LookupError: no model of that name (the message lists the known ones).
        ValueError: the model needs a decoder (``decoder=...``) or has no such input.
        DecoderError: bad decoder options.
    """
    return Detector(DetectorParams(model=str(model), **params))


def load_classifier(model: str | Path, **params: Any) -> Classifier:
    """A :class:`Classifier` for ``model``, configured like the ``classifier`` node.

    Args:
        model: a catalog name or a ``.onnx``/``.tflite`` file.
        **params: the ``classifier`` node's params
            (:class:`~pipeline_nodes.inference.params.ClassifierParams`): ``top_k``, ``activation``,
            ``default_minimum_confidence``, ``label_confidences``, ``output_name``, ...

    Raises:
        pydantic.ValidationError, LookupError, ValueError: as :func:`load_detector`.
    """
    return Classifier(ClassifierParams(model=str(model), **params))


class ModelRun(NamedTuple):
    """One image through a model.

    Attributes:
        outputs: the model's outputs by name (after ``remap_outputs``).
        transforms: geometry records from the original image to the model input: those
            given (upstream resizes and crops), then this model's own resize or letterbox.
        input_wh: (width, height) of the tensor the model ran on.
    """

    outputs: dict[str, np.ndarray]
    transforms: list[dict[str, Any]]
    input_wh: tuple[int, int]


class VisionModel:
    """A loaded model and how to feed it an image (what the three model nodes share).

    Attributes:
        params: the validated params.
        model: the runtime model (``metadata()``, ``infer()``).
        labels: class names: the model file's own, else the catalog's, else ``params.labels``.
        input: how an image becomes the input tensor (name, size, layout, colour, mean/std).
        catalog: the catalog entry of a catalog name (``{}`` for a file).
    """

    def __init__(self, params: ModelParams) -> None:
        from pipeline_nodes.inference.registry_models import resolve_registry_model

        # A registry model (``org:name@version``) becomes its cached file and stored params.
        params = resolve_registry_model(params)
        self.params = params
        self.catalog = catalog_entry(params.model)
        self.model: Model = load_model(
            params.model,
            backend=params.backend,
            providers=params.providers,
            num_threads=params.num_threads,
            labels=params.labels,
        )
        try:
            meta = self.model.metadata()
            inputs = {t.name: t for t in meta.inputs}
            catalog_input = self.catalog.get("input") or {}
            name = params.input_name or catalog_input.get("name") or meta.inputs[0].name
            if name not in inputs:
                raise ValueError(
                    f"model {params.model!r} has no input {name!r}; its inputs: {', '.join(inputs)}"
                )
            self.input: ModelInput = model_input(
                inputs[name],
                catalog_input or None,
                {
                    "size": params.input_size,
                    "resize": params.resize,
                    "mean": params.mean,
                    "std": params.std,
                    "color": params.color,
                    "layout": params.layout,
                },
            )
            # The model's own labels, else the catalog's (a file that carries none).
            self.labels: tuple[str, ...] = tuple(meta.labels) or tuple(
                self.catalog.get("labels") or ()
            )
        except BaseException:
            self.model.close()
            raise

    @property
    def input_size(self) -> tuple[int, int] | None:
        """The model input's (width, height); ``None`` when it runs at the image's size
        (rounded down to a multiple of ``input.size_multiple``)."""
        return self.input.size

    def run(self, image: np.ndarray, transforms: Sequence[Mapping[str, Any]] = ()) -> ModelRun:
        """Prepare ``image`` ((H, W, 3) uint8 BGR, or (H, W) grey) and run the model.

        ``transforms`` are the geometry records of what was already done to the image (a
        frame's ``meta["transforms"]``); the result's records continue them.
        """
        check_image(image)
        tensor, records = prepare(image, self.input)
        outputs = self.model.infer({self.input.name: tensor})
        remap = self.params.remap_outputs or {}
        if remap:
            outputs = {remap.get(k, k): v for k, v in outputs.items()}
        if self.input.layout == "NCHW":
            input_wh = (int(tensor.shape[3]), int(tensor.shape[2]))
        else:
            input_wh = (int(tensor.shape[2]), int(tensor.shape[1]))
        return ModelRun(outputs, [*(dict(t) for t in transforms), *records], input_wh)

    @property
    def batches(self) -> bool:
        """The model takes several images in one run (its input's batch axis is dynamic)."""
        inputs = self.model.metadata().inputs
        for info in inputs:
            if info.name == self.input.name:
                return bool(info.shape) and info.shape[0] == -1
        return False

    def run_batch(
        self,
        images: Sequence[np.ndarray],
        transforms: Sequence[Sequence[Mapping[str, Any]]] = (),
    ) -> list[ModelRun]:
        """``run`` for several images: one model run for all of them when the model batches
        and their prepared tensors have one shape, else one run each."""
        transforms = list(transforms) or [()] * len(images)
        if len(images) < 2 or not self.batches:
            return [self.run(im, t) for im, t in zip(images, transforms)]
        prepared = []
        for image in images:
            check_image(image)
            prepared.append(prepare(image, self.input))
        if len({tensor.shape for tensor, _ in prepared}) != 1:
            return [self.run(im, t) for im, t in zip(images, transforms)]
        batch = np.concatenate([tensor for tensor, _ in prepared], axis=0)
        outputs = self.model.infer({self.input.name: batch})
        remap = self.params.remap_outputs or {}
        if remap:
            outputs = {remap.get(k, k): v for k, v in outputs.items()}
        if self.input.layout == "NCHW":
            input_wh = (int(batch.shape[3]), int(batch.shape[2]))
        else:
            input_wh = (int(batch.shape[2]), int(batch.shape[1]))
        runs = []
        for i, ((_, records), before) in enumerate(zip(prepared, transforms)):
            mine = {k: v[i : i + 1] for k, v in outputs.items()}
            runs.append(ModelRun(mine, [*(dict(t) for t in before), *records], input_wh))
        return runs

    def close(self) -> None:
        """Free the runtime (idempotent)."""
        self.model.close()

    def __enter__(self) -> VisionModel:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Detector(VisionModel):
    """A detection model with its decoder and thresholds: :meth:`detect` an image.

    Attributes:
        decoder: the decoder (kind from ``params.decoder`` or the catalog).
        default_minimum_confidence: the threshold of labels not in ``label_confidences``:
            the param's, else the decoder's own (the catalog's setting for a catalog model).
        label_confidences: per-label thresholds.
    """

    params: DetectorParams

    def __init__(self, params: DetectorParams) -> None:
        super().__init__(params)
        params = self.params  # resolved (a registry model's stored params)
        try:
            self.decoder: Decoder = self._make_decoder(params)
        except BaseException:
            self.close()
            raise

    def _make_decoder(self, p: DetectorParams) -> Decoder:
        kind = p.decoder or self.catalog.get("decoder")
        if not kind:
            raise ValueError(
                f"model {p.model!r} is not in the catalog: say which decoder to use with "
                "decoder (ssd, blazeface, centerface or yolo)"
            )
        same_as_catalog = not p.decoder or p.decoder == self.catalog.get("decoder")
        options = dict(self.catalog.get("decoder_params", {})) if same_as_catalog else {}
        options.update(p.decoder_params)
        if kind in ("ssd", "yolo") and "labels" not in options and self.labels:
            options["labels"] = self.labels
        decoder = make_decoder(kind, **options)
        option = THRESHOLD_OPTIONS.get(kind)
        own = default_threshold(kind, options)
        self.default_minimum_confidence: float | None = (
            p.default_minimum_confidence if p.default_minimum_confidence is not None else own
        )
        self.label_confidences: dict[str, float] = dict(p.label_confidences)
        self._filtered = p.default_minimum_confidence is not None or bool(p.label_confidences)
        if option and self._filtered and self.default_minimum_confidence is not None:
            # The decoder keeps everything any label may keep; filter() does the rest.
            floor = min([self.default_minimum_confidence, *self.label_confidences.values()])
            decoder = make_decoder(kind, **{**options, option: floor})
        return decoder

    def detect(self, image: np.ndarray, transforms: Sequence[Mapping[str, Any]] = ()) -> Detections:
        """The objects in ``image``, best first.

        Args:
            image: ``(H, W, 3)`` uint8 BGR (or ``(H, W)`` grey).
            transforms: geometry records of what was done to the image since it was
                captured (a frame's ``meta["transforms"]``): boxes are mapped back through
                them to the original image.

        Returns:
            ``Detections`` with boxes xyxy in 0..1 of the (original) image, origin top-left,
            keypoints likewise, ``image_wh`` its size, and ``meta`` ``{"model",
            "inference_ms"}``; ``seq`` and the other frame fields are left at defaults.
        """
        t0 = time.perf_counter()
        return self._detections(image, self.run(image, transforms), t0)

    def detect_batch(
        self,
        images: Sequence[np.ndarray],
        transforms: Sequence[Sequence[Mapping[str, Any]]] = (),
    ) -> list[Detections]:
        """``detect`` for several images (e.g. one per camera): one model run for all when
        the model batches (see ``run_batch``); ``meta["inference_ms"]`` is the batch's."""
        t0 = time.perf_counter()
        runs = self.run_batch(images, transforms)
        return [self._detections(im, run, t0) for im, run in zip(images, runs)]

    def _detections(self, image: np.ndarray, run: ModelRun, t0: float) -> Detections:
        from pipeline_nodes.transforms import geometry

        outputs, records, input_wh = run
        found = self.decoder.decode(outputs, input_wh)
        if not isinstance(found, Detections):
            raise TypeError(f"decoder {type(self.decoder).__name__} does not detect")
        xyxy = geometry.map_boxes_back(found.xyxy, records) if records else found.xyxy
        keypoints = found.keypoints
        if keypoints is not None and records:
            keypoints = geometry.map_points_back(keypoints, records)
        names = list(found.class_names)
        if self.labels:
            names = [
                self.labels[int(i)] if 0 <= int(i) < len(self.labels) else n
                for i, n in zip(found.class_id, names)
            ]
        if records:
            image_wh = geometry.original_wh(records)
        else:
            image_wh = (int(image.shape[1]), int(image.shape[0]))
        result = Detections(
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
        return self.filter(result)

    def filter(self, found: Detections) -> Detections:
        """``found`` without the detections below their label's threshold."""
        if not len(found) or not self._filtered:
            return found
        default = self.default_minimum_confidence
        floors = thresholds_for(
            found.class_names, 0.0 if default is None else default, self.label_confidences
        )
        return found.where(found.confidence >= floors)


class Classifier(VisionModel):
    """A classification model with its decoder and thresholds: :meth:`classify` an image."""

    params: ClassifierParams

    def __init__(self, params: ClassifierParams) -> None:
        super().__init__(params)
        params = self.params  # resolved (a registry model's stored params)
        options: dict[str, Any] = {"top_k": params.top_k}
        if params.activation != "auto":
            options["activation"] = params.activation
        elif self.catalog.get("decoder_params", {}).get("activation"):
            options["activation"] = self.catalog["decoder_params"]["activation"]
        if self.labels:
            options["labels"] = self.labels
        try:
            self.decoder: Decoder = make_decoder("classification", **options)
        except BaseException:
            self.close()
            raise

    def classify(self, image: np.ndarray) -> Classifications:
        """The ``top_k`` classes of ``image`` ((H, W, 3) uint8 BGR), best first, without
        those below their label's threshold; ``meta`` is ``{"model"}``."""
        p = self.params
        outputs, _, input_wh = self.run(image)
        name = p.output_name or next(iter(outputs))
        if name not in outputs:
            raise ValueError(f"model has no output {name!r}; outputs: {', '.join(outputs)}")
        found = self.decoder.decode({name: outputs[name]}, input_wh)
        if not isinstance(found, Classifications):
            raise TypeError(f"decoder {type(self.decoder).__name__} does not classify")
        floors = thresholds_for(
            found.class_names, p.default_minimum_confidence, p.label_confidences
        )
        keep = found.confidence >= floors
        return Classifications(
            class_names=[n for n, k in zip(found.class_names, keep) if k],
            confidence=found.confidence[keep],
            class_id=found.class_id[keep],
            meta={"model": p.model},
        )


def check_image(image: object) -> None:
    """Raise ``ValueError`` unless ``image`` is an (H, W, 3) or (H, W) uint8 array."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected an image as a numpy array, got {type(image).__name__}")
    shape_ok = image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)
    if not shape_ok or image.dtype != np.uint8 or 0 in image.shape:
        raise ValueError(
            f"expected an (H, W, 3) uint8 BGR image, got {image.dtype} {tuple(image.shape)}"
        )


def catalog_entry(model: str) -> dict[str, Any]:
    """The catalog entry of a model name (``{}`` for a file path or an unknown name)."""
    if Path(model).suffix in (".onnx", ".tflite") or Path(model).exists():
        return {}
    from pipeline_nodes.inference.models.store import model_info

    try:
        return dict(model_info(model))
    except LookupError:
        return {}

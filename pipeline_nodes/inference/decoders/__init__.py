"""Decoders: raw model outputs of one image -> ``Detections`` or ``Classifications``.

Each decoder module offers plain numpy functions (``decode_ssd``, ``decode_blazeface``, ...
returning arrays) and a small class configured by a frozen dataclass, whose
``decode(outputs, input_wh)`` returns a message. Detection boxes are xyxy normalised to the
*model input*; the node that runs the model maps them to the camera frame with
``pipeline_nodes.transforms.geometry.map_boxes_back`` and fills in ``seq`` and friends. Kinds:
``ssd`` (post-processed boxes/classes/scores/count), ``blazeface`` (MediaPipe anchors),
``centerface`` (heatmaps), ``yolo`` (raw candidates + NMS) and ``classification`` (top-k).
:func:`make_decoder` builds one from a kind and options, as a graph file gives them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal, overload

from .anchors import BLAZEFACE_ANCHORS, SsdAnchorOptions, generate_ssd_anchors
from .base import DecodedBoxes, Decoder, DecoderError, to_detections
from .blazeface import BLAZEFACE_KEYPOINTS, BlazeFaceConfig, BlazeFaceDecoder, decode_blazeface
from .centerface import (
    CENTERFACE_KEYPOINTS,
    CenterFaceConfig,
    CenterFaceDecoder,
    decode_centerface,
)
from .classification import (
    ClassificationConfig,
    ClassificationDecoder,
    class_probabilities,
    decode_classification,
)
from .nms import iou_matrix, nms, weighted_nms
from .ssd import SSDConfig, SSDDecoder, box_order_indices, decode_ssd
from .yolo import YOLOConfig, YOLODecoder, decode_yolo

__all__ = [
    "BLAZEFACE_ANCHORS",
    "BLAZEFACE_KEYPOINTS",
    "CENTERFACE_KEYPOINTS",
    "DECODER_KINDS",
    "THRESHOLD_OPTIONS",
    "BlazeFaceConfig",
    "BlazeFaceDecoder",
    "CenterFaceConfig",
    "CenterFaceDecoder",
    "ClassificationConfig",
    "ClassificationDecoder",
    "DecodedBoxes",
    "Decoder",
    "DecoderError",
    "SSDConfig",
    "SSDDecoder",
    "SsdAnchorOptions",
    "YOLOConfig",
    "YOLODecoder",
    "box_order_indices",
    "class_probabilities",
    "decode_blazeface",
    "decode_centerface",
    "decode_classification",
    "decode_ssd",
    "decode_yolo",
    "default_threshold",
    "generate_ssd_anchors",
    "iou_matrix",
    "make_decoder",
    "nms",
    "to_detections",
    "weighted_nms",
]

_KINDS: dict[str, tuple[type[Any], type[Any]]] = {
    "ssd": (SSDConfig, SSDDecoder),
    "blazeface": (BlazeFaceConfig, BlazeFaceDecoder),
    "centerface": (CenterFaceConfig, CenterFaceDecoder),
    "yolo": (YOLOConfig, YOLODecoder),
    "classification": (ClassificationConfig, ClassificationDecoder),
}

DECODER_KINDS = tuple(_KINDS)
"""The kinds :func:`make_decoder` knows."""

THRESHOLD_OPTIONS: Mapping[str, str] = {
    "blazeface": "min_confidence",
    "centerface": "min_confidence",
    "ssd": "default_minimum_confidence",
    "yolo": "default_minimum_confidence",
}
"""The option each detection decoder kind takes its confidence threshold from."""


def default_threshold(kind: str, options: Mapping[str, Any] | None = None) -> float | None:
    """The confidence threshold a decoder of ``kind`` built with ``options`` uses: the
    option's value, else its config's default; ``None`` for a kind without one."""
    name = THRESHOLD_OPTIONS.get(kind)
    if name is None or kind not in _KINDS:
        return None
    if options and name in options:
        return float(options[name])
    default = {f.name: f.default for f in dataclasses.fields(_KINDS[kind][0])}[name]
    return None if default is dataclasses.MISSING else float(default)


@overload
def make_decoder(kind: Literal["ssd"], **options: Any) -> SSDDecoder: ...
@overload
def make_decoder(kind: Literal["blazeface"], **options: Any) -> BlazeFaceDecoder: ...
@overload
def make_decoder(kind: Literal["centerface"], **options: Any) -> CenterFaceDecoder: ...
@overload
def make_decoder(kind: Literal["yolo"], **options: Any) -> YOLODecoder: ...
@overload
def make_decoder(kind: Literal["classification"], **options: Any) -> ClassificationDecoder: ...
@overload
def make_decoder(kind: str, **options: Any) -> Decoder: ...


def make_decoder(kind: str, **options: Any) -> Decoder:
    """A decoder of ``kind`` configured with ``options`` (the fields of its config class).

    Options may be plain YAML values: lists become tuples, and the ``blazeface`` option
    ``anchors`` may be a mapping of :class:`SsdAnchorOptions` fields.

    Args:
        kind: one of :data:`DECODER_KINDS`.
        **options: fields of the kind's config dataclass, e.g. ``box_order="yxyx"`` for ssd.

    Returns:
        The decoder; its ``decode(outputs, input_wh)`` returns ``Detections`` (or
        ``Classifications`` for ``classification``).

    Raises:
        DecoderError: unknown kind (the message lists the kinds), unknown or missing options
            (the message lists the valid ones), or an invalid value.
    """
    try:
        config_cls, decoder_cls = _KINDS[kind]
    except KeyError:
        raise DecoderError(
            f"unknown decoder kind {kind!r}; kinds: {', '.join(DECODER_KINDS)}"
        ) from None
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise DecoderError(
            f"{kind} decoder: unknown option(s) {', '.join(map(repr, unknown))}; "
            f"options: {', '.join(fields)}"
        )
    missing = [
        name
        for name, f in fields.items()
        if name not in options
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise DecoderError(f"{kind} decoder needs option(s): {', '.join(missing)}")
    values = _tuples(dict(options))
    try:
        anchors = values.get("anchors")
        if kind == "blazeface" and isinstance(anchors, Mapping):
            values["anchors"] = SsdAnchorOptions(**_tuples(dict(anchors)))
        return decoder_cls(config_cls(**values))  # type: ignore[no-any-return]
    except (TypeError, ValueError) as exc:
        if isinstance(exc, DecoderError):
            raise
        raise DecoderError(f"{kind} decoder: {exc}") from exc


def _tuples(values: dict[str, Any]) -> dict[str, Any]:
    """Lists (as YAML gives them) -> tuples, nested, so frozen configs hold immutable values."""

    def convert(value: Any) -> Any:
        if isinstance(value, list):
            return tuple(convert(v) for v in value)
        return value

    return {k: convert(v) for k, v in values.items()}

"""Turn a camera frame into a model's input tensor, recording the geometry it changed.

``ModelInput`` says what a model wants: tensor name, size, layout (NHWC/NCHW), colour
(RGB/BGR/GRAY), resize mode (letterbox/stretch), mean/std and dtype. ``model_input()`` builds
it from the loaded model's own tensor shape, then the catalog's entry for a named model, then
a node's params. Sizes are ``(width, height)`` everywhere (the tensor's own shape is ``(H,
W)``, read by layout). ``prepare(image, spec)`` returns the tensor and the transform
records (``pipeline_nodes.transforms.geometry``) that map boxes on the model input back to the
image.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from pipeline_nodes.inference.backends.base import TensorInfo
from pipeline_nodes.transforms import geometry

__all__ = ["ModelInput", "model_input", "prepare"]

Layout = Literal["NHWC", "NCHW"]
Color = Literal["RGB", "BGR", "GRAY"]


@dataclasses.dataclass(frozen=True)
class ModelInput:
    """How to build one model input from a BGR frame.

    Attributes:
        name: the model's input tensor name.
        size: (width, height) of the model input; ``None`` keeps the frame's size rounded
            down to ``size_multiple``.
        layout: NHWC or NCHW; a batch dimension of 1 is always added.
        color: channel order (or GRAY) the model expects.
        resize: letterbox keeps the aspect ratio with padding; stretch does not.
        mean, std: per channel (or one value): ``(x - mean) / std`` on 0..255 pixels.
        dtype: float32, or uint8 (then mean/std are not applied).
        size_multiple: sizes must be a multiple of this (CenterFace: 32).
    """

    name: str
    size: tuple[int, int] | None
    layout: Layout = "NHWC"
    color: Color = "RGB"
    resize: Literal["letterbox", "stretch"] = "stretch"
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    dtype: Literal["float32", "uint8"] = "float32"
    size_multiple: int = 1


def _floats(value: float | Sequence[float]) -> tuple[float, ...]:
    if isinstance(value, (int, float)):
        return (float(value),)
    return tuple(float(v) for v in value)


def model_input(
    tensor: TensorInfo,
    catalog: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ModelInput:
    """Merge what is known about a model input: catalog entry, tensor shape, node params.

    Without a catalog entry the layout is read off the shape (channels first when dimension
    1 is 1 or 3), the size from the static dimensions, and a float input gets 0..1 scaling.
    """
    shape = tensor.shape
    values: dict[str, Any] = {"name": tensor.name}
    if len(shape) == 4:
        nchw = shape[1] in (1, 3) and shape[3] not in (1, 3)
        values["layout"] = "NCHW" if nchw else "NHWC"
        h, w = (shape[2], shape[3]) if nchw else (shape[1], shape[2])
        channels = shape[1] if nchw else shape[3]
        values["size"] = (w, h) if w > 0 and h > 0 else None
        if channels == 1:
            values["color"] = "GRAY"
    else:
        values["size"] = None
    values["dtype"] = "uint8" if tensor.dtype == "uint8" else "float32"
    if values["dtype"] == "float32" and not catalog:
        values["std"] = (255.0,)
    if catalog:
        for key in ("layout", "color", "resize", "dtype", "size_multiple"):
            if catalog.get(key) is not None:
                values[key] = catalog[key]
        if catalog.get("size"):
            values["size"] = tuple(int(v) for v in catalog["size"])
        for key in ("mean", "std"):
            if catalog.get(key) is not None:
                values[key] = _floats(catalog[key])
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key in ("mean", "std"):
            value = _floats(value)
        elif key == "size":
            value = (int(value[0]), int(value[1]))
        values[key] = value
    return ModelInput(**values)


def model_size(spec: ModelInput, frame_wh: tuple[int, int]) -> tuple[int, int]:
    """The (width, height) the model runs at for a frame of ``frame_wh``."""
    if spec.size is not None:
        return spec.size
    m = max(spec.size_multiple, 1)
    return max(m, frame_wh[0] // m * m), max(m, frame_wh[1] // m * m)


def prepare(image: np.ndarray, spec: ModelInput) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The input tensor for ``image`` ((H, W, 3) BGR or (H, W) grey uint8) and the geometry
    records of the resize it applied (empty when the size already matched)."""
    import cv2

    h, w = image.shape[:2]
    tw, th = model_size(spec, (w, h))
    records: list[dict[str, Any]] = []
    if (tw, th) != (w, h):
        if spec.resize == "letterbox":
            scale, (px, py), (nw, nh) = geometry.letterbox_params((w, h), (tw, th))
            canvas = np.zeros((th, tw, *image.shape[2:]), np.uint8)
            canvas[py : py + nh, px : px + nw] = cv2.resize(
                image, (nw, nh), interpolation=cv2.INTER_LINEAR
            )
            image = canvas
            records.append(geometry.record_letterbox((w, h), (tw, th), scale, (px, py)))
        else:
            image = cv2.resize(image, (tw, th), interpolation=cv2.INTER_LINEAR)
            records.append(geometry.record_resize((w, h), (tw, th)))
    if image.ndim == 3:
        if spec.color == "RGB":
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        elif spec.color == "GRAY":
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.ndim == 2:
        image = image[:, :, None]
    if spec.dtype == "uint8":
        tensor = np.ascontiguousarray(image)
    else:
        mean = np.asarray(spec.mean, np.float32)
        inv_std = 1.0 / np.asarray(spec.std, np.float32)
        tensor = (image.astype(np.float32) - mean) * inv_std
    if spec.layout == "NCHW":
        tensor = tensor.transpose(2, 0, 1)
    return np.ascontiguousarray(tensor[None]), records

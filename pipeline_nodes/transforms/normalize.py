"""Turn frames into a model's input tensor: scale, per-channel mean/std, dtype, layout, batch.

Each pixel becomes ``(pixel * scale - mean[c]) / std[c]``. :func:`normalize_into` does it into
a caller's buffer of :func:`tensor_shape` (one pass per channel, no temporary for float32), and
the ``Normalize`` node allocates that buffer from its output port, so the tensor reaches the
inference node without a copy. Channel order is the frame's (convert with the ``color`` node
first when a model wants RGB).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from pipeline import Frame, Input, Node, NodeParams, Output, Tensors

Layout = Literal["NHWC", "NCHW"]
DType = Literal["float32", "uint8"]


def tensor_shape(image_shape: tuple[int, ...], layout: Layout, batch: bool) -> tuple[int, ...]:
    """Shape of the tensor made from an ``(H, W)`` or ``(H, W, C)`` image."""
    h, w = image_shape[:2]
    c = 1 if len(image_shape) == 2 else image_shape[2]
    shape = (h, w, c) if layout == "NHWC" else (c, h, w)
    return (1, *shape) if batch else shape


def per_channel(values: Sequence[float], channels: int, what: str) -> np.ndarray:
    """``values`` as a ``(channels,)`` float32 array; one value stands for every channel.

    Raises:
        ValueError: neither one value nor one per channel.
    """
    if len(values) == 1:
        return np.full(channels, values[0], np.float32)
    if len(values) != channels:
        raise ValueError(
            f"{what} has {len(values)} values for an image of {channels} channels; "
            f"give 1 or {channels}"
        )
    return np.asarray(values, np.float32)


def normalize_into(
    image: np.ndarray,
    out: np.ndarray,
    *,
    mean: Sequence[float] = (0.0,),
    std: Sequence[float] = (1.0,),
    scale: float = 1.0,
    layout: Layout = "NHWC",
    batch: bool = True,
) -> np.ndarray:
    """Write ``(image * scale - mean) / std`` into ``out`` in the given layout.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` uint8 (read-only is fine).
        out: writable float32 or uint8 buffer of ``tensor_shape(image.shape, layout, batch)``;
            a uint8 result is rounded and clipped to 0..255.
        mean: per-channel mean (in the image's channel order), or one value for all.
        std: per-channel standard deviation (> 0), or one value for all.
        scale: multiplies the pixels first (``1/255`` maps 0..255 to 0..1).
        layout: ``NHWC`` (channels last) or ``NCHW`` (channels first).
        batch: ``out`` has a leading batch dimension of 1.

    Returns:
        ``out``.

    Raises:
        ValueError: ``out`` has the wrong shape or dtype, or mean/std the wrong length.
    """
    shape = tensor_shape(image.shape, layout, batch)
    if out.shape != shape or out.dtype not in (np.float32, np.uint8):
        raise ValueError(f"normalize: out is {out.dtype} {out.shape}, expected {shape}")
    src = image if image.ndim == 3 else image[:, :, None]
    channels = src.shape[2]
    k = per_channel(std, channels, "std")
    if np.any(k <= 0):
        raise ValueError(f"std values must be > 0, got {list(std)}")
    b = per_channel(mean, channels, "mean") / k
    k = np.float32(scale) / k
    body = out[0] if batch else out
    # One pass per channel plane, in both layouts: about twice as fast as broadcasting a
    # (C,) vector over (H, W, C), which numpy does element by element.
    planes = [body[..., c] if layout == "NHWC" else body[c] for c in range(channels)]
    identity = bool(np.all(k == 1) and np.all(b == 0))
    for dst, pixels, kc, bc in zip(planes, (src[:, :, c] for c in range(channels)), k, b):
        if identity:
            np.copyto(dst, pixels, casting="unsafe")
        elif out.dtype == np.float32:
            np.multiply(pixels, kc, out=dst)
            np.subtract(dst, bc, out=dst)
        else:
            # uint8 with arithmetic (rare: quantised models usually take raw pixels) needs a
            # float temporary for the rounding.
            value = pixels * kc - bc
            np.clip(np.rint(value, out=value), 0, 255, out=value)
            np.copyto(dst, value, casting="unsafe")
    return out


class Normalize(Node):
    """Turn each frame into one named input tensor: scale, mean/std, dtype, layout, batch.

    Each value is ``(pixel * scale - mean[c]) / std[c]`` in the frame's channel order, laid
    out NHWC or NCHW, with an optional leading batch dimension of 1, as float32 or uint8
    (rounded and clipped). The tensor is written straight into the output port's shared
    memory and sent as ``Tensors`` (one tensor named ``name``) that carries the frame's seq,
    ``t_capture_ns`` and meta (with its ``transforms``), so detections can be mapped back. A
    mean/std whose length is neither 1 nor the channel count fails ``process`` with the seq.
    The input is read-only. One output per input; ends when its input ends; a full output
    edge waits or drops as its ``when_full`` says.

    Example:
        - id: tensor
          node: normalize
          params: {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], layout: NCHW}
          inputs: {frames: rgb/converted}
    """

    class Params(NodeParams):
        mean: list[float] = Field(
            [0.0],
            min_length=1,
            max_length=4,
            description="Subtracted after scaling, per channel in the frame's order "
            "(one value: every channel).",
        )
        std: list[float] = Field(
            [1.0],
            min_length=1,
            max_length=4,
            description="Divides after the mean, per channel (> 0; one value: every channel).",
        )
        scale: float | None = Field(
            None,
            gt=0,
            description="Multiplies the pixels first; default 1/255 for float32, 1 for uint8.",
        )
        dtype: DType = Field("float32", description="Tensor element type.")
        layout: Layout = Field("NHWC", description="NHWC (channels last) or NCHW (channels first).")
        batch: bool = Field(True, description="Add a leading batch dimension of 1.")
        name: str = Field("input", min_length=1, description="The tensor's name.")

        @field_validator("std")
        @classmethod
        def _positive(cls, value: list[float]) -> list[float]:
            if any(v <= 0 for v in value):
                raise ValueError("every std must be > 0")
            return value

    frames = Input(Frame, description="(H, W[, C]) uint8 frames.")
    tensors = Output(Tensors, description="One tensor: (1,) H, W, C or (1,) C, H, W.")

    def open(self) -> None:
        p = self.params
        self._scale = p.scale if p.scale is not None else (1 / 255 if p.dtype == "float32" else 1)

    def process(self, frames: Frame) -> None:
        p = self.params
        out = self.tensors.allocate(tensor_shape(frames.image.shape, p.layout, p.batch), p.dtype)
        try:
            normalize_into(
                frames.image,
                out,
                mean=p.mean,
                std=p.std,
                scale=self._scale,
                layout=p.layout,
                batch=p.batch,
            )
        except ValueError as exc:
            raise ValueError(f"normalize node {self.id!r}: {exc}") from None
        self.tensors.send(frames.derive(Tensors, tensors={p.name: out}))

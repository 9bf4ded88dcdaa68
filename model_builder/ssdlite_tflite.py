"""Translate the converted SSDLite ONNX graph to TFLite (NHWC), without TensorFlow.

The ONNX model written by :mod:`.convert_ssdlite` uses a small op set. This module walks its
nodes in order and emits the TFLite equivalent with :class:`._tflite_writer.TFLiteWriter`,
keeping every feature map in NHWC (TFLite's layout), so the layout ``Transpose`` nodes of
the ONNX graph disappear:

* ``Conv`` -> ``CONV_2D`` (weights OIHW -> OHWI) or ``DEPTHWISE_CONV_2D`` (-> ``1HW(C*M)``),
  with the ONNX explicit pads checked to be TF ``SAME`` (or ``VALID``); a following
  ``Clip(0, 6)`` that is the convolution's only consumer is fused as ``RELU6``;
* ``Add``/``Sub``/``Mul`` -> ``ADD``/``SUB``/``MUL`` (constants become buffers);
* ``Reshape`` -> ``RESHAPE``, ``Concat`` -> ``CONCATENATION``, ``Gather`` -> ``GATHER``,
  ``Slice`` -> ``SLICE``, ``Exp`` -> ``EXP``, ``Sigmoid`` -> ``LOGISTIC``,
  ``Squeeze`` -> ``RESHAPE``; ``Clip(0, 6)`` alone -> ``RELU6``.

The TFLite model has batch 1 and the same input (``image``, ``[1, 300, 300, 3]``, RGB
0..255) and outputs (``boxes [1, 1917, 4]``, ``classes [1, 1917]``, ``scores [1, 1917]``)
as the ONNX one.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from model_builder.tflite_writer import TFLiteWriter

__all__ = ["onnx_to_tflite"]

_NCHW_TO_NHWC = (0, 2, 3, 1)
_NHWC_TO_NCHW = (0, 3, 1, 2)


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class _Translator:
    def __init__(self, model: Any) -> None:
        from onnx import helper, numpy_helper

        self.helper = helper
        graph = model.graph
        self.graph = graph
        self.description = model.doc_string or graph.doc_string or ""
        self.consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        self.consumers = Counter(name for node in graph.node for name in node.input)
        self.producers = {out: node for node in graph.node for out in node.output}
        self.w = TFLiteWriter()
        self.index: dict[str, int] = {}
        self.shape: dict[str, tuple[int, ...]] = {}
        self.fused: set[str] = set()

    def attrs(self, node: Any) -> dict[str, Any]:
        return {a.name: self.helper.get_attribute_value(a) for a in node.attribute}

    def tensor(self, name: str, shape: tuple[int, ...]) -> int:
        self.index[name] = self.w.tensor(name, list(shape))
        self.shape[name] = shape
        return self.index[name]

    def operand(self, name: str) -> int:
        """The tensor for an ONNX value: an activation, or a constant made on first use."""
        if name not in self.index:
            value = self.consts[name]
            if value.dtype == np.int64:
                value = value.astype(np.int32)
            if value.ndim == 0:
                value = value.reshape(1)
            self.index[name] = self.w.constant(name, value)
            self.shape[name] = value.shape
        return self.index[name]

    def relu6_consumer(self, output: str) -> Any:
        """The ``Clip(0, 6)`` that is the only consumer of ``output``, or ``None``."""
        if self.consumers[output] != 1 or output in {o.name for o in self.graph.output}:
            return None
        for node in self.graph.node:
            if output in node.input:
                if node.op_type == "Clip" and self.is_relu6(node):
                    return node
                return None
        return None

    def is_relu6(self, node: Any) -> bool:
        low, high = (float(self.consts[name].reshape(-1)[0]) for name in node.input[1:3])
        return (low, high) == (0.0, 6.0)

    def run(self) -> bytes:
        (inp,) = self.graph.input
        self.tensor(inp.name, (1, 300, 300, 3))
        for node in self.graph.node:
            handler = getattr(self, f"op_{node.op_type}", None)
            if handler is None:
                raise ValueError(f"no TFLite translation for ONNX op {node.op_type!r}")
            handler(node)
        outputs = [self.index[o.name] for o in self.graph.output]
        return self.w.serialize([self.index[inp.name]], outputs, self.description)

    # -- ops -------------------------------------------------------------------------------
    def op_Transpose(self, node: Any) -> None:
        perm = tuple(self.attrs(node)["perm"])
        if perm not in (_NCHW_TO_NHWC, _NHWC_TO_NCHW):
            raise ValueError(f"{node.name}: unexpected transpose {perm}")
        self.index[node.output[0]] = self.index[node.input[0]]  # layout only: NHWC throughout
        self.shape[node.output[0]] = self.shape[node.input[0]]

    def op_Conv(self, node: Any) -> None:
        a = self.attrs(node)
        x = node.input[0]
        _, height, width, channels = self.shape[x]
        weights, bias = self.consts[node.input[1]], self.consts[node.input[2]]
        kh, kw = a["kernel_shape"]
        sh, sw = a["strides"]
        pads = a.get("pads", [0, 0, 0, 0])
        if pads == [0, 0, 0, 0] and (kh, kw) == (1, 1):
            padding = "VALID"
        elif (pads[0], pads[2]) == _same_pads(height, kh, sh) and (
            pads[1],
            pads[3],
        ) == _same_pads(width, kw, sw):
            padding = "SAME"
        else:
            raise ValueError(f"{node.name}: pads {pads} are neither TF SAME nor VALID")
        out_channels = weights.shape[0]
        out_h, out_w = -(-height // sh), -(-width // sw)
        if padding == "VALID":
            out_h, out_w = (height - kh) // sh + 1, (width - kw) // sw + 1
        relu6 = self.relu6_consumer(node.output[0])
        out_name = node.output[0]
        if relu6 is not None:
            self.fused.add(relu6.output[0])
            out_name = relu6.output[0]
        fb_padding = getattr(self.w.fb.Padding, padding)
        activation = self.w.fb.ActivationFunctionType.RELU6 if relu6 is not None else 0
        group = a.get("group", 1)
        if group == 1:
            w = self.w.constant(f"{node.name}/W", weights.transpose(0, 2, 3, 1))
            code = "CONV_2D"
            options = self.w.options(
                "Conv2DOptions",
                padding=fb_padding,
                strideH=sh,
                strideW=sw,
                fusedActivationFunction=activation,
            )
        elif group == channels and weights.shape[1] == 1:
            w = self.w.constant(f"{node.name}/W", weights.transpose(1, 2, 3, 0))
            code = "DEPTHWISE_CONV_2D"
            options = self.w.options(
                "DepthwiseConv2DOptions",
                padding=fb_padding,
                strideH=sh,
                strideW=sw,
                depthMultiplier=out_channels // channels,
                fusedActivationFunction=activation,
            )
        else:
            raise ValueError(f"{node.name}: grouped convolution with group={group}")
        b = self.w.constant(f"{node.name}/B", bias)
        out = self.tensor(out_name, (1, out_h, out_w, out_channels))
        self.w.op(code, [self.index[x], w, b], [out], options)

    def op_Clip(self, node: Any) -> None:
        if node.output[0] in self.fused:
            return
        if not self.is_relu6(node):
            raise ValueError(f"{node.name}: only Clip(0, 6) is supported")
        out = self.tensor(node.output[0], self.shape[node.input[0]])
        self.w.op("RELU6", [self.index[node.input[0]]], [out])

    def _binary(self, node: Any, code: str) -> None:
        a, b = (self.operand(name) for name in node.input)
        shape = np.broadcast_shapes(*(self.shape[name] for name in node.input))
        out = self.tensor(node.output[0], tuple(shape))
        self.w.op(code, [a, b], [out])

    def op_Add(self, node: Any) -> None:
        self._binary(node, "ADD")

    def op_Sub(self, node: Any) -> None:
        self._binary(node, "SUB")

    def op_Mul(self, node: Any) -> None:
        self._binary(node, "MUL")

    def _reshape(self, node: Any, shape: tuple[int, ...]) -> None:
        new_shape = self.w.constant(f"{node.output[0]}/shape", np.array(shape, np.int32))
        out = self.tensor(node.output[0], shape)
        options = self.w.options("ReshapeOptions", newShape=list(shape))
        self.w.op("RESHAPE", [self.index[node.input[0]], new_shape], [out], options)

    def op_Reshape(self, node: Any) -> None:
        source = self.shape[node.input[0]]
        target = [int(d) for d in self.consts[node.input[1]]]
        target = [source[i] if d == 0 else d for i, d in enumerate(target)]
        if -1 in target:
            known = int(np.prod([d for d in target if d != -1]))
            target[target.index(-1)] = int(np.prod(source)) // known
        self._reshape(node, tuple(target))

    def op_Squeeze(self, node: Any) -> None:
        axes = {int(a) for a in self.consts[node.input[1]]}
        source = self.shape[node.input[0]]
        self._reshape(node, tuple(d for i, d in enumerate(source) if i not in axes))

    def op_Concat(self, node: Any) -> None:
        axis = self.attrs(node)["axis"]
        shapes = [self.shape[name] for name in node.input]
        shape = list(shapes[0])
        shape[axis] = sum(s[axis] for s in shapes)
        out = self.tensor(node.output[0], tuple(shape))
        options = self.w.options("ConcatenationOptions", axis=axis)
        self.w.op("CONCATENATION", [self.operand(n) for n in node.input], [out], options)

    def op_Gather(self, node: Any) -> None:
        axis = self.attrs(node)["axis"]
        indices = self.consts[node.input[1]]
        shape = list(self.shape[node.input[0]])
        shape[axis] = len(indices)
        out = self.tensor(node.output[0], tuple(shape))
        inputs = [self.index[node.input[0]], self.operand(node.input[1])]
        self.w.op("GATHER", inputs, [out], self.w.options("GatherOptions", axis=axis))

    def op_Slice(self, node: Any) -> None:
        source = self.shape[node.input[0]]
        starts, ends, axes = (self.consts[name] for name in node.input[1:4])
        begin, size = [0] * len(source), list(source)
        for start, end, axis in zip(starts, ends, axes):
            begin[int(axis)] = int(start)
            size[int(axis)] = int(min(end, source[int(axis)]) - start)
        b = self.w.constant(f"{node.output[0]}/begin", np.array(begin, np.int32))
        s = self.w.constant(f"{node.output[0]}/size", np.array(size, np.int32))
        out = self.tensor(node.output[0], tuple(size))
        self.w.op("SLICE", [self.index[node.input[0]], b, s], [out])

    def _unary(self, node: Any, code: str) -> None:
        out = self.tensor(node.output[0], self.shape[node.input[0]])
        self.w.op(code, [self.index[node.input[0]]], [out])

    def op_Exp(self, node: Any) -> None:
        self._unary(node, "EXP")

    def op_Sigmoid(self, node: Any) -> None:
        self._unary(node, "LOGISTIC")


def onnx_to_tflite(model: Any) -> bytes:
    """Translate the converted SSDLite ONNX model (an ``onnx.ModelProto``) to TFLite bytes.

    Args:
        model: the model returned by :func:`.convert_ssdlite.convert_ssdlite`.

    Returns:
        The ``.tflite`` file contents (batch 1, NHWC).

    Raises:
        ValueError: the graph uses an op or attribute outside the supported set.
    """
    return _Translator(model).run()

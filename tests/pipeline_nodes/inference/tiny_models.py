"""Tiny ONNX and TFLite models built in memory, so inference tests need no downloaded files.

The ONNX model is built with ``onnx.helper``; the TFLite model is written with the flatbuffer
object API that ships inside ``ai-edge-litert`` (``ai_edge_litert/schema_py_generated.py``), so
neither needs TensorFlow or PyTorch. Each builder returns the model file's path, and writes
only under the directory it is given (a pytest ``tmp_path``).
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

# ONNX model: scores = image * SCALE + OFFSET, image float32 [batch, 4, 4, 3].
ONNX_INPUT = "image"
ONNX_OUTPUT = "scores"
ONNX_INPUT_SHAPE = (-1, 4, 4, 3)
ONNX_SCALE = np.float32(0.5)
ONNX_OFFSET = np.float32(-1.25)

# TFLite model: probabilities = softmax(features @ TFLITE_WEIGHTS.T + TFLITE_BIAS),
# features float32 [batch, 4] (batch dynamic when built with dynamic_batch=True).
TFLITE_INPUT = "features"
TFLITE_LOGITS = "logits"
TFLITE_OUTPUT = "probabilities"
TFLITE_WEIGHTS = np.array(
    [[0.5, -1.0, 0.25, 2.0], [1.5, 0.75, -0.5, 0.0], [-0.25, 0.125, 1.0, -1.5]],
    dtype=np.float32,
)
TFLITE_BIAS = np.array([0.1, -0.2, 0.3], dtype=np.float32)


def build_onnx_model(
    directory: Path,
    metadata_props: Mapping[str, str] | None = None,
    file_name: str = "tiny.onnx",
) -> Path:
    """Write the tiny ONNX model (``image`` [-1, 4, 4, 3] float32 -> ``scores``); return path."""
    import onnx
    from onnx import TensorProto, helper

    image = helper.make_tensor_value_info(ONNX_INPUT, TensorProto.FLOAT, ["batch", 4, 4, 3])
    scores = helper.make_tensor_value_info(ONNX_OUTPUT, TensorProto.FLOAT, ["batch", 4, 4, 3])
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [], [float(ONNX_SCALE)])
    offset = helper.make_tensor("offset", TensorProto.FLOAT, [], [float(ONNX_OFFSET)])
    graph = helper.make_graph(
        [
            helper.make_node("Mul", [ONNX_INPUT, "scale"], ["scaled"]),
            helper.make_node("Add", ["scaled", "offset"], [ONNX_OUTPUT]),
        ],
        "tiny_affine",
        [image],
        [scores],
        initializer=[scale, offset],
        doc_string="scores = image * 0.5 - 1.25",
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="tiny_models"
    )
    model.ir_version = 8  # old enough for any onnxruntime >= 1.16
    model.doc_string = "tiny affine test model"
    if metadata_props:
        helper.set_model_props(model, dict(metadata_props))
    onnx.checker.check_model(model)
    path = directory / file_name
    onnx.save(model, str(path))
    return path


def build_tflite_model(
    directory: Path,
    dynamic_batch: bool = True,
    file_name: str = "tiny.tflite",
    packed_files: Mapping[str, str] | None = None,
) -> Path:
    """Write the tiny TFLite model (FULLY_CONNECTED + SOFTMAX) and return its path.

    Args:
        directory: where to write the file.
        dynamic_batch: declare the batch axis as ``-1`` in ``shape_signature``.
        file_name: the file's name.
        packed_files: text files to append as a zip archive, the way TFLite metadata packs
            associated files (label maps) into a ``.tflite``.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    batch = -1 if dynamic_batch else 1

    def tensor(name: str, shape: Sequence[int], buffer: int, signature: Sequence[int]) -> object:
        t = schema.TensorT()
        t.name = name
        t.type = schema.TensorType.FLOAT32
        t.shape = list(shape)
        t.shapeSignature = list(signature)
        t.buffer = buffer
        return t

    def buffer(data: np.ndarray | None = None) -> object:
        b = schema.BufferT()
        if data is not None:
            b.data = np.frombuffer(data.tobytes(), dtype=np.uint8)
        return b

    n_out, n_in = TFLITE_WEIGHTS.shape
    subgraph = schema.SubGraphT()
    subgraph.name = "main"
    subgraph.tensors = [
        tensor(TFLITE_INPUT, [1, n_in], 1, [batch, n_in]),
        tensor("weights", [n_out, n_in], 2, [n_out, n_in]),
        tensor("bias", [n_out], 3, [n_out]),
        tensor(TFLITE_LOGITS, [1, n_out], 4, [batch, n_out]),
        tensor(TFLITE_OUTPUT, [1, n_out], 5, [batch, n_out]),
    ]
    subgraph.inputs = [0]
    subgraph.outputs = [4]

    fully_connected = schema.OperatorT()
    fully_connected.opcodeIndex = 0
    fully_connected.inputs = [0, 1, 2]
    fully_connected.outputs = [3]
    fully_connected.builtinOptionsType = schema.BuiltinOptions.FullyConnectedOptions
    fully_connected.builtinOptions = schema.FullyConnectedOptionsT()

    softmax = schema.OperatorT()
    softmax.opcodeIndex = 1
    softmax.inputs = [3]
    softmax.outputs = [4]
    softmax.builtinOptionsType = schema.BuiltinOptions.SoftmaxOptions
    softmax_options = schema.SoftmaxOptionsT()
    softmax_options.beta = 1.0
    softmax.builtinOptions = softmax_options
    subgraph.operators = [fully_connected, softmax]

    codes = []
    for op in (schema.BuiltinOperator.FULLY_CONNECTED, schema.BuiltinOperator.SOFTMAX):
        code = schema.OperatorCodeT()
        code.builtinCode = op
        code.deprecatedBuiltinCode = op
        code.version = 1
        codes.append(code)

    model = schema.ModelT()
    model.version = 3
    model.description = "tiny fully-connected + softmax test model"
    model.operatorCodes = codes
    model.subgraphs = [subgraph]
    # Buffer 0 is the empty sentinel by convention; activations get empty buffers too.
    model.buffers = [
        buffer(),
        buffer(),
        buffer(TFLITE_WEIGHTS),
        buffer(TFLITE_BIAS),
        buffer(),
        buffer(),
    ]

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path = directory / file_name
    path.write_bytes(bytes(builder.Output()))
    if packed_files:
        with zipfile.ZipFile(path, mode="a") as archive:
            for name, text in packed_files.items():
                archive.writestr(name, text)
    return path


def tflite_reference(features: np.ndarray) -> np.ndarray:
    """The tiny TFLite model's function in numpy (float64), for sanity checks."""
    logits = features.astype(np.float64) @ TFLITE_WEIGHTS.T.astype(np.float64) + TFLITE_BIAS
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=-1, keepdims=True))

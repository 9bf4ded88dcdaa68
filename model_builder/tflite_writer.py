"""Write TFLite flatbuffers without TensorFlow, via the schema bindings shipped in ai-edge-litert.

``ai_edge_litert/schema_py_generated.py`` holds the flatbuffers object API of the TFLite
schema (``ModelT``, ``SubGraphT``, ``TensorT``, ...). :class:`TFLiteWriter` collects tensors
(constant ones with their data), operators and operator codes, then packs one subgraph into
bytes with the ``TFL3`` file identifier. Constant buffers are 16-byte aligned, as the TF
converter writes them, so runtimes can use the weights in place. Buffer 0 is the empty
sentinel every TFLite file starts with; activation tensors point at it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["TFLiteWriter"]

_DTYPES = {
    np.dtype(np.float32): "FLOAT32",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64",
}


class TFLiteWriter:
    """Accumulates one subgraph and serialises it as a ``.tflite`` file.

    Args:
        name: the subgraph name (``main`` by convention).
    """

    def __init__(self, name: str = "main") -> None:
        from ai_edge_litert import schema_py_generated as fb

        self.fb: Any = fb
        self.name = name
        self.tensors: list[Any] = []
        self.buffers: list[bytes | None] = [None]
        self.operators: list[Any] = []
        self.opcodes: list[int] = []
        self._names: dict[str, int] = {}

    def tensor(self, name: str, shape: list[int] | tuple[int, ...], dtype: str = "FLOAT32") -> int:
        """Add an activation (or graph input/output) tensor; returns its index."""
        t = self.fb.TensorT()
        t.name = name
        t.shape = [int(d) for d in shape]
        t.type = getattr(self.fb.TensorType, dtype)
        t.buffer = 0
        self.tensors.append(t)
        self._names[name] = len(self.tensors) - 1
        return len(self.tensors) - 1

    def constant(self, name: str, array: np.ndarray) -> int:
        """Add a constant tensor holding ``array`` (float32, int32 or int64); returns its index."""
        array = np.ascontiguousarray(array)
        if array.dtype not in _DTYPES:
            raise ValueError(f"{name}: unsupported constant dtype {array.dtype}")
        index = self.tensor(name, array.shape, _DTYPES[array.dtype])
        self.buffers.append(array.astype(array.dtype.newbyteorder("<")).tobytes())
        self.tensors[index].buffer = len(self.buffers) - 1
        return index

    def index(self, name: str) -> int:
        """The index of a tensor added under ``name``."""
        return self._names[name]

    def op(
        self,
        code: str,
        inputs: list[int],
        outputs: list[int],
        options: Any = None,
        options_type: str | None = None,
    ) -> None:
        """Add an operator.

        Args:
            code: a ``BuiltinOperator`` name, e.g. ``CONV_2D``.
            inputs: input tensor indices (-1 for an omitted optional input).
            outputs: output tensor indices.
            options: a ``*OptionsT`` object, or ``None``.
            options_type: the ``BuiltinOptions`` member name (default: derived from the
                options class name, ``Conv2DOptionsT`` -> ``Conv2DOptions``).
        """
        builtin = getattr(self.fb.BuiltinOperator, code)
        if builtin not in self.opcodes:
            self.opcodes.append(builtin)
        op = self.fb.OperatorT()
        op.opcodeIndex = self.opcodes.index(builtin)
        op.inputs = list(inputs)
        op.outputs = list(outputs)
        if options is not None:
            kind = options_type or type(options).__name__.removesuffix("T")
            op.builtinOptionsType = getattr(self.fb.BuiltinOptions, kind)
            op.builtinOptions = options
        self.operators.append(op)

    def options(self, kind: str, **fields: Any) -> Any:
        """Create a ``<kind>T`` options object with the given fields set."""
        obj = getattr(self.fb, f"{kind}T")()
        for key, value in fields.items():
            if not hasattr(obj, key):
                raise AttributeError(f"{kind}T has no field {key!r}")
            setattr(obj, key, value)
        return obj

    def serialize(self, inputs: list[int], outputs: list[int], description: str) -> bytes:
        """Pack the model.

        Args:
            inputs: graph input tensor indices.
            outputs: graph output tensor indices.
            description: the model description string.

        Returns:
            The ``.tflite`` file contents.
        """
        import flatbuffers
        from ai_edge_litert import schema_py_generated as fb

        class AlignedBufferT(fb.BufferT):  # type: ignore[misc]
            """A buffer whose bytes start on a 16-byte boundary."""

            def Pack(self, builder: flatbuffers.Builder) -> int:
                data = None
                if self.data is not None:
                    payload = np.frombuffer(bytes(self.data), np.uint8)
                    # Pad so that the bytes written next (the payload) start 16-aligned; the
                    # vector's own 4-byte alignment is then already satisfied.
                    builder.Prep(16, payload.size)
                    data = builder.CreateNumpyVector(payload)
                fb.BufferStart(builder)
                if data is not None:
                    fb.BufferAddData(builder, data)
                return int(fb.BufferEnd(builder))

        subgraph = fb.SubGraphT()
        subgraph.name = self.name
        subgraph.tensors = self.tensors
        subgraph.inputs = list(inputs)
        subgraph.outputs = list(outputs)
        subgraph.operators = self.operators
        codes = []
        for builtin in self.opcodes:
            code = fb.OperatorCodeT()
            code.builtinCode = builtin
            code.deprecatedBuiltinCode = min(builtin, 127)  # 127 = PLACEHOLDER_FOR_GREATER_OP_CODES
            code.version = 1
            codes.append(code)
        buffers = []
        for data in self.buffers:
            buf = AlignedBufferT()
            buf.data = data
            buffers.append(buf)
        model = fb.ModelT()
        model.version = 3
        model.description = description
        model.operatorCodes = codes
        model.subgraphs = [subgraph]
        model.buffers = buffers
        builder = flatbuffers.Builder(1 << 16)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())

"""Viam's flat tensors <-> numpy arrays, for every dtype Viam defines, bit for bit.

``FlatTensor`` (``service.mlmodel.v1``) holds a shape and one typed field per dtype. Every
typed field is fixed-width on the wire (bytes for int8/uint8; fixed32 for int16/uint16/int32/
uint32; fixed64 for int64/uint64; float; double), so both directions go through the packed
little-endian bytes with numpy instead of a Python loop over the repeated field: a 1x192x192x3
float32 tensor converts in microseconds, not milliseconds.

int16/uint16 travel one value per 32-bit entry, as the Python SDK writes and reads them (the
proto comment speaks of two per entry; a tensor whose entry count is half its size, rounded up,
is read that way, so both layouts are accepted).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from viam.gen.service.mlmodel.v1 import mlmodel_pb2

__all__ = ["VIAM_DTYPES", "FlatTensors", "from_flat_tensors", "to_flat_tensors"]

FlatTensors = mlmodel_pb2.FlatTensors

# numpy dtype name -> (FlatTensor field, data message, little-endian wire dtype of one entry)
_BY_DTYPE: dict[str, tuple[str, Any, str]] = {
    "int8": ("int8_tensor", mlmodel_pb2.FlatTensorDataInt8, "i1"),
    "uint8": ("uint8_tensor", mlmodel_pb2.FlatTensorDataUInt8, "u1"),
    "int16": ("int16_tensor", mlmodel_pb2.FlatTensorDataInt16, "<u4"),
    "uint16": ("uint16_tensor", mlmodel_pb2.FlatTensorDataUInt16, "<u4"),
    "int32": ("int32_tensor", mlmodel_pb2.FlatTensorDataInt32, "<i4"),
    "uint32": ("uint32_tensor", mlmodel_pb2.FlatTensorDataUInt32, "<u4"),
    "int64": ("int64_tensor", mlmodel_pb2.FlatTensorDataInt64, "<i8"),
    "uint64": ("uint64_tensor", mlmodel_pb2.FlatTensorDataUInt64, "<u8"),
    "float32": ("float_tensor", mlmodel_pb2.FlatTensorDataFloat, "<f4"),
    "float64": ("double_tensor", mlmodel_pb2.FlatTensorDataDouble, "<f8"),
}
_BY_FIELD = {field: (np.dtype(name), wire) for name, (field, _, wire) in _BY_DTYPE.items()}

#: The dtypes Viam's flat tensors carry, as numpy names.
VIAM_DTYPES: tuple[str, ...] = tuple(_BY_DTYPE)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def to_flat_tensors(arrays: Mapping[str, np.ndarray]) -> mlmodel_pb2.FlatTensors:
    """Name -> array to Viam's ``FlatTensors``, bit-exact.

    Raises:
        ValueError: an array's dtype is not one Viam defines (the message names the tensor,
            its dtype and the supported ones), or a name is not a non-empty string.
    """
    tensors: dict[str, mlmodel_pb2.FlatTensor] = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"tensor names must be non-empty strings, got {name!r}")
        array = np.asarray(value)
        dtype_name = array.dtype.name
        if dtype_name not in _BY_DTYPE:
            raise ValueError(
                f"tensor {name!r} has dtype {dtype_name}, which Viam's flat tensors cannot "
                f"carry; use one of {', '.join(VIAM_DTYPES)}"
            )
        field, message_type, wire = _BY_DTYPE[dtype_name]
        if dtype_name in ("int16", "uint16"):
            # one value per 32-bit entry, sign-extended for int16 as the Python SDK writes it
            payload = array.astype("<i4" if dtype_name == "int16" else "<u4").tobytes()
        else:
            payload = array.astype(wire, copy=False).tobytes()
        data = message_type.FromString(b"\x0a" + _varint(len(payload)) + payload)
        tensors[name] = mlmodel_pb2.FlatTensor(shape=list(array.shape), **{field: data})
    return mlmodel_pb2.FlatTensors(tensors=tensors)


def _payload(data_message: Any) -> bytes:
    """The packed bytes of a data message's one field (tag, length, bytes), or b'' if empty."""
    raw: bytes = data_message.SerializeToString()
    if not raw:
        return b""
    _, start = _read_varint(raw, 1)
    return raw[start:]


def from_flat_tensors(flat: mlmodel_pb2.FlatTensors) -> dict[str, np.ndarray]:
    """Viam's ``FlatTensors`` to name -> array, bit-exact; arrays are writable copies.

    Raises:
        ValueError: a tensor carries no data, has a negative dimension, or its data does not
            fill its shape (the message names the tensor, its shape and the counts).
    """
    arrays: dict[str, np.ndarray] = {}
    for name, tensor in flat.tensors.items():
        field = tensor.WhichOneof("tensor")
        shape = tuple(int(d) for d in tensor.shape)
        if field is None:
            raise ValueError(
                f"tensor {name!r} carries no data: set one typed field "
                f"({', '.join(f for f, _, _ in _BY_DTYPE.values())})"
            )
        dtype, wire = _BY_FIELD[field]
        payload = _payload(getattr(tensor, field))
        entry = np.dtype(wire).itemsize
        if len(payload) % entry:
            raise ValueError(f"tensor {name!r}: {field} data is not a whole number of entries")
        count = math.prod(shape)
        entries = np.frombuffer(payload, dtype=wire)
        if dtype.itemsize == 2 and len(entries) == (count + 1) // 2 and len(entries) != count:
            # two 16-bit values per 32-bit entry, little-endian (the proto's stated layout)
            values = entries.view("<u2")[:count].astype(np.uint16)
            array = values.view(dtype) if dtype == np.int16 else values
        elif len(entries) != count:
            raise ValueError(
                f"tensor {name!r}: shape {list(shape)} needs {count} values, "
                f"{field} has {len(entries)}"
            )
        else:
            array = entries.astype(dtype)  # a copy: the payload bytes are not ours to keep
        arrays[name] = array.reshape(shape)
    return arrays

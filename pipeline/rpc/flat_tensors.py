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

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from viam.gen.service.mlmodel.v1 import mlmodel_pb2

__all__ = [
    "VIAM_DTYPES",
    "FlatTensors",
    "InferRequestView",
    "decode_flat_tensors",
    "encode_flat_tensors",
    "encode_infer_response",
    "from_flat_tensors",
    "parse_infer_request",
    "parse_infer_response",
    "to_flat_tensors",
]

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
_FIELD_NUMBER = {f.name: f.number for f in mlmodel_pb2.FlatTensor.DESCRIPTOR.fields}
_INPUT_TENSORS = mlmodel_pb2.InferRequest.DESCRIPTOR.fields_by_name["input_tensors"].number
_OUTPUT_TENSORS = mlmodel_pb2.InferResponse.DESCRIPTOR.fields_by_name["output_tensors"].number
_FIELD_BY_NUMBER = {number: name for name, number in _FIELD_NUMBER.items()}

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


def _delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def encode_flat_tensors(arrays: Mapping[str, np.ndarray]) -> bytes:
    """Name -> array to the wire bytes of a ``FlatTensors`` message, bit-exact.

    Each tensor's bytes are copied once, into one join: protobuf's own encoder writes packed
    floats one by one (about 1 ms for a 1x192x192x3 tensor).

    Raises:
        ValueError: as ``to_flat_tensors``.
    """
    parts: list[bytes] = []
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
        field, _, wire = _BY_DTYPE[dtype_name]
        if dtype_name in ("int16", "uint16"):
            payload = array.astype("<i4" if dtype_name == "int16" else "<u4").tobytes()
        else:
            payload = array.astype(wire, copy=False).tobytes()
        # FlatTensor = shape (field 1, packed fixed64) + the typed field holding {1: payload}
        shape = np.array(array.shape, "<u8").tobytes()
        data_head = b"\x0a" + _varint(len(payload)) if payload else b""
        data_size = len(data_head) + len(payload)
        typed_head = _varint(_FIELD_NUMBER[field] << 3 | 2) + _varint(data_size)
        shape_part = b"\x0a" + _varint(len(shape)) + shape if shape else b""
        tensor_size = len(shape_part) + len(typed_head) + data_size
        key = name.encode()
        key_part = b"\x0a" + _varint(len(key)) + key
        value_head = b"\x12" + _varint(tensor_size)
        entry_size = len(key_part) + len(value_head) + tensor_size
        parts += [b"\x0a" + _varint(entry_size), key_part, value_head, shape_part]
        parts += [typed_head, data_head, payload]
    return b"".join(parts)


def encode_infer_response(arrays: Mapping[str, np.ndarray]) -> bytes:
    """The wire bytes of an ``InferResponse`` carrying these output tensors."""
    return _delimited(_OUTPUT_TENSORS, encode_flat_tensors(arrays))


def to_flat_tensors(arrays: Mapping[str, np.ndarray]) -> mlmodel_pb2.FlatTensors:
    """Name -> array to Viam's ``FlatTensors``, bit-exact.

    Raises:
        ValueError: an array's dtype is not one Viam defines (the message names the tensor,
            its dtype and the supported ones), or a name is not a non-empty string.
    """
    flat: mlmodel_pb2.FlatTensors = mlmodel_pb2.FlatTensors.FromString(encode_flat_tensors(arrays))
    return flat


def _to_flat_tensors_slow(arrays: Mapping[str, np.ndarray]) -> mlmodel_pb2.FlatTensors:
    """The same through protobuf's message API (kept to test the fast path against)."""
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


class _NotFast(Exception):
    """The bytes use an encoding the fast parser leaves to protobuf (e.g. unpacked fields)."""


def _fields(buf: memoryview, start: int, end: int) -> Any:
    """(field number, wire type, value) of each field in ``buf[start:end]``; a length-
    delimited value is its (start, end), a varint its int."""
    pos = start
    while pos < end:
        key, pos = _read_varint(buf, pos)  # type: ignore[arg-type]
        field, wire_type = key >> 3, key & 7
        if wire_type == 2:
            size, pos = _read_varint(buf, pos)  # type: ignore[arg-type]
            if pos + size > end:
                raise ValueError("truncated protobuf message")
            yield field, 2, (pos, pos + size)
            pos += size
        elif wire_type == 0:
            value, pos = _read_varint(buf, pos)  # type: ignore[arg-type]
            yield field, 0, value
        elif wire_type in (1, 5):
            width = 8 if wire_type == 1 else 4
            yield field, wire_type, (pos, pos + width)
            pos += width
        else:
            raise _NotFast()


def _decode_tensor(buf: memoryview, name: str, start: int, end: int) -> np.ndarray:
    shape: list[int] = []
    field_name: str | None = None
    payload: memoryview = buf[0:0]
    for number, wire_type, value in _fields(buf, start, end):
        if number == 1 and wire_type == 2:
            if (value[1] - value[0]) % 8:
                raise ValueError(f"tensor {name!r}: malformed shape")
            shape.extend(int(d) for d in np.frombuffer(buf[value[0] : value[1]], "<u8"))
        elif number == 1:
            raise _NotFast()
        elif number in _FIELD_BY_NUMBER and wire_type == 2:
            field_name = _FIELD_BY_NUMBER[number]
            payload = buf[0:0]
            for inner, inner_type, inner_value in _fields(buf, *value):
                if inner != 1 or inner_type != 2:
                    raise _NotFast()
                payload = buf[inner_value[0] : inner_value[1]]
    if field_name is None:
        raise ValueError(
            f"tensor {name!r} carries no data: set one typed field "
            f"({', '.join(f for f, _, _ in _BY_DTYPE.values())})"
        )
    return _array(name, tuple(shape), field_name, payload)


def _array(name: str, shape: tuple[int, ...], field: str, payload: Any) -> np.ndarray:
    dtype, wire = _BY_FIELD[field]
    entry = np.dtype(wire).itemsize
    if len(payload) % entry:
        raise ValueError(f"tensor {name!r}: {field} data is not a whole number of entries")
    count = math.prod(shape)
    entries = np.frombuffer(payload, dtype=wire)
    if dtype.itemsize == 2 and len(entries) == (count + 1) // 2 and len(entries) != count:
        values = entries.view("<u2")[:count].astype(np.uint16)
        array = values.view(dtype) if dtype == np.int16 else values
    elif len(entries) != count:
        raise ValueError(
            f"tensor {name!r}: shape {list(shape)} needs {count} values, {field} has {len(entries)}"
        )
    else:
        array = entries.astype(dtype)
    return array.reshape(shape)


def decode_flat_tensors(data: bytes | memoryview) -> dict[str, np.ndarray]:
    """The wire bytes of a ``FlatTensors`` message to name -> array (writable copies).

    Reads the packed data straight from the bytes: the fast inverse of
    ``encode_flat_tensors``. Encodings it does not take (unpacked repeated fields) go through
    protobuf's parser and ``from_flat_tensors``.

    Raises:
        ValueError: as ``from_flat_tensors``, or the bytes are not a FlatTensors message.
    """
    buf = memoryview(data)
    try:
        arrays: dict[str, np.ndarray] = {}
        for number, wire_type, value in _fields(buf, 0, len(buf)):
            if number != 1 or wire_type != 2:
                continue
            name, span = "", None
            for inner, inner_type, inner_value in _fields(buf, *value):
                if inner == 1 and inner_type == 2:
                    name = bytes(buf[inner_value[0] : inner_value[1]]).decode()
                elif inner == 2 and inner_type == 2:
                    span = inner_value
            if span is None:
                raise ValueError(f"tensor {name!r} carries no data")
            arrays[name] = _decode_tensor(buf, name, *span)
        return arrays
    except (_NotFast, IndexError):
        return from_flat_tensors(mlmodel_pb2.FlatTensors.FromString(bytes(buf)))


@dataclasses.dataclass(frozen=True)
class InferRequestView:
    """An ``InferRequest`` read straight from its bytes: the service name and its tensors."""

    name: str
    tensors: dict[str, np.ndarray]


def parse_infer_request(data: bytes) -> InferRequestView:
    """Read an ``InferRequest``'s bytes (a server codec's raw decoder for Infer).

    Raises:
        ValueError: the tensors are malformed (the message names the tensor).
    """
    buf = memoryview(data)
    name = ""
    tensors: dict[str, np.ndarray] = {}
    try:
        fields = list(_fields(buf, 0, len(buf)))
    except (_NotFast, IndexError):
        request = mlmodel_pb2.InferRequest.FromString(data)
        return InferRequestView(request.name, from_flat_tensors(request.input_tensors))
    for number, wire_type, value in fields:
        if number == 1 and wire_type == 2:
            name = bytes(buf[value[0] : value[1]]).decode()
        elif number == _INPUT_TENSORS and wire_type == 2:
            tensors = decode_flat_tensors(buf[value[0] : value[1]])
    return InferRequestView(name, tensors)


def parse_infer_response(data: bytes) -> dict[str, np.ndarray]:
    """The output tensors of an ``InferResponse``, read straight from its bytes."""
    buf = memoryview(data)
    for number, wire_type, value in _fields(buf, 0, len(buf)):
        if number == _OUTPUT_TENSORS and wire_type == 2:
            return decode_flat_tensors(buf[value[0] : value[1]])
    return {}

"""A minimal reader for TensorFlow 1 frozen graphs (``GraphDef`` protobuf), with no TensorFlow.

Frozen ``.pb`` files are protobuf messages. This module decodes the protobuf wire format
directly (varints, length-delimited fields, fixed 32/64-bit values) and understands just the
few messages a converter needs: ``GraphDef`` (its nodes), ``NodeDef`` (name, op, inputs,
attributes), ``AttrValue`` (scalars, lists, shapes, tensors) and ``TensorProto`` (constant
weights, decoded to numpy). Field numbers follow TensorFlow's ``graph.proto``,
``node_def.proto``, ``attr_value.proto``, ``tensor.proto`` and ``tensor_shape.proto``.
Unknown fields are skipped, so the reader tolerates graphs written by any TF 1.x version.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["NodeDef", "parse_graph_def"]

# TensorFlow DataType enum values -> numpy dtypes (types.proto).
_TF_DTYPES: dict[int, Any] = {
    1: np.float32,
    2: np.float64,
    3: np.int32,
    4: np.uint8,
    5: np.int16,
    6: np.int8,
    9: np.int64,
    10: np.bool_,
    17: np.uint16,
    19: np.float16,
    22: np.uint32,
    23: np.uint64,
}

_DT_STRING = 7
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    """Yield ``(field_number, wire_type, value)`` for every field of one message."""
    pos = 0
    end = len(buf)
    while pos < end:
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == _VARINT:
            value, pos = _read_varint(buf, pos)
        elif wire == _FIXED64:
            value = buf[pos : pos + 8]
            pos += 8
        elif wire == _BYTES:
            size, pos = _read_varint(buf, pos)
            value = buf[pos : pos + size]
            pos += size
        elif wire == _FIXED32:
            value = buf[pos : pos + 4]
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} (field {number})")
        if pos > end:
            raise ValueError(f"field {number} runs past the end of its message")
        yield number, wire, value


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _packed_varints(wire: int, value: Any) -> list[int]:
    if wire == _VARINT:
        return [_signed64(value)]
    out: list[int] = []
    pos = 0
    while pos < len(value):
        item, pos = _read_varint(value, pos)
        out.append(_signed64(item))
    return out


def _packed_floats(wire: int, value: Any) -> list[float]:
    if wire == _FIXED32:
        return [struct.unpack("<f", value)[0]]
    return list(struct.unpack(f"<{len(value) // 4}f", value))


def _parse_shape(buf: bytes) -> list[int] | None:
    dims: list[int] = []
    for number, _, value in _fields(buf):
        if number == 2:  # dim { size: 1, name: 2 }
            size = 0
            for dnum, _, dval in _fields(value):
                if dnum == 1:
                    size = _signed64(dval)
            dims.append(size)
        elif number == 3 and value:  # unknown_rank
            return None
    return dims


def _parse_tensor(buf: bytes) -> np.ndarray:
    dtype_enum = 1
    shape: list[int] = []
    content = b""
    floats: list[float] = []
    ints: list[int] = []
    strings: list[bytes] = []
    for number, wire, value in _fields(buf):
        if number == 1:
            dtype_enum = value
        elif number == 2:
            shape = _parse_shape(value) or []
        elif number == 4:
            content = value
        elif number == 5:
            floats.extend(_packed_floats(wire, value))
        elif number in (7, 10, 11):  # int_val, int64_val, bool_val
            ints.extend(_packed_varints(wire, value))
        elif number == 8:
            strings.append(bytes(value))
    if dtype_enum == _DT_STRING:
        return np.array(strings or [b""], dtype=object).reshape(shape if strings else ())
    if dtype_enum not in _TF_DTYPES:
        raise ValueError(f"unsupported TensorProto dtype enum {dtype_enum}")
    dtype = np.dtype(_TF_DTYPES[dtype_enum])
    count = int(np.prod(shape)) if shape else 1
    if content:
        array = np.frombuffer(content, dtype=dtype.newbyteorder("<")).astype(dtype)
    else:
        values = floats if dtype.kind == "f" else ints
        # TF stores a tensor whose elements are all equal as a single repeated value.
        array = np.array(values or [0], dtype=dtype)
        if array.size == 1 and count != 1:
            array = np.full(count, array[0], dtype=dtype)
    return array.reshape(shape)


def _parse_list(buf: bytes) -> list[Any]:
    items: list[Any] = []
    for number, wire, value in _fields(buf):
        if number == 2:
            items.append(bytes(value).decode("utf-8", "replace"))
        elif number in (3, 6):  # i, type
            items.extend(_packed_varints(wire, value))
        elif number == 4:
            items.extend(_packed_floats(wire, value))
        elif number == 5:
            items.extend(bool(v) for v in _packed_varints(wire, value))
        elif number == 7:
            items.append(_parse_shape(value))
        elif number == 8:
            items.append(_parse_tensor(value))
    return items


def _parse_attr_value(buf: bytes) -> Any:
    for number, wire, value in _fields(buf):
        if number == 1:
            return _parse_list(value)
        if number == 2:
            return bytes(value).decode("utf-8", "replace")
        if number in (3, 6):  # i, type
            return _signed64(value)
        if number == 4:
            return _packed_floats(wire, value)[0]
        if number == 5:
            return bool(value)
        if number == 7:
            return _parse_shape(value)
        if number == 8:
            return _parse_tensor(value)
    return None


@dataclasses.dataclass
class NodeDef:
    """One node of a TensorFlow graph.

    Attributes:
        name: the node's unique name.
        op: the operation type, e.g. ``Conv2D``.
        inputs: input references (``name``, ``name:1`` or control inputs ``^name``).
        attr: decoded attributes: ints, floats, strings, bools, shapes (lists of ints),
            numpy arrays for tensors, lists of those.
    """

    name: str
    op: str
    inputs: list[str]
    attr: dict[str, Any]


def _parse_node(buf: bytes) -> NodeDef:
    node = NodeDef(name="", op="", inputs=[], attr={})
    for number, _, value in _fields(buf):
        if number == 1:
            node.name = bytes(value).decode()
        elif number == 2:
            node.op = bytes(value).decode()
        elif number == 3:
            node.inputs.append(bytes(value).decode())
        elif number == 5:  # map<string, AttrValue> entry {key: 1, value: 2}
            key = ""
            attr: Any = None
            for enum, _, evalue in _fields(value):
                if enum == 1:
                    key = bytes(evalue).decode()
                elif enum == 2:
                    attr = _parse_attr_value(evalue)
            node.attr[key] = attr
    return node


def parse_graph_def(data: bytes) -> dict[str, NodeDef]:
    """Decode a serialised ``GraphDef`` into its nodes.

    Args:
        data: the bytes of a frozen ``.pb`` file.

    Returns:
        The nodes keyed by name, in file order.

    Raises:
        ValueError: the bytes are not a well-formed protobuf message.
    """
    view = memoryview(data).tobytes()
    nodes: dict[str, NodeDef] = {}
    try:
        for number, _, value in _fields(view):
            if number == 1:
                node = _parse_node(value)
                nodes[node.name] = node
    except (ValueError, IndexError, struct.error) as exc:
        raise ValueError(f"not a valid GraphDef (truncated or corrupt protobuf): {exc}") from exc
    return nodes

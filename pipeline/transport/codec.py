"""The wire format: a message is ``[envelope + body, *buffers]``.

- ``envelope`` (21 bytes, per edge, struct ``<cqiq``): kind ``M`` (a message), ``E`` (end
  of stream) or ``W`` (a watermark: an envelope alone, whose ``n`` is a seq below which
  nothing more comes on the edge; ``pipeline.runtime.replicas``); ``n``, which numbers the
  edge's messages so releases can be matched;
  ``dropped``, the messages the edge's policy dropped since the last one sent; and the send
  time (``time.monotonic_ns()``). A fixed struct, not msgpack: it is packed per edge and
  per message, on the hot path.
- ``body`` (msgpack, per message, shared by every edge of one transport kind):
  ``{"k": kind, "q": seq, "c": t_capture_ns, "s": source, "m": meta, "f": fields,
  "a": [[name, dtype, shape, where, ref], ...]}`` where an array is ``where`` = ``i``
  (inline bytes, for small arrays), ``s`` (shared-memory segment name + byte offset) or ``b``
  (the index of a following ZeroMQ frame: the between-hosts form).
- the *short form* of a body, for the common same-host shape (every array in shared memory,
  a frame from a camera): byte ``0xC1`` (never the first byte of msgpack), then struct
  ``<qqH``: seq, t_capture_ns and the length of the *layout*, a msgpack
  ``[kind, source, [[name, dtype, shape, segment, offset], ...]]``; then, only when meta or
  fields are not empty, a msgpack ``[meta, fields]``. A producer sends the same few layouts
  over and over (one per slot), so the receiver validates a layout once and then finds it
  by its bytes in a bounded cache: per message it unpacks two ints and maps the arrays.

Never pickle: a message from another host can only describe arrays, never run code.

The decoder trusts nothing it receives: whatever the bytes, :func:`unpack_envelope` and
:func:`decode_body` return a message or raise :class:`MalformedMessage` (a ``TransportError``
saying what was wrong), never another exception. Arrays may only have plain dtypes (numbers,
booleans, fixed-width strings: never Python objects, structured or sub-array types); shapes
are small lists of non-negative ints; a shared-memory reference is a plain segment name (no
``/``, no ``..``) and a non-negative offset, passed to the receiver's ``shm_view``, which
maps only its own run's segments and checks that the array fits; a receiver without one (a
tcp edge) refuses every shared-memory reference.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable, Sequence
from typing import Any

import msgpack
import numpy as np

from pipeline.errors import TransportError
from pipeline.messages import _REGISTRY as _KINDS
from pipeline.messages import Message

__all__ = [
    "INLINE_MAX",
    "MalformedMessage",
    "ShmView",
    "check_segment_name",
    "decode_body",
    "envelope",
    "unpack_envelope",
]

ShmView = Callable[[str, int, tuple[int, ...], np.dtype], np.ndarray]

INLINE_MAX = 16 * 1024  # arrays up to this size travel inside the body

MSG = b"M"
EOS = b"E"
MARK = b"W"  # a watermark: nothing below seq ``n`` comes on this edge any more
_KINDS_ON_WIRE = (MSG, EOS, MARK)

_packb = msgpack.Packer(use_bin_type=True).pack
_unpackb = msgpack.unpackb


def _unpack(data: bytes | memoryview, what: str) -> Any:
    """The msgpack in ``data`` (plain msgpack: nothing is unpickled).

    Raises:
        MalformedMessage: not msgpack (saying ``what`` was not).
    """
    try:
        return _unpackb(data)
    except Exception as exc:  # msgpack's errors differ by version and C/Python build
        raise MalformedMessage(f"{what} is not msgpack: {type(exc).__name__}") from None


_DTYPES: dict[str, np.dtype] = {}
_DTYPE_KINDS = frozenset("biufcUS")  # plain memory: never objects, records or sub-arrays
_MAX_DTYPES = 256  # the cache of dtype codes is bounded: codes come from the wire
MAX_ARRAYS = 64
MAX_RANK = 32  # numpy's own limit is 64
MAX_ARRAY_BYTES = 1 << 40
_SEGMENT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}$")
# Segment names already checked: a producer reuses a few slots, so the next message's name
# costs a set look-up (bounded: the names come from the wire).
_GOOD_NAMES: set[str] = set()
_MAX_GOOD_NAMES = 1024
SHORT = 0xC1  # the first byte of a short-form body: msgpack never uses it
_SHORT_HEAD = struct.Struct("<BqqH")
_SHORT_SIZE = _SHORT_HEAD.size
_INT64 = (-(1 << 63), (1 << 63) - 1)
# Layouts already validated, by their bytes (bounded: they come from the wire):
# (message class, source, ((name, segment, offset, shape, dtype), ...)).
_Layout = tuple[type[Message], str, tuple[tuple[str, str, int, tuple[int, ...], np.dtype], ...]]
_LAYOUTS: dict[bytes, _Layout] = {}
_PACKED: dict[tuple[Any, ...], bytes] = {}  # the sender's layouts of one array (bounded)
_MAX_LAYOUTS = 256


class MalformedMessage(TransportError):
    """Bytes received on an edge that are not a message of the wire format.

    The receiver drops such a message and counts it; the node goes on.
    """


def check_segment_name(name: object) -> str:
    """``name`` if it is a plain shared-memory segment name (no ``/``, no ``..``).

    Raises:
        MalformedMessage: anything else (a path, an empty or a too long name, not a str).
    """
    if type(name) is str and name in _GOOD_NAMES:  # a producer reuses a few slots
        return name
    if not isinstance(name, str) or not _SEGMENT_NAME.match(name) or ".." in name:
        raise MalformedMessage(f"not a shared-memory segment name: {name!r:.80}")
    if len(_GOOD_NAMES) >= _MAX_GOOD_NAMES:
        _GOOD_NAMES.clear()
    _GOOD_NAMES.add(name)
    return name


ENVELOPE_FORMAT = "<cqiq"
_ENVELOPE = struct.Struct(ENVELOPE_FORMAT)
ENVELOPE_SIZE = _ENVELOPE.size


def envelope(kind: bytes, n: int, dropped: int, t_send_ns: int) -> bytes:
    """The per-edge prefix of a message."""
    return _ENVELOPE.pack(kind, n, dropped, t_send_ns)


def unpack_envelope(data: bytes) -> tuple[bytes, int, int, int]:
    """(kind, n, dropped, t_send_ns) from the start of a message's first frame.

    Raises:
        MalformedMessage: too short, or a kind other than a message, end of stream or a
            watermark.
    """
    if len(data) < ENVELOPE_SIZE:
        raise MalformedMessage(
            f"a message of {len(data)} bytes is shorter than its {ENVELOPE_SIZE}-byte envelope"
        )
    kind, n, dropped, t_send = _ENVELOPE.unpack_from(data)
    if kind not in _KINDS_ON_WIRE:
        raise MalformedMessage(f"unknown message kind {kind!r} in the envelope")
    if n < 0 or dropped < 0:
        raise MalformedMessage(f"negative counts in the envelope (n={n}, dropped={dropped})")
    return kind, n, dropped, t_send


def pack_body(message: Message, arrays: Sequence[tuple[str, np.ndarray, str, Any]]) -> bytes:
    """``arrays``: (name, array, where, ref) with where in i/s/b; the short form when every
    array is in shared memory (``s``)."""
    if arrays and all([a[2] == "s" for a in arrays]):
        seq, t_capture = message.seq, message.t_capture_ns
        lo, hi = _INT64
        if (
            type(seq) is int
            and type(t_capture) is int
            and lo <= seq <= hi
            and lo <= t_capture <= hi
        ):
            layout = _short_layout(message, arrays)
            if len(layout) <= 0xFFFF:
                meta, fields = message.meta, message.wire_fields()
                rest: bytes = _packb((dict(meta), fields)) if meta or fields else b""
                return _SHORT_HEAD.pack(SHORT, seq, t_capture, len(layout)) + layout + rest
    body: bytes = _packb(
        {
            "k": message.kind,
            "q": message.seq,
            "c": message.t_capture_ns,
            "s": message.source,
            "m": dict(message.meta),
            "f": message.wire_fields(),
            "a": [
                (name, arr.dtype.str, arr.shape, where, ref)  # tuples pack as arrays
                for name, arr, where, ref in arrays
            ],
        }
    )
    return body


def _short_layout(message: Message, arrays: Sequence[tuple[str, np.ndarray, str, Any]]) -> bytes:
    """The layout of a short-form body; that of one array (a frame) is packed once per slot
    and shape, then found in a bounded cache."""
    key: tuple[Any, ...] | None = None
    if len(arrays) == 1 and type(message.source) is str:
        name, arr, _, (segment, offset) = arrays[0]
        key = (type(message), message.source, name, arr.dtype, arr.shape, segment, offset)
        layout = _PACKED.get(key)
        if layout is not None:
            return layout
    packed: bytes = _packb(
        (
            message.kind,
            message.source,
            [(n, a.dtype.str, a.shape, ref[0], ref[1]) for n, a, _, ref in arrays],
        )
    )
    if key is not None:
        if len(_PACKED) >= _MAX_LAYOUTS:
            _PACKED.clear()
        _PACKED[key] = packed
    return packed


def _dtype(code: object) -> np.dtype:
    dt = _DTYPES.get(code) if isinstance(code, str) else None
    if dt is not None:
        return dt
    if not isinstance(code, str) or len(code) > 16:
        raise MalformedMessage(f"not a dtype code: {code!r:.80}")
    try:
        dt = np.dtype(code)
    except (TypeError, ValueError, SyntaxError) as exc:
        raise MalformedMessage(f"not a dtype code: {code!r}") from exc
    if (
        dt.kind not in _DTYPE_KINDS
        or dt.hasobject
        or dt.fields is not None
        or dt.subdtype is not None
        or dt.itemsize == 0
    ):
        raise MalformedMessage(f"dtype {code!r} is not a plain array type")
    if len(_DTYPES) < _MAX_DTYPES:
        _DTYPES[code] = dt
    return dt


def _shape(shape: object, dt: np.dtype) -> tuple[int, ...]:
    if not isinstance(shape, list) or len(shape) > MAX_RANK:
        raise MalformedMessage(f"not an array shape: {shape!r:.80}")
    for d in shape:
        if type(d) is not int or d < 0:
            raise MalformedMessage(f"not an array shape: {shape!r:.80}")
    if math.prod(shape) * dt.itemsize > MAX_ARRAY_BYTES:
        raise MalformedMessage(f"an array of shape {shape} is larger than any frame")
    return tuple(shape)


def _entry(entry: object, what: str) -> tuple[str, np.dtype, tuple[int, ...], Any, Any]:
    """An array entry ``[name, dtype, shape, x, y]``: its name, dtype and shape validated;
    ``x`` and ``y`` (where and reference, or segment and offset) for the caller to check."""
    if not isinstance(entry, list) or len(entry) != 5:
        raise MalformedMessage(f"not {what}: {entry!r:.80}")
    name, code, shape, x, y = entry
    if not isinstance(name, str):
        raise MalformedMessage(f"not an array name: {name!r:.80}")
    dt = _dtype(code)
    return name, dt, _shape(shape, dt), x, y


def _array(
    entry: object, shm_view: ShmView | None, buffers: Sequence[Any]
) -> tuple[str, np.ndarray]:
    name, dt, shp, where, ref = _entry(entry, "an array entry")
    try:
        if where == "s":
            if shm_view is None:
                raise MalformedMessage(
                    f"array {name!r} refers to shared memory, which this edge does not use"
                )
            if not isinstance(ref, list) or len(ref) != 2:
                raise MalformedMessage(f"not a shared-memory reference: {ref!r:.80}")
            segment, offset = check_segment_name(ref[0]), ref[1]
            if type(offset) is not int or not 0 <= offset <= MAX_ARRAY_BYTES:
                raise MalformedMessage(f"not a shared-memory offset: {offset!r:.80}")
            arr = shm_view(segment, offset, shp, dt)
        elif where == "i":
            if not isinstance(ref, bytes):
                raise MalformedMessage(f"inline array {name!r} carries no bytes")
            arr = np.frombuffer(ref, dtype=dt).reshape(shp)
        elif where == "b":
            if type(ref) is not int or not 1 <= ref < len(buffers):
                raise MalformedMessage(f"array {name!r} names a frame that is not there: {ref!r}")
            arr = np.frombuffer(buffers[ref], dtype=dt).reshape(shp)
            arr.flags.writeable = False
        else:
            raise MalformedMessage(f"array {name!r} is neither inline, shared nor a frame")
    except (ValueError, TypeError) as exc:  # the bytes do not hold that shape and dtype
        raise MalformedMessage(f"array {name!r}: {exc}") from None
    return name, arr


def decode_body(
    body: bytes | memoryview,
    shm_view: ShmView | None,
    buffers: Sequence[Any] = (),
) -> Message:
    """Rebuild a message; arrays are read-only views (shared memory, frames or inline bytes).

    ``shm_view(name, offset, shape, dtype)`` maps a shared-memory reference (it raises
    ``TransportError`` for a segment that is not its run's, or an array that does not fit);
    ``None`` refuses every such reference (a tcp edge).

    Raises:
        MalformedMessage: the body is not a message of the wire format.
        TransportError: ``shm_view`` refused a reference.
    """
    if len(body) and body[0] == SHORT:
        return _decode_short(body, shm_view)
    d = _unpack(body, "the body")
    if not isinstance(d, dict):
        raise MalformedMessage(f"the body is a {type(d).__name__}, not a map")
    try:
        kind, seq, t_capture, source = d["k"], d["q"], d["c"], d["s"]
        meta, fields, entries = d["m"], d["f"], d["a"]
    except KeyError as exc:
        raise MalformedMessage(f"the body has no {exc.args[0]!r} entry") from None
    if not isinstance(kind, str) or type(seq) is not int or type(t_capture) is not int:
        raise MalformedMessage("the body's kind, seq or capture time has the wrong type")
    if not isinstance(source, str) or not isinstance(meta, dict) or not isinstance(fields, dict):
        raise MalformedMessage("the body's source, meta or fields have the wrong type")
    if not isinstance(entries, list) or len(entries) > MAX_ARRAYS:
        raise MalformedMessage("the body's array list is not a list of at most 64 entries")
    cls = _KINDS.get(kind)  # message_type() without its exception on the hot path
    if cls is None:
        raise MalformedMessage(f"unknown message kind {kind!r:.80}")
    arrays: dict[str, np.ndarray] = {}
    for entry in entries:
        name, arr = _array(entry, shm_view, buffers)
        arrays[name] = arr
    header = {"seq": seq, "t_capture_ns": t_capture, "source": source, "meta": meta}
    try:
        return cls._from_parts(header, fields, arrays)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError) as exc:
        raise MalformedMessage(f"not a valid {kind} message: {exc}") from None


def _layout(data: bytes) -> _Layout:
    """Validate a short-form layout (every check of ``decode_body``'s msgpack form)."""
    d = _unpack(data, "the short-form layout")
    if not isinstance(d, list) or len(d) != 3:
        raise MalformedMessage("the short-form layout is not a [kind, source, arrays] list")
    kind, source, entries = d
    if not isinstance(kind, str) or not isinstance(source, str):
        raise MalformedMessage("the short-form layout's kind or source is not a str")
    cls = _KINDS.get(kind)
    if cls is None:
        raise MalformedMessage(f"unknown message kind {kind!r:.80}")
    if not isinstance(entries, list) or not 0 < len(entries) <= MAX_ARRAYS:
        raise MalformedMessage("the short-form layout's arrays are not a list of 1 to 64 entries")
    specs = []
    for entry in entries:
        name, dt, shp, segment, offset = _entry(entry, "a shared-memory array entry")
        check_segment_name(segment)
        if type(offset) is not int or not 0 <= offset <= MAX_ARRAY_BYTES:
            raise MalformedMessage(f"not a shared-memory offset: {offset!r:.80}")
        specs.append((name, segment, offset, shp, dt))
    return cls, source, tuple(specs)


def _decode_short(body: bytes | memoryview, shm_view: ShmView | None) -> Message:
    """A short-form body (see the module's docstring); the layout is validated once."""
    if len(body) < _SHORT_SIZE:
        raise MalformedMessage(
            f"a short-form body of {len(body)} bytes is shorter than its {_SHORT_SIZE}-byte head"
        )
    _, seq, t_capture, size = _SHORT_HEAD.unpack_from(body)
    end = _SHORT_SIZE + size
    if end > len(body):
        raise MalformedMessage(
            f"the short-form layout ({size} bytes) runs past the body's end ({len(body)} bytes)"
        )
    if shm_view is None:
        raise MalformedMessage(
            "a short-form body refers to shared memory, which this edge does not use"
        )
    key = bytes(body[_SHORT_SIZE:end])
    layout = _LAYOUTS.get(key)
    if layout is None:
        layout = _layout(key)
        if len(_LAYOUTS) >= _MAX_LAYOUTS:
            _LAYOUTS.clear()
        _LAYOUTS[key] = layout
    cls, source, specs = layout
    meta: Any = {}
    fields: Any = {}
    if end < len(body):
        rest = _unpack(body[end:], "the short-form meta and fields")
        if not isinstance(rest, list) or len(rest) != 2:
            raise MalformedMessage("the short-form meta and fields are not a [meta, fields] list")
        meta, fields = rest
        if not isinstance(meta, dict) or not isinstance(fields, dict):
            raise MalformedMessage("the body's meta or fields have the wrong type")
    arrays: dict[str, np.ndarray] = {}
    for name, segment, offset, shape, dt in specs:
        try:
            arrays[name] = shm_view(segment, offset, shape, dt)
        except (ValueError, TypeError) as exc:  # the segment does not hold that array
            raise MalformedMessage(f"array {name!r}: {exc}") from None
    header = {"seq": seq, "t_capture_ns": t_capture, "source": source, "meta": meta}
    try:
        return cls._from_parts(header, fields, arrays)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError) as exc:
        raise MalformedMessage(f"not a valid {cls.kind} message: {exc}") from None

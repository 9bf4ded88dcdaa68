"""The wire format: a message is ``[envelope + body, *buffers]``.

- ``envelope`` (21 bytes, per edge, struct ``<cqiq``): kind ``M`` (a message) or ``E`` (end
  of stream); ``n``, which numbers the edge's messages so releases can be matched;
  ``dropped``, the messages the edge's policy dropped since the last one sent; and the send
  time (``time.monotonic_ns()``). A fixed struct, not msgpack: it is packed per edge and
  per message, on the hot path.
- ``body`` (msgpack, per message, shared by every edge of one transport kind):
  ``{"k": kind, "q": seq, "c": t_capture_ns, "s": source, "m": meta, "f": fields,
  "a": [[name, dtype, shape, where, ref], ...]}`` where an array is ``where`` = ``i``
  (inline bytes, for small arrays), ``s`` (shared-memory segment name + byte offset) or ``b``
  (the index of a following ZeroMQ frame: the between-hosts form).

Never pickle: a message from another host can only describe arrays, never run code.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

import msgpack
import numpy as np

from pipeline.messages import Message, message_type

__all__ = ["INLINE_MAX", "decode_body", "envelope", "unpack_envelope"]

INLINE_MAX = 16 * 1024  # arrays up to this size travel inside the body

MSG = b"M"
EOS = b"E"

_packb = msgpack.Packer(use_bin_type=True).pack
_unpackb = msgpack.unpackb
_DTYPES: dict[str, np.dtype] = {}


_ENVELOPE = struct.Struct("<cqiq")
ENVELOPE_SIZE = _ENVELOPE.size


def envelope(kind: bytes, n: int, dropped: int, t_send_ns: int) -> bytes:
    """The per-edge prefix of a message."""
    return _ENVELOPE.pack(kind, n, dropped, t_send_ns)


def unpack_envelope(data: bytes) -> tuple[bytes, int, int, int]:
    """(kind, n, dropped, t_send_ns) from the start of a message's first frame."""
    kind, n, dropped, t_send = _ENVELOPE.unpack_from(data)
    return kind, n, dropped, t_send


def pack_body(message: Message, arrays: Sequence[tuple[str, np.ndarray, str, Any]]) -> bytes:
    """``arrays``: (name, array, where, ref) with where in i/s/b."""
    body: bytes = _packb(
        {
            "k": message.kind,
            "q": message.seq,
            "c": message.t_capture_ns,
            "s": message.source,
            "m": dict(message.meta),
            "f": message._fields(),
            "a": [
                [name, arr.dtype.str, list(arr.shape), where, ref]
                for name, arr, where, ref in arrays
            ],
        }
    )
    return body


def _dtype(code: str) -> np.dtype:
    dt = _DTYPES.get(code)
    if dt is None:
        dt = _DTYPES[code] = np.dtype(code)
    return dt


def decode_body(
    body: bytes | memoryview,
    shm_view: Callable[[str, int, tuple[int, ...], np.dtype], np.ndarray],
    buffers: Sequence[Any] = (),
) -> Message:
    """Rebuild a message; arrays are read-only views (shared memory, frames or inline bytes)."""
    d = _unpackb(body)
    arrays: dict[str, np.ndarray] = {}
    for name, code, shape, where, ref in d["a"]:
        dt = _dtype(code)
        shp = tuple(shape)
        if where == "s":
            arr = shm_view(ref[0], ref[1], shp, dt)
        elif where == "i":
            arr = np.frombuffer(ref, dtype=dt).reshape(shp)
        else:
            arr = np.frombuffer(buffers[ref], dtype=dt).reshape(shp)
            arr.flags.writeable = False
        arrays[name] = arr
    header = {"seq": d["q"], "t_capture_ns": d["c"], "source": d["s"], "meta": d["m"]}
    return message_type(d["k"])._from_parts(header, d["f"], arrays)

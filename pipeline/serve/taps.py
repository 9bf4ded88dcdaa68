"""How the server sees a running graph: hidden tap nodes that forward the newest outputs.

Serving a graph adds one ``ServeTap`` sink per output the server reads (each source's frames,
each vision node's detections or classifications), on an edge with ``queue: 1,
when_full: drop_oldest``: a tap never holds a source back, whatever the server does. The tap
copies each message it receives (its input is a read-only view of shared memory that is
reused once ``process`` returns) and pushes it to the server over a ZeroMQ PUSH socket with a
send queue of 2 messages, dropping (and counting) when the server is behind. The graph's
data path and its nodes are untouched; the taps are ordinary nodes of the public contract,
listed in ``pipeline run``'s table as ``_serve-<node>-<port>``.

The server binds the PULL end (``TapReceiver``): a thread that keeps, per tapped output, the
newest message, and per source the last ``history`` frames by seq, so a vision node's newest
detections can be paired with the very frame they came from (``CaptureAllFromCamera``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import msgpack
import numpy as np
import zmq
from pydantic import Field

from pipeline.messages import Frame, Message, message_type
from pipeline.node import Input, Node
from pipeline.params import NodeParams

__all__ = ["TAP_NODE_TYPE", "ServeTap", "TapReceiver", "decode_tapped", "encode_tapped"]

TAP_NODE_TYPE = "pipeline.serve.taps:ServeTap"
SEND_QUEUE = 2


def encode_tapped(node: str, port: str, message: Message) -> list[bytes]:
    """``[header, *array bytes]``: msgpack header (kind, identity, fields, array specs)."""
    arrays = message.wire_arrays()
    header = {
        "node": node,
        "port": port,
        "kind": message.kind,
        "seq": message.seq,
        "t_capture_ns": message.t_capture_ns,
        "source": message.source,
        "meta": dict(message.meta),
        "fields": message.wire_fields(),
        "arrays": [(name, str(a.dtype), list(a.shape)) for name, a in arrays.items()],
    }
    parts = [msgpack.packb(header, use_bin_type=True)]
    parts.extend(np.ascontiguousarray(a).tobytes() for a in arrays.values())
    return parts


def decode_tapped(parts: list[Any]) -> tuple[str, str, Message]:
    """The inverse of ``encode_tapped``: (node id, port, message)."""
    header = msgpack.unpackb(parts[0], raw=False)
    arrays: dict[str, np.ndarray] = {}
    for (name, dtype, shape), data in zip(header["arrays"], parts[1:]):
        arrays[name] = np.frombuffer(data, dtype=dtype).reshape(shape)
    identity = {
        "seq": header["seq"],
        "t_capture_ns": header["t_capture_ns"],
        "source": header["source"],
        "meta": header["meta"],
    }
    cls = message_type(header["kind"])
    return header["node"], header["port"], cls._from_parts(identity, header["fields"], arrays)


class ServeTap(Node):
    """Internal: forwards what it receives to the graph's server, dropping when it is behind.

    Added by ``pipeline run --serve`` (never written in a graph file). Ends when its input ends.
    """

    class Params(NodeParams):
        endpoint: str = Field(description="The server's tap endpoint (ZeroMQ PULL).")
        node: str = Field(description="Id of the tapped node.")
        port: str = Field(description="The tapped output port.")

    messages = Input(Message, description="The tapped output.")

    def open(self) -> None:
        self._ctx: zmq.Context[Any] = zmq.Context(1)
        self._socket = self._ctx.socket(zmq.PUSH)
        self._socket.setsockopt(zmq.SNDHWM, SEND_QUEUE)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.IMMEDIATE, 1)  # no queueing before the server is there
        self._socket.connect(self.params.endpoint)

    def process(self, messages: Message) -> None:
        params: Any = self.params
        try:
            self._socket.send_multipart(
                encode_tapped(params.node, params.port, messages), flags=zmq.NOBLOCK
            )
        except zmq.Again:
            self.count("dropped_for_server")

    def close(self) -> None:
        self._socket.close(0)
        self._ctx.term()


class TapReceiver:
    """The server's end: newest message per tapped (node, port); recent frames per source."""

    def __init__(self, endpoint: str, *, history: int = 32) -> None:
        self._ctx: zmq.Context[Any] = zmq.Context(1)
        self._socket = self._ctx.socket(zmq.PULL)
        self._socket.setsockopt(zmq.RCVHWM, 4)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.bind(endpoint)
        self.endpoint = endpoint
        self._history = history
        self._lock = threading.RLock()
        self._newest: dict[tuple[str, str], Message] = {}
        self._frames: dict[str, OrderedDict[int, Frame]] = {}
        self._rates: dict[str, tuple[int, float]] = {}  # source -> (first t_ns, count)
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="serve-taps", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(100):
                continue
            try:
                # no copy out of ZeroMQ: the arrays view the received frames' buffers
                frames = self._socket.recv_multipart(copy=False)
                node, port, message = decode_tapped([f.buffer for f in frames])
            except (ValueError, KeyError, TypeError, msgpack.ExtraData):  # pragma: no cover
                continue
            self.put(node, port, message)

    def put(self, node: str, port: str, message: Message) -> None:
        """Record a tapped message (the receiving thread calls this; tests may too)."""
        with self._changed:
            self._newest[(node, port)] = message
            if isinstance(message, Frame):
                ring = self._frames.setdefault(node, OrderedDict())
                ring[message.seq] = message
                while len(ring) > self._history:
                    ring.popitem(last=False)
                first, count = self._rates.get(node, (message.t_capture_ns, 0))
                self._rates[node] = (first, count + 1)
            self._changed.notify_all()

    def newest(self, node: str, port: str) -> Message | None:
        """The newest message the node sent on the port, or None before the first one."""
        with self._lock:
            return self._newest.get((node, port))

    def frame(self, source: str, seq: int | None = None) -> Frame | None:
        """The source's newest frame, or its frame ``seq`` if still in the history."""
        with self._lock:
            ring = self._frames.get(source)
            if not ring:
                return None
            if seq is None:
                return next(reversed(ring.values()))
            return ring.get(seq)

    def frame_rate(self, source: str) -> float:
        """Frames per second seen from the source so far (0 when unknown)."""
        with self._lock:
            first, count = self._rates.get(source, (0, 0))
            newest = self._frames.get(source)
        if count < 2 or not newest:
            return 0.0
        last = next(reversed(newest.values())).t_capture_ns
        return (count - 1) / ((last - first) / 1e9) if last > first else 0.0

    def wait(self, predicate: Any, timeout_s: float) -> bool:
        """Block until ``predicate(self)`` is true or the timeout passes (tests, start-up)."""
        with self._changed:
            return bool(self._changed.wait_for(lambda: predicate(self), timeout_s))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._socket.close(0)
        self._ctx.term()

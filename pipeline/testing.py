"""Test a node in-process, with no sockets: ``run_node`` (shipped for plugin authors too).

``run_node(MyNode, params={...}, inputs={"frames": [f1, f2]})`` runs the runtime's own
lifecycle driver (``pipeline.runtime.lifecycle.NodeDriver``: open, process per joined input
set, flush, close; close also after an error; nothing after a failed open), joins several
inputs on seq with the runtime's joiner, hands the node read-only inputs as the runtime does,
refuses a sent message of the wrong type as the runtime does, and returns what each port sent
and the lifecycle calls made, in order. An exception from ``close()`` is the node's failure
(``failed_in == "close"``) unless an earlier one was.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.messages import Frame, Message
from pipeline.node import Node, Output, refuse_message
from pipeline.registry import load_node_class
from pipeline.runtime.join import Joiner
from pipeline.runtime.lifecycle import NodeDriver
from pipeline.runtime.pacing import Pace
from pipeline.runtime.stats import NodeStats, StatsCollector

__all__ = ["NodeRun", "make_frame", "run_node"]


@dataclasses.dataclass
class NodeRun:
    """What ``run_node`` saw.

    Attributes:
        sent: messages sent, by output port.
        calls: lifecycle calls in order, e.g. ``["open", "process", "process", "flush", "close"]``.
        error: the exception a lifecycle method raised, if any.
        failed_in: the method that raised.
        stats: the node's statistics at the end.
    """

    sent: dict[str, list[Message]]
    calls: list[str]
    error: BaseException | None
    failed_in: str | None
    stats: NodeStats


class _RecordingPort:
    def __init__(self, port: Output[Any], sink: list[Message]) -> None:
        self.name = port.name
        self.type: type[Message] = port.type
        self.sink = sink

    def send(self, message: Message) -> None:
        if not isinstance(message, self.type):
            refuse_message(self.name, self.type, message)
        self.sink.append(message)

    def allocate(self, shape: tuple[int, ...], dtype: npt.DTypeLike = np.uint8) -> np.ndarray:
        return np.empty(tuple(shape), dtype)

    def end_call(self) -> None:
        pass


class _Services:
    def __init__(self, collector: StatsCollector) -> None:
        self.collector = collector

    def statistics(self) -> NodeStats:
        return self.collector.snapshot(time.monotonic())

    def count(self, name: str, n: int = 1) -> None:
        self.collector.count(name, n)

    def graph_statistics(self) -> dict[str, dict[str, Any]]:
        return {self.collector.node_id: self.collector.snapshot(time.monotonic()).to_dict()}


def read_only(message: Message) -> Message:
    """The same message with read-only views of its arrays, as a consumer receives it."""
    arrays = {}
    for name, arr in message.wire_arrays().items():
        view = np.asarray(arr).view()
        view.flags.writeable = False
        arrays[name] = view
    header = {
        "seq": message.seq,
        "t_capture_ns": message.t_capture_ns,
        "source": message.source,
        "meta": message.meta,
    }
    return type(message)._from_parts(header, message.wire_fields(), arrays)


def run_node(
    node: type[Node] | str,
    params: Mapping[str, Any] | None = None,
    inputs: Mapping[str, Sequence[Message]] | None = None,
    *,
    max_calls: int | None = None,
    node_id: str = "node",
    raise_errors: bool = True,
    pace: Pace = "realtime",
    max_fps: float | None = None,
) -> NodeRun:
    """Run a node's whole lifecycle in this process.

    Args:
        node: the Node class, or a registered type id / ``package.module:Class``.
        params: the node's params (validated by its ``Params`` model).
        inputs: messages per input port, in arrival order.
        max_calls: for a source, stop after this many ``process()`` calls (as a stop would).
        node_id: the id the node sees.
        raise_errors: re-raise a lifecycle exception (after ``close()``) instead of
            returning it in ``NodeRun.error``.
        pace: a source's pace, as a graph node's ``pace:`` (``realtime``: at its own frame
            rate; ``fast``: unpaced).
        max_fps: a source's cap, as a graph node's ``max_fps:``.
    """
    cls = load_node_class(node) if isinstance(node, str) else node
    inputs = dict(inputs or {})
    unknown = sorted(set(inputs) - set(cls.inputs))
    if unknown:
        raise ValueError(f"{cls.__name__} has no input(s) {unknown}; inputs: {sorted(cls.inputs)}")
    validated = cls.Params.model_validate(dict(params or {}))
    sent: dict[str, list[Message]] = {name: [] for name in cls.outputs}
    ports = {name: _RecordingPort(port, sent[name]) for name, port in cls.outputs.items()}
    collector = StatsCollector(node_id, list(cls.inputs), list(cls.outputs))
    instance = cls(
        validated,
        node_id=node_id,
        ports=ports,
        services=_Services(collector),
        log=logging.getLogger(f"pipeline.node.{node_id}"),
    )
    calls: list[str] = []
    driver = NodeDriver(
        instance,
        collector,
        list(ports.values()),
        inputs,
        trace=calls,
        pace=pace,
        max_fps=max_fps,
    )
    if not driver.open():
        assert driver.exception is not None
        if raise_errors:
            raise driver.exception
        return NodeRun(sent, calls, driver.exception, "open", collector.snapshot(time.monotonic()))

    def feed() -> None:
        if cls.is_source():
            driver.run_source(max_calls=max_calls)
            return
        joiner: Joiner[None] = Joiner([p for p in cls.inputs if p in inputs])
        for port in joiner.queues:
            for message in inputs[port]:
                driver.push(joiner, port, read_only(message), None)
            joiner.end(port)
        driver.drain(joiner)

    driver.run(feed)
    driver.close()
    if driver.failure is None:
        driver.finish()
    for name, messages in sent.items():
        collector.out_sent[name] = len(messages)
    error = driver.exception
    if error is not None and raise_errors:
        raise error
    failed_in = driver.failure.method if driver.failure is not None else None
    return NodeRun(sent, calls, error, failed_in, collector.snapshot(time.monotonic()))


def make_frame(
    width: int = 64,
    height: int = 48,
    seq: int = 0,
    *,
    source: str = "test",
    channels: int = 3,
    value: int | None = None,
) -> Frame:
    """A test frame: a deterministic gradient (or a flat ``value``) of the given size."""
    if value is None:
        y, x = np.mgrid[0:height, 0:width]
        base = ((x * 3 + y * 5 + seq * 7) % 256).astype(np.uint8)
        image = np.repeat(base[:, :, None], channels, axis=2) if channels > 1 else base
    else:
        shape = (height, width, channels) if channels > 1 else (height, width)
        image = np.full(shape, value, np.uint8)
    return Frame(image=image, seq=seq, t_capture_ns=time.monotonic_ns(), source=source)

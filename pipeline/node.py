"""The node contract: ports, params and the lifecycle the runtime guarantees.

A node is a class with typed ports and a nested ``Params`` model::

    class ScoreFilter(Node):
        '''Keep detections at or above a confidence.'''

        class Params(NodeParams):
            min_confidence: float = Field(0.5, ge=0, le=1, description="Lowest kept.")

        detections = Input(Detections)
        kept = Output(Detections)

        def process(self, detections: Detections) -> None:
            keep = detections.confidence >= self.params.min_confidence
            self.kept.send(detections.where(keep))

Lifecycle guarantees (the runtime, and ``pipeline.testing.run_node``, keep every one):

============  ======================================================  =============================
method        when                                                    guarantee
============  ======================================================  =============================
``open()``    once, before anything else (load a model, open a        if it raises, nothing else
              device)                                                 is called, not even close()
``process``   once per input set, in seq order. A source (a node      never concurrent; inputs are
              with no inputs) is called repeatedly until it raises    read-only views valid only
              ``EndOfStream``                                         until process() returns
``flush()``   once, when every input has ended (a source: after it    may still send()
              raised ``EndOfStream``, or was stopped)
``close()``   once, after a successful open(): on a normal end and    release resources here;
              also after an error or a forced stop                    must not raise for cleanup
============  ======================================================  =============================

Inputs. ``process`` takes one keyword parameter per input port, with the same name (checked
when the class is defined). A node with several inputs receives them **joined on seq**: it is
called once for each seq that arrived on every input; a message whose seq can no longer be
matched (its partner was dropped or filtered upstream) is dropped and counted. So a node that
feeds a join should send one message per input seq, even an empty one.

Several streams, one node. An input declared ``Input(Frame, streams=True)`` may be
connected to several upstreams in the graph (``frames: [cam1/frames, cam2/frames]``): one
loaded model serving several cameras. Nothing is joined: ``process`` is called once per
message, taking the streams in turn (round-robin over the upstreams that have a message
waiting), so a stalled camera never holds up the others; ``message.source`` says which
stream it is, and a node sends its results with that ``source`` so downstream nodes pick one
camera with ``{from: detector/detections, source: cam1}``. Each stream is in seq order; the
seqs of different streams are unrelated. A node may take several messages at once: when
``batching()`` returns ``(max_batch, timeout_s)`` with ``max_batch > 1``, the runtime calls
``process_batch`` with up to ``max_batch`` waiting messages (round-robin, so one per stream
when every stream has one), waiting at most ``timeout_s`` for a batch to fill; the default
``process_batch`` calls ``process`` for each.

Outputs. ``self.<port>.send(message)`` sends zero, one or many messages per call.
``self.<port>.allocate(shape, dtype)`` returns a writable array in the port's shared memory:
fill it and send it in the same ``process`` call and no byte is copied on the way to the
consumers (a buffer allocated and not sent is reclaimed when ``process`` returns). Any other
array is copied into shared memory once, by ``send``.

End of stream travels in-band after the last message. An input ends when its upstream ended;
a node whose inputs all ended is flushed and closed, and the end is forwarded on every
output. A source ends by raising ``EndOfStream`` from ``process`` (a file at its end), or when
the graph is stopped (Ctrl-C); a live camera ends only then.

Errors. A node never has to catch its own exceptions: the runtime reports the node id, the
method, the input seq and the traceback, and the graph's policy applies (stop, exit code 1).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Generic, NoReturn, Protocol, TypeVar, overload

import numpy as np
import numpy.typing as npt

from pipeline.checks import ParamIssue
from pipeline.errors import NodeDefinitionError
from pipeline.messages import Message
from pipeline.params import NodeParams

if TYPE_CHECKING:
    from pipeline.runtime.stats import NodeStats

__all__ = ["EndOfStream", "Input", "Node", "Output", "OutputPort", "refuse_message"]

M = TypeVar("M", bound=Message)


class EndOfStream(Exception):
    """Raised by a source's ``process()`` when it has no more messages."""


class OutputPort(Protocol):
    """What ``self.<output>`` is on a running node."""

    def send(self, message: Message) -> None:
        """Send a message to every consumer of this port."""

    def allocate(self, shape: tuple[int, ...], dtype: npt.DTypeLike = np.uint8) -> np.ndarray:
        """A writable array in this port's shared memory, to fill and send without a copy."""


class _NodeServices(Protocol):
    """What the runtime gives a node besides its ports (statistics, counters)."""

    def statistics(self) -> NodeStats: ...

    def count(self, name: str, n: int = 1) -> None: ...

    def graph_statistics(self) -> dict[str, dict[str, Any]]: ...


def refuse_message(port: str, expected: type[Message], message: object) -> NoReturn:
    """Raise the error for a message that is not of its output port's declared type.

    Every ``send()`` (the runtime's ports, ``run_node``'s) checks
    ``isinstance(message, port.type)`` and calls this when it fails.
    """
    raise TypeError(
        f"output {port!r} sends {expected.__name__}, got {type(message).__name__}: "
        f"send a {expected.__name__} or declare the port as Output({type(message).__name__})"
    )


class Input(Generic[M]):
    """An input port: a class attribute of a Node whose name is the port name.

    Args:
        type: the message type accepted (``Message`` accepts any).
        required: a required input must be connected in the graph.
        streams: a streams input (see the module docstring): the graph may connect it to
            several upstreams (one per camera), served round-robin, never joined. A node
            with a streams input has no other input.
        description: shown by ``pipeline nodes``.
    """

    def __init__(
        self,
        type: type[M] = Message,  # type: ignore[assignment]
        *,
        required: bool = True,
        streams: bool = False,
        description: str = "",
    ) -> None:
        self.type = type
        self.required = required
        self.streams = streams
        self.description = description
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Input({self.type.__name__}, name={self.name!r})"


class Output(Generic[M]):
    """An output port: a class attribute of a Node; on an instance it is an ``OutputPort``.

    Args:
        type: the message type sent.
        description: shown by ``pipeline nodes``.
    """

    def __init__(
        self,
        type: type[M] = Message,  # type: ignore[assignment]
        *,
        description: str = "",
    ) -> None:
        self.type = type
        self.description = description
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type) -> Output[M]: ...

    @overload
    def __get__(self, instance: Node, owner: type) -> OutputPort: ...

    def __get__(self, instance: Node | None, owner: type) -> Output[M] | OutputPort:
        if instance is None:
            return self
        try:
            return instance._ports[self.name]
        except KeyError:
            raise AttributeError(
                f"output {self.name!r} of {type(instance).__name__} is not connected to a runtime; "
                "run the node with pipeline.testing.run_node or in a graph"
            ) from None

    def __repr__(self) -> str:
        return f"Output({self.type.__name__}, name={self.name!r})"


class Node:
    """Base class of every node. See the module docstring for the lifecycle guarantees.

    Attributes:
        id: the node's id in the graph.
        params: the validated ``Params`` instance.
        log: a logger whose records carry the node id.
    """

    Params: ClassVar[type[NodeParams]] = NodeParams
    inputs: ClassVar[dict[str, Input[Any]]] = {}
    outputs: ClassVar[dict[str, Output[Any]]] = {}
    #: Modules the node imports when it opens (``"cv2"``) that a fork server may import once,
    #: before it forks the graph's nodes, so that every node shares them (see
    #: ``pipeline.runtime.forkserver``). An import error here is not fatal.
    preload_modules: ClassVar[tuple[str, ...]] = ()
    #: Which copy of a replicated node this is (``replicas: N`` in the graph file), and how
    #: many there are: for logs; a node needs not know it is replicated.
    replica: int = 0
    replicas: int = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        inputs: dict[str, Input[Any]] = {}
        outputs: dict[str, Output[Any]] = {}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                if isinstance(value, Input):
                    inputs[name] = value
                    outputs.pop(name, None)
                elif isinstance(value, Output):
                    outputs[name] = value
                    inputs.pop(name, None)
        cls.inputs = inputs
        cls.outputs = outputs
        if len(inputs) > 1 and any(i.streams for i in inputs.values()):
            raise NodeDefinitionError(
                f"{_where(cls)}: a streams input must be the node's only input "
                f"(inputs: {', '.join(inputs)})"
            )
        if not (isinstance(cls.Params, type) and issubclass(cls.Params, NodeParams)):
            raise NodeDefinitionError(
                f"{_where(cls)}: {cls.__name__}.Params must subclass NodeParams"
            )
        _check_process_signature(cls)

    def __init__(
        self,
        params: NodeParams | None = None,
        *,
        node_id: str = "",
        ports: Mapping[str, OutputPort] | None = None,
        services: _NodeServices | None = None,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
    ) -> None:
        self.id = node_id or type(self).__name__
        self.params: Any = params if params is not None else self.Params()
        self._ports: dict[str, OutputPort] = dict(ports or {})
        self._services = services
        self.log = log or logging.getLogger(f"pipeline.node.{self.id}")

    @classmethod
    def is_source(cls) -> bool:
        """True for a node with no inputs."""
        return not cls.inputs

    @classmethod
    def check(cls, params: Any) -> Iterable[ParamIssue]:
        """Problems with ``params`` that would fail the first second of a run.

        ``pipeline check`` and ``pipeline run`` (before starting anything) call it with the
        validated ``Params`` and report each ``ParamIssue`` at its param's line and column:
        an input file that does not exist, an output that cannot be written, a port in use.
        Cheap and side-effect free; the helpers are in ``pipeline.checks``.
        """
        return ()

    def open(self) -> None:
        """Acquire resources (devices, models). If it raises, nothing else is called."""

    def process(self, *args: Any, **inputs: Any) -> None:
        """Handle one joined input set (a source: produce one message or raise EndOfStream).

        Subclasses take one keyword parameter per input port (none for a source).
        """
        raise NotImplementedError(f"{type(self).__name__}.process() is not implemented")

    def frame_rate(self) -> float | None:
        """A source's own rate in frames per second, asked once after ``open()``.

        ``pace: realtime`` (the default pace of a source in a graph) holds ``process()`` to
        it; None (the default) means the source has no rate of its own (a camera, which its
        device paces) and is not held. A video file answers its frame rate. Raise here when
        the rate is needed but unknown: the node then fails in ``open()``.
        """
        return None

    def batching(self) -> tuple[int, float]:
        """``(max_batch, timeout_s)`` of a node with a streams input; ``(1, 0.0)``: one
        message per ``process`` call. Asked once, after ``open()``."""
        return (1, 0.0)

    def process_batch(self, **inputs: list[Message]) -> None:
        """Handle several messages of a streams input at once (see ``batching``); the
        default calls ``process`` for each, in order."""
        for port, messages in inputs.items():
            for message in messages:
                self.process(**{port: message})

    def flush(self) -> None:
        """Every input has ended; send anything still pending."""

    def close(self) -> None:
        """Release resources. Called once after a successful open(), also after errors."""

    def statistics(self) -> NodeStats:
        """This node's statistics so far (received, sent, dropped, timings)."""
        if self._services is None:
            raise RuntimeError("statistics() needs a runtime: run the node in a graph or run_node")
        return self._services.statistics()

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to a node-specific counter shown in the statistics (e.g. reconnects)."""
        if self._services is not None:
            self._services.count(name, n)

    def graph_statistics(self) -> dict[str, dict[str, Any]]:
        """The latest statistics of every node of the graph, by node id (about 1 s old).

        Each value is ``NodeStats.to_dict()`` of that node (plus ``fps``); empty when the
        node runs outside a graph. A preview page or a health endpoint reads this.
        """
        if self._services is None:
            return {}
        return self._services.graph_statistics()

    def graph_drawing(self) -> str:
        """The graph this node runs in, as an SVG image (``pipeline graph --format svg``).

        Empty outside a graph (``run_node``). A preview page shows it.
        """
        drawing = getattr(self._services, "graph_drawing", None)
        return str(drawing()) if drawing is not None else ""


def _where(cls: type) -> str:
    try:
        file = inspect.getsourcefile(cls) or "?"
        line = inspect.getsourcelines(cls)[1]
    except (OSError, TypeError):
        return f"{cls.__module__}.{cls.__qualname__}"
    return f"{file}:{line}: {cls.__qualname__}"


def _check_process_signature(cls: type[Node]) -> None:
    process = cls.__dict__.get("process")
    if process is None:
        return  # inherited; checked on the class that defines it
    sig = inspect.signature(process)
    params = list(sig.parameters.values())[1:]  # drop self
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    names = {p.name for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL}
    ports = set(cls.inputs)
    missing = sorted(ports - names)
    extra = sorted(
        p.name
        for p in params
        if p.name not in ports
        and p.default is inspect.Parameter.empty
        and p.kind is not inspect.Parameter.VAR_POSITIONAL
    )
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"input ports without a process() parameter: {', '.join(missing)}")
        if extra:
            parts.append(f"process() parameters without an input port: {', '.join(extra)}")
        declared = ", ".join(sorted(ports)) or "none (a source's process() takes no arguments)"
        raise NodeDefinitionError(
            f"{_where(cls)}: process() must take one keyword parameter per input port; "
            + "; ".join(parts)
            + f" (declared inputs: {declared})"
        )

"""Drive a source node by hand, call by call, for tests that need time between calls.

``pipeline.testing.run_node`` runs a whole lifecycle at once; a camera test has to let time
pass between ``process()`` calls (a slow consumer, a server restart), so ``LiveSource`` builds
the node with recording ports and counters the same way and exposes the calls one by one.
``RecordingPort`` also keeps every array it handed out, so a test can check that a frame was
decoded straight into the slot it allocated.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline import Frame, Message, Node
from pipeline.testing import NodeRun


def sent_frames(run: NodeRun) -> list[Frame]:
    """The frames a ``run_node`` run sent on its ``frames`` port (typed as frames)."""
    frames = [m for m in run.sent["frames"] if isinstance(m, Frame)]
    assert len(frames) == len(run.sent["frames"]), "the port sent something else than frames"
    return frames


class RecordingPort:
    """An output port that keeps what was sent and every buffer it allocated."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.allocated: list[np.ndarray] = []

    def send(self, message: Message) -> None:
        self.sent.append(message)

    def allocate(self, shape: tuple[int, ...], dtype: npt.DTypeLike = np.uint8) -> np.ndarray:
        array = np.empty(tuple(shape), dtype)
        self.allocated.append(array)
        return array


class Counters:
    """The ``count()`` service of a node, recorded (and the rest of its services, empty)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.owner = threading.get_ident()

    def count(self, name: str, n: int = 1) -> None:
        # Counters are not thread-safe in the runtime: a node must count on its own thread.
        assert threading.get_ident() == self.owner, f"count({name!r}) from another thread"
        self.counts[name] = self.counts.get(name, 0) + n

    def statistics(self) -> Any:
        raise NotImplementedError

    def graph_statistics(self) -> dict[str, dict[str, Any]]:
        return {}


class LiveSource:
    """A source node opened by hand: ``call()`` runs one ``process()``; ``close()`` at the end."""

    def __init__(self, cls: type[Node], params: Mapping[str, Any], node_id: str = "cam") -> None:
        self.port = RecordingPort()
        self.counters = Counters()
        self.node = cls(
            cls.Params.model_validate(dict(params)),
            node_id=node_id,
            ports={"frames": self.port},
            services=self.counters,
        )
        self.node.open()

    @property
    def frames(self) -> list[Frame]:
        return [m for m in self.port.sent if isinstance(m, Frame)]

    def call(self) -> Frame | None:
        """One ``process()``; the frame it sent, if any."""
        before = len(self.port.sent)
        self.node.process()
        return self.frames[-1] if len(self.port.sent) > before else None

    def close(self) -> None:
        self.node.close()

    def __enter__(self) -> LiveSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

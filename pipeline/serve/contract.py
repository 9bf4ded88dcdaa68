"""What a node type offers remote callers, and how pipeline finds it without importing nodes.

A node type that can be served returns a :class:`NodeService` from a ``remote_service``
classmethod on its class, or from a ``pipeline.services`` entry point named like the node type
(``detector = "pipeline_nodes.services:detector_service"``): a callable ``(params) -> NodeService``
taking the node's validated ``Params``. The service is built and ``open()``-ed in the server
process, so a client's request never runs inside the graph's node process and a bad request
cannot disturb it; it uses the very code the node runs (same params, same preprocessing and
decoding), so its answers equal the node's.

``kinds`` says what it is: ``"vision"`` (Viam's vision service: ``detect`` and/or ``classify``)
and/or ``"mlmodel"`` (Viam's ML model service: ``infer`` and ``metadata``). Every method may be
called from several threads at once; a service that cannot run concurrently serialises itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any

import numpy as np

from pipeline.messages import Classifications, Detections
from pipeline.node import Node
from pipeline.params import NodeParams

__all__ = [
    "ENTRY_POINT_GROUP",
    "ModelInfo",
    "NodeService",
    "ServiceFactory",
    "TensorSpec",
    "service_factory",
]

ENTRY_POINT_GROUP = "pipeline.services"


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One model input or output as Viam's ``TensorInfo`` describes it.

    Attributes:
        name: the tensor's name (the key in ``infer`` dicts).
        dtype: numpy dtype name (``float32``, ``uint8``, ...).
        shape: one entry per axis, ``-1`` for a dynamic axis.
        description: free text.
        labels: class names, when this tensor's values (``label_type="value"``) or positions
            along its last axis (``"axis"``) are class indices.
        label_type: ``"value"`` or ``"axis"`` (Viam's LABEL_TYPE_TENSOR_VALUE/_AXIS).
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    description: str = ""
    labels: tuple[str, ...] = ()
    label_type: str = "value"


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """A model as Viam's ML model ``Metadata`` describes it."""

    name: str
    type: str
    description: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


class NodeService:
    """What one node offers remote callers; subclasses override what they support.

    ``detect``/``classify`` take an ``(H, W, 3)`` uint8 BGR image and return boxes normalised
    to it. ``infer`` takes and returns name -> array and raises ``ValueError`` (naming the
    tensor) for inputs the model cannot take. ``model_info`` describes the model.
    """

    kinds: frozenset[str] = frozenset()
    detects = False
    classifies = False

    def open(self) -> None:
        """Load what the service needs (a model); called once, before any request."""

    def close(self) -> None:
        """Release it; called once at the end."""

    def detect(self, image: np.ndarray) -> Detections:
        raise NotImplementedError(f"{type(self).__name__} does not detect objects")

    def classify(self, image: np.ndarray) -> Classifications:
        raise NotImplementedError(f"{type(self).__name__} does not classify images")

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError(f"{type(self).__name__} runs no model")

    def model_info(self) -> ModelInfo:
        raise NotImplementedError(f"{type(self).__name__} runs no model")


ServiceFactory = Callable[[NodeParams], "NodeService | None"]


def service_factory(node_type: str, cls: type[Node]) -> ServiceFactory | None:
    """How to build the service of a node type: its class's ``remote_service`` classmethod,
    else the ``pipeline.services`` entry point named ``node_type``, else None (not served)."""
    hook: Any = getattr(cls, "remote_service", None)
    if callable(hook):
        factory: ServiceFactory = hook
        return factory
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == node_type:
            loaded: ServiceFactory = ep.load()
            return loaded
    return None

"""What the model nodes (``detector``, ``classifier``, ``tensors``) share: loading the model.

Each node builds its :class:`~pipeline_nodes.inference.vision.VisionModel` (a ``Detector``, a
``Classifier`` or a plain one) from its params in ``open()`` and closes it in ``close()``;
the preparation of each frame, the decoding and the thresholds live in
:mod:`pipeline_nodes.inference.vision`, the same code ``load_detector`` and ``load_classifier``
return.
Every node sends one message per frame with the frame's seq and source, so a downstream
overlay can join them. Their ``frames`` input is a streams input: one node (one copy of the
model) may serve several cameras, round-robin, batched up to ``max_batch``. Every
``process()`` call counts ``frames_on_<provider>`` (the execution provider or delegate the
model really runs on, e.g. ``frames_on_CPUExecutionProvider`` after a CUDA request fell
back): ``pipeline bench`` records it per node.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any, ClassVar, Generic, TypeVar

from pipeline import Node, NodeParams, ParamIssue
from pipeline.checks import input_file
from pipeline_nodes.inference.models.store import check_model
from pipeline_nodes.inference.params import ModelParams
from pipeline_nodes.inference.vision import VisionModel

__all__ = ["PROVIDER_COUNTER", "ModelNode"]

PROVIDER_COUNTER = "frames_on_"  # + the provider in use; read by pipeline.bench

M = TypeVar("M", bound=VisionModel)


class ModelNode(Node, Generic[M]):
    """Opens ``self.vision`` (a :class:`VisionModel` built by :meth:`load`) and closes it."""

    preload_modules = ("cv2",)

    Params: ClassVar[type[NodeParams]] = ModelParams

    vision: M
    provider_counter = PROVIDER_COUNTER + "unknown"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)  # checks process() against the ports first
        process = cls.__dict__.get("process")
        if process is not None:

            @functools.wraps(process)
            def counted(self: ModelNode[Any], *args: Any, **inputs: Any) -> None:
                self.count(self.provider_counter)
                process(self, *args, **inputs)

            cls.process = counted  # type: ignore[method-assign,assignment]
        batch = cls.__dict__.get("process_batch")
        if batch is not None:

            @functools.wraps(batch)
            def counted_batch(self: ModelNode[Any], **inputs: Any) -> None:
                self.count(self.provider_counter, sum(len(v) for v in inputs.values()))
                batch(self, **inputs)

            cls.process_batch = counted_batch  # type: ignore[method-assign,assignment]

    def load(self) -> M:
        """The model object for ``self.params``."""
        raise NotImplementedError

    @classmethod
    def check(cls, params: ModelParams) -> Iterator[ParamIssue]:
        yield from check_model("model", params.model)
        if isinstance(params.labels, str):
            yield from input_file("labels", params.labels, "label file")

    def open(self) -> None:
        self.vision = self.load()
        v = self.vision
        meta = v.model.metadata()
        if meta.providers:
            self.provider_counter = PROVIDER_COUNTER + meta.providers[0]
        self.log.info(
            "model %s (%s, %s): input %s %s %s",
            self.params.model,
            meta.backend,
            ", ".join(meta.providers),
            v.input.name,
            v.input.layout,
            v.input.size or "frame size",
        )

    def batching(self) -> tuple[int, float]:
        max_batch = self.params.max_batch
        if max_batch > 1 and not self.vision.batches:
            self.log.info(
                "max_batch %d ignored: model %s takes one image per run (a fixed batch axis); "
                "its cameras are served one frame at a time",
                max_batch,
                self.params.model,
            )
            return (1, 0.0)
        return (max_batch, self.params.batch_timeout_ms / 1000)

    def close(self) -> None:
        vision = getattr(self, "vision", None)
        if vision is not None:
            vision.close()

"""What the model nodes (``detector``, ``classifier``, ``tensors``) share: loading the model.

Each node builds its :class:`~nodes.inference.vision.VisionModel` (a ``Detector``, a
``Classifier`` or a plain one) from its params in ``open()`` and closes it in ``close()``;
the preparation of each frame, the decoding and the thresholds live in
:mod:`nodes.inference.vision`, the same code ``load_detector`` and ``load_classifier`` return.
Every node sends one message per frame with the frame's seq, so a downstream overlay can join
them.
"""

from __future__ import annotations

from typing import ClassVar, Generic, TypeVar

from nodes.inference.params import ModelParams
from nodes.inference.vision import VisionModel
from pipeline import Node, NodeParams

__all__ = ["ModelNode"]

M = TypeVar("M", bound=VisionModel)


class ModelNode(Node, Generic[M]):
    """Opens ``self.vision`` (a :class:`VisionModel` built by :meth:`load`) and closes it."""

    preload_modules = ("cv2",)

    Params: ClassVar[type[NodeParams]] = ModelParams

    vision: M

    def load(self) -> M:
        """The model object for ``self.params``."""
        raise NotImplementedError

    def open(self) -> None:
        self.vision = self.load()
        v = self.vision
        meta = v.model.metadata()
        self.log.info(
            "model %s (%s, %s): input %s %s %s",
            self.params.model,
            meta.backend,
            ", ".join(meta.providers),
            v.input.name,
            v.input.layout,
            v.input.size or "frame size",
        )

    def close(self) -> None:
        vision = getattr(self, "vision", None)
        if vision is not None:
            vision.close()

"""TensorFlow SavedModels behind the nodes' ``Model`` interface (the ``tensorflow`` extra).

The cloud runs "any TensorFlow and TensorFlow Lite model": a SavedModel is loaded with
``tf.saved_model.load`` and called through its ``serving_default`` signature, with the same
``metadata()`` / ``infer()`` contract as the ONNX Runtime and LiteRT models, so the graph
nodes' preparation and decoders run on it unchanged. TensorFlow is imported only here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline_nodes.inference.backends.base import Model, ModelMetadata, TensorInfo, choose_labels

__all__ = ["SIGNATURE", "TensorFlowModel"]

SIGNATURE = "serving_default"


def _import_tf() -> Any:
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise ImportError(
            "TensorFlow is not installed: pip install 'edge-vision-pipeline[tensorflow]'"
        ) from exc
    return tf


def _info(name: str, spec: Any) -> TensorInfo:
    shape = tuple(-1 if d is None else int(d) for d in spec.shape.as_list())
    return TensorInfo(name=name, dtype=spec.dtype.as_numpy_dtype.__name__, shape=shape)


class TensorFlowModel(Model):
    """A SavedModel's ``serving_default`` signature: ``infer({name: array}) -> {name: array}``."""

    def __init__(self, loaded: Any, function: Any, metadata: ModelMetadata) -> None:
        super().__init__(metadata)
        self._loaded = loaded
        self._function = function

    @classmethod
    def load(
        cls, folder: str | Path, labels: Sequence[str] | str | Path | None = None
    ) -> TensorFlowModel:
        """Load the SavedModel in ``folder`` (the one holding ``saved_model.pb``).

        Raises:
            ImportError: TensorFlow is not installed (the message names the extra).
            ValueError: the SavedModel has no ``serving_default`` signature.
        """
        tf = _import_tf()
        folder = Path(folder)
        loaded = tf.saved_model.load(str(folder))
        function = loaded.signatures.get(SIGNATURE)
        if function is None:
            raise ValueError(
                f"the SavedModel has no {SIGNATURE!r} signature (it has: "
                f"{', '.join(loaded.signatures) or 'none'}); export it with one"
            )
        _, kwargs = function.structured_input_signature
        inputs = tuple(_info(n, s) for n, s in sorted(kwargs.items()))
        outputs = tuple(_info(n, s) for n, s in sorted(function.structured_outputs.items()))
        meta = ModelMetadata(
            name=folder.name,
            description="",
            inputs=inputs,
            outputs=outputs,
            labels=choose_labels((), labels, folder.name),
            backend="tensorflow",
            providers=("CPU",),
        )
        return cls(loaded, function, meta)

    def _run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        tf = _import_tf()
        result = self._function(**{k: tf.constant(v) for k, v in inputs.items()})
        return {name: np.array(result[name]) for name in (t.name for t in self.metadata().outputs)}

    def _release(self) -> None:
        self._function = None
        self._loaded = None

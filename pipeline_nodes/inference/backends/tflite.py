"""LiteRT/TFLite backend: runs a ``.tflite`` file in a TFLite ``Interpreter`` behind ``Model``.

The interpreter comes from the first of ``ai_edge_litert`` (LiteRT, the maintained runtime and
the one that works with numpy 2), ``tflite_runtime`` or ``tensorflow.lite`` that is installed;
with none, loading raises ``MissingDependencyError`` naming the ``tflite`` extra. These runtimes
apply their default XNNPACK CPU delegate, which is 2.5-4x faster than the plain kernels on the
development machines. Dynamic axes are read from ``shape_signature``: an input whose dynamic
axes change size between calls is resized (``resize_tensor_input`` + ``allocate_tensors``)
before it is set. Outputs are copied out of the interpreter, so the next call cannot overwrite
them. An interpreter is not thread-safe, so calls on one model are serialised. Labels come from
a label file packed into the ``.tflite`` (TFLite metadata appends associated files as a zip
archive), else from the ``labels`` argument.
"""

from __future__ import annotations

import importlib
import logging
import threading
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipeline.errors import MissingDependencyError
from pipeline_nodes.inference.backends.base import (
    Model,
    ModelMetadata,
    TensorInfo,
    check_num_threads,
    choose_labels,
    parse_labels,
)

__all__ = ["TFLiteModel", "import_interpreter"]

logger = logging.getLogger(__name__)

# (module to import, attribute path to the Interpreter class), in order of preference.
_RUNTIMES: tuple[tuple[str, str], ...] = (
    ("ai_edge_litert.interpreter", "Interpreter"),
    ("tflite_runtime.interpreter", "Interpreter"),
    ("tensorflow", "lite.Interpreter"),
)


class Interpreter(Protocol):
    """The part of the TFLite ``Interpreter`` API this backend uses (same in all three)."""

    def allocate_tensors(self) -> None: ...

    def get_input_details(self) -> list[dict[str, Any]]: ...

    def get_output_details(self) -> list[dict[str, Any]]: ...

    def resize_tensor_input(
        self, input_index: int, tensor_size: Sequence[int], strict: bool = ...
    ) -> None: ...

    def set_tensor(self, tensor_index: int, value: np.ndarray) -> None: ...

    def invoke(self) -> None: ...

    def get_tensor(self, tensor_index: int) -> np.ndarray: ...


def import_interpreter() -> tuple[Callable[..., Interpreter], str]:
    """The first installed TFLite ``Interpreter`` class, and the module it came from.

    Raises:
        MissingDependencyError: none of ai-edge-litert, tflite-runtime or tensorflow is
            installed.
        ImportError: one is installed but fails to import (its own error, which says why).
    """
    for module_name, attribute in _RUNTIMES:
        try:
            found: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            top = module_name.split(".")[0]
            if exc.name is not None and (exc.name == module_name or exc.name == top):
                continue
            raise
        for part in attribute.split("."):
            found = getattr(found, part)
        interpreter_class: Callable[..., Interpreter] = found
        return interpreter_class, module_name
    raise MissingDependencyError("ai-edge-litert", extra="tflite", purpose="running .tflite models")


def _tensor_info(details: Mapping[str, Any]) -> TensorInfo:
    shape = tuple(int(dim) for dim in details["shape"])
    signature = details.get("shape_signature")
    # Files without a signature report the current shape there; any -1 marks a dynamic axis.
    if signature is not None and len(signature) == len(shape):
        shape = tuple(int(dim) for dim in signature)
    return TensorInfo(name=str(details["name"]), dtype=np.dtype(details["dtype"]).name, shape=shape)


MAX_LABELS_BYTES = 1 << 20  # a label file of 10 000 classes is about 100 KB


def _packed_labels(path: Path) -> tuple[str, ...]:
    # TFLite metadata packs associated files (label maps) as a zip appended to the flatbuffer.
    # The archive is untrusted input: a damaged, encrypted or bomb entry gives no labels.
    try:
        if not zipfile.is_zipfile(path):
            return ()
        with zipfile.ZipFile(path) as archive:
            names = sorted(
                name
                for name in archive.namelist()
                if name.lower().endswith(".txt") and "label" in Path(name).name.lower()
            )
            if not names:
                return ()
            with archive.open(names[0]) as member:
                data = member.read(MAX_LABELS_BYTES + 1)  # never more, whatever the header says
            if len(data) > MAX_LABELS_BYTES:
                logger.warning(
                    "%s: the packed label file %s is over %d bytes: ignored",
                    path,
                    names[0],
                    MAX_LABELS_BYTES,
                )
                return ()
            return parse_labels(data.decode("utf-8"))
    except (
        zipfile.BadZipFile,
        OSError,
        EOFError,
        zlib.error,
        RuntimeError,  # an encrypted member
        NotImplementedError,  # a compression method zipfile lacks
        UnicodeDecodeError,
        ValueError,
    ) as exc:
        # Weights can contain the zip end-of-directory signature by chance: not an archive.
        logger.debug("no packed label file read from %s: %s", path, exc)
        return ()


class TFLiteModel(Model):
    """A TFLite model running in a LiteRT (or tflite-runtime / TensorFlow) ``Interpreter``.

    Create it with ``TFLiteModel.load(path)``; ``__init__`` only wraps an interpreter whose
    tensors are allocated.
    """

    def __init__(self, interpreter: Interpreter, metadata: ModelMetadata) -> None:
        """Wrap ``interpreter`` (tensors allocated) described by ``metadata``."""
        super().__init__(metadata)
        self._interpreter: Interpreter | None = interpreter
        self._lock = threading.Lock()
        self._input_indexes = {
            str(d["name"]): int(d["index"]) for d in interpreter.get_input_details()
        }
        self._output_indexes = {
            str(d["name"]): int(d["index"]) for d in interpreter.get_output_details()
        }
        # Shapes the input tensors are allocated with now; a call with other sizes resizes.
        self._allocated_shapes = {
            str(d["name"]): tuple(int(dim) for dim in d["shape"])
            for d in interpreter.get_input_details()
        }

    @classmethod
    def load(
        cls,
        path: str | Path,
        num_threads: int | None = None,
        labels: Sequence[str] | str | Path | None = None,
    ) -> TFLiteModel:
        """Load a ``.tflite`` file and allocate its tensors.

        Args:
            path: the model file.
            num_threads: CPU threads for the interpreter and XNNPACK. ``None``: the runtime's
                default.
            labels: class names, or a label file with one name per line; used only when no
                label file is packed into the model.

        Returns:
            The loaded model; ``metadata().providers`` is ``("XNNPACK", "CPU")``: XNNPACK runs
            the operators it supports, the built-in CPU kernels the rest.

        Raises:
            MissingDependencyError: no TFLite runtime is installed.
            FileNotFoundError: ``path`` or the label file does not exist.
            ValueError: ``num_threads`` below 1, or the runtime rejects the file.
        """
        check_num_threads(num_threads)
        path = Path(path)
        interpreter_class, runtime = import_interpreter()
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        interpreter = interpreter_class(model_path=str(path), num_threads=num_threads)
        interpreter.allocate_tensors()
        logger.info("loaded %s with %s (num_threads=%s)", path.name, runtime, num_threads)
        metadata = ModelMetadata(
            name=path.stem,
            description="",
            inputs=tuple(_tensor_info(d) for d in interpreter.get_input_details()),
            outputs=tuple(_tensor_info(d) for d in interpreter.get_output_details()),
            labels=choose_labels(_packed_labels(path), labels, path.stem),
            backend="tflite",
            providers=("XNNPACK", "CPU"),
        )
        return cls(interpreter, metadata)

    def _run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            interpreter = self._interpreter
            if interpreter is None:
                raise RuntimeError(f"model {self.metadata().name!r} is closed")
            resized = {
                name: value.shape
                for name, value in inputs.items()
                if value.shape != self._allocated_shapes[name]
            }
            if resized:
                for name, shape in resized.items():
                    # strict: only axes that are -1 in shape_signature may change.
                    interpreter.resize_tensor_input(
                        self._input_indexes[name], list(shape), strict=True
                    )
                interpreter.allocate_tensors()
                self._allocated_shapes.update(resized)
            for name, value in inputs.items():
                interpreter.set_tensor(self._input_indexes[name], value)
            interpreter.invoke()
            outputs: dict[str, np.ndarray] = {}
            for name, index in self._output_indexes.items():
                value = interpreter.get_tensor(index)
                # get_tensor copies in every runtime known; copy anyway if one ever hands
                # out a view of interpreter memory, which the next invoke() would overwrite.
                outputs[name] = value if value.flags.owndata else value.copy()
            return outputs

    def _release(self) -> None:
        with self._lock:
            self._interpreter = None

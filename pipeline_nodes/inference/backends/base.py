"""The backend-neutral model interface: what every inference runtime wrapper looks like.

A ``Model`` wraps one loaded model of one runtime (ONNX Runtime, LiteRT/TFLite). It describes
itself with ``metadata()`` (tensor names, dtypes and shapes, labels, backend, providers) and runs
with ``infer()``, which takes and returns plain ``{name: numpy array}`` dicts. Inputs are checked
here, once for all backends, before the runtime sees them: a missing, unknown, misshaped or
mistyped tensor raises ``InvalidTensorError`` naming the tensor, what was expected and what was
given. Nothing is cast or reshaped silently, so the outputs are exactly what the runtime returns
for the arrays the caller passed. This module also reads label lists (files or embedded text),
which both backends share.
"""

from __future__ import annotations

import abc
import dataclasses
import difflib
import json
import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import numpy as np

logger = logging.getLogger(__name__)

_ModelT = TypeVar("_ModelT", bound="Model")

__all__ = [
    "InvalidTensorError",
    "Model",
    "ModelMetadata",
    "TensorInfo",
    "check_num_threads",
    "choose_labels",
    "parse_labels",
    "read_labels",
]


class InvalidTensorError(ValueError):
    """Input tensors do not match what the model declares.

    Attributes:
        problems: one line per problem found (every problem is reported, not just the first).
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """Name, element type and shape of one model input or output.

    Attributes:
        name: the tensor's name in the model, the key used in ``infer()`` dicts.
        dtype: numpy dtype name, e.g. ``"float32"`` or ``"uint8"``.
        shape: one entry per axis; ``-1`` marks a dynamic axis (any size).
    """

    name: str
    dtype: str
    shape: tuple[int, ...]

    def describe(self) -> str:
        """The tensor as ``name dtype shape``, e.g. ``image float32 (-1, 4, 4, 3)``."""
        return f"{self.name} {self.dtype} {self.shape}"

    def problem_with(self, value: object) -> str | None:
        """Why ``value`` cannot be fed as this tensor, or ``None`` if it can.

        The dtype must be equal (no casting) and the shape must have the same rank and match
        every axis that is not ``-1``.
        """
        if not isinstance(value, np.ndarray):
            return (
                f"input {self.name!r}: expected a numpy.ndarray of {self.dtype} {self.shape}, "
                f"got {type(value).__name__}"
            )
        if not _dtype_matches(value.dtype, self.dtype):
            return (
                f"input {self.name!r}: expected dtype {self.dtype}, got {value.dtype} "
                f"(shape {value.shape})"
            )
        if len(value.shape) != len(self.shape) or any(
            want not in (-1, got) for want, got in zip(self.shape, value.shape)
        ):
            dynamic = " (-1 = any size)" if -1 in self.shape else ""
            return (
                f"input {self.name!r}: expected shape {self.shape}{dynamic}, got {value.shape} "
                f"(dtype {value.dtype})"
            )
        return None


def _dtype_matches(given: np.dtype[Any], expected: str) -> bool:
    if expected == "str":
        # String tensors (ONNX tensor(string)) accept numpy unicode, bytes or object arrays.
        return given.kind in "UOS"
    try:
        return bool(given == np.dtype(expected))
    except TypeError:
        # A type numpy does not know by name (bfloat16 via ml_dtypes): compare names.
        name: str = given.name
        return name == expected


@dataclasses.dataclass(frozen=True)
class ModelMetadata:
    """What a loaded model is and how it runs.

    Attributes:
        name: the model's name (its file name without suffix, unless a catalog name was used).
        description: free text from the model file; empty when it has none.
        inputs: the tensors ``infer()`` requires, in the model's order.
        outputs: the tensors ``infer()`` returns, in the model's order.
        labels: class names by index, from the model file or the ``labels`` argument; empty
            when none are known.
        backend: ``"onnxruntime"`` or ``"tflite"``.
        providers: the execution providers or delegates in use, fastest first, e.g.
            ``("CUDAExecutionProvider", "CPUExecutionProvider")`` or ``("XNNPACK",)``.
    """

    name: str
    description: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    labels: tuple[str, ...]
    backend: str
    providers: tuple[str, ...]


class Model(abc.ABC):
    """A loaded model: validated ``infer()`` on ``{name: array}`` dicts, then ``close()``.

    Subclasses implement ``_run`` (called with inputs already validated) and ``_release``; they
    are created by a ``load(path, ...)`` classmethod that does the I/O. A model is a context
    manager that closes itself on exit. ``infer()`` may be called from several threads; a
    subclass whose runtime is not thread-safe serialises calls itself.

    Example::

        with load_model("face.onnx") as model:
            outputs = model.infer({"image": batch})
    """

    def __init__(self, metadata: ModelMetadata) -> None:
        """Wrap a loaded runtime described by ``metadata``."""
        self._metadata = metadata
        self._inputs_by_name = {info.name: info for info in metadata.inputs}
        self._closed = False
        self._close_lock = threading.Lock()

    def metadata(self) -> ModelMetadata:
        """Names, dtypes and shapes of the inputs and outputs, labels, backend and providers."""
        return self._metadata

    @property
    def closed(self) -> bool:
        """Whether ``close()`` has been called."""
        return self._closed

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model once.

        Args:
            inputs: one array per model input, keyed by input name, with exactly the declared
                dtype and a shape matching the declared one (``-1`` axes may have any size).

        Returns:
            One array per model output, keyed by output name, in the model's output order. The
            arrays belong to the caller: later calls do not overwrite them.

        Raises:
            InvalidTensorError: an input is missing, unknown, not an array, of another dtype
                or of another shape. Nothing was run.
            RuntimeError: the model is closed.
        """
        if self._closed:
            raise RuntimeError(f"model {self._metadata.name!r} is closed")
        self.check_inputs(inputs)
        return self._run(inputs)

    def check_inputs(self, inputs: Mapping[str, object]) -> None:
        """Raise ``InvalidTensorError`` listing every way ``inputs`` do not fit the model."""
        problems: list[str] = []
        expected = self._inputs_by_name
        missing = [name for name in expected if name not in inputs]
        unknown = [name for name in inputs if name not in expected]
        for name in unknown:
            # Suggest only inputs still missing: a name already given is no likely misspelling.
            close = difflib.get_close_matches(name, missing, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(f"unknown input {name!r}{hint}")
        problems.extend(f"missing input {name!r}" for name in missing)
        for name, value in inputs.items():
            info = expected.get(name)
            if info is not None:
                problem = info.problem_with(value)
                if problem is not None:
                    problems.append(problem)
        if problems:
            if missing or unknown:
                listing = ", ".join(info.describe() for info in self._metadata.inputs)
                problems.append(f"model {self._metadata.name!r} has inputs: {listing}")
            raise InvalidTensorError(problems)

    def close(self) -> None:
        """Release the runtime's resources. Idempotent; ``infer()`` fails afterwards."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._release()

    def __enter__(self: _ModelT) -> _ModelT:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        meta = self._metadata
        state = ", closed" if self._closed else ""
        return f"<{type(self).__name__} {meta.name!r} backend={meta.backend}{state}>"

    @abc.abstractmethod
    def _run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the runtime on validated inputs and return fresh output arrays by name."""

    @abc.abstractmethod
    def _release(self) -> None:
        """Drop the runtime objects; called once, by ``close()``."""


def parse_labels(text: str) -> tuple[str, ...]:
    """Labels from text: a JSON list of strings, one label per line, or (one line only)
    comma-separated labels, as some exporters write them into model metadata.

    Blank lines inside the list are kept as empty labels, because a label's line number is
    its class index; trailing blank lines are dropped.

    Raises:
        ValueError: the text starts like JSON but is not a list of strings.
    """
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            parsed = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise ValueError(f"labels look like JSON but do not parse: {exc}") from exc
        except RecursionError:  # "[[[[..." from a damaged or hostile model file
            raise ValueError("labels look like JSON but nest too deep to be a list") from None
        if not isinstance(parsed, list) or not all(isinstance(item, str) for item in parsed):
            raise ValueError("labels in JSON must be a list of strings")
        return tuple(parsed)
    if "\n" not in stripped and "," in stripped:
        return tuple(label.strip() for label in stripped.split(","))
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return tuple(lines)


def read_labels(labels: Sequence[str] | str | Path) -> tuple[str, ...]:
    """Labels given by a caller: a sequence of names, or a label file (``str`` or ``Path``).

    A ``str`` is always a file path, never a single label.

    Raises:
        FileNotFoundError: the label file does not exist.
        TypeError: the sequence holds something other than strings.
    """
    if isinstance(labels, (str, Path)):
        path = Path(labels)
        if not path.is_file():
            raise FileNotFoundError(f"label file not found: {path}")
        return parse_labels(path.read_text(encoding="utf-8"))
    names = tuple(labels)
    wrong = [name for name in names if not isinstance(name, str)]
    if wrong:
        raise TypeError(f"labels must be strings, got {type(wrong[0]).__name__}: {wrong[0]!r}")
    return names


def choose_labels(
    embedded: Sequence[str], given: Sequence[str] | str | Path | None, model_name: str
) -> tuple[str, ...]:
    """The labels a model reports: those embedded in the file, else those the caller gave.

    A model file that carries its own labels knows its class order best, so the ``labels``
    argument only fills in for files without any; when both exist and differ the argument
    is ignored and a warning is logged (a catalog's labels repeat the file's: no warning).
    """
    if embedded:
        same = not isinstance(given, (str, Path)) and tuple(given or ()) == tuple(embedded)
        if given is not None and not same:
            logger.warning(
                "model %r carries %d labels of its own; the labels argument is ignored",
                model_name,
                len(embedded),
            )
        return tuple(embedded)
    return read_labels(given) if given is not None else ()


def check_num_threads(num_threads: int | None) -> None:
    """Raise ``ValueError`` unless ``num_threads`` is ``None`` or an integer of at least 1."""
    if num_threads is None:
        return
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"num_threads must be an integer >= 1 or None, got {num_threads!r}")

"""ONNX Runtime backend: loads an ``.onnx`` file into an ``InferenceSession`` behind ``Model``.

Execution providers are asked for in order of preference, by alias (``tensorrt``, ``cuda``,
``cpu``) or full name; the ones this onnxruntime build lacks are dropped, the CPU provider is
always kept last as the fallback, and the requested, available and used providers are logged.
``onnxruntime`` itself is imported only when a model is loaded, so this module imports on a
machine without it; loading then raises ``MissingDependencyError`` naming the ``onnx`` extra.
Labels come from the model's ``metadata_props`` (key ``labels``) when it has them.
"""

from __future__ import annotations

import difflib
import importlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

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

__all__ = ["DEFAULT_PROVIDERS", "PROVIDER_ALIASES", "OnnxRuntimeModel", "choose_providers"]

logger = logging.getLogger(__name__)

PROVIDER_ALIASES: Mapping[str, str] = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
"""Short provider names accepted in ``providers``, and the full names they stand for."""

DEFAULT_PROVIDERS: tuple[str, ...] = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "CPUExecutionProvider",
)
"""The preference order used when no providers are given (the available ones are kept)."""

_CPU = "CPUExecutionProvider"

# ORT reports element types as "tensor(<onnx name>)"; these are the numpy names for them.
_NUMPY_DTYPES: Mapping[str, str] = {
    "float": "float32",
    "double": "float64",
    "float16": "float16",
    "int8": "int8",
    "int16": "int16",
    "int32": "int32",
    "int64": "int64",
    "uint8": "uint8",
    "uint16": "uint16",
    "uint32": "uint32",
    "uint64": "uint64",
    "bool": "bool",
    "string": "str",
}

# ORT's logging severities: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal.
_ORT_SEVERITY_ERROR = 3


def import_onnxruntime() -> ModuleType:
    """Import ``onnxruntime``, or raise ``MissingDependencyError`` naming the ``onnx`` extra.

    Only the package's absence is translated: an installed but broken onnxruntime raises its
    own ``ImportError``, which says what is actually wrong.
    """
    try:
        return importlib.import_module("onnxruntime")
    except ModuleNotFoundError as exc:
        if exc.name != "onnxruntime":
            raise
        raise MissingDependencyError(
            "onnxruntime", extra="onnx", purpose="running .onnx models"
        ) from exc


def choose_providers(
    requested: Sequence[str] | None, available: Sequence[str], known: Sequence[str]
) -> list[str]:
    """The execution providers to create a session with, best first, always ending with CPU.

    Args:
        requested: provider aliases or full names in order of preference; ``None`` means
            ``DEFAULT_PROVIDERS``. A single string is read as a one-item list.
        available: the providers this onnxruntime build has
            (``onnxruntime.get_available_providers()``).
        known: every provider name onnxruntime knows (``onnxruntime.get_all_providers()``).

    Returns:
        The requested providers that are available, in the requested order, without repeats,
        followed by ``CPUExecutionProvider`` if it was not among them.

    Raises:
        ValueError: a requested name is neither an alias nor a provider onnxruntime knows.
    """
    if requested is None:
        wanted = list(DEFAULT_PROVIDERS)
    else:
        if isinstance(requested, str):
            requested = [requested]
        wanted = [_full_provider_name(name, known) for name in requested]
        missing = [name for name in wanted if name not in available]
        if missing:
            logger.warning(
                "execution providers %s were requested but this onnxruntime build lacks them "
                "(available: %s); using the rest",
                missing,
                list(available),
            )
    chosen = [name for name in dict.fromkeys(wanted) if name in available]
    if _CPU not in chosen:
        chosen.append(_CPU)
    return chosen


def _full_provider_name(name: str, known: Sequence[str]) -> str:
    alias = PROVIDER_ALIASES.get(name.lower())
    if alias is not None:
        return alias
    by_lower = {full.lower(): full for full in known}
    full = by_lower.get(name.lower())
    if full is not None:
        return full
    choices = [*PROVIDER_ALIASES, *known]
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"unknown execution provider {name!r}{hint} Use an alias "
        f"({', '.join(PROVIDER_ALIASES)}) or one of: {', '.join(known)}"
    )


def _tensor_info(node_arg: Any) -> TensorInfo:
    # ORT gives symbolic or unknown axes as str or None; both are dynamic.
    shape = tuple(dim if isinstance(dim, int) and dim >= 0 else -1 for dim in node_arg.shape)
    ort_type = str(node_arg.type)
    element = ort_type[len("tensor(") : -1] if ort_type.startswith("tensor(") else None
    # Types without a numpy name (bfloat16, float8, sequences, maps) keep ORT's own wording.
    dtype = _NUMPY_DTYPES.get(element, element) if element is not None else ort_type
    return TensorInfo(name=str(node_arg.name), dtype=dtype, shape=shape)


class OnnxRuntimeModel(Model):
    """An ONNX model running in an ONNX Runtime ``InferenceSession``.

    Create it with ``OnnxRuntimeModel.load(path)``; ``__init__`` only wraps an existing
    session. ``infer()`` is thread-safe, as ``InferenceSession.run`` is.
    """

    def __init__(self, session: Any, metadata: ModelMetadata) -> None:
        """Wrap ``session`` (an ``onnxruntime.InferenceSession``) described by ``metadata``."""
        super().__init__(metadata)
        self._session: Any = session
        self._output_names = [info.name for info in metadata.outputs]

    @classmethod
    def load(
        cls,
        path: str | Path,
        providers: Sequence[str] | None = None,
        num_threads: int | None = None,
        labels: Sequence[str] | str | Path | None = None,
    ) -> OnnxRuntimeModel:
        """Load an ``.onnx`` file.

        Args:
            path: the model file.
            providers: execution providers in order of preference: aliases ``tensorrt``,
                ``cuda``, ``cpu`` or full names such as ``"CUDAExecutionProvider"``. Those
                not available in this onnxruntime build are skipped, and the CPU provider is
                always added last. ``None``: every available one of TensorRT, CUDA, CPU.
            num_threads: threads for one operator (``intra_op_num_threads``; operators run one
                at a time). ``None``: onnxruntime's default, one per physical core.
            labels: class names, or a label file with one name per line; used only when the
                model's ``metadata_props`` carry no ``labels`` entry.

        Returns:
            The loaded model; ``metadata().providers`` lists the providers the session uses.

        Raises:
            MissingDependencyError: onnxruntime is not installed.
            FileNotFoundError: ``path`` or the label file does not exist.
            ValueError: an unknown provider name or a ``num_threads`` below 1.
        """
        check_num_threads(num_threads)
        path = Path(path)
        ort = import_onnxruntime()
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        available = list(ort.get_available_providers())
        chosen = choose_providers(providers, available, list(ort.get_all_providers()))

        ort.set_default_logger_severity(_ORT_SEVERITY_ERROR)
        options = ort.SessionOptions()
        options.log_severity_level = _ORT_SEVERITY_ERROR
        if num_threads is not None:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), sess_options=options, providers=chosen)
        used = tuple(str(name) for name in session.get_providers())
        logger.info(
            "onnxruntime providers for %s: requested %s, available %s, used %s",
            path.name,
            list(providers) if providers is not None else "default",
            available,
            list(used),
        )

        meta = session.get_modelmeta()
        props: Mapping[str, str] = meta.custom_metadata_map or {}
        embedded = parse_labels(props["labels"]) if "labels" in props else ()
        metadata = ModelMetadata(
            name=path.stem,
            description=str(meta.description or meta.graph_description or ""),
            inputs=tuple(_tensor_info(arg) for arg in session.get_inputs()),
            outputs=tuple(_tensor_info(arg) for arg in session.get_outputs()),
            labels=choose_labels(embedded, labels, path.stem),
            backend="onnxruntime",
            providers=used,
        )
        return cls(session, metadata)

    def _run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self._session
        if session is None:
            raise RuntimeError(f"model {self.metadata().name!r} is closed")
        results: list[np.ndarray] = session.run(self._output_names, dict(inputs))
        return dict(zip(self._output_names, results))

    def _release(self) -> None:
        # The session frees its memory (and GPU buffers) when the last reference goes.
        self._session = None

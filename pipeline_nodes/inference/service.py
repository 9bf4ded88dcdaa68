"""The model service: load an ONNX or TFLite model by file or catalog name and run it.

``load_model`` is the one entry point for plain Python callers (the SDK, the CLI's
``pipeline infer`` and the inference nodes): it finds the file, picks the backend from the
suffix, and returns a ``Model`` whose ``infer()`` takes and returns ``{name: numpy array}``
dicts. A name that is not an existing path is looked up in the model catalog
(``pipeline_nodes.inference.models.store``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal, get_args

from pipeline_nodes.inference.backends.base import (
    InvalidTensorError,
    Model,
    ModelMetadata,
    TensorInfo,
)
from pipeline_nodes.inference.backends.onnxruntime import OnnxRuntimeModel
from pipeline_nodes.inference.backends.tflite import TFLiteModel

__all__ = [
    "BACKEND_BY_SUFFIX",
    "Backend",
    "InvalidTensorError",
    "Model",
    "ModelMetadata",
    "TensorInfo",
    "load_model",
]

Backend = Literal["auto", "onnxruntime", "tflite"]

BACKEND_BY_SUFFIX: Mapping[str, Literal["onnxruntime", "tflite"]] = {
    ".onnx": "onnxruntime",
    ".tflite": "tflite",
}
"""The backend ``backend="auto"`` picks for each model file suffix (compared in lower case)."""


def load_model(
    path_or_name: str | Path,
    backend: Backend = "auto",
    providers: Sequence[str] | None = None,
    num_threads: int | None = None,
    labels: Sequence[str] | str | Path | None = None,
) -> Model:
    """Load a model file, or a model from the catalog by name, ready for ``infer()``.

    Args:
        path_or_name: a ``.onnx`` or ``.tflite`` file, or a catalog model name such as
            ``"face_short_range"`` (used when no file of that name exists).
        backend: ``"auto"`` picks by file suffix (``.onnx``: onnxruntime, ``.tflite``:
            tflite); name one to load a file with another suffix.
        providers: ONNX Runtime execution providers in order of preference (``"tensorrt"``,
            ``"cuda"``, ``"cpu"`` or full names); unavailable ones are skipped and CPU is
            always the fallback. Only for the onnxruntime backend.
        num_threads: CPU threads for the runtime; ``None`` keeps the runtime's default.
        labels: class names, or a label file (a ``str`` is always a path). Labels stored in
            the model file win; then these; then the catalog's labels for a catalog name.

    Returns:
        The loaded model; close it (or use it as a context manager) to free the runtime.

    Raises:
        LookupError: no such file, and the catalog has no model of that name
            (``ModelNotFoundError``, listing the known names).
        ValueError: an unknown backend or suffix, providers given for tflite, an unknown
            provider, or a ``num_threads`` below 1.
        MissingDependencyError: the backend's runtime package is not installed.
    """
    if backend not in get_args(Backend):
        raise ValueError(
            f"unknown backend {backend!r}; expected one of: {', '.join(get_args(Backend))}"
        )
    path, catalog_labels = _locate(path_or_name, want_labels=labels is None)
    if labels is None:
        labels = catalog_labels
    chosen = _pick_backend(path) if backend == "auto" else backend
    if chosen == "onnxruntime":
        return OnnxRuntimeModel.load(
            path, providers=providers, num_threads=num_threads, labels=labels
        )
    if providers is not None:
        raise ValueError(
            f"providers={list(providers)!r} apply only to the onnxruntime backend, "
            f"and {path.name!r} is loaded with tflite"
        )
    return TFLiteModel.load(path, num_threads=num_threads, labels=labels)


def _pick_backend(path: Path) -> Literal["onnxruntime", "tflite"]:
    suffix = path.suffix.lower()
    chosen = BACKEND_BY_SUFFIX.get(suffix)
    if chosen is None:
        known = ", ".join(f"{s} ({b})" for s, b in BACKEND_BY_SUFFIX.items())
        raise ValueError(
            f"cannot tell which backend runs {path.name!r} from its suffix "
            f"{suffix or '(none)'!r}: known suffixes are {known}; "
            "pass backend='onnxruntime' or backend='tflite'"
        )
    return chosen


def _locate(path_or_name: str | Path, want_labels: bool) -> tuple[Path, Sequence[str] | None]:
    """The model file for a path or catalog name, and the catalog's labels for a name."""
    path = Path(path_or_name).expanduser()
    if path.exists():
        return path, None
    from pipeline_nodes.inference.models.store import model_info, resolve_model

    resolved = resolve_model(path_or_name)
    if not want_labels:
        return resolved, None
    try:
        info = model_info(str(path_or_name))
    except LookupError:
        # Resolved as a path inside the models folder rather than as a catalog name.
        return resolved, None
    return resolved, info.get("labels") or None

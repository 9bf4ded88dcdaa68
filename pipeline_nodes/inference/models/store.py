"""The local model store: where fetched models live, the manifest, and name resolution.

Models are files in one folder (:func:`default_models_dir`), described by a manifest
``models.json`` that :mod:`pipeline_nodes.inference.models.fetch` writes: for each model its file,
sha256, size, source (``package==version`` and path inside the wheel, or how it was built),
licence, description, format, task, decoder kind, input size and labels.

A node that takes ``model: face_short_range`` calls :func:`resolve_model` to turn the name
into a path (a path to an existing file is accepted as is) and :func:`model_info` to
configure itself: labels, decoder kind and parameters, input layout and normalisation. Errors
are :class:`ModelNotFoundError`, which lists the known names with a did-you-mean, or says to
run ``pipeline models fetch`` when the model is known but not fetched yet.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline import ParamIssue
from pipeline.checks import input_file
from pipeline.errors import PipelineError
from pipeline_nodes.inference.models.catalog import CATALOG, catalog_names

MODEL_SUFFIXES = (".onnx", ".tflite")

__all__ = [
    "MANIFEST_NAME",
    "ModelNotFoundError",
    "check_model",
    "default_models_dir",
    "file_sha256",
    "model_info",
    "read_manifest",
    "resolve_model",
    "write_manifest",
]

MANIFEST_NAME = "models.json"
_MANIFEST_VERSION = 1


class ModelNotFoundError(PipelineError, KeyError):
    """A model name or path cannot be resolved.

    It is a ``LookupError`` (and a ``KeyError``, so code looking names up in a mapping can
    catch it the usual way); ``str()`` is the plain message.

    Attributes:
        name: what was asked for.
    """

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message

    def __str__(self) -> str:
        return self.message


def default_models_dir() -> Path:
    """The folder models are fetched into and resolved from.

    Returns:
        ``$PIPELINE_MODELS_DIR`` if set, else ``$XDG_CACHE_HOME/pipeline/models``, else
        ``~/.cache/pipeline/models``.
    """
    explicit = os.environ.get("PIPELINE_MODELS_DIR")
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache).expanduser() if cache else Path.home() / ".cache"
    return base / "pipeline" / "models"


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(models_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    """Read the manifest's model entries.

    Args:
        models_dir: the models folder (default: :func:`default_models_dir`).

    Returns:
        Entries keyed by model name; empty when there is no manifest or it is unreadable
        (a broken manifest is rebuilt by the next fetch).
    """
    path = (models_dir or default_models_dir()) / MANIFEST_NAME
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    models = data.get("models") if isinstance(data, dict) else None
    return dict(models) if isinstance(models, dict) else {}


def write_manifest(models_dir: Path, entries: dict[str, dict[str, Any]]) -> Path:
    """Write the manifest atomically (temporary file, then rename).

    Args:
        models_dir: the models folder.
        entries: model entries keyed by name.

    Returns:
        The manifest path.
    """
    path = models_dir / MANIFEST_NAME
    tmp = path.with_suffix(".json.tmp")
    data = {"manifest_version": _MANIFEST_VERSION, "models": dict(sorted(entries.items()))}
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
    return path


def _unknown_name_message(name: str) -> str:
    known = catalog_names()
    message = f"unknown model {name!r}: not a file, a catalog name or a file in the models folder"
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        message += f" (did you mean {close[0]!r}?)"
    return message + "; known models: " + ", ".join(known)


def resolve_model(name_or_path: str | Path, models_dir: Path | None = None) -> Path:
    """Turn a model name or path into the path of a model file.

    Args:
        name_or_path: a path to an existing file (returned unchanged), a catalog name
            (``face_short_range``), a catalog file name (``face_short_range.tflite``), or
            the name of any file placed in the models folder.
        models_dir: the models folder (default: :func:`default_models_dir`).

    Returns:
        The model file's path.

    Raises:
        ModelNotFoundError: the name is not in the catalog (the message lists the known
            names and a did-you-mean), or it is but has not been fetched.
    """
    candidate = Path(name_or_path).expanduser()
    if candidate.is_file():
        return Path(name_or_path)
    name = str(name_or_path)
    folder = models_dir or default_models_dir()
    spec = CATALOG.get(name) or next((s for s in CATALOG.values() if s.file == name), None)
    if spec is None:
        if candidate.name == name and (folder / name).is_file():
            return folder / name  # a file placed in the models folder, named by file name
        raise ModelNotFoundError(name, _unknown_name_message(name))
    name = spec.name
    path = folder / spec.file
    if not path.is_file():
        raise ModelNotFoundError(
            name,
            f"model {name!r} is not fetched yet (no {path}): run `pipeline models fetch "
            f"{name}`" + (f" --dir {folder}" if models_dir is not None else ""),
        )
    return path


def check_model(param: str, name_or_path: str) -> Iterator[ParamIssue]:
    """``pipeline check``'s view of a model param: a file that exists, a fetched catalog model.

    An unknown name gets a did-you-mean; a catalog model not fetched yet, the command that
    fetches it.
    """
    path = Path(name_or_path).expanduser()
    looks_like_file = path.suffix.lower() in MODEL_SUFFIXES or "/" in name_or_path
    try:
        resolve_model(name_or_path)
    except ModelNotFoundError as exc:
        if looks_like_file and name_or_path not in CATALOG:
            yield from input_file(param, name_or_path, "model file")
            return
        hints: tuple[str, ...] = ()
        if name_or_path in CATALOG or any(s.file == name_or_path for s in CATALOG.values()):
            hints = (f"run: pipeline models fetch {exc.name}",)
        else:
            hints = ("`pipeline models list` shows the catalog",)
        yield ParamIssue(param, exc.message, hints)


def model_info(name: str) -> dict[str, Any]:
    """Catalog metadata for a model name, so a node can configure itself.

    Args:
        name: a catalog name.

    Returns:
        A fresh JSON-compatible dict with ``name``, ``file``, ``format``, ``task``,
        ``description``, ``licence``, ``source``, ``decoder``, ``decoder_params``,
        ``input`` (name, layout, size, color, resize, mean, std, size_multiple, dtype),
        ``outputs`` (role -> tensor name) and ``labels``.

    Raises:
        ModelNotFoundError: the name is not in the catalog.
    """
    spec = CATALOG.get(name)
    if spec is None:
        raise ModelNotFoundError(name, _unknown_name_message(name))
    return spec.to_dict()

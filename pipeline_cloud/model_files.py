"""Model files: which framework, does it load, what it takes and gives, catalog twins.

A model file is accepted only if it loads: ONNX with ONNX Runtime, TFLite with LiteRT, a
TensorFlow SavedModel (a ``.zip`` or ``.tar.gz`` of its folder) with TensorFlow (the
``tensorflow`` extra). A file identical to a catalog model (``pipeline models fetch``) is
recognised by its sha256 and gets the catalog's decoder and input preparation as node params
(:func:`params_from_catalog`), so it runs in the cloud exactly as the graph's node runs it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Literal

from pipeline_cloud.errors import InvalidArgument

__all__ = [
    "Framework",
    "ModelFileInfo",
    "extract_saved_model",
    "framework_of",
    "inspect_model",
    "params_from_catalog",
]

Framework = Literal["onnx", "tflite", "tensorflow"]


@dataclasses.dataclass(frozen=True)
class ModelFileInfo:
    """What a model file is: framework, tensors (name, dtype, shape) and labels."""

    framework: Framework
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    labels: list[str]
    catalog: str | None = None


def framework_of(file_name: str) -> Framework:
    lower = file_name.lower()
    if lower.endswith(".onnx"):
        return "onnx"
    if lower.endswith(".tflite"):
        return "tflite"
    if lower.endswith((".zip", ".tar.gz", ".tgz")):
        return "tensorflow"
    raise InvalidArgument(
        f"cannot tell the framework of {file_name!r}: upload a .onnx, a .tflite, or a "
        "TensorFlow SavedModel folder as .zip or .tar.gz"
    )


def extract_saved_model(archive: Path, into: Path) -> Path:
    """Unpack a SavedModel archive safely and return the folder holding ``saved_model.pb``."""
    name = archive.name.lower()
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(archive) as z:
                for member in z.namelist():
                    _check_member(member)
                z.extractall(into)
        else:
            with tarfile.open(archive) as t:
                t.extractall(into, filter="data")
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as exc:
        raise InvalidArgument(f"{archive.name}: not a readable archive ({exc})") from exc
    found = sorted(into.rglob("saved_model.pb"), key=lambda p: len(p.parts))
    if not found:
        raise InvalidArgument(
            f"{archive.name}: no saved_model.pb inside; archive the SavedModel folder itself"
        )
    return found[0].parent


def _check_member(member: str) -> None:
    if member.startswith("/") or ".." in Path(member).parts:
        raise InvalidArgument(f"archive member {member!r} would land outside the model folder")


def inspect_model(path: Path, file_name: str | None = None) -> ModelFileInfo:
    """Load a model file to check it, and describe it.

    Raises:
        InvalidArgument: the file does not load (the message says why and what to upload).
    """
    file_name = file_name or path.name
    framework = framework_of(file_name)
    if framework == "tensorflow":
        from pipeline_cloud.tf_backend import TensorFlowModel

        with tempfile.TemporaryDirectory() as tmp:
            folder = extract_saved_model(path, Path(tmp))
            try:
                model = TensorFlowModel.load(folder)
            except ImportError as exc:
                raise InvalidArgument(
                    "TensorFlow SavedModels need TensorFlow on the server: pip install "
                    "'edge-vision-pipeline[tensorflow]'"
                ) from exc
            except Exception as exc:
                raise InvalidArgument(f"{file_name}: not a loadable SavedModel ({exc})") from exc
            with model:
                meta = model.metadata()
    else:
        from pipeline_nodes.inference.service import load_model

        try:
            with load_model(path, backend="onnxruntime" if framework == "onnx" else "tflite") as m:
                meta = m.metadata()
        except Exception as exc:
            raise InvalidArgument(f"{file_name}: not a loadable {framework} model ({exc})") from exc
    return ModelFileInfo(
        framework=framework,
        inputs=[_tensor(t) for t in meta.inputs],
        outputs=[_tensor(t) for t in meta.outputs],
        labels=list(meta.labels),
        catalog=_catalog_match(path) if framework != "tensorflow" else None,
    )


def _tensor(t: Any) -> dict[str, Any]:
    return {"name": t.name, "dtype": t.dtype, "shape": list(t.shape)}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _catalog_match(path: Path) -> str | None:
    """The catalog model whose file has these bytes, if any."""
    try:
        from pipeline_nodes.inference.models.catalog import CATALOG
        from pipeline_nodes.inference.models.store import read_manifest
    except ImportError:
        return None
    digest = _sha256(path)
    for name, entry in read_manifest().items():
        if entry.get("sha256") == digest and name in CATALOG:
            return name
    for name, spec in CATALOG.items():
        if spec.sha256 == digest:
            return name
    return None


def params_from_catalog(name: str) -> dict[str, Any]:
    """The detector/classifier node params that run catalog model ``name`` from a file."""
    from pipeline_nodes.inference.models.store import model_info

    info = model_info(name)
    spec = dict(info.get("input") or {})
    params: dict[str, Any] = {}
    if spec.get("size"):
        height, width = spec["size"]
        params["input_size"] = [width, height]
    for key in ("resize", "mean", "std", "color", "layout"):
        if spec.get(key) is not None:
            params[key] = spec[key]
    if spec.get("name"):
        params["input_name"] = spec["name"]
    if info.get("labels"):
        params["labels"] = list(info["labels"])
    if info.get("task") == "detection" and info.get("decoder"):
        params["decoder"] = info["decoder"]
        params["decoder_params"] = dict(info.get("decoder_params") or {})
    elif info.get("decoder_params", {}).get("activation"):
        params["activation"] = info["decoder_params"]["activation"]
    return params

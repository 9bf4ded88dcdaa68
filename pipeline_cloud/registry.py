"""The model registry: models by organisation, name and version, checked when uploaded.

A file is checked by :mod:`pipeline_cloud.model_files` (it must load; inputs and outputs are
recorded). A catalog model's file gets the catalog's node params; other files carry the node
params given at upload (``decoder``, ``input_size``, ...).

Who sees a model: its organisation; organisations it is shared with; everybody when it is
public. For anyone else it does not exist (``NotFound``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import tempfile
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from pipeline_cloud.blobs import BlobStore
from pipeline_cloud.db import Model, ModelShare, ModelVersion, Organization
from pipeline_cloud.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied
from pipeline_cloud.model_files import (
    ModelFileInfo,
    inspect_model,
    params_from_catalog,
)

__all__ = [
    "MODEL_TYPES",
    "ModelFileInfo",
    "Registry",
    "VersionRecord",
    "default_version",
    "inspect_model",
    "params_from_catalog",
]

MODEL_TYPES = ("object_detection", "classification")
VISIBILITIES = ("private", "public")


def default_version(now: dt.datetime | None = None) -> str:
    """A version from the UTC time, like ``2025-04-14T16-38-25``."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return now.strftime("%Y-%m-%dT%H-%M-%S")


@dataclasses.dataclass(frozen=True)
class VersionRecord:
    """A model version as the inference workers and listings need it."""

    id: str
    org_id: str
    org_name: str
    name: str
    version: str
    model_type: str
    visibility: str
    framework: str
    file_name: str
    path: Path
    size: int
    sha256: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    labels: list[str]
    run_params: dict[str, Any]
    created_at: dt.datetime
    shared_with: tuple[str, ...] = ()

    @property
    def item_id(self) -> str:
        """Viam's registry item id, ``<org-id>:<model-name>``."""
        return f"{self.org_id}:{self.name}"


class Registry:
    """Model rows and files: create versions, list, share, resolve with access checks."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        blobs: BlobStore,
        inspector: Callable[[Path, str], ModelFileInfo] | None = None,
    ) -> None:
        self.sessions = sessions
        self.blobs = blobs
        # The server checks models in its worker pool, so TensorFlow is never loaded into
        # the server process itself.
        self.inspector = inspector or inspect_model

    def create_version(
        self,
        org_id: str,
        name: str,
        model_type: str,
        file_name: str,
        data: bytes,
        version: str = "",
        visibility: str = "private",
        labels: list[str] | None = None,
        run_params: Mapping[str, Any] | None = None,
        description: str = "",
    ) -> VersionRecord:
        """Check and store a model file as a new version of ``org``'s model ``name``."""
        if not name or ":" in name or "@" in name or "/" in name:
            raise InvalidArgument(f"bad model name {name!r}: use letters, digits, - and _")
        if model_type not in MODEL_TYPES:
            raise InvalidArgument(
                f"model type must be one of {', '.join(MODEL_TYPES)}, got {model_type!r}"
            )
        if visibility not in VISIBILITIES:
            raise InvalidArgument(f"visibility must be private or public, got {visibility!r}")
        version = version or default_version()
        suffix = "".join(Path(file_name).suffixes[-2:]) if file_name.endswith(".tar.gz") else ""
        suffix = suffix or Path(file_name).suffix
        with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
            tmp.write(data)
            tmp.flush()
            info = self.inspector(Path(tmp.name), file_name)
        params: dict[str, Any] = params_from_catalog(info.catalog) if info.catalog else {}
        params.update(run_params or {})
        if labels:
            params["labels"] = list(labels)
        if model_type == "object_detection" and not params.get("decoder"):
            raise InvalidArgument(
                f"{file_name} is not a catalog model: say how to decode its outputs with "
                "--decoder (ssd, blazeface, centerface or yolo)"
            )
        blob_key = self.blobs.put(data, suffix=suffix)
        try:
            with self.sessions.begin() as s:
                model = s.scalar(select(Model).where(Model.org_id == org_id, Model.name == name))
                if model is None:
                    model = Model(
                        id=str(uuid.uuid4()),
                        org_id=org_id,
                        name=name,
                        model_type=model_type,
                        visibility=visibility,
                        description=description,
                    )
                    s.add(model)
                elif model.model_type != model_type:
                    raise InvalidArgument(
                        f"model {name!r} is a {model.model_type} model, not {model_type}"
                    )
                else:
                    model.visibility = visibility
                taken = s.scalar(
                    select(ModelVersion.id).where(
                        ModelVersion.model_id == model.id, ModelVersion.version == version
                    )
                )
                if taken is not None:
                    raise AlreadyExists(f"model {name!r} has a version {version!r} already")
                s.add(
                    ModelVersion(
                        id=str(uuid.uuid4()),
                        model_id=model.id,
                        version=version,
                        framework=info.framework,
                        file_name=Path(file_name).name,
                        blob_key=blob_key,
                        size=len(data),
                        sha256=hashlib.sha256(data).hexdigest(),
                        inputs=info.inputs,
                        outputs=info.outputs,
                        labels=list(params.get("labels") or info.labels),
                        run_params=params,
                    )
                )
        except BaseException:
            self.blobs.delete(blob_key)
            raise
        return self.resolve(org_id, org_id, name, version)

    def _visible(self, caller_org: str) -> Any:
        shared = select(ModelShare.model_id).where(ModelShare.org_id == caller_org)
        return or_(Model.org_id == caller_org, Model.visibility == "public", Model.id.in_(shared))

    def resolve(
        self, caller_org: str, item_org: str, name: str, version: str = ""
    ) -> VersionRecord:
        """The version (newest when ``version`` is empty) of ``item_org``'s model ``name``."""
        with self.sessions() as s:
            org = s.get(Organization, item_org) or s.scalar(
                select(Organization).where(Organization.name == item_org)
            )
            model = None
            if org is not None:
                model = s.scalar(
                    select(Model).where(
                        Model.org_id == org.id, Model.name == name, self._visible(caller_org)
                    )
                )
            if org is None or model is None:
                raise NotFound(
                    f"no model {item_org}:{name} that this key may use (check the organisation "
                    "id and model name; private models of other organisations are not visible)"
                )
            q = select(ModelVersion).where(ModelVersion.model_id == model.id)
            if version:
                row = s.scalar(q.where(ModelVersion.version == version))
                if row is None:
                    known = list(s.scalars(q.with_only_columns(ModelVersion.version)))
                    raise NotFound(
                        f"model {item_org}:{name} has no version {version!r}; versions: "
                        + (", ".join(known) or "none")
                    )
            else:
                row = s.scalar(q.order_by(ModelVersion.seq.desc()).limit(1))
                if row is None:
                    raise NotFound(f"model {item_org}:{name} has no versions")
            shares = tuple(
                s.scalars(select(ModelShare.org_id).where(ModelShare.model_id == model.id))
            )
            return self._record(org, model, row, shares)

    def _record(
        self, org: Organization, model: Model, row: ModelVersion, shares: tuple[str, ...]
    ) -> VersionRecord:
        return VersionRecord(
            id=row.id,
            org_id=org.id,
            org_name=org.name,
            name=model.name,
            version=row.version,
            model_type=model.model_type,
            visibility=model.visibility,
            framework=row.framework,
            file_name=row.file_name,
            path=self.blobs.path(row.blob_key),
            size=row.size,
            sha256=row.sha256,
            inputs=list(row.inputs),
            outputs=list(row.outputs),
            labels=list(row.labels),
            run_params=dict(row.run_params),
            created_at=row.created_at,
            shared_with=shares,
        )

    def list_versions(
        self, caller_org: str, item_org: str = "", name: str = "", version: str = ""
    ) -> list[VersionRecord]:
        """Every version the caller may see (optionally of one organisation, name, version)."""
        with self.sessions() as s:
            q = (
                select(Organization, Model, ModelVersion)
                .join(Model, Model.org_id == Organization.id)
                .join(ModelVersion, ModelVersion.model_id == Model.id)
                .where(self._visible(caller_org))
            )
            if item_org:
                q = q.where(or_(Organization.id == item_org, Organization.name == item_org))
            if name:
                q = q.where(Model.name == name)
            if version:
                q = q.where(ModelVersion.version == version)
            rows = list(s.execute(q.order_by(Organization.name, Model.name, ModelVersion.seq)))
            shares: dict[str, list[str]] = {}
            for model_id, org_id in s.execute(select(ModelShare.model_id, ModelShare.org_id)):
                shares.setdefault(model_id, []).append(org_id)
        return [self._record(o, m, v, tuple(shares.get(m.id, ()))) for o, m, v in rows]

    def share(self, caller_org: str, name: str, with_org: str, remove: bool = False) -> None:
        """Let organisation ``with_org`` (id or name) see and run ``caller_org``'s ``name``."""
        with self.sessions.begin() as s:
            model = s.scalar(select(Model).where(Model.org_id == caller_org, Model.name == name))
            if model is None:
                raise NotFound(f"this organisation has no model {name!r}")
            other = s.get(Organization, with_org) or s.scalar(
                select(Organization).where(Organization.name == with_org)
            )
            if other is None:
                raise NotFound(f"no organisation {with_org!r}")
            if other.id == caller_org:
                raise InvalidArgument("a model is always visible to its own organisation")
            existing = s.get(ModelShare, (model.id, other.id))
            if remove and existing is not None:
                s.delete(existing)
            elif not remove and existing is None:
                s.add(ModelShare(model_id=model.id, org_id=other.id))

    def set_visibility(self, caller_org: str, name: str, visibility: str) -> None:
        if visibility not in VISIBILITIES:
            raise InvalidArgument(f"visibility must be private or public, got {visibility!r}")
        with self.sessions.begin() as s:
            model = s.scalar(select(Model).where(Model.org_id == caller_org, Model.name == name))
            if model is None:
                raise NotFound(f"this organisation has no model {name!r}")
            model.visibility = visibility

    def delete_version(self, caller_org: str, name: str, version: str) -> None:
        with self.sessions.begin() as s:
            model = s.scalar(select(Model).where(Model.org_id == caller_org, Model.name == name))
            if model is None:
                raise PermissionDenied(f"this organisation has no model {name!r}")
            row = s.scalar(
                select(ModelVersion).where(
                    ModelVersion.model_id == model.id, ModelVersion.version == version
                )
            )
            if row is None:
                raise NotFound(f"model {name!r} has no version {version!r}")
            s.delete(row)
            key = row.blob_key
        self.blobs.delete(key)

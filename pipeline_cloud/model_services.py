"""The registry and cloud inference over gRPC.

- ``viam.app.packages.v1.PackageService``: ``CreatePackage`` (client-streamed: the package
  info, then the file's bytes) uploads a model version; ``ListPackages``, ``GetPackage`` and
  ``DeletePackage`` list, describe and delete. A package id is the registry item id,
  ``<org-id>:<model-name>``. The info's ``metadata`` carries ``model_type``
  (object_detection | classification), ``file_name``, ``visibility``, ``labels`` and the node
  params (``run_params``) of a model that is not a catalog one.
- ``viam.app.mlinference.v1.MLInferenceService``: ``GetInference`` runs a registry model on a
  stored image in the worker pool and answers the output tensors (flat tensors) and the
  annotations (boxes normalised 0..1, ``[x_min, y_min, x_max, y_max]``, classifications).
- ``pipeline.cloud.v1.RegistryAdmin`` (ours; Viam has no such calls): ``WhoAmI``,
  ``ShareModel``, ``SetVisibility``, ``InferenceStatus`` (``google.protobuf.Struct`` in and
  out) and
  ``DownloadModel`` (``Struct`` in, ``BytesValue`` out) for the edge's model cache.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from google.protobuf import json_format, struct_pb2, wrappers_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from grpclib.const import Cardinality, Handler
from grpclib.server import Stream
from viam.gen.app.data.v1 import data_pb2
from viam.gen.app.mlinference.v1 import ml_inference_grpc, ml_inference_pb2
from viam.gen.app.packages.v1 import packages_grpc, packages_pb2

from pipeline.rpc.flat_tensors import to_flat_tensors
from pipeline_cloud.context import Cloud, handled, run_blocking
from pipeline_cloud.errors import InvalidArgument
from pipeline_cloud.inference import Job
from pipeline_cloud.registry import VersionRecord

__all__ = ["MLInferenceService", "PackageService", "RegistryAdmin", "split_item_id"]

ADMIN_SERVICE = "pipeline.cloud.v1.RegistryAdmin"


def split_item_id(item_id: str) -> tuple[str, str]:
    """``<org>:<name>`` -> ``(org, name)``."""
    org, sep, name = item_id.partition(":")
    if not sep or not org or not name:
        raise InvalidArgument(
            f"registry item id {item_id!r} must be <organization-id>:<model-name>"
        )
    return org, name


def _package(rec: VersionRecord) -> packages_pb2.Package:
    metadata = struct_pb2.Struct()
    metadata.update(
        {
            "model_type": rec.model_type,
            "model_framework": rec.framework,
            "file_name": rec.file_name,
            "visibility": rec.visibility,
            "labels": rec.labels,
            "inputs": rec.inputs,
            "outputs": rec.outputs,
            "org_name": rec.org_name,
            "size": rec.size,
            "shared_with": list(rec.shared_with),
            "run_params": rec.run_params,
        }
    )
    created = Timestamp()
    created.FromDatetime(rec.created_at)
    return packages_pb2.Package(
        info=packages_pb2.PackageInfo(
            organization_id=rec.org_id,
            name=rec.name,
            version=rec.version,
            type=packages_pb2.PACKAGE_TYPE_ML_MODEL,
            files=[packages_pb2.FileInfo(name=rec.file_name, size=rec.size)],
            metadata=metadata,
        ),
        created_on=created,
        checksum=rec.sha256,
        id=rec.item_id,
    )


class PackageService(packages_grpc.UnimplementedPackageServiceBase):
    """Model versions as Viam ML-model packages."""

    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud

    @handled
    async def CreatePackage(self, stream: Stream[Any, Any]) -> None:
        org = self.cloud.caller_org(stream)
        info: packages_pb2.PackageInfo | None = None
        chunks: list[bytes] = []
        async for request in stream:
            if request.HasField("info"):
                info = request.info
            else:
                chunks.append(request.contents)
        if info is None:
            raise InvalidArgument("CreatePackage must start with the package info")
        await run_blocking(self.cloud.store.check_org, org, info.organization_id)
        if info.type not in (
            packages_pb2.PACKAGE_TYPE_ML_MODEL,
            packages_pb2.PACKAGE_TYPE_UNSPECIFIED,
        ):
            raise InvalidArgument("this registry keeps ML models only (type ML_MODEL)")
        meta = json_format.MessageToDict(info.metadata) if info.HasField("metadata") else {}
        file_name = str(meta.get("file_name") or (info.files[0].name if info.files else ""))
        if not file_name:
            raise InvalidArgument("say the model's file name in metadata.file_name")
        rec = await run_blocking(
            self.cloud.registry.create_version,
            org,
            info.name,
            str(meta.get("model_type", "")),
            file_name,
            b"".join(chunks),
            info.version,
            str(meta.get("visibility") or "private"),
            [str(x) for x in meta.get("labels") or []],
            dict(meta.get("run_params") or {}),
            str(meta.get("description") or ""),
        )
        await stream.send_message(
            packages_pb2.CreatePackageResponse(id=rec.item_id, version=rec.version)
        )

    @handled
    async def ListPackages(self, stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert request is not None
        org = self.cloud.caller_org(stream)
        records = await run_blocking(
            self.cloud.registry.list_versions,
            org,
            request.organization_id,
            request.name,
            request.version,
        )
        await stream.send_message(
            packages_pb2.ListPackagesResponse(packages=[_package(r) for r in records])
        )

    @handled
    async def GetPackage(self, stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert request is not None
        org = self.cloud.caller_org(stream)
        item_org, name = split_item_id(request.id)
        rec = await run_blocking(self.cloud.registry.resolve, org, item_org, name, request.version)
        await stream.send_message(packages_pb2.GetPackageResponse(package=_package(rec)))

    @handled
    async def DeletePackage(self, stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert request is not None
        org = self.cloud.caller_org(stream)
        item_org, name = split_item_id(request.id)
        await run_blocking(self.cloud.store.check_org, org, item_org)
        await run_blocking(self.cloud.registry.delete_version, org, name, request.version)
        await stream.send_message(packages_pb2.DeletePackageResponse())


class MLInferenceService(ml_inference_grpc.MLInferenceServiceBase):
    """``GetInference``: a registry model on a stored image, in the worker pool.

    Which version a request means is looked up once and kept for ``RESOLVE_CACHE_S``: versions
    never change once uploaded, so the cache only delays a new "newest version", a revoked
    share or a deletion by that long.
    """

    RESOLVE_CACHE_S = 2.0

    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self._resolved: dict[tuple[str, str, str, str], tuple[VersionRecord, float]] = {}

    async def _resolve(self, org: str, item_org: str, name: str, version: str) -> VersionRecord:
        key = (org, item_org, name, version)
        hit = self._resolved.get(key)
        now = time.monotonic()
        if hit is not None and hit[1] > now:
            return hit[0]
        rec = await run_blocking(self.cloud.registry.resolve, org, item_org, name, version)
        if len(self._resolved) > 10_000:
            self._resolved.clear()
        self._resolved[key] = (rec, now + self.RESOLVE_CACHE_S)
        return rec

    @handled
    async def GetInference(self, stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert request is not None
        org = self.cloud.caller_org(stream)
        await run_blocking(self.cloud.store.check_org, org, request.organization_id)
        binary_id = request.binary_data_id or request.binary_id.file_id
        if not binary_id:
            raise InvalidArgument("say which image to run on: binary_data_id")
        image_path = await run_blocking(self.cloud.store.blob_path, org, binary_id)
        item_org, name = split_item_id(request.registry_item_id)
        rec = await self._resolve(org, item_org, name, request.registry_item_version)
        result = await self.cloud.pool.run(
            Job(
                version_id=rec.id,
                model_type=rec.model_type,
                framework=rec.framework,
                model_path=str(rec.path),
                run_params=rec.run_params,
                image_path=str(image_path),
                binary_data_id=binary_id,
                model=f"{rec.item_id}@{rec.version}",
            )
        )
        annotations = data_pb2.Annotations(
            bboxes=[
                data_pb2.BoundingBox(
                    id=str(uuid.uuid4()),
                    label=label,
                    x_min_normalized=x0,
                    y_min_normalized=y0,
                    x_max_normalized=x1,
                    y_max_normalized=y1,
                    confidence=conf,
                )
                for label, (x0, y0, x1, y1), conf in result.boxes
            ],
            classifications=[
                data_pb2.Classification(id=str(uuid.uuid4()), label=label, confidence=conf)
                for label, conf in result.classifications
            ],
        )
        await stream.send_message(
            ml_inference_pb2.GetInferenceResponse(
                output_tensors=to_flat_tensors(result.outputs), annotations=annotations
            )
        )


class RegistryAdmin:
    """Our calls for what Viam's API does not define: who am I, sharing, downloading."""

    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud

    def __mapping__(self) -> dict[str, Handler]:
        s, b = struct_pb2.Struct, wrappers_pb2.BytesValue
        unary = Cardinality.UNARY_UNARY
        return {
            f"/{ADMIN_SERVICE}/WhoAmI": Handler(self.WhoAmI, unary, s, s),
            f"/{ADMIN_SERVICE}/ShareModel": Handler(self.ShareModel, unary, s, s),
            f"/{ADMIN_SERVICE}/SetVisibility": Handler(self.SetVisibility, unary, s, s),
            f"/{ADMIN_SERVICE}/DownloadModel": Handler(self.DownloadModel, unary, s, b),
            f"/{ADMIN_SERVICE}/InferenceStatus": Handler(self.InferenceStatus, unary, s, s),
        }

    async def _args(self, stream: Stream[Any, Any]) -> dict[str, Any]:
        request = await stream.recv_message()
        assert request is not None
        args: dict[str, Any] = json_format.MessageToDict(request)
        return args

    @handled
    async def WhoAmI(self, stream: Stream[Any, Any]) -> None:
        await self._args(stream)
        org = self.cloud.caller_org(stream)
        names = await run_blocking(self.cloud.store.org_names, [org])
        reply = struct_pb2.Struct()
        reply.update({"organization_id": org, "organization_name": names.get(org, "")})
        await stream.send_message(reply)

    @handled
    async def ShareModel(self, stream: Stream[Any, Any]) -> None:
        args = await self._args(stream)
        org = self.cloud.caller_org(stream)
        await run_blocking(
            self.cloud.registry.share,
            org,
            str(args.get("name", "")),
            str(args.get("with_org", "")),
            bool(args.get("remove", False)),
        )
        await stream.send_message(struct_pb2.Struct())

    @handled
    async def SetVisibility(self, stream: Stream[Any, Any]) -> None:
        args = await self._args(stream)
        org = self.cloud.caller_org(stream)
        await run_blocking(
            self.cloud.registry.set_visibility,
            org,
            str(args.get("name", "")),
            str(args.get("visibility", "")),
        )
        await stream.send_message(struct_pb2.Struct())

    @handled
    async def DownloadModel(self, stream: Stream[Any, Any]) -> None:
        args = await self._args(stream)
        org = self.cloud.caller_org(stream)
        item_org, name = split_item_id(str(args.get("id", "")))
        rec = await run_blocking(
            self.cloud.registry.resolve, org, item_org, name, str(args.get("version", ""))
        )
        data = await run_blocking(rec.path.read_bytes)
        await stream.send_message(wrappers_pb2.BytesValue(value=data))

    @handled
    async def InferenceStatus(self, stream: Stream[Any, Any]) -> None:
        """The inference workers: requests in flight; for Ray workers, the replicas of each of
        the caller's models (where each runs, what it served)."""
        await self._args(stream)
        org = self.cloud.caller_org(stream)
        stats = self.cloud.pool.stats()
        stats["models"] = {
            name: model for name, model in stats["models"].items() if name.startswith(f"{org}:")
        }
        reply = struct_pb2.Struct()
        reply.update(stats)
        await stream.send_message(reply)

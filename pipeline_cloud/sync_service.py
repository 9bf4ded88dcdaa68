"""Viam's ``DataSyncService`` on the cloud: binary uploads.

Served as Viam's ``DataClient`` sends them: ``DataCaptureUpload`` (binary sensor data, one
item per request, its annotations stored with it), client-streamed ``FileUpload`` and
``StreamingDataCaptureUpload``. The organisation is the caller's key's. Tabular uploads are
INVALID_ARGUMENT.

An upload is idempotent when it carries a key: the ``idempotency-key`` request header, or a
``StringValue`` under ``idempotency_key`` in ``UploadMetadata.method_parameters``. A repeat
returns the first upload's ``binary_data_id`` and stores nothing.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from google.protobuf import wrappers_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from grpclib.server import Stream
from viam.gen.app.datasync.v1 import data_sync_grpc, data_sync_pb2

from pipeline_cloud.context import Cloud, handled, run_blocking
from pipeline_cloud.errors import InvalidArgument
from pipeline_cloud.records import BoxRecord, UploadMeta

__all__ = ["IDEMPOTENCY_HEADER", "DataSyncService"]

IDEMPOTENCY_HEADER = "idempotency-key"
_MIME_BY_EXT = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".pcd": "pointcloud/pcd",
}
_MIME_BY_ENUM = {
    data_sync_pb2.MIME_TYPE_IMAGE_JPEG: "image/jpeg",
    data_sync_pb2.MIME_TYPE_IMAGE_PNG: "image/png",
    data_sync_pb2.MIME_TYPE_APPLICATION_PCD: "pointcloud/pcd",
    data_sync_pb2.MIME_TYPE_VIDEO_MP4: "video/mp4",
}


def _time(ts: Timestamp, present: bool) -> dt.datetime | None:
    return ts.ToDatetime() if present else None


def _idempotency_key(stream: Stream[Any, Any], md: data_sync_pb2.UploadMetadata) -> str | None:
    metadata: Any = stream.metadata
    header = metadata.get(IDEMPOTENCY_HEADER) if metadata is not None else None
    if header:
        return str(header)[:200]
    value = md.method_parameters.get("idempotency_key")
    if value is not None:
        text = wrappers_pb2.StringValue()
        if value.Unpack(text) and text.value:
            return str(text.value)[:200]
    return None


def _meta(
    md: data_sync_pb2.UploadMetadata, sensor: data_sync_pb2.SensorMetadata | None
) -> UploadMeta:
    ext = (
        md.file_extension
        if not md.file_extension or md.file_extension[0] == "."
        else "." + md.file_extension
    )
    mime = md.mime_type or (_MIME_BY_ENUM.get(sensor.mime_type, "") if sensor else "")
    mime = mime or _MIME_BY_EXT.get(ext.lower(), "application/octet-stream")
    boxes: tuple[BoxRecord, ...] = ()
    classes: tuple[tuple[str, float | None], ...] = ()
    if sensor is not None and sensor.HasField("annotations"):
        boxes = tuple(
            BoxRecord(
                id="",
                label=b.label,
                x_min=b.x_min_normalized,
                y_min=b.y_min_normalized,
                x_max=b.x_max_normalized,
                y_max=b.y_max_normalized,
                confidence=b.confidence if b.HasField("confidence") else None,
            )
            for b in sensor.annotations.bboxes
        )
        classes = tuple(
            (c.label, c.confidence if c.HasField("confidence") else None)
            for c in sensor.annotations.classifications
        )
    return UploadMeta(
        part_id=md.part_id,
        component_type=md.component_type,
        component_name=md.component_name,
        method_name=md.method_name,
        file_name=md.file_name,
        file_ext=ext,
        mime_type=mime,
        tags=tuple(md.tags),
        dataset_ids=tuple(md.dataset_ids),
        time_requested=_time(sensor.time_requested, sensor.HasField("time_requested"))
        if sensor
        else None,
        time_received=_time(sensor.time_received, sensor.HasField("time_received"))
        if sensor
        else None,
        boxes=boxes,
        classifications=classes,
    )


class DataSyncService(data_sync_grpc.UnimplementedDataSyncServiceBase):
    """``viam.app.datasync.v1.DataSyncService``: binary uploads."""

    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud

    @handled
    async def DataCaptureUpload(self, stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert request is not None
        org = self.cloud.caller_org(stream)
        if request.metadata.type == data_sync_pb2.DATA_TYPE_TABULAR_SENSOR:
            raise InvalidArgument("tabular data is not kept by this cloud; upload binary data")
        binaries = [c for c in request.sensor_contents if c.WhichOneof("data") == "binary"]
        if len(binaries) != 1 or len(request.sensor_contents) != 1:
            raise InvalidArgument(
                "a binary DataCaptureUpload carries exactly one sensor reading with binary data"
            )
        item = binaries[0]
        meta = _meta(request.metadata, item.metadata if item.HasField("metadata") else None)
        key = _idempotency_key(stream, request.metadata)
        binary_id, _ = await run_blocking(self.cloud.store.upload, org, meta, item.binary, key)
        await stream.send_message(
            data_sync_pb2.DataCaptureUploadResponse(file_id=binary_id, binary_data_id=binary_id)
        )

    @handled
    async def FileUpload(self, stream: Stream[Any, Any]) -> None:
        org = self.cloud.caller_org(stream)
        metadata: data_sync_pb2.UploadMetadata | None = None
        chunks: list[bytes] = []
        async for request in stream:
            if request.HasField("metadata"):
                metadata = request.metadata
            elif request.HasField("file_contents"):
                chunks.append(request.file_contents.data)
        if metadata is None:
            raise InvalidArgument("FileUpload must start with a message carrying the metadata")
        meta = _meta(metadata, None)
        key = _idempotency_key(stream, metadata)
        binary_id, _ = await run_blocking(self.cloud.store.upload, org, meta, b"".join(chunks), key)
        await stream.send_message(
            data_sync_pb2.FileUploadResponse(file_id=binary_id, binary_data_id=binary_id)
        )

    @handled
    async def StreamingDataCaptureUpload(self, stream: Stream[Any, Any]) -> None:
        org = self.cloud.caller_org(stream)
        header: data_sync_pb2.DataCaptureUploadMetadata | None = None
        chunks: list[bytes] = []
        async for request in stream:
            if request.HasField("metadata"):
                header = request.metadata
            else:
                chunks.append(request.data)
        if header is None:
            raise InvalidArgument("StreamingDataCaptureUpload must start with the metadata")
        meta = _meta(header.upload_metadata, header.sensor_metadata)
        key = _idempotency_key(stream, header.upload_metadata)
        binary_id, _ = await run_blocking(self.cloud.store.upload, org, meta, b"".join(chunks), key)
        await stream.send_message(
            data_sync_pb2.StreamingDataCaptureUploadResponse(
                file_id=binary_id, binary_data_id=binary_id
            )
        )

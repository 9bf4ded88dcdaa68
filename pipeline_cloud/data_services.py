"""Viam's ``DataService`` on the cloud: binary data queries, deletion, tags, boxes.

The binary-data calls of ``DataService`` as Viam's ``DataClient`` makes them: by ids, by
filter, delete, tags by ids and by filter, bounding boxes (add, update, remove, labels). The
organisation is always the caller's key's; a filter naming another organisation is
PERMISSION_DENIED and another organisation's ids are NOT_FOUND. Tabular data, datasets, data
pipelines and the rest of ``DataService`` answer UNIMPLEMENTED. Uploads:
:mod:`pipeline_cloud.sync_service`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from grpclib.server import Stream
from viam.gen.app.data.v1 import data_grpc, data_pb2

from pipeline_cloud.context import Cloud, handled, run_blocking
from pipeline_cloud.errors import InvalidArgument
from pipeline_cloud.records import BinaryFilter, BinaryRecord, BoxRecord

__all__ = ["DataService", "binary_proto"]


def _timestamp(value: dt.datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def binary_proto(rec: BinaryRecord, include_binary: bool) -> data_pb2.BinaryData:
    """A stored item as Viam's ``BinaryData`` (with its bytes when asked)."""
    m = rec.meta
    annotations = data_pb2.Annotations(
        bboxes=[
            data_pb2.BoundingBox(
                id=b.id,
                label=b.label,
                x_min_normalized=b.x_min,
                y_min_normalized=b.y_min,
                x_max_normalized=b.x_max,
                y_max_normalized=b.y_max,
                **({"confidence": b.confidence} if b.confidence is not None else {}),
            )
            for b in rec.boxes
        ],
        classifications=[
            data_pb2.Classification(
                id=cid, label=label, **({"confidence": conf} if conf is not None else {})
            )
            for cid, label, conf in rec.classifications
        ],
    )
    metadata = data_pb2.BinaryMetadata(
        id=rec.id,
        binary_data_id=rec.id,
        capture_metadata=data_pb2.CaptureMetadata(
            organization_id=rec.org_id,
            part_id=m.part_id,
            component_type=m.component_type,
            component_name=m.component_name,
            method_name=m.method_name,
            tags=list(m.tags),
            mime_type=m.mime_type,
        ),
        time_requested=_timestamp(m.time_requested or rec.uploaded_at),
        time_received=_timestamp(m.time_received or rec.uploaded_at),
        file_name=m.file_name,
        file_ext=m.file_ext,
        annotations=annotations,
        dataset_ids=list(m.dataset_ids),
        file_size_bytes=rec.size,
    )
    data = rec.blob_path.read_bytes() if include_binary else b""
    return data_pb2.BinaryData(binary=data, metadata=metadata)


def _ids(request: Any) -> list[str]:
    ids = list(request.binary_data_ids) or [b.file_id for b in request.binary_ids]
    if not ids:
        raise InvalidArgument("give at least one binary data id")
    return ids


class DataService(data_grpc.UnimplementedDataServiceBase):
    """``viam.app.data.v1.DataService``: binary data queries, deletion, tags, boxes."""

    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud

    def _filter(self, org: str, flt: data_pb2.Filter) -> BinaryFilter:
        for requested in flt.organization_ids:
            self.cloud.store.check_org(org, requested)
        tagged: bool | None = None
        tags: tuple[str, ...] = ()
        if flt.HasField("tags_filter"):
            kind = flt.tags_filter.type
            if kind == data_pb2.TAGS_FILTER_TYPE_TAGGED:
                tagged = True
            elif kind == data_pb2.TAGS_FILTER_TYPE_UNTAGGED:
                tagged = False
            else:
                tags = tuple(flt.tags_filter.tags)
        interval = flt.interval if flt.HasField("interval") else None
        return BinaryFilter(
            component_name=flt.component_name,
            component_type=flt.component_type,
            method=flt.method,
            part_id=flt.part_id,
            mime_types=tuple(flt.mime_type),
            start=interval.start.ToDatetime() if interval and interval.HasField("start") else None,
            end=interval.end.ToDatetime() if interval and interval.HasField("end") else None,
            tags=tags,
            tagged=tagged,
            bbox_labels=tuple(flt.bbox_labels),
            dataset_id=flt.dataset_id,
        )

    @handled
    async def BinaryDataByIDs(self, stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert request is not None
        org = self.cloud.caller_org(stream)
        records = await run_blocking(self.cloud.store.by_ids, org, _ids(request))
        data = await run_blocking(
            lambda: [binary_proto(r, request.include_binary) for r in records]
        )
        await stream.send_message(data_pb2.BinaryDataByIDsResponse(data=data, count=len(data)))

    @handled
    async def BinaryDataByFilter(self, stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert request is not None
        org = self.cloud.caller_org(stream)
        dr = request.data_request
        flt = self._filter(org, dr.filter)
        newest_first = dr.sort_order == data_pb2.ORDER_DESCENDING
        records, count, last = await run_blocking(
            self.cloud.store.by_filter, org, flt, dr.limit or 50, dr.last, newest_first
        )
        if request.count_only:
            await stream.send_message(data_pb2.BinaryDataByFilterResponse(count=count))
            return
        data = await run_blocking(
            lambda: [binary_proto(r, request.include_binary) for r in records]
        )
        await stream.send_message(
            data_pb2.BinaryDataByFilterResponse(
                data=data, count=count, last=last, total_size_bytes=sum(r.size for r in records)
            )
        )

    @handled
    async def DeleteBinaryDataByIDs(self, stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert request is not None
        org = self.cloud.caller_org(stream)
        n = await run_blocking(self.cloud.store.delete, org, _ids(request))
        await stream.send_message(data_pb2.DeleteBinaryDataByIDsResponse(deleted_count=n))

    @handled
    async def DeleteBinaryDataByFilter(self, stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert request is not None
        org = self.cloud.caller_org(stream)
        if not request.filter.organization_ids:
            raise InvalidArgument("name the organisation in filter.organization_ids to delete")
        flt = self._filter(org, request.filter)
        deleted = 0
        while True:
            records, _, _ = await run_blocking(self.cloud.store.by_filter, org, flt, 500)
            if not records:
                break
            deleted += await run_blocking(self.cloud.store.delete, org, [r.id for r in records])
        await stream.send_message(data_pb2.DeleteBinaryDataByFilterResponse(deleted_count=deleted))

    @handled
    async def AddTagsToBinaryDataByIDs(self, stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert request is not None
        org = self.cloud.caller_org(stream)
        await run_blocking(self.cloud.store.add_tags, org, _ids(request), list(request.tags))
        await stream.send_message(data_pb2.AddTagsToBinaryDataByIDsResponse())

    async def _all_ids(self, org: str, flt: BinaryFilter) -> list[str]:
        ids: list[str] = []
        last = ""
        while True:
            page, _, last = await run_blocking(self.cloud.store.by_filter, org, flt, 1000, last)
            ids.extend(r.id for r in page)
            if not page:
                return ids

    @handled
    async def AddTagsToBinaryDataByFilter(self, stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert request is not None
        org = self.cloud.caller_org(stream)
        ids = await self._all_ids(org, self._filter(org, request.filter))
        if ids:
            await run_blocking(self.cloud.store.add_tags, org, ids, list(request.tags))
        await stream.send_message(data_pb2.AddTagsToBinaryDataByFilterResponse())

    @handled
    async def RemoveTagsFromBinaryDataByFilter(self, stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert request is not None
        org = self.cloud.caller_org(stream)
        ids = await self._all_ids(org, self._filter(org, request.filter))
        n = 0
        if ids:
            n = await run_blocking(self.cloud.store.remove_tags, org, ids, list(request.tags))
        await stream.send_message(
            data_pb2.RemoveTagsFromBinaryDataByFilterResponse(deleted_count=n)
        )

    @handled
    async def UpdateBoundingBox(self, stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert request is not None
        org = self.cloud.caller_org(stream)
        binary_id = request.binary_data_id or request.binary_id.file_id
        changes = {
            name: getattr(request, field)
            for name, field in (
                ("label", "label"),
                ("x_min", "x_min_normalized"),
                ("y_min", "y_min_normalized"),
                ("x_max", "x_max_normalized"),
                ("y_max", "y_max_normalized"),
                ("confidence", "confidence"),
            )
            if request.HasField(field)
        }
        await run_blocking(self.cloud.store.update_box, org, binary_id, request.bbox_id, changes)
        await stream.send_message(data_pb2.UpdateBoundingBoxResponse())

    @handled
    async def RemoveTagsFromBinaryDataByIDs(self, stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert request is not None
        org = self.cloud.caller_org(stream)
        n = await run_blocking(self.cloud.store.remove_tags, org, _ids(request), list(request.tags))
        await stream.send_message(data_pb2.RemoveTagsFromBinaryDataByIDsResponse(deleted_count=n))

    @handled
    async def TagsByFilter(self, stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert request is not None
        org = self.cloud.caller_org(stream)
        tags = await run_blocking(self.cloud.store.tags, org, self._filter(org, request.filter))
        await stream.send_message(data_pb2.TagsByFilterResponse(tags=tags))

    @handled
    async def BoundingBoxLabelsByFilter(self, stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert request is not None
        org = self.cloud.caller_org(stream)
        labels = await run_blocking(
            self.cloud.store.bbox_labels, org, self._filter(org, request.filter)
        )
        await stream.send_message(data_pb2.BoundingBoxLabelsByFilterResponse(labels=labels))

    @handled
    async def AddBoundingBoxToImageByID(self, stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert request is not None
        org = self.cloud.caller_org(stream)
        binary_id = request.binary_data_id or request.binary_id.file_id
        box = BoxRecord(
            id="",
            label=request.label,
            x_min=request.x_min_normalized,
            y_min=request.y_min_normalized,
            x_max=request.x_max_normalized,
            y_max=request.y_max_normalized,
            confidence=request.confidence if request.HasField("confidence") else None,
        )
        bbox_id = await run_blocking(self.cloud.store.add_box, org, binary_id, box)
        await stream.send_message(data_pb2.AddBoundingBoxToImageByIDResponse(bbox_id=bbox_id))

    @handled
    async def RemoveBoundingBoxFromImageByID(self, stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert request is not None
        org = self.cloud.caller_org(stream)
        binary_id = request.binary_data_id or request.binary_id.file_id
        await run_blocking(self.cloud.store.remove_box, org, binary_id, request.bbox_id)
        await stream.send_message(data_pb2.RemoveBoundingBoxFromImageByIDResponse())

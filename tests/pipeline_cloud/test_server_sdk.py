"""The cloud server (a subprocess, TLS, SQLite and PostgreSQL) with Viam's own DataClient."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from grpclib import GRPCError, Status
from viam.app.viam_client import ViamClient
from viam.proto.app.data import BinaryData, CaptureInterval, Filter, TagsFilter, TagsFilterType
from viam.rpc.dial import DialOptions

from tests.pipeline.rpc.conftest import run_sdk

pytestmark = pytest.mark.integration


async def _connect(cloud: Any, key_id: str, key: str) -> ViamClient:
    return await ViamClient.create_from_dial_options(
        DialOptions.with_api_key(key, key_id), app_url=cloud.address
    )


def test_data_client_uploads_queries_tags_boxes_and_deletes(cloud):
    org_id, _, key_id, key = cloud.org_with_key()
    t0 = dt.datetime(2025, 4, 14, 16, 0, tzinfo=dt.timezone.utc)

    async def body() -> None:
        client = await _connect(cloud, key_id, key)
        try:
            data = client.data_client
            first = await data.binary_data_capture_upload(
                binary_data=b"\xff\xd8jpeg-1",
                part_id="part-1",
                component_type="camera",
                component_name="front",
                method_name="GetImages",
                file_extension=".jpg",
                tags=["door"],
                data_request_times=(t0, t0 + dt.timedelta(seconds=1)),
            )
            second = await data.file_upload(
                part_id="part-1",
                data=b"\x89PNG-2",
                component_name="back",
                file_name="snap",
                file_extension=".png",
                tags=["yard"],
            )
            assert first != second
            (item,) = await data.binary_data_by_ids([first])
            assert isinstance(item, BinaryData)
            assert item.binary == b"\xff\xd8jpeg-1"
            meta = item.metadata
            assert meta.binary_data_id == first
            assert meta.capture_metadata.organization_id == org_id
            assert meta.capture_metadata.component_name == "front"
            assert meta.capture_metadata.mime_type == "image/jpeg"
            assert list(meta.capture_metadata.tags) == ["door"]
            assert meta.time_requested.ToDatetime(dt.timezone.utc) == t0
            (png,) = await data.binary_data_by_ids([second], include_binary_data=False)
            assert png.binary == b""
            assert (png.metadata.file_name, png.metadata.file_ext) == ("snap", ".png")

            by_tag = Filter(
                tags_filter=TagsFilter(
                    type=TagsFilterType.TAGS_FILTER_TYPE_MATCH_BY_OR, tags=["yard"]
                )
            )
            found, count, _ = await data.binary_data_by_filter(by_tag, include_binary_data=False)
            assert [d.metadata.binary_data_id for d in found] == [second]
            assert count == 1
            by_mime = Filter(mime_type=["image/jpeg"], organization_ids=[org_id])
            found, _, _ = await data.binary_data_by_filter(by_mime, include_binary_data=False)
            assert [d.metadata.binary_data_id for d in found] == [first]
            by_component = Filter(component_name="back")
            found, _, _ = await data.binary_data_by_filter(by_component)
            assert [d.binary for d in found] == [b"\x89PNG-2"]
            interval = Filter(
                interval=CaptureInterval(start=_ts(t0), end=_ts(t0 + dt.timedelta(minutes=1)))
            )
            found, _, _ = await data.binary_data_by_filter(interval, include_binary_data=False)
            assert [d.metadata.binary_data_id for d in found] == [first]
            page, count, last = await data.binary_data_by_filter(limit=1, include_binary_data=False)
            assert count == 2
            page2, _, _ = await data.binary_data_by_filter(
                limit=1, last=last, include_binary_data=False
            )
            assert [page[0].metadata.binary_data_id, page2[0].metadata.binary_data_id] == [
                first,
                second,
            ]

            await data.add_tags_to_binary_data_by_ids(["reviewed"], [first, second])
            assert sorted(await data.tags_by_filter()) == ["door", "reviewed", "yard"]
            assert await data.remove_tags_from_binary_data_by_ids(["reviewed"], [second]) == 1
            bbox = await data.add_bounding_box_to_image_by_id(
                first, "person", 0.1, 0.2, 0.5, 0.9, 0.8
            )
            (item,) = await data.binary_data_by_ids([first], include_binary_data=False)
            (box,) = item.metadata.annotations.bboxes
            assert (box.id, box.label, round(box.confidence, 3)) == (bbox, "person", 0.8)
            assert await data.bounding_box_labels_by_filter() == ["person"]
            with pytest.raises(GRPCError) as bad:
                await data.add_bounding_box_to_image_by_id(first, "person", 0.1, 0.2, 1.5, 0.9)
            assert bad.value.status == Status.INVALID_ARGUMENT
            await data.update_bounding_box(first, bbox, "face", 0.2, 0.2, 0.4, 0.4, 0.7)
            (item,) = await data.binary_data_by_ids([first], include_binary_data=False)
            (box,) = item.metadata.annotations.bboxes
            assert (box.label, round(box.x_min_normalized, 3), round(box.confidence, 3)) == (
                "face",
                0.2,
                0.7,
            )
            await data.add_tags_to_binary_data_by_filter(["all"], Filter(component_name="back"))
            assert await data.remove_tags_from_binary_data_by_filter(["all"]) == 1
            await data.remove_bounding_box_from_image_by_id(bbox, first)
            assert await data.delete_binary_data_by_ids([first]) == 1
            with pytest.raises(GRPCError) as gone:
                await data.binary_data_by_ids([first])
            assert gone.value.status == Status.NOT_FOUND
        finally:
            client.close()

    run_sdk(body())


def _ts(when: dt.datetime) -> Any:
    from google.protobuf.timestamp_pb2 import Timestamp

    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


def test_a_key_sees_only_its_own_organisation(cloud):
    org_a, _, key_id_a, key_a = cloud.org_with_key("a")
    _org_b, _, key_id_b, key_b = cloud.org_with_key("b")

    async def body() -> None:
        a = await _connect(cloud, key_id_a, key_a)
        b = await _connect(cloud, key_id_b, key_b)
        try:
            mine = await a.data_client.file_upload(
                part_id="p", data=b"secret-a", file_extension=".bin"
            )
            with pytest.raises(GRPCError) as err:
                await b.data_client.binary_data_by_ids([mine])
            assert err.value.status == Status.NOT_FOUND
            found, count, _ = await b.data_client.binary_data_by_filter()
            assert (found, count) == ([], 0)
            with pytest.raises(GRPCError) as err:
                await b.data_client.binary_data_by_filter(Filter(organization_ids=[org_a]))
            assert err.value.status == Status.PERMISSION_DENIED
            assert await b.data_client.delete_binary_data_by_ids([mine]) == 0
            with pytest.raises(GRPCError) as err:
                await b.data_client.add_tags_to_binary_data_by_ids(["x"], [mine])
            assert err.value.status == Status.NOT_FOUND
            (still,) = await a.data_client.binary_data_by_ids([mine])
            assert still.binary == b"secret-a"
            assert list(still.metadata.capture_metadata.tags) == []
        finally:
            a.close()
            b.close()

    run_sdk(body())


def test_bad_keys_are_refused(cloud):
    _, _, key_id, key = cloud.org_with_key()

    async def body() -> None:
        with pytest.raises(GRPCError) as err:
            await _connect(cloud, key_id, key + "x")
        assert err.value.status == Status.UNAUTHENTICATED

    run_sdk(body())


def test_repeated_upload_with_the_same_key_makes_one_copy(cloud):
    from google.protobuf import any_pb2, wrappers_pb2

    _, _, key_id, key = cloud.org_with_key()
    marker = any_pb2.Any()
    marker.Pack(wrappers_pb2.StringValue(value="frame-42"))

    async def body() -> None:
        client = await _connect(cloud, key_id, key)
        try:
            ids = [
                await client.data_client.binary_data_capture_upload(
                    binary_data=b"same",
                    part_id="p",
                    component_type="camera",
                    component_name="c",
                    method_name="GetImages",
                    file_extension=".jpg",
                    method_parameters={"idempotency_key": marker},
                )
                for _ in range(3)
            ]
            assert len(set(ids)) == 1
            _, count, _ = await client.data_client.binary_data_by_filter(count_only=True)
            assert count == 1
        finally:
            client.close()

    run_sdk(body())

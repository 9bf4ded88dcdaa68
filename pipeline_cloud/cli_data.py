"""``pipeline data``: upload files, list, export and delete uploaded data.

::

    pipeline data upload FILE... [--org ORG] [--tags a,b] [--component-name NAME]
    pipeline data ls [--org ORG] [--tags a,b] [--mime-type T] [--component-name N] [--json]
    pipeline data export --org ORG DIR       # files + metadata.jsonl (tags, annotations)
    pipeline data rm ID...

Uploads go through Viam's ``DataSyncService.FileUpload`` with an idempotency key, queries
through ``DataService.BinaryDataByFilter``: the calls Viam's ``DataClient`` makes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import mimetypes
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline_cloud.cli import add_client_options, fail, guarded, run_client, usage

if TYPE_CHECKING:
    from pipeline_cloud.cli import Subparsers

__all__ = ["check_org", "register"]


async def check_org(client: Any, org: str | None) -> dict[str, Any]:
    """The key's organisation; an error if ``org`` (name or id) is another one."""
    who: dict[str, Any] = await client.admin("WhoAmI")
    if org and org not in (who["organization_id"], who["organization_name"]):
        raise ValueError(
            f"this API key belongs to organization {who['organization_name']!r} "
            f"({who['organization_id']}), not {org!r}"
        )
    return who


def _tags(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an ISO time like 2025-04-14T16:38:25") from exc


@guarded
def _cmd_upload(args: argparse.Namespace) -> int:
    from viam.gen.app.datasync.v1 import data_sync_grpc, data_sync_pb2

    files = [Path(f) for f in args.files]
    for f in files:
        if not f.is_file():
            return fail(f"no such file: {f}")

    async def body(client: Any) -> list[str]:
        await check_org(client, args.org)
        stub = data_sync_grpc.DataSyncServiceStub(client.channel)
        ids = []
        for f in files:
            meta = data_sync_pb2.UploadMetadata(
                part_id=args.part_id,
                component_type=args.component_type,
                component_name=args.component_name,
                file_name=f.stem,
                file_extension=f.suffix,
                type=data_sync_pb2.DATA_TYPE_FILE,
                tags=_tags(args.tags),
                mime_type=mimetypes.guess_type(f.name)[0] or "",
            )
            data = f.read_bytes()

            async def send(md: dict[str, str], meta: Any = meta, data: bytes = data) -> Any:
                async with stub.FileUpload.open(timeout=client.timeout_s, metadata=md) as s:
                    await s.send_message(data_sync_pb2.FileUploadRequest(metadata=meta))
                    await s.send_message(
                        data_sync_pb2.FileUploadRequest(
                            file_contents=data_sync_pb2.FileData(data=data)
                        ),
                        end=True,
                    )
                    return await s.recv_message()

            reply = await client.call(send, **{"idempotency-key": str(uuid.uuid4())})
            ids.append(reply.binary_data_id)
            print(f"{reply.binary_data_id}  {f}", flush=True)
        return ids

    run_client(args, body)
    return 0


def _filter(args: argparse.Namespace, org_id: str) -> Any:
    from google.protobuf.timestamp_pb2 import Timestamp
    from viam.gen.app.data.v1 import data_pb2

    flt = data_pb2.Filter(
        organization_ids=[org_id],
        component_name=args.component_name or "",
        mime_type=[args.mime_type] if args.mime_type else [],
    )
    tags = _tags(args.tags)
    if tags:
        flt.tags_filter.CopyFrom(
            data_pb2.TagsFilter(type=data_pb2.TAGS_FILTER_TYPE_MATCH_BY_OR, tags=tags)
        )
    start, end = _time(args.start), _time(args.end)
    if start or end:
        interval = data_pb2.CaptureInterval()
        if start:
            ts = Timestamp()
            ts.FromDatetime(start)
            interval.start.CopyFrom(ts)
        if end:
            ts = Timestamp()
            ts.FromDatetime(end)
            interval.end.CopyFrom(ts)
        flt.interval.CopyFrom(interval)
    return flt


async def _pages(client: Any, flt: Any, include_binary: bool, page: int = 50) -> Any:
    from viam.gen.app.data.v1 import data_grpc, data_pb2

    stub = data_grpc.DataServiceStub(client.channel)
    last = ""
    while True:
        request = data_pb2.BinaryDataByFilterRequest(
            data_request=data_pb2.DataRequest(filter=flt, limit=page, last=last),
            include_binary=include_binary,
        )
        reply = await client.call(
            lambda md, r=request: stub.BinaryDataByFilter(r, timeout=client.timeout_s, metadata=md)
        )
        if not reply.data:
            return
        for item in reply.data:
            yield item
        last = reply.last


def _item_json(item: Any) -> dict[str, Any]:
    m = item.metadata
    c = m.capture_metadata
    return {
        "binary_data_id": m.binary_data_id,
        "organization_id": c.organization_id,
        "time_requested": m.time_requested.ToDatetime().isoformat() + "Z",
        "part_id": c.part_id,
        "component_type": c.component_type,
        "component_name": c.component_name,
        "method_name": c.method_name,
        "mime_type": c.mime_type,
        "file_name": m.file_name,
        "file_ext": m.file_ext,
        "size": m.file_size_bytes,
        "tags": list(c.tags),
        "bboxes": [
            {
                "id": b.id,
                "label": b.label,
                "xyxy": [
                    b.x_min_normalized,
                    b.y_min_normalized,
                    b.x_max_normalized,
                    b.y_max_normalized,
                ],
                "confidence": b.confidence if b.HasField("confidence") else None,
            }
            for b in m.annotations.bboxes
        ],
        "classifications": [
            {"label": x.label, "confidence": x.confidence if x.HasField("confidence") else None}
            for x in m.annotations.classifications
        ],
    }


@guarded
def _cmd_ls(args: argparse.Namespace) -> int:
    async def body(client: Any) -> int:
        who = await check_org(client, args.org)
        n = 0
        async for item in _pages(client, _filter(args, who["organization_id"]), False):
            n += 1
            row = _item_json(item)
            if args.json:
                print(json.dumps(row))
            else:
                name = row["file_name"] + row["file_ext"]
                print(
                    f"{row['binary_data_id']}  {row['time_requested'][:19]}  "
                    f"{row['mime_type'] or '-':<12} {row['size']:>9}  "
                    f"{row['component_name'] or '-'}  {name or '-'}  "
                    f"tags={','.join(row['tags']) or '-'}  boxes={len(row['bboxes'])}"
                )
            if args.limit and n >= args.limit:
                break
        return n

    run_client(args, body)
    return 0


@guarded
def _cmd_export(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)

    async def body(client: Any) -> int:
        who = await check_org(client, args.org)
        n = 0
        with (folder / "metadata.jsonl").open("w") as index:
            async for item in _pages(client, _filter(args, who["organization_id"]), True, 20):
                row = _item_json(item)
                ext = row["file_ext"] or mimetypes.guess_extension(row["mime_type"] or "") or ""
                path = folder / f"{row['binary_data_id']}{ext}"
                path.write_bytes(item.binary)
                row["path"] = path.name
                index.write(json.dumps(row) + "\n")
                n += 1
        return n

    n = run_client(args, body)
    print(f"exported {n} item(s) to {folder} (index: {folder / 'metadata.jsonl'})")
    return 0


@guarded
def _cmd_rm(args: argparse.Namespace) -> int:
    from viam.gen.app.data.v1 import data_grpc, data_pb2

    async def body(client: Any) -> int:
        stub = data_grpc.DataServiceStub(client.channel)
        request = data_pb2.DeleteBinaryDataByIDsRequest(binary_data_ids=list(args.ids))
        reply = await client.call(
            lambda md: stub.DeleteBinaryDataByIDs(request, timeout=client.timeout_s, metadata=md)
        )
        return int(reply.deleted_count)

    print(f"deleted {run_client(args, body)} item(s)")
    return 0


def _add_filter(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tags", help="only items with any of these tags (a,b)")
    p.add_argument("--mime-type", help="only this MIME type, e.g. image/jpeg")
    p.add_argument("--component-name", help="only data captured by this component")
    p.add_argument("--start", help="captured at or after (ISO time, UTC)")
    p.add_argument("--end", help="captured at or before (ISO time, UTC)")


def register(subparsers: Subparsers) -> None:
    data = subparsers.add_parser("data", help="upload, list, export uploaded data (cloud)")
    data.set_defaults(func=usage(data))
    sub = data.add_subparsers(dest="data_command", metavar="{upload,ls,export,rm}")

    p = sub.add_parser("upload", help="upload files; prints each one's binary data id")
    p.add_argument("files", nargs="+", metavar="FILE", help="files to upload")
    p.add_argument("--org", help="organisation (name or id) the key must belong to")
    p.add_argument("--tags", help="tags for every file: a,b")
    p.add_argument("--part-id", default="", help="machine part the data comes from")
    p.add_argument("--component-type", default="", help="e.g. camera")
    p.add_argument("--component-name", default="", help="e.g. front-door")
    add_client_options(p)
    p.set_defaults(func=_cmd_upload)

    p = sub.add_parser("ls", help="list uploaded data, oldest first")
    p.add_argument("--org", help="organisation (name or id) the key must belong to")
    _add_filter(p)
    p.add_argument("--limit", type=int, default=0, help="at most this many (default all)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    add_client_options(p)
    p.set_defaults(func=_cmd_ls)

    p = sub.add_parser("export", help="download data and its metadata into a folder")
    p.add_argument("dir", metavar="DIR", help="folder to write the data and metadata into")
    p.add_argument("--org", help="organisation (name or id) the key must belong to")
    _add_filter(p)
    add_client_options(p)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("rm", help="delete uploaded data by id")
    p.add_argument("ids", nargs="+", metavar="ID", help="binary data ids (from upload or ls)")
    add_client_options(p)
    p.set_defaults(func=_cmd_rm)

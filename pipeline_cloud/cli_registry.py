"""``pipeline registry``: upload models, list, share, download, convert for the edge.

::

    pipeline registry upload MODEL_FILE --org ORG --name NAME [--version V]
        --type object_detection|classification [--labels labels.txt]
        [--visibility private|public] [--decoder KIND] [--params JSON]
    pipeline registry ls [--org ORG] [--name NAME] [--json]
    pipeline registry share NAME --with ORG [--remove]
    pipeline registry visibility NAME private|public
    pipeline registry download ORG:NAME[@VERSION] [-o FILE]
    pipeline registry convert SAVED_MODEL --to onnx|tflite [-o FILE]

Uploads are Viam ``PackageService.CreatePackage`` calls (type ML_MODEL); the server checks
that the model loads. ``convert`` runs here, without a server.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline_cloud.cli import add_client_options, fail, guarded, run_client, usage
from pipeline_cloud.cli_data import check_org

if TYPE_CHECKING:
    from pipeline_cloud.cli import Subparsers

__all__ = ["parse_model_ref", "register"]

_CHUNK = 1 << 20


def parse_model_ref(ref: str) -> tuple[str, str, str]:
    """``org:name@version`` (version optional) -> ``(org, name, version)``."""
    item, _, version = ref.partition("@")
    org, sep, name = item.partition(":")
    if not sep or not org or not name:
        raise ValueError(f"{ref!r} is not ORG:NAME[@VERSION]")
    return org, name, version


@guarded
def _cmd_upload(args: argparse.Namespace) -> int:
    from google.protobuf import struct_pb2
    from viam.gen.app.packages.v1 import packages_grpc, packages_pb2

    path = Path(args.model_file)
    if not path.exists():
        return fail(f"no such model file: {path}")
    if path.is_dir():
        return fail(f"{path} is a folder: archive a SavedModel as .zip or .tar.gz first")
    labels: list[str] = []
    if args.labels:
        from pipeline_nodes.inference.backends.base import read_labels

        labels = list(read_labels(Path(args.labels)))
    parsed: object = json.loads(args.params) if args.params else {}
    if not isinstance(parsed, dict):
        return fail("--params must be a JSON object of detector/classifier node params")
    run_params: dict[str, Any] = dict(parsed)
    if args.decoder:
        run_params["decoder"] = args.decoder
    data = path.read_bytes()

    async def body(client: Any) -> Any:
        who = await check_org(client, args.org)
        metadata = struct_pb2.Struct()
        metadata.update(
            {
                "model_type": args.type,
                "file_name": path.name,
                "visibility": args.visibility,
                "labels": labels,
                "run_params": run_params,
                "description": args.description,
            }
        )
        info = packages_pb2.PackageInfo(
            organization_id=who["organization_id"],
            name=args.name,
            version=args.version or "",
            type=packages_pb2.PACKAGE_TYPE_ML_MODEL,
            files=[packages_pb2.FileInfo(name=path.name, size=len(data))],
            metadata=metadata,
        )
        stub = packages_grpc.PackageServiceStub(client.channel)

        async def send(md: dict[str, str]) -> Any:
            async with stub.CreatePackage.open(timeout=client.timeout_s, metadata=md) as s:
                await s.send_message(packages_pb2.CreatePackageRequest(info=info))
                for start in range(0, len(data), _CHUNK):
                    await s.send_message(
                        packages_pb2.CreatePackageRequest(contents=data[start : start + _CHUNK])
                    )
                await s.end()
                return await s.recv_message()

        return await client.call(send)

    reply = run_client(args, body)
    print(f"registry item id: {reply.id}")
    print(f"version:          {reply.version}")
    return 0


def _ints(value: Any) -> Any:
    """Integral floats back to ints (a Struct keeps every number as a double)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_ints(v) for v in value]
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    return value


def _version_row(p: Any) -> dict[str, Any]:
    from google.protobuf import json_format

    meta = json_format.MessageToDict(p.info.metadata)
    # A Struct holds numbers as floats: tensor shapes back to ints.
    for key in ("inputs", "outputs"):
        for tensor in meta.get(key, []):
            tensor["shape"] = [int(d) for d in tensor.get("shape", [])]
    return {
        "id": p.id,
        "organization_id": p.info.organization_id,
        "organization_name": meta.get("org_name", ""),
        "name": p.info.name,
        "version": p.info.version,
        "model_type": meta.get("model_type"),
        "framework": meta.get("model_framework"),
        "visibility": meta.get("visibility"),
        "file_name": meta.get("file_name"),
        "size": int(meta.get("size", 0)),
        "labels": meta.get("labels", []),
        "inputs": meta.get("inputs", []),
        "outputs": meta.get("outputs", []),
        "shared_with": meta.get("shared_with", []),
        "run_params": _ints(meta.get("run_params", {})),
        "sha256": p.checksum,
        "created": p.created_on.ToDatetime().isoformat() + "Z",
    }


async def list_versions(
    client: Any, org: str = "", name: str = "", version: str = ""
) -> list[dict[str, Any]]:
    """Model versions visible to the client's key, as JSON rows."""
    from viam.gen.app.packages.v1 import packages_grpc, packages_pb2

    stub = packages_grpc.PackageServiceStub(client.channel)
    request = packages_pb2.ListPackagesRequest(
        organization_id=org, type=packages_pb2.PACKAGE_TYPE_ML_MODEL
    )
    if name:
        request.name = name
    if version:
        request.version = version
    reply = await client.call(
        lambda md: stub.ListPackages(request, timeout=client.timeout_s, metadata=md)
    )
    return [_version_row(p) for p in reply.packages]


@guarded
def _cmd_ls(args: argparse.Namespace) -> int:
    rows = run_client(args, lambda c: list_versions(c, args.org or "", args.name or ""))
    for row in rows:
        if args.json:
            print(json.dumps(row))
            continue
        shapes = "; ".join(f"{t['name']} {t['dtype']} {t['shape']}" for t in row["inputs"])
        print(
            f"{row['organization_name'] or row['organization_id']}:{row['name']}@{row['version']}"
            f"  {row['model_type']}  {row['framework']}  {row['visibility']}"
            f"  {row['size']} B  in: {shapes}"
        )
    if not rows and not args.json:
        print("no models visible to this key", file=sys.stderr)
    return 0


@guarded
def _cmd_share(args: argparse.Namespace) -> int:
    run_client(
        args,
        lambda c: c.admin("ShareModel", name=args.name, with_org=args.with_org, remove=args.remove),
    )
    verb = "no longer shared with" if args.remove else "shared with"
    print(f"model {args.name!r} {verb} {args.with_org}")
    return 0


@guarded
def _cmd_visibility(args: argparse.Namespace) -> int:
    run_client(args, lambda c: c.admin("SetVisibility", name=args.name, visibility=args.visibility))
    print(f"model {args.name!r} is {args.visibility}")
    return 0


@guarded
def _cmd_download(args: argparse.Namespace) -> int:
    org, name, version = parse_model_ref(args.ref)

    async def body(client: Any) -> tuple[dict[str, Any], bytes]:
        rows = await list_versions(client, org, name, version)
        if not rows:
            raise LookupError(f"no model {args.ref} visible to this key")
        row = rows[-1]
        data = await client.download_model(f"{row['organization_id']}:{name}", row["version"])
        return row, data

    row, data = run_client(args, body)
    out = Path(args.output or row["file_name"])
    out.write_bytes(data)
    print(f"wrote {out} ({len(data)} bytes, version {row['version']})")
    return 0


@guarded
def _cmd_convert(args: argparse.Namespace) -> int:
    from pipeline_cloud.convert import convert_saved_model

    out = convert_saved_model(
        Path(args.saved_model), args.to, Path(args.output) if args.output else None
    )
    print(f"wrote {out}")
    return 0


def register(subparsers: Subparsers) -> None:
    reg = subparsers.add_parser("registry", help="the cloud's model registry")
    reg.set_defaults(func=usage(reg))
    sub = reg.add_subparsers(
        dest="registry_command", metavar="{upload,ls,share,visibility,download,convert}"
    )

    p = sub.add_parser("upload", help="upload a model version (checked: it must load)")
    p.add_argument(
        "model_file",
        metavar="MODEL_FILE",
        help=".onnx, .tflite, or a SavedModel folder as .zip / .tar.gz",
    )
    p.add_argument("--org", help="organisation (name or id) the key must belong to")
    p.add_argument("--name", required=True, help="model name")
    p.add_argument("--version", help="default: the UTC time, like 2025-04-14T16-38-25")
    p.add_argument("--type", required=True, choices=["object_detection", "classification"])
    p.add_argument("--labels", help="label file, one class name per line")
    p.add_argument("--visibility", choices=["private", "public"], default="private")
    p.add_argument(
        "--decoder",
        help="detection decoder of a non-catalog model: ssd, blazeface, centerface, yolo",
    )
    p.add_argument(
        "--params",
        help="JSON object of detector/classifier node params "
        '(e.g. {"input_size": [320, 320], "mean": 127.5})',
    )
    p.add_argument("--description", default="")
    add_client_options(p)
    p.set_defaults(func=_cmd_upload)

    p = sub.add_parser("ls", help="list the model versions this key may use")
    p.add_argument("--org", help="only this organisation's models (name or id)")
    p.add_argument("--name", help="only this model")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    add_client_options(p)
    p.set_defaults(func=_cmd_ls)

    p = sub.add_parser("share", help="let another organisation see and run a model")
    p.add_argument("name", help="the model's name")
    p.add_argument("--with", dest="with_org", required=True, help="organisation name or id")
    p.add_argument("--remove", action="store_true", help="stop sharing")
    add_client_options(p)
    p.set_defaults(func=_cmd_share)

    p = sub.add_parser("visibility", help="make a model private or public")
    p.add_argument("name", help="the model's name")
    p.add_argument("visibility", choices=["private", "public"], help="private or public")
    add_client_options(p)
    p.set_defaults(func=_cmd_visibility)

    p = sub.add_parser("download", help="download a model version's file")
    p.add_argument(
        "ref", metavar="ORG:NAME[@VERSION]", help="the model (latest version by default)"
    )
    p.add_argument("-o", "--output", help="file to write (default: the uploaded file name)")
    add_client_options(p)
    p.set_defaults(func=_cmd_download)

    p = sub.add_parser("convert", help="convert a TensorFlow SavedModel for the edge")
    p.add_argument("saved_model", metavar="SAVED_MODEL", help="folder, .zip or .tar.gz")
    p.add_argument("--to", required=True, choices=["onnx", "tflite"])
    p.add_argument("-o", "--output", help="output file (default: next to the input)")
    p.set_defaults(func=_cmd_convert)

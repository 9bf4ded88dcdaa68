"""The cloud commands: ``pipeline cloud``, ``data``, ``registry`` and ``infer``.

Each ``register_*`` function is an entry point of group ``pipeline.commands``. Exit codes: 0
success; 1 failure, with one ``error: ...`` line on stderr (an unknown id, no permission, the
server down); 2 usage (argparse).

::

    pipeline cloud serve --data DIR --address 127.0.0.1:8443 [--database postgresql://...]
    pipeline cloud org create NAME --data DIR          # prints the organisation id
    pipeline cloud key create --org ORG --data DIR     # prints the key id and the key
    pipeline cloud login --address A --key-id ID --key KEY
    pipeline cloud workers                              # inference workers, replicas per model
    pipeline infer --binary-data-id ID --model-name N --model-org-id O --model-version V --org-id O
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from grpclib import GRPCError

from pipeline_cloud.errors import CloudError

__all__ = [
    "Subparsers",
    "add_client_options",
    "register_cloud",
    "register_data",
    "register_infer",
    "register_registry",
    "run_client",
    "usage",
]

T = TypeVar("T")
if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def add_client_options(p: argparse.ArgumentParser) -> None:
    """``--address``, ``--key-id``, ``--key``, ``--insecure``, ``--ca-file``."""
    g = p.add_argument_group("cloud connection (default: environment, then `pipeline cloud login`)")
    g.add_argument("--address", help="HOST:PORT of the cloud (PIPELINE_CLOUD_ADDRESS)")
    g.add_argument("--key-id", help="API key id (PIPELINE_CLOUD_KEY_ID)")
    g.add_argument("--key", help="API key (PIPELINE_CLOUD_KEY)")
    g.add_argument(
        "--insecure", action="store_true", default=None, help="plain HTTP/2, no TLS (loopback)"
    )
    g.add_argument("--ca-file", help="CA certificate to verify the server with")


def run_client(args: argparse.Namespace, body: Callable[[Any], Awaitable[T]]) -> T:
    """Connect with the credentials of ``args`` and run ``body(client)``."""
    from pipeline_cloud.client import CloudClient, load_credentials

    creds = load_credentials(args.address, args.key_id, args.key, args.insecure, args.ca_file)

    async def main() -> T:
        async with CloudClient(creds) as client:
            return await body(client)

    return asyncio.run(main())


def guarded(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """One clear ``error:`` line and exit code 1 for every expected failure."""

    def wrapper(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except GRPCError as exc:
            status = exc.status.name.lower().replace("_", " ")
            return fail(f"{status}: {exc.message or 'no message from the server'}")
        except (ConnectionError, TimeoutError, asyncio.TimeoutError) as exc:
            where = getattr(args, "address", None) or os.environ.get("PIPELINE_CLOUD_ADDRESS", "")
            return fail(f"cannot reach the cloud {where}: {exc or type(exc).__name__}".rstrip())
        except ssl.SSLError as exc:
            return fail(f"TLS failed: {exc.reason or exc}; use --ca-file, or --insecure locally")
        except OSError as exc:
            if exc.errno is not None and getattr(exc, "filename", None) is None:
                return fail(f"cannot reach the cloud: {exc.strerror or exc}")
            return fail(str(exc))
        except (CloudError, ValueError, LookupError) as exc:
            return fail(str(exc))

    wrapper.__name__ = func.__name__
    return wrapper


# -- pipeline cloud ------------------------------------------------------------------------


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("PIPELINE_CLOUD_DATA", "cloud-data")),
        help="the server's data folder (PIPELINE_CLOUD_DATA; default ./cloud-data)",
    )
    p.add_argument(
        "--database",
        default=os.environ.get("PIPELINE_CLOUD_DATABASE"),
        help="postgresql://user@host/db (PIPELINE_CLOUD_DATABASE); default SQLite in --data",
    )


def _admin_store(args: argparse.Namespace) -> Any:
    from pipeline_cloud.blobs import BlobStore
    from pipeline_cloud.db import open_database
    from pipeline_cloud.store import Store

    return Store(open_database(args.data, args.database), BlobStore(args.data / "blobs"))


def _workers_options(args: argparse.Namespace) -> tuple[int | str | None, dict[str, Any] | None]:
    """``--workers`` (a count, or a Ray address) and the Ray pool's options."""
    from pipeline_cloud.ray_pool import Scaling, WorkersError, parse_replicas

    ray_flags = [
        flag
        for flag, value in (
            ("--replicas", args.replicas),
            ("--model-replicas", args.model_replicas),
            ("--scale-up-queue", args.scale_up_queue),
            ("--scale-down-after", args.scale_down_after),
            ("--replica-cpus", args.replica_cpus),
        )
        if value is not None
    ]
    text = args.workers
    if text is None or text.isdigit():
        if ray_flags:
            raise WorkersError(
                f"{ray_flags[0]} is for Ray workers: add --workers ray://HOST:PORT (or auto)"
            )
        count = int(text) if text else None
        if count == 0:
            raise WorkersError("--workers must be at least 1 (or a Ray address)")
        return count, None
    if not (text == "auto" or ":" in text):
        raise WorkersError(
            f"--workers {text!r} is neither a number of worker processes nor a Ray address "
            "(auto, HOST:PORT, ray://HOST:PORT)"
        )

    def scaling(replicas: str) -> Scaling:
        low, high = parse_replicas(replicas)
        return Scaling(
            low,
            high,
            queue_per_replica=2.0 if args.scale_up_queue is None else args.scale_up_queue,
            idle_s=60.0 if args.scale_down_after is None else args.scale_down_after,
        )

    per_model: dict[str, Scaling] = {}
    for item in args.model_replicas or []:
        name, sep, replicas = item.rpartition("=")
        if not sep or not name:
            raise WorkersError(f"--model-replicas {item!r} must be NAME=N or NAME=MIN:MAX")
        per_model[name] = scaling(replicas)
    options: dict[str, Any] = {
        "scaling": scaling(args.replicas or "1"),
        "per_model": per_model,
        "replica_cpus": args.replica_cpus or 1.0,
    }
    return text, options


def _cmd_serve(args: argparse.Namespace) -> int:
    from pipeline_cloud.ray_pool import WorkersError

    try:
        args.workers, args.ray_options = _workers_options(args)
        return _serve(args)
    except WorkersError as exc:  # at start: Ray missing or unreachable, a bad option
        print(f"error: {exc}", file=sys.stderr)
        return 2


@guarded
def _serve(args: argparse.Namespace) -> int:
    from pipeline_cloud.server import serve

    return serve(
        args.data,
        args.address,
        database=args.database,
        cert=args.cert,
        key=args.key,
        insecure=args.insecure,
        workers=args.workers,
        token_lifetime_s=args.token_lifetime,
        ray_options=args.ray_options,
    )


@guarded
def _cmd_org_create(args: argparse.Namespace) -> int:
    org = _admin_store(args).create_org(args.name)
    print(f"organization id: {org.id}")
    print(f"name:            {org.name}")
    return 0


@guarded
def _cmd_org_ls(args: argparse.Namespace) -> int:
    for org in _admin_store(args).list_orgs():
        print(f"{org.id}  {org.name}")
    return 0


@guarded
def _cmd_key_create(args: argparse.Namespace) -> int:
    store = _admin_store(args)
    key_id, key = store.create_key(args.org, args.name)
    org = store.find_org(args.org)
    print(f"organization: {org.name} ({org.id})")
    print(f"key id: {key_id}")
    print(f"key:    {key}")
    print("keep the key secret: only a hash is stored, it cannot be shown again", file=sys.stderr)
    if args.login:
        from pipeline_cloud.client import Credentials, save_credentials

        path = save_credentials(Credentials(args.login, key_id, key))
        print(f"later commands use this key on {args.login} (saved in {path})")
    return 0


@guarded
def _cmd_login(args: argparse.Namespace) -> int:
    from pipeline_cloud.client import Credentials, save_credentials

    if not (args.address and args.key_id and args.key):
        return fail("login needs --address, --key-id and --key")
    creds = Credentials(args.address, args.key_id, args.key, bool(args.insecure), args.ca_file)
    args.insecure = creds.insecure
    who = run_client(args, lambda c: c.admin("WhoAmI"))
    path = save_credentials(creds)
    print(
        f"logged in to {creds.address} as organization {who['organization_name']} "
        f"({who['organization_id']}); credentials in {path}"
    )
    return 0


@guarded
def _cmd_workers(args: argparse.Namespace) -> int:
    status = run_client(args, lambda c: c.admin("InferenceStatus"))
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"workers: {status.get('workers')}  in flight: {int(status.get('pending', 0))}", end="")
    if "retried" in status:
        lost, retried = int(status.get("lost", 0)), int(status.get("retried", 0))
        print(f"  replicas lost: {lost}  requests retried: {retried}", end="")
    print()
    for name, model in sorted(status.get("models", {}).items()):
        print(
            f"{name}: {int(model['replicas'])} replicas "
            f"({int(model['min_replicas'])}..{int(model['max_replicas'])}, "
            f"{int(model['starting'])} starting), {int(model['pending'])} in flight"
        )
        for r in model.get("replica", []):
            print(
                f"  replica {int(r['number'])}: Ray node {str(r['node'])[:8]} ({r['address']}) "
                f"pid {int(r['pid'])}  in flight {int(r['inflight'])}  served {int(r['served'])}"
            )
    return 0


def usage(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    def show(_: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    return show


def register_cloud(subparsers: Subparsers) -> None:
    """``pipeline cloud``: serve, org, key, login."""
    cloud = subparsers.add_parser("cloud", help="run the cloud server; organisations and keys")
    cloud.set_defaults(func=usage(cloud))
    sub = cloud.add_subparsers(dest="cloud_command", metavar="{serve,org,key,login,workers}")

    p = sub.add_parser("serve", help="serve the data API, registry and inference (gRPC)")
    _add_data_dir(p)
    p.add_argument("--address", default="127.0.0.1:8443", help="HOST:PORT to listen on")
    p.add_argument("--cert", type=Path, help="TLS certificate (PEM); default: self-signed")
    p.add_argument("--key", type=Path, help="TLS private key (PEM)")
    p.add_argument("--insecure", action="store_true", help="no TLS (loopback addresses only)")
    p.add_argument(
        "--workers",
        metavar="N|ADDRESS",
        help="inference worker processes (default: cores), or a Ray cluster to run them on: "
        "ray://HOST:PORT (Ray Client), HOST:PORT (the head) or auto",
    )
    g = p.add_argument_group("Ray workers (with --workers ray://... or auto)")
    g.add_argument(
        "--replicas",
        metavar="N|MIN:MAX",
        help="replicas (Ray actors) per model version; MIN:MAX scales by queue depth (default 1)",
    )
    g.add_argument(
        "--model-replicas",
        action="append",
        metavar="NAME=N|NAME=MIN:MAX",
        help="replicas of one model (NAME or ORG-ID:NAME); repeat for more models",
    )
    g.add_argument(
        "--scale-up-queue",
        type=float,
        metavar="Q",
        help="add a replica when requests in flight per replica exceed Q (default 2)",
    )
    g.add_argument(
        "--scale-down-after",
        type=float,
        metavar="S",
        help="remove a replica (down to MIN) after S seconds with none in flight (default 60)",
    )
    g.add_argument(
        "--replica-cpus", type=float, metavar="C", help="Ray CPUs per replica (default 1)"
    )
    p.add_argument(
        "--token-lifetime",
        type=float,
        default=12 * 3600.0,
        metavar="S",
        help="seconds a bearer token stays valid (default 43200)",
    )
    p.set_defaults(func=_cmd_serve)

    org = sub.add_parser("org", help="organisations (on the server's data folder)")
    org.set_defaults(func=usage(org))
    osub = org.add_subparsers(dest="org_command", metavar="{create,ls}")
    p = osub.add_parser("create", help="create an organisation; prints its id")
    p.add_argument("name", help="the new organisation's name")
    _add_data_dir(p)
    p.set_defaults(func=_cmd_org_create)
    p = osub.add_parser("ls", help="list organisations")
    _add_data_dir(p)
    p.set_defaults(func=_cmd_org_ls)

    key = sub.add_parser("key", help="API keys (on the server's data folder)")
    key.set_defaults(func=usage(key))
    ksub = key.add_subparsers(dest="key_command", metavar="{create}")
    p = ksub.add_parser("create", help="create an API key; prints the key id and key")
    p.add_argument("--org", required=True, help="organisation name or id")
    p.add_argument("--name", default="", help="a note on what the key is for")
    p.add_argument(
        "--login",
        metavar="ADDRESS",
        help="also save the key for this machine's commands, as `pipeline cloud login` does",
    )
    _add_data_dir(p)
    p.set_defaults(func=_cmd_key_create)

    p = sub.add_parser(
        "workers", help="the server's inference workers: Ray replicas per model, queue depth"
    )
    p.add_argument("--json", action="store_true", help="print JSON for machines")
    add_client_options(p)
    p.set_defaults(func=_cmd_workers)

    p = sub.add_parser("login", help="check an API key and save it for later commands")
    add_client_options(p)
    p.set_defaults(func=_cmd_login)


# -- pipeline infer ------------------------------------------------------------------------


@guarded
def _cmd_infer(args: argparse.Namespace) -> int:
    from viam.gen.app.mlinference.v1 import ml_inference_grpc, ml_inference_pb2

    from pipeline.rpc.flat_tensors import from_flat_tensors
    from pipeline_cloud.infer_format import format_response, response_json

    request = ml_inference_pb2.GetInferenceRequest(
        registry_item_id=f"{args.model_org_id}:{args.model_name}",
        registry_item_version=args.model_version,
        binary_data_id=args.binary_data_id,
        organization_id=args.org_id,
    )

    async def body(client: Any) -> Any:
        stub = ml_inference_grpc.MLInferenceServiceStub(client.channel)
        return await client.call(
            lambda md: stub.GetInference(request, timeout=client.timeout_s, metadata=md)
        )

    reply = run_client(args, body)
    tensors = from_flat_tensors(reply.output_tensors)
    annotations = reply.annotations if reply.HasField("annotations") else None
    if args.json:
        limit = -1 if args.max_values is None else args.max_values
        print(json.dumps(response_json(tensors, annotations, limit), indent=2))
    else:
        limit = 64 if args.max_values is None else args.max_values
        print(format_response(tensors, annotations, limit))
    return 0


def register_infer(subparsers: Subparsers) -> None:
    """``pipeline infer``: run a registry model on uploaded data, in the cloud."""
    p = subparsers.add_parser(
        "infer",
        help="run a registry model on uploaded data in the cloud (Viam's `viam infer`)",
        description="Run cloud inference (MLInferenceService.GetInference) and print the "
        "output tensors and annotations as Viam's `viam infer` does.",
    )
    p.add_argument("--binary-data-id", required=True, help="the uploaded image's id")
    p.add_argument("--model-name", required=True, help="the registry model's name")
    p.add_argument("--model-org-id", required=True, help="the organisation owning the model")
    p.add_argument("--model-version", required=True, help="the model version")
    p.add_argument("--org-id", required=True, help="the organisation owning the data")
    p.add_argument(
        "--max-values",
        type=int,
        metavar="N",
        help="values printed per tensor before `, ...` (default 64; with --json all)",
    )
    p.add_argument("--json", action="store_true", help="print JSON for machines")
    add_client_options(p)
    p.set_defaults(func=_cmd_infer)


def register_data(subparsers: Subparsers) -> None:
    """``pipeline data``: upload, ls, export, rm."""
    from pipeline_cloud.cli_data import register

    register(subparsers)


def register_registry(subparsers: Subparsers) -> None:
    """``pipeline registry``: upload, ls, share, visibility, download, convert."""
    from pipeline_cloud.cli_registry import register

    register(subparsers)

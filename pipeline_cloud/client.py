"""A client of the cloud for the command line and the uploader node.

It speaks the same wire as Viam's SDK (the generated stubs of ``viam-sdk`` on a grpclib
channel): ``AuthService.Authenticate`` with the API key, then ``authorization: Bearer`` on
every call, authenticating again when the server says the token is no longer valid (expired,
or the server restarted with another secret). TLS is verified against the system's CAs or
``ca_file``; for local hosts without a ``ca_file``, as in Viam's SDK, a self-signed certificate
is accepted unchecked; ``insecure`` dials plain HTTP/2.

Where credentials come from (first found wins): arguments, the environment
(``PIPELINE_CLOUD_ADDRESS``, ``PIPELINE_CLOUD_KEY_ID``, ``PIPELINE_CLOUD_KEY``; Viam's
``VIAM_API_KEY_ID``/``VIAM_API_KEY`` too), then the file ``pipeline cloud login`` writes
(``$XDG_CONFIG_HOME/pipeline/cloud.json``, mode 0600).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import ssl
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from grpclib import GRPCError, Status
from grpclib.client import Channel

__all__ = ["CloudClient", "Credentials", "config_path", "load_credentials", "save_credentials"]

T = TypeVar("T")
ADMIN = "/pipeline.cloud.v1.RegistryAdmin"


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "pipeline" / "cloud.json"


@dataclasses.dataclass(frozen=True)
class Credentials:
    """Where the cloud is and which API key to use."""

    address: str
    key_id: str
    key: str
    insecure: bool = False
    ca_file: str | None = None


def load_credentials(
    address: str | None = None,
    key_id: str | None = None,
    key: str | None = None,
    insecure: bool | None = None,
    ca_file: str | None = None,
) -> Credentials:
    """Credentials from arguments, else the environment, else the login file.

    Raises:
        ValueError: something is still missing (the message says how to give it).
    """
    env = os.environ
    saved: dict[str, Any] = {}
    path = config_path()
    if path.exists():
        try:
            saved = json.loads(path.read_text())
        except ValueError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc}); run `pipeline cloud login`") from exc
    address = address or env.get("PIPELINE_CLOUD_ADDRESS") or saved.get("address")
    key_id = (
        key_id
        or env.get("PIPELINE_CLOUD_KEY_ID")
        or env.get("VIAM_API_KEY_ID")
        or saved.get("key_id")
    )
    key = key or env.get("PIPELINE_CLOUD_KEY") or env.get("VIAM_API_KEY") or saved.get("key")
    if insecure is None:
        insecure = bool(saved.get("insecure", False)) if address == saved.get("address") else False
    ca_file = ca_file or saved.get("ca_file")
    missing = [
        n for n, v in (("--address", address), ("--key-id", key_id), ("--key", key)) if not v
    ]
    if missing:
        raise ValueError(
            f"no {', '.join(missing)}: pass them, set PIPELINE_CLOUD_ADDRESS / "
            "PIPELINE_CLOUD_KEY_ID / PIPELINE_CLOUD_KEY, or run `pipeline cloud login`"
        )
    return Credentials(str(address), str(key_id), str(key), bool(insecure), ca_file)


def save_credentials(creds: Credentials) -> Path:
    """Write the login file (mode 0600) and return its path."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(dataclasses.asdict(creds), out, indent=2)
    os.chmod(path, 0o600)
    return path


def _split(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address {address!r} must be HOST:PORT, e.g. 127.0.0.1:8443")
    return host.strip("[]"), int(port)


def _ssl_context(host: str, ca_file: str | None) -> ssl.SSLContext:
    if ca_file:  # a given CA is always checked, also for local hosts
        context = ssl.create_default_context(cafile=ca_file)
    elif host in ("localhost", "::1") or host.startswith("127."):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2"])
    return context


class CloudClient:
    """An authenticated channel to the cloud; ``async with CloudClient(creds) as c: ...``."""

    def __init__(self, creds: Credentials, timeout_s: float = 60.0) -> None:
        self.creds = creds
        self.timeout_s = timeout_s
        host, port = _split(creds.address)
        context = None if creds.insecure else _ssl_context(host, creds.ca_file)
        self.channel = Channel(host, port, ssl=context)
        self._token: str | None = None

    async def __aenter__(self) -> CloudClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    def close(self) -> None:
        """Close the connection without waiting (see :meth:`aclose`)."""
        self.channel.close()

    async def aclose(self, timeout_s: float = 2.0) -> None:
        """Close the connection and wait until its socket is closed (a TLS connection needs
        the event loop for its shutdown; leaving early leaks the socket)."""
        protocol: Any = getattr(self.channel, "_protocol", None)
        if protocol is None:
            self.channel.close()
            return
        lost = asyncio.Event()
        original = protocol.connection_lost

        def connection_lost(exc: BaseException | None) -> None:
            original(exc)
            lost.set()

        protocol.connection_lost = connection_lost
        self.channel.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(lost.wait(), timeout_s)

    async def authenticate(self) -> None:
        from viam.gen.proto.rpc.v1 import auth_grpc, auth_pb2

        reply = await auth_grpc.AuthServiceStub(self.channel).Authenticate(
            auth_pb2.AuthenticateRequest(
                entity=self.creds.key_id,
                credentials=auth_pb2.Credentials(type="api-key", payload=self.creds.key),
            ),
            timeout=self.timeout_s,
        )
        self._token = reply.access_token

    def metadata(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        md = {"authorization": f"Bearer {self._token}"}
        md.update(extra or {})
        return md

    async def call(self, make: Callable[[dict[str, str]], Awaitable[T]], **extra: str) -> T:
        """Run ``make(metadata)``, authenticating first and once more if the token is stale."""
        if self._token is None:
            await self.authenticate()
        try:
            return await make(self.metadata(extra))
        except GRPCError as exc:
            if exc.status != Status.UNAUTHENTICATED or "API key" in (exc.message or ""):
                raise
        await self.authenticate()
        return await make(self.metadata(extra))

    # -- our own calls ---------------------------------------------------------------------

    async def admin(self, method: str, **args: Any) -> dict[str, Any]:
        """Call one of our ``RegistryAdmin`` methods with keyword arguments."""
        from google.protobuf import json_format, struct_pb2
        from grpclib.client import UnaryUnaryMethod

        request = struct_pb2.Struct()
        request.update(args)
        stub: UnaryUnaryMethod[Any, Any] = UnaryUnaryMethod(
            self.channel, f"{ADMIN}/{method}", struct_pb2.Struct, struct_pb2.Struct
        )
        reply = await self.call(lambda md: stub(request, timeout=self.timeout_s, metadata=md))
        result: dict[str, Any] = json_format.MessageToDict(reply)
        return result

    async def download_model(self, item_id: str, version: str = "") -> bytes:
        """The file of a registry model version (the newest when ``version`` is empty)."""
        from google.protobuf import struct_pb2, wrappers_pb2
        from grpclib.client import UnaryUnaryMethod

        request = struct_pb2.Struct()
        request.update({"id": item_id, "version": version})
        stub: UnaryUnaryMethod[Any, Any] = UnaryUnaryMethod(
            self.channel, f"{ADMIN}/DownloadModel", struct_pb2.Struct, wrappers_pb2.BytesValue
        )
        reply = await self.call(lambda md: stub(request, timeout=self.timeout_s, metadata=md))
        return bytes(reply.value)

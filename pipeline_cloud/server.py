"""``pipeline cloud serve``: the cloud's gRPC server, with TLS and API keys.

Serves Viam's ``AuthService`` (API key id + key -> an expiring bearer token, from
``pipeline.rpc.auth``), ``DataSyncService``, ``DataService``, ``PackageService``,
``MLInferenceService`` and our ``RegistryAdmin`` on one address. Every call but
``Authenticate`` needs a valid token. The token signing secret is kept in the data folder
(``token_secret``, mode 0600) so tokens survive a restart until they expire.

TLS: ``--cert``/``--key`` serve a given certificate; without them a self-signed one for
localhost is made in the data folder (``tls/``), which Viam's SDK accepts for local hosts;
``--insecure`` serves plain HTTP/2 (tests and benchmarks on loopback only).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.rpc.auth import TokenIssuer
from pipeline.rpc.server import RpcServer, is_loopback, parse_endpoint
from pipeline.rpc.tls import make_self_signed, server_ssl_context
from pipeline_cloud.context import Cloud
from pipeline_cloud.data_services import DataService
from pipeline_cloud.model_services import MLInferenceService, PackageService, RegistryAdmin
from pipeline_cloud.sync_service import DataSyncService

__all__ = ["serve", "start_server", "tls_context", "token_issuer"]

log = logging.getLogger("pipeline_cloud")

TOKEN_LIFETIME_S = 12 * 3600.0


def token_issuer(data_dir: Path, lifetime_s: float = TOKEN_LIFETIME_S) -> TokenIssuer:
    """The issuer whose secret lives in ``data_dir/token_secret`` (made on first use)."""
    path = data_dir / "token_secret"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(32))
    return TokenIssuer(path.read_bytes(), lifetime_s=lifetime_s)


def tls_context(data_dir: Path, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """The server's TLS context: the given pair, or a self-signed one under ``data_dir/tls``."""
    if (cert is None) != (key is None):
        raise ValueError("give both --cert and --key, or neither (a self-signed pair is made)")
    if cert is None or key is None:
        folder = data_dir / "tls"
        cert, key = folder / "cert.pem", folder / "key.pem"
        if not cert.exists() or not key.exists():
            make_self_signed(cert, key)
            log.info("made a self-signed certificate for localhost: %s", cert)
    return server_ssl_context(cert, key)


async def start_server(
    cloud: Cloud,
    address: str,
    ssl_context: ssl.SSLContext | None,
    lifetime_s: float = TOKEN_LIFETIME_S,
) -> RpcServer:
    """Start serving ``cloud`` on ``address``; returns the running server."""
    handlers = [
        DataSyncService(cloud),
        DataService(cloud),
        PackageService(cloud),
        MLInferenceService(cloud),
        RegistryAdmin(cloud),
    ]
    server = RpcServer(
        handlers,
        api_keys=cloud.verify_key,
        issuer=token_issuer(cloud.data_dir, lifetime_s),
        max_message_size=512 * 1024 * 1024,
    )
    await server.start(address, ssl=ssl_context)
    return server


def serve(
    data_dir: Path,
    address: str,
    database: str | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    insecure: bool = False,
    workers: int | str | None = None,
    token_lifetime_s: float = TOKEN_LIFETIME_S,
    ray_options: Mapping[str, Any] | None = None,
) -> int:
    """Run the server until SIGINT or SIGTERM; returns the exit code."""
    endpoint = parse_endpoint(address)
    if insecure and endpoint.host is not None and not is_loopback(endpoint.host):
        raise ValueError(
            f"--insecure is for loopback addresses only: {address} would send API keys in "
            "clear text; drop --insecure to serve TLS"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    context = None if insecure else tls_context(data_dir, cert, key)
    cloud = Cloud(data_dir, database, workers, ray_options)

    async def main() -> None:
        server = await start_server(cloud, address, context, token_lifetime_s)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        bound = server.endpoints[0]
        scheme = "insecure" if context is None else "tls"
        where = "postgresql" if database else f"sqlite in {data_dir}"
        # One parseable line: tests and scripts wait for it.
        print(f"serving on {bound} ({scheme}; {where}; {cloud.pool.describe()})", flush=True)
        await loop.run_in_executor(None, cloud.pool.warm_up)
        await stop.wait()
        await server.stop(5.0)

    try:
        asyncio.run(main())
    finally:
        cloud.close()
    return 0

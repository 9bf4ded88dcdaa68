"""The server process beside a running graph, and how ``pipeline run`` starts and stops it.

``start_server(graph, config)`` (in the ``pipeline run`` process):

1. plans the resources and picks a tap endpoint in a private run folder;
2. spawns ``python -m pipeline.serve.app`` with the graph file, the serve config and the
   endpoint on stdin; the child opens every node's service (loads the models), binds the tap
   receiver and the gRPC listeners, and answers one JSON line on stdout: the bound
   endpoints, or the error (address in use, bad certificate, missing key file, a model that
   will not load) which ``pipeline run`` reports before anything of the graph starts;
3. returns the graph with its taps added (see ``pipeline.serve.taps``) and the running server.

The server is a separate process so that a flood of requests, a crash or a slow model in it
cannot touch the graph's processes; the graph keeps running if the server dies. It runs at
nice 10 (``serve.nice``): when the CPU is short, the graph's nodes get it first. Ctrl-C belongs
to ``pipeline run``: the server ignores SIGINT and is stopped (SIGTERM: in-flight calls get up
to 2 s) after the graph ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.graph.validate import ValidatedGraph
from pipeline.serve.config import ServeConfig
from pipeline.serve.resources import build_resources, with_taps

__all__ = ["CERT_DIR", "ServeError", "ServerProcess", "main", "start_server"]

log = logging.getLogger("pipeline.serve")
CERT_DIR = Path.home() / ".cache" / "pipeline" / "serve"
START_TIMEOUT_S = 120.0


class ServeError(RuntimeError):
    """The server could not start; the message says why and what to do."""


@dataclass
class ServerProcess:
    """The running server child process."""

    process: subprocess.Popen[bytes]
    endpoints: list[str]
    run_dir: tempfile.TemporaryDirectory[str]

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM, wait, then SIGKILL; removes the run folder."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.run_dir.cleanup()


def start_server(
    graph: ValidatedGraph, config: ServeConfig, *, log_level: str = "INFO"
) -> tuple[ValidatedGraph, ServerProcess]:
    """Start the server for ``graph``; returns the graph with its taps and the server.

    Raises:
        ServeError: the server could not start (its message says why).
    """
    resources = build_resources(graph)  # builds service objects only: no model is loaded
    run_dir = tempfile.TemporaryDirectory(prefix="pipeline-serve-")
    endpoint = f"ipc://{run_dir.name}/taps"
    request = {
        "graph_file": str(Path(graph.file).resolve()),
        "config": config.model_dump(),
        "tap_endpoint": endpoint,
        "sys_path": sys.path,
        "cwd": os.getcwd(),
        "log_level": log_level,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.serve.app"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    process.stdin.write(json.dumps(request).encode())
    process.stdin.close()
    line = b""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        ready, _, _ = select.select([process.stdout], [], [], max(left, 0))
        if not ready:
            process.kill()
            process.wait()
            run_dir.cleanup()
            raise ServeError(f"the server did not start within {START_TIMEOUT_S:g} s")
        chunk = os.read(process.stdout.fileno(), 65536)
        if not chunk:
            break
        line += chunk
    server = ServerProcess(process, [], run_dir)
    try:
        answer = json.loads(line or b"{}")
    except ValueError:
        answer = {}
    if "endpoints" not in answer:
        server.stop(1)
        raise ServeError(answer.get("error") or f"the server exited ({process.poll()})")
    server.endpoints = answer["endpoints"]
    return with_taps(graph, resources, endpoint), server


# --- the child ---------------------------------------------------------------------------------


def _tls_pair(config: ServeConfig) -> tuple[str, str] | None:
    from pipeline.rpc.tls import make_self_signed

    if config.tls is not None:
        return config.tls.cert, config.tls.key
    if not (config.api_keys or config.api_key_file):
        return None
    # The Viam SDK sends API keys only over TLS: make (once) a local self-signed pair.
    cert, key = CERT_DIR / "cert.pem", CERT_DIR / "key.pem"
    if not (cert.exists() and key.exists()):
        make_self_signed(cert, key)
        log.info("made a self-signed TLS certificate for local use: %s", cert)
    return str(cert), str(key)


def _api_keys(config: ServeConfig) -> Any:
    from pipeline.rpc.auth import ApiKeys

    keys = {k.id: k.key for k in config.api_keys}
    if config.api_key_file:
        try:
            from_file = ApiKeys.load(config.api_key_file)
        except OSError as exc:
            raise ServeError(f"cannot read the API key file: {exc}") from exc
        except ValueError as exc:
            raise ServeError(str(exc)) from exc
        if keys:
            return lambda key_id, key: from_file(key_id, key) or ApiKeys(keys)(key_id, key)
        return from_file
    return ApiKeys(keys) if keys else None


async def _serve(request: dict[str, Any]) -> None:
    from pipeline.graph.load import load_graph
    from pipeline.rpc.server import RpcServer
    from pipeline.rpc.tls import server_ssl_context
    from pipeline.serve.machine import RAW_DECODERS, Machine, handlers
    from pipeline.serve.taps import TapReceiver

    config = ServeConfig.model_validate(request["config"])
    if config.nice:
        # under CPU contention the graph's nodes go first: a flood of requests slows the
        # answers, not the graph (the server's model threads inherit this)
        os.nice(config.nice)
    graph = load_graph(request["graph_file"])
    resources = build_resources(graph)
    opened = []
    try:
        for node in resources.nodes.values():
            if node.service is not None:
                try:
                    node.service.open()
                except Exception as exc:
                    raise ServeError(
                        f"node {node.id!r}: its service did not open: {type(exc).__name__}: {exc}"
                    ) from exc
                opened.append(node.service)
        view = TapReceiver(request["tap_endpoint"])
        machine = Machine(resources, view, config)
        server = RpcServer(
            handlers(machine),
            api_keys=_api_keys(config),
            max_message_size=int(config.max_message_mb * 1024 * 1024),
            raw_decoders=RAW_DECODERS,
        )
        try:
            endpoints = []
            if config.address:
                pair = _tls_pair(config)
                try:
                    ssl = server_ssl_context(*pair) if pair else None
                except ValueError as exc:
                    raise ServeError(str(exc)) from exc
                bound = await server.start(
                    config.address,
                    ssl=ssl,
                    allow_unauthenticated_public=config.allow_public_without_keys,
                )
                endpoints.append(("https://" if ssl else "") + str(bound))
            if config.unix_socket:
                endpoints.append(str(await server.start(f"unix:{config.unix_socket}")))
            if not endpoints:
                raise ServeError("serve: neither an address nor a unix_socket is set")
            _answer({"endpoints": endpoints})
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, stop.set)
            parent = os.getppid()
            while not stop.is_set():  # a server whose `pipeline run` died stops by itself
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
                if os.getppid() != parent:
                    stop.set()
        finally:
            await server.stop(2.0)
            machine.close()
            view.close()
    finally:
        for service in opened:
            with contextlib.suppress(Exception):
                service.close()


def _answer(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    """Entry point of the server process: the request arrives as JSON on stdin."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C belongs to `pipeline run`
    request = json.loads(sys.stdin.read())
    sys.path[:] = request["sys_path"]
    os.chdir(request["cwd"])
    level = request.get("log_level", "INFO")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s [serve] %(message)s")
    try:
        asyncio.run(_serve(request))
    except (ServeError, OSError, ValueError) as exc:
        _answer({"error": str(exc)})
        sys.exit(2)


if __name__ == "__main__":
    main()

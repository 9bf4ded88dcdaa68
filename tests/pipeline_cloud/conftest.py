"""Fixtures: a real PostgreSQL server, and the cloud server as a subprocess on each database."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pipeline_cloud.postgres import PostgresServer

pytest.importorskip("sqlalchemy", reason="the cloud extra is not installed")

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> str | None:
    """``None`` (SQLite in the data folder) or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.new_database()


class CloudServer:
    """``pipeline cloud serve`` in a subprocess, with admin access to its database."""

    def __init__(
        self,
        data: Path,
        database: str | None,
        tls: bool = True,
        workers: int = 2,
        extra_args: tuple[str, ...] = (),
    ):
        self.extra_args = extra_args
        self.data = data
        self.database = database
        self.tls = tls
        self.workers = workers
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 45.0) -> None:
        cmd = [
            sys.executable, "-m", "pipeline.cli", "cloud", "serve", "--data", str(self.data),
            "--address", f"127.0.0.1:{self.port}", "--workers", str(self.workers),
        ]  # fmt: skip
        if self.database:
            cmd += ["--database", self.database]
        if not self.tls:
            cmd.append("--insecure")
        cmd += self.extra_args
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.proc = proc
        ready = threading.Event()

        def read() -> None:  # drain the pipe for the server's whole life
            assert proc.stdout is not None
            with proc.stdout:
                for line in proc.stdout:
                    self.output.append(line)
                    if line.startswith("serving on "):
                        self.port = int(line.split()[2].rsplit(":", 1)[1])
                        ready.set()
            ready.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        if not ready.wait(timeout_s) or proc.poll() is not None:
            self.kill()
            raise RuntimeError("cloud server did not start:\n" + "".join(self.output))

    def _reap(self) -> None:
        if self.proc is not None:
            self.proc.wait()
            self._reader.join(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._reap()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        self._reap()

    def store(self):  # type: ignore[no-untyped-def]
        from pipeline_cloud.blobs import BlobStore
        from pipeline_cloud.db import open_database
        from pipeline_cloud.store import Store

        return Store(open_database(self.data, self.database), BlobStore(self.data / "blobs"))

    def org_with_key(self, prefix: str = "org") -> tuple[str, str, str, str]:
        """A new organisation and key: ``(org_id, org_name, key_id, key)``."""
        store = self.store()
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        org = store.create_org(name)
        key_id, key = store.create_key(org.id)
        store.sessions.kw["bind"].dispose()
        return org.id, name, key_id, key


@contextlib.contextmanager
def running_cloud(database: str | None, tls: bool = True) -> Iterator[CloudServer]:
    data = Path(tempfile.mkdtemp(prefix="pipeline-cloud-"))
    server = CloudServer(data, database, tls=tls)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def sqlite_cloud() -> Iterator[CloudServer]:
    with running_cloud(None) as server:
        yield server


@pytest.fixture(scope="session")
def postgresql_cloud(postgres: PostgresServer) -> Iterator[CloudServer]:
    with running_cloud(postgres.new_database()) as server:
        yield server


@pytest.fixture(params=BACKENDS)
def cloud(request: pytest.FixtureRequest) -> CloudServer:
    """The cloud server (TLS, self-signed) on SQLite, then on PostgreSQL."""
    server: CloudServer = request.getfixturevalue(f"{request.param}_cloud")
    return server


@pytest.fixture(scope="session")
def catalog_model() -> Path:
    """BlazeFace short-range from the catalog (`pipeline models fetch`), as a file."""
    from pipeline_nodes.inference.models.store import resolve_model

    return Path(resolve_model("face_short_range"))

"""TLS with a given certificate, and bearer tokens that expire."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import pytest
from grpclib import GRPCError, Status

from pipeline.cli import main
from pipeline.rpc.tls import make_self_signed
from pipeline_cloud.client import CloudClient, Credentials
from tests.pipeline_cloud.conftest import CloudServer

pytestmark = pytest.mark.integration


def test_a_given_certificate_is_served_and_checked_by_clients(tmp_path, capsys, monkeypatch):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    make_self_signed(cert, key, hosts=("127.0.0.1",))
    other_cert = tmp_path / "other.pem"
    make_self_signed(other_cert, tmp_path / "other.key", hosts=("127.0.0.1",))
    server = CloudServer(Path(tempfile.mkdtemp(prefix="pipeline-cloud-")), None,
                         extra_args=("--cert", str(cert), "--key", str(key)))  # fmt: skip
    server.start()
    try:
        _, _, key_id, api_key = server.org_with_key()
        monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
        common = ["--address", server.address, "--key-id", key_id, "--key", api_key]
        assert main(["data", "ls", *common, "--ca-file", str(cert)]) == 0
        assert main(["data", "ls", *common, "--ca-file", str(other_cert)]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: TLS failed")
        assert not (server.data / "tls").exists()  # no self-signed pair was made
    finally:
        server.stop()


def test_tokens_expire_and_the_client_authenticates_again(tmp_path):
    server = CloudServer(Path(tempfile.mkdtemp(prefix="pipeline-cloud-")), None,
                         extra_args=("--token-lifetime", "1"))  # fmt: skip
    server.start()
    try:
        _, name, key_id, key = server.org_with_key()

        async def body() -> None:
            async with CloudClient(Credentials(server.address, key_id, key)) as client:
                await client.authenticate()
                stale = client.metadata()
                from google.protobuf import struct_pb2
                from grpclib.client import UnaryUnaryMethod

                who = UnaryUnaryMethod(client.channel, "/pipeline.cloud.v1.RegistryAdmin/WhoAmI",
                                       struct_pb2.Struct, struct_pb2.Struct)  # fmt: skip
                await who(struct_pb2.Struct(), metadata=stale)
                deadline = time.monotonic() + 15
                refused: GRPCError | None = None
                while refused is None:
                    try:
                        await who(struct_pb2.Struct(), metadata=stale)
                    except GRPCError as exc:
                        refused = exc
                    assert time.monotonic() < deadline, "the token never expired"
                    await asyncio.sleep(0.1)
                assert refused.status == Status.UNAUTHENTICATED
                assert "expired" in (refused.message or "")
                # The client notices and authenticates again by itself.
                assert (await client.admin("WhoAmI"))["organization_name"] == name

        asyncio.run(body())
    finally:
        server.stop()

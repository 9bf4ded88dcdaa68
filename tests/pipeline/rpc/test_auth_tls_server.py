"""The rpc pieces against the real Viam SDK client: API keys, TLS, Unix socket, limits."""

from __future__ import annotations

import asyncio
import os
import ssl
import stat
import time

import pytest
from grpclib import GRPCError, Status
from grpclib.client import Channel
from grpclib.const import Cardinality
from grpclib.encoding.base import CodecBase
from grpclib.exceptions import StreamTerminatedError
from viam.gen.proto.rpc.v1 import auth_grpc, auth_pb2
from viam.gen.robot.v1 import robot_grpc, robot_pb2
from viam.robot.client import RobotClient

from pipeline.rpc.auth import (
    ApiKeys,
    InvalidTokenError,
    TokenIssuer,
)
from pipeline.rpc.server import RpcServer, parse_endpoint
from pipeline.rpc.tls import client_ssl_context, make_self_signed, server_ssl_context
from tests.pipeline.rpc.conftest import RESOURCE, ServerThread, TinyRobot, robot_options, run_sdk

KEY_ID, KEY = "0b6f2c3e-1d7a-4e55-9a52-3f1c2b7d9e10", "s3cret-value"


async def _connect(address: str, **dial) -> list:
    machine = await RobotClient.at_address(address, robot_options(**dial))
    try:
        return list(machine.resource_names)
    finally:
        await machine.close()


def test_token_issuer_accepts_its_tokens_and_refuses_forged_or_expired_ones():
    now = [1000.0]
    issuer = TokenIssuer(b"k" * 32, lifetime_s=60, clock=lambda: now[0])
    token = issuer.issue("key-1")
    assert issuer.verify(token).subject == "key-1"
    with pytest.raises(InvalidTokenError, match="signature"):
        TokenIssuer(b"other" * 8).verify(token)
    body, _, _ = token.rpartition(".")
    with pytest.raises(InvalidTokenError, match="signature"):
        issuer.verify(body + ".AAAA")
    with pytest.raises(InvalidTokenError, match="malformed"):
        issuer.verify("not-a-token")
    now[0] += 61
    with pytest.raises(InvalidTokenError, match="expired"):
        issuer.verify(token)


def test_api_key_file_is_read_and_checked(tmp_path):
    path = tmp_path / "keys"
    path.write_text("# machine keys\nkey-1 s3cret-value\n\nkey-2 other  # second\n")
    keys = ApiKeys.load(path)
    assert len(keys) == 2
    assert keys("key-1", "s3cret-value")
    assert not keys("key-1", "s3cret-valuE")
    assert not keys("nobody", "s3cret-value")
    path.write_text("key-1\n")
    with pytest.raises(ValueError, match=r"keys:1: expected 'KEY_ID KEY'"):
        ApiKeys.load(path)
    path.write_text("# nothing\n")
    with pytest.raises(ValueError, match="no API keys"):
        ApiKeys.load(path)


@pytest.fixture(scope="module")
def cert_pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    make_self_signed(cert, key)
    return cert, key


def test_sdk_client_connects_with_an_api_key_and_is_refused_without_one(cert_pair):
    # The SDK sends API keys only over TLS (with `insecure` it fails before dialing).
    async def scenario(bound) -> None:
        address = str(bound)
        if True:
            names = await _connect(address, api_key=(KEY_ID, KEY))
            assert names == [RESOURCE]
            # no token at all: the call itself is refused, naming the method
            channel = Channel("127.0.0.1", bound.port, ssl=client_ssl_context(cert_pair[0]))
            try:
                with pytest.raises(GRPCError) as refused:
                    await robot_grpc.RobotServiceStub(channel).ResourceNames(
                        robot_pb2.ResourceNamesRequest()
                    )
                assert refused.value.status == Status.UNAUTHENTICATED
                assert "ResourceNames" in (refused.value.message or "")
                with pytest.raises(GRPCError) as forged:
                    await robot_grpc.RobotServiceStub(channel).ResourceNames(
                        robot_pb2.ResourceNamesRequest(),
                        metadata={"authorization": "Bearer v1.e30.AAAA"},
                    )
                assert forged.value.status == Status.UNAUTHENTICATED
                with pytest.raises(GRPCError) as wrong_type:
                    await auth_grpc.AuthServiceStub(channel).Authenticate(
                        auth_pb2.AuthenticateRequest(
                            entity=KEY_ID,
                            credentials=auth_pb2.Credentials(type="robot-secret", payload=KEY),
                        )
                    )
                assert wrong_type.value.status == Status.UNAUTHENTICATED
                # (the SDK leaks its channel when Authenticate fails, so the wrong key is
                # sent through the stub, as the SDK would send it)
                with pytest.raises(GRPCError) as wrong_key:
                    await auth_grpc.AuthServiceStub(channel).Authenticate(
                        auth_pb2.AuthenticateRequest(
                            entity=KEY_ID,
                            credentials=auth_pb2.Credentials(type="api-key", payload="wrong"),
                        )
                    )
                assert wrong_key.value.status == Status.UNAUTHENTICATED
                assert wrong_key.value.message == "the API key id or key is not valid"
                assert "api-key" in (wrong_type.value.message or "")
            finally:
                channel.close()

    with ServerThread(
        lambda: RpcServer([TinyRobot()], api_keys=ApiKeys({KEY_ID: KEY})),
        "127.0.0.1:0",
        ssl=server_ssl_context(*cert_pair),
    ) as running:
        run_sdk(scenario(running.endpoint))


def test_async_key_verifiers_are_awaited(cert_pair):
    seen: list[tuple[str, str]] = []

    async def verify(key_id: str, key: str) -> bool:
        seen.append((key_id, key))
        return key == KEY

    with ServerThread(
        lambda: RpcServer([TinyRobot()], api_keys=verify),
        "127.0.0.1:0",
        ssl=server_ssl_context(*cert_pair),
    ) as running:
        assert run_sdk(_connect(str(running.endpoint), api_key=(KEY_ID, KEY))) == [RESOURCE]
    assert seen == [(KEY_ID, KEY)]


def test_sdk_client_dials_tls_with_a_self_signed_certificate(cert_pair):
    cert, key = cert_pair

    async def scenario(bound) -> None:
        if True:
            # the SDK's own TLS path (no `insecure`), with an API key
            assert await _connect(str(bound), api_key=(KEY_ID, KEY)) == [RESOURCE]
            assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
            # a verifying client trusts the pair when given the certificate
            channel = Channel("127.0.0.1", bound.port, ssl=client_ssl_context(cert))
            try:
                with pytest.raises(GRPCError) as refused:
                    await robot_grpc.RobotServiceStub(channel).ResourceNames(
                        robot_pb2.ResourceNamesRequest()
                    )
                assert refused.value.status == Status.UNAUTHENTICATED
            finally:
                channel.close()
            # a plain-text client gets no answer from a TLS port
            plain = Channel("127.0.0.1", bound.port)
            try:
                with pytest.raises(
                    (
                        ConnectionError,
                        GRPCError,
                        OSError,
                        asyncio.TimeoutError,
                        StreamTerminatedError,
                    )
                ):
                    await robot_grpc.RobotServiceStub(plain).ResourceNames(
                        robot_pb2.ResourceNamesRequest(), timeout=5
                    )
            finally:
                plain.close()

    with ServerThread(
        lambda: RpcServer([TinyRobot()], api_keys=ApiKeys({KEY_ID: KEY})),
        "127.0.0.1:0",
        ssl=server_ssl_context(cert, key),
    ) as running:
        run_sdk(scenario(running.endpoint))


def test_a_bad_certificate_pair_is_reported_naming_the_files(tmp_path):
    (tmp_path / "cert.pem").write_text("nonsense")
    with pytest.raises(ValueError, match=r"cert\.pem.*key\.pem.*serve-cert"):
        server_ssl_context(tmp_path / "cert.pem", tmp_path / "key.pem")


def test_unix_socket_serves_local_sdk_clients_owner_only(tmp_path):
    path = str(tmp_path / "machine.sock")

    async def scenario() -> None:
        server = RpcServer([TinyRobot()], api_keys=ApiKeys({KEY_ID: KEY}))
        await server.start(f"unix:{path}")
        try:
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
            assert await _connect(path) == [RESOURCE]
            second = RpcServer([TinyRobot()])
            with pytest.raises(OSError, match="another server is listening"):
                await second.start(path)
        finally:
            await server.stop()
        assert not os.path.exists(path)

    asyncio.run(scenario())


def test_public_addresses_need_api_keys_unless_forced():
    async def scenario() -> None:
        server = RpcServer([TinyRobot()])
        with pytest.raises(ValueError, match="without API keys"):
            await server.start("0.0.0.0:0")
        bound = await server.start("0.0.0.0:0", allow_unauthenticated_public=True)
        assert bound.port
        await server.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8081", ("127.0.0.1", 8081, None)),
        ("[::1]:9000", ("::1", 9000, None)),
        ("unix:/tmp/x.sock", (None, None, "/tmp/x.sock")),
        ("/run/graph.sock", (None, None, "/run/graph.sock")),
    ],
)
def test_endpoints_parse(text, expected):
    endpoint = parse_endpoint(text)
    assert (endpoint.host, endpoint.port, endpoint.path) == expected


@pytest.mark.parametrize("text", ["8081", "host:", "host:99999", "unix:"])
def test_bad_endpoints_say_the_expected_forms(text):
    with pytest.raises(ValueError, match=r"HOST:PORT|outside"):
        parse_endpoint(text)


class RawCodec(CodecBase):
    __content_subtype__ = "proto"

    def encode(self, message, message_type):
        return message

    def decode(self, data, message_type):
        return data


async def _send_raw(channel: Channel, method: str, payload: bytes) -> None:
    async with channel.request(method, Cardinality.UNARY_UNARY, bytes, bytes) as call_stream:
        await call_stream.send_message(payload, end=True)
        await call_stream.recv_message()


class SlowRobot(TinyRobot):
    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def ResourceNames(self, stream) -> None:
        self.started.set()
        await asyncio.sleep(0.3)
        await super().ResourceNames(stream)


def test_oversized_and_garbled_requests_get_a_status_and_stop_is_graceful():
    async def scenario() -> None:
        robot = SlowRobot()
        server = RpcServer([robot], max_message_size=1000)
        bound = await server.start("127.0.0.1:0")
        channel = Channel("127.0.0.1", bound.port)
        try:
            stub = robot_grpc.RobotServiceStub(channel)
            big = robot_pb2.LogRequest(logs=[{"message": "x" * 5000}])
            with pytest.raises(GRPCError) as too_big:
                await stub.Log(big)
            assert too_big.value.status == Status.RESOURCE_EXHAUSTED
            assert "accepts at most 0.0 MB" in (too_big.value.message or "")
            raw = Channel("127.0.0.1", bound.port, codec=RawCodec())
            try:
                with pytest.raises(GRPCError) as garbled:
                    await _send_raw(raw, "/viam.robot.v1.RobotService/Log", b"\xff\xff\xff\xff")
                assert garbled.value.status == Status.INVALID_ARGUMENT
                assert "not a valid viam.robot.v1.LogRequest" in (garbled.value.message or "")
            finally:
                raw.close()
            # a call in flight when stop() begins still gets its answer
            call = asyncio.ensure_future(stub.ResourceNames(robot_pb2.ResourceNamesRequest()))
            await robot.started.wait()
            started = time.monotonic()
            await server.stop(grace_s=5)
            assert (await call).resources == [RESOURCE]
            assert time.monotonic() - started < 5
        finally:
            channel.close()

    asyncio.run(scenario())


def test_client_ssl_context_without_verification_still_speaks_h2():
    context = client_ssl_context(verify=False)
    assert context.verify_mode == ssl.CERT_NONE


def test_the_server_lets_clients_send_large_http2_frames():
    from pipeline.rpc.server import MAX_FRAME_SIZE

    async def scenario() -> int:
        server = RpcServer([TinyRobot()])
        bound = await server.start("127.0.0.1:0")
        channel = Channel("127.0.0.1", bound.port)
        try:
            await robot_grpc.RobotServiceStub(channel).ResourceNames(
                robot_pb2.ResourceNamesRequest()
            )
            return int(channel._protocol.connection._connection.max_outbound_frame_size)
        finally:
            channel.close()
            await server.stop()

    assert asyncio.run(scenario()) == MAX_FRAME_SIZE


@pytest.mark.parametrize(
    "data", [b"", b"abc", b"0123456789", b"0123456789a", bytes(range(256)) * 4]
)
def test_frame_reprs_read_ten_bytes_and_say_what_hyperframe_said(data):
    import binascii

    from hyperframe import frame

    import pipeline.rpc.server  # noqa: F401 - installs the cheap repr

    def hyperframes_own(data):
        if not data:
            return "None"
        r = binascii.hexlify(data).decode("ascii")
        return "<hex:" + (r[:20] + "..." if len(r) > 20 else r) + ">"

    assert frame._raw_data_repr(data) == hyperframes_own(data)

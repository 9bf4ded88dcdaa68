"""API keys and bearer tokens through Viam's authentication flow.

The Viam SDK authenticates a connection by calling ``proto.rpc.v1.AuthService/Authenticate``
with ``entity`` = the API key's id and ``credentials{type: "api-key", payload: key}``; it then
sends ``authorization: Bearer <access_token>`` on every call. Here:

- ``AuthService`` answers ``Authenticate``: it asks a pluggable ``KeyVerifier`` (``(key_id, key)
  -> bool``, plain or async) whether the key is valid, and if so returns a token from a
  ``TokenIssuer``. The machine backs the verifier with a key file (``ApiKeys``); the cloud can
  back it with hashed keys in its database.
- ``install_auth_check(server, issuer)`` refuses every call on that grpclib server, except
  ``Authenticate`` itself, whose ``authorization`` metadata does not carry a valid, unexpired
  token: UNAUTHENTICATED with a message saying what was missing or wrong. The token's subject
  (the key id) is put in the call's metadata under ``SUBJECT_METADATA_KEY`` (any client-sent
  value of that key is dropped first); ``subject_of(stream)`` reads it.

Tokens are ``v1.<payload>.<signature>``: a base64url JSON payload (``sub``, ``iat``, ``exp``)
signed with HMAC-SHA256 under the issuer's secret (random per process unless given). Every
comparison of secrets is constant-time (``hmac.compare_digest``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import inspect
import json
import os
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grpclib import GRPCError, Status
from grpclib.events import RecvRequest, listen
from grpclib.server import Server, Stream
from viam.gen.proto.rpc.v1 import auth_grpc, auth_pb2

__all__ = [
    "AUTHENTICATE_METHOD",
    "SUBJECT_METADATA_KEY",
    "ApiKeys",
    "AuthService",
    "InvalidTokenError",
    "KeyVerifier",
    "TokenClaims",
    "TokenIssuer",
    "install_auth_check",
    "subject_of",
]

#: The one method a caller may call without a token.
AUTHENTICATE_METHOD = "/proto.rpc.v1.AuthService/Authenticate"
#: Metadata key under which the check puts the authenticated key id for handlers.
SUBJECT_METADATA_KEY = "x-pipeline-auth-subject"
API_KEY_CREDENTIALS = "api-key"

#: ``(key_id, key) -> valid?``; may be a coroutine function (a database lookup).
KeyVerifier = Callable[[str, str], "bool | Awaitable[bool]"]


class InvalidTokenError(ValueError):
    """A bearer token is malformed, wrongly signed or expired; the message says which."""


@dataclass(frozen=True)
class TokenClaims:
    """What a valid token says: the key id it was issued to, and when it was issued/expires."""

    subject: str
    issued_at: float
    expires_at: float


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenIssuer:
    """Issues and verifies expiring HMAC-signed bearer tokens.

    Args:
        secret: the signing key; random per process when omitted (tokens then die with the
            process, and clients authenticate again on reconnect).
        lifetime_s: how long a token is valid.
        clock: seconds since the epoch (tests pass their own).
    """

    def __init__(
        self,
        secret: bytes | None = None,
        *,
        lifetime_s: float = 24 * 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if lifetime_s <= 0:
            raise ValueError(f"token lifetime_s must be > 0, got {lifetime_s}")
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self._lifetime_s = lifetime_s
        self._clock = clock

    def _sign(self, body: str) -> str:
        return _b64encode(hmac.new(self._secret, body.encode("ascii"), hashlib.sha256).digest())

    def issue(self, subject: str) -> str:
        """A token for ``subject`` (the key id), valid for the issuer's lifetime."""
        now = self._clock()
        claims = {"sub": subject, "iat": now, "exp": now + self._lifetime_s}
        body = "v1." + _b64encode(json.dumps(claims, separators=(",", ":")).encode())
        return f"{body}.{self._sign(body)}"

    def verify(self, token: str) -> TokenClaims:
        """The claims of a valid token.

        Raises:
            InvalidTokenError: malformed, signed by someone else, or expired.
        """
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != "v1":
            raise InvalidTokenError("the bearer token is malformed")
        body = f"{parts[0]}.{parts[1]}"
        if not hmac.compare_digest(self._sign(body), parts[2]):
            raise InvalidTokenError("the bearer token's signature is not valid here")
        try:
            claims = json.loads(_b64decode(parts[1]))
            result = TokenClaims(str(claims["sub"]), float(claims["iat"]), float(claims["exp"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidTokenError("the bearer token's payload is malformed") from exc
        if self._clock() >= result.expires_at:
            raise InvalidTokenError("the bearer token has expired; authenticate again")
        return result


class ApiKeys:
    """A fixed set of API keys (id -> key), checked in constant time; a ``KeyVerifier``.

    Only SHA-256 digests of the keys are kept in memory.
    """

    def __init__(self, keys: Mapping[str, str]) -> None:
        for key_id, key in keys.items():
            if not key_id or not key:
                raise ValueError("API key ids and keys must be non-empty")
        self._digests = {k: hashlib.sha256(v.encode()).digest() for k, v in keys.items()}

    def __len__(self) -> int:
        return len(self._digests)

    def __call__(self, key_id: str, key: str) -> bool:
        # compare against a dummy digest for unknown ids, so timing does not tell ids apart
        expected = self._digests.get(key_id, b"\0" * 32)
        given = hashlib.sha256(key.encode()).digest()
        return hmac.compare_digest(expected, given) and key_id in self._digests

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ApiKeys:
        """Read a key file: one ``KEY_ID KEY`` pair per line; blank lines and ``#`` comments.

        Raises:
            ValueError: a line is not two fields, an id repeats, or the file has no key
                (the message names the file and line).
        """
        keys: dict[str, str] = {}
        text = Path(path).read_text(encoding="utf-8")
        for number, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            fields = line.split()
            if len(fields) != 2:
                raise ValueError(
                    f"{path}:{number}: expected 'KEY_ID KEY' (two fields), got {len(fields)}"
                )
            if fields[0] in keys:
                raise ValueError(f"{path}:{number}: API key id {fields[0]!r} appears twice")
            keys[fields[0]] = fields[1]
        if not keys:
            raise ValueError(f"{path}: no API keys (expected lines of 'KEY_ID KEY')")
        return cls(keys)

    @staticmethod
    def generate() -> tuple[str, str]:
        """A new random ``(key_id, key)`` pair; the id is a UUID, as the Viam SDK requires."""
        return str(uuid.uuid4()), secrets.token_hex(32)  # hex: never read as an option


class AuthService(auth_grpc.AuthServiceBase):
    """``proto.rpc.v1.AuthService``: API key id + key -> a bearer token."""

    def __init__(self, verify_key: KeyVerifier, issuer: TokenIssuer) -> None:
        self._verify_key = verify_key
        self._issuer = issuer

    async def Authenticate(
        self, stream: Stream[auth_pb2.AuthenticateRequest, auth_pb2.AuthenticateResponse]
    ) -> None:
        request = await stream.recv_message()
        assert request is not None
        credentials_type = request.credentials.type
        if credentials_type != API_KEY_CREDENTIALS:
            raise GRPCError(
                Status.UNAUTHENTICATED,
                f"credentials of type {credentials_type!r} are not accepted here; "
                f"use an API key (type {API_KEY_CREDENTIALS!r}, entity = the key's id)",
            )
        if not request.entity or not request.credentials.payload:
            raise GRPCError(
                Status.UNAUTHENTICATED, "an API key id (entity) and key (payload) are required"
            )
        verdict = self._verify_key(request.entity, request.credentials.payload)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        if not verdict:
            raise GRPCError(Status.UNAUTHENTICATED, "the API key id or key is not valid")
        token = self._issuer.issue(request.entity)
        await stream.send_message(auth_pb2.AuthenticateResponse(access_token=token))


def install_auth_check(
    server: Server,
    issuer: TokenIssuer,
    *,
    public_methods: Iterable[str] = (AUTHENTICATE_METHOD,),
) -> None:
    """Refuse every call on ``server`` without a valid bearer token (UNAUTHENTICATED).

    ``public_methods`` (full gRPC paths) are let through without one.
    """
    public = frozenset(public_methods)

    async def check(event: RecvRequest) -> None:
        metadata: Any = event.metadata
        metadata.popall(SUBJECT_METADATA_KEY, None)
        if event.method_name in public:
            return
        header = metadata.get("authorization")
        if header is None:
            raise GRPCError(
                Status.UNAUTHENTICATED,
                f"{event.method_name}: this server requires an API key; authenticate first "
                "(Viam SDK: RobotClient.Options.with_api_key(api_key, api_key_id))",
            )
        scheme, _, token = str(header).partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise GRPCError(
                Status.UNAUTHENTICATED,
                f"{event.method_name}: the authorization header must be 'Bearer <token>'",
            )
        try:
            claims = issuer.verify(token.strip())
        except InvalidTokenError as exc:
            raise GRPCError(Status.UNAUTHENTICATED, f"{event.method_name}: {exc}") from None
        metadata[SUBJECT_METADATA_KEY] = claims.subject

    listen(server, RecvRequest, check)


def subject_of(stream: Stream[Any, Any]) -> str | None:
    """The key id that authenticated this call, or None on a server without the check."""
    metadata: Any = stream.metadata
    value = metadata.get(SUBJECT_METADATA_KEY) if metadata is not None else None
    return None if value is None else str(value)

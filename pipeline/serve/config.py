"""How a graph is served: the ``serve:`` section of a graph file, or ``pipeline run --serve``.

::

    serve:
      address: 127.0.0.1:8081        # TCP; binding a non-loopback address needs API keys
      unix_socket: /tmp/faces.sock   # optional: local clients, guarded by file mode 0600
      tls: {cert: certs/cert.pem, key: certs/key.pem}   # `pipeline serve-cert` makes a pair
      api_key_file: keys.txt         # lines of "KEY_ID KEY"; or api_keys: [{id:, key:}]

Command-line options override the file's values. With API keys and no certificate, a
self-signed pair is made (and reused) under ``~/.cache/pipeline/serve/``: the Viam SDK sends API
keys only over TLS. Only pydantic here, so the graph schema needs no server packages.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ApiKeySpec", "ServeConfig", "TlsSpec"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsSpec(_Strict):
    """A certificate and its private key, PEM files."""

    cert: str = Field(description="Certificate file (PEM).")
    key: str = Field(description="Private key file (PEM).")


class ApiKeySpec(_Strict):
    """One API key: its id (a UUID, as the Viam SDK requires) and the secret key."""

    id: str = Field(min_length=1, description="The key's id (a UUID).")
    key: str = Field(min_length=8, description="The secret key.")


class ServeConfig(_Strict):
    """The graph's gRPC door: Viam's vision, ML model and camera APIs."""

    address: str | None = Field(
        "127.0.0.1:8081", description="HOST:PORT to listen on (TCP); null for none."
    )
    unix_socket: str | None = Field(None, description="A Unix socket path for local clients.")
    tls: TlsSpec | None = Field(None, description="Serve TCP over TLS with this pair.")
    api_keys: list[ApiKeySpec] = Field(
        default_factory=list, description="API keys; every call then needs a token."
    )
    api_key_file: str | None = Field(None, description='A file of "KEY_ID KEY" lines.')
    allow_public_without_keys: bool = Field(
        False, description="Serve a non-loopback address without API keys (not recommended)."
    )
    max_message_mb: float = Field(32.0, gt=0, le=1024, description="Largest request accepted.")
    request_timeout_s: float = Field(10.0, gt=0, le=600, description="Longest a request may run.")
    queue_per_node: int = Field(
        8, ge=1, le=1024, description="Requests waiting per node before RESOURCE_EXHAUSTED."
    )
    threads_per_node: int = Field(2, ge=1, le=64, description="Requests run at once per node.")
    nice: int = Field(
        10,
        ge=0,
        le=19,
        description="CPU niceness of the server process: requests yield to the graph's nodes.",
    )

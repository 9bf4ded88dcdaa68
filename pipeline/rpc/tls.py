"""TLS for the gRPC servers: self-signed certificates for local use, and SSL contexts.

``make_self_signed`` writes an ECDSA P-256 certificate and key (PEM; the key file mode 0600)
valid for the given host names and IP addresses, with the ``cryptography`` package. The Viam
SDK dials ``localhost``/``127.*`` over TLS without verifying the certificate, so a self-signed
pair is enough for local clients; clients elsewhere should verify against the certificate
(``client_ssl_context(cafile=cert)``) or get one from a real CA.

Server contexts speak TLS 1.2+ with ALPN ``h2`` (gRPC needs HTTP/2), and offer the ECDHE
AES-GCM/ChaCha20 suites the SDK asks for.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from collections.abc import Sequence
from pathlib import Path

__all__ = ["DEFAULT_HOSTS", "client_ssl_context", "make_self_signed", "server_ssl_context"]

DEFAULT_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"


def make_self_signed(
    cert_path: str | os.PathLike[str],
    key_path: str | os.PathLike[str],
    *,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    days: int = 365,
    common_name: str = "edge-vision-pipeline",
) -> None:
    """Write a self-signed certificate and its private key (PEM) for ``hosts``.

    Raises:
        ValueError: no hosts, or ``days`` < 1.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    if not hosts:
        raise ValueError("a certificate needs at least one host name or IP address")
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_file = Path(key_path)
    key_file.parent.mkdir(parents=True, exist_ok=True)
    Path(cert_path).parent.mkdir(parents=True, exist_ok=True)
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key_bytes)
    os.chmod(key_file, 0o600)
    Path(cert_path).write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def server_ssl_context(
    cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]
) -> ssl.SSLContext:
    """A server context for gRPC over TLS (1.2+, ALPN h2) with this certificate and key.

    Raises:
        ValueError: the files are missing or do not hold a matching certificate and key
            (the message names both files).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(_CIPHERS)
    context.set_alpn_protocols(["h2"])
    try:
        context.load_cert_chain(os.fspath(cert_path), os.fspath(key_path))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(
            f"cannot load the TLS certificate {os.fspath(cert_path)!r} with key "
            f"{os.fspath(key_path)!r}: {exc}; make a local pair with `pipeline serve-cert`"
        ) from exc
    return context


def client_ssl_context(
    cafile: str | os.PathLike[str] | None = None, *, verify: bool = True
) -> ssl.SSLContext:
    """A client context for gRPC over TLS: verifies against ``cafile`` (or the system's CAs),
    or not at all with ``verify=False`` (what the Viam SDK does for local hosts)."""
    if verify:
        context = ssl.create_default_context(
            cafile=os.fspath(cafile) if cafile is not None else None
        )
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2"])
    return context

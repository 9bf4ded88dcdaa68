"""Why a camera did not open, in words a user can act on, and URLs safe to print.

A device that did not open is checked on disk (does the ``/dev/video`` node exist, may this
user open it); a stream URL is probed with a plain TCP connection (refused, unknown host, no
answer, or answering but sending nothing OpenCV reads as video); an RTSP URL also gets a
``DESCRIBE`` with the URL's credentials, so wrong credentials and a wrong path are told apart.
"""

from __future__ import annotations

import base64
import glob
import hashlib
import os
import re
import socket
import sys
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = ["DEFAULT_PORTS", "diagnose_device", "diagnose_url", "redact_url", "rtsp_refusal"]

DEFAULT_PORTS = {"http": 80, "https": 443, "rtsp": 554, "rtsps": 322, "rtmp": 1935}
"""The port each stream scheme uses when the URL names none."""


def redact_url(url: str) -> str:
    """The URL with its password (if any) replaced by ``***``, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def diagnose_device(source: int | str, *, timed_out: bool, open_timeout_s: float) -> str:
    """Why a device (an index or a path) did not open, and what to do."""
    waited = f"{open_timeout_s:g} s (open_timeout_s)"
    if timed_out:
        return f"no answer within {waited}; check the device, or raise open_timeout_s"
    path = f"/dev/video{source}" if isinstance(source, int) else source
    if sys.platform == "linux" and path.startswith("/dev/"):
        if not os.path.exists(path):
            present = sorted(glob.glob("/dev/video*"))
            return (
                f"{path} does not exist (video devices present: "
                f"{', '.join(present) or 'none'}); check that the camera is plugged in "
                "and params.device"
            )
        if not os.access(path, os.R_OK | os.W_OK):
            return f"no permission to use {path}; add this user to the 'video' group"
        return (
            f"{path} exists but did not open: another program may be using it, or it is "
            "not a capture node (many cameras have a second, metadata-only /dev/video node)"
        )
    if isinstance(source, int):
        return "no camera answered at this index; check that it is connected"
    if not os.path.exists(path):
        return f"no such device or file {path!r}; check params.device"
    return "OpenCV cannot read it as a video stream with this backend; check params.backend"


def diagnose_url(url: str, *, timed_out: bool, open_timeout_s: float) -> str:
    """Why a stream URL did not open: a TCP probe of its host tells refused, unknown,
    unreachable and silent hosts apart."""
    waited = f"{open_timeout_s:g} s (open_timeout_s)"
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname
    try:
        port = parts.port or DEFAULT_PORTS.get(scheme)
    except ValueError:
        return "the URL's port is not a number; check params.device"
    if not host or port is None:
        if timed_out:
            return f"no video within {waited}"
        return "OpenCV (FFMPEG) cannot read this URL; check its scheme, host and path"
    try:
        probe = socket.create_connection((host, port), timeout=min(2.0, open_timeout_s))
    except ConnectionRefusedError:
        return (
            f"connection refused: nothing listens on {host}:{port}; check that the camera "
            "or stream server is running and the port is right"
        )
    except socket.gaierror:
        return f"host {host!r} not found; check the URL"
    except TimeoutError:
        return f"{host}:{port} does not answer; check the address and the network"
    except OSError as exc:
        return f"{host}:{port} is unreachable ({exc.strerror or exc}); check the network"
    probe.close()
    if scheme == "rtsp":
        reason = rtsp_refusal(url, host, port, min(2.0, open_timeout_s))
        if reason:
            return reason
    if timed_out:
        return (
            f"{host}:{port} accepts connections but sent no video within {waited}; check "
            "the URL's path and that the camera streams, or raise open_timeout_s"
        )
    return (
        f"{host}:{port} answers but sent nothing OpenCV reads as video; check the URL's "
        "path, the credentials and the stream's format"
    )


def rtsp_refusal(url: str, host: str, port: int, timeout_s: float) -> str:
    """Ask an RTSP server to ``DESCRIBE`` the URL (with its credentials, Basic or Digest);
    why it refused (wrong credentials, no such stream), or empty when it did not refuse."""
    parts = urlsplit(url)
    user = unquote(parts.username or "")
    password = unquote(parts.password or "")
    where = f"{host}:{port}"
    bare = redact_url(url).replace(f"{parts.username}:***@", "") if parts.username else url
    target = urlunsplit(parts._replace(netloc=where))
    status, headers = _describe(host, port, target, timeout_s, None)
    if status == 401 and user:
        challenge = headers.get("www-authenticate", "")
        status, headers = _describe(
            host, port, target, timeout_s, _authorization(challenge, user, password, target)
        )
    if status == 401:
        if not user:
            return (
                f"{where} asks for credentials (401 Unauthorized): put them in the URL, "
                f"rtsp://user:password@{where}{parts.path}"
            )
        return (
            f"{where} refused the credentials of user {user!r} (401 Unauthorized); check the "
            f"user name and password in the URL ({bare})"
        )
    if status == 404:
        return f"{where} has no stream at {parts.path or '/'!r} (404 Not Found); check the path"
    if status is not None and status >= 400:
        return f"{where} refused the stream with RTSP status {status}; check the URL"
    return ""


def _authorization(challenge: str, user: str, password: str, uri: str) -> str:
    if challenge.lower().startswith("digest"):
        fields = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge))
        realm, nonce = fields.get("realm", ""), fields.get("nonce", "")
        ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()
        ha2 = hashlib.md5(f"DESCRIBE:{uri}".encode()).hexdigest()
        response = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()
        return (
            f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
            f'response="{response}"'
        )
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return f"Basic {token}"


def _describe(
    host: str, port: int, uri: str, timeout_s: float, authorization: str | None
) -> tuple[int | None, dict[str, str]]:
    """The status and headers of one RTSP DESCRIBE; (None, {}) when no answer came."""
    request = f"DESCRIBE {uri} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n"
    if authorization:
        request += f"Authorization: {authorization}\r\n"
    request += "\r\n"
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as conn:
            conn.sendall(request.encode())
            data = b""
            while b"\r\n\r\n" not in data and len(data) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None, {}
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    match = re.match(r"RTSP/\d\.\d (\d{3})", head[0]) if head else None
    if match is None:
        return None, {}
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(match.group(1)), headers

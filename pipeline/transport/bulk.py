"""The bulk path of a tcp edge: a frame's big arrays sealed with an AEAD in pieces, on a
plain TCP connection of their own.

CURVE (``pipeline.transport.curve``) costs most of a tcp edge's throughput at 1080p: libzmq
copies each message into and out of its encode buffer around xsalsa20-poly1305. Sealing the
whole frame once and sending it on a second ZeroMQ socket still cost 39 % (two passes over 6
MB that are in no cache any more, and ZeroMQ's I/O threads' copies); sealing in pieces that
fit in L2 and writing each to a plain TCP socket while it is still in cache costs about half
that (``benchmarks/bulk_carrier.py``). So a tcp edge has two connections:

- the **CURVE socket** (ZeroMQ PAIR, the consumer binds), as before: the handshake, the run's
  authentication (the ``Gatekeeper``), releases, end of stream, small messages, and for a
  message with big arrays its head (envelope + body: seq, kind, shapes, dtypes) and a
  **descriptor** (the producer's salt, a 64-bit counter, how many parts);
- the **bulk connection** (a plain TCP socket; the consumer listens, one producer at a
  time): per message a **bulk header** (the salt's id, the counter, the piece size, each
  part's length), then each part sealed in pieces of ``PIECE`` bytes with AES-256-GCM or
  ChaCha20-Poly1305 (``cryptography``: OpenSSL, never a primitive of our own). The node's
  thread seals each piece by ``encrypt_into`` into one small buffer and sends it while it
  is still in cache (no ZeroMQ, no copy but the kernel's). On the consumer a thread of the edge
  reads eagerly (the producer never waits on the consumer's node being busy): it
  ``recv_into``s each piece into a small buffer and ``decrypt_into``s it straight into the
  array the node will read, so the frame is never written twice.

Keys. The consumer makes, when it binds, per edge: a CURVE key pair, a 256-bit AEAD key and a
24-byte token, and hands them (``EdgeSecrets``, inside ``InputEdge.key``) to its producer
through the supervisor, exactly like the CURVE key: ``Hello`` and ``Wiring`` on the control
socket (the run folder's ``ipc://`` socket, mode 0700; on a cluster a CURVE socket that admits
only the run's keys, which reached the nodes through the launcher). Never over the data plane.
A restarted consumer binds anew and makes new ones.

The bulk connection's hello. The consumer's listener sends each new connection a challenge
(16 random bytes); within ``HELLO_MS`` the peer must answer HMAC-SHA256(token, edge name +
challenge). Anything else (no answer, a wrong one, garbage, a ZeroMQ greeting) is closed and
counted as refused, on the same counter as the CURVE gatekeeper's (``Gatekeeper.refused``);
at most ``MAX_PENDING`` connections may be saying hello at once (the oldest is dropped), so a
stranger that connects and says nothing blocks neither the edge nor the listener. The token
itself never crosses the wire. A connection that answers replaces the previous one (a
restarted producer).

Nonces never repeat under a key: each producer incarnation (``EdgeSender``) draws a 128-bit
salt and seals under its own key, HKDF-SHA256(edge key, salt, edge name). The salt travels
only inside CURVE (the descriptor; the bulk connection shows 8 bytes of its hash), so someone
who records the traffic and later learns an edge key still cannot open it: CURVE's ephemeral
session keys protected the salt (forward secrecy as good as CURVE's). A piece's nonce is its
index over the whole message (32 bits) and the message's 64-bit counter (refused before it
could wrap). The associated data of every piece is the edge's name and the whole bulk header
(salt id, counter, piece size, parts and each part's length).

Why a message's bytes belong to its head, though the head is not in the associated data (the
consumer's thread opens the pieces before the node has read the head): the head and the
descriptor travel together in one CURVE message (authenticated, never replayed); the
descriptor names (salt, counter); only a producer holding key(salt) can seal pieces that open
under (salt, counter), and it seals one message per counter; ``parts_for`` takes the message
of that counter only, checks its number of parts against the descriptor, and the codec checks
each part's length against the head's shape and dtype. A truncated message fails: the lengths
are in the associated data, so a piece cut short, missing or moved fails its tag.

Threat model (the network between the hosts is hostile; the hosts and the launcher are not):

- Who can connect. To the CURVE socket: only a peer holding the consumer's server key (and
  on a cluster the run's client key, checked by the gatekeeper); others fail the handshake,
  refused and counted. To the bulk connection: only a peer that proves it holds the edge's
  token (the challenge above); others are refused and counted. Someone on the path can take
  over an established connection (TCP is not authenticated): that gains them no more than
  being on the path already gave (see next): the hello admits, the AEAD authenticates.
- What they can learn. Someone reading the wire sees, on the bulk connection, the sizes of
  the sealed parts, the counters, a hash of each incarnation's salt, never a byte of a frame
  nor the token; the CURVE socket hides everything else (heads, metadata, small messages).
  Timing and sizes show.
- What they can do. A forged, altered, truncated, replayed (within or across producer
  incarnations), reordered or misplaced piece fails its tag or its counter: the message it
  belonged to is dropped and counted (``InputEdge.malformed``), its credit goes back to the
  producer, the connection is closed (the stream cannot be trusted after it; the producer
  connects again), the node goes on. A header that makes no sense closes the connection too.
  They can delay or drop traffic (anyone on the path can): a message whose bulk bytes have
  not come within ``WAIT_MS`` (or were passed by a later one) is dropped and counted. They
  cannot make the consumer read shared memory, hold more than ``stash`` messages of at most
  ``MAX_MESSAGE`` bytes, or run code: nothing on the wire is unpickled.
- What it does not protect: a compromised host or launcher (it holds the keys); traffic
  analysis (frame sizes and rates); availability against someone on the path.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import dataclasses
import hmac
import os
import platform
import secrets
import select
import selectors
import socket
import struct
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import zmq
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pipeline.errors import TransportError
from pipeline.transport.codec import MalformedMessage

__all__ = [
    "BULK_MIN",
    "CIPHERS",
    "DESC_SIZE",
    "PIECE",
    "WAIT_MS",
    "BulkReceiver",
    "BulkSender",
    "EdgeSecrets",
    "Opener",
    "Sealer",
    "default_cipher",
    "default_piece",
    "keep_receive_buffers",
]

Aead = AESGCM | ChaCha20Poly1305
CIPHERS: dict[str, type[AESGCM] | type[ChaCha20Poly1305]] = {
    "aes-256-gcm": AESGCM,
    "chacha20-poly1305": ChaCha20Poly1305,
}
TAG = 16  # both ciphers' tag
BULK_MIN = 64 * 1024  # a message whose arrays are smaller stays on the CURVE socket alone
PIECE = 256 * 1024  # the piece size where the L2 cache's size is not known
MIN_PIECE, MAX_PIECE = 4 * 1024, 16 * 1024 * 1024
WAIT_MS = 5000  # a head whose bulk bytes have not come by then is dropped
STASH = 16  # bulk messages kept ahead of their heads (at least; more for a longer queue)
MAX_PARTS = 64  # codec.MAX_ARRAYS
MAX_MESSAGE = 1 << 30  # the bytes of one bulk message, at most
MAX_COUNTER = (1 << 63) - 1
HELLO_MS = 2000  # a connection that has not proved it holds the token by then is refused
MAX_PENDING = 8  # connections saying hello at once; beyond, the oldest is refused
CONNECT_S = 2.0  # the producer's connect and hello
SEND_S = 5.0  # a sendall that has not finished by then drops the connection
RETRY_S = 0.5  # after a failed connect, the producer tries again no sooner
_MAGIC = b"PB2"
_VERSION = 2
_DESC = struct.Struct("<3s16sQB")  # magic, salt, counter, parts (on the CURVE socket)
_HEAD = struct.Struct("<3s8sQBI")  # magic, the salt's id, counter, parts, piece size
_LEN = struct.Struct("<Q")
_NONCE = struct.Struct("<IQ")  # piece, counter
_CHALLENGE = struct.Struct("<3sB16s")  # magic, version, random
_HELLO = struct.Struct("<3sB32s")  # magic, version, HMAC-SHA256(token, edge + challenge)
DESC_SIZE = _DESC.size  # far below codec.INLINE_MAX: never an array's frame


def default_cipher() -> str:
    """AES-256-GCM where the CPU has AES instructions (x86 AES-NI, ARMv8's crypto
    extensions: several GB/s), else ChaCha20-Poly1305 (the faster one in software)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features") and "aes" in value.split():
                    return "aes-256-gcm"
    except OSError:
        pass
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        return "aes-256-gcm"
    return "chacha20-poly1305"


def default_piece() -> int:
    """The piece size a producer seals in: half the CPU's L2 cache (a piece is sealed into a
    buffer that the kernel then copies from: both stay in L2), between 64 KiB and 1 MiB;
    ``PIECE`` where the cache's size is not known. Measured on a 2 MiB-L2 x86 (``benchmarks/
    bulk_carrier.py``): 1 MiB pieces cost the producer 10-15 % less CPU than 256 KiB ones
    (fewer system calls and wake-ups), the consumer the same."""
    try:
        with open("/sys/devices/system/cpu/cpu0/cache/index2/size", encoding="ascii") as f:
            text = f.read()
    except OSError:
        return PIECE
    text = text.strip().upper()
    units = {"K": 1 << 10, "M": 1 << 20}
    try:
        size = int(text[:-1]) * units[text[-1]] if text[-1:] in units else int(text)
    except ValueError:
        return PIECE
    return min(1 << 20, max(64 << 10, size // 2))


# glibc's mallopt() parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
HEAP_KEEP = 64 << 20  # freed heap a receiving process keeps for the next messages
_heap_kept: bool | None = None


def keep_receive_buffers() -> bool:
    """Keep a process's freed big buffers for its next ones (glibc only; once per process;
    True if in effect).

    libzmq receives each big message into a buffer of its own (``malloc``), which the node
    frees when it releases the message. glibc's defaults could give a 1080p frame's 6 MB
    fresh pages after a free trims the heap: 1,500 page faults (each a zeroed page) per
    frame, a third of the receiving I/O thread's time when a tcp edge's arrays came on a
    ZeroMQ socket. Raising the mmap threshold to glibc's most (32 MiB on 64-bit) and the trim
    threshold to ``HEAP_KEEP`` makes such buffers come from, and go back to, the heap, whose
    pages stay mapped; the process keeps up to ``HEAP_KEEP`` of freed memory. Every process
    with a tcp input calls it (``BulkReceiver``). Its receiving thread's arrays take few
    faults with glibc's defaults too (0.1 per frame, ``tests/pipeline/transport/
    test_bulk.py``), but with the thresholds raised the edge still did 1.11-1.32x the
    frames/s (paired, three runs of ``benchmarks/cluster.py``: "glibc defaults" row).
    """
    global _heap_kept
    if _heap_kept is None:
        _heap_kept = False
        if platform.libc_ver()[0] == "glibc":
            try:
                mallopt = ctypes.CDLL(None).mallopt
            except (OSError, AttributeError):
                return False
            mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
            mallopt.restype = ctypes.c_int
            for threshold in (32 << 20, 16 << 20):  # glibc's most: 64-bit, 32-bit
                if mallopt(_M_MMAP_THRESHOLD, threshold):
                    _heap_kept = bool(mallopt(_M_TRIM_THRESHOLD, HEAP_KEEP))
                    break
    return _heap_kept


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


@dataclasses.dataclass(frozen=True)
class EdgeSecrets:
    """What the producer of one tcp edge needs from its consumer, made by the consumer when
    it binds and handed over by the supervisor (``InputEdge.key``): the CURVE server key,
    the bulk listener's address, the cipher, the AEAD key and the token whose possession a
    bulk connection proves (``BulkReceiver``)."""

    curve_key: str  # Z85, public
    bulk_endpoint: str
    cipher: str
    key: bytes
    token: bytes

    @classmethod
    def generate(cls, curve_key: str, bulk_endpoint: str, cipher: str = "") -> EdgeSecrets:
        cipher = cipher or default_cipher()
        if cipher not in CIPHERS:
            raise TransportError(f"unknown cipher {cipher!r}: one of {', '.join(CIPHERS)}")
        return cls(
            curve_key, bulk_endpoint, cipher, secrets.token_bytes(32), secrets.token_bytes(24)
        )

    def to_wire(self) -> str:
        return " ".join(
            (self.curve_key, self.cipher, _b64(self.key), _b64(self.token), self.bulk_endpoint)
        )

    @classmethod
    def from_wire(cls, text: str, edge: str = "") -> EdgeSecrets:
        """Raises:
        TransportError: not the secrets of a tcp edge (saying which edge)."""
        parts = text.split(" ")
        try:
            if len(parts) != 5 or len(parts[0]) != 40 or parts[1] not in CIPHERS:
                raise ValueError("not five fields")
            key = base64.urlsafe_b64decode(parts[2])
            token = base64.urlsafe_b64decode(parts[3])
            if len(key) != 32 or not token or not parts[4].startswith("tcp://"):
                raise ValueError("bad key, token or endpoint")
        except (ValueError, binascii.Error):
            raise TransportError(
                f"edge {edge}: the consumer's keys are not those of a tcp edge (a producer and "
                "a consumer from different versions of the pipeline?)"
            ) from None
        return cls(parts[0], parts[4], parts[1], key, token)

    def __repr__(self) -> str:  # never print a secret into a log
        return f"EdgeSecrets(curve_key={self.curve_key!r}, bulk={self.bulk_endpoint!r})"


def salt_id(salt: bytes) -> bytes:
    """What the bulk connection shows of a salt (which only the CURVE socket carries): 8
    bytes of its SHA-256, enough to tell incarnations apart, nothing to derive its key from."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(salt)
    return digest.finalize()[:8]


def _derive(secrets_: EdgeSecrets, edge: str, salt: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=salt, info=b"pipeline bulk v2 " + edge.encode()
    ).derive(secrets_.key)


def _proof(token: bytes, edge: str, challenge: bytes) -> bytes:
    return hmac.digest(token, b"pipeline bulk hello " + edge.encode() + challenge, "sha256")


def pieces(nbytes: int, piece: int) -> int:
    """How many pieces a part of ``nbytes`` is sealed in (an empty part: one, its tag)."""
    return max(1, -(-nbytes // piece))


def sealed_size(nbytes: int, piece: int) -> int:
    return nbytes + pieces(nbytes, piece) * TAG


@dataclasses.dataclass
class BulkHeader:
    """What precedes a bulk message's pieces (all of it is associated data of each)."""

    sid: bytes
    counter: int
    piece: int
    lengths: list[int]
    raw: bytes

    @classmethod
    def make(cls, sid: bytes, counter: int, piece: int, lengths: list[int]) -> BulkHeader:
        raw = _HEAD.pack(_MAGIC, sid, counter, len(lengths), piece)
        raw += b"".join(_LEN.pack(n) for n in lengths)
        return cls(sid, counter, piece, lengths, raw)

    @classmethod
    def parse_fixed(cls, data: bytes) -> tuple[bytes, int, int, int]:
        """(salt id, counter, parts, piece) of a header's fixed part.

        Raises:
            MalformedMessage: not a bulk header (the stream cannot be trusted any more).
        """
        magic, sid, counter, parts, piece = _HEAD.unpack(data)
        if magic != _MAGIC or not 1 <= parts <= MAX_PARTS or not MIN_PIECE <= piece <= MAX_PIECE:
            raise MalformedMessage("not a bulk header")
        return sid, counter, parts, piece

    @classmethod
    def parse(cls, fixed: bytes, lengths: bytes) -> BulkHeader:
        sid, counter, parts, piece = cls.parse_fixed(fixed)
        lens = [_LEN.unpack_from(lengths, i * _LEN.size)[0] for i in range(parts)]
        if sum(lens) > MAX_MESSAGE:
            raise MalformedMessage(f"a bulk message of {sum(lens)} bytes (at most {MAX_MESSAGE})")
        return cls(sid, counter, piece, lens, fixed + lengths)


class Sealer:
    """The producer's side: seals the parts of one message after another under this
    incarnation's key (a fresh salt), each piece with its own nonce."""

    def __init__(self, secrets_: EdgeSecrets, edge: str, piece: int = 0) -> None:
        self.edge_name = edge
        self.edge = edge.encode()
        self.salt = os.urandom(16)  # secret too: it travels on the CURVE socket only
        self.aead: Aead = CIPHERS[secrets_.cipher](_derive(secrets_, edge, self.salt))
        self.salt_id = salt_id(self.salt)
        self.piece = piece or default_piece()
        self.counter = 0

    def next(self, lengths: list[int]) -> tuple[bytes, BulkHeader, bytes]:
        """The next message: (descriptor for the CURVE socket, its bulk header, the
        associated data of its pieces)."""
        if self.counter >= MAX_COUNTER:
            raise TransportError(f"edge {self.edge_name}: 2^63 messages under one key")
        self.counter += 1
        desc = _DESC.pack(_MAGIC, self.salt, self.counter, len(lengths))
        header = BulkHeader.make(self.salt_id, self.counter, self.piece, lengths)
        return desc, header, self.edge + header.raw

    def seal(self, k: int, ad: bytes, piece: Any, out: Any) -> None:
        """Seal piece ``k`` of the current message into ``out`` (``TAG`` bytes longer)."""
        self.aead.encrypt_into(_NONCE.pack(k, self.counter), piece, ad, out)

    def seal_message(self, parts: Sequence[Any]) -> tuple[bytes, bytes]:
        """(descriptor, the whole bulk message: header and sealed pieces) of ``parts``, at
        once (tests, and a producer that wants it in one buffer)."""
        views = [memoryview(p).cast("B") for p in parts]
        desc, header, ad = self.next([len(v) for v in views])
        out = bytearray(header.raw)
        k = 0
        for v in views:
            for off in range(0, max(1, len(v)), self.piece):
                chunk = v[off : off + self.piece]
                buf = bytearray(len(chunk) + TAG)
                self.seal(k, ad, chunk, buf)
                out += buf
                k += 1
        return desc, bytes(out)


class Opener:
    """The consumer's side: the key of each producer incarnation, and opening pieces."""

    def __init__(self, secrets_: EdgeSecrets, edge: str) -> None:
        self.secrets = secrets_
        self.edge_name = edge
        self.edge = edge.encode()
        self._keys: dict[bytes, bytes] = {}  # salt id -> key (the newest few)

    @staticmethod
    def descriptor(desc: bytes) -> tuple[bytes, int, int]:
        """(salt, counter, parts) of a descriptor.

        Raises:
            MalformedMessage: not a descriptor.
        """
        if len(desc) != DESC_SIZE:
            raise MalformedMessage("not a bulk descriptor")
        magic, salt, counter, parts = _DESC.unpack(desc)
        if magic != _MAGIC or not 1 <= parts <= MAX_PARTS:
            raise MalformedMessage("not a bulk descriptor")
        return salt, counter, parts

    def learn(self, salt: bytes) -> bytes:
        """Remember the key of the incarnation that drew ``salt``; its salt id."""
        sid = salt_id(salt)
        if sid not in self._keys:
            self._keys[sid] = _derive(self.secrets, self.edge_name, salt)
            while len(self._keys) > 4:
                del self._keys[next(iter(self._keys))]
        return sid

    def aead(self, sid: bytes) -> Aead | None:
        """A new AEAD object for the incarnation ``sid`` (one per thread), if its key is
        known."""
        key = self._keys.get(sid)
        return None if key is None else CIPHERS[self.secrets.cipher](key)

    def open_piece(self, aead: Aead, header: BulkHeader, k: int, sealed: Any, out: Any) -> None:
        """Open piece ``k`` of ``header``'s message into ``out``.

        Raises:
            MalformedMessage: the piece fails its tag.
        """
        try:
            aead.decrypt_into(_NONCE.pack(k, header.counter), sealed, self.edge + header.raw, out)
        except InvalidTag:
            raise MalformedMessage(
                f"bulk piece {k} of message {header.counter} fails its tag (forged, altered, "
                "truncated or moved on the way)"
            ) from None

    def open_sealed(self, aead: Aead, header: BulkHeader, sealed: list[Any]) -> list[np.ndarray]:
        """Open a message whose parts were kept sealed (its key was not known yet)."""
        plain = []
        k = 0
        for n, part in zip(header.lengths, sealed, strict=True):
            out = np.empty(n, np.uint8)
            src = memoryview(part)
            at = 0
            for off in range(0, max(1, n), header.piece):
                size = min(header.piece, n - off)
                self.open_piece(aead, header, k, src[at : at + size + TAG], out[off : off + size])
                at += size + TAG
                k += 1
            plain.append(out)
        return plain


def _split(endpoint: str) -> tuple[str, int]:
    """(host, port) of ``tcp://host:port`` (an IPv6 host in brackets)."""
    if not endpoint.startswith("tcp://"):
        raise TransportError(f"not a tcp endpoint: {endpoint!r}")
    host, _, port = endpoint[len("tcp://") :].rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host, 0 if port in ("*", "") else int(port)


def _recv_exact(sock: socket.socket, view: memoryview) -> None:
    """Fill ``view`` from ``sock``.

    Raises:
        ConnectionError: the connection ended first.
    """
    got, need = 0, len(view)
    while got < need:
        n = sock.recv_into(view[got:], need - got)
        if not n:
            raise ConnectionError("the connection ended")
        got += n


def say_hello(sock: socket.socket, secrets_: EdgeSecrets, edge: str) -> None:
    """Answer a bulk listener's challenge on a new connection ``sock`` (a producer's side).

    Raises:
        OSError: the connection failed, or its other end is not an edge's bulk listener.
    """
    challenge = memoryview(bytearray(_CHALLENGE.size))
    _recv_exact(sock, challenge)
    magic, version, nonce = _CHALLENGE.unpack(challenge)
    if magic != _MAGIC or version != _VERSION:
        raise ConnectionError("not an edge's bulk listener")
    sock.sendall(_HELLO.pack(_MAGIC, _VERSION, _proof(secrets_.token, edge, nonce)))


_LOWAT: int | None = getattr(socket, "SO_RCVLOWAT", None) if platform.system() == "Linux" else None
LOWAT_WAIT_MS = 50
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
_LOWAT_MAX = (1 << 20) + TAG  # a piece's (at most: the kernel's window must hold it)


class _Reader:
    """Reads exact sizes from a connection, woken about once per piece: for a piece the
    socket's low-water mark is set to the bytes still to come (Linux), so that the kernel
    wakes the reading thread when they are all there instead of at every segment (a wake-up
    of a thread on another core costs an interrupt; in a VM far more: 10-15 % of the edge's
    CPU, measured). The reader waits in ``poll`` and then takes what is there: a blocking
    ``recv`` would wait for the whole mark, which a receive window smaller than it never
    lets come (seen). A piece that is not there within ``LOWAT_WAIT_MS`` is waited for
    without the mark (counted in ``slow``)."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.lowat = 1
        self.slow = 0
        self.poller = select.poll()
        self.poller.register(conn, select.POLLIN)

    def _set(self, lowat: int) -> None:
        if lowat != self.lowat:
            self.conn.setsockopt(socket.SOL_SOCKET, _LOWAT, lowat)  # type: ignore[arg-type]
            self.lowat = lowat

    def read(self, view: memoryview, piece: bool = False) -> None:
        """Fill ``view`` (``piece``: a piece's bytes, on their way; otherwise the next
        message's header, which may be long in coming).

        Raises:
            ConnectionError: the connection ended first.
        """
        need = len(view)
        got = 0
        while got < need:
            want = need - got
            if _LOWAT is not None and piece and want > 1:
                # wait in poll(), where the kernel also wakes a reader whose mark the
                # receive window cannot reach, then take what is there (a blocking recv
                # would wait for the whole mark, which may then never come)
                self._set(min(want, _LOWAT_MAX))
                if not self.poller.poll(LOWAT_WAIT_MS):
                    self.slow += 1
                    self._set(1)
                    self.poller.poll()  # anything; a shutdown (close) wakes it too
                try:
                    n = self.conn.recv_into(view[got:], want, _DONTWAIT)
                except BlockingIOError:
                    continue
            else:
                if _LOWAT is not None:
                    self._set(1)
                n = self.conn.recv_into(view[got:], want)
            if not n:
                raise ConnectionError("the connection ended")
            got += n


class BulkSender:
    """The producer's bulk connection to one consumer. The node's thread seals each piece of
    a message by ``encrypt_into`` into one small buffer and sends it at once, while it is
    still in cache (the header goes with the first piece, in one ``sendmsg``). Connects at
    the first message; a connection that fails or stalls (``SEND_S``) is dropped, the
    message counts as lost (as to any consumer that died), and the next message connects
    again. (A sending thread per edge, sealing and sending on two cores, did 0.8-0.87x these
    frames/s on 2 cores: ``benchmarks/results/bulk_carrier-sender-choice.json``.)"""

    def __init__(
        self, ctx: zmq.Context[Any] | None, edge: str, secrets_: EdgeSecrets, piece: int = 0
    ) -> None:
        self.edge = edge
        self.secrets = secrets_
        self.sealer = Sealer(secrets_, edge, piece)
        self.MIN_BYTES = BULK_MIN
        self.address = _split(secrets_.bulk_endpoint)
        self.sock: socket.socket | None = None
        self._scratch = memoryview(bytearray(self.sealer.piece + TAG))
        self._retry_at = 0.0
        self.sent = 0  # messages sent
        self.failed = 0  # messages whose bytes could not be sent
        self.connects = 0

    def _connect(self) -> socket.socket | None:
        if time.monotonic() < self._retry_at:
            return None
        try:
            sock = socket.create_connection(self.address, timeout=CONNECT_S)
        except OSError:
            self._retry_at = time.monotonic() + RETRY_S
            return None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            say_hello(sock, self.secrets, self.edge)
            sock.settimeout(SEND_S)
        except OSError:
            sock.close()
            self._retry_at = time.monotonic() + RETRY_S
            return None
        self.connects += 1
        return sock

    def send(self, n: int, head: bytes, parts: Sequence[Any]) -> bytes:
        """Seal and send the parts of message ``n``; the descriptor to send with its head
        (also when the bytes cannot go: the consumer then drops the head)."""
        views = [memoryview(p).cast("B") for p in parts]
        desc, header, ad = self.sealer.next([len(v) for v in views])
        for _attempt in (0, 1):
            sock = self.sock
            if sock is None:
                sock = self.sock = self._connect()
                if sock is None:
                    break
            try:
                self._send(sock, header.raw, ad, views)
            except TimeoutError:
                self._drop()  # the consumer is gone or stuck: do not wait again at once
                self._retry_at = time.monotonic() + RETRY_S
                break
            except OSError:
                self._drop()  # the consumer closed it (restarted, or refused what came)
                continue
            self.sent += 1
            return desc
        self.failed += 1
        return desc

    def _send(self, sock: socket.socket, header: bytes, ad: bytes, views: list[memoryview]) -> None:
        out = self._scratch
        piece = self.sealer.piece
        seal = self.sealer.seal
        k = 0
        for v in views:
            for off in range(0, max(1, len(v)), piece):
                chunk = v[off : off + piece]
                sealed = out[: len(chunk) + TAG]
                seal(k, ad, chunk, sealed)
                if k == 0:  # the header goes with the first piece: one segment, one call
                    sent = sock.sendmsg([header, sealed])
                    if sent < len(header):
                        sock.sendall(memoryview(header)[sent:])
                        sent = len(header)
                    if sent - len(header) < len(sealed):
                        sock.sendall(sealed[sent - len(header) :])
                else:
                    sock.sendall(sealed)
                k += 1

    def released(self, upto: int, keep: int) -> None:
        """Message ``upto`` and those before it arrived (nothing to free: each piece was in
        the kernel when ``send`` returned)."""

    def _drop(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def close(self, linger_ms: int = 0) -> None:
        """Close (what ``send`` returned from is in the kernel already)."""
        self._drop()


class _Bulk:
    """A bulk message received ahead of (or for) its head."""

    __slots__ = ("error", "header", "plain", "sealed")

    def __init__(
        self,
        header: BulkHeader,
        plain: list[np.ndarray] | None = None,
        sealed: list[Any] | None = None,
        error: str = "",
    ) -> None:
        self.header = header
        self.plain = plain
        self.sealed = sealed
        self.error = error


class _Broken(Exception):
    """The bulk stream can no longer be trusted: close the connection."""


class BulkReceiver:
    """The consumer's bulk listener and its receiving thread: admits a connection that
    proves it holds the edge's token (others are refused and counted on the context's
    gatekeeper), reads each message as it comes, opens it into the arrays the node will read
    where it knows the key already, and hands the message a head names to ``parts_for``."""

    def __init__(
        self, ctx: zmq.Context[Any], edge: str, bind: str, curve_key: str, queue: int
    ) -> None:
        from pipeline.transport.curve import Gatekeeper

        self.edge = edge
        self.DESC_SIZE = DESC_SIZE
        keep_receive_buffers()
        self.gate = Gatekeeper.of(ctx)
        host, port = _split(bind)
        family, _, _, _, addr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(addr)
        self._listener.listen(MAX_PENDING)
        self._listener.setblocking(False)
        bound = self._listener.getsockname()[0]
        shown = f"[{bound}]" if ":" in bound else bound
        endpoint = f"tcp://{shown}:{self._listener.getsockname()[1]}"
        self.secrets = EdgeSecrets.generate(curve_key, endpoint)
        self.opener = Opener(self.secrets, edge)
        self.stash_max = max(STASH, queue + 2)
        self.rejected = 0  # bulk messages dropped: stale, replayed, unclaimed, or broken
        self.broken = 0  # connections closed because their stream failed
        self.accepted = 0  # connections that proved they hold the token
        self._cv = threading.Condition()
        self._stash: dict[tuple[bytes, int], _Bulk] = {}
        self._high: dict[bytes, int] = {}  # per salt id: the highest counter received or taken
        self._sid = b""  # the incarnation whose heads come now
        self._retired: set[bytes] = set()  # earlier ones: their bulk messages are stale
        self.kept_sealed = 0  # messages that came before their incarnation's key was known
        self._conn: socket.socket | None = None
        self._stop = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._acceptor = threading.Thread(target=self._accept, name=f"bulk-accept {edge}")
        self._acceptor.daemon = True
        self._acceptor.start()
        self._receiver = threading.Thread(target=self._receive, name=f"bulk-recv {edge}")
        self._receiver.daemon = True
        self._receiver.start()

    # the listener ------------------------------------------------------------------------
    def _refuse(self, conn: socket.socket) -> None:
        conn.close()
        self.gate.refuse()

    def _accept(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ, None)
        sel.register(self._wake_r, selectors.EVENT_READ, None)
        # connections saying hello: (deadline, challenge, answer so far)
        pending: dict[socket.socket, tuple[float, bytes, bytearray]] = {}
        try:
            while not self._stop:
                now = time.monotonic()
                for conn in [c for c, (t, _, _) in pending.items() if t <= now]:
                    sel.unregister(conn)
                    del pending[conn]
                    self._refuse(conn)  # said nothing (or too little) in time
                timeout = min((t for t, _, _ in pending.values()), default=now + 1) - now
                for key, _ in sel.select(max(0.0, timeout)):
                    sock = key.fileobj
                    if sock is self._wake_r:
                        continue
                    if sock is self._listener:
                        self._new_connection(sel, pending)
                    else:
                        assert isinstance(sock, socket.socket)
                        self._hello(sel, pending, sock)
        finally:
            for conn in pending:
                conn.close()
            sel.close()

    def _new_connection(
        self,
        sel: selectors.BaseSelector,
        pending: dict[socket.socket, tuple[float, bytes, bytearray]],
    ) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return
        if len(pending) >= MAX_PENDING:  # the oldest one waiting makes room
            oldest = min(pending, key=lambda c: pending[c][0])
            sel.unregister(oldest)
            del pending[oldest]
            self._refuse(oldest)
        nonce = secrets.token_bytes(16)
        try:
            conn.setblocking(False)
            conn.send(_CHALLENGE.pack(_MAGIC, _VERSION, nonce))  # fits any fresh socket
        except OSError:
            self._refuse(conn)
            return
        pending[conn] = (time.monotonic() + HELLO_MS / 1000, nonce, bytearray())
        sel.register(conn, selectors.EVENT_READ, None)

    def _hello(
        self,
        sel: selectors.BaseSelector,
        pending: dict[socket.socket, tuple[float, bytes, bytearray]],
        conn: socket.socket,
    ) -> None:
        _, nonce, got = pending[conn]
        try:
            data = conn.recv(_HELLO.size - len(got))
        except BlockingIOError:
            return
        except OSError:
            data = b""
        got += data
        if data and len(got) < _HELLO.size:
            return
        sel.unregister(conn)
        del pending[conn]
        if not data:
            self._refuse(conn)  # closed before its hello
            return
        magic, version, proof = _HELLO.unpack(got)
        want = _proof(self.secrets.token, self.edge, nonce)
        if not (hmac.compare_digest(proof, want) and magic == _MAGIC and version == _VERSION):
            self._refuse(conn)
            return
        conn.setblocking(True)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._cv:
            old, self._conn = self._conn, conn
            self.accepted += 1
            self._cv.notify_all()
        if old is not None:  # a restarted producer: its predecessor's connection ends
            _shut(old)

    # the receiving thread ----------------------------------------------------------------
    def _receive(self) -> None:
        scratch = memoryview(bytearray(MAX_PIECE + TAG))
        fixed = memoryview(bytearray(_HEAD.size))
        while True:
            with self._cv:
                while self._conn is None and not self._stop:
                    self._cv.wait()
                if self._stop:
                    return
                conn = self._conn
            assert conn is not None
            reader = _Reader(conn)
            try:
                while True:
                    self._read_message(reader, scratch, fixed)
            except _Broken:
                with self._cv:
                    self.broken += 1
            except OSError:
                pass  # it ended, or a newer connection replaced it
            with self._cv:
                if self._conn is conn:
                    self._conn = None
            conn.close()

    def _read_message(self, conn: _Reader, scratch: memoryview, fixed: memoryview) -> None:
        conn.read(fixed)
        try:
            _, _, parts, piece = BulkHeader.parse_fixed(bytes(fixed))
            lengths = memoryview(bytearray(parts * _LEN.size))
            conn.read(lengths)
            header = BulkHeader.parse(bytes(fixed), bytes(lengths))
        except MalformedMessage:
            raise _Broken from None
        sid, counter = header.sid, header.counter
        with self._cv:
            while len(self._stash) >= self.stash_max and not self._stop:
                self._cv.wait()  # the node is behind: TCP holds the producer back
            if self._stop:
                raise ConnectionError("closed")
            stale = counter <= self._high.get(sid, 0) or sid in self._retired
        if stale:  # replayed, or taken already: read past it
            self._skip(conn, header, scratch)
            with self._cv:
                self.rejected += 1
            return
        aead = self.opener.aead(sid)
        entry = _Bulk(header)
        try:
            if aead is None:  # ahead of the first head of its incarnation: kept sealed
                self.kept_sealed += 1
                entry.sealed = []
                for n in header.lengths:
                    buf = memoryview(bytearray(sealed_size(n, piece)))
                    for at in range(0, len(buf), piece + TAG):
                        conn.read(buf[at : at + piece + TAG], piece=True)
                    entry.sealed.append(buf.obj)
            else:
                entry.plain = self._open(conn, aead, header, scratch)
        except MalformedMessage as exc:
            entry.error = str(exc)
        with self._cv:
            if counter > self._high.get(sid, 0):
                self._stash[(sid, counter)] = entry
                self._high[sid] = counter
            else:  # taken meanwhile (its head gave up waiting)
                self.rejected += 1
            self._cv.notify_all()
        if entry.error:
            raise _Broken

    def _open(
        self, conn: _Reader, aead: Aead, header: BulkHeader, scratch: memoryview
    ) -> list[np.ndarray]:
        plain = []
        opener = self.opener
        k = 0
        piece = header.piece
        for n in header.lengths:
            out = np.empty(n, np.uint8)
            dst = out.data
            for off in range(0, max(1, n), piece):
                size = min(piece, n - off)
                sealed = scratch[: size + TAG]
                conn.read(sealed, piece=True)
                opener.open_piece(aead, header, k, sealed, dst[off : off + size])
                k += 1
            plain.append(out)
        return plain

    @staticmethod
    def _skip(conn: _Reader, header: BulkHeader, scratch: memoryview) -> None:
        left = sum(sealed_size(n, header.piece) for n in header.lengths)
        while left:
            size = min(left, len(scratch))
            conn.read(scratch[:size], piece=True)
            left -= size

    # the node's side ---------------------------------------------------------------------
    def parts_for(self, head: bytes, desc: bytes) -> list[memoryview]:
        """The opened parts of the message whose head and descriptor came on the CURVE socket.
        One ahead of its head waits for it (at most ``stash_max`` of them); one behind, or
        one that nothing claims while the stash is full, is dropped and counted
        (``rejected``).

        Raises:
            MalformedMessage: its bulk message failed its tag, has another number of parts,
                was passed by a later one, or did not come in ``WAIT_MS``.
        """
        salt, counter, n = Opener.descriptor(desc)
        sid = self.opener.learn(salt)  # the receiving thread opens its next ones itself
        deadline = time.monotonic() + WAIT_MS / 1000
        with self._cv:
            stash = self._stash
            if sid != self._sid:  # a restarted producer: its predecessor's are stale
                if self._sid:
                    self._retired.add(self._sid)
                self._sid = sid
            for key in [
                k for k in stash if k[0] in self._retired or (k[0] == sid and k[1] < counter)
            ]:
                del stash[key]  # their heads never came
                self.rejected += 1
            while True:
                entry = stash.pop((sid, counter), None)
                if entry is not None:
                    break
                if self._high.get(sid, 0) >= counter:
                    self._cv.notify_all()
                    raise MalformedMessage(f"the bulk bytes of message {counter} did not come")
                if len(stash) >= self.stash_max:  # full of what no head claims: drop it
                    for key in [k for k in stash if k[0] != sid]:
                        del stash[key]
                        self.rejected += 1
                    self._cv.notify_all()
                left = deadline - time.monotonic()
                if left <= 0:
                    self._high[sid] = max(self._high.get(sid, 0), counter)
                    raise MalformedMessage(f"the bulk bytes of message {counter} did not come")
                self._cv.wait(left)
            self._high[sid] = max(self._high.get(sid, 0), counter)
            self._cv.notify_all()  # room in the stash
        if entry.error:
            raise MalformedMessage(entry.error)
        if len(entry.header.lengths) != n:
            raise MalformedMessage(
                f"the bulk message has {len(entry.header.lengths)} parts, not {n}"
            )
        plain = entry.plain
        if plain is None:
            assert entry.sealed is not None
            aead = self.opener.aead(sid)
            assert aead is not None
            plain = self.opener.open_sealed(aead, entry.header, entry.sealed)
        return [p.data for p in plain]

    def close(self) -> None:
        with self._cv:
            self._stop = True
            conn, self._conn = self._conn, None
            self._cv.notify_all()
        if conn is not None:
            _shut(conn)
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self._acceptor.join(2)
        self._receiver.join(2)
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()


def _shut(conn: socket.socket) -> None:
    """End a connection another thread may be blocked reading (close alone would not wake
    it)."""
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass

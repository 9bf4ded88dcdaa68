"""The bulk path of a tcp edge: a frame's big arrays sealed once with an AEAD, on a socket of
their own.

CURVE (``pipeline.transport.curve``) costs most of a tcp edge's throughput at 1080p: libzmq
copies each message into and out of its encode buffer around xsalsa20-poly1305. So a tcp edge
has two sockets:

- the **CURVE socket** (PAIR, the consumer binds), as before: the handshake, the run's
  authentication (the ``Gatekeeper``), releases, end of stream, small messages, and for a
  message with big arrays its head (envelope + body: seq, kind, shapes, dtypes) and a
  **descriptor** (the producer's salt, a 64-bit counter, how many parts);
- the **bulk socket** (PAIR, the consumer binds: one peer at a time), ZeroMQ PLAIN: the
  array bytes, each part sealed with AES-256-GCM or ChaCha20-Poly1305 (``cryptography``:
  OpenSSL, never a primitive of our own) by ``encrypt_into`` into a buffer of the
  producer's, and opened by ``decrypt_into`` in place, in the ZeroMQ frame that the
  consumer's node then reads.

Keys. The consumer makes, when it binds, per edge: a CURVE key pair, a 256-bit AEAD key and a
PLAIN token, and hands them (``EdgeSecrets``, inside ``InputEdge.key``) to its producer through
the supervisor, exactly like the CURVE key: ``Hello`` and ``Wiring`` on the control socket
(the run folder's ``ipc://`` socket, mode 0700; on a cluster a CURVE socket that admits only
the run's keys, which reached the nodes through the launcher). Never over the data plane. A
restarted consumer binds anew and makes new ones.

Nonces never repeat under a key: each producer incarnation (``EdgeSender``) draws a 128-bit
salt and seals under its own key, HKDF-SHA256(edge key, salt, edge name). The salt travels
only inside CURVE (the descriptor; the bulk socket shows 8 bytes of its hash), so someone who
records the traffic and later learns an edge key still cannot open it: CURVE's ephemeral
session keys protected the salt (forward secrecy as good as CURVE's); the nonce is the
part's index and the producer's 64-bit message counter (refused before it could wrap). The
associated data of every part is the edge's name, the descriptor (salt, counter, parts) and
the message's head (envelope and body: seq, shape, dtype), so a part opens only under the
head it was sealed with.

Threat model (the network between the hosts is hostile; the hosts and the launcher are not):

- Who can connect. To the CURVE socket: only a peer holding the consumer's server key (and
  on a cluster the run's client key, checked by the gatekeeper); others fail the handshake,
  refused and counted. To the bulk socket: only a peer presenting the edge's PLAIN token
  (checked by the same gatekeeper, in constant time); others are refused and counted. The
  token travels in the clear in the PLAIN handshake: someone who can read the traffic can
  learn it and connect while the producer is not connected (the socket is a PAIR: one peer
  at a time), which gains them no more than being on the path already gave (see next): it
  authenticates nothing; the AEAD does.
- What they can learn. Someone reading the wire sees, on the bulk socket, the sizes of the
  sealed parts, the counters, a hash of each incarnation's salt and the token, never a
  byte of a frame; the CURVE
  socket hides everything else (heads, metadata, small messages). Timing and sizes show.
- What they can do. A forged, altered, truncated, replayed (within or across producer
  incarnations), reordered or misplaced bulk part fails its tag or its counter: the message
  it belonged to is dropped and counted (``InputEdge.malformed``), its credit goes back to
  the producer, the node goes on. They can delay or drop traffic (anyone on the path can):
  a message whose bulk part has not come within ``WAIT_MS`` is dropped and counted. They
  cannot make the consumer read shared memory, allocate more than the frames its producer
  sent, or run code: nothing on the wire is unpickled.
- What it does not protect: a compromised host or launcher (it holds the keys); traffic
  analysis (frame sizes and rates); availability against someone on the path.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import dataclasses
import os
import platform
import secrets
import struct
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
    "WAIT_MS",
    "BulkReceiver",
    "BulkSender",
    "EdgeSecrets",
    "Opener",
    "Sealer",
    "default_cipher",
    "keep_receive_buffers",
]

Aead = AESGCM | ChaCha20Poly1305
CIPHERS: dict[str, type[AESGCM] | type[ChaCha20Poly1305]] = {
    "aes-256-gcm": AESGCM,
    "chacha20-poly1305": ChaCha20Poly1305,
}
TAG = 16  # both ciphers' tag
BULK_MIN = 64 * 1024  # a message whose arrays are smaller stays on the CURVE socket alone
WAIT_MS = 5000  # a head whose bulk part has not come by then is dropped
STASH = 16  # bulk messages kept ahead of their heads
MAX_PARTS = 64  # codec.MAX_ARRAYS
MAX_COUNTER = (1 << 63) - 1
ZAP_DOMAIN = "pipeline-bulk"
_MAGIC = b"PB1"
_DESC = struct.Struct("<3s16sQB")  # magic, salt, counter, parts
_BULK_HEAD = struct.Struct("<3s8sQ")  # magic, the salt's id, counter
_NONCE = struct.Struct("<IQ")  # part, counter
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


# glibc's mallopt() parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
HEAP_KEEP = 64 << 20  # freed heap a receiving process keeps for the next messages
_heap_kept: bool | None = None


def keep_receive_buffers() -> bool:
    """Keep a receiving process's freed message buffers for the next messages (glibc only;
    once per process; True if in effect).

    libzmq receives each big message into a buffer of its own (``malloc``), which the node
    frees when it releases the message. glibc's defaults give a 1080p frame's 6 MB either
    its own ``mmap`` or heap that it trims back to the kernel on ``free``: then the next
    message's bytes are written into fresh pages, 1,500 page faults (each a zeroed page) per
    frame, about a third of the receiving I/O thread's time (measured, ``benchmarks/
    cluster.py``). Raising the mmap threshold to glibc's most (32 MiB on 64-bit) and the
    trim threshold to ``HEAP_KEEP`` makes such buffers come from, and go back to, the heap,
    whose pages stay mapped: the process keeps up to ``HEAP_KEEP`` of freed memory instead
    of returning it at once. Only processes with a tcp input edge call it.
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
    the bulk socket's address, the cipher, the AEAD key and the PLAIN token."""

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
    """What the bulk socket shows of a salt (which only the CURVE socket carries): 8 bytes of
    its SHA-256, enough to tell incarnations apart, nothing to derive its key from."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(salt)
    return digest.finalize()[:8]


def bulk_head(salt: bytes, counter: int) -> bytes:
    """The first frame of a bulk message: which producer incarnation, which message."""
    return _BULK_HEAD.pack(_MAGIC, salt_id(salt), counter)


def _derive(secrets_: EdgeSecrets, edge: str, salt: bytes) -> Aead:
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=salt, info=b"pipeline bulk v1 " + edge.encode()
    ).derive(secrets_.key)
    return CIPHERS[secrets_.cipher](key)


class Sealer:
    """The producer's side: seals the parts of one message after another under this
    incarnation's key (a fresh salt), each with its own nonce."""

    def __init__(self, secrets_: EdgeSecrets, edge: str) -> None:
        self.edge = edge.encode()
        self.salt = os.urandom(16)  # secret too: it travels on the CURVE socket only
        self.aead = _derive(secrets_, edge, self.salt)
        self._salt_id = salt_id(self.salt)
        self.counter = 0

    def seal(self, head: bytes, parts: Sequence[Any], out: Sequence[Any]) -> tuple[bytes, bytes]:
        """Seal ``parts`` (buffers) into ``out`` (each ``TAG`` bytes longer): (descriptor for
        the CURVE socket, head of the bulk message)."""
        if self.counter >= MAX_COUNTER:
            raise TransportError("edge: 2^63 messages under one key; restart the producer")
        self.counter += 1
        desc = _DESC.pack(_MAGIC, self.salt, self.counter, len(parts))
        ad = self.edge + desc + head
        for i, (part, dst) in enumerate(zip(parts, out, strict=True)):
            self.aead.encrypt_into(_NONCE.pack(i, self.counter), part, ad, dst)
        return desc, _BULK_HEAD.pack(_MAGIC, self._salt_id, self.counter)


class Opener:
    """The consumer's side: opens the parts named by a descriptor, in place."""

    def __init__(self, secrets_: EdgeSecrets, edge: str) -> None:
        self.secrets = secrets_
        self.edge_name = edge
        self.edge = edge.encode()
        self._salt = b""
        self._aead: Aead | None = None
        self.salt_id = b""  # of the last salt seen

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

    @staticmethod
    def bulk_head(data: bytes) -> tuple[bytes, int] | None:
        """(salt id, counter) of a bulk message's first frame, or None if it is not one."""
        if len(data) != _BULK_HEAD.size:
            return None
        magic, sid, counter = _BULK_HEAD.unpack(data)
        return (sid, counter) if magic == _MAGIC else None

    def use(self, salt: bytes) -> None:
        """Open with the key of the producer incarnation that drew ``salt``."""
        if salt != self._salt or self._aead is None:
            self._aead = _derive(self.secrets, self.edge_name, salt)
            self._salt = salt
            self.salt_id = salt_id(salt)

    def open(self, head: bytes, desc: bytes, sealed: Sequence[Any]) -> list[memoryview]:
        """Open each part of ``sealed`` (writable buffers) in place; the plain bytes.

        Raises:
            MalformedMessage: a part that fails its tag (forged, altered, truncated, or
                sealed under another head, salt or counter), or the wrong number of parts.
        """
        salt, counter, n = self.descriptor(desc)
        if len(sealed) != n:
            raise MalformedMessage(f"the bulk message has {len(sealed)} parts, not {n}")
        self.use(salt)
        assert self._aead is not None
        ad = self.edge + desc + head
        plain: list[memoryview] = []
        for i, part in enumerate(sealed):
            buf = np.frombuffer(part, np.uint8).data
            if len(buf) < TAG:
                raise MalformedMessage(f"bulk part {i} is shorter than its tag")
            try:
                self._aead.decrypt_into(_NONCE.pack(i, counter), buf, ad, buf[: len(buf) - TAG])
            except InvalidTag:
                raise MalformedMessage(
                    f"bulk part {i} of message {counter} fails its tag (forged, altered or "
                    "truncated on the way)"
                ) from None
            plain.append(buf[: len(buf) - TAG])
        return plain


class BulkSender:
    """The producer's bulk socket to one consumer: seals and sends the parts of a message;
    keeps each message's sealed buffers until the consumer released it, then reuses them."""

    def __init__(self, ctx: zmq.Context[Any], edge: str, secrets_: EdgeSecrets) -> None:
        self.sealer = Sealer(secrets_, edge)
        self.MIN_BYTES = BULK_MIN
        self.sock = ctx.socket(zmq.PAIR)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 0)  # credits bound what is in flight
        self.sock.plain_username = edge.encode()
        self.sock.plain_password = secrets_.token
        self.sock.connect(secrets_.bulk_endpoint)
        self.inflight: list[tuple[int, list[np.ndarray]]] = []
        self.free: list[np.ndarray] = []
        self.sent = 0

    def _buffer(self, nbytes: int) -> np.ndarray:
        """A buffer of ``nbytes`` to seal into: the one freed last (the likeliest to be still
        in a cache) of that size, else a new one."""
        free = self.free
        for i in range(len(free) - 1, -1, -1):
            if free[i].nbytes == nbytes:
                return free.pop(i)
        return np.empty(nbytes, np.uint8)

    def send(self, n: int, head: bytes, parts: Sequence[Any]) -> bytes:
        """Seal and send the parts of message ``n``; the descriptor to send with its head."""
        out = [self._buffer(memoryview(p).nbytes + TAG) for p in parts]
        desc, bulk_head = self.sealer.seal(head, parts, out)
        self.sock.send_multipart([bulk_head, *out], copy=False)
        self.inflight.append((n, out))
        self.sent += 1
        return desc

    def released(self, upto: int, keep: int) -> None:
        """Message ``upto`` and those before it arrived: their buffers are free again (up to
        ``keep`` of them kept for reuse)."""
        while self.inflight and self.inflight[0][0] <= upto:
            for buf in self.inflight.pop(0)[1]:
                if len(self.free) < keep:
                    self.free.append(buf)

    def close(self, linger_ms: int = 0) -> None:
        self.sock.close(linger=linger_ms)


class BulkReceiver:
    """The consumer's bulk socket: a PLAIN server that the context's gatekeeper opens to the
    edge's token only; finds the bulk message a head names, drops every other one."""

    def __init__(
        self, ctx: zmq.Context[Any], edge: str, bind: str, curve_key: str, queue: int
    ) -> None:
        from pipeline.transport.curve import Gatekeeper

        self.edge = edge
        self.DESC_SIZE = DESC_SIZE
        keep_receive_buffers()
        # PAIR: once its producer is connected nobody else gets a pipe, so what waits here
        # is bounded by the producer's credits (queue) and this high-water mark
        self.sock = ctx.socket(zmq.PAIR)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, queue + 2)
        self.sock.plain_server = True
        self.sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())
        self.sock.setsockopt(zmq.HANDSHAKE_IVL, 2000)
        self.gate = Gatekeeper.of(ctx)
        self.sock.bind(bind)
        endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.secrets = EdgeSecrets.generate(curve_key, endpoint)
        self.gate.admit_plain(edge, self.secrets.token)
        self.gate.watch(self.sock)
        self.opener = Opener(self.secrets, edge)
        self._early: dict[int, list[Any]] = {}  # bulk messages ahead of their heads
        self.rejected = 0  # bulk messages dropped: stale, replayed, not ours

    def parts_for(self, head: bytes, desc: bytes) -> list[memoryview]:
        """The opened parts of the message whose head and descriptor came on the CURVE socket.
        The first bulk message naming its counter decides; one ahead of its head waits for it
        (at most ``STASH`` of them), one behind is dropped and counted (``rejected``).

        Raises:
            MalformedMessage: its bulk message failed its tag, or did not come in ``WAIT_MS``.
        """
        salt, counter, _ = Opener.descriptor(desc)
        self.opener.use(salt)
        sid = self.opener.salt_id
        for c in [c for c in self._early if c < counter]:  # their heads never came
            del self._early[c]
            self.rejected += 1
        found = self._early.pop(counter, None)
        deadline = time.monotonic() + WAIT_MS / 1000
        while found is None:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0 or not self.sock.poll(left_ms):
                raise MalformedMessage(f"the bulk part of message {counter} did not come")
            frames = self.sock.recv_multipart(copy=False)
            named = Opener.bulk_head(frames[0].bytes)
            if named is None or named[0] != sid or named[1] < counter:
                self.rejected += 1  # not ours, another incarnation's, or seen before
            elif named[1] > counter:  # ahead of its head (or forged): keep it for its head
                if named[1] in self._early or len(self._early) >= STASH:
                    self.rejected += 1
                else:
                    self._early[named[1]] = frames[1:]
            else:
                found = frames[1:]
        return self.opener.open(head, desc, found)

    def close(self) -> None:
        self.gate.forget_plain(self.edge)
        self.sock.close(linger=0)

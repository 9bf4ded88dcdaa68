"""CURVE on the sockets that cross machines: the run's keys, and a gatekeeper that counts.

Every tcp input edge is a CURVE server with a key pair of its own, whose public key reaches
its producer through the supervisor (``InputEdge.key``, ``Hello``/``Wiring``). On a cluster
that control channel crosses machines too, so a run there also generates one ``RunKeys`` (a
server key pair and a client key pair, made fresh per run) and hands it to every node through
the launcher, never over the data plane: the supervisor's control socket is a CURVE server
with the run's server keys, every tcp socket that connects is a CURVE client with the run's
client keys, and every CURVE server asks the ``Gatekeeper`` (its context's ZAP handler),
which admits that one client key and nothing else. A peer without CURVE, with another server
key or with another client key fails the handshake; each failure is counted (``refused``).

The same gatekeeper counts the connections that each tcp edge's bulk listener
(``pipeline.transport.bulk``: the frames' big arrays, sealed with an AEAD, on a plain TCP
connection) refuses: those that cannot prove they hold the edge's token. Every context with a
tcp input edge has one (``Gatekeeper.of``).

Nothing on the wire is unpickled (``pipeline.transport.codec`` is msgpack and raw buffers).
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import weakref
from collections.abc import Mapping
from typing import Any

import zmq
from zmq.utils import z85

__all__ = [
    "HANDSHAKE_MS",
    "Gatekeeper",
    "RunKeys",
    "connect_as_client",
    "require_run_client",
    "serve",
]

HANDSHAKE_MS = 2000  # a peer that has not finished the handshake by then is dropped
ZAP_DOMAIN = "pipeline"
_ZAP_ENDPOINT = "inproc://zeromq.zap.01"
_REFUSALS = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)


@dataclasses.dataclass(frozen=True)
class RunKeys:
    """The run's CURVE keys (Z85 text): the servers' pair and the clients' pair."""

    server_public: str
    server_secret: str
    client_public: str
    client_secret: str

    @classmethod
    def generate(cls) -> RunKeys:
        server_public, server_secret = zmq.curve_keypair()
        client_public, client_secret = zmq.curve_keypair()
        return cls(
            server_public.decode("ascii"),
            server_secret.decode("ascii"),
            client_public.decode("ascii"),
            client_secret.decode("ascii"),
        )

    def to_wire(self) -> dict[str, str]:
        return dataclasses.asdict(self)

    @classmethod
    def from_wire(cls, d: Mapping[str, str]) -> RunKeys:
        return cls(**d)

    def __repr__(self) -> str:  # never print a secret into a log
        return (
            f"RunKeys(server_public={self.server_public!r}, client_public={self.client_public!r})"
        )


def serve(sock: zmq.Socket[Any], keys: RunKeys) -> None:
    """Make ``sock`` (before it binds) a CURVE server of the run; its context needs a
    ``Gatekeeper`` for the client check."""
    sock.curve_server = True
    sock.curve_publickey = keys.server_public.encode("ascii")
    sock.curve_secretkey = keys.server_secret.encode("ascii")
    sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())
    sock.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_MS)


def require_run_client(sock: zmq.Socket[Any]) -> None:
    """Make a CURVE server socket (before it binds) ask its context's ``Gatekeeper`` whether
    a client is the run's (an input edge's own server keys: ``InputEdge.key``)."""
    sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())


def connect_as_client(sock: zmq.Socket[Any], keys: RunKeys, server_key: str = "") -> None:
    """Make ``sock`` (before it connects) a CURVE client of the run, to the run's server key
    or to ``server_key`` (an input edge's own)."""
    sock.curve_serverkey = (server_key or keys.server_public).encode("ascii")
    sock.curve_publickey = keys.client_public.encode("ascii")
    sock.curve_secretkey = keys.client_secret.encode("ascii")


_GATES: weakref.WeakKeyDictionary[zmq.Context[Any], Gatekeeper] = weakref.WeakKeyDictionary()
_GATES_LOCK = threading.Lock()


class Gatekeeper:
    """The ZAP handler of one ZeroMQ context: admits the run's client key (domain
    ``pipeline``), an edge's CURVE client without the run's keys (no domain: the edge's own
    server key was the secret); refuses and counts everything else (also handshakes that fail
    before ZAP: no CURVE, a wrong server key). A bulk listener counts its refusals here too
    (``refuse``).

    Start it before any ``serve``d socket binds; ``watch`` each such socket so its failed
    handshakes are counted. One thread, waking ten times a second when idle; it ends with
    ``close`` or when its context is terminated.
    """

    def __init__(self, ctx: zmq.Context[Any], keys: RunKeys | None = None) -> None:
        self.ctx = ctx
        # ZAP gives the client's key as 32 raw bytes
        self.allowed = z85.decode(keys.client_public.encode("ascii")) if keys else None
        self.refused = 0  # failed handshakes on every watched socket, refused bulk connections
        self._count = threading.Lock()
        self._new: queue.Queue[zmq.Socket[Any]] = queue.Queue()
        self._stop = threading.Event()
        self._bound = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="zap", daemon=True)
        self._thread.start()
        self._bound.wait(10)
        if self._error is not None:
            raise self._error
        with _GATES_LOCK:
            _GATES[ctx] = self

    @classmethod
    def of(cls, ctx: zmq.Context[Any]) -> Gatekeeper:
        """The context's gatekeeper (the one a worker made with the run's keys), or a new one
        without run keys."""
        with _GATES_LOCK:
            gate = _GATES.get(ctx)
        return gate if gate is not None and not gate._stop.is_set() else cls(ctx)

    @classmethod
    def existing(cls, ctx: zmq.Context[Any]) -> Gatekeeper | None:
        with _GATES_LOCK:
            return _GATES.get(ctx)

    def refuse(self) -> None:
        """Count one refused connection (any thread)."""
        with self._count:
            self.refused += 1

    def watch(self, sock: zmq.Socket[Any]) -> None:
        """Count the failed handshakes of ``sock`` (call from the thread that owns it)."""
        if self._stop.is_set():
            return
        self._new.put(sock.get_monitor_socket(_REFUSALS))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        with _GATES_LOCK:
            if _GATES.get(self.ctx) is self:
                del _GATES[self.ctx]

    def _serve(self) -> None:
        # Here, not at the top of the module: zmq.utils.monitor imports asyncio, ~20 ms of
        # every start-up that has no gatekeeper. Before ``_bound`` is set: once it is, ZAP
        # requests must be answered at once (a handshake waits for them).
        from zmq.utils.monitor import parse_monitor_message

        zap = self.ctx.socket(zmq.REP)
        zap.setsockopt(zmq.LINGER, 0)
        try:
            zap.bind(_ZAP_ENDPOINT)
        except zmq.ZMQError as exc:
            self._error = exc
            zap.close()
            self._bound.set()
            return
        self._bound.set()
        poller = zmq.Poller()
        poller.register(zap, zmq.POLLIN)
        monitors: list[zmq.Socket[Any]] = []
        try:
            while not self._stop.is_set():
                while not self._new.empty():
                    mon = self._new.get()
                    monitors.append(mon)
                    poller.register(mon, zmq.POLLIN)
                for sock, _ in poller.poll(100):
                    if sock is zap:
                        self._answer(zap)
                        continue
                    event = parse_monitor_message(sock.recv_multipart())
                    if event["event"] & _REFUSALS:
                        self.refuse()
                    elif event["event"] == zmq.EVENT_MONITOR_STOPPED:  # its socket closed
                        poller.unregister(sock)
                        monitors.remove(sock)
                        sock.close(linger=0)
        except zmq.ContextTerminated:
            pass  # the context ends: close our sockets so that its term() returns
        finally:
            self._stop.set()
            while not self._new.empty():
                monitors.append(self._new.get())
            for mon in monitors:
                mon.close(linger=0)
            zap.close(linger=0)

    def _answer(self, zap: zmq.Socket[Any]) -> None:
        """One ZAP request (RFC 27): admit the run's client key (or an edge's own)."""
        frames = zap.recv_multipart()
        version, request_id, domain, _address, _identity, mechanism = frames[:6]
        credentials = frames[6:]
        ok = False
        if mechanism == b"CURVE" and domain == ZAP_DOMAIN.encode():
            ok = self.allowed is not None and credentials[:1] == [self.allowed]
        elif mechanism == b"CURVE" and domain == b"":
            ok = True  # an edge without the run's keys: it knew the edge's server key
        status = (b"200", b"OK") if ok else (b"400", b"not a key of this run")
        zap.send_multipart([version, request_id, *status, b"", b""])

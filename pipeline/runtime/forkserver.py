"""A fork server: node processes forked from one pre-imported template process.

Every node process started with ``launch_local`` is a fresh interpreter that imports numpy,
ZeroMQ, pydantic, the framework and its node's modules (OpenCV, a model runtime) on its own:
on a small machine that is most of a graph's start-up time and most of its memory, once per
node. The fork server imports all of that once, in a *template* process, and forks each node
from it: the pages of every imported module are shared copy-on-write between the nodes (a
node's proportional set size, PSS, is then mostly its own data), and a node starts in a few
milliseconds instead of a second.

How it is kept safe:

- The template is forked from the supervisor at the start of the run, before the supervisor
  creates its ZeroMQ context (whose I/O threads must not be forked) and only when no other
  Python thread runs (``threading.active_count() == 1``); otherwise ``ForkServer.start``
  returns None and the run uses ``launch_local``. Native library pools that exist after
  ``import numpy`` (OpenBLAS) stop themselves around ``fork`` (their ``pthread_atfork``
  handlers). The template itself never starts a thread: it waits in ``select`` for requests
  and for its children's exits (a ``SIGCHLD`` wake-up file descriptor).
- It closes every file descriptor it inherited (a caller's listening socket must not stay
  open in node processes), ignores SIGINT like every node, and freezes the garbage
  collector's objects so that collections in the nodes do not copy the shared pages.
- Crash detection is unchanged: the supervisor watches each node through a pidfd (readable
  when the node exits, whoever its parent is) and learns the exit status from the template,
  which reaps its children and reports ``(pid, status)`` at once.
- No orphans: a node stops when its parent (the template) goes; the template stops, after
  SIGTERM to its nodes, when the supervisor goes or closes the channel.

Linux only (``os.fork``, ``os.pidfd_open``); ``PIPELINE_FORK_SERVER=0`` turns it off.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

from pipeline.runtime.plan import WorkerConfig

__all__ = ["ForkServer", "fork_server_supported"]

_MAX = 1 << 20


def fork_server_supported() -> bool:
    """Whether this process can start a template now (Linux, pidfds, no other thread)."""
    if os.environ.get("PIPELINE_FORK_SERVER", "1") == "0":
        return False
    if not sys.platform.startswith("linux") or not hasattr(os, "pidfd_open"):
        return False
    return threading.active_count() == 1


class ForkedProcess:
    """A node process forked by the template: the ``NodeProcess`` the supervisor watches."""

    def __init__(self, server: ForkServer, pid: int) -> None:
        self.server = server
        self.pid = pid
        self.sentinel: int | None = None
        with contextlib.suppress(OSError):
            self.sentinel = os.pidfd_open(pid)
        self._pidfd = self.sentinel

    @property
    def exitcode(self) -> int | None:
        self.server.collect(0.0)
        if self.pid in self.server.exits:
            return self.server.exits[self.pid]
        if self._exited():
            self.server.wait_for(self.pid, 1.0)
            return self.server.exits.get(self.pid)
        return None

    def _exited(self) -> bool:
        if self._pidfd is None:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return True
            return False
        readable, _, _ = select.select([self._pidfd], [], [], 0)
        return bool(readable)

    def is_alive(self) -> bool:
        self.server.collect(0.0)
        return self.pid not in self.server.exits and not self._exited()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        if self._pidfd is not None and self.pid not in self.server.exits:
            select.select([self._pidfd], [], [], max(0.0, timeout))
        self.server.wait_for(self.pid, max(0.0, deadline - time.monotonic()))

    def kill(self, sig: int) -> None:
        if self.pid in self.server.exits:
            return
        with contextlib.suppress(ProcessLookupError, OSError):
            if self._pidfd is not None and hasattr(signal, "pidfd_send_signal"):
                signal.pidfd_send_signal(self._pidfd, sig)
            else:
                os.kill(self.pid, sig)

    def close(self) -> None:
        if self._pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self._pidfd)
        self._pidfd = self.sentinel = None


class ForkServer:
    """The supervisor's handle on the template: ``launch(cfg)`` forks one node from it."""

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self.sock = sock
        self.exits: dict[int, int | None] = {}
        self.alive = True
        self.frozen = False

    @classmethod
    def start(cls, preload: Iterable[str]) -> ForkServer | None:
        """Fork the template (None where that is not safe here); it imports ``preload``
        (node types, ``pipeline.registry`` names) before it forks any node."""
        if not fork_server_supported():
            return None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        supervisor = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        # The supervisor's own collections would copy the pages it shares with the template
        # (a collection writes to every object it visits): its objects stay out of them
        # until the run ends (``close``).
        gc.collect()
        gc.freeze()
        pid = os.fork()
        if pid == 0:  # the template
            code = 70
            try:
                ours.close()
                code = _template(theirs, supervisor, list(preload))
            except BaseException:  # never return into the caller's code
                with contextlib.suppress(BaseException):
                    import traceback

                    traceback.print_exc()
            finally:
                os._exit(code)
        theirs.close()
        server = cls(pid, ours)
        server.frozen = True
        try:
            reply = server._request({"op": "ping"})
        except OSError:
            reply = None
        if not reply or reply.get("op") != "pong":
            server.close()
            return None
        return server

    # requests ----------------------------------------------------------------------------------
    def _request(self, message: dict[str, Any]) -> dict[str, Any]:
        self.sock.sendall(json.dumps(message).encode())
        while True:
            reply = self._recv(30.0)
            if reply is None:
                raise OSError("the fork server did not answer")
            if reply.get("op") != "exit":
                return reply

    def _recv(self, timeout: float) -> dict[str, Any] | None:
        """One message from the template (exit notes are recorded on the way)."""
        if not self.alive:
            return None
        readable, _, _ = select.select([self.sock], [], [], timeout)
        if not readable:
            return None
        data = self.sock.recv(_MAX)
        if not data:
            self.alive = False
            return None
        reply: dict[str, Any] = json.loads(data)
        if reply.get("op") == "exit":
            self.exits[int(reply["pid"])] = reply["code"]
        return reply

    def collect(self, timeout: float) -> None:
        """Record the exits the template has reported (waiting up to ``timeout`` for one)."""
        while self._recv(timeout) is not None:
            timeout = 0.0

    def wait_for(self, pid: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while pid not in self.exits and self.alive:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._recv(left)

    def launch(self, cfg: WorkerConfig) -> ForkedProcess:
        """Fork one worker from the template (a ``runner.Launcher``)."""
        reply = self._request({"op": "fork", "config": cfg.to_wire()})
        if reply.get("op") != "forked":
            raise OSError(f"the fork server could not start node {cfg.node_id!r}: {reply}")
        return ForkedProcess(self, int(reply["pid"]))

    def close(self) -> None:
        """Stop the template (its nodes have exited by now) and reap it."""
        if self.frozen:
            self.frozen = False
            gc.unfreeze()
        with contextlib.suppress(OSError):
            self.sock.close()
        self.alive = False
        deadline = time.monotonic() + 3.0
        while True:
            try:
                done, _ = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return
            if done:
                return
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(self.pid, 0)
                return
            time.sleep(0.005)


# --- the template process ---------------------------------------------------------------------


def _close_inherited(keep: set[int]) -> None:
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 1024))
    for fd in fds:
        if fd > 2 and fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def _standard_streams() -> None:
    """``sys.stdout``/``sys.stderr`` on file descriptors 1 and 2, as in a fresh interpreter
    (a caller may have replaced them with objects that have no file descriptor: pytest)."""
    for name, fd in (("stdout", 1), ("stderr", 2)):
        stream = getattr(sys, name)
        try:
            if stream is not None and stream.fileno() == fd:
                continue
        except (OSError, ValueError, AttributeError):
            pass
        with contextlib.suppress(OSError):
            setattr(sys, name, open(fd, "w", buffering=1, closefd=False))  # noqa: SIM115


def _template(sock: socket.socket, supervisor: int, preload: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _close_inherited({sock.fileno()})
    _standard_streams()
    # The caller's log handlers write to files closed above: forget them, unclosed.
    import logging

    logging.root.handlers.clear()
    from pipeline.registry import load_node_class
    from pipeline.runtime import worker  # noqa: F401  (imported once, shared by every node)

    needs: dict[str, tuple[str, ...]] = {}
    for node_type in dict.fromkeys(preload):
        with contextlib.suppress(Exception):  # the node reports its own import error
            needs[node_type] = load_node_class(node_type).preload_modules
    imported: set[str] = set()

    def prepare(node_type: str) -> None:
        """Import what this node will import (once, shared by every later node): just
        before its fork, so that nodes that need nothing heavy start without waiting."""
        new = [m for m in needs.get(node_type, ()) if m not in imported]
        for module in new:
            imported.add(module)
            with contextlib.suppress(Exception):  # a missing extra: the node says which
                importlib.import_module(module)
        if new:
            gc.collect()
            gc.freeze()  # the shared objects stay out of the nodes' collections

    gc.collect()
    gc.freeze()  # the shared objects stay out of the nodes' collections: no copied pages
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    children: set[int] = set()

    def send(message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            sock.sendall(json.dumps(message).encode())

    def reap() -> None:
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if not pid:
                return
            children.discard(pid)
            send({"op": "exit", "pid": pid, "code": os.waitstatus_to_exitcode(status)})

    try:
        while True:
            readable, _, _ = select.select([sock.fileno(), wake_r], [], [], 0.5)
            if wake_r in readable:
                with contextlib.suppress(OSError):
                    os.read(wake_r, 512)
            reap()
            if os.getppid() != supervisor:
                break  # the supervisor is gone
            if sock.fileno() not in readable:
                continue
            data = sock.recv(_MAX)
            if not data:
                break  # the supervisor closed the channel
            request = json.loads(data)
            if request["op"] == "ping":
                send({"op": "pong"})
            elif request["op"] == "fork":
                cfg = WorkerConfig.from_wire(request["config"])
                prepare(cfg.plan.node_type)
                pid = os.fork()
                if pid == 0:
                    _child(cfg, (sock.fileno(), wake_r, wake_w))
                children.add(pid)
                send({"op": "forked", "pid": pid})
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 3.0
        while children and time.monotonic() < deadline:
            reap()
            time.sleep(0.01)
    return 0


def _child(cfg: WorkerConfig, close: tuple[int, ...]) -> None:
    """In the forked node: drop the template's handles and run the worker (never returns)."""
    code = 70
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in close:
            with contextlib.suppress(OSError):
                os.close(fd)
        from pipeline.runtime.worker import worker_main

        worker_main(cfg)
    except BaseException:
        with contextlib.suppress(BaseException):
            import traceback

            traceback.print_exc()
    finally:
        os._exit(code)

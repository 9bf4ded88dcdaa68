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
  handlers). The template itself never starts a thread: it waits in ``select`` for requests.
- It closes every file descriptor it inherited (a caller's listening socket must not stay
  open in node processes), ignores SIGINT like every node, and freezes the garbage
  collector's objects so that collections in the nodes do not copy the shared pages.
- Start-up: right after it answers the supervisor's first request, the template imports
  the ``preload_modules`` (``cv2``) of every node of the graph, once, shared by the nodes
  that use them: while the supervisor sets up its side of the run (its run folder, ZeroMQ
  context and control socket), not after it.
- Nodes are forked all at once (``launch_many``: one request, one intermediate process for
  all of them) through an intermediate process that exits once they are forked; the
  supervisor is a child subreaper (``PR_SET_CHILD_SUBREAPER``) while it launches, so it
  adopts the nodes: every node is the supervisor's own child, as with ``launch_local``.
  Crash detection is unchanged (a pidfd, readable when the node exits; ``waitpid`` for its
  status), and so is the orphan watch (a node whose parent, the supervisor, goes stops
  itself). A restarted node (``launch``) goes the same way, alone.
- Once every node is launched the template exits: its own pages (what only its imports
  touched) are freed, and nothing of it outlives the launch.

Linux only (``os.fork``, ``os.pidfd_open``, ``prctl``); ``PIPELINE_FORK_SERVER=0`` turns it
off.
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
from collections.abc import Iterable, Sequence
from typing import Any

from pipeline.runtime.plan import WorkerConfig

__all__ = ["ForkServer", "fork_server_supported"]

_MAX = 1 << 20
_SUPERVISOR_PATH: list[str] = []  # in the template: the supervisor's import path
_PRELOAD: list[str] = []  # in the template: the nodes' preload_modules


def fork_server_supported() -> bool:
    """Whether this process can start a template now (Linux, pidfds, no other thread)."""
    if os.environ.get("PIPELINE_FORK_SERVER", "1") == "0":
        return False
    if not sys.platform.startswith("linux") or not hasattr(os, "pidfd_open"):
        return False
    return threading.active_count() == 1


class ForkedProcess:
    """A node forked by the template, now a child of the supervisor: the ``NodeProcess``
    the supervisor watches (a pidfd for its exit, ``waitpid`` for its status)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.sentinel: int | None = None
        with contextlib.suppress(OSError):
            self.sentinel = os.pidfd_open(pid)
        self._pidfd = self.sentinel
        self._code: int | None = None
        self._reaped = False

    @property
    def exitcode(self) -> int | None:
        if not self._reaped:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: the status is lost
                self._reaped = True
                return None
            if pid:
                self._reaped = True
                self._code = os.waitstatus_to_exitcode(status)
        return self._code

    def is_alive(self) -> bool:
        return self.exitcode is None and not self._reaped

    def join(self, timeout: float) -> None:
        if self._reaped:
            return
        if self._pidfd is not None:
            select.select([self._pidfd], [], [], max(0.0, timeout))
            _ = self.exitcode
            return
        deadline = time.monotonic() + timeout
        while self.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)

    def kill(self, sig: int) -> None:
        if self._reaped:
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


_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37


def _subreaper(on: bool | None = None) -> bool | None:
    """Read (``on=None``) or set whether this process adopts its orphaned descendants;
    None where the platform cannot."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if on is None:
            flag = ctypes.c_int(0)
            if libc.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0) != 0:
                return None
            return bool(flag.value)
        if libc.prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
            return None
        return on
    except (OSError, AttributeError):
        return None


class ForkServer:
    """The supervisor's handle on the template: ``launch(cfg)`` forks one node from it.

    The template forks each node through a short-lived intermediate process, so the node is
    orphaned at once and adopted by the supervisor (a child subreaper while it launches):
    every node is then the supervisor's own child, exactly as with ``launch_local``, and the
    template can go as soon as the last node is launched (``close``), taking its own pages
    with it.
    """

    def __init__(self, pid: int, sock: socket.socket, was_subreaper: bool) -> None:
        self.pid = pid
        self.sock = sock
        self.was_subreaper = was_subreaper
        self.alive = True
        self.frozen = False
        self.pinged = False  # a ping sent whose answer is not read yet

    @classmethod
    def start(cls, preload: Iterable[str], *, wait: bool = True) -> ForkServer | None:
        """Fork the template (None where that is not safe or possible here); it imports the
        ``preload_modules`` of the node types in ``preload`` before it forks a node.

        ``wait=False``: return without waiting for the template's first answer (the caller
        does its own set-up meanwhile, then calls ``confirm``)."""
        if not fork_server_supported():
            return None
        was = _subreaper()
        if was is None or _subreaper(True) is None:
            return None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        supervisor = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        # The supervisor's own collections would copy the pages it shares with the template
        # (a collection writes to every object it visits): its objects stay out of them
        # until the run ends (``RunPerf``'s caller calls ``thaw``). No collection first: it
        # costs 15-30 ms of every start-up and finds a few dozen objects after the imports.
        gc.freeze()
        try:
            pid = os.fork()
        except OSError:
            gc.unfreeze()
            ours.close()
            theirs.close()
            if not was:
                _subreaper(False)
            return None
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
        server = cls(pid, ours, was)
        server.frozen = True
        try:
            server.sock.sendall(json.dumps({"op": "ping"}).encode())
            server.pinged = True
        except OSError:
            pass
        if wait and not server.confirm():
            return None
        return server

    def confirm(self) -> bool:
        """Whether the template answered its ping; if not, it is stopped (and the caller
        starts its nodes some other way)."""
        if self.pinged:
            self.pinged = False
            try:
                reply = self._reply()
            except OSError:
                reply = {}
            if reply.get("op") == "pong":
                return True
        elif self.alive:
            return True
        self.close()
        self.thaw()
        return False

    def _request(self, message: dict[str, Any]) -> dict[str, Any]:
        if self.pinged and not self.confirm():
            raise OSError("the fork server did not start")
        self.sock.sendall(json.dumps(message).encode())
        return self._reply()

    def _reply(self) -> dict[str, Any]:
        readable, _, _ = select.select([self.sock], [], [], 60.0)
        data = self.sock.recv(_MAX) if readable else b""
        if not data:
            raise OSError("the fork server did not answer")
        reply: dict[str, Any] = json.loads(data)
        return reply

    def launch(self, cfg: WorkerConfig) -> ForkedProcess:
        """Fork one worker from the template (a ``runner.Launcher``)."""
        return self.launch_many([cfg])[0]

    def launch_many(self, cfgs: Sequence[WorkerConfig]) -> list[ForkedProcess]:
        """Fork a worker per config from the template, in one round trip; in their order."""
        if not cfgs:
            return []
        reply = self._request({"op": "fork", "configs": [cfg.to_wire() for cfg in cfgs]})
        pids = reply.get("pids")
        if reply.get("op") != "forked" or not isinstance(pids, list) or len(pids) != len(cfgs):
            names = ", ".join(repr(cfg.node_id) for cfg in cfgs)
            raise OSError(f"the fork server could not start node(s) {names}: {reply}")
        return [ForkedProcess(int(pid)) for pid in pids]

    def close(self) -> None:
        """Stop the template (every node launched has been adopted by now) and reap it."""
        if not self.alive:
            return
        self.alive = False
        with contextlib.suppress(OSError):
            self.sock.close()
        if not self.was_subreaper:
            _subreaper(False)
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
            time.sleep(0.002)

    def thaw(self) -> None:
        """The run is over: the supervisor's objects take part in its collections again."""
        if self.frozen:
            self.frozen = False
            gc.unfreeze()


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
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor's, as in every node
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _close_inherited({sock.fileno()})
    _standard_streams()
    # The caller's log handlers write to files closed above: forget them, unclosed.
    import logging

    logging.root.handlers.clear()
    from pipeline.registry import load_node_class
    from pipeline.runtime.worker import node_sys_path  # imported once, shared by every node

    # As in a spawned worker: no module from the current folder shadows a library here
    # (a stray cv2.py); a ``module:Class`` node gets the folder back, last, in its process.
    global _SUPERVISOR_PATH
    _SUPERVISOR_PATH = list(sys.path)
    sys.path[:] = node_sys_path(_SUPERVISOR_PATH, "", os.getcwd())

    needs: dict[str, tuple[str, ...]] = {}
    for node_type in dict.fromkeys(preload):
        with contextlib.suppress(Exception):  # the node reports its own import error
            needs[node_type] = load_node_class(node_type).preload_modules
    global _PRELOAD
    _PRELOAD = [m for node_type in needs for m in needs[node_type]]

    def send(message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            sock.sendall(json.dumps(message).encode())

    while True:
        readable, _, _ = select.select([sock], [], [], 0.5)
        if os.getppid() != supervisor:
            return 0  # the supervisor is gone
        if not readable:
            continue
        data = sock.recv(_MAX)
        if not data:
            return 0  # the supervisor closed the channel: every node is launched
        request = json.loads(data)
        if request["op"] == "ping":
            send({"op": "pong"})
            # after the answer: while the supervisor sets up its side of the run
            _import_preload()
        elif request["op"] == "fork":
            cfgs = [WorkerConfig.from_wire(wire) for wire in request["configs"]]
            send({"op": "forked", "pids": _fork_orphans(cfgs, sock.fileno())})


def _import_preload() -> None:
    """Import what the nodes will import (once, shared by every node that uses it; a
    missing extra: the node says which when it imports it itself)."""
    for module in dict.fromkeys(_PRELOAD):
        with contextlib.suppress(Exception):
            importlib.import_module(module)
    gc.collect()
    gc.freeze()  # the shared objects stay out of the nodes' collections: no copied pages


def _fork_orphans(cfgs: list[WorkerConfig], channel: int) -> list[int]:
    """Fork the nodes through an intermediate that exits once they are forked: they are
    orphaned and adopted by the supervisor (a child subreaper) before this returns their
    pids."""
    r, w = os.pipe()
    middle = os.fork()
    if middle == 0:
        try:
            os.close(r)
            me = os.getpid()  # not a node's getppid(): it may be adopted already
            for cfg in cfgs:
                node = os.fork()
                if node == 0:
                    os.close(w)
                    _child(cfg, (channel,), me)
                os.write(w, node.to_bytes(8, "little"))
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    try:
        while len(data) < 8 * len(cfgs):
            chunk = os.read(r, 8 * len(cfgs) - len(data))
            if not chunk:
                break
            data += chunk
    finally:
        os.close(r)
        os.waitpid(middle, 0)  # gone: the nodes have their new parent now
    if len(data) != 8 * len(cfgs):
        raise OSError("the nodes could not be forked")
    return [int.from_bytes(data[i : i + 8], "little") for i in range(0, len(data), 8)]


def _child(cfg: WorkerConfig, close: tuple[int, ...], middle: int) -> None:
    """In the forked node: drop the template's handles, wait to be adopted by the supervisor
    (the worker watches its parent) and run the worker (never returns)."""
    code = 70
    try:
        for fd in close:
            with contextlib.suppress(OSError):
                os.close(fd)
        from pipeline.runtime.worker import node_sys_path, worker_main

        sys.path[:] = node_sys_path(_SUPERVISOR_PATH, cfg.plan.node_type, os.getcwd())
        while os.getppid() == middle:
            time.sleep(0.0002)

        worker_main(cfg)
    except BaseException:
        with contextlib.suppress(BaseException):
            import traceback

            traceback.print_exc()
    finally:
        os._exit(code)

"""The supervisor: spawns one process per node, wires them, watches them, and cleans up.

``run_graph(graph)`` starts every node (``spawn`` start method: nothing inherited by
accident), waits until each has opened, then starts them. It ends when every node has
finished (end of stream reached every sink). It also:

- stops the sources on the first SIGINT/SIGTERM and lets end of stream drain the graph,
  force-stopping after ``grace_s`` or at once on a second SIGINT;
- on a node's error, prints one line naming node, method and input seq, then the node's
  traceback, and stops the graph (exit code 1);
- notices a node that died (SIGKILL, segfault) within a poll interval (0.1 s) through the
  process's pidfd, reports it, and stops the graph (exit code 1);
- removes every shared-memory segment and socket file of the run when it ends, whatever
  happened, and sweeps those of dead runs before it starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, Literal, Protocol, runtime_checkable

import zmq

from pipeline.errors import NodeError, NodeExitError, NodeOpenError, NodeProcessError
from pipeline.graph.validate import ValidatedGraph
from pipeline.runtime import protocol as p
from pipeline.runtime.plan import Layout, WorkerConfig, plan_graph
from pipeline.runtime.protocol import NodeState
from pipeline.runtime.stats import NodeStats
from pipeline.runtime.table import render_table
from pipeline.transport.curve import Gatekeeper, RunKeys, serve
from pipeline.transport.shm import remove_run_segments, sweep_stale

__all__ = [
    "ClusterLauncher",
    "Launcher",
    "NodeProcess",
    "RunMonitor",
    "RunResult",
    "launch_local",
    "run_graph",
]


class RunMonitor(Protocol):
    """Watches a running graph (the bench's progress bar, warm-up and stop rules).

    ``on_stats`` is called about twice a second once every node has started, with the
    latest statistics of each node (with their histograms) and the seconds since the
    start. It may answer ``"reset"`` (every node starts its statistics afresh: the end of a
    warm-up), ``"stop"`` (stop the sources and drain, as Ctrl-C does) or ``None``.
    """

    def on_stats(
        self, stats: Mapping[str, NodeStats], elapsed_s: float
    ) -> Literal["reset", "stop"] | None: ...


EXIT_OK = 0
EXIT_FAILED = 1


@dataclasses.dataclass
class RunResult:
    """What a run ended with: exit code, each node's last statistics, the failure if any.

    Attributes:
        exit_code: 0, or 1 after a node's failure or a forced stop.
        stats: each node's last statistics, by node id.
        error: the first node failure (``NodeOpenError``, ``NodeProcessError`` or
            ``NodeExitError``), None when none failed.
        duration_s: wall time of the whole run.
        stopped: the run was interrupted (SIGINT/SIGTERM).
    """

    exit_code: int
    stats: dict[str, NodeStats]
    error: NodeError | None
    duration_s: float
    stopped: bool = False


def _run_dir_root() -> Path:
    return Path(tempfile.gettempdir())


def _sweep_run_dirs() -> None:
    for path in _run_dir_root().glob("pipeline-*-*"):
        parts = path.name.split("-")
        if len(parts) == 3 and parts[1].isdigit() and path.is_dir():
            try:
                os.kill(int(parts[1]), 0)
            except ProcessLookupError:
                shutil.rmtree(path, ignore_errors=True)
            except PermissionError:
                pass


class NodeProcess(Protocol):
    """A started node process, as the supervisor watches it (one per launcher kind)."""

    pid: int
    sentinel: int | None  # a file descriptor readable when it exits (a pidfd), if any

    @property
    def exitcode(self) -> int | None: ...

    def is_alive(self) -> bool: ...

    def join(self, timeout: float) -> None: ...

    def kill(self, sig: int) -> None: ...

    def close(self) -> None: ...


Launcher = Callable[[WorkerConfig], NodeProcess]
"""Starts one worker for a config. ``launch_local`` runs it here; a ``ClusterLauncher``
(``pipeline.cluster.RayLauncher``) starts it on the machine its placement chose."""


@runtime_checkable
class ClusterLauncher(Protocol):
    """A launcher whose nodes run on several machines.

    The supervisor asks it first to ``place`` every node (which machine runs it: a
    ``Layout``, from which the edges are planned: tcp between machines, shared memory within
    one), then launches each worker with the run's CURVE keys in its config, binds its own
    control socket on ``control_address`` (CURVE too), and calls ``close`` at the end.
    """

    control_address: str

    def __call__(self, cfg: WorkerConfig) -> NodeProcess: ...

    def place(self, graph: ValidatedGraph, run_dir: Path, run_prefix: str) -> Layout: ...

    def close(self) -> None: ...


class _LocalProcess:
    """A node process: a fresh interpreter (the ``spawn`` model) started with subprocess.

    Not ``multiprocessing``: its spawn re-imports the caller's ``__main__`` in every child, so
    a script calling ``run_graph`` without an ``if __name__ == "__main__"`` guard would start
    itself again. The config goes to the child as JSON on stdin.
    """

    def __init__(self, cfg: WorkerConfig) -> None:
        payload = json.dumps({"config": cfg.to_wire(), "sys_path": sys.path})
        self.popen = subprocess.Popen(
            [sys.executable, "-c", "from pipeline.runtime.worker import main; main()"],
            stdin=subprocess.PIPE,
            text=True,
        )
        assert self.popen.stdin is not None
        self.popen.stdin.write(payload)
        self.popen.stdin.close()
        self.pid = self.popen.pid
        # A pidfd becomes readable when the process exits: death is seen by the same poll
        # that reads the control socket. Where there is none, the poll's timeout catches it.
        self.sentinel: int | None = None
        if hasattr(os, "pidfd_open"):
            with contextlib.suppress(OSError):
                self.sentinel = os.pidfd_open(self.pid)

    @property
    def exitcode(self) -> int | None:
        return self.popen.poll()

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    def join(self, timeout: float) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)

    def kill(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def close(self) -> None:
        if self.sentinel is not None:
            with contextlib.suppress(OSError):
                os.close(self.sentinel)
            self.sentinel = None


def launch_local(cfg: WorkerConfig) -> NodeProcess:
    """Start a worker as a child process of this one."""
    return _LocalProcess(cfg)


@dataclasses.dataclass
class _Proc:
    """The supervisor's view of one node."""

    node_id: str
    process: NodeProcess
    is_source: bool
    state: NodeState = NodeState.CREATED
    stats: NodeStats | None = None
    exited: bool = False


class _Supervisor:
    def __init__(
        self,
        graph: ValidatedGraph,
        log_level: str,
        live: bool,
        out: IO[str],
        grace_s: float,
        monitor: RunMonitor | None = None,
        launcher: Launcher = launch_local,
    ) -> None:
        self.monitor = monitor
        self.graph = graph
        self.log_level = log_level
        self.live = live
        self.out = out
        self.grace_s = grace_s
        self.launcher = launcher
        self.run_id = secrets.token_hex(3)
        self.prefix = f"pipeline-{os.getpid()}-{self.run_id}"
        self.run_dir = _run_dir_root() / self.prefix
        self.plan = plan_graph(graph, self.run_dir)
        self.cluster = launcher if isinstance(launcher, ClusterLauncher) else None
        # A cluster's tcp sockets (edges between machines, the control socket) speak CURVE
        # with keys made for this run and handed to the nodes through the launcher only.
        self.keys = RunKeys.generate() if self.cluster is not None else None
        self.gate: Gatekeeper | None = None
        self.procs: dict[str, _Proc] = {}
        self.error: NodeError | None = None
        self.stop_deadline: float | None = None
        self.interrupts = 0
        self.forced = False
        self.endpoints: dict[str, str] = {}
        self.hello: set[str] = set()

    # set-up ------------------------------------------------------------------------------------
    def _configs(self, control: str) -> list[WorkerConfig]:
        return [
            WorkerConfig(
                plan=node,
                control=control,
                shm_prefix=self.prefix,
                log_level=self.log_level,
                stats_path=str(self.run_dir / "stats.json"),
                keys=self.keys,
            )
            for node in self.plan.nodes
        ]

    def run(self) -> RunResult:
        sweep_stale()
        _sweep_run_dirs()
        self.run_dir.mkdir(mode=0o700)
        t0 = time.monotonic()
        ctx: zmq.Context[Any] = zmq.Context()
        router = ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        if self.cluster is not None and self.keys is not None:
            self.gate = Gatekeeper(ctx, self.keys)
            serve(router, self.keys)
            self.gate.watch(router)
            router.bind(f"tcp://{_tcp_host(self.cluster.control_address)}:*")
            control = router.getsockopt_string(zmq.LAST_ENDPOINT)
        else:
            control = f"ipc://{self.run_dir}/control"
            router.bind(control)
        self.router = router
        old_int = signal.getsignal(signal.SIGINT)
        old_term = signal.getsignal(signal.SIGTERM)
        try:
            if self.cluster is not None:
                try:
                    layout = self.cluster.place(self.graph, self.run_dir, self.prefix)
                except NodeError as exc:
                    self._fail(exc, None)
                    return self._result(t0)
                self.plan = plan_graph(self.graph, self.run_dir, layout)
                self._print_layout(layout)
            # Children inherit "ignore SIGINT" across exec, so a Ctrl-C in the terminal reaches
            # only the supervisor, even before a child has installed its own handlers.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            for cfg in self._configs(control):
                self.procs[cfg.node_id] = _Proc(cfg.node_id, self.launcher(cfg), cfg.plan.is_source)
            signal.signal(signal.SIGINT, self._on_signal)
            signal.signal(signal.SIGTERM, self._on_signal)
            self._supervise()
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
            self._terminate_all()
            for proc in self.procs.values():
                proc.process.close()
            if self.cluster is not None:
                self.cluster.close()
            router.close(linger=0)
            if self.gate is not None:
                if self.gate.refused:
                    self._print(
                        f"refused {self.gate.refused} connection(s) to the control socket "
                        "without the run's keys"
                    )
                self.gate.close()
            ctx.term()
            remove_run_segments(self.prefix)
            shutil.rmtree(self.run_dir, ignore_errors=True)
        return self._result(t0)

    def _result(self, t0: float) -> RunResult:
        stats = {n: proc.stats for n, proc in self.procs.items() if proc.stats is not None}
        code = EXIT_FAILED if (self.error or self.forced) else EXIT_OK
        return RunResult(code, stats, self.error, time.monotonic() - t0, self.interrupts > 0)

    def _print_layout(self, layout: Layout) -> None:
        """Which machine runs which nodes, and which edges cross machines (tcp, CURVE)."""
        machines: dict[str, list[str]] = {}
        for node in self.plan.nodes:
            machines.setdefault(layout.names.get(node.node_id, "?"), []).append(node.node_id)
        for name, nodes in machines.items():
            self._print(f"on {name}: {', '.join(nodes)}")
        crossing = [e.name for e in self.plan.edges() if layout.crosses(e.producer, e.consumer)]
        if crossing:
            self._print(f"between machines (tcp, CURVE): {', '.join(crossing)}")

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.interrupts += 1
        if self.interrupts == 1:
            self.stop_deadline = time.monotonic() + self.grace_s
            self._print(
                "stopping: sources end their streams and the graph drains (Ctrl-C again to force)"
            )
        else:
            self.stop_deadline = time.monotonic()

    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    # messages ----------------------------------------------------------------------------------
    def _send(self, node_id: str, message: p.ControlMessage) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.router.send_multipart([node_id.encode(), p.encode(message)])

    def _send_all(self, message: p.ControlMessage, *, sources_only: bool = False) -> None:
        for proc in self.procs.values():
            if proc.is_source or not sources_only:
                self._send(proc.node_id, message)

    def _receive(self) -> None:
        """One message from a node: decoded, its state followed, then acted on."""
        ident, raw = self.router.recv_multipart()
        node_id = ident.decode()
        proc = self.procs.get(node_id)
        if proc is None:
            return  # not one of ours
        try:
            self.on_message(proc, p.decode(raw))
        except p.ProtocolError as exc:
            self._fail(NodeError(node_id, "control", str(exc)), None)

    def on_message(self, proc: _Proc, message: p.ControlMessage) -> None:
        """Act on one message from a worker (a new worker -> supervisor kind goes here)."""
        node_id = proc.node_id
        match message:
            case p.Hello(endpoints=endpoints):
                self._follow(proc, NodeState.OPENING)
                self.hello.add(node_id)
                self.endpoints.update(endpoints)
                if len(self.hello) == len(self.procs):
                    self._send_wiring()
            case p.Ready():
                self._follow(proc, NodeState.READY)
            case p.OpenFailed(error=error, tb=tb):
                self._follow(proc, NodeState.FAILED)
                # Usually a user's mistake (a missing file, a busy port): the message says
                # what; the traceback is for --log-level DEBUG.
                debug = self.log_level == "DEBUG"
                self._fail(NodeOpenError(node_id, "open", error), tb if debug else None)
                if not debug:
                    self._print("(run with --log-level DEBUG to see the traceback)")
            case p.StatsReport(stats=stats):
                proc.stats = NodeStats.from_wire(stats)
                self._follow(proc, NodeState(proc.stats.state))
            case p.Failed():
                if message.stats:
                    proc.stats = NodeStats.from_wire(message.stats)
                self._follow(proc, NodeState.FAILED)
                failure = NodeProcessError(
                    node_id, message.method, message.error, message.seq, message.source
                )
                self._fail(failure, message.tb)
            case p.Done(stats=stats):
                proc.stats = NodeStats.from_wire(stats)
                self._follow(proc, NodeState.CLOSED)
            case _:
                raise p.ProtocolError(f"a supervisor does not take {message.kind!r} messages")

    @staticmethod
    def _follow(proc: _Proc, state: NodeState) -> None:
        """The node says it is in ``state``: a step forward along the allowed transitions."""
        if not proc.state.reaches(state):
            raise p.ProtocolError(
                f"node {proc.node_id!r} reported {state.value} while {proc.state.value}"
            )
        proc.state = state

    def _send_wiring(self) -> None:
        for node_id in self.procs:
            mine = {e.name: self.endpoints[e.name] for e in self.plan.edges_from(node_id)}
            self._send(node_id, p.Wiring(mine))

    # supervision -------------------------------------------------------------------------------
    def _supervise(self) -> None:
        """The run's phases: start every node, run until every node ended, or stop."""
        self.poller = zmq.Poller()
        self.poller.register(self.router, zmq.POLLIN)
        for proc in self.procs.values():
            if proc.process.sentinel is not None:
                self.poller.register(proc.process.sentinel, zmq.POLLIN)
        if not self._starting():
            return
        self._send_all(p.Start())
        self._running()

    def _pump(self, timeout_ms: int) -> None:
        """Wait up to ``timeout_ms`` for anything; read every message and reap every exit."""
        events = dict(self.poller.poll(timeout_ms))
        while self.router.poll(0):
            self._receive()
        for proc in self.procs.values():
            if not proc.exited:
                self._check_exit(proc, events)

    def _check_exit(self, proc: _Proc, events: dict[Any, int]) -> None:
        fd = proc.process.sentinel
        if fd is not None:
            if fd not in events:
                return
            self.poller.unregister(fd)
            proc.process.join(1.0)  # reap it: its exit code is unknown until then
        elif proc.process.is_alive():
            return
        proc.exited = True
        code = proc.process.exitcode
        # Its last words (Done, Failed) may still be on their way through ZeroMQ: read them
        # before judging the exit.
        last_words = time.monotonic() + (1.0 if code == 0 else 0.2)
        while not proc.state.ended and time.monotonic() < last_words and self.router.poll(50):
            self._receive()
        if proc.state is not NodeState.CLOSED and not self.error and not self.forced:
            # a launcher may know better how it ended (a cluster: its machine left)
            how = getattr(proc.process, "exit_reason", None) or _describe_exit(code)
            self._fail(NodeExitError(proc.node_id, how, proc.state.value), None)

    def _all_exited(self) -> bool:
        return all(proc.exited for proc in self.procs.values())

    def _starting(self) -> bool:
        """Until every node has opened: True to go on, False when the run is over."""
        while True:
            self._pump(100)
            if self.error or self._all_exited():
                return False
            if all(proc.state is NodeState.READY for proc in self.procs.values()):
                return True
            if self.stop_deadline is not None:
                self._print("stopped before the graph started")
                self.forced = True
                return False

    def _running(self) -> None:
        """Until every node has ended, a node failed, or a stop ran out of time."""
        started_at = time.monotonic()
        next_monitor = started_at + 0.5
        next_table = started_at + 1.0
        stop_sent = False
        while True:
            self._pump(100)
            if self.error or self._all_exited():
                return
            now = time.monotonic()
            if self.monitor is not None and now >= next_monitor:
                next_monitor = now + 0.5
                self._consult_monitor(self.monitor, now, now - started_at)
            if self.stop_deadline is not None:
                if not stop_sent:
                    stop_sent = True
                    self._send_all(p.Stop(), sources_only=True)
                if now >= self.stop_deadline:
                    self._print("forcing stop: not every node drained in time")
                    self.forced = True
                    return
            if now >= next_table:
                next_table = now + 1.0
                self._publish_stats()
                if self.live:
                    self._live_table()

    def _consult_monitor(self, monitor: RunMonitor, now: float, elapsed_s: float) -> None:
        rows = {n: proc.stats for n, proc in self.procs.items() if proc.stats}
        verdict = monitor.on_stats(rows, elapsed_s)
        if verdict == "reset":
            self._send_all(p.Reset())
        elif verdict == "stop" and self.stop_deadline is None:
            self.stop_deadline = now + self.grace_s

    def _fail(self, error: NodeError, tb: str | None) -> None:
        if self.error:
            return
        self.error = error
        self._print(f"error: {error}")
        if tb:
            self._print(tb.rstrip())

    def _publish_stats(self) -> None:
        """Every node's latest statistics, for nodes that show them (a preview page)."""
        rows = {n: proc.stats.to_dict() for n, proc in self.procs.items() if proc.stats}
        tmp = self.run_dir / "stats.json.tmp"
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps(rows))
            tmp.replace(self.run_dir / "stats.json")

    def _live_table(self) -> None:
        rows = {n: proc.stats for n, proc in self.procs.items()}
        text = render_table(rows)
        # redraw in place on a terminal
        self.out.write("\x1b[H\x1b[J" + text + "\n")
        self.out.flush()

    def _terminate_all(self) -> None:
        alive = [proc for proc in self.procs.values() if proc.process.is_alive()]
        for proc in alive:
            proc.process.kill(signal.SIGTERM)
        deadline = time.monotonic() + 3.0
        for proc in alive:
            proc.process.join(max(0.0, deadline - time.monotonic()))
        for proc in alive:
            if proc.process.is_alive():
                proc.process.kill(signal.SIGKILL)
                proc.process.join(1.0)
        for proc in self.procs.values():
            proc.process.join(0.1)


def _tcp_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "stopped responding"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with code {code}"


def run_graph(
    graph: ValidatedGraph,
    *,
    log_level: str = "INFO",
    live: bool = False,
    stats_json: str | Path | None = None,
    out: IO[str] | None = None,
    grace_s: float = 5.0,
    monitor: RunMonitor | None = None,
    launcher: Launcher = launch_local,
) -> RunResult:
    """Run a validated graph to its end; returns the exit code and statistics.

    Args:
        graph: from ``load_graph``.
        log_level: of the node processes.
        live: redraw a statistics table on ``out`` every second.
        stats_json: write every node's final statistics there.
        out: where errors and the table go (default stderr).
        grace_s: after a stop, how long the graph may drain before it is forced.
        monitor: called with statistics twice a second; may reset them or stop the graph.
        launcher: starts each node's worker (default: a child process of this one).
    """
    stream = out or sys.stderr
    result = _Supervisor(graph, log_level, live, stream, grace_s, monitor, launcher).run()
    if stats_json is not None:
        payload = {
            "graph": graph.name,
            "file": graph.file,
            "exit_code": result.exit_code,
            "error": str(result.error) if result.error else None,
            "duration_s": round(result.duration_s, 3),
            "nodes": {k: v.to_dict() for k, v in result.stats.items()},
        }
        Path(stats_json).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return result

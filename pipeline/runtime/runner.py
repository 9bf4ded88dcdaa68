"""The supervisor: spawns one process per node, wires them, watches them, and cleans up.

``run_graph(graph)`` starts every node (``spawn`` start method: nothing inherited by
accident), waits until each has opened, then starts them. It ends when every node has
finished (end of stream reached every sink). It also:

- stops the sources on the first SIGINT, SIGTERM or SIGHUP (Ctrl-C, a service manager's
  stop, a closed terminal or ssh session) and lets end of stream drain the graph,
  force-stopping after ``grace_s`` or at once on a second one; a stop that drained is a
  clean stop, with the exit code ``128 + signal`` (130 for SIGINT, 143 for SIGTERM, 129
  for SIGHUP), and a forced one a failure (1). Nodes get the same SIGTERM from a service
  manager (see ``pipeline.runtime.worker``); the forced stop sends them SIGUSR2;
- on a node's error, prints one line naming node, method and input seq, then the node's
  traceback, and stops the graph (exit code 1);
- notices a node that died (SIGKILL, segfault) within a poll interval (0.1 s) through the
  process's pidfd, reports it, and stops the graph (exit code 1);
- notices a node that hangs: one inside the same ``process()``/``flush()`` call for its
  ``health_timeout_s``, in ``open()`` for its ``open_timeout_s`` or in ``close()`` for its
  ``close_timeout_s`` (read from the run's activity board, ``pipeline.runtime.activity``).
  At half the limit it warns (the log, and ``stalled`` in the live table); at the limit it
  reports the node by id, method and input seq, has it print its Python stack (SIGUSR1)
  and handles it as a crash;
- restarts a node whose ``restart:`` policy says so instead of stopping (see
  ``_Supervisor._crashed``, and ARCHITECTURE.md "A node restarted"): backoff, a crash-loop
  limit, its producers reconnected (``Rewire``) and what was in flight counted;
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

from pipeline.errors import (
    NodeCrashLoopError,
    NodeError,
    NodeExitError,
    NodeOpenError,
    NodeProcessError,
)
from pipeline.graph.validate import ValidatedGraph
from pipeline.runtime import protocol as p
from pipeline.runtime.activity import ActivityBoard
from pipeline.runtime.forkserver import ForkServer
from pipeline.runtime.perf import RunPerf
from pipeline.runtime.plan import (
    Layout,
    WorkerConfig,
    plan_graph,
    rebind_candidates,
    replan_moved,
)
from pipeline.runtime.protocol import NodeState
from pipeline.runtime.stats import NodeStats
from pipeline.runtime.table import render_table
from pipeline.runtime.worker import FORCE_SIGNAL, progress_path, read_progress
from pipeline.transport.curve import Gatekeeper, RunKeys, serve
from pipeline.transport.plan import EdgePlan
from pipeline.transport.shm import (
    LOCK_SUFFIX,
    SHM_DIR,
    RunLock,
    remove_run_segments,
    run_is_alive,
    sweep_stale,
)

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
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclasses.dataclass
class RunResult:
    """What a run ended with: exit code, each node's last statistics, the failure if any.

    Attributes:
        exit_code: 0 when the graph ended by itself; ``128 + signal`` when a signal stopped
            it and it drained (130 SIGINT, 143 SIGTERM, 129 SIGHUP); 1 after a node's
            failure or a forced stop.
        stats: each node's last statistics, by node id.
        error: the first node failure (``NodeOpenError``, ``NodeProcessError`` or
            ``NodeExitError``), None when none failed.
        duration_s: wall time of the whole run.
        stopped: the run was interrupted (SIGINT/SIGTERM).
        edges: each edge's transport at the end (``shm`` or ``tcp``), by edge name: what its
            consumer bound last (on a cluster, a restart may have moved a node, and with it
            the kind of its edges).
    """

    exit_code: int
    stats: dict[str, NodeStats]
    error: NodeError | None
    duration_s: float
    stopped: bool = False
    stop_signal: int | None = None
    memory: dict[str, Any] = dataclasses.field(default_factory=dict)
    edges: dict[str, str] = dataclasses.field(default_factory=dict)


# a restarted node's states from its launch until it runs (it takes control messages from
# its Hello on, in order)
_STARTING_AGAIN = (NodeState.CREATED, NodeState.OPENING, NodeState.READY, NodeState.RUNNING)


def _run_dir_root() -> Path:
    return Path(tempfile.gettempdir())


def _sweep_run_dirs() -> None:
    """Remove the folders of runs that no longer hold the lock inside them (see ``RunLock``:
    a pid says nothing about a run in another PID namespace sharing /tmp)."""
    for path in _run_dir_root().glob("pipeline-*-*"):
        parts = path.name.split("-")
        is_run = len(parts) == 3 and parts[1].isdigit() and path.is_dir()
        if is_run and not run_is_alive(path / "lock", int(parts[1])):
            shutil.rmtree(path, ignore_errors=True)


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

    def replace(self, node_id: str, graph: ValidatedGraph) -> Layout:
        """Before a restart of ``node_id``: somewhere to run it again (its machine if that is
        still in the cluster, else another its placement allows; a ``NodePlacementError``
        when none does); the layout after."""
        ...

    def close(self) -> None: ...


_NO_CWD = "-P" if sys.version_info >= (3, 11) else "-I"


class _LocalProcess:
    """A node process: a fresh interpreter (the ``spawn`` model) started with subprocess.

    Not ``multiprocessing``: its spawn re-imports the caller's ``__main__`` in every child, so
    a script calling ``run_graph`` without an ``if __name__ == "__main__"`` guard would start
    itself again. The config goes to the child as JSON on stdin.
    """

    def __init__(self, cfg: WorkerConfig) -> None:
        payload = json.dumps({"config": cfg.to_wire(), "sys_path": sys.path})
        self.popen = subprocess.Popen(
            # -P (-I before 3.11): the current folder is not put on the path, so nothing in
            # it shadows a library while the worker starts (node_sys_path decides after)
            [sys.executable, _NO_CWD, "-c", "from pipeline.runtime.worker import main; main()"],
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
    index: int = 0
    timeouts: Mapping[str, float | None] = dataclasses.field(default_factory=dict)
    state: NodeState = NodeState.CREATED
    stats: NodeStats | None = None
    exited: bool = False
    stalled: str = ""  # "stalled in process() 6 s", while a call lasts past half its limit
    warned_since: int = 0  # the call (by its start) already warned about
    cfg: WorkerConfig | None = None
    # restart: policies (``_Supervisor._crashed``)
    restart: str = "never"
    backoff: tuple[float, float] = (0.5, 30.0)
    max_restarts: int = 5
    window_s: float = 60.0
    restarts: int = 0
    generation: int = 0
    failures: list[float] = dataclasses.field(default_factory=list)  # when, in the window
    last_error: str = ""  # what the incarnation that is ending said, if it said anything
    restart_at: float | None = None  # dead, to be started again then
    died_at: float = 0.0
    delivered: dict[str, int] = dataclasses.field(default_factory=dict)  # per input edge
    killing: bool = False  # stuck: being killed, to be restarted
    wired: bool = True  # has its outputs' endpoints (a restarted one: once it bound again)

    @property
    def gone(self) -> bool:
        """Exited, and not to be started again."""
        return self.exited and self.restart_at is None


class _Supervisor:
    def __init__(
        self,
        graph: ValidatedGraph,
        log_level: str,
        live: bool,
        out: IO[str],
        grace_s: float,
        monitor: RunMonitor | None = None,
        launcher: Launcher | None = None,
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
        self.run_keys = RunKeys.generate() if self.cluster is not None else None
        self.gate: Gatekeeper | None = None
        self.procs: dict[str, _Proc] = {}
        self.error: NodeError | None = None
        self.stop_deadline: float | None = None
        self.interrupts = 0
        self.stop_signal: int | None = None
        self.forced = False
        self.endpoints: dict[str, str] = {}
        self.keys: dict[str, str] = {}
        self.hello: set[str] = set()
        self.perf = RunPerf()
        self.started = False
        self.server: ForkServer | None = None  # kept for restarts
        # (producer, edge) -> consumer: a restarted consumer's edge its producer has not yet
        # connected again (``Rewire`` sent, no ``Rewired`` yet)
        self.rewiring: dict[tuple[str, str], str] = {}
        self.layout: Layout | None = None  # where each node runs, on a cluster
        self.deferred: set[str] = set()  # restarted, bound, waiting for a consumer's endpoint
        # edge -> its consumer, which kept running and binds it anew (``Rebind`` sent, no
        # ``Rebound`` yet): its producer was placed on another machine
        self.rebinds: dict[str, str] = {}
        # a restarted consumer that has not said Hello yet: its Rebind goes once it has
        self.rebind_later: dict[str, list[EdgePlan]] = {}

    # set-up ------------------------------------------------------------------------------------
    def _configs(self, control: str) -> list[WorkerConfig]:
        return [
            WorkerConfig(
                plan=node,
                control=control,
                shm_prefix=self.prefix,
                log_level=self.log_level,
                stats_path=str(self.run_dir / "stats.json"),
                stop_grace_s=self.grace_s,
                activity_path=str(self.run_dir / "activity"),
                keys=self.run_keys,
            )
            for node in self.plan.nodes
        ]

    def run(self) -> RunResult:
        # This run's locks first: from here on, no other run's sweep takes it for dead. The
        # folder appears with its lock already held (it is made under a hidden name).
        shm_lock = RunLock(SHM_DIR / (self.prefix + LOCK_SUFFIX))
        hidden = self.run_dir.with_name("." + self.run_dir.name)
        try:
            hidden.mkdir(mode=0o700)
            dir_lock = RunLock(hidden / "lock")
            try:
                hidden.rename(self.run_dir)
                return self._run()
            finally:
                shutil.rmtree(self.run_dir, ignore_errors=True)
                shutil.rmtree(hidden, ignore_errors=True)
                dir_lock.release(remove=False)  # removed with its folder
        finally:
            shm_lock.release()

    def _run(self) -> RunResult:
        # The template first (thread-free, before the ZeroMQ context): it imports what the
        # nodes share while this process sets up its side of the run.
        server = self._fork_server()
        try:
            sweep_stale()
            _sweep_run_dirs()
            _write_drawing(self.graph, self.run_dir / "graph.svg")
            self.board = ActivityBoard(self.run_dir / "activity", len(self.plan.nodes))
        except BaseException:
            if server is not None:
                server.close()
                server.thaw()
            raise
        t0 = time.monotonic()
        ctx: zmq.Context[Any] = zmq.Context()
        router = ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        if any(node.restart != "never" for node in self.graph.spec.nodes):
            # a restarted node connects under its old identity, maybe before the dead one's
            # connection is seen closed: the new connection takes it over
            router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        if self.cluster is not None and self.run_keys is not None:
            self.gate = Gatekeeper(ctx, self.run_keys)
            serve(router, self.run_keys)
            self.gate.watch(router)
            router.bind(f"tcp://{_tcp_host(self.cluster.control_address)}:*")
            control = router.getsockopt_string(zmq.LAST_ENDPOINT)
        else:
            control = f"ipc://{self.run_dir}/control"
            router.bind(control)
        self.router = router
        if server is not None and not server.confirm():
            server = None  # the template did not start: a fresh interpreter per node
        old_handlers = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
        try:
            if self.cluster is not None:
                try:
                    layout = self.cluster.place(self.graph, self.run_dir, self.prefix)
                except NodeError as exc:
                    self._fail(exc, None)
                    return self._result(t0)
                self.plan = plan_graph(self.graph, self.run_dir, layout)
                self.layout = layout
                self._print_layout(layout)
            if server is None:
                # Children inherit "ignore" across exec, so a Ctrl-C or a closed terminal
                # reaches only the supervisor, even before a child has installed its handlers.
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
            else:
                # Forked nodes come from the template, which ignores those itself: a stop
                # while the nodes are being launched is a stop (not lost).
                for sig in STOP_SIGNALS:
                    signal.signal(sig, self._on_signal)
            launcher = self.launcher or launch_local
            configs = self._configs(control)
            for cfg in configs:
                self.perf.launched(cfg.node_id)
            # forked from the template all at once (one round trip), else one by one
            processes = iter(server.launch_many(configs) if server is not None else ())
            for cfg in configs:
                spec = self.graph.node(cfg.node_id)
                self.procs[cfg.node_id] = _Proc(
                    cfg.node_id,
                    next(processes) if server is not None else launcher(cfg),
                    cfg.plan.is_source,
                    cfg.plan.index,
                    {
                        "open": spec.open_timeout_s,
                        "process": spec.health_timeout_s,
                        "flush": spec.health_timeout_s,
                        "close": spec.close_timeout_s,
                    },
                    cfg=cfg,
                    restart=spec.restart,
                    backoff=(spec.restart_backoff_s.initial, spec.restart_backoff_s.max),
                    max_restarts=spec.max_restarts,
                    window_s=spec.restart_window_s,
                )
            if server is not None and not self._restarts_possible():
                server.close()  # every node is this process's child now; the template goes
            elif server is not None:
                # restart: policies: a restarted node is forked from the template too, in
                # milliseconds instead of a fresh interpreter's second or more
                # (benchmarks/restart.py); the template stays for the run
                self.server = server
                self.perf.template_pid = server.pid
            self.perf.watch(self.procs, forked=server is not None)
            for sig in STOP_SIGNALS:
                signal.signal(sig, self._on_signal)
            self._supervise()
        finally:
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            self._terminate_all()
            self._last_reports()
            for proc in self.procs.values():
                proc.process.close()
            if server is not None:
                server.close()
                server.thaw()
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
            self.board.close()
            remove_run_segments(self.prefix)
        return self._result(t0)

    def _rows(self) -> dict[str, NodeStats]:
        """Each node's latest statistics, with its restarts."""
        return {
            n: dataclasses.replace(proc.stats, restarts=proc.restarts)
            if proc.restarts
            else proc.stats
            for n, proc in self.procs.items()
            if proc.stats is not None
        }

    def _result(self, t0: float) -> RunResult:
        stats = self._rows()
        stats = self.perf.annotate(stats)
        if self.error or self.forced:
            code = EXIT_FAILED
        elif self.stop_signal is not None:
            code = 128 + self.stop_signal  # stopped on purpose, and drained: a clean stop
        else:
            code = EXIT_OK
        return RunResult(
            code,
            stats,
            self.error,
            time.monotonic() - t0,
            self.interrupts > 0,
            self.stop_signal,
            self.perf.memory(),
            self._transports(),
        )

    def _transports(self) -> dict[str, str]:
        """Each edge's transport: from the endpoint its consumer bound last, else the plan."""
        found = {}
        for edge in self.plan.edges():
            endpoint = self.endpoints.get(edge.name)
            tcp = endpoint.startswith("tcp://") if endpoint else edge.tcp
            found[edge.name] = "tcp" if tcp else "shm"
        return found

    def _fork_server(self) -> ForkServer | None:
        """The template that forks the nodes (``launcher=None``, where the platform allows)."""
        if self.launcher is not None:
            return None
        return ForkServer.start((node.node_type for node in self.plan.nodes), wait=False)

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
            self.stop_signal = signum
            self.stop_deadline = time.monotonic() + self.grace_s
            self._print(
                "stopping: sources end their streams and the graph drains (Ctrl-C again to force)"
            )
        else:
            self.stop_deadline = time.monotonic()

    def _print(self, text: str) -> None:
        # after SIGHUP the terminal may be gone: the run still stops cleanly, unheard
        with contextlib.suppress(OSError):
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
            case p.Hello(endpoints=endpoints, keys=keys):
                self._follow(proc, NodeState.OPENING)
                for name in endpoints:  # a restarted node's: an edge now shm has no key
                    self.keys.pop(name, None)
                self.endpoints.update(endpoints)
                self.keys.update(keys)
                if proc.generation:
                    self._reconnect(proc)
                    return
                self.perf.mark(node_id, "hello")
                self.hello.add(node_id)
                if len(self.hello) == len(self.procs):
                    self._send_wiring()
            case p.Ready():
                self._follow(proc, NodeState.READY)
                if proc.generation:
                    self._send(node_id, p.Start())
                    self._print(
                        f"node {node_id!r} restarted (pid {proc.process.pid}, restart "
                        f"{proc.restarts}); running again {time.monotonic() - proc.died_at:.2f} s "
                        "after its end"
                    )
                    return
                self.perf.mark(node_id, "ready")
            case p.OpenFailed(error=error, tb=tb) if proc.generation and self._restartable(proc):
                self._follow(proc, NodeState.FAILED)
                proc.last_error = f"failed in open() after its restart: {error}"
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
                if self._restartable(proc):
                    # its process exits next; _check_exit restarts it (or calls a crash loop)
                    proc.last_error = str(failure)
                    if message.tb:
                        self._print(message.tb.rstrip())
                    return
                self._fail(failure, message.tb)
            case p.Done(stats=stats):
                proc.stats = NodeStats.from_wire(stats)
                self._follow(proc, NodeState.CLOSED)
                self._ended_before_rewire(node_id)
                self._rebinds_gone(node_id)
            case p.Rewired(edges=edges):
                for edge in edges:
                    self.rewiring.pop((node_id, edge), None)
            case p.Rebound(endpoints=endpoints, keys=keys):
                for name in endpoints:  # an edge now shm has no key
                    self.keys.pop(name, None)
                    self.rebinds.pop(name, None)
                self.endpoints.update(endpoints)
                self.keys.update(keys)
                self._wire_deferred()
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
            self._send(node_id, self._wiring(node_id))

    def _wiring(self, node_id: str) -> p.Wiring:
        edges = self.plan.edges_from(node_id)
        mine = {e.name: self.endpoints[e.name] for e in edges}
        # a tcp consumer's key goes to its producer only: nobody else can get in
        keys = {e.name: self.keys[e.name] for e in edges if e.name in self.keys}
        return p.Wiring(mine, keys)

    # restarts ------------------------------------------------------------------------------
    def _restarts_possible(self) -> bool:
        return any(proc.restart != "never" for proc in self.procs.values())

    def _restartable(self, proc: _Proc, code: int | None = 1) -> bool:
        """Whether the node's end (exit ``code``) is one its ``restart:`` policy restarts.

        Only once the graph runs (a node that cannot start is a configuration problem), and
        not after the run failed or was forced to stop. ``on-failure``: a raise, a crash, a
        kill or a hang; a clean exit (0) before the end of its stream is not one, ``always``
        restarts that too. A node whose stream ended (``Done``) is never restarted.
        """
        if proc.restart == "never" or not self.started or self.error or self.forced:
            return False
        failed = code != 0 or proc.state is NodeState.FAILED or bool(proc.last_error)
        return failed or proc.restart == "always"

    def _crashed(self, proc: _Proc, how: str) -> None:
        """A node under a restart policy ended: start it again after its backoff, unless it
        has failed more than ``max_restarts`` times within ``restart_window_s``."""
        now = time.monotonic()
        proc.died_at = now
        proc.failures = [t for t in proc.failures if now - t < proc.window_s] + [now]
        last = proc.last_error or f"node {proc.node_id!r} {how} while {proc.state.value}"
        proc.last_error = ""
        # the producers of a consumer that died after it was restarted: nothing to connect
        for key, consumer in list(self.rewiring.items()):
            if key[0] == proc.node_id or consumer == proc.node_id:
                del self.rewiring[key]
        # a consumer that died while binding inputs anew binds them as planned when restarted
        self._rebinds_gone(proc.node_id)
        if len(proc.failures) > proc.max_restarts:
            self._fail(
                NodeCrashLoopError(
                    proc.node_id, len(proc.failures), proc.window_s, proc.max_restarts, last
                ),
                None,
            )
            return
        initial, longest = proc.backoff
        delay = min(longest, initial * 2 ** (len(proc.failures) - 1))
        assert proc.cfg is not None
        inputs = proc.cfg.plan.inputs
        outputs = [e for port in proc.cfg.plan.outputs for e in port.edges]
        if proc.cfg.activity_path and inputs:
            progress = read_progress(
                progress_path(proc.cfg.activity_path, proc.index), len(inputs) + len(outputs)
            )
            proc.delivered = {e.name: n for e, n in zip(inputs, progress)}
            # what it sent on each ZeroMQ edge (none on the fast path): its live consumers
            # count what of it never arrived
            sent: dict[str, dict[str, int]] = {}
            for edge, n in zip(outputs, progress[len(inputs) :]):
                if n > 0 and not self.procs[edge.consumer].exited:
                    sent.setdefault(edge.consumer, {})[edge.name] = n
            for consumer, edges in sent.items():
                self._send(consumer, p.ProducerDied(edges))
        proc.restart_at = now + delay
        self._print(
            f"{last}; restarting it in {delay:.2g} s (restart: {proc.restart}, failure "
            f"{len(proc.failures)} of at most {proc.max_restarts + 1} within "
            f"{proc.window_s:g} s)"
        )

    def _due_restarts(self) -> None:
        now = time.monotonic()
        # a stop drains the graph through the dead node: its restart does not wait
        draining = self.stop_deadline is not None
        if self.error or self.forced:
            return
        for proc in self.procs.values():
            if proc.restart_at is not None and (draining or now >= proc.restart_at):
                self._relaunch(proc)

    def _relaunch(self, proc: _Proc) -> None:
        """Start a dead node's next incarnation: a fresh interpreter (the fork server's
        template is gone once every node was launched), its own slot pools (generation)."""
        assert proc.cfg is not None
        if self.cluster is not None and not self._place_again(proc, self.cluster):
            return
        proc.generation += 1
        proc.restarts += 1
        self.board.clear(proc.index)
        cfg = dataclasses.replace(proc.cfg, generation=proc.generation)
        proc.process.close()
        launch = self.launcher or launch_local
        if self.server is not None and self.server.alive:
            launch = self.server.launch
        try:
            proc.process = launch(cfg)
        except OSError as exc:  # the template died: a fresh interpreter then
            self._print(f"warning: {exc}; starting node {proc.node_id!r} in a new interpreter")
            proc.process = launch_local(cfg)
        if proc.process.sentinel is not None:
            self.poller.register(proc.process.sentinel, zmq.POLLIN)
        proc.exited = False
        proc.wired = False
        proc.killing = False
        proc.stalled = ""
        proc.state = NodeState.CREATED
        proc.restart_at = None

    def _place_again(self, proc: _Proc, cluster: ClusterLauncher) -> bool:
        """On a cluster, before a restart: where the node runs again (its machine if still
        there); a node whose machine is gone moves, and its inputs are planned anew for where
        it lands (``replan_moved``). False, the run failing, when nowhere fits."""
        assert proc.cfg is not None
        node_id = proc.node_id
        try:
            layout = cluster.replace(node_id, self.graph)
        except NodeError as exc:
            proc.restart_at = None
            self._fail(exc, None)
            return False
        before, self.layout = self.layout, layout
        if before is None or before.hosts[node_id] == layout.hosts[node_id]:
            return True
        fresh = plan_graph(self.graph, self.run_dir, layout)
        rebind = self._rebindable(rebind_candidates(self.plan, fresh, node_id))
        self.plan = replan_moved(self.plan, fresh, node_id, {e.name for e in rebind})
        plans = {n.node_id: n for n in self.plan.nodes}
        proc.cfg = dataclasses.replace(proc.cfg, plan=plans[node_id])
        edges = ", ".join(f"{e.name} ({e.transport})" for e in plans[node_id].inputs)
        self._print(
            f"node {node_id!r} placed again on {layout.names.get(node_id, '?')} (it ran on "
            f"{before.names.get(node_id, '?')})" + (f"; its inputs: {edges}" if edges else "")
        )
        by_consumer: dict[str, list[EdgePlan]] = {}
        for edge in rebind:
            by_consumer.setdefault(edge.consumer, []).append(edge)
        for consumer_id, mine in by_consumer.items():
            consumer = self.procs[consumer_id]
            assert consumer.cfg is not None
            # the plan it binds with from now on (a restart of it too)
            consumer.cfg = dataclasses.replace(consumer.cfg, plan=plans[consumer_id])
            if consumer.restart_at is not None:
                continue  # dead, to be started again: it binds them so then
            for edge in mine:
                self.rebinds[edge.name] = consumer_id
            names = ", ".join(f"{e.name} ({e.transport})" for e in mine)
            self._print(f"node {consumer_id!r} binds its inputs anew: {names}")
            if consumer.state is NodeState.CREATED:
                # restarted itself, not bound yet: its control socket may not be there
                self.rebind_later[consumer_id] = mine
            else:
                self._send(consumer_id, p.Rebind([e.to_wire() for e in mine]))
        return True

    def _rebindable(self, edges: list[EdgePlan]) -> list[EdgePlan]:
        """Of the edges a moved producer's new place changes the transport of, those whose
        consumer can take it: one that runs or is starting again (it binds them anew) or one
        that is dead and to be started again (it binds them so then). One that ended (or is
        ending) needs nothing more."""
        fit = []
        for edge in edges:
            consumer = self.procs[edge.consumer]
            if consumer.exited:
                alive = False
            elif consumer.generation:  # restarted: from its start (it binds, then is told)
                alive = consumer.state in _STARTING_AGAIN
            else:  # READY: started, its first statistics (RUNNING) not yet in
                alive = consumer.state in (NodeState.READY, NodeState.RUNNING)
            if consumer.restart_at is not None or alive:
                fit.append(edge)
        return fit

    def _rebinds_gone(self, consumer_id: str) -> None:
        """A consumer ended or died before it said where it bound its inputs anew: a
        producer waiting for those endpoints gets the ones it has."""
        self.rebind_later.pop(consumer_id, None)
        gone = [name for name, consumer in self.rebinds.items() if consumer == consumer_id]
        for name in gone:
            del self.rebinds[name]
        if gone:
            self._wire_deferred()

    def _reconnect(self, proc: _Proc) -> None:
        """A restarted node bound its inputs: its outputs are wired, its producers told to
        connect again (or, for those that already ended, it is told so)."""
        node_id = proc.node_id
        later = self.rebind_later.pop(node_id, None)
        if later:  # a producer of it moved while it started: bound anew, of the new kind
            self._send(node_id, p.Rebind([e.to_wire() for e in later]))
        # a consumer that is being restarted too (a lost machine held both) has no endpoint
        # yet: this node's Wiring waits for it
        self.deferred.add(node_id)
        assert proc.cfg is not None
        ended: list[str] = []
        rewire: dict[str, list[str]] = {}
        for edge in proc.cfg.plan.inputs:
            producer = self.procs[edge.producer]
            if producer.state is NodeState.CLOSED or producer.gone:
                ended.append(edge.name)
            elif not producer.exited and producer.wired:
                # a dead or restarting producer gets the endpoint with its Wiring
                rewire.setdefault(edge.producer, []).append(edge.name)
        if ended:
            self._send(node_id, p.InputEnded(ended))
        for producer_id, names in rewire.items():
            self._send(
                producer_id,
                p.Rewire(
                    {n: self.endpoints[n] for n in names},
                    {n: self.keys[n] for n in names if n in self.keys},
                    {n: proc.delivered.get(n, 0) for n in names},
                ),
            )
            for name in names:
                self.rewiring[(producer_id, name)] = node_id
        self._wire_deferred()

    def _wire_deferred(self) -> None:
        """Wiring to each restarted node whose consumers all have their endpoints: none is
        being restarted and has yet to bind, none binds its edge anew (``Rebind``)."""
        for waiting in list(self.deferred):
            edges = self.plan.edges_from(waiting)
            if not any(self._rebinding(e.consumer) or e.name in self.rebinds for e in edges):
                self.deferred.discard(waiting)
                self._send(waiting, self._wiring(waiting))
                self.procs[waiting].wired = True

    def _rebinding(self, node_id: str) -> bool:
        """Whether a node is being restarted and has not bound its inputs again yet."""
        proc = self.procs[node_id]
        return proc.restart_at is not None or (
            proc.generation > 0 and proc.state is NodeState.CREATED
        )

    def _ended_before_rewire(self, producer_id: str) -> None:
        """A producer ended without connecting to a restarted consumer: its end of stream
        went to the dead one, so the supervisor tells the new one."""
        for (producer, edge), consumer in list(self.rewiring.items()):
            if producer == producer_id:
                del self.rewiring[(producer, edge)]
                self._send(consumer, p.InputEnded([edge]))

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
        self.started = True
        self._running()

    def _pump(self, timeout_ms: int) -> None:
        """Wait up to ``timeout_ms`` for anything; read every message and reap every exit."""
        events = dict(self.poller.poll(timeout_ms))
        while self.router.poll(0):
            self._receive()
        for proc in self.procs.values():
            if not proc.exited:
                self._check_exit(proc, events)
        self._watch()
        self._due_restarts()

    def _watch(self) -> None:
        """Warn about, then stop on, a node that has been in one call for too long."""
        now_ns = time.monotonic_ns()
        for proc in self.procs.values():
            if proc.exited or proc.state.ended:
                continue
            record = self.board.read(proc.index)
            if record is None:
                continue  # being written right now: read it again at the next poll
            method, seq, since = record
            limit = proc.timeouts.get(method)
            if method == "idle" or limit is None:
                proc.stalled = ""
                continue
            elapsed = (now_ns - since) / 1e9
            call = f"{method}()" + (f" on seq {seq}" if seq is not None else "")
            if elapsed >= limit / 2:
                proc.stalled = f"stalled {method}() {elapsed:.0f}s"
                if proc.warned_since != since:
                    proc.warned_since = since
                    self._print(
                        f"warning: node {proc.node_id!r} has been in {call} for "
                        f"{elapsed:.1f} s (its limit is {limit:g} s)"
                    )
            else:
                proc.stalled = ""
            if elapsed >= limit and not self.error:
                self._stuck(proc, method, seq, elapsed, limit)

    def _not_drained(self) -> str:
        """The nodes still running, each with the call it is in: who the stop waits for."""
        now_ns = time.monotonic_ns()
        parts = []
        for proc in self.procs.values():
            if proc.exited or proc.state.ended:
                continue
            method, seq, since = self.board.read(proc.index) or ("idle", None, 0)
            if method == "idle":
                parts.append(f"node {proc.node_id!r} (waiting on its edges)")
            else:
                on = f" on seq {seq}" if seq is not None else ""
                elapsed = (now_ns - since) / 1e9
                parts.append(f"node {proc.node_id!r} (in {method}(){on} for {elapsed:.1f} s)")
        return ", ".join(parts) or "the graph"

    def _stuck(
        self, proc: _Proc, method: str, seq: int | None, elapsed: float, limit: float
    ) -> None:
        if proc.killing:
            return
        setting = {"open": "open_timeout_s", "close": "close_timeout_s"}.get(
            method, "health_timeout_s"
        )
        cause = f"stuck: no progress for {elapsed:.1f} s ({setting}: {limit:g})"
        error: NodeError
        if method == "open":
            error = NodeOpenError(proc.node_id, method, cause)
        else:
            error = NodeProcessError(proc.node_id, method, cause, seq)
        if self._restartable(proc):
            # as a liveness probe does: its stack is printed, it is killed, then restarted
            proc.killing = True
            proc.last_error = str(error)
            self._print(f"error: {error}")
            self._print(f"node {proc.node_id!r} (pid {proc.process.pid}) was here:")
            proc.process.kill(signal.SIGUSR1)
            time.sleep(0.2)
            proc.process.kill(signal.SIGKILL)
            return
        self._fail(error, None)
        self._print(f"node {proc.node_id!r} (pid {proc.process.pid}) was here:")
        # faulthandler in the node prints every thread's stack at once, even from inside C
        proc.process.kill(signal.SIGUSR1)
        time.sleep(0.2)  # let the dump reach the terminal before the stop's messages

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
        # On a loaded machine they can come more than one poll after the exit: a clean exit
        # (0) waits for them up to a second; a node killed by a signal has nothing more to say.
        last_words = time.monotonic() + (1.0 if code == 0 else 0.2)
        while not proc.state.ended and time.monotonic() < last_words:
            if self.router.poll(50):
                self._receive()
            elif code is None or code < 0:
                break
        if proc.state is not NodeState.CLOSED and not self.error and not self.forced:
            # a launcher may know better how it ended (a cluster: its machine left)
            how = getattr(proc.process, "exit_reason", None) or _describe_exit(code)
            if self._restartable(proc, code):
                self._crashed(proc, how)
                return
            self._fail(NodeExitError(proc.node_id, how, proc.state.value), None)
        if proc.state is NodeState.CLOSED:
            self._ended_before_rewire(proc.node_id)

    def _all_exited(self) -> bool:
        return all(proc.gone for proc in self.procs.values())

    def _starting(self) -> bool:
        """Until every node has opened: True to go on, False when the run is over."""
        while True:
            self._pump(100)
            if self.error or self._all_exited():
                return False
            if all(proc.state is NodeState.READY for proc in self.procs.values()):
                return True
            if self.stop_deadline is not None:
                self._print("stopped before the graph started")  # a stop, not a failure
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
                    self._print(f"forcing stop: {self._not_drained()} did not drain in time")
                    self.forced = True
                    return
            self.perf.sample(now)
            if now >= next_table:
                next_table = now + 1.0
                self._publish_stats()
                if self.live:
                    self._live_table()

    def _consult_monitor(self, monitor: RunMonitor, now: float, elapsed_s: float) -> None:
        rows = self._rows()
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
        rows = {n: stats.to_dict() for n, stats in self._rows().items()}
        tmp = self.run_dir / "stats.json.tmp"
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps(rows))
            tmp.replace(self.run_dir / "stats.json")

    def _live_table(self) -> None:
        latest = self._rows()
        rows = {
            n: dataclasses.replace(latest[n], state=proc.stalled)
            if n in latest and proc.stalled
            else latest.get(n)
            for n, proc in self.procs.items()
        }
        text = render_table(rows)
        # redraw in place on a terminal
        with contextlib.suppress(OSError):
            self.out.write("\x1b[H\x1b[J" + text + "\n")
            self.out.flush()

    def _last_reports(self) -> None:
        """Statistics the stopped nodes sent as they went: real counts in the final table."""
        with contextlib.suppress(zmq.ZMQError):
            while self.router.poll(0):
                ident, raw = self.router.recv_multipart()
                proc = self.procs.get(ident.decode())
                try:
                    message = p.decode(raw)
                except p.ProtocolError:
                    continue
                stats = getattr(message, "stats", None)
                if proc is not None and stats:
                    proc.stats = NodeStats.from_wire(stats)

    def _terminate_all(self) -> None:
        alive = [proc for proc in self.procs.values() if proc.process.is_alive()]
        for proc in alive:
            proc.process.kill(FORCE_SIGNAL)  # unwind now: close() runs
        deadline = time.monotonic() + 3.0
        for proc in alive:
            proc.process.join(max(0.0, deadline - time.monotonic()))
        for proc in alive:
            if proc.process.is_alive():
                proc.process.kill(signal.SIGKILL)
                proc.process.join(1.0)
        for proc in self.procs.values():
            proc.process.join(0.1)
        # the last words of nodes stopped here (their final statistics): the final table is
        # where they stopped, not their report of half a second before
        with contextlib.suppress(zmq.ZMQError):
            while self.router.poll(50):
                self._receive()


def _tcp_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _write_drawing(graph: ValidatedGraph, path: Path) -> None:
    """The graph as an SVG beside the statistics, for nodes that show it (a preview page)."""
    from pipeline.graph.draw import to_svg

    with contextlib.suppress(OSError):
        path.write_text(to_svg(graph.spec), encoding="utf-8")


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
    launcher: Launcher | None = None,
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
        launcher: starts each node's worker (default: forked from a pre-imported template
            process where the platform allows, see ``pipeline.runtime.forkserver``, else
            ``launch_local``: a fresh interpreter per node).
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
            "memory": result.memory,
        }
        Path(stats_json).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return result

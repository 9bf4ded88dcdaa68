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
from pathlib import Path
from typing import IO, Any, Literal, Protocol

import msgpack
import zmq

from pipeline.graph.validate import ValidatedGraph
from pipeline.runtime.table import render_table
from pipeline.runtime.worker import InputPlan, OutputPlan, WorkerConfig
from pipeline.transport.shm import remove_run_segments, sweep_stale

__all__ = ["RunMonitor", "RunResult", "run_graph"]


class RunMonitor(Protocol):
    """Watches a running graph (the bench's progress bar, warm-up and stop rules).

    ``on_stats`` is called about twice a second once every node has started, with the
    latest statistics of each node (``NodeStats.to_dict()`` plus raw histograms) and the
    seconds since the start. It may answer ``"reset"`` (every node starts its statistics
    afresh: the end of a warm-up), ``"stop"`` (stop the sources and drain, as Ctrl-C does)
    or ``None``.
    """

    def on_stats(
        self, stats: dict[str, dict[str, Any]], elapsed_s: float
    ) -> Literal["reset", "stop"] | None: ...


EXIT_OK = 0
EXIT_FAILED = 1


@dataclasses.dataclass
class RunResult:
    """What a run ended with: exit code, each node's last statistics, the failure if any."""

    exit_code: int
    stats: dict[str, dict[str, Any]]
    error: str | None
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


class _Child:
    """A node process: a fresh interpreter (the ``spawn`` model) started with subprocess.

    Not ``multiprocessing``: its spawn re-imports the caller's ``__main__`` in every child, so
    a script calling ``run_graph`` without an ``if __name__ == "__main__"`` guard would start
    itself again. The config goes to the child as JSON on stdin.
    """

    def __init__(self, cfg: WorkerConfig) -> None:
        payload = json.dumps({"config": dataclasses.asdict(cfg), "sys_path": sys.path})
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

    def close(self) -> None:
        if self.sentinel is not None:
            with contextlib.suppress(OSError):
                os.close(self.sentinel)
            self.sentinel = None


@dataclasses.dataclass
class _Proc:
    node_id: str
    process: _Child
    is_source: bool
    state: str = "starting"
    stats: dict[str, Any] | None = None
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
    ) -> None:
        self.monitor = monitor
        self.graph = graph
        self.log_level = log_level
        self.live = live
        self.out = out
        self.grace_s = grace_s
        self.run_id = secrets.token_hex(3)
        self.prefix = f"pipeline-{os.getpid()}-{self.run_id}"
        self.run_dir = _run_dir_root() / self.prefix
        self.procs: dict[str, _Proc] = {}
        self.error: str | None = None
        self.stop_deadline: float | None = None
        self.interrupts = 0
        self.forced = False

    # set-up ------------------------------------------------------------------------------------
    def _configs(self, control: str) -> list[WorkerConfig]:
        configs = []
        for index, node in enumerate(self.graph.spec.nodes):
            inputs = []
            for edge in self.graph.edges_into(node.id):
                tcp = edge.spec.transport == "tcp"
                bind = "tcp://127.0.0.1:*" if tcp else f"ipc://{self.run_dir}/{index}-{edge.input}"
                batch = max(1, edge.spec.queue // 2) if edge.spec.when_full == "block" else 1
                inputs.append(
                    InputPlan(edge.input, f"{edge.producer}/{edge.output}", bind, tcp, batch)
                )
            outputs = []
            for port in self.graph.classes[node.id].outputs:
                edges = [
                    (e.name, e.spec.model_dump(by_alias=True))
                    for e in self.graph.edges_from(node.id)
                    if e.output == port
                ]
                outputs.append(OutputPlan(port, edges))
            configs.append(
                WorkerConfig(
                    node_id=node.id,
                    node_type=node.node,
                    params=dict(node.params),
                    index=index,
                    control=control,
                    shm_prefix=self.prefix,
                    inputs=inputs,
                    outputs=outputs,
                    log_level=self.log_level,
                    stats_path=str(self.run_dir / "stats.json"),
                )
            )
        return configs

    def run(self) -> RunResult:
        sweep_stale()
        _sweep_run_dirs()
        self.run_dir.mkdir(mode=0o700)
        t0 = time.monotonic()
        ctx: zmq.Context[Any] = zmq.Context()
        router = ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        control = f"ipc://{self.run_dir}/control"
        router.bind(control)
        old_int = signal.getsignal(signal.SIGINT)
        old_term = signal.getsignal(signal.SIGTERM)
        try:
            # Children inherit "ignore SIGINT" across exec, so a Ctrl-C in the terminal reaches
            # only the supervisor, even before a child has installed its own handlers.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            for cfg in self._configs(control):
                proc = _Child(cfg)
                self.procs[cfg.node_id] = _Proc(
                    cfg.node_id, proc, self.graph.classes[cfg.node_id].is_source()
                )
            signal.signal(signal.SIGINT, self._on_signal)
            signal.signal(signal.SIGTERM, self._on_signal)
            self._supervise(router)
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
            self._terminate_all()
            for p in self.procs.values():
                p.process.close()
            router.close(linger=0)
            ctx.term()
            remove_run_segments(self.prefix)
            shutil.rmtree(self.run_dir, ignore_errors=True)
        stats = {p.node_id: p.stats for p in self.procs.values() if p.stats is not None}
        code = EXIT_FAILED if (self.error or self.forced) else EXIT_OK
        return RunResult(code, stats, self.error, time.monotonic() - t0, self.interrupts > 0)

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

    # supervision -------------------------------------------------------------------------------
    def _send(self, router: zmq.Socket[Any], node_id: str, kind: str, **fields: Any) -> None:
        fields["t"] = kind
        with contextlib.suppress(zmq.ZMQError):
            router.send_multipart([node_id.encode(), msgpack.packb(fields, use_bin_type=True)])

    def _handle(self, router: zmq.Socket[Any], payload: list[bytes]) -> None:
        """One message from a node."""
        ident, raw = payload
        node_id = ident.decode()
        msg = msgpack.unpackb(raw)
        kind = msg["t"]
        proc = self.procs[node_id]
        if kind == "hello":
            self.hello.add(node_id)
            self.endpoints.update(msg["endpoints"])
            if len(self.hello) == len(self.procs):
                for nid in self.procs:
                    mine = {e.name: self.endpoints[e.name] for e in self.graph.edges_from(nid)}
                    self._send(router, nid, "wiring", endpoints=mine)
        elif kind == "ready":
            self.ready.add(node_id)
            proc.state = "ready"
        elif kind == "open_failed":
            # Usually a user's mistake (a missing file, a busy port): the message says what;
            # the traceback is for --log-level DEBUG.
            tb = msg["tb"] if self.log_level == "DEBUG" else None
            self._fail(f"node {node_id!r} failed in open(): {msg['error']}", tb)
            if tb is None:
                self._print("(run with --log-level DEBUG to see the traceback)")
        elif kind == "stats":
            proc.stats = msg["stats"]
            proc.state = msg["stats"]["state"]
        elif kind == "error":
            proc.stats = msg.get("stats") or proc.stats
            seq = msg.get("seq")
            where = ""
            if seq is not None:
                where = f" on seq {seq}" + (f" from {msg['source']}" if msg.get("source") else "")
            self._fail(
                f"node {node_id!r} failed in {msg['method']}(){where}: {msg['error']}", msg["tb"]
            )
        elif kind == "done":
            proc.stats = msg["stats"]
            proc.state = "done"

    def _supervise(self, router: zmq.Socket[Any]) -> None:
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        for p in self.procs.values():
            if p.process.sentinel is not None:
                poller.register(p.process.sentinel, zmq.POLLIN)
        self.endpoints: dict[str, str] = {}
        self.hello: set[str] = set()
        self.ready: set[str] = set()
        ready = self.ready
        phase = "starting"
        stop_sent = False
        next_table = time.monotonic() + 1.0
        next_monitor = 0.0
        started_at = 0.0
        while True:
            events = dict(poller.poll(100))
            while router.poll(0):
                self._handle(router, router.recv_multipart())
            for p in self.procs.values():
                if p.exited:
                    continue
                fd = p.process.sentinel
                if fd is not None:
                    if fd not in events:
                        continue
                    poller.unregister(fd)
                    p.process.join(1.0)  # reap it: its exit code is unknown until then
                elif p.process.is_alive():
                    continue
                p.exited = True
                code = p.process.exitcode
                # Its last words ("done", "error") may still be on their way through ZeroMQ:
                # read them before judging the exit.
                last_words = time.monotonic() + (1.0 if code == 0 else 0.2)
                while p.state != "done" and time.monotonic() < last_words and router.poll(50):
                    self._handle(router, router.recv_multipart())
                if p.state != "done" and not self.error and not self.forced:
                    self._fail(f"node {p.node_id!r} {_describe_exit(code)} while {p.state}", None)
            if self.error:
                return
            if phase == "starting" and len(ready) == len(self.procs):
                phase = "running"
                started_at = time.monotonic()
                next_monitor = started_at + 0.5
                for nid in self.procs:
                    self._send(router, nid, "start")
            if all(p.exited for p in self.procs.values()):
                return
            now = time.monotonic()
            if self.monitor is not None and phase == "running" and now >= next_monitor:
                next_monitor = now + 0.5
                rows = {p.node_id: p.stats for p in self.procs.values() if p.stats}
                verdict = self.monitor.on_stats(rows, now - started_at)
                if verdict == "reset":
                    for nid in self.procs:
                        self._send(router, nid, "reset")
                elif verdict == "stop" and self.stop_deadline is None:
                    self.stop_deadline = now + self.grace_s
            if self.stop_deadline is not None:
                if phase == "starting":
                    self._print("stopped before the graph started")
                    self.forced = True
                    return
                if not stop_sent:
                    stop_sent = True
                    for p in self.procs.values():
                        if p.is_source:
                            self._send(router, p.node_id, "stop")
                if now >= self.stop_deadline:
                    self._print("forcing stop: not every node drained in time")
                    self.forced = True
                    return
            if now >= next_table and phase == "running":
                next_table = now + 1.0
                self._publish_stats()
                if self.live:
                    self._live_table()

    def _fail(self, line: str, tb: str | None) -> None:
        if self.error:
            return
        self.error = line
        self._print(f"error: {line}")
        if tb:
            self._print(tb.rstrip())

    def _publish_stats(self) -> None:
        """Every node's latest statistics, for nodes that show them (a preview page)."""
        rows = {
            p.node_id: {k: v for k, v in p.stats.items() if not k.endswith("_hist")}
            for p in self.procs.values()
            if p.stats
        }
        tmp = self.run_dir / "stats.json.tmp"
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps(rows))
            tmp.replace(self.run_dir / "stats.json")

    def _live_table(self) -> None:
        rows = {p.node_id: p.stats for p in self.procs.values() if p.stats}
        text = render_table(rows)
        # redraw in place on a terminal
        self.out.write("\x1b[H\x1b[J" + text + "\n")
        self.out.flush()

    def _terminate_all(self) -> None:
        alive = [p for p in self.procs.values() if p.process.is_alive()]
        for p in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 3.0
        for p in alive:
            p.process.join(max(0.0, deadline - time.monotonic()))
        for p in alive:
            if p.process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.process.pid, signal.SIGKILL)
                p.process.join(1.0)
        for p in self.procs.values():
            p.process.join(0.1)


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
    """
    stream = out or sys.stderr
    result = _Supervisor(graph, log_level, live, stream, grace_s, monitor).run()
    if stats_json is not None:
        payload = {
            "graph": graph.name,
            "file": graph.file,
            "exit_code": result.exit_code,
            "error": result.error,
            "duration_s": round(result.duration_s, 3),
            "nodes": {
                k: {kk: vv for kk, vv in v.items() if not kk.endswith("_hist")}
                for k, v in result.stats.items()
            },
        }
        Path(stats_json).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return result

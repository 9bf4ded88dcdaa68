"""The node process: receive, join, process, send; and the lifecycle calls around it.

One worker runs one node. Start-up with the supervisor (over a DEALER/ROUTER control
socket, msgpack messages):

1. bind one PAIR socket per input edge and say ``hello`` with the endpoints;
2. ``open()`` the node, then say ``ready`` (or ``open_failed``: nothing else is called);
3. receive ``wiring`` (the endpoints of its output edges) and connect;
4. receive ``start``; a source calls ``process()`` until ``EndOfStream`` or ``stop``; other
   nodes process joined input sets until every input has ended;
5. ``flush()``, ``close()``, end of stream on every output, ``done`` with final statistics.

An exception in ``process``/``flush`` is reported (``error``: method, input seq, traceback),
``close()`` still runs, and the process exits 1. SIGTERM (the supervisor's forced stop)
unwinds the same way, so ``close()`` runs (a video file is finalised). SIGINT is ignored:
Ctrl-C belongs to the supervisor, which stops the sources and lets the graph drain.
Statistics go to the supervisor every half second. ``kill -USR1 <pid>`` makes a node print
where each of its threads is (for a graph that seems stuck); a node whose supervisor died
stops by itself.
"""

from __future__ import annotations

import dataclasses
import faulthandler
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgpack
import zmq

from pipeline.graph.spec import InputSpec
from pipeline.node import EndOfStream, Node
from pipeline.registry import load_node_class
from pipeline.runtime.join import Joiner
from pipeline.runtime.stats import NodeStats, StatsCollector
from pipeline.transport.channels import EdgeSender, InputEdge, RuntimeOutput
from pipeline.transport.shm import ShmReader, SlotPool

__all__ = ["InputPlan", "OutputPlan", "WorkerConfig", "main", "worker_main"]

STATS_INTERVAL_S = 0.5
EXIT_TERMINATED = 3


@dataclasses.dataclass(frozen=True)
class InputPlan:
    port: str
    producer: str  # "node/port"
    bind: str
    tcp: bool
    release_every: int = 1


@dataclasses.dataclass(frozen=True)
class OutputPlan:
    port: str
    edges: list[tuple[str, dict[str, Any]]]  # (edge name, InputSpec as a dict)


@dataclasses.dataclass(frozen=True)
class WorkerConfig:
    node_id: str
    node_type: str
    params: dict[str, Any]
    index: int
    control: str
    shm_prefix: str
    inputs: list[InputPlan]
    outputs: list[OutputPlan]
    log_level: str = "INFO"
    stats_path: str = ""  # where the supervisor publishes every node's statistics


class _Terminated(BaseException):
    """Raised by the SIGTERM handler: unwind, close the node, exit."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated()


def main() -> None:
    """Entry point of a node process: the config arrives as JSON on stdin."""
    data = json.loads(sys.stdin.read())
    sys.path[:] = data["sys_path"]
    raw = data["config"]
    raw["inputs"] = [InputPlan(**i) for i in raw["inputs"]]
    raw["outputs"] = [
        OutputPlan(o["port"], [(n, s) for n, s in o["edges"]]) for o in raw["outputs"]
    ]
    worker_main(WorkerConfig(**raw))


def worker_main(cfg: WorkerConfig) -> None:
    """Run one node in this process until its stream ends; exits the process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` prints where a node is stuck
    logging.basicConfig(
        level=getattr(logging, cfg.log_level.upper(), logging.INFO),
        format=f"%(asctime)s %(levelname)-7s [{cfg.node_id}] %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    _watch_parent()
    code = _Worker(cfg).run()
    sys.stderr.flush()
    os._exit(code)  # skip interpreter teardown: nothing is left to flush, and it is slow


def _watch_parent() -> None:
    """If the supervisor dies (SIGKILL), stop as if it had sent SIGTERM: no orphan nodes."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class _Worker:
    def __init__(self, cfg: WorkerConfig) -> None:
        self.cfg = cfg
        self.log = logging.getLogger(f"pipeline.node.{cfg.node_id}")
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.control = self.ctx.socket(zmq.DEALER)
        self.control.setsockopt(zmq.LINGER, 2000)
        self.control.setsockopt_string(zmq.IDENTITY, cfg.node_id)
        self.control.connect(cfg.control)
        self.stats = StatsCollector(
            cfg.node_id, [i.port for i in cfg.inputs], [o.port for o in cfg.outputs]
        )
        self.node: Node | None = None
        self.opened = False
        self.stop_requested = False
        self.outputs: dict[str, RuntimeOutput] = {}
        self.inputs: list[InputEdge] = []
        self.reader = ShmReader()
        self.last_report = 0.0
        self.current_seq: int | None = None
        self.current_source = ""

    # control -------------------------------------------------------------------------------
    def tell(self, kind: str, **fields: Any) -> None:
        fields["t"] = kind
        self.control.send(msgpack.packb(fields, use_bin_type=True))

    def _handle_control(self, msg: dict[str, Any]) -> str:
        kind = str(msg.get("t"))
        if kind == "stop":
            self.stop_requested = True
        elif kind == "reset":
            self.stats.reset(time.monotonic())
            for out in self.outputs.values():
                out.sent = 0
                out.wait_s = 0.0
                for edge in out.edges:
                    edge.dropped = 0
                    edge.blocked_s = 0.0
        elif kind == "wiring":
            self._wire(msg["endpoints"])
        return kind

    def _wait_for(self, wanted: Iterable[str]) -> str:
        wanted = set(wanted)
        while True:
            kind = self._handle_control(msgpack.unpackb(self.control.recv()))
            if kind in wanted:
                return kind

    def _poll_control(self) -> None:
        while self.control.poll(0):
            kind = self._handle_control(msgpack.unpackb(self.control.recv()))
            if kind == "abort":
                raise _Terminated()

    def report(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last_report >= STATS_INTERVAL_S:
            self.last_report = now
            self.tell("stats", stats=self._wire_stats(now))

    def _wire_stats(self, now: float) -> dict[str, Any]:
        for name, out in self.outputs.items():
            self.stats.out_sent[name] = out.sent
            self.stats.out_dropped[name] = sum(e.dropped for e in out.edges)
            self.stats.out_blocked[name] = out.wait_s + sum(e.blocked_s for e in out.edges)
        return self.stats.to_wire(now)

    # services for the node -------------------------------------------------------------------
    def statistics(self) -> NodeStats:
        self._wire_stats(time.monotonic())
        return self.stats.snapshot(time.monotonic())

    def count(self, name: str, n: int = 1) -> None:
        self.stats.count(name, n)

    def graph_statistics(self) -> dict[str, dict[str, Any]]:
        if not self.cfg.stats_path:
            return {}
        try:
            data: dict[str, dict[str, Any]] = json.loads(Path(self.cfg.stats_path).read_text())
        except (OSError, ValueError):
            return {}
        return data

    # set-up ------------------------------------------------------------------------------------
    def _wire(self, endpoints: dict[str, str]) -> None:
        for plan in self.cfg.outputs:
            out = self.outputs[plan.port]
            for name, spec in plan.edges:
                out.edges.append(
                    EdgeSender(self.ctx, endpoints[name], InputSpec.model_validate(spec), name)
                )
            out.has_tcp = any(e.tcp for e in out.edges)
            out.has_shm = any(not e.tcp for e in out.edges)

    def _build(self) -> None:
        cfg = self.cfg
        cls = load_node_class(cfg.node_type)
        params = cls.Params.model_validate(cfg.params)
        for i, plan in enumerate(cfg.outputs):
            slots = 2
            for _, spec in plan.edges:
                q = int(spec.get("queue", 4))
                slots += q * (2 if spec.get("when_full") == "drop_oldest" else 1)
            pool = SlotPool(f"{cfg.shm_prefix}-{cfg.index}-{i}", max_slots=2 * slots)
            self.outputs[plan.port] = RuntimeOutput(plan.port, pool, [])
        for inp in cfg.inputs:
            self.inputs.append(
                InputEdge(
                    self.ctx,
                    inp.bind,
                    inp.port,
                    inp.producer,
                    self.reader,
                    inp.tcp,
                    inp.release_every,
                )
            )
        self.node = cls(
            params, node_id=cfg.node_id, ports=dict(self.outputs), services=self, log=self.log
        )

    # the run ---------------------------------------------------------------------------------
    def run(self) -> int:
        try:
            return self._run()
        except _Terminated:
            self.log.debug("terminated")
            return EXIT_TERMINATED
        finally:
            self._teardown()

    def _run(self) -> int:
        try:
            self._build()
        except Exception as exc:
            self.tell(
                "open_failed", error=f"{type(exc).__name__}: {exc}", tb=traceback.format_exc()
            )
            return 1
        me = self.cfg.node_id
        self.tell(
            "hello",
            endpoints={
                f"{p.producer}->{me}.{p.port}": e.endpoint
                for p, e in zip(self.cfg.inputs, self.inputs)
            },
        )
        node = self.node
        assert node is not None
        self.stats.state = "opening"
        try:
            node.open()
        except Exception as exc:
            self.tell(
                "open_failed", error=f"{type(exc).__name__}: {exc}", tb=traceback.format_exc()
            )
            return 1
        self.opened = True
        self.tell("ready")
        if self._wait_for({"start", "abort"}) == "abort":
            return EXIT_TERMINATED
        self.stats.state = "running"
        self.stats.t_start = time.monotonic()
        method = "process"
        try:
            if node.is_source():
                self._run_source(node)
            else:
                self._run_consumer(node)
            method = "flush"
            self.stats.state = "flushing"
            self.current_seq = None
            node.flush()
            self._end_call()
        except _Terminated:
            raise
        except Exception as exc:
            self.stats.t_end = time.monotonic()
            self.stats.state = "failed"
            self.tell(
                "error",
                method=method,
                seq=self.current_seq,
                source=self.current_source,
                error=f"{type(exc).__name__}: {exc}",
                tb=traceback.format_exc(),
                stats=self._wire_stats(time.monotonic()),
            )
            return 1
        self._close_node()
        for out in self.outputs.values():
            out.send_eos()
        for out in self.outputs.values():
            out.wait_released()
        self.stats.t_end = time.monotonic()
        self.stats.state = "closed"
        self.tell("done", stats=self._wire_stats(time.monotonic()))
        return 0

    def _end_call(self) -> None:
        for out in self.outputs.values():
            out.end_call()

    def _run_source(self, node: Node) -> None:
        stats = self.stats
        perf = time.perf_counter
        next_check = 0.0
        while True:
            now = time.monotonic()
            if now >= next_check:
                next_check = now + 0.01
                self._poll_control()
                if self.stop_requested:
                    self.log.debug("stopped")
                    return
                self.report()
            t0 = perf()
            try:
                node.process()
            except EndOfStream:
                self._end_call()
                return
            dt = perf() - t0
            self._end_call()
            stats.calls += 1
            stats.busy_s += dt
            stats.process.add(dt)

    def _run_consumer(self, node: Node) -> None:
        stats = self.stats
        joiner: Joiner[tuple[InputEdge, int]] = Joiner([i.port for i in self.inputs])
        poller = zmq.Poller()
        poller.register(self.control, zmq.POLLIN)
        for edge in self.inputs:
            poller.register(edge.sock, zmq.POLLIN)
        inputs = self.inputs
        outputs = list(self.outputs.values())
        connected = {i.port for i in inputs}
        unconnected = {p: None for p in type(node).inputs if p not in connected}
        perf = time.perf_counter
        mono_ns = time.monotonic_ns
        next_check = 0.0
        while not joiner.all_ended:
            # Take whatever has arrived on every input without blocking; only an idle node
            # polls (one system call per burst instead of one per message).
            got = 0
            for edge in inputs:
                while not edge.ended and edge.has_message():
                    message, n, dropped, _ = edge.recv()
                    if dropped:
                        stats.dropped[edge.port] += dropped
                    if message is None:
                        joiner.end(edge.port)
                        break
                    got += 1
                    stats.received[edge.port] += 1
                    depth = joiner.push(edge.port, message, (edge, n))
                    if depth > stats.queue_peak[edge.port]:
                        stats.queue_peak[edge.port] = depth
            processed = 0
            while True:
                ready, lost = joiner.pop()
                for port, (edge, n) in lost:
                    stats.dropped[port] += 1
                    edge.release(n)
                if ready is None:
                    break
                kwargs: dict[str, Any] = dict(unconnected)
                t_capture = 0
                for port, (message, _) in ready.items():
                    kwargs[port] = message
                    if message.t_capture_ns and (not t_capture or message.t_capture_ns < t_capture):
                        t_capture = message.t_capture_ns
                first = next(iter(ready.values()))[0]
                self.current_seq = first.seq
                self.current_source = first.source
                del first
                t0 = perf()
                node.process(**kwargs)
                dt = perf() - t0
                kwargs.clear()
                self._end_call()
                for _, (edge, n) in ready.values():
                    edge.release(n)
                ready = None
                processed += 1
                stats.calls += 1
                stats.busy_s += dt
                stats.process.add(dt)
                if t_capture:
                    stats.latency.add((mono_ns() - t_capture) * 1e-9)
            waiting = False
            for out in outputs:
                if out.has_waiting():
                    out.poll_waiting()
                    waiting = True
            now = time.monotonic()
            if now >= next_check:
                next_check = now + 0.01
                self._poll_control()
                self.report()
            if not got and not processed and not joiner.all_ended:
                for edge in inputs:
                    edge.flush_releases()
                poller.poll(5 if waiting else 200)
        for edge in inputs:
            edge.flush_releases()

    def _close_node(self) -> None:
        if self.opened and self.node is not None:
            self.opened = False
            try:
                self.node.close()
            except Exception:
                self.log.exception("close() raised")

    def _teardown(self) -> None:
        # A second SIGTERM must not interrupt the clean-up it asked for.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            self._close_node()
        except _Terminated:
            pass
        # After a normal end, queued messages (the end of stream itself) must still reach the
        # consumers: a socket closed with linger 0 would drop them. After a failure, go now.
        linger = 10_000 if self.stats.state == "closed" else 0
        for out in self.outputs.values():
            out.close(linger)
        for edge in self.inputs:
            edge.close()
        self.reader.close()
        self.control.close(linger=2000)
        self.ctx.term()

"""The node process: receive, join, process, send; and the lifecycle calls around it.

One worker runs one node (``pipeline.runtime.plan.NodePlan``). Start-up with the supervisor
(over a DEALER/ROUTER control socket; the messages are ``pipeline.runtime.protocol``):

1. bind one PAIR socket per input edge and say ``Hello`` with the endpoints;
2. ``open()`` the node, then say ``Ready`` (or ``OpenFailed``: nothing else is called);
3. receive ``Wiring`` (the endpoints of its output edges) and connect;
4. receive ``Start``; a source calls ``process()`` until ``EndOfStream`` or ``Stop``; other
   nodes process joined input sets until every input has ended;
5. ``flush()``, ``close()``, end of stream on every output, ``Done`` with final statistics.

The sequence itself (and its statistics and failure capture) is
``pipeline.runtime.lifecycle.NodeDriver``, the same one ``run_node`` uses. An exception in
``process``/``flush``/``close`` is reported (``Failed``: method, input seq, traceback),
``close()`` still runs, and the process exits 1.

Signals. SIGINT and SIGHUP are ignored: Ctrl-C and a closed terminal reach the whole process
group, and belong to the supervisor, which stops the sources and lets the graph drain.
SIGTERM asks this node to stop cleanly, as a service manager asks every process of a group
(``systemctl stop``): a source ends its stream, any other node goes on until its inputs end
(the drain), and one that has not ended ``stop_grace_s`` (+2 s) later unwinds as below. A second
SIGTERM, SIGUSR2 (the supervisor's forced stop) or that deadline unwind at once: ``close()``
runs (a video file is finalised) and the process exits 3.
Statistics go to the supervisor every half second. ``kill -USR1 <pid>`` makes a node print
where each of its threads is (for a graph that seems stuck); a node whose supervisor died
stops by itself.

A new supervisor -> worker message is handled in ``Worker.on_control``; a per-node request
lane (asking a running node for something) would be one more socket registered in
``_run_consumer``'s poller and checked in ``_tick``, next to the control socket.
"""

from __future__ import annotations

import contextlib
import dataclasses
import faulthandler
import json
import logging
import mmap
import os
import signal
import struct
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import zmq

from pipeline.errors import TransportError
from pipeline.node import Node
from pipeline.registry import load_node_class
from pipeline.runtime import protocol as p
from pipeline.runtime.activity import Activity
from pipeline.runtime.join import Joiner, Streams
from pipeline.runtime.lifecycle import NodeDriver
from pipeline.runtime.plan import WorkerConfig
from pipeline.runtime.protocol import NodeState
from pipeline.runtime.replicas import (
    NO_MORE,
    Distributor,
    connect_senders,
    merge_inputs,
    sockets_of,
)
from pipeline.runtime.stats import NodeStats, StatsCollector
from pipeline.transport.channels import GENERATION_SHIFT, EdgeSender, InputEdge, RuntimeOutput
from pipeline.transport.curve import Gatekeeper, connect_as_client
from pipeline.transport.fastpath import open_input, open_sender
from pipeline.transport.plan import EdgePlan
from pipeline.transport.rebind import RebindingInput
from pipeline.transport.shm import ShmReader, SlotPool

__all__ = ["Worker", "main", "worker_main"]

STATS_INTERVAL_S = 0.5
EXIT_TERMINATED = 3
FORCE_SIGNAL = signal.SIGUSR2  # the supervisor's forced stop: unwind now
SELF_STOP_MARGIN_S = 2.0
HOSTED_ENV = "PIPELINE_HOSTED"  # "1": started by a cluster's NodeHost actor
ORPHAN_GRACE_S = 0.2  # a hosted worker whose actor ended: how long it may take to a safe point


_NOT_STARTED = (NodeState.CREATED, NodeState.OPENING, NodeState.READY)


class _Terminated(BaseException):
    """Raised by the forced-stop handlers: unwind, close the node, exit."""


class _StopSignal:
    """What SIGTERM asked: a clean stop, then, past its deadline or on a second one, an end."""

    asked = False
    grace_s = 5.0


def _on_sigterm(signum: int, frame: Any) -> None:
    if _StopSignal.asked:
        raise _Terminated()
    _StopSignal.asked = True
    # A node still running when the grace ends is unwound by SIGALRM. The supervisor, which
    # got the same SIGTERM, forces its stop at the grace: this is the fallback for a node
    # whose supervisor does not, so it comes a little later.
    signal.setitimer(signal.ITIMER_REAL, _StopSignal.grace_s + SELF_STOP_MARGIN_S)


def _on_force(signum: int, frame: Any) -> None:
    raise _Terminated()


def main() -> None:
    """Entry point of a node process: the config arrives as JSON on stdin."""
    data = json.loads(sys.stdin.read())
    cfg = WorkerConfig.from_wire(data["config"])
    sys.path[:] = node_sys_path(data["sys_path"], cfg.plan.node_type, os.getcwd())
    worker_main(cfg)


def node_sys_path(supervisor_path: list[str], node_type: str, cwd: str) -> list[str]:
    """The import path of a node process: the supervisor's, without the current folder.

    ``python -m`` and a supervisor that resolved a ``module:Class`` node put the current
    folder on the path, first; in a node process it would let a stray ``cv2.py`` there run
    inside a built-in node. So it goes: a built-in node never sees it, and a
    ``module:Class`` node finds its own module there *after* every installed package.
    """
    path = [entry for entry in supervisor_path if entry not in ("", ".", cwd)]
    if ":" in node_type:
        path.append(cwd)
    return path


def worker_main(cfg: WorkerConfig) -> None:
    """Run one node in this process until its stream ends; exits the process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _StopSignal.grace_s = cfg.stop_grace_s
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(FORCE_SIGNAL, _on_force)
    signal.signal(signal.SIGALRM, _on_force)
    try:  # from here on a forced stop raises _Terminated, even during the set-up below
        _set_title(cfg)
        faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` prints where a node is stuck
        logging.basicConfig(
            level=getattr(logging, cfg.log_level.upper(), logging.INFO),
            format=f"%(asctime)s %(levelname)-7s [{cfg.node_id}] %(message)s",
            datefmt="%H:%M:%S",
            stream=sys.stderr,
            force=True,
        )
        _watch_parent()
        code = Worker(cfg).run()
    except _Terminated:  # stopped before the worker could even start: nothing to report
        code = EXIT_TERMINATED
    sys.stderr.flush()
    os._exit(code)  # skip interpreter teardown: nothing is left to flush, and it is slow


def _set_title(cfg: WorkerConfig) -> None:
    """``ps`` shows ``pipeline: faces (detector)`` instead of ``python -c ...``."""
    try:
        from setproctitle import setproctitle
    except ImportError:
        return
    setproctitle(f"pipeline: {cfg.node_id} ({cfg.plan.node_type})")


class _Orphaned:
    """The NodeHost actor this worker ran under ended: the loops kill the process at their
    next point between messages (``_die_if_orphaned``)."""

    now = False


def _die_if_orphaned() -> None:
    """Between messages (every input done so far released, its progress written): a hosted
    worker whose actor ended goes here rather than wherever the watcher's SIGKILL would land
    (a thread gets the GIL where the main thread lets it go, typically in a send: after
    a result left and before its input was marked done, which would count it twice)."""
    if _Orphaned.now:
        os.kill(os.getpid(), signal.SIGKILL)


def _watch_parent() -> None:
    """If the supervisor dies (SIGKILL), stop as if it had sent SIGTERM: no orphan nodes."""
    parent = os.getppid()
    # Under a cluster's NodeHost actor, the actor's end is the node's: the supervisor takes
    # it as lost (its machine left the cluster) and may start another incarnation elsewhere,
    # so this one must not go on draining its edges: it ends between two messages if it
    # gets there within ORPHAN_GRACE_S, else where it is.
    hosted = os.environ.get(HOSTED_ENV) == "1"

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5 if not hosted else 0.1)
        if hosted:
            _Orphaned.now = True
            time.sleep(ORPHAN_GRACE_S)
        os.kill(os.getpid(), signal.SIGKILL if hosted else signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class Worker:
    """One node's process: its sockets, its ports and its ``NodeDriver``."""

    def __init__(self, cfg: WorkerConfig) -> None:
        self.cfg = cfg
        self.plan = cfg.plan
        self.log = logging.getLogger(f"pipeline.node.{cfg.node_id}")
        self.ctx: zmq.Context[Any] = zmq.Context()
        # On a cluster, tcp sockets speak CURVE with the run's keys; the gatekeeper admits
        # only the run's peers to this worker's input edges and counts the refused.
        self.gate = Gatekeeper(self.ctx, cfg.keys) if cfg.keys else None
        self.control = self.ctx.socket(zmq.DEALER)
        self.control.setsockopt(zmq.LINGER, 2000)
        self.control.setsockopt_string(zmq.IDENTITY, cfg.node_id)
        if cfg.keys and cfg.control.startswith("tcp://"):
            connect_as_client(self.control, cfg.keys)
        self.control.connect(cfg.control)
        self.stats = StatsCollector(
            cfg.node_id, [e.input for e in self.plan.inputs], [o.port for o in self.plan.outputs]
        )
        self.driver: NodeDriver | None = None
        self.stop_requested = False
        self.outputs: dict[str, RuntimeOutput] = {}
        self.inputs: list[InputEdge] = []
        self._bound: list[InputEdge] = []  # every input edge as bound (before any merge)
        self.reader = ShmReader()
        self.last_report = 0.0
        self._in_wait = False
        self.progress: _Progress | None = None
        self.poller: zmq.Poller | None = None  # the running loop's, once it runs

    # control -------------------------------------------------------------------------------
    def tell(self, message: p.ControlMessage) -> None:
        self.control.send(p.encode(message))

    def on_control(self, message: p.ControlMessage) -> None:
        """Act on one message from the supervisor (``Start`` is awaited by ``_wait_start``)."""
        match message:
            case p.Stop():
                self.stop_requested = True
            case p.Reset():
                self.stats.reset(time.monotonic())
                for out in self.outputs.values():
                    out.reset_counters()
            case p.Wiring(endpoints=endpoints, keys=keys):
                self._wire(endpoints, keys)
            case p.Rewire(endpoints=endpoints, keys=keys, delivered=delivered):
                self._rewire(endpoints, keys, delivered)
            case p.InputEnded(edges=edges):
                for edge in self.inputs:
                    if edge.name in edges and not edge.ended:
                        edge.end_now()
            case p.Rebind(edges=edges):
                self._rebind([EdgePlan.from_wire(e) for e in edges])
            case p.ProducerDied(sent=sent):
                for edge in self.inputs:
                    if edge.name in sent:
                        edge.producer_died(sent[edge.name])
            case p.Abort():
                raise _Terminated()
            case p.Start():
                pass
            case _:
                raise p.ProtocolError(f"a worker does not take {message.kind!r} messages")

    def _recv_control(self) -> p.ControlMessage:
        message = p.decode(self.control.recv())
        self.on_control(message)
        return message

    def _wait_start(self) -> None:
        """Handle control messages until ``Start`` (``Abort`` unwinds)."""
        while not isinstance(self._recv_control(), p.Start):
            pass

    def _poll_control(self) -> None:
        while self.control.poll(0):
            self._recv_control()

    def _on_wait(self) -> None:
        """An output waits for a credit: a Rewire may be what it waits for."""
        if self._in_wait:
            return  # already reading the control socket further up this stack
        self._in_wait = True
        try:
            self._poll_control()
        finally:
            self._in_wait = False

    def _tick(self) -> bool:
        """Every 10 ms of a run: control messages, statistics; True when asked to stop."""
        self._poll_control()
        if self.stop_requested or _StopSignal.asked:
            self.log.debug("stopped")
            return True
        self.report()
        return False

    def report(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last_report >= STATS_INTERVAL_S:
            self.last_report = now
            self.tell(p.StatsReport(self._wire_stats(now)))

    def _wire_stats(self, now: float) -> dict[str, Any]:
        if self.gate is not None and self.gate.refused:
            self.stats.counters["refused_connections"] = self.gate.refused
        lost = sum(e.lost for e in self._senders()) + sum(e.lost_upstream for e in self.inputs)
        if lost:
            self.stats.counters["lost_on_restart"] = lost
        marks = sum(e.marks_sent for e in self._senders())
        if marks:  # watermarks to the copies of a replicated node (replicas.Distributor)
            self.stats.counters["watermarks_sent"] = marks
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

    def graph_drawing(self) -> str:
        if not self.cfg.stats_path:
            return ""
        try:
            return Path(self.cfg.stats_path).with_name("graph.svg").read_text(encoding="utf-8")
        except OSError:
            return ""

    # set-up ------------------------------------------------------------------------------------
    def _wire(self, endpoints: Mapping[str, str], keys: Mapping[str, str]) -> None:
        placed = 0  # output edges in plan order: their places in the progress file
        for port in self.plan.outputs:
            senders = [
                open_sender(
                    self.ctx,
                    edge,
                    endpoints[edge.name],
                    keys.get(edge.name, ""),
                    keys=self.cfg.keys,
                )
                for edge in port.edges
            ]
            for sender in senders:
                # A restarted node numbers its messages after any of its previous lives:
                # a consumer's late release of an old message frees nothing of this one.
                sender.n = self.cfg.generation << GENERATION_SHIFT
                sender.on_wait = self._on_wait
                if self.progress is not None:  # the last number sent, for its consumer
                    sender.progress = self.progress.view
                    sender.progress_at = len(self.plan.inputs) + placed
                placed += 1
            # the edges to the copies of a replicated node are spread over, not each sent to
            connect_senders(self.outputs[port.port], senders)

    def _rewire(
        self, endpoints: Mapping[str, str], keys: Mapping[str, str], delivered: Mapping[str, int]
    ) -> None:
        """Consumers were restarted: connect to them again, counting what was in flight."""
        done = []
        for sender in self._senders():
            if sender.name in endpoints:
                endpoint, key = endpoints[sender.name], keys.get(sender.name, "")
                if endpoint.startswith("tcp://") != sender.tcp:
                    lost = self._switch(sender, endpoint, key, delivered.get(sender.name, 0))
                else:
                    lost = sender.reconnect(endpoint, key, delivered.get(sender.name, 0))
                self.log.info(
                    "edge %s: its consumer restarted; %d message(s) in flight lost",
                    sender.name,
                    lost,
                )
                done.append(sender.name)
        self.tell(p.Rewired(done))

    def _switch(self, old: EdgeSender, endpoint: str, key: str, delivered: int) -> int:
        """The restarted consumer was placed on another machine, and the edge's transport
        changed with it (a cluster: shared memory within a machine, tcp between): a sender of
        the other kind takes the edge over (``EdgeSender.hand_over``)."""
        plan = dataclasses.replace(
            old.plan, transport="tcp" if endpoint.startswith("tcp://") else "shm"
        )
        new = open_sender(self.ctx, plan, endpoint, key, keys=self.cfg.keys)
        lost = old.hand_over(new, delivered)  # ``old`` is the new sender from here on
        for out in self.outputs.values():
            for edge in out.edges:
                if isinstance(edge, Distributor):
                    edge.tcp = any(s.tcp for s in edge.subs)
                    edge.has_shm = any(not s.tcp for s in edge.subs)
            # which bodies a message is encoded with: those its edges now need
            out.has_tcp = any(e.tcp for e in out.edges)
            out.has_shm = any(
                e.has_shm if isinstance(e, Distributor) else not e.tcp for e in out.edges
            )
        self.log.info("edge %s: now %s (its consumer moved)", old.name, plan.transport)
        return lost

    def _rebind(self, plans: list[EdgePlan]) -> None:
        """Their producer was placed again on another machine: bind these inputs anew, of
        the kind now planned (``pipeline.transport.rebind``), and say where (``Rebound``)."""
        endpoints: dict[str, str] = {}
        keys: dict[str, str] = {}
        for plan in plans:
            at = next((i for i, e in enumerate(self.inputs) if e.name == plan.name), None)
            if at is None:
                # merged with the edges of the producer's other copies (replicas): it keeps
                # its socket, and the moved copy connects to it as it is
                kept = next((e for e in self._bound if e.name == plan.name), None)
                if kept is not None:
                    endpoints[plan.name] = kept.endpoint
                    if kept.key:
                        keys[plan.name] = kept.key
                continue
            old = self.inputs[at]
            if isinstance(old, RebindingInput):  # moved again before it spoke: that one goes
                gone = old.new
                self._retire(gone)
                gone.close()
            new = open_input(self.ctx, plan, self.reader, self.cfg.shm_prefix, keys=self.cfg.keys)
            if isinstance(old, RebindingInput):
                old.replace_new(new)
            else:
                self.inputs[at] = RebindingInput(old, new, self._retire)
            if self.poller is not None:
                self.poller.register(new.sock, zmq.POLLIN)
            endpoints[plan.name] = new.endpoint
            if new.key:
                keys[plan.name] = new.key
            self.log.info(
                "input %s bound anew (%s): its producer was placed on another machine",
                plan.name,
                plan.transport,
            )
        self.tell(p.Rebound(endpoints, keys))

    def _retire(self, edge: InputEdge) -> None:
        """An input edge's socket about to be closed: out of the running loop's poller."""
        if self.poller is not None:
            with contextlib.suppress(KeyError):
                self.poller.unregister(edge.sock)

    def _senders(self) -> list[EdgeSender]:
        """Every output edge's sender (those to the copies of a replicated node included)."""
        found: list[EdgeSender] = []
        for out in self.outputs.values():
            for edge in out.edges:
                found.extend(edge.subs if isinstance(edge, Distributor) else [edge])
        return found

    def _build(self) -> Node:
        plan = self.plan
        cls = load_node_class(plan.node_type, search=plan.module_paths or None)
        params = cls.Params.model_validate(dict(plan.params))
        # a restarted node's segments have names of their own: nothing of the dead one's
        # (which its consumers may still be reading) is reused
        life = f"r{self.cfg.generation}" if self.cfg.generation else ""
        for i, port in enumerate(plan.outputs):
            pool = SlotPool(f"{self.cfg.shm_prefix}-{plan.index}{life}-{i}", max_slots=port.slots)
            self.outputs[port.port] = RuntimeOutput(
                port.port, pool, type=cls.outputs[port.port].type
            )
        for edge in plan.inputs:
            input_edge = open_input(
                self.ctx, edge, self.reader, self.cfg.shm_prefix, keys=self.cfg.keys
            )
            self.inputs.append(input_edge)
        if self.cfg.activity_path and self.inputs:
            self.progress = _Progress(
                progress_path(self.cfg.activity_path, plan.index),
                self.inputs,
                sum(len(port.edges) for port in plan.outputs),
            )
        # a tcp input edge counts its refused peers in the context's gatekeeper (made with
        # the run's keys above, or by the edge for its bulk socket's token)
        self.gate = self.gate or Gatekeeper.existing(self.ctx)
        node = cls(
            params, node_id=plan.node_id, ports=dict(self.outputs), services=self, log=self.log
        )
        node.replica, node.replicas = plan.replica, plan.replicas
        activity = Activity(self.cfg.activity_path, plan.index) if self.cfg.activity_path else None
        self.driver = NodeDriver(
            node,
            self.stats,
            list(self.outputs.values()),
            [e.input for e in plan.inputs],
            pace=plan.pace,
            max_fps=plan.max_fps,
            activity=activity,
        )
        return node

    # the run ---------------------------------------------------------------------------------
    def run(self) -> int:
        try:
            return self._run()
        except _Terminated:
            self.log.debug("terminated")
            self._last_report()
            return EXIT_TERMINATED
        except p.ProtocolError as exc:  # a supervisor of another version: nothing to agree on
            self.log.error("control: %s", exc)
            return 1
        finally:
            self._teardown()

    def _last_report(self) -> None:
        """Final statistics on a forced stop: the table after a failure shows real counts."""
        if self.driver is None or self.driver.state in _NOT_STARTED or self.stats.t_start is None:
            # nothing was counted: a node stopped before the start (or whose open() failed,
            # stopped while it said so) reports nothing
            return
        try:
            self.report(force=True)
        except (zmq.ZMQError, _Terminated):
            pass

    def _run(self) -> int:
        try:
            node = self._build()
        except Exception as exc:
            self.tell(p.OpenFailed(f"{type(exc).__name__}: {exc}", traceback.format_exc()))
            return 1
        driver = self.driver
        assert driver is not None
        self.tell(
            p.Hello(
                {e.name: e.endpoint for e in self.inputs},
                {e.name: e.key for e in self.inputs if e.key},
            )
        )
        # the edges from the copies of a replicated node into one input: merged in seq order
        self._bound = list(self.inputs)
        self.inputs = merge_inputs(self.inputs, self.stats.count)
        if not driver.open():
            assert driver.failure is not None
            self.tell(p.OpenFailed(driver.failure.cause, driver.traceback))
            return 1
        self.tell(p.Ready())
        self._wait_start()
        if node.is_source():
            feed = self._run_source
        elif any(spec.streams for spec in type(node).inputs.values()):
            feed = self._run_streams
        else:
            feed = self._run_consumer
        if not (driver.run(feed) and driver.close()):
            self._tell_failure(driver)
            return 1
        for out in self.outputs.values():
            out.send_eos()
        for out in self.outputs.values():
            out.wait_released()
        self.stats.t_end = time.monotonic()
        driver.finish()
        self.tell(p.Done(self._wire_stats(time.monotonic())))
        return 0

    def _tell_failure(self, driver: NodeDriver) -> None:
        failure = driver.failure
        assert failure is not None
        self.tell(
            p.Failed(
                method=failure.method,
                seq=failure.seq,
                source=failure.source,
                error=failure.cause,
                tb=driver.traceback,
                stats=self._wire_stats(time.monotonic()),
            )
        )

    def _run_source(self) -> None:
        assert self.driver is not None
        self.driver.run_source(self._tick)

    def _run_consumer(self) -> None:
        driver = self.driver
        assert driver is not None
        stats = self.stats
        joiner: Joiner[tuple[InputEdge, int]] = Joiner([i.port for i in self.inputs])
        poller = self.poller = zmq.Poller()
        poller.register(self.control, zmq.POLLIN)
        for edge in self.inputs:
            for sock in sockets_of(edge):
                poller.register(sock, zmq.POLLIN)
        inputs = self.inputs
        outputs = list(self.outputs.values())
        push = driver.push
        drain = driver.drain

        def release(token: tuple[InputEdge, int]) -> None:
            token[0].release(token[1])

        # a node whose output is spread over the copies of a replicated node passes on the
        # watermarks of its inputs (``_pass_marks``), and so does a copy (whatever merges its
        # results with its siblings' is told too); per input: its watermark read before its
        # messages were taken, and the seq of the last one taken
        copy = self.plan.replicas > 1
        spreads = [e for out in outputs for e in out.edges if copy or isinstance(e, Distributor)]
        marks = dict.fromkeys([e.port for e in inputs], -1) if spreads else None
        if marks is not None:
            for edge in inputs:
                if edge.takes_marks:
                    edge.ask_marks()
        seen = dict.fromkeys([e.port for e in inputs], -1)
        next_check = 0.0
        while not joiner.all_ended:
            # Take whatever has arrived on every input without blocking; only an idle node
            # polls (one system call per burst instead of one per message).
            got = 0
            for edge in inputs:
                if marks is not None:
                    marks[edge.port] = edge.read_mark()  # before its messages
                while not edge.ended and edge.has_message():
                    try:
                        message, n, dropped, _ = edge.recv()
                    except TransportError as exc:
                        self._malformed(edge, exc)
                        continue
                    if dropped:
                        stats.dropped[edge.port] += dropped
                    if message is None:
                        if n < 0:
                            continue  # a watermark: edge.mark
                        joiner.end(edge.port)
                        break
                    got += 1
                    if marks is not None:
                        seen[edge.port] = message.seq
                    push(joiner, edge.port, message, (edge, n))
            processed = drain(joiner, release)
            if marks is not None:
                _pass_marks(joiner, inputs, marks, seen, spreads)
            waiting = _move_waiting(outputs)
            now = time.monotonic()
            if now >= next_check:
                next_check = now + 0.01
                _die_if_orphaned()
                self._poll_control()
                self.report()
            if not got and not processed and not joiner.all_ended:
                _sleep(poller, inputs, 5 if waiting else 200)
        for edge in inputs:
            edge.flush_releases()

    def _run_streams(self) -> None:
        """A streams input: every upstream edge is a stream, served round-robin (no join)."""
        driver = self.driver
        assert driver is not None
        stats = self.stats
        inputs = self.inputs
        (port,) = type(driver.node).inputs
        streams: Streams[tuple[InputEdge, int]] = Streams(port, [e.plan.name for e in inputs])
        poller = self.poller = zmq.Poller()
        poller.register(self.control, zmq.POLLIN)
        for edge in inputs:
            for sock in sockets_of(edge):
                poller.register(sock, zmq.POLLIN)
        outputs = list(self.outputs.values())

        def release(token: tuple[InputEdge, int]) -> None:
            token[0].release(token[1])

        next_check = 0.0
        while not streams.all_ended:
            got = 0
            for edge in inputs:
                # At most a queue's worth per edge and pass: a busy camera cannot keep the
                # loop from the others.
                for _ in range(edge.plan.queue):
                    if edge.ended or not edge.has_message():
                        break
                    try:
                        message, n, dropped, _ = edge.recv()
                    except TransportError as exc:
                        self._malformed(edge, exc)
                        continue
                    if dropped:
                        stats.dropped[port] += dropped
                    if message is None:
                        if n < 0:
                            continue  # a watermark (not passed on by a streams node)
                        streams.end(edge.plan.name)
                        break
                    got += 1
                    driver.push_stream(streams, edge.plan.name, message, (edge, n))
            processed = driver.drain_streams(streams, release)
            waiting = _move_waiting(outputs)
            now = time.monotonic()
            if now >= next_check:
                next_check = now + 0.01
                _die_if_orphaned()
                self._poll_control()
                self.report()
            if not got and not processed and not streams.all_ended:
                timeout_ms = 5 if waiting else 200
                if driver.batch_due is not None:
                    due_ms = max(0, int((driver.batch_due - time.monotonic()) * 1000) + 1)
                    timeout_ms = min(timeout_ms, due_ms)
                _sleep(poller, inputs, timeout_ms)
        for edge in inputs:
            edge.flush_releases()

    def _malformed(self, edge: InputEdge, exc: TransportError) -> None:
        """A message that is not one (or names a segment not of this run): counted as a drop
        on its input and as ``malformed``, logged (the first, then every 100th); the node
        goes on."""
        self.stats.dropped[edge.port] += 1
        self.stats.count("malformed")
        if edge.malformed % 100 == 1:
            self.log.warning(
                "input %r: dropped a malformed message (%d so far): %s",
                edge.port,
                edge.malformed,
                exc,
            )

    def _teardown(self) -> None:
        # A second SIGTERM (or the deadline) must not interrupt the clean-up it asked for.
        for sig in (signal.SIGTERM, FORCE_SIGNAL, signal.SIGALRM):
            signal.signal(sig, signal.SIG_IGN)
        try:
            if self.driver is not None:
                self.driver.close()
            ran = self.stats.t_start is not None  # started: it has figures to show
            if ran and self.stats.state != NodeState.CLOSED.value:
                self.report(force=True)  # the final table shows where it stopped, not 0.5 s ago
        except _Terminated:
            pass
        except zmq.ZMQError:
            pass
        # After a normal end, queued messages (the end of stream itself) must still reach the
        # consumers: a socket closed with linger 0 would drop them. After a failure, go now.
        linger = 10_000 if self.stats.state == NodeState.CLOSED.value else 0
        for out in self.outputs.values():
            out.close(linger)
        for edge in self.inputs:
            edge.close()
        self.reader.close()
        if self.progress is not None:
            self.progress.close()
        self.control.close(linger=2000)
        if self.gate is not None:
            self.gate.close()
        self.ctx.term()


def progress_path(activity_path: str, index: int) -> Path:
    """Where node ``index`` of a run notes, per input edge, the last message it is done with
    (beside the run's activity board); the supervisor reads it when the node dies."""
    return Path(activity_path).with_name(f"progress-{index}")


def read_progress(path: Path, count: int) -> list[int]:
    """The ``count`` numbers a (dead) node left in its progress file; zeros if none."""
    try:
        data = path.read_bytes()
    except OSError:
        return [0] * count
    if len(data) < 8 * count:
        return [0] * count
    return list(struct.unpack_from(f"<{count}q", data))


class _Progress:
    """The node's progress file, mapped: one int64 per input edge, written at each release."""

    def __init__(self, path: Path, inputs: list[InputEdge], outputs: int = 0) -> None:
        size = 8 * (len(inputs) + outputs)  # then one per output edge: the last number sent
        fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, size)
            self._mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.view = memoryview(self._mm).cast("q")
        for i, edge in enumerate(inputs):
            edge.progress = self.view
            edge.progress_at = i

    def close(self) -> None:
        with contextlib.suppress(BufferError):
            self.view.release()
            self._mm.close()


def _pass_marks(
    joiner: Joiner[Any],
    inputs: list[InputEdge],
    marks: dict[str, int],
    seen: dict[str, int],
    spreads: list[EdgeSender],
) -> None:
    """Tell the copies of the replicated nodes this node feeds (and, from a copy, whatever
    merges its results) that it will send nothing below seq ``s`` any more
    (``Distributor.advance``, ``EdgeSender.advance``): ``s``, the least over its inputs that
    have not ended of the first message waiting for ``process``, or else what the input said
    (its watermark, the last seq it delivered). This assumes what ``Message.derive`` does: a
    node sends, while it processes a message, messages of that message's seq (or none)."""
    low = -1
    for edge in inputs:
        port = edge.port
        if port in joiner.ended:
            continue
        queue = joiner.queues[port]
        seq = queue[0][0].seq if queue else max(marks[port], seen[port])
        if seq >= NO_MORE:
            continue  # its end of stream is next (and what flush() sends must not be held)
        if seq < 0:
            return  # an input that said nothing yet
        if low < 0 or seq < low:
            low = seq
    if low >= 0:
        for sender in spreads:
            sender.advance(low)


def _move_waiting(outputs: list[RuntimeOutput]) -> bool:
    """Let outputs that wait for a consumer's credit move on; True if one still waits."""
    waiting = False
    for out in outputs:
        if out.has_waiting():
            out.poll_waiting()
            waiting = True
    return waiting


def _sleep(poller: zmq.Poller, inputs: list[InputEdge], timeout_ms: int) -> None:
    """Nothing to do: give back batched credits, then sleep until an input or the control
    socket has something. Every edge is asked whether it may sleep (no short cut: a
    fast-path edge asks its producer for a doorbell there)."""
    for edge in inputs:
        edge.flush_releases()
    if all([edge.may_sleep() for edge in inputs]):
        poller.poll(timeout_ms)

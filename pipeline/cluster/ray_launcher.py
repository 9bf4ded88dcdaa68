"""The Ray launcher: every graph node in a Ray actor placed by the node's ``placement``.

``RayLauncher(address)`` connects to a running Ray cluster (``auto``, ``HOST:PORT`` of the
head, or ``ray://HOST:10001`` with Ray Client). For a run, the supervisor asks it to
``place`` the graph: one ``NodeHost`` actor per node, created with the node's placement as
Ray options (``resources`` -> ``num_cpus``/``num_gpus``/``memory``/custom resources,
``labels`` -> ``label_selector``, ``host`` -> the ``node:<address>`` resource of that
machine), so Ray chooses the machine and holds the resources while the node runs. The
copies of a replicated node (``replicas: N``) are one actor each, spread over the machines
that fit (Ray's ``SPREAD`` strategy) unless the placement names one host. Each actor
says where it landed (Ray node id, address, host name): that ``Layout`` plans the edges
(shared memory within a Ray node, tcp between Ray nodes). Then each actor starts the node's
worker process on its machine (``pipeline.runtime.worker``, exactly as the local launcher
does; its stderr is the actor's, which Ray forwards to the terminal that ran the graph) and
waits for it. A node needs no CPU of Ray's unless its placement asks for one.

A machine that leaves the cluster takes its actors along; Ray reports them dead, and the
supervisor names the machine and the graph nodes it held. A node with a ``restart:`` policy
is then placed again (``RayLauncher.replace``): on a machine still in the cluster that its
placement allows, or where it ran if only its process died (ARCHITECTURE.md, "On a cluster").
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.errors import ClusterError, NodePlacementError
from pipeline.graph.spec import PlacementSpec
from pipeline.graph.validate import ValidatedGraph
from pipeline.runtime.plan import Layout, WorkerConfig
from pipeline.runtime.replicas import group_of, instance_ids
from pipeline.runtime.worker import HOSTED_ENV
from pipeline.transport.shm import LOCK_SUFFIX, SHM_DIR, remove_run_segments

__all__ = ["NodeHost", "RayLauncher", "connect", "import_ray"]

log = logging.getLogger("pipeline.cluster")

PLACE_TIMEOUT_S = 120.0
ALIVE_TIMEOUT_S = 10.0  # a node's actor that does not answer within it is taken as gone
_NO_CWD = "-P" if sys.version_info >= (3, 11) else "-I"  # as the local launcher starts workers


class NodeHost:
    """The Ray actor of one graph node: starts its worker process on this machine, waits for
    it, signals it, and removes what it left (shared memory, the run folder it made)."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.popen: subprocess.Popen[str] | None = None
        self.made_dir: str | None = None
        self.segments: list[str] = []  # name prefixes of its segments, one per incarnation
        self.lock: tuple[int, Path] | None = None  # the run's lock file here, if this made it

    def __repr__(self) -> str:  # Ray prefixes the node's log lines with it
        return self.node_id

    def where(self) -> dict[str, Any]:
        import ray

        return {
            "node": ray.get_runtime_context().get_node_id(),
            "address": ray.util.get_node_ip_address(),
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
        }

    def run(self, config: dict[str, Any], sys_path: list[str], run_dir: str, cwd: str) -> int:
        """Start the worker with ``config`` and wait for it; its exit code."""
        if not os.path.isdir(run_dir):
            os.makedirs(run_dir, mode=0o700, exist_ok=True)
            self.made_dir = run_dir
        if config.get("activity_path") and not os.path.exists(config["activity_path"]):
            # the supervisor's activity board is on its own machine: not visible from here
            config = {**config, "activity_path": ""}
        cfg = WorkerConfig.from_wire(config)
        # a restarted node's slot pools are named by its generation (``<index>r<gen>-``)
        life = f"r{cfg.generation}" if cfg.generation else ""
        self.segments.append(f"{cfg.shm_prefix}-{cfg.plan.index}{life}-")
        self._hold_run_lock(SHM_DIR / (cfg.shm_prefix + LOCK_SUFFIX))
        # the supervisor's path where it exists here (its working folder), then this machine's
        path = list(dict.fromkeys([*(p for p in sys_path if os.path.exists(p)), *sys.path]))
        self.popen = subprocess.Popen(
            [sys.executable, _NO_CWD, "-c", "from pipeline.runtime.worker import main; main()"],
            stdin=subprocess.PIPE,
            text=True,
            # relative paths in params mean what they mean to the supervisor, where they can
            cwd=cwd if os.path.isdir(cwd) else None,
            # the worker ends at once with this actor (see worker._watch_parent)
            env={**os.environ, HOSTED_ENV: "1"},
        )
        assert self.popen.stdin is not None
        self.popen.stdin.write(json.dumps({"config": config, "sys_path": path}))
        self.popen.stdin.close()
        code = self.popen.wait()
        sys.stderr.flush()
        return code

    def _hold_run_lock(self, path: Path) -> None:
        """Make sure this machine has the run's lock file, held, so that no other run's
        start-up sweep here takes the run's segments for a dead run's (the supervisor holds
        it on its own machine; on another, the first of the run's actors there does)."""
        if path.exists():
            return
        hidden = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(hidden, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.link(hidden, path)  # atomic, and never over another actor's lock file
            self.lock = (fd, path)
        except OSError:
            os.close(fd)
        finally:
            with contextlib.suppress(OSError):
                hidden.unlink()

    def signal(self, signum: int) -> None:
        if self.popen is not None and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signum)

    def cleanup(self) -> None:
        """After the run: stop the worker if it still runs; remove its leftovers here."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5)
        for prefix in self.segments:
            remove_run_segments(prefix)
        if self.made_dir:
            shutil.rmtree(self.made_dir, ignore_errors=True)
        if self.lock is not None:
            fd, path = self.lock
            with contextlib.suppress(OSError):
                path.unlink()
            os.close(fd)
            self.lock = None


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ClusterError(
            "running on a cluster needs Ray: pip install 'edge-vision-pipeline[cluster]' "
            "(on every machine of the cluster)"
        ) from None
    return ray


_START_HINT = (
    "start one with `ray start --head` on the head machine and "
    "`ray start --address=HEAD:6379` on the others"
)


def connect(ray: Any, address: str) -> bool:
    """Connect this process to the Ray cluster at ``address`` (``auto``, the head's
    ``HOST:PORT`` or ``ray://HOST:PORT``) unless it is connected already; True if this call
    connected (so the caller disconnects when done). A ``ClusterError`` naming the address
    when the cluster cannot be reached: an address that refuses connections is found out in
    seconds, not after Ray's own retries (half a minute for Ray Client, two for the GCS)."""
    if ray.is_initialized():
        return False
    if address != "auto":
        host, _, port = address.removeprefix("ray://").rpartition(":")
        default = 10001 if address.startswith("ray://") else 6379
        try:
            number = int(port) if host else default
        except ValueError:
            raise ClusterError(
                f"the Ray address {address!r} is not auto, HOST:PORT or ray://HOST:PORT"
            ) from None
        try:
            socket.create_connection((host or port, number), timeout=5.0).close()
        except OSError as exc:
            raise ClusterError(
                f"cannot connect to the Ray cluster at {address!r}: "
                f"{exc.strerror or type(exc).__name__}\n{_START_HINT}"
            ) from None
    for attempt in range(CLIENT_ATTEMPTS):
        try:
            ray.init(
                address=address,
                logging_level=logging.WARNING,
                log_to_driver=True,
                configure_logging=False,
            )
        except Exception as exc:  # ConnectionError, ValueError, RuntimeError: Ray's words
            # Ray Client's proxier forks a server per client, and that server dies at birth
            # now and then (a gRPC poller race in Ray: ray-project/ray#63202): ask again.
            if _client_server_died(exc) and attempt + 1 < CLIENT_ATTEMPTS:
                log.warning("the Ray Client server failed to start (a Ray bug); trying again")
                with contextlib.suppress(Exception):
                    ray.shutdown()
                continue
            raise ClusterError(
                f"cannot connect to the Ray cluster at {address!r}: {exc}\n{_START_HINT}"
            ) from None
        return True
    raise AssertionError("unreachable")  # pragma: no cover


CLIENT_ATTEMPTS = 3


def _client_server_died(exc: BaseException) -> bool:
    """Ray Client's per-client server died while starting (``Starting Ray client server
    failed`` / ``Initialization failure from server``), not a wrong address or version."""
    text = f"{exc} {exc.__cause__ or ''} {exc.__context__ or ''}"
    return "Starting Ray client server failed" in text or "Initialization failure" in text


def _route_to(host: str, port: int) -> str:
    """This machine's address on the way to ``host`` (what a Ray Client driver is reached at)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((host, port))
        address: str = sock.getsockname()[0]
        return address


class _RayProcess:
    """The supervisor's handle on one node's worker, started by its ``NodeHost`` actor."""

    def __init__(self, launcher: RayLauncher, node_id: str, actor: Any, cfg: WorkerConfig) -> None:
        ray = launcher.ray
        self.launcher = launcher
        self.node_id = node_id
        self.actor = actor
        self.pid = int(launcher.wheres[node_id]["pid"])
        self.ref = actor.run.remote(cfg.to_wire(), sys.path, str(launcher.run_dir), os.getcwd())
        self._ray = ray
        self._code: int | None = None
        self._reason: str | None = None
        self._done = False
        # A pipe that becomes readable when the run call ends (the worker exited, or the actor
        # died with its machine): the supervisor's poll sees it as it sees a local pidfd.
        read, self._write = os.pipe()
        self.sentinel: int | None = read
        self._lock = threading.Lock()
        self.ref.future().add_done_callback(self._ended)

    def _ended(self, _future: Any) -> None:
        with self._lock, contextlib.suppress(OSError):
            if self._write >= 0:
                os.write(self._write, b"x")

    def _settle(self, timeout: float) -> bool:
        if self._done:
            return True
        ready, _ = self._ray.wait([self.ref], timeout=timeout)
        if not ready:
            return False
        self._done = True
        try:
            self._code = int(self._ray.get(self.ref))
        except Exception as exc:  # RayActorError and kin: the actor (or its machine) is gone
            self._code = None
            self._reason = self.launcher.describe_loss(self.node_id, exc)
        return True

    @property
    def exitcode(self) -> int | None:
        self._settle(0)
        return self._code

    @property
    def exit_reason(self) -> str | None:
        self._settle(0)
        return self._reason

    def is_alive(self) -> bool:
        return not self._settle(0)

    def join(self, timeout: float) -> None:
        self._settle(timeout)

    def kill(self, sig: int) -> None:
        if sig == signal.SIGKILL:
            self._ray.kill(self.actor, no_restart=True)
        else:
            self.actor.signal.remote(int(sig))

    def close(self) -> None:
        with self._lock:
            for fd in (self.sentinel, self._write):
                if fd is not None and fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self.sentinel = None
            self._write = -1


class RayLauncher:
    """Launch each graph node as a Ray actor process on the machine its placement selects.

    Args:
        address: ``auto`` (this machine is in the cluster), ``HOST:PORT`` (the head's GCS
            port, 6379 by default) or ``ray://HOST:10001`` (Ray Client, the ``ray[client]``
            package).
        place_timeout_s: how long every node may wait for a machine with room for it.
    """

    def __init__(self, address: str = "auto", *, place_timeout_s: float = PLACE_TIMEOUT_S) -> None:
        self.ray = import_ray()
        self.address = address
        self.place_timeout_s = place_timeout_s
        self.actors: dict[str, Any] = {}
        self.wheres: dict[str, dict[str, Any]] = {}
        self.layout: Layout | None = None
        self.run_dir = Path()
        self.retired: list[Any] = []  # actors of nodes placed again (cleaned up at the end)
        self._owns_connection = connect(self.ray, address)
        if address.startswith("ray://"):
            host, _, port = address[len("ray://") :].partition(":")
            self.control_address = _route_to(host, int(port or 10001))
        else:
            self.control_address = self.ray.util.get_node_ip_address()

    # placement -------------------------------------------------------------------------------
    def machines(self) -> list[dict[str, Any]]:
        """The cluster's live Ray nodes, as ``ray.nodes()`` describes them."""
        return [m for m in self.ray.nodes() if m.get("Alive")]

    def place(self, graph: ValidatedGraph, run_dir: Path, run_prefix: str) -> Layout:
        """Create every node's actor where its placement allows; where each landed."""
        self.run_dir = run_dir
        machines = self.machines()
        host_cls = self.ray.remote(NodeHost)
        refs: dict[str, Any] = {}
        for node in graph.spec.nodes:
            placement = graph.spec.placement_of(node)
            fits = [m for m in machines if _fits(m, placement)]
            if not fits:
                raise NodePlacementError(
                    node.id,
                    f"no machine of the cluster has {_describe(placement)}; the cluster has "
                    + "; ".join(_describe_machine(m) for m in machines),
                )
            options = _ray_options(placement, fits)
            if node.replicas > 1 and "scheduling_strategy" not in options:
                # the copies of a replicated node go to different machines where they can
                options["scheduling_strategy"] = "SPREAD"
            for node_id in instance_ids(node.id, node.replicas):
                actor = host_cls.options(max_concurrency=4, **options).remote(node_id)
                self.actors[node_id] = actor
                refs[node_id] = actor.where.remote()
        deadline = time.monotonic() + self.place_timeout_s
        pending = dict(refs)
        while pending:
            ready, _ = self.ray.wait(list(pending.values()), num_returns=len(pending), timeout=1.0)
            for node_id, ref in list(pending.items()):
                if ref in ready:
                    try:
                        self.wheres[node_id] = self.ray.get(ref)
                    except Exception as exc:
                        raise NodePlacementError(
                            node_id, f"its Ray actor did not start: {exc}"
                        ) from None
                    del pending[node_id]
            if pending and time.monotonic() > deadline:
                node_id = next(iter(pending))
                placement = graph.spec.placement_of(graph.node(node_id))
                raise NodePlacementError(
                    node_id,
                    f"no machine with {_describe(placement)} had room for it within "
                    f"{self.place_timeout_s:g} s (its resources are held by other work)",
                )
        self.layout = Layout(
            hosts={n: w["node"] for n, w in self.wheres.items()},
            addresses={n: w["address"] for n, w in self.wheres.items()},
            names={n: _name(w) for n, w in self.wheres.items()},
        )
        for node_id in self.wheres:
            log.debug("node %s runs on %s", node_id, self.layout.names[node_id])
        return self.layout

    def replace(self, node_id: str, graph: ValidatedGraph) -> Layout:
        """Before ``node_id`` is restarted: its actor if it is still alive (the worker died,
        not the actor: the node runs again where it ran), else a new actor on a machine its
        placement allows, the one it ran on first if that is still in the cluster and has
        room (a full one is no reason to wait). A ``NodePlacementError`` naming the node and
        its placement when no machine left fits; the layout after."""
        assert self.layout is not None
        actor = self.actors[node_id]
        try:
            self.ray.get(actor.where.remote(), timeout=ALIVE_TIMEOUT_S)
            return self.layout
        except Exception:  # RayActorError (its machine left, or it was killed), a timeout
            self.retired.append(actor)
        placement = graph.spec.placement_of(graph.node(group_of(node_id)))
        machines = self.machines()
        fits = [m for m in machines if _fits(m, placement)]
        home = self.layout.hosts[node_id]
        alive = any(m["NodeID"] == home for m in machines)
        was = self.layout.names[node_id]
        was = f"its actor on {was} died" if alive else f"its machine {was} left the cluster"
        if not fits:
            raise NodePlacementError(
                node_id,
                f"not again after {was}: no machine left in the cluster "
                f"has {_describe(placement)}; the cluster has "
                + ("; ".join(_describe_machine(m) for m in machines) or "no machine"),
            )
        options = _ray_options(placement, fits)
        if "scheduling_strategy" not in options and any(m["NodeID"] == home for m in fits):
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            # its first machine if it has room there now; a busy one is no reason to wait
            # (Ray's soft affinity alone waits for a machine that is alive but full)
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
                home, soft=True, _spill_on_unavailable=True
            )
        actor = self.ray.remote(NodeHost).options(max_concurrency=4, **options).remote(node_id)
        self.actors[node_id] = actor
        try:
            where = self.ray.get(actor.where.remote(), timeout=self.place_timeout_s)
        except Exception as exc:
            raise NodePlacementError(
                node_id,
                f"not again after {was}: no machine with "
                f"{_describe(placement)} took it within {self.place_timeout_s:g} s "
                f"({type(exc).__name__})",
            ) from None
        self.wheres[node_id] = where
        self.layout = Layout(
            hosts={**self.layout.hosts, node_id: where["node"]},
            addresses={**self.layout.addresses, node_id: where["address"]},
            names={**self.layout.names, node_id: _name(where)},
        )
        return self.layout

    # launching -------------------------------------------------------------------------------
    def __call__(self, cfg: WorkerConfig) -> _RayProcess:
        return _RayProcess(self, cfg.node_id, self.actors[cfg.node_id], cfg)

    def describe_loss(self, node_id: str, exc: BaseException) -> str:
        """How a node's actor ended: its machine left the cluster (naming every graph node
        that machine held), or the actor alone died."""
        if self.layout is None:
            return f"lost its Ray actor ({type(exc).__name__})"
        ray_node = self.layout.hosts[node_id]
        alive = {m["NodeID"] for m in self.machines()}
        if ray_node not in alive:
            held = sorted(n for n, h in self.layout.hosts.items() if h == ray_node)
            return (
                f"was lost with its machine {self.layout.names[node_id]}, which left the "
                f"cluster; that machine held: {', '.join(held)}"
            )
        return f"lost its Ray actor on {self.layout.names[node_id]} ({type(exc).__name__})"

    def close(self) -> None:
        """Clean up on every machine, end the actors, and disconnect (if this connected)."""
        ray = self.ray
        cleanups = []
        actors = [*self.actors.values(), *self.retired]
        for actor in actors:
            with contextlib.suppress(Exception):
                cleanups.append(actor.cleanup.remote())
        if cleanups:
            with contextlib.suppress(Exception):
                ray.wait(cleanups, num_returns=len(cleanups), timeout=10)
        for actor in actors:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        self.actors.clear()
        self.retired.clear()
        if self._owns_connection and ray.is_initialized():
            ray.shutdown()


def _name(where: Mapping[str, Any]) -> str:
    """How messages name the machine an actor landed on."""
    return f"{where['hostname']} ({where['address']}, Ray node {where['node'][:8]})"


def _fits(machine: Mapping[str, Any], placement: PlacementSpec) -> bool:
    """Could this Ray node ever run a node of this placement (its totals, not what is free)?"""
    total: Mapping[str, float] = machine.get("Resources", {})
    for name, amount in _ray_resources(placement).items():
        if total.get(name, 0.0) < amount:
            return False
    labels: Mapping[str, str] = machine.get("Labels", {})
    if any(labels.get(k) != v for k, v in placement.labels.items()):
        return False
    host = placement.host
    return host is None or host in (
        machine.get("NodeManagerHostname"),
        machine.get("NodeManagerAddress"),
        machine.get("NodeID"),
    )


def _ray_resources(placement: PlacementSpec) -> dict[str, float]:
    out = dict(placement.resources)
    if "memory" in out:
        out["memory"] = float(out["memory"])
    return out


def _ray_options(placement: PlacementSpec, fits: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The actor's Ray options for a placement (``fits``: the machines that could run it)."""
    resources = _ray_resources(placement)
    options: dict[str, Any] = {
        "num_cpus": resources.pop("CPU", 0),
        "num_gpus": resources.pop("GPU", 0),
    }
    if "memory" in resources:
        options["memory"] = resources.pop("memory")
    if placement.host is not None:
        # Ray's own handle on a machine: every Ray node has a resource node:<its address>;
        # a host given by Ray node id pins that very node
        machine = fits[0]
        if placement.host == machine.get("NodeID"):
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
                machine["NodeID"], soft=False
            )
        else:
            resources[f"node:{machine['NodeManagerAddress']}"] = 0.001
    if resources:
        options["resources"] = resources
    if placement.labels:
        options["label_selector"] = dict(placement.labels)
    return options


def _describe(placement: PlacementSpec) -> str:
    parts = []
    if placement.resources:
        parts.append(
            "resources " + ", ".join(f"{k}: {v:g}" for k, v in placement.resources.items())
        )
    if placement.labels:
        parts.append("labels " + ", ".join(f"{k}={v}" for k, v in placement.labels.items()))
    if placement.host:
        parts.append(f"host {placement.host}")
    return " and ".join(parts) or "room"


def _describe_machine(machine: Mapping[str, Any]) -> str:
    total = machine.get("Resources", {})
    shown = {
        k: v
        for k, v in total.items()
        if not k.startswith("node:") and k not in ("object_store_memory", "memory")
    }
    labels = {k: v for k, v in machine.get("Labels", {}).items() if not k.startswith("ray.io/")}
    res = ", ".join(f"{k}: {v:g}" for k, v in sorted(shown.items()))
    lab = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))
    name = machine.get("NodeManagerHostname") or machine.get("NodeManagerAddress")
    return f"{name} [{res}]" + (f" labels [{lab}]" if lab else "")

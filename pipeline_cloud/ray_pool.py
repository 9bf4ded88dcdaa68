"""Cloud inference on a Ray cluster: ``pipeline cloud serve --workers ray://HOST:PORT``.

:class:`RayInferencePool` has the local pool's interface (``await run(job)``, ``inspect``,
``stats``, ``close``), so the API process is unchanged. Each model version (organisation,
name, version) gets its own replicas: :class:`InferenceReplica` Ray actors, one CPU each
(``replica_cpus``), spread over the cluster's machines (Ray's ``SPREAD`` strategy). A replica
loads its model once, when it starts, and then runs one request at a time: the image's bytes
come with each request, the model never does.

Where a replica finds its model: at the registry's path, when the data folder is on that
machine (the one machine case, or a data folder on shared storage mounted at the same path on
every machine: NFS, CephFS, ...). Where that path does not exist, the replica takes the model
file from Ray's object store instead: the pool puts each model version there once (when its
first replica starts), so a machine without the data folder still gets the file once per
replica, never per request.

Routing and scaling:

- a request goes to the ready replica with the fewest requests in flight;
- :func:`decide` is the autoscaling policy: more than ``queue_per_replica`` requests in flight
  per replica adds one (up to ``max_replicas``), a model with nothing in flight for
  ``idle_s`` loses one (down to ``min_replicas``); the pool applies it on every request and
  twice a second;
- a replica lost mid-request (its actor or its machine died: ``RayActorError``, ...) is dropped
  (a new one starts if the model has fewer than its minimum) and the request is retried once on
  another replica; a second loss answers UNAVAILABLE to the caller.

``stats()`` (the ``InferenceStatus`` call, and the server's log on every change) shows the
replicas of each model, where each runs (Ray node, pid, actor id), what each has served, and
the requests in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline_cloud.errors import Busy, CloudError, ModelFailed, Unavailable
from pipeline_cloud.inference import (
    InferencePool,
    InferenceResult,
    Job,
    decode_image,
    infer_image,
    load_model,
    read_image,
)

__all__ = [
    "InferenceReplica",
    "RayInferencePool",
    "Scaling",
    "WorkersError",
    "decide",
    "parse_replicas",
]

log = logging.getLogger("pipeline_cloud")

START_TIMEOUT_S = 120.0
TICK_S = 0.5


class WorkersError(Exception):
    """The Ray workers cannot be used (Ray missing, the cluster unreachable, a bad option)."""


@dataclasses.dataclass(frozen=True)
class Scaling:
    """How many replicas a model version has, and when that changes."""

    min_replicas: int = 1
    max_replicas: int = 1
    queue_per_replica: float = 2.0  # requests in flight per replica above which one is added
    idle_s: float = 60.0  # nothing in flight for this long: one replica fewer


def decide(scaling: Scaling, replicas: int, starting: int, pending: int, idle_s: float) -> int:
    """The autoscaling decision for one model: +1 (start a replica), -1 (stop one) or 0.

    ``replicas`` ready, ``starting`` not yet ready, ``pending`` requests in flight (running or
    queued), ``idle_s`` seconds since the model last had one in flight.
    """
    total = replicas + starting
    if total < scaling.min_replicas:
        return 1
    if total > scaling.max_replicas:
        return -1
    if total > scaling.min_replicas and pending == 0 and idle_s >= scaling.idle_s:
        return -1
    if (
        starting == 0
        and total < scaling.max_replicas
        and pending > scaling.queue_per_replica * max(1, replicas)
    ):
        return 1
    return 0


def parse_replicas(text: str) -> tuple[int, int]:
    """``N`` (a fixed count) or ``MIN:MAX`` -> ``(min, max)``."""
    low, sep, high = text.partition(":")
    try:
        lo, hi = int(low), int(high if sep else low)
    except ValueError:
        raise WorkersError(f"replicas {text!r} must be N or MIN:MAX (whole numbers)") from None
    if lo < 1 or hi < lo:
        raise WorkersError(f"replicas {text!r}: need 1 <= MIN <= MAX")
    return lo, hi


class InferenceReplica:
    """The Ray actor of one replica of one model version: loads the model once, then runs
    one request at a time on the image bytes it is sent."""

    def __init__(self, model: str, job: Job, shipped: Sequence[Any]) -> None:
        # one runtime thread per replica: Ray gives each replica one CPU
        for name in ("OMP_NUM_THREADS", "TF_NUM_INTEROP_THREADS", "TF_NUM_INTRAOP_THREADS"):
            os.environ.setdefault(name, "1")
        self.model = model
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.runner: Any = None
        self.error: CloudError | None = None
        self.copied = False
        try:
            if not Path(job.model_path).is_file():
                job = self._fetch(job, shipped)
            self.runner = load_model(job)
        except CloudError as exc:  # answered to each request, as the local pool does
            self.error = exc

    def _fetch(self, job: Job, shipped: Sequence[Any]) -> Job:
        """This machine lacks the data folder: the model file from the object store."""
        import ray

        self._tmp = tempfile.TemporaryDirectory(prefix="pipeline-model-")
        path = Path(self._tmp.name) / Path(job.model_path).name
        path.write_bytes(ray.get(shipped[0]))
        self.copied = True
        return dataclasses.replace(job, model_path=str(path))

    def __repr__(self) -> str:  # Ray prefixes the replica's log lines with it
        return f"replica of {self.model}"

    def where(self) -> dict[str, Any]:
        import ray

        ctx = ray.get_runtime_context()
        return {
            "node": ctx.get_node_id(),
            "address": ray.util.get_node_ip_address(),
            "pid": os.getpid(),
            "actor": ctx.get_actor_id(),
            "model_copied": self.copied,
        }

    def infer(self, data: bytes, binary_data_id: str) -> InferenceResult | CloudError:
        """The result, or the CloudError to answer (returned: Ray would wrap a raised one)."""
        if self.error is not None:
            return self.error
        try:
            image: np.ndarray = decode_image(data, f"binary data {binary_data_id!r}")
            return infer_image(self.runner, image)
        except CloudError as exc:
            return exc


@dataclasses.dataclass(eq=False)
class _Replica:
    actor: Any
    number: int
    where: dict[str, Any] = dataclasses.field(default_factory=dict)
    inflight: int = 0
    served: int = 0


@dataclasses.dataclass(eq=False)
class _Model:
    name: str
    job: Job
    scaling: Scaling
    replicas: list[_Replica] = dataclasses.field(default_factory=list)
    starting: int = 0
    pending: int = 0
    started: int = 0
    last_busy: float = dataclasses.field(default_factory=time.monotonic)
    shipped: list[Any] = dataclasses.field(default_factory=list)
    waiters: list[asyncio.Future[None]] = dataclasses.field(default_factory=list)

    def wake(self, error: BaseException | None = None) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)
        self.waiters.clear()


class RayInferencePool:
    """``await pool.run(job)`` on the replicas of the job's model version on a Ray cluster.

    Args:
        address: ``auto``, the head's ``HOST:PORT`` or ``ray://HOST:PORT`` (Ray Client).
        scaling: every model's replicas, unless ``per_model`` names it (by ``name`` or
            ``org-id:name``).
        replica_cpus: Ray CPUs each replica holds.
        max_pending: requests waiting or running at once over all models (default 32 per
            CPU of the cluster); past that RESOURCE_EXHAUSTED.
    """

    def __init__(
        self,
        address: str,
        scaling: Scaling = Scaling(),
        per_model: Mapping[str, Scaling] | None = None,
        replica_cpus: float = 1.0,
        max_pending: int | None = None,
        start_timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        from pipeline.cluster.ray_launcher import connect, import_ray
        from pipeline.errors import ClusterError

        try:
            self.ray = import_ray()
            self._owns_connection = connect(self.ray, address)
        except ClusterError as exc:
            raise WorkersError(str(exc)) from None
        self.address = address
        self.scaling = scaling
        self.per_model = dict(per_model or {})
        self.replica_cpus = replica_cpus
        self.start_timeout_s = start_timeout_s
        cpus = int(self.ray.cluster_resources().get("CPU", 1))
        self.max_pending = max_pending or 32 * max(1, cpus)
        self.pending = 0
        self.retried = 0
        self.lost = 0
        self.workers = address  # what the server's start-up line names
        self._actor_cls = self.ray.remote(InferenceReplica)
        self._models: dict[str, _Model] = {}
        self._actors: list[_Replica] = []  # every replica started and not stopped
        self._ticker: asyncio.Task[None] | None = None
        self._local: InferencePool | None = None
        from ray.exceptions import (
            LocalRayletDiedError,
            NodeDiedError,
            ObjectLostError,
            OutOfMemoryError,
            RayActorError,
            WorkerCrashedError,
        )

        self._lost_errors: tuple[type[BaseException], ...] = (
            RayActorError,
            WorkerCrashedError,
            NodeDiedError,
            LocalRayletDiedError,
            OutOfMemoryError,
            ObjectLostError,
        )

    # requests ---------------------------------------------------------------------------------
    async def run(self, job: Job) -> InferenceResult:
        if self.pending >= self.max_pending:
            raise Busy(
                f"{self.pending} inferences are already waiting on the Ray workers; "
                "retry in a moment"
            )
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick())
        data = await asyncio.to_thread(read_image, job)
        model = self._model(job)
        self.pending += 1
        model.pending += 1
        try:
            self._scale(model)
            return await self._run_on_replicas(model, data, job.binary_data_id)
        finally:
            self.pending -= 1
            model.pending -= 1
            model.last_busy = time.monotonic()

    async def _run_on_replicas(self, model: _Model, data: bytes, binary_id: str) -> InferenceResult:
        for attempt in (1, 2):
            replica = await self._pick(model)
            replica.inflight += 1
            try:
                ref = replica.actor.infer.remote(data, binary_id)
                out = await asyncio.wrap_future(ref.future())
            except self._lost_errors as exc:
                self._lose(model, replica, exc)
                if attempt == 2:
                    raise Unavailable(
                        f"the inference replicas of {model.name} were lost twice running this "
                        f"request (last: {type(exc).__name__}); the cluster may be losing "
                        "machines: retry in a moment"
                    ) from None
                self.retried += 1
                continue
            finally:
                replica.inflight -= 1
            replica.served += 1
            if isinstance(out, CloudError):
                raise out
            result: InferenceResult = out
            return result
        raise AssertionError("unreachable")

    async def _pick(self, model: _Model) -> _Replica:
        """The ready replica with the fewest requests in flight (waiting for one to start)."""
        deadline = time.monotonic() + self.start_timeout_s
        while not model.replicas:
            if model.starting == 0:
                self._start(model)
            waiter = asyncio.get_running_loop().create_future()
            model.waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise Unavailable(
                    f"no inference replica of {model.name} started within "
                    f"{self.start_timeout_s:g} s: the Ray cluster at {self.address} has no "
                    f"free CPU for it ({self.replica_cpus:g} each); add machines or lower "
                    "--replicas"
                ) from None
        return min(model.replicas, key=lambda r: (r.inflight, r.served))

    # replicas -------------------------------------------------------------------------------
    def _model(self, job: Job) -> _Model:
        model = self._models.get(job.version_id)
        if model is None:
            name = job.model or job.version_id
            item = name.split("@", 1)[0]
            scaling = self.per_model.get(item) or self.per_model.get(item.split(":", 1)[-1])
            model = _Model(name, job, scaling or self.scaling)
            self._models[job.version_id] = model
        return model

    def _start(self, model: _Model) -> None:
        if not model.shipped:
            # once per model version: the file for replicas on machines without the data folder
            try:
                data = Path(model.job.model_path).read_bytes()
            except OSError as exc:
                raise ModelFailed(f"the file of {model.name} cannot be read: {exc}") from None
            model.shipped.append(self.ray.put(data))
        model.started += 1
        replica = _Replica(None, model.started)
        self._actors.append(replica)
        replica.actor = self._actor_cls.options(
            num_cpus=self.replica_cpus, scheduling_strategy="SPREAD"
        ).remote(model.name, model.job, model.shipped)
        model.starting += 1
        started = asyncio.wrap_future(replica.actor.where.remote().future())
        started.add_done_callback(lambda f: self._started(model, replica, f))

    def _started(self, model: _Model, replica: _Replica, done: asyncio.Future[Any]) -> None:
        model.starting -= 1
        if done.cancelled():
            return
        exc = done.exception()
        if exc is not None:
            log.error("a replica of %s did not start: %s", model.name, exc)
            self._kill(replica)
            if not model.replicas and model.starting == 0:
                model.wake(Unavailable(f"no inference replica of {model.name} could start: {exc}"))
            return
        replica.where = dict(done.result())
        model.replicas.append(replica)
        model.wake()
        self._log(model, f"replica {replica.number} ready on {self._where(replica)}")
        self._scale(model)

    def _lose(self, model: _Model, replica: _Replica, exc: BaseException) -> None:
        if replica not in model.replicas:
            return  # another request saw it go first
        model.replicas.remove(replica)
        self.lost += 1
        self._kill(replica)
        self._log(
            model,
            f"replica {replica.number} on {self._where(replica)} was lost "
            f"({type(exc).__name__}); its requests are retried on another",
            logging.WARNING,
        )
        self._scale(model)

    def _scale(self, model: _Model) -> None:
        idle = time.monotonic() - model.last_busy if model.pending == 0 else 0.0
        step = decide(model.scaling, len(model.replicas), model.starting, model.pending, idle)
        if step > 0:
            self._start(model)
        elif step < 0 and model.replicas:
            replica = min(model.replicas, key=lambda r: (r.inflight, -r.number))
            if replica.inflight == 0:
                model.replicas.remove(replica)
                self._kill(replica)
                model.last_busy = time.monotonic()  # the next one waits as long again
                self._log(model, f"replica {replica.number} stopped (idle)")

    def _kill(self, replica: _Replica) -> None:
        with contextlib.suppress(ValueError):
            self._actors.remove(replica)
        with contextlib.suppress(Exception):
            self.ray.kill(replica.actor, no_restart=True)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            for model in list(self._models.values()):
                try:
                    self._scale(model)
                except Exception as exc:  # a deleted model file, Ray refusing: try again later
                    log.warning("%s: scaling failed: %s", model.name, exc)

    def _where(self, replica: _Replica) -> str:
        w = replica.where
        if not w:
            return "(not started)"
        return f"Ray node {str(w['node'])[:8]} ({w['address']}, pid {w['pid']})"

    def _log(self, model: _Model, what: str, level: int = logging.INFO) -> None:
        log.log(
            level,
            "%s: %s; %d replicas (%d starting), %d requests in flight",
            model.name,
            what,
            len(model.replicas),
            model.starting,
            model.pending,
        )

    # the pool's other duties ------------------------------------------------------------------
    def describe(self) -> str:
        s = self.scaling
        count = f"{s.min_replicas}" + (
            f"..{s.max_replicas}" if s.max_replicas > s.min_replicas else ""
        )
        plural = "" if count == "1" else "s"
        return f"Ray workers at {self.address}, {count} replica{plural} per model"

    def stats(self) -> dict[str, Any]:
        """Replicas per model (where each runs, what it served), requests in flight."""
        return {
            "workers": self.address,
            "pending": self.pending,
            "retried": self.retried,
            "lost": self.lost,
            "models": {
                m.name: {
                    "replicas": len(m.replicas),
                    "starting": m.starting,
                    "pending": m.pending,
                    "min_replicas": m.scaling.min_replicas,
                    "max_replicas": m.scaling.max_replicas,
                    "replica": [
                        {**r.where, "number": r.number, "inflight": r.inflight, "served": r.served}
                        for r in m.replicas
                    ],
                }
                for m in self._models.values()
            },
        }

    def inspect(self, path: Path, file_name: str) -> Any:
        """An upload's model check, in a local worker process (as without Ray)."""
        if self._local is None:
            self._local = InferencePool(1)
        return self._local.inspect(path, file_name)

    def warm_up(self) -> None:
        """Replicas start with their model's first request: nothing to do here."""

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        for replica in list(self._actors):
            self._kill(replica)
        for model in self._models.values():
            model.replicas.clear()
        if self._local is not None:
            self._local.close()
        if self._owns_connection and self.ray.is_initialized():
            self.ray.shutdown()

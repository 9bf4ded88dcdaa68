"""Cloud inference: a bounded pool of worker processes that run registry models on images.

Each request becomes a :class:`Job` (paths, not bytes: the worker reads the image and model
files itself, so nothing big is pickled). A worker keeps the models it has loaded in a small
LRU cache keyed by model version id, so a model is loaded once per worker. Models run through
``pipeline_nodes.inference.vision`` (``Detector`` / ``Classifier``): the same input preparation,
decoders and thresholds as the graph's ``detector`` and ``classifier`` nodes. Each worker runs
its runtime with one thread, and the pool has one worker per CPU core by default, so ``N``
requests run in parallel on ``N`` cores without oversubscription.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import multiprocessing
import os
from pathlib import Path
from typing import Any

import numpy as np

from pipeline_cloud.errors import Busy, CloudError, InvalidArgument, ModelFailed

__all__ = [
    "InferencePool",
    "InferenceResult",
    "Job",
    "default_workers",
    "infer_image",
    "load_model",
    "read_image",
    "run_job",
]

_CACHE_SIZE = 8


def default_workers() -> int:
    """One worker per CPU core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclasses.dataclass(frozen=True)
class Job:
    """One inference: which model version (file and how to run it) on which stored image."""

    version_id: str
    model_type: str
    framework: str
    model_path: str
    run_params: dict[str, Any]
    image_path: str
    binary_data_id: str = ""
    model: str = ""  # <org-id>:<name>@<version>, for logs and statistics


@dataclasses.dataclass(frozen=True)
class InferenceResult:
    """Output tensors by name, boxes (label, xyxy 0..1, confidence), classes (label, conf)."""

    outputs: dict[str, np.ndarray]
    boxes: list[tuple[str, tuple[float, float, float, float], float]]
    classifications: list[tuple[str, float]]


_models: collections.OrderedDict[str, Any] = collections.OrderedDict()


def _load(job: Job) -> Any:
    """The worker's loaded model for ``job`` (loaded on first use, LRU-evicted)."""
    model = _models.get(job.version_id)
    if model is not None:
        _models.move_to_end(job.version_id)
        return model
    model = load_model(job)
    _models[job.version_id] = model
    while len(_models) > _CACHE_SIZE:
        _, old = _models.popitem(last=False)
        old.close()
    return model


def decode_image(data: bytes, what: str) -> np.ndarray:
    """A stored file as an (H, W, 3) uint8 BGR image."""
    import cv2

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise InvalidArgument(f"{what} is not an image OpenCV can decode (JPEG, PNG, ...)")
    return np.asarray(image)


def read_image(job: Job) -> bytes:
    """The stored file of the job's image."""
    try:
        return Path(job.image_path).read_bytes()
    except OSError as exc:
        raise ModelFailed(f"binary data {job.binary_data_id!r} is missing its file") from exc


def load_model(job: Job) -> Any:
    """The job's model as a runner (``infer(image)``, ``close()``), or ModelFailed."""
    from pipeline_cloud.runners import load_runner

    try:
        return load_runner(job.model_type, job.framework, Path(job.model_path), job.run_params)
    except CloudError:
        raise
    except Exception as exc:
        raise ModelFailed(f"the model could not be loaded: {type(exc).__name__}: {exc}") from exc


def infer_image(runner: Any, image: np.ndarray) -> InferenceResult:
    """Run a loaded model on a decoded image."""
    try:
        result: InferenceResult = runner.infer(image)
    except Exception as exc:
        raise ModelFailed(f"the model failed on this image: {type(exc).__name__}: {exc}") from exc
    return result


def run_job(job: Job) -> InferenceResult:
    """Run one job in this process (what each pool worker does)."""
    image = decode_image(read_image(job), f"binary data {job.binary_data_id!r}")
    return infer_image(_load(job), image)


def _init_worker() -> None:
    # One runtime thread per worker: the pool, not the runtime, uses the cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")


class InferencePool:
    """``await pool.run(job)`` runs the job on one of ``workers`` processes.

    At most ``max_pending`` jobs wait or run at once (default 32 per worker); past that a
    request is refused at once with RESOURCE_EXHAUSTED rather than queued without bound.
    """

    def __init__(self, workers: int | None = None, max_pending: int | None = None) -> None:
        self.workers = workers or default_workers()
        self.max_pending = max_pending or 32 * self.workers
        self.pending = 0
        self._pool = self._new_pool()

    def _new_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        return concurrent.futures.ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
        )

    async def run(self, job: Job) -> InferenceResult:
        if self.pending >= self.max_pending:
            raise Busy(
                f"{self.pending} inferences are already waiting on {self.workers} workers; "
                "retry in a moment"
            )
        loop = asyncio.get_running_loop()
        self.pending += 1
        try:
            return await loop.run_in_executor(self._pool, run_job, job)
        except concurrent.futures.process.BrokenProcessPool as exc:
            # A worker died (out of memory, a crash in a runtime): start a fresh pool.
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            raise ModelFailed("the inference worker died running this model") from exc
        finally:
            self.pending -= 1

    def inspect(self, path: Path, file_name: str) -> Any:
        """``registry.inspect_model`` in a worker (blocking; call it from a thread)."""
        from pipeline_cloud.model_files import inspect_model

        try:
            return self._pool.submit(inspect_model, path, file_name).result()
        except concurrent.futures.process.BrokenProcessPool as exc:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            raise InvalidArgument(f"{file_name}: loading the model crashed its worker") from exc

    def describe(self) -> str:
        """What serves the inferences, for the server's start-up line."""
        return f"{self.workers} workers"

    def stats(self) -> dict[str, Any]:
        """Workers and requests waiting or running, for the status call."""
        return {"workers": self.workers, "pending": self.pending, "models": {}}

    def warm_up(self) -> None:
        """Start every worker now rather than on the first requests."""
        list(self._pool.map(_noop, range(self.workers)))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _noop(_: int) -> None:
    return None

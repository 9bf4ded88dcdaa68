"""What every gRPC service of the cloud shares: the store, registry, worker pool, and who calls.

``Cloud.caller_org(stream)`` turns the bearer token's subject (an API key id, checked by
``pipeline.rpc.auth``'s token check before any handler runs) into the key's organisation id.
The ``handled`` decorator maps :class:`~pipeline_cloud.errors.CloudError` to a gRPC status
with its message, so a remote caller always gets a status that says what to do.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from grpclib import GRPCError, Status
from grpclib.server import Stream
from sqlalchemy import select

from pipeline.rpc.auth import subject_of
from pipeline_cloud.blobs import BlobStore
from pipeline_cloud.db import ApiKey, open_database
from pipeline_cloud.errors import CloudError, Unauthenticated
from pipeline_cloud.inference import InferencePool
from pipeline_cloud.registry import Registry
from pipeline_cloud.store import Store

if TYPE_CHECKING:
    from pipeline_cloud.ray_pool import RayInferencePool

__all__ = ["Cloud", "handled", "run_blocking"]

log = logging.getLogger("pipeline_cloud")

P = ParamSpec("P")
T = TypeVar("T")

_KEY_CACHE_S = 5.0  # a revoked key stops working within this long


class Cloud:
    """The server's state: database, blobs, registry, inference pool."""

    def __init__(
        self,
        data_dir: Path,
        database: str | None = None,
        workers: int | str | None = None,
        ray_options: Mapping[str, Any] | None = None,
    ):
        """``workers``: a count of local worker processes, or a Ray cluster's address
        (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``) for :class:`RayInferencePool` (with
        ``ray_options``, its keyword arguments)."""
        self.data_dir = data_dir
        self.pool: InferencePool | RayInferencePool
        if isinstance(workers, str):
            from pipeline_cloud.ray_pool import RayInferencePool

            self.pool = RayInferencePool(workers, **(ray_options or {}))
        else:
            self.pool = InferencePool(workers)
        sessions = open_database(data_dir, database)
        blobs = BlobStore(data_dir / "blobs")
        self.store = Store(sessions, blobs)
        self.registry = Registry(sessions, blobs, inspector=self.pool.inspect)
        self._key_orgs: dict[str, tuple[str | None, float]] = {}

    async def verify_key(self, key_id: str, key: str) -> bool:
        """``AuthService``'s key check: the key's hash against the database."""
        return await asyncio.to_thread(self.store.verify_key, key_id, key) is not None

    def _org_of_key(self, key_id: str) -> str | None:
        cached = self._key_orgs.get(key_id)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        with self.store.sessions() as s:
            row = s.scalar(select(ApiKey).where(ApiKey.id == key_id))
        org = row.org_id if row is not None and not row.revoked else None
        self._key_orgs[key_id] = (org, now + _KEY_CACHE_S)
        return org

    def caller_org(self, stream: Stream[Any, Any]) -> str:
        """The organisation of the API key that made this call."""
        key_id = subject_of(stream)
        org = self._org_of_key(key_id) if key_id else None
        if org is None:
            raise Unauthenticated("this API key is not valid any more; create a new one")
        return org

    def close(self) -> None:
        self.pool.close()


async def run_blocking(func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a blocking store call in a thread, off the event loop."""
    return await asyncio.to_thread(func, *args, **kwargs)


def handled(
    method: Callable[[Any, Stream[Any, Any]], Coroutine[Any, Any, None]],
) -> Callable[[Any, Stream[Any, Any]], Coroutine[Any, Any, None]]:
    """Map CloudError to its gRPC status; log anything else and answer INTERNAL."""

    @functools.wraps(method)
    async def wrapper(self: Any, stream: Stream[Any, Any]) -> None:
        try:
            await method(self, stream)
        except CloudError as exc:
            raise GRPCError(exc.status, str(exc)) from None
        except GRPCError:
            raise
        except Exception as exc:
            log.exception("%s failed", method.__qualname__)
            raise GRPCError(
                Status.INTERNAL, f"{method.__name__} failed on the server: {type(exc).__name__}"
            ) from exc

    return wrapper

"""``connect``: Ray Client's per-client server that dies at birth (ray-project/ray#63202, seen
in this project's CI) is asked for again; any other failure is one clear error at once.

The race cannot be provoked on demand, so these drive ``connect`` with a stand-in for the
``ray`` module that fails the way Ray does (the message Ray raises, word for word).
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

from pipeline.cluster.ray_launcher import CLIENT_ATTEMPTS, connect
from pipeline.errors import ClusterError

DIED = RuntimeError(
    "Starting Ray client server failed. See ray_client_server_23000.err for detailed logs."
)


class FlakyRay:
    """``ray.init`` fails with ``errors`` in turn, then connects."""

    def __init__(self, errors: list[Exception]) -> None:
        self.errors = errors
        self.inits = 0
        self.shutdowns = 0

    def is_initialized(self) -> bool:
        return False

    def init(self, **kwargs: Any) -> None:
        self.inits += 1
        if self.errors:
            raise self.errors.pop(0)

    def shutdown(self) -> None:
        self.shutdowns += 1


@pytest.fixture
def address():
    with socket.socket() as listening:  # connect() first checks that the port answers
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        yield f"ray://127.0.0.1:{listening.getsockname()[1]}"


def test_a_client_server_that_died_at_birth_is_asked_for_again(address):
    ray = FlakyRay([DIED, ConnectionAbortedError("Initialization failure from server:\n...")])
    assert connect(ray, address) is True
    assert (ray.inits, ray.shutdowns) == (3, 2)


def test_it_gives_up_after_a_few_tries_with_the_address_in_the_error(address):
    ray = FlakyRay([DIED] * CLIENT_ATTEMPTS)
    with pytest.raises(ClusterError, match="cannot connect to the Ray cluster at 'ray://"):
        connect(ray, address)
    assert ray.inits == CLIENT_ATTEMPTS


def test_another_failure_is_not_retried(address):
    ray = FlakyRay([ValueError("version mismatch: the cluster runs Ray 2.9")])
    with pytest.raises(ClusterError, match="version mismatch"):
        connect(ray, address)
    assert ray.inits == 1

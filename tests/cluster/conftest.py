"""A real local Ray cluster for the cluster tests: a head and a second Ray node on loopback.

Both Ray nodes run on this machine (they share /dev/shm), but they are different Ray nodes, so
the placement plans tcp (with CURVE) between them: that is what these tests check. The head
carries the label ``site=a``; the second node ``site=b`` and a custom resource ``detector``.
Ray's health checks are made fast, so a Ray node that disappears is noticed within seconds.
"""

from __future__ import annotations

import gc
import socket
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

ray = pytest.importorskip("ray", reason="the cluster tests need the 'cluster' extra (ray)")
from ray.cluster_utils import Cluster  # noqa: E402

# the same fixtures as the one-machine tests: graphs in tmp folders, no leaked segment
from tests.integration.conftest import no_leaked_segments, write_graph  # noqa: E402, F401

HEALTH = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 500,
    "health_check_timeout_ms": 500,
    "health_check_failure_threshold": 3,
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    client_port = _free_port()
    # Ray's start-up drops the Ray Client server's log file handles unclosed: let that pass
    # here, not inside some test (every warning is an error in this suite)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 2,
                "labels": {"site": "a"},
                "include_dashboard": False,
                "ray_client_server_port": client_port,  # ray://127.0.0.1:PORT (Ray Client)
                "_system_config": HEALTH,
            },
        )
        gc.collect()
    cluster.client_address = f"ray://127.0.0.1:{client_port}"
    cluster.add_node(num_cpus=2, labels={"site": "b"}, resources={"detector": 1})
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()

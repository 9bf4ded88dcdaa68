"""A real local Ray cluster for the cluster tests: a head and a second Ray node on loopback.

Both Ray nodes run on this machine (they share /dev/shm), but they are different Ray nodes, so
the placement plans tcp (with CURVE) between them: that is what these tests check. The head
carries the label ``site=a``; the second node ``site=b`` and a custom resource ``detector``.
Ray's health checks are made fast, so a Ray node that disappears is noticed within seconds.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.transport.shm import SHM_DIR

ray = pytest.importorskip("ray", reason="the cluster tests need the 'cluster' extra (ray)")
from ray.cluster_utils import Cluster  # noqa: E402

T = "tests.integration.nodes_for_tests"

HEALTH = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 500,
    "health_check_timeout_ms": 500,
    "health_check_failure_threshold": 3,
}


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 2,
            "labels": {"site": "a"},
            "include_dashboard": False,
            "_system_config": HEALTH,
        },
    )
    cluster.add_node(num_cpus=2, labels={"site": "b"}, resources={"detector": 1})
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def segments() -> set[str]:
    return {p.name for p in SHM_DIR.glob(f"pipeline-{os.getpid()}-*")}


@pytest.fixture(autouse=True)
def no_leaked_segments() -> Iterator[None]:
    before = segments()
    yield
    leaked = segments() - before
    assert not leaked, f"shared-memory segments left behind: {sorted(leaked)}"


@pytest.fixture
def write_graph(tmp_path: Path):
    def write(text: str, name: str = "graph.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).replace("{T}", T).replace("{tmp}", str(tmp_path)))
        return path

    return write

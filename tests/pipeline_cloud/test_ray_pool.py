"""The Ray workers' autoscaling policy, and ``--workers`` errors at start (exit 2, one line)."""

from __future__ import annotations

import socket
import sys

import pytest

from pipeline.cli import main
from pipeline_cloud.ray_pool import Scaling, WorkersError, decide, parse_replicas

ELASTIC = Scaling(min_replicas=1, max_replicas=3, queue_per_replica=2, idle_s=10)


@pytest.mark.parametrize(
    ("replicas", "starting", "pending", "idle_s", "step"),
    [
        (0, 0, 0, 0.0, 1),  # below the minimum: start one, even with nothing to do
        (0, 1, 5, 0.0, 0),  # ... but one is starting already
        (1, 0, 2, 0.0, 0),  # 2 in flight on 1 replica: at the threshold, not over it
        (1, 0, 3, 0.0, 1),  # over it: one more
        (2, 0, 5, 0.0, 1),  # 2.5 per replica
        (2, 0, 4, 0.0, 0),
        (2, 1, 50, 0.0, 0),  # one at a time: wait for the starting one
        (3, 0, 50, 0.0, 0),  # at the maximum
        (3, 0, 0, 9.9, 0),  # idle, but not for long enough
        (3, 0, 0, 10.0, -1),  # idle long enough: one fewer
        (1, 0, 0, 99.0, 0),  # never below the minimum
        (2, 0, 1, 99.0, 0),  # busy: keep them
        (4, 0, 9, 0.0, -1),  # over the maximum (lowered): one fewer
    ],
)
def test_the_policy_scales_up_by_queue_depth_and_down_when_idle(
    replicas: int, starting: int, pending: int, idle_s: float, step: int
) -> None:
    assert decide(ELASTIC, replicas, starting, pending, idle_s) == step


def test_a_fixed_count_never_scales() -> None:
    fixed = Scaling(2, 2)
    assert decide(fixed, 1, 0, 0, 0.0) == 1  # a lost replica is replaced
    assert [decide(fixed, 2, 0, p, i) for p, i in [(0, 1e9), (100, 0.0)]] == [0, 0]


def test_replica_counts_parse_and_refuse_nonsense() -> None:
    assert parse_replicas("2") == (2, 2)
    assert parse_replicas("1:4") == (1, 4)
    for bad in ("0", "3:1", "two", "1:"):
        with pytest.raises(WorkersError, match="replicas"):
            parse_replicas(bad)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def serve(capsys: pytest.CaptureFixture[str], tmp_path, *extra: str) -> tuple[int, str]:
    code = main(
        ["cloud", "serve", "--data", str(tmp_path / "data"), "--insecure",
         "--address", "127.0.0.1:0", *extra]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def test_an_unreachable_ray_cluster_exits_2_naming_the_address(capsys, tmp_path) -> None:
    pytest.importorskip("ray", reason="the cluster extra (ray) is not installed")
    address = f"ray://127.0.0.1:{_closed_port()}"
    code, err = serve(capsys, tmp_path, "--workers", address)
    assert code == 2
    assert err.startswith(f"error: cannot connect to the Ray cluster at '{address}': ")
    assert "ray start --head" in err


def test_ray_missing_exits_2_with_the_install_hint(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets without the extra
    code, err = serve(capsys, tmp_path, "--workers", "auto")
    assert code == 2
    assert "pip install 'edge-vision-pipeline[cluster]'" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--replicas", "2"], "--replicas is for Ray workers: add --workers ray://"),
        (["--workers", "4", "--scale-up-queue", "3"], "--scale-up-queue is for Ray workers"),
        (["--workers", "banana"], "neither a number of worker processes nor a Ray address"),
        (["--workers", "0"], "--workers must be at least 1"),
        (["--workers", "auto", "--replicas", "3:1"], "replicas '3:1': need 1 <= MIN <= MAX"),
        (["--workers", "auto", "--model-replicas", "x"], "must be NAME=N or NAME=MIN:MAX"),
    ],
)
def test_bad_worker_options_exit_2_before_anything_starts(capsys, tmp_path, args, message):
    code, err = serve(capsys, tmp_path, *args)
    assert code == 2
    assert message in err
    assert not (tmp_path / "data").exists()

"""The node's Ray actor, as a plain object (no cluster): the run's lock on its machine."""

from __future__ import annotations

from pipeline.cluster.ray_launcher import NodeHost
from pipeline.transport.shm import lock_is_held


def test_the_first_actor_on_a_machine_holds_the_runs_lock_until_cleanup(tmp_path):
    path = tmp_path / "pipeline-1-abc.lock"
    first, second = NodeHost("a"), NodeHost("b")
    first._hold_run_lock(path)
    assert lock_is_held(path) is True  # a sweep here sees a live run
    second._hold_run_lock(path)  # the file is there: nothing to do
    assert second.lock is None
    second.cleanup()
    assert lock_is_held(path) is True
    first.cleanup()
    assert lock_is_held(path) is None  # gone with the run
    assert list(tmp_path.iterdir()) == []  # no hidden file left behind

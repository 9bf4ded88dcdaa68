"""A full /dev/shm is a clear error naming the output, its edges, the bytes needed and the
bytes free, not a SIGBUS: segments are reserved up front (posix_fallocate).

The run happens in a mount namespace of its own with a 64 MiB /dev/shm, as Docker gives by
default (``unshare``, as root); the machine's /dev/shm is not touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

GRAPH = """
    graph: full
    nodes:
      - {id: camera, node: synthetic, params: {width: 1920, height: 1080, fps: 0, frames: 0}}
      - id: sink                    # slow: the 16 frames in flight each hold a slot
        node: tests.integration.nodes_for_tests:Relay
        params: {delay_ms: 200}
        inputs: {frames: {from: camera/frames, queue: 16}}
"""


def test_a_full_dev_shm_is_a_clear_error_not_a_sigbus(tmp_path: Path):
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs unshare(1) and root to give the run a 64 MiB /dev/shm of its own")
    graph = tmp_path / "g.yaml"
    graph.write_text(textwrap.dedent(GRAPH))
    script = (
        "mount -t tmpfs -o size=64m tmpfs /dev/shm && "
        f"exec {sys.executable} -m pipeline.cli run {graph} --no-live"
    )
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "SIGBUS" not in out
    assert "error: node 'camera' failed in process()" in out
    assert "output 'frames' (to sink.frames)" in out
    assert "cannot reserve 6221824 bytes of shared memory in /dev/shm" in out
    assert "bytes free of 67108864" in out
    # and `pipeline check` said so before: 36 slots of 1080p do not fit in 64 MiB
    check = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            f"mount -t tmpfs -o size=64m tmpfs /dev/shm && "
            f"exec {sys.executable} -m pipeline.cli check {graph}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "warning: this graph may need up to" in check.stdout + check.stderr

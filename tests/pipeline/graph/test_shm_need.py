"""`pipeline check` estimates a graph's shared memory from frame sizes and queues, and warns,
located, when /dev/shm does not have that much free."""

from __future__ import annotations

import textwrap
from collections import namedtuple

import pytest

from pipeline.graph import shm_need as module
from pipeline.graph.load import check_graph

Usage = namedtuple("Usage", "total used free")
MIB = 1024 * 1024


@pytest.fixture
def docker_shm(monkeypatch):
    """/dev/shm as Docker gives it by default: 64 MiB."""
    monkeypatch.setattr(module.shutil, "disk_usage", lambda _path: Usage(64 * MIB, 0, 64 * MIB))


def graph_file(tmp_path, text: str):
    path = tmp_path / "g.yaml"
    path.write_text(textwrap.dedent(text))
    return path


HUGE = """
    graph: huge
    nodes:
      - {id: camera, node: synthetic, params: {width: 8192, height: 8192, fps: 0, frames: 1}}
      - id: grey
        node: color
        params: {to: gray}
        inputs: {frames: {from: camera/frames, queue: 1024}}
      - {id: sink, node: discard, inputs: {messages: grey/converted}}
"""


def test_a_huge_graph_is_warned_about_at_its_biggest_pool(tmp_path, docker_shm):
    graph, issues = check_graph(graph_file(tmp_path, HUGE))
    assert graph is not None  # a warning, not an error: the machine may change
    (warning,) = [i for i in issues if i.severity == "warning"]
    assert (warning.line, warning.col) == (4, 10)  # node 'camera'
    # 2 * (2 + 1024) slots of 8192 * 8192 * 3 bytes at the camera, 2 * (2 + 4) after it
    assert "may need up to 396288 MiB of shared memory" in warning.message
    assert "has 64 MiB free (of 64)" in warning.message
    assert any(
        "'camera' output 'frames': up to 2052 slots of 192.0 MiB" in h for h in warning.hints
    )
    # the colour conversion sends frames as large as it receives
    assert any("'grey' output 'converted': up to 12 slots of 192.0 MiB" in h for h in warning.hints)


def test_a_graph_that_fits_is_not_warned_about(tmp_path, docker_shm):
    graph, issues = check_graph(
        graph_file(tmp_path, HUGE.replace("8192", "320").replace("queue: 1024", "queue: 4"))
    )
    assert graph is not None
    assert issues == []


def test_unknown_frame_sizes_count_nothing(tmp_path, docker_shm):
    _graph, issues = check_graph(
        graph_file(
            tmp_path,
            """
            graph: file
            nodes:
              - {id: camera, node: video_file, params: {path: any.mp4}}
              - id: sink
                node: discard
                inputs: {messages: {from: camera/frames, queue: 1024}}
            """,
        )
    )
    assert [i for i in issues if "shared memory" in i.message] == []


def test_the_estimate_is_what_the_pools_may_hold(tmp_path):
    graph, _ = check_graph(graph_file(tmp_path, HUGE.replace("8192", "100")))
    needs = {(n.node_id, n.port): (n.slots, n.frame_bytes) for n in module.shm_need(graph)}
    assert needs == {
        ("camera", "frames"): (2052, 100 * 100 * 3),
        ("grey", "converted"): (12, 30000),
    }

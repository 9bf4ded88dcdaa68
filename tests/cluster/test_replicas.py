"""A replicated detector on the cluster: one copy on each Ray node (Ray spreads them), the
frames spread over both across tcp, the detections merged back complete and in order."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from pipeline import load_graph, run_graph
from pipeline.cluster import RayLauncher

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.timeout(300),
]

FRAMES = 40

GRAPH = """
    graph: replicated
    nodes:
      - id: camera
        node: synthetic
        params: {width: 320, height: 240, fps: 0, frames: 40}
        placement: {labels: {site: a}}
      - id: faces
        node: detector
        params: {model: face_short_range}
        replicas: 2
        inputs: {frames: {from: camera/frames, queue: 2}}
        placement: {resources: {CPU: 1}}
      - id: dets
        node: jsonl
        params: {path: {tmp}/dets.jsonl}
        inputs: {messages: faces/detections}
        placement: {labels: {site: a}}
"""


def test_a_detector_with_two_replicas_runs_one_on_each_ray_node_results_in_order(
    ray_cluster, write_graph, tmp_path
):
    graph = load_graph(write_graph(GRAPH))
    launcher = RayLauncher(ray_cluster.address)
    result = run_graph(graph, launcher=launcher)
    assert result.exit_code == 0, result.error
    layout = launcher.layout
    assert layout is not None
    # Ray spread the copies: one on each Ray node, so one of them is across tcp
    assert layout.hosts["faces[0]"] != layout.hosts["faces[1]"]
    rows = [json.loads(line) for line in (tmp_path / "dets.jsonl").read_text().splitlines()]
    assert [r["seq"] for r in rows] == list(range(FRAMES))  # complete, in order
    received = Counter({k: result.stats[k].received for k in ("faces[0]", "faces[1]")})
    assert all(n > 0 for n in received.values()), received
    assert sum(received.values()) == result.stats["camera"].sent == FRAMES
    assert result.stats["dets"].received == FRAMES

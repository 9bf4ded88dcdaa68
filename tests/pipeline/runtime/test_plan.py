"""Planning a graph: every edge's queue, policy, transport, release batch, bind address and
name decided once, and a worker's config surviving the trip to its process."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline import load_graph
from pipeline.runtime.plan import WorkerConfig, plan_graph
from pipeline.transport.plan import EdgePlan, slot_pool_size

GRAPH = """
graph: plan
nodes:
  - {id: camera, node: synthetic, pace: fast, max_fps: 50}
  - id: small
    node: resize
    params: {width: 8, height: 8}
    inputs: {frames: {from: camera/frames, queue: 8}}
  - id: remote
    node: discard
    inputs: {messages: {from: camera/frames, queue: 2, when_full: drop_oldest, transport: tcp}}
  - {id: sink, node: discard, inputs: {messages: small/resized}}
"""


def test_every_edge_is_planned_once(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(GRAPH)
    plan = plan_graph(load_graph(path), tmp_path / "run")
    edges = {e.name: e for e in plan.edges()}
    assert sorted(edges) == [
        "camera/frames->remote.messages",
        "camera/frames->small.frames",
        "small/resized->sink.messages",
    ]
    lossless = edges["camera/frames->small.frames"]
    assert (lossless.queue, lossless.when_full, lossless.release_batch) == (8, "block", 4)
    assert lossless.bind == f"ipc://{tmp_path}/run/1-frames" and not lossless.tcp
    fresh = edges["camera/frames->remote.messages"]
    assert (fresh.release_batch, fresh.tcp, fresh.bind) == (1, True, "tcp://127.0.0.1:*")
    camera = plan.nodes[0]
    assert camera.is_source and (camera.pace, camera.max_fps) == ("fast", 50)
    (port,) = camera.outputs
    assert {e.name for e in port.edges} == {lossless.name, fresh.name}
    assert port.slots == slot_pool_size(port.edges) == 2 * (2 + 8 + 2 * 2)
    assert [e.name for e in plan.edges_from("camera")] == [lossless.name, fresh.name]


def test_a_worker_config_survives_json(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(GRAPH)
    plan = plan_graph(load_graph(path), tmp_path)
    for node in plan.nodes:
        cfg = WorkerConfig(node, "ipc:///tmp/control", "pipeline-1-abc", "DEBUG", "/tmp/s.json")
        assert WorkerConfig.from_wire(json.loads(json.dumps(cfg.to_wire()))) == cfg


def test_an_edge_plan_names_its_edge_like_the_logs():
    edge = EdgePlan("a", "out", "b", "in", 4, "block", "shm", 2, "ipc:///x")
    assert edge.name == "a/out->b.in" and edge.slots == 4
    assert EdgePlan.from_wire(edge.to_wire()) == edge

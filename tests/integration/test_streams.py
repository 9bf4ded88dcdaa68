"""A streams input: several upstreams into one node, round-robin, batched, routed back by
source (``Streams``, ``run_node`` and a real graph)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline import Frame, Input, Node, NodeParams, Output, load_graph, run_graph
from pipeline.errors import NodeDefinitionError
from pipeline.runtime.join import Streams
from pipeline.testing import make_frame, run_node


def test_streams_serve_round_robin_and_a_backlog_does_not_starve_the_others() -> None:
    streams: Streams[int] = Streams("frames", ["a", "b", "c"])
    for seq in range(5):
        streams.push("a", make_frame(8, 8, seq, source="a"), seq, 0.0)
    streams.push("c", make_frame(8, 8, 0, source="c"), 0, 0.0)
    streams.push("c", make_frame(8, 8, 1, source="c"), 1, 0.0)
    order = [(m.source, m.seq) for m, _ in streams.take(4)]
    assert order == [("a", 0), ("c", 0), ("a", 1), ("c", 1)]  # b (stalled) is skipped
    streams.push("b", make_frame(8, 8, 0, source="b"), 0, 0.0)
    assert [(m.source, m.seq) for m, _ in streams.take(2)] == [("a", 2), ("b", 0)]
    assert streams.waiting == 2 and not streams.all_ended
    for name in "abc":
        streams.end(name)
    assert len(streams.take(10)) == 2 and streams.all_ended


class Batches(Node):
    class Params(NodeParams):
        max_batch: int = 1

    frames = Input(Frame, streams=True)
    out = Output(Frame)

    def batching(self) -> tuple[int, float]:
        return (self.params.max_batch, 0.0)

    def process(self, frames: Frame) -> None:
        self.out.send(frames.replace(meta={"batch": 1}))

    def process_batch(self, frames: list[Frame]) -> None:  # type: ignore[override]
        for f in frames:
            self.out.send(f.replace(meta={"batch": len(frames)}))


def test_run_node_serves_a_streams_input_per_source_round_robin_and_in_batches() -> None:
    frames = [make_frame(8, 8, seq, source=src) for src in ("cam1", "cam2") for seq in range(3)]
    run = run_node(Batches, {}, {"frames": frames})
    assert [(m.source, m.seq) for m in run.sent["out"]] == [
        ("cam1", 0), ("cam2", 0), ("cam1", 1), ("cam2", 1), ("cam1", 2), ("cam2", 2),
    ]  # fmt: skip
    assert run.calls.count("process") == 6
    batched = run_node(Batches, {"max_batch": 2}, {"frames": frames})
    assert [m.meta["batch"] for m in batched.sent["out"]] == [2] * 6
    assert batched.calls.count("process") == 3
    assert batched.stats.inputs["frames"].received == 6


def test_a_streams_input_must_be_the_only_input() -> None:
    with pytest.raises(NodeDefinitionError, match="a streams input must be the node's only input"):

        class Both(Node):
            frames = Input(Frame, streams=True)
            other = Input(Frame)

            def process(self, frames: Frame, other: Frame) -> None:
                pass


def rows(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.integration
@pytest.mark.parametrize("max_batch", [1, 3])
def test_three_cameras_into_one_node_with_results_routed_back_per_camera(
    write_graph: Any, tmp_path: Path, max_batch: int
) -> None:
    # cam3 is slow (a camera with a poor link): it must not hold the others up
    graph = write_graph(f"""
        graph: streams
        nodes:
          - {{id: cam1, node: synthetic, params: {{width: 64, height: 48, fps: 0, frames: 60}}}}
          - {{id: cam2, node: synthetic, params: {{width: 64, height: 48, fps: 0, frames: 60}}}}
          - {{id: cam3, node: synthetic, params: {{width: 64, height: 48, fps: 20, frames: 10}}}}
          - id: shared
            node: {{T}}:StreamsLog
            params: {{path: {{tmp}}/shared.jsonl, max_batch: {max_batch}, batch_timeout_ms: 5}}
            inputs:
              frames: [cam1/frames, cam2/frames, {{from: cam3/frames, queue: 2}}]
          - id: rec1
            node: {{T}}:Recorder
            params: {{path: {{tmp}}/rec1.jsonl}}
            inputs: {{frames: {{from: shared/out, source: cam1}}}}
          - id: rec3
            node: {{T}}:Recorder
            params: {{path: {{tmp}}/rec3.jsonl}}
            inputs: {{frames: {{from: shared/out, source: cam3}}}}
    """)
    result = run_graph(load_graph(graph))
    assert result.exit_code == 0, result.error
    calls = rows(tmp_path / "shared.jsonl")
    got = [tuple(item) for call in calls for item in call]
    for cam, n in (("cam1", 60), ("cam2", 60), ("cam3", 10)):
        assert [seq for src, seq in got if src == cam] == list(range(n))  # each in order
    # the fast cameras were not held to the slow one's pace: most of their frames were
    # served before cam3's last
    last3 = max(i for i, (src, _) in enumerate(got) if src == "cam3")
    assert sum(src != "cam3" for src, _ in got[:last3]) >= 100
    assert max(len(c) for c in calls) <= max_batch
    if max_batch > 1:
        assert any(len(c) > 1 for c in calls)
    # routed back: each recorder got its own camera's frames and nothing else
    assert [r["seq"] for r in rows(tmp_path / "rec1.jsonl")] == list(range(60))
    assert [r["seq"] for r in rows(tmp_path / "rec3.jsonl")] == list(range(10))
    assert result.stats["shared"].inputs["frames"].received == 130
    assert result.stats["rec1"].inputs["frames"].received == 60


def test_a_partial_batch_waits_while_frames_arrive_and_goes_when_they_pause() -> None:
    from pipeline.runtime.lifecycle import BATCH_QUIET_S, NodeDriver
    from pipeline.runtime.stats import StatsCollector

    node = Batches(Batches.Params(max_batch=4), node_id="b", ports={"out": _Keep()})
    driver = NodeDriver(node, StatsCollector("b", ["frames"], ["out"]), connected=["frames"])
    assert driver.open()
    driver.batch = (4, 1.0)  # a long timeout: only the pause makes the batch go
    streams: Streams[None] = Streams("frames", ["a", "b", "c"])
    driver.push_stream(streams, "a", make_frame(8, 8, 0, source="a"), None)
    driver.push_stream(streams, "b", make_frame(8, 8, 0, source="b"), None)
    assert driver.drain_streams(streams) == 0  # c may still come: wait a little
    assert driver.batch_due is not None
    assert driver.batch_due - time.monotonic() <= BATCH_QUIET_S
    while time.monotonic() < driver.batch_due:
        pass  # the pause
    assert driver.drain_streams(streams) == 2
    assert [m.meta["batch"] for m in node.out.sent] == [2, 2]  # type: ignore[attr-defined]


class _Keep:
    def __init__(self) -> None:
        self.sent: list[Frame] = []

    def send(self, message: Frame) -> None:
        self.sent.append(message)

    def allocate(self, shape: Any, dtype: Any = None) -> Any:
        raise NotImplementedError

    def end_call(self) -> None:
        pass

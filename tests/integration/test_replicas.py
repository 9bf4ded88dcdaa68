"""``replicas: N`` in real graphs on one machine: the copies are processes of their own, each
frame is processed by one copy, and their results reach the next node once each, in seq
order; joins downstream (and a replicated join) stay right; a failure names the copy."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from pipeline import load_graph, run_graph

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leaked_segments")]

FRAMES = 80

SPREAD = """
    graph: spread
    nodes:
      - {id: camera, node: synthetic, params: {width: 64, height: 48, fps: 0, frames: 80}}
      - id: tagger
        node: {T}:SlowTagger
        params: {delay_ms: 5, skip: SKIP, silent_replica: SILENT}
        replicas: 2
        inputs: {frames: {from: camera/frames, queue: 2}}
      - id: dets
        node: jsonl
        params: {path: {tmp}/dets.jsonl}
        inputs: {messages: tagger/detections}
"""


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def spread_graph(write_graph, skip: list[int] | None = None, silent: int = -1) -> Path:
    text = SPREAD.replace("SKIP", json.dumps(skip or [])).replace("SILENT", str(silent))
    return write_graph(text)


def test_each_frame_is_processed_by_one_copy_and_the_results_arrive_once_in_order(
    write_graph, tmp_path
):
    result = run_graph(load_graph(spread_graph(write_graph)))
    assert result.exit_code == 0, result.error
    rows = read_jsonl(tmp_path / "dets.jsonl")
    assert [r["seq"] for r in rows] == list(range(FRAMES))
    by_copy = Counter(r["detections"][0]["label"] for r in rows)
    assert set(by_copy) == {"r0of2", "r1of2"}, by_copy  # both copies worked
    assert min(by_copy.values()) >= FRAMES // 8
    # each copy is its own node in the statistics; what the camera sent, the copies got
    stats = result.stats
    copies = [stats["tagger[0]"], stats["tagger[1]"]]
    assert [c.received for c in copies] == [by_copy["r0of2"], by_copy["r1of2"]]
    assert sum(c.received for c in copies) == stats["camera"].sent == FRAMES
    assert [c.sent for c in copies] == [c.received for c in copies]
    assert stats["dets"].received == FRAMES and stats["dets"].dropped == 0


def test_a_seq_a_copy_sends_nothing_for_does_not_hold_the_merge(write_graph, tmp_path):
    result = run_graph(load_graph(spread_graph(write_graph, skip=[3, 4, 40])))
    assert result.exit_code == 0, result.error
    seqs = [r["seq"] for r in read_jsonl(tmp_path / "dets.jsonl")]
    assert seqs == [s for s in range(FRAMES) if s not in (3, 4, 40)]
    assert result.stats["dets"].dropped == 0  # nothing late: the next result moved it on


def test_a_copy_that_never_answers_is_passed_over_and_the_graph_ends(write_graph, tmp_path):
    result = run_graph(load_graph(spread_graph(write_graph, silent=1)))
    assert result.exit_code == 0, result.error
    seqs = [r["seq"] for r in read_jsonl(tmp_path / "dets.jsonl")]
    assert seqs == sorted(seqs) and len(seqs) == result.stats["tagger[0]"].sent > 0


JOINED = """
    graph: joined
    nodes:
      - {id: camera, node: synthetic, params: {width: 96, height: 64, fps: 0, frames: 60}}
      - id: tagger
        node: {T}:SlowTagger
        params: {delay_ms: 3}
        replicas: 2
        inputs: {frames: camera/frames}
      - id: check
        node: {T}:JoinCheck
        params: {path: {tmp}/join.jsonl}
        inputs: {frames: camera/frames, detections: tagger/detections}
"""

# A replicated join fed by unreplicated nodes (fed by a replicated node: CHAINED_JOIN below).
REPLICATED_JOIN = """
    graph: replicated_join
    nodes:
      - {id: camera, node: synthetic, params: {width: 96, height: 64, fps: 0, frames: 60}}
      - id: tagger
        node: {T}:SlowTagger
        params: {delay_ms: 1}
        inputs: {frames: camera/frames}
      - id: overlay
        node: overlay
        replicas: 2
        inputs: {frames: camera/frames, detections: tagger/detections}
      - id: shown
        node: {T}:Recorder
        params: {path: {tmp}/shown.jsonl}
        inputs: {frames: overlay/annotated}
"""


def test_a_join_downstream_of_copies_stays_right(write_graph, tmp_path):
    result = run_graph(load_graph(write_graph(JOINED)))
    assert result.exit_code == 0, result.error
    joined = read_jsonl(tmp_path / "join.jsonl")
    assert [r["frame_seq"] for r in joined] == list(range(60))
    assert all(r["match"] and r["frame_seq"] == r["det_seq"] for r in joined)
    assert result.stats["check"].dropped == 0


def test_a_failure_in_a_copy_names_the_copy(write_graph, tmp_path):
    path = write_graph(
        """
        graph: fails
        nodes:
          - {id: camera, node: synthetic, params: {width: 32, height: 32, fps: 0, frames: 40}}
          - id: relay
            node: {T}:Relay
            params: {fail_at: 7}
            replicas: 2
            inputs: {frames: camera/frames}
          - id: rec
            node: {T}:Recorder
            params: {path: {tmp}/rec.jsonl}
            inputs: {frames: relay/out}
        """
    )
    result = run_graph(load_graph(path))
    assert result.exit_code == 1
    assert result.error is not None
    assert result.error.node_id in ("relay[0]", "relay[1]")
    assert "seq 7" in str(result.error) and "boom at 7" in str(result.error)


def test_a_streams_input_fed_by_copies_sees_one_ordered_stream(write_graph, tmp_path):
    path = write_graph(
        """
        graph: streams
        nodes:
          - {id: cam1, node: synthetic, params: {width: 32, height: 32, fps: 0, frames: 50}}
          - {id: cam2, node: synthetic, params: {width: 32, height: 32, fps: 0, frames: 30}}
          - id: relay
            node: {T}:Relay
            params: {delay_ms: 2}
            replicas: 3
            inputs: {frames: cam1/frames}
          - id: log
            node: {T}:StreamsLog
            params: {path: {tmp}/log.jsonl}
            inputs: {frames: [relay/out, cam2/frames]}
          - id: rec
            node: {T}:Recorder
            params: {path: {tmp}/rec.jsonl}
            inputs: {frames: log/out}
        """
    )
    result = run_graph(load_graph(path))
    assert result.exit_code == 0, result.error
    calls = [pair for line in read_jsonl(tmp_path / "log.jsonl") for pair in line]
    assert [seq for source, seq in calls if source == "cam1"] == list(range(50))
    assert [seq for source, seq in calls if source == "cam2"] == list(range(30))
    assert sum(result.stats[f"relay[{k}]"].received for k in range(3)) == 50


# A replicated node fed straight by another (``pipeline.runtime.replicas``: watermarks): each
# copy of ``tagger`` merges what both copies of ``relay`` sent it, and hears from a relay copy
# that sent a seq to its sibling that nothing below that seq comes from it.
CHAIN = """
    graph: chain
    nodes:
      - {id: camera, node: synthetic, params: {width: 64, height: 48, fps: 0, frames: 80}}
      - id: relay
        node: {T}:Relay
        params: {delay_ms: 3}
        replicas: 2
        inputs: {frames: {from: camera/frames, queue: 2, when_full: WHEN}}
      - id: tagger
        node: {T}:SlowTagger
        params: {delay_ms: 3}
        replicas: 2
        inputs: {frames: {from: relay/out, queue: 2, transport: TRANSPORT}}
      - id: dets
        node: jsonl
        params: {path: {tmp}/dets.jsonl}
        inputs: {messages: tagger/detections}
"""


def no_merge_waited(stats, nodes: list[str]) -> None:
    """No merge waited out its patience for a seq that went elsewhere, none came late."""
    for node in nodes:
        counters = stats[node].counters
        assert counters.get("merge_timeouts", 0) == 0, (node, counters)
        assert counters.get("late_results", 0) == 0, (node, counters)


@pytest.mark.parametrize("transport", ["shm", "zmq", "tcp"])
def test_a_replicated_node_fed_by_another_gets_every_frame_once_in_order(
    write_graph, tmp_path, monkeypatch, transport
):
    if transport == "zmq":  # same-host edges through ZeroMQ (watermarks as messages)
        monkeypatch.setenv("PIPELINE_FAST_PATH", "0")
    text = CHAIN.replace("WHEN", "block").replace(
        "TRANSPORT", "tcp" if transport == "tcp" else "shm"
    )
    result = run_graph(load_graph(write_graph(text)))
    assert result.exit_code == 0, result.error
    rows = read_jsonl(tmp_path / "dets.jsonl")
    assert [r["seq"] for r in rows] == list(range(FRAMES))
    by_copy = Counter(r["detections"][0]["label"] for r in rows)
    assert set(by_copy) == {"r0of2", "r1of2"}, by_copy  # both tagger copies worked
    stats = result.stats
    assert sum(stats[f"relay[{k}]"].received for k in range(2)) == FRAMES
    assert sum(stats[f"tagger[{k}]"].received for k in range(2)) == FRAMES
    assert all(stats[f"relay[{k}]"].received > 0 for k in range(2))
    no_merge_waited(stats, ["tagger[0]", "tagger[1]", "dets"])
    # the relay copies told the tagger copies about the seqs sent to the other
    assert sum(stats[f"relay[{k}]"].counters.get("watermarks_sent", 0) for k in range(2)) > 0


def test_drops_before_a_chain_of_replicated_nodes_hold_no_merge(write_graph, tmp_path):
    text = CHAIN.replace("WHEN", "drop_newest").replace("TRANSPORT", "shm")
    result = run_graph(load_graph(write_graph(text)))
    assert result.exit_code == 0, result.error
    seqs = [r["seq"] for r in read_jsonl(tmp_path / "dets.jsonl")]
    stats = result.stats
    dropped = stats["camera"].outputs["frames"].dropped
    assert dropped > 0  # the camera is far faster than the relay copies
    assert seqs == sorted(set(seqs)) and len(seqs) == FRAMES - dropped
    no_merge_waited(stats, ["tagger[0]", "tagger[1]", "dets"])


# Frames and the detections of a replicated tagger joined by a replicated overlay: each seq
# goes to overlay copy seq mod 2, so a tagger copy that got only odd seqs never sends overlay[0]
# a message at all; without watermarks overlay[0]'s merge would wait out its patience.
CHAINED_JOIN = REPLICATED_JOIN.replace("graph: replicated_join", "graph: chained_join").replace(
    "params: {delay_ms: 1}\n", "params: {delay_ms: 2}\n        replicas: 2\n"
)
assert CHAINED_JOIN.count("replicas: 2") == 2


@pytest.mark.parametrize("fed_by", ["one tagger", "tagger copies"])
def test_a_replicated_join_stays_right(write_graph, tmp_path, fed_by):
    graph = REPLICATED_JOIN if fed_by == "one tagger" else CHAINED_JOIN
    result = run_graph(load_graph(write_graph(graph)))
    assert result.exit_code == 0, result.error
    # the overlay's copies join frames and detections: each seq to copy seq mod 2
    shown = read_jsonl(tmp_path / "shown.jsonl")
    assert [r["seq"] for r in shown] == list(range(60))
    stats = result.stats
    assert stats["overlay[0]"].calls == stats["overlay[1]"].calls == 30
    assert stats["overlay[0]"].dropped == stats["overlay[1]"].dropped == 0
    no_merge_waited(stats, ["overlay[0]", "overlay[1]", "shown"])


def test_drops_before_a_replicated_join_fed_by_a_replicated_node_hold_no_merge(
    write_graph, tmp_path
):
    text = CHAINED_JOIN.replace(
        "params: {delay_ms: 2}\n        replicas: 2\n        inputs: {frames: camera/frames}",
        "params: {delay_ms: 3}\n        replicas: 2\n"
        "        inputs: {frames: {from: camera/frames, queue: 1, when_full: drop_newest}}",
    )
    assert "drop_newest" in text
    result = run_graph(load_graph(write_graph(text)))
    assert result.exit_code == 0, result.error
    stats = result.stats
    tagged = sum(stats[f"tagger[{k}]"].outputs["detections"].sent for k in range(2))
    assert stats["camera"].outputs["frames"].dropped > 0 and 0 < tagged < 60
    shown = [r["seq"] for r in read_jsonl(tmp_path / "shown.jsonl")]
    # a frame whose detections were dropped has no partner: the join drops it
    assert shown == sorted(set(shown)) and len(shown) == tagged
    no_merge_waited(stats, ["overlay[0]", "overlay[1]", "shown"])

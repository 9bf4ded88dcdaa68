"""Whole graphs in real processes over real ZeroMQ sockets and shared memory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline import NodeOpenError, NodeProcessError, load_graph, run_graph
from pipeline.testing import run_node
from pipeline_nodes.sources.synthetic import SyntheticSource

pytestmark = pytest.mark.integration


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def expected_sums(n: int, width: int, height: int) -> list[int]:
    run = run_node(SyntheticSource, {"width": width, "height": height, "fps": 0, "frames": n})
    return [int(f.image.sum(dtype=np.uint64)) for f in run.sent["frames"]]


def test_block_delivers_every_frame_in_order_with_the_right_pixels(write_graph, tmp_path):
    graph = write_graph("""
        graph: three_nodes
        nodes:
          - {id: camera, node: synthetic, params: {width: 320, height: 240, fps: 0, frames: 150}}
          - id: relay
            node: {T}:Relay
            params: {delay_ms: 1}
            inputs: {frames: {from: camera/frames, queue: 2, when_full: block}}
          - id: rec
            node: {T}:Recorder
            params: {path: {tmp}/rec.jsonl}
            inputs: {frames: relay/out}
    """)
    result = run_graph(load_graph(graph), stats_json=tmp_path / "stats.json")
    assert result.exit_code == 0, result.error
    rows = read_jsonl(tmp_path / "rec.jsonl")
    assert [r["seq"] for r in rows] == list(range(150))
    assert [r["sum"] for r in rows] == expected_sums(150, 320, 240)
    assert not any(r["writeable"] for r in rows)  # inputs are read-only views
    stats = json.loads((tmp_path / "stats.json").read_text())["nodes"]
    assert stats["relay"]["inputs"]["frames"]["dropped"] == 0
    assert stats["relay"]["inputs"]["frames"]["queue_peak"] <= 2
    assert stats["rec"]["inputs"]["frames"]["received"] == 150
    assert stats["camera"]["outputs"]["frames"]["sent"] == 150
    # the camera runs flat out into a 1 ms relay: back-pressure held it back, and says so
    assert stats["camera"]["outputs"]["frames"]["blocked_s"] > 0.05
    assert (tmp_path / "rec.jsonl.closed").exists()


def test_drop_oldest_counts_drops_and_the_slow_consumer_sees_fresh_frames(write_graph, tmp_path):
    graph = write_graph("""
        graph: slow_consumer
        nodes:
          - {id: camera, node: synthetic, params: {width: 64, height: 48, fps: 500, frames: 400}}
          - id: slow
            node: {T}:Recorder
            params: {path: {tmp}/slow.jsonl, delay_ms: 20}
            inputs: {frames: {from: camera/frames, queue: 1, when_full: drop_oldest}}
          - id: fast
            node: {T}:Recorder
            params: {path: {tmp}/fast.jsonl}
            inputs: {frames: {from: camera/frames, queue: 4}}
    """)
    result = run_graph(load_graph(graph))
    assert result.exit_code == 0, result.error
    slow = [r["seq"] for r in read_jsonl(tmp_path / "slow.jsonl")]
    fast = [r["seq"] for r in read_jsonl(tmp_path / "fast.jsonl")]
    assert fast == list(range(400))  # the slow consumer did not slow or starve the other
    assert slow == sorted(slow)
    assert len(slow) < 200
    assert slow[-1] == 399  # what waited when the stream ended is delivered, not lost
    stats = result.stats["slow"].inputs["frames"]
    assert stats.received == len(slow)
    assert stats.dropped == 400 - len(slow)  # every frame is delivered or counted
    # fresh: the consumer skips ahead instead of working through a backlog
    gaps = np.diff(slow)
    assert np.median(gaps) >= 3


def test_drop_newest_counts_drops(write_graph, tmp_path):
    graph = write_graph("""
        graph: drop_newest
        nodes:
          - {id: camera, node: synthetic, params: {width: 64, height: 48, fps: 500, frames: 300}}
          - id: slow
            node: {T}:Recorder
            params: {path: {tmp}/slow.jsonl, delay_ms: 10}
            inputs: {frames: {from: camera/frames, queue: 2, when_full: drop_newest}}
    """)
    result = run_graph(load_graph(graph))
    assert result.exit_code == 0, result.error
    slow = [r["seq"] for r in read_jsonl(tmp_path / "slow.jsonl")]
    stats = result.stats["slow"].inputs["frames"]
    assert 0 < len(slow) < 300
    assert stats.dropped == 300 - len(slow)
    assert slow[:2] == [0, 1]  # the first ones are kept, the new ones dropped


def test_fan_out_delivers_everything_to_both_consumers(write_graph, tmp_path):
    graph = write_graph("""
        graph: fan_out
        nodes:
          - {id: camera, node: synthetic, params: {width: 160, height: 120, fps: 0, frames: 100}}
          - {id: a, node: {T}:Recorder, params: {path: {tmp}/a.jsonl}, inputs: {frames: camera/frames}}
          - {id: b, node: {T}:Recorder, params: {path: {tmp}/b.jsonl, delay_ms: 2},
             inputs: {frames: camera/frames}}
    """)
    result = run_graph(load_graph(graph))
    assert result.exit_code == 0, result.error
    want = expected_sums(100, 160, 120)
    for name in ("a", "b"):
        rows = read_jsonl(tmp_path / f"{name}.jsonl")
        assert [r["seq"] for r in rows] == list(range(100))
        assert [r["sum"] for r in rows] == want


def test_fan_in_joins_inputs_on_seq(write_graph, tmp_path):
    graph = write_graph("""
        graph: fan_in
        nodes:
          - {id: camera, node: synthetic, params: {width: 96, height: 64, fps: 0, frames: 80}}
          - {id: tag, node: {T}:Tagger, inputs: {frames: camera/frames}}
          - id: join
            node: {T}:JoinCheck
            params: {path: {tmp}/join.jsonl}
            inputs:
              frames: camera/frames
              detections: tag/detections
    """)
    result = run_graph(load_graph(graph))
    assert result.exit_code == 0, result.error
    rows = read_jsonl(tmp_path / "join.jsonl")
    assert [r["frame_seq"] for r in rows] == list(range(80))
    assert all(r["frame_seq"] == r["det_seq"] and r["match"] for r in rows)


def test_tcp_transport_moves_the_bytes(write_graph, tmp_path):
    graph = write_graph("""
        graph: tcp_edge
        nodes:
          - {id: camera, node: synthetic, params: {width: 320, height: 240, fps: 0, frames: 60}}
          - id: rec
            node: {T}:Recorder
            params: {path: {tmp}/rec.jsonl}
            inputs: {frames: {from: camera/frames, transport: tcp}}
          - id: also_shm
            node: {T}:Recorder
            params: {path: {tmp}/shm.jsonl}
            inputs: {frames: camera/frames}
    """)
    result = run_graph(load_graph(graph))
    assert result.exit_code == 0, result.error
    want = expected_sums(60, 320, 240)
    for name in ("rec", "shm"):
        rows = read_jsonl(tmp_path / f"{name}.jsonl")
        assert [r["sum"] for r in rows] == want
        assert not any(r["writeable"] for r in rows)


def test_end_of_stream_drains_a_chain(write_graph, tmp_path):
    graph = write_graph("""
        graph: drain
        nodes:
          - {id: camera, node: synthetic, params: {width: 64, height: 48, fps: 0, frames: 40}}
          - {id: r1, node: {T}:Relay, params: {delay_ms: 3}, inputs: {frames: camera/frames}}
          - {id: r2, node: {T}:Relay, params: {delay_ms: 3}, inputs: {frames: r1/out}}
          - {id: rec, node: {T}:Recorder, params: {path: {tmp}/rec.jsonl}, inputs: {frames: r2/out}}
    """)
    result = run_graph(load_graph(graph))
    assert result.exit_code == 0
    assert [r["seq"] for r in read_jsonl(tmp_path / "rec.jsonl")] == list(range(40))
    assert {s.state for s in result.stats.values()} == {"closed"}


def test_node_exception_stops_the_graph_and_names_node_method_and_seq(write_graph, tmp_path):
    graph = write_graph("""
        graph: failing
        nodes:
          - {id: camera, node: synthetic, params: {width: 64, height: 48, fps: 200, frames: 0}}
          - id: bad
            node: {T}:Relay
            params: {fail_at: 10, marker: {tmp}/bad}
            inputs: {frames: camera/frames}
          - {id: sink, node: discard, inputs: {messages: bad/out}}
    """)
    import io

    out = io.StringIO()
    result = run_graph(load_graph(graph), out=out)
    assert result.exit_code == 1
    text = out.getvalue()
    first = text.splitlines()[0]
    assert first == (
        "error: node 'bad' failed in process() on seq 10 from camera: ValueError: boom at 10"
    )
    assert "Traceback (most recent call last)" in text
    assert 'raise ValueError(f"boom at {frames.seq}")' in text
    assert (tmp_path / "bad.closed").exists()  # close() still ran after the error
    error = result.error
    assert isinstance(error, NodeProcessError)
    assert (error.node_id, error.method, error.seq, error.source) == (
        "bad",
        "process",
        10,
        "camera",
    )
    assert str(error) == first.removeprefix("error: ")


def test_a_message_of_the_wrong_type_is_refused_at_send_in_the_sender(write_graph):
    graph = write_graph("""
        graph: wrong_type
        nodes:
          - {id: camera, node: synthetic, params: {width: 64, height: 48, fps: 0, frames: 5}}
          - {id: liar, node: "{T}:SendsWrongType", inputs: {frames: camera/frames}}
          - {id: sink, node: discard, inputs: {messages: liar/out}}
    """)
    import io

    result = run_graph(load_graph(graph), out=io.StringIO())
    assert result.exit_code == 1
    assert str(result.error).startswith(
        "node 'liar' failed in process() on seq 0 from camera: "
        "TypeError: output 'out' sends Frame, got Detections"
    )


def test_an_exception_from_close_fails_the_run(write_graph):
    graph = write_graph("""
        graph: close_fails
        nodes:
          - {id: camera, node: synthetic, params: {width: 64, height: 48, fps: 0, frames: 5}}
          - {id: sink, node: "{T}:CloseFails", inputs: {frames: camera/frames}}
    """)
    import io

    result = run_graph(load_graph(graph), out=io.StringIO())
    assert result.exit_code == 1
    assert str(result.error) == (
        "node 'sink' failed in close(): OSError: could not finalise the file"
    )
    assert result.stats["sink"].calls == 5


def test_open_failure_reports_and_never_calls_close(write_graph, tmp_path):
    graph = write_graph("""
        graph: open_fails
        nodes:
          - {id: camera, node: synthetic, params: {width: 64, height: 48, fps: 10, frames: 0}}
          - id: cam_sink
            node: {T}:OpenFails
            params: {marker: {tmp}/closed}
            inputs: {frames: camera/frames}
    """)
    import io

    out = io.StringIO()
    result = run_graph(load_graph(graph), out=out)
    assert result.exit_code == 1
    assert out.getvalue().startswith(
        "error: node 'cam_sink' failed in open(): RuntimeError: no such device /dev/video9"
    )
    assert not (tmp_path / "closed").exists()
    assert isinstance(result.error, NodeOpenError) and result.error.node_id == "cam_sink"


def test_a_monitor_resets_statistics_and_stops_the_graph(write_graph, tmp_path):
    graph = write_graph("""
        graph: monitored
        nodes:
          - {id: camera, node: synthetic, params: {width: 64, height: 48, fps: 200, frames: 0}}
          - {id: rec, node: {T}:Recorder, params: {path: {tmp}/rec.jsonl}, inputs: {frames: camera/frames}}
    """)

    class Monitor:
        def __init__(self):
            self.calls = 0
            self.reset_at = None

        def on_stats(self, stats, elapsed_s):
            self.calls += 1
            rec = stats.get("rec")
            received = rec.inputs["frames"].received if rec is not None else 0
            if self.reset_at is None and received >= 20:
                self.reset_at = elapsed_s
                return "reset"
            if self.reset_at is not None and elapsed_s >= self.reset_at + 1.5:
                return "stop"
            return None

    monitor = Monitor()
    result = run_graph(load_graph(graph), monitor=monitor)
    assert result.exit_code == 0
    assert monitor.calls >= 3 and monitor.reset_at is not None
    written = len((tmp_path / "rec.jsonl").read_text().splitlines())
    counted = result.stats["rec"].inputs["frames"].received
    assert 0 < counted < written  # frames before the reset are not counted
    assert result.stats["rec"].calls == counted


def test_an_unknown_control_message_fails_the_run_instead_of_being_ignored(write_graph):
    graph = write_graph("""
        graph: nonsense
        nodes:
          - {id: camera, node: synthetic, params: {width: 64, height: 48, fps: 50, frames: 0}}
          - {id: odd, node: "{T}:SaysNonsense", inputs: {frames: camera/frames}}
    """)
    import io

    result = run_graph(load_graph(graph), out=io.StringIO())
    assert result.exit_code == 1
    assert str(result.error).startswith(
        "node 'odd' failed in control(): unknown control message kind 'bogus'"
    )


@pytest.mark.parametrize("transport", ["shm", "tcp"])
def test_malformed_messages_are_counted_and_dropped_and_the_node_goes_on(
    write_graph, tmp_path, transport
):
    graph = load_graph(
        write_graph(f"""
        graph: buggy
        nodes:
          - {{id: camera, node: synthetic, params: {{width: 32, height: 24, fps: 0, frames: 20}}}}
          - id: buggy
            node: {{T}}:SendsObjects
            inputs: {{frames: camera/frames}}
          - id: log
            node: jsonl
            params: {{path: {{tmp}}/log.jsonl}}
            inputs: {{messages: {{from: buggy/tensors, transport: {transport}}}}}
    """)
    )
    result = run_graph(graph, log_level="WARNING")
    assert result.exit_code == 0, result.error
    log = result.stats["log"]
    assert log.counters == {"malformed": 10}
    assert log.inputs["messages"].received == 10
    assert log.inputs["messages"].dropped == 10  # sent = received + dropped
    assert result.stats["buggy"].outputs["tensors"].sent == 20
    seqs = [json.loads(line)["seq"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert seqs == list(range(1, 20, 2))

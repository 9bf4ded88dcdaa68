"""The Node contract: port declarations, signature checks, and the lifecycle in run_node."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import Field

from pipeline import (
    Detections,
    EndOfStream,
    Frame,
    Input,
    Message,
    Node,
    NodeDefinitionError,
    NodeParams,
    Output,
)
from pipeline.testing import make_frame, run_node


class ScoreFilter(Node):
    """Keep detections at or above a confidence."""

    class Params(NodeParams):
        min_confidence: float = Field(0.5, ge=0, le=1)

    detections = Input(Detections)
    kept = Output(Detections)

    def process(self, detections: Detections) -> None:
        self.kept.send(detections.where(detections.confidence >= self.params.min_confidence))


class Counter(Node):
    """A source of n empty frames."""

    class Params(NodeParams):
        n: int = 3

    frames = Output(Frame)

    def open(self) -> None:
        self.i = 0

    def process(self) -> None:
        if self.i >= self.params.n:
            raise EndOfStream
        self.frames.send(make_frame(8, 8, seq=self.i))
        self.i += 1


def dets(seq: int, conf: list[float]) -> Detections:
    n = len(conf)
    return Detections(
        seq=seq,
        xyxy=np.tile([0.1, 0.1, 0.5, 0.5], (n, 1)),
        confidence=conf,
        class_id=[0] * n,
        class_names=["a"] * n,
    )


def test_ports_are_collected_from_class_attributes():
    assert list(ScoreFilter.inputs) == ["detections"]
    assert list(ScoreFilter.outputs) == ["kept"]
    assert ScoreFilter.inputs["detections"].type is Detections
    assert Counter.is_source() and not ScoreFilter.is_source()


def test_process_signature_must_match_input_ports():
    with pytest.raises(NodeDefinitionError) as err:

        class Bad(Node):
            frames = Input(Frame)

            def process(self, frame: Frame) -> None:  # misspelt port
                pass

    text = str(err.value)
    assert "input ports without a process() parameter: frames" in text
    assert "process() parameters without an input port: frame" in text
    assert "test_node_contract.py:" in text  # says where the class is


def test_params_must_subclass_nodeparams():
    with pytest.raises(NodeDefinitionError, match="Params must subclass NodeParams"):

        class Bad(Node):
            Params = dict  # type: ignore[assignment]


def test_score_filter_drops_detections_below_min_confidence():
    run = run_node(
        ScoreFilter,
        params={"min_confidence": 0.6},
        inputs={"detections": [dets(0, [0.9, 0.2]), dets(1, [0.5])]},
    )
    kept = run.sent["kept"]
    assert [len(d) for d in kept] == [1, 0]
    assert kept[0].confidence.tolist() == pytest.approx([0.9])
    assert run.calls == ["open", "process", "process", "flush", "close"]
    assert run.stats.calls == 2


def test_source_runs_until_end_of_stream():
    run = run_node(Counter, params={"n": 4})
    assert [f.seq for f in run.sent["frames"]] == [0, 1, 2, 3]
    assert run.calls == ["open"] + ["process"] * 5 + ["flush", "close"]


def test_source_stops_after_max_calls():
    run = run_node(Counter, params={"n": 100}, max_calls=2)
    assert len(run.sent["frames"]) == 2


def test_node_open_failure_skips_close():
    class Broken(Counter):
        def open(self) -> None:
            raise OSError("camera 0 is absent")

        def close(self) -> None:
            raise AssertionError("close must not be called")

    run = run_node(Broken, raise_errors=False)
    assert run.calls == ["open"]
    assert isinstance(run.error, OSError) and run.failed_in == "open"


def test_close_follows_an_error_in_process():
    class Fails(ScoreFilter):
        def process(self, detections: Detections) -> None:
            raise ValueError("bad box")

    run = run_node(Fails, inputs={"detections": [dets(0, [0.9])]}, raise_errors=False)
    assert run.calls == ["open", "process", "close"]
    assert run.failed_in == "process"
    with pytest.raises(ValueError, match="bad box"):
        run_node(Fails, inputs={"detections": [dets(0, [0.9])]})


def test_inputs_are_read_only_views():
    seen = []

    class Writer(Node):
        frames = Input(Frame)

        def process(self, frames: Frame) -> None:
            seen.append(frames.image.flags.writeable)
            frames.image[0, 0, 0] = 1

    run = run_node(Writer, inputs={"frames": [make_frame()]}, raise_errors=False)
    assert seen == [False]
    assert isinstance(run.error, ValueError)  # "assignment destination is read-only"


def test_two_inputs_are_joined_on_seq_and_unmatched_are_dropped():
    pairs = []

    class Join(Node):
        frames = Input(Frame)
        detections = Input(Detections)

        def process(self, frames: Frame, detections: Detections) -> None:
            pairs.append((frames.seq, detections.seq))

    frames = [make_frame(seq=s) for s in range(5)]
    detections = [dets(s, [0.5]) for s in (1, 2, 4)]  # 0 and 3 were dropped upstream
    run = run_node(Join, inputs={"frames": frames, "detections": detections})
    assert pairs == [(1, 1), (2, 2), (4, 4)]
    assert run.stats.inputs["frames"].dropped == 2


def test_optional_input_left_unconnected_is_none():
    got = []

    class Opt(Node):
        frames = Input(Frame)
        detections = Input(Detections, required=False)

        def process(self, frames: Frame, detections: Detections | None) -> None:
            got.append(detections)

    run_node(Opt, inputs={"frames": [make_frame()]})
    assert got == [None]


def test_send_checks_the_port_type():
    class WrongType(Node):
        frames = Input(Frame)
        out = Output(Detections)

        def process(self, frames: Frame) -> None:
            self.out.send(frames)

    with pytest.raises(TypeError, match="output 'out' sends Detections, got Frame"):
        run_node(WrongType, inputs={"frames": [make_frame()]})


def test_node_counters_appear_in_statistics():
    class Counts(Node):
        messages = Input(Message)

        def process(self, messages: Message) -> None:
            self.count("reconnects")

    run = run_node(Counts, inputs={"messages": [make_frame(), make_frame(seq=1)]})
    assert run.stats.counters == {"reconnects": 2}


def test_run_node_rejects_unknown_inputs():
    with pytest.raises(ValueError, match="has no input"):
        run_node(ScoreFilter, inputs={"frames": []})


def test_an_exception_from_close_is_the_failure_of_close():
    class Leaky(Node):
        frames = Input(Frame)

        def process(self, frames: Frame) -> None:
            pass

        def close(self) -> None:
            raise OSError("disk full")

    run = run_node(Leaky, inputs={"frames": [make_frame(seq=0)]}, raise_errors=False)
    assert run.calls == ["open", "process", "flush", "close"]
    assert isinstance(run.error, OSError) and run.failed_in == "close"
    with pytest.raises(OSError, match="disk full"):
        run_node(Leaky, inputs={"frames": [make_frame(seq=0)]})

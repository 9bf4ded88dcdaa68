"""Preparing a graph for a bench: the graph hash, --set and --pace."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from pipeline.bench.prepare import Pace, ParamSet, PreparedGraph, parse_set, prepare_graph

BLOCK = """\
# a comment
graph: hashed
description: the first wording
nodes:
  - id: camera
    node: synthetic
    params:
      width: 64
      height: 48
      fps: 0
  - id: resize
    node: resize
    params: {width: 32, height: 24}
    inputs:
      frames: camera/frames
  - id: sink
    node: discard
    inputs:
      messages: resize/resized
"""

# The same graph: flow style, other key and node order, another description, no comment,
# an input in long form with its default queue, and a param written out at its default.
REFORMATTED = """\
description: another wording entirely
nodes:
  - {id: sink, node: discard, inputs: {messages: {from: resize/resized, queue: 4}}}
  - {node: resize, id: resize, inputs: {frames: camera/frames},
     params: {height: 24, width: 32, interpolation: linear}}
  - {id: camera, node: synthetic, params: {fps: 0, height: 48, width: 64}}
graph: hashed
"""


def _prepare(path: Path, sets: Sequence[ParamSet] = (), pace: Pace | None = None) -> PreparedGraph:
    prepared, issues = prepare_graph(path, sets, pace)
    assert prepared is not None, [i.format() for i in issues]
    return prepared


def _param(prepared: PreparedGraph, node: str, name: str) -> Any:
    return getattr(prepared.graph.params[node], name)


def test_graph_hash_ignores_layout_comments_order_defaults_and_description(write_graph):
    a = _prepare(write_graph(BLOCK, "a.yaml"))
    b = _prepare(write_graph(REFORMATTED, "b.yaml"))
    assert a.hash == b.hash
    assert a.hash.startswith("sha256:") and len(a.hash) == 7 + 64
    assert a.base_hash == a.hash  # nothing was changed by --set or --pace


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("width: 32, height: 24", "width: 33, height: 24"),  # a param
        ("frames: camera/frames", "frames: {from: camera/frames, queue: 2}"),  # an edge
        ("node: discard", "node: jsonl\n    params: {path: out.jsonl}"),  # a node type
        ("graph: hashed", "graph: renamed"),  # the graph's name
    ],
)
def test_graph_hash_changes_with_what_runs(write_graph, old, new):
    assert old in BLOCK
    base = _prepare(write_graph(BLOCK, "a.yaml"))
    changed = _prepare(write_graph(BLOCK.replace(old, new, 1), "b.yaml"))
    assert changed.hash != base.hash


def test_set_changes_a_param_before_validation_and_the_hash(write_graph):
    path = write_graph(BLOCK)
    base = _prepare(path)
    prepared = _prepare(path, [ParamSet("resize", ("width",), 16)])
    assert _param(prepared, "resize", "width") == 16
    assert prepared.sets == {"resize.width": 16}
    assert prepared.hash != base.hash
    assert prepared.base_hash == base.hash


@pytest.mark.parametrize(
    ("text", "many", "expected"),
    [
        ("camera.fps=0", False, ("camera", ("fps",), [0])),
        ("detector.input_size=[320,240]", False, ("detector", ("input_size",), [[320, 240]])),
        ("detector.backend=tflite", False, ("detector", ("backend",), ["tflite"])),
        ("detector.providers=null", False, ("detector", ("providers",), [None])),
        # a nested param
        (
            "detector.decoder_params.iou_threshold=0.4",
            False,
            ("detector", ("decoder_params", "iou_threshold"), [0.4]),
        ),
        # sweeps: commas split values, but not inside brackets
        ("detector.num_threads=1,2,4", True, ("detector", ("num_threads",), [1, 2, 4])),
        (
            "detector.backend=tflite,onnxruntime",
            True,
            ("detector", ("backend",), ["tflite", "onnxruntime"]),
        ),
        (
            "detector.input_size=[320,240],[640,480]",
            True,
            ("detector", ("input_size",), [[320, 240], [640, 480]]),
        ),
        ("camera.fps=30", True, ("camera", ("fps",), [30])),
    ],
)
def test_parse_set(text, many, expected):
    assert parse_set(text, many=many) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("camera", "expected node.param=value"),  # no '='
        ("fps=0", "expected node.param=value"),  # no node
        ("camera.=0", "an empty name"),
        (".fps=0", "an empty name"),
        ("camera.fps=", "no value after '='"),
        ("camera.fps=[1", "not valid YAML"),
    ],
)
def test_parse_set_rejects(text, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        parse_set(text)


def test_pace_sets_the_pace_of_every_source_node(write_graph):
    path = write_graph(
        """\
        graph: paced
        nodes:
          - id: camera
            node: synthetic
            params: {fps: 30}
          - id: clip
            node: {P}:RateSource
          - id: sink
            node: discard
            inputs: {messages: camera/frames}
          - id: sink2
            node: discard
            inputs: {messages: clip/frames}
        """
    )
    fast = _prepare(path, pace="fast")
    assert [fast.graph.node(n).pace for n in ("camera", "clip", "sink")] == ["fast", "fast", None]
    assert _param(fast, "camera", "fps") == 30  # its rate stays; the runtime does not hold it
    assert fast.sets == {"camera.pace": "fast", "clip.pace": "fast"}
    assert fast.hash != fast.base_hash
    realtime = _prepare(path, pace="realtime")
    assert realtime.graph.node("clip").pace == "realtime"
    assert realtime.hash != fast.hash


def test_set_on_an_unknown_node_is_an_issue_with_a_hint(write_graph):
    path = write_graph(BLOCK)
    prepared, issues = prepare_graph(path, [ParamSet("resise", ("width",), 16)])
    assert prepared is None
    text = "\n".join(i.format() for i in issues)
    assert f"{path}: error: --set resise.width: graph 'hashed' has no node 'resise'" in text
    assert "hint: did you mean 'resize'?" in text


def test_set_with_a_bad_value_is_reported_like_pipeline_check(write_graph):
    path = write_graph(BLOCK)
    prepared, issues = prepare_graph(path, [ParamSet("camera", ("fps",), -5)])
    assert prepared is None
    errors = [i for i in issues if i.severity == "error"]
    assert len(errors) == 1
    assert errors[0].format().startswith(f"{path}:10:12: error: params.fps of node 'camera'")


def test_set_below_a_param_that_is_not_a_mapping_is_an_issue(write_graph):
    path = write_graph(BLOCK)
    prepared, issues = prepare_graph(path, [ParamSet("camera", ("fps", "max"), 1)])
    assert prepared is None
    assert "camera.fps is not a mapping, so it has no 'max'" in issues[0].message


def test_a_file_with_errors_gives_every_issue_and_no_graph(write_graph):
    path = write_graph(BLOCK.replace("camera/frames", "camera/frame").replace("fps: 0", "fps: -1"))
    prepared, issues = prepare_graph(path)
    assert prepared is None
    assert [i.line for i in issues if i.severity == "error"] == [10, 15]


@pytest.mark.parametrize(
    "path",
    sorted((Path(__file__).parents[3] / "benchmarks" / "graphs").glob("*.yaml")),
    ids=lambda p: p.name,
)
def test_every_benchmark_graph_is_valid(path: Path) -> None:
    prepared, issues = prepare_graph(path)
    assert prepared is not None, [i.format() for i in issues]
    assert not issues  # not even a warning
    assert prepared.graph.node("camera").pace == "fast"  # benchmark graphs run flat out

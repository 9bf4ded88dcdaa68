"""The README's node examples are real: their code runs here, as written there."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from pipeline import Detections, Frame, Input, Node, Output
from pipeline.testing import run_node

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def _namespace(*markers: str) -> dict:
    namespace: dict = {"__name__": "readme_example"}
    for marker in markers:
        (block,) = [b for b in BLOCKS if marker in b]
        exec(compile(block, f"README.md ({marker})", "exec"), namespace)
    return namespace


def test_the_two_input_node_and_its_test_from_the_readme_pass():
    ns = _namespace("class Pixelate(Node)", "def test_pixelate_changes_only_the_boxes")
    ns["test_pixelate_changes_only_the_boxes"]()


def test_the_score_filter_from_the_readme_keeps_high_scores():
    ns = _namespace("class ScoreFilter(Node)")
    found = Detections(
        xyxy=[[0, 0, 0.1, 0.1], [0, 0, 0.2, 0.2]], confidence=[0.3, 0.8], class_names=["a", "b"]
    )
    run = run_node(ns["ScoreFilter"], inputs={"detections": [found]})
    assert run.sent["kept"][0].class_names == ("b",)


def test_class_names_alone_fill_the_class_ids():
    found = Detections(
        xyxy=np.zeros((3, 4)), confidence=[0.1, 0.2, 0.3], class_names=["cat", "dog", "cat"]
    )
    assert found.class_id.tolist() == [0, 1, 0]
    with pytest.raises(ValueError, match=r"confidence has 0 entries for 3 boxes: pass confidence"):
        Detections(xyxy=np.zeros((3, 4)), class_names=["a", "b", "c"])
    with pytest.raises(
        ValueError,
        match=r"class_id has 2 entries for 3 boxes: pass class_id=\[\.\.\.\] with one int per box, or class_names alone",
    ):
        Detections(xyxy=np.zeros((3, 4)), confidence=[1, 1, 1], class_id=[0, 1])


class WritesIntoItsInput(Node):
    frames = Input(Frame)
    out = Output(Frame)

    def process(self, frames: Frame) -> None:
        frames.image[:] = 0
        self.out.send(frames)


def test_writing_into_a_read_only_input_says_to_copy_or_allocate():
    run = run_node(
        WritesIntoItsInput,
        inputs={"frames": [Frame(image=np.ones((4, 4, 3), np.uint8))]},
        raise_errors=False,
    )
    assert isinstance(run.error, ValueError)
    notes = "\n".join(getattr(run.error, "__notes__", [str(run.error)]))
    assert "read-only" in str(run.error)
    if hasattr(run.error, "add_note"):
        assert "copy the array first" in notes
        assert "self.<output>.allocate(shape, dtype)" in notes


@pytest.mark.integration
def test_in_a_graph_the_error_says_to_copy_or_allocate(tmp_path):
    import io

    from pipeline import load_graph, run_graph

    graph = tmp_path / "g.yaml"
    graph.write_text(
        "graph: g\nnodes:\n"
        "  - {id: camera, node: synthetic, params: {width: 32, height: 24, fps: 0, frames: 3}}\n"
        "  - {id: writer, node: 'tests.test_readme_examples:WritesIntoItsInput',"
        " inputs: {frames: camera/frames}}\n"
        "  - {id: sink, node: discard, inputs: {messages: writer/out}}\n"
    )
    result = run_graph(load_graph(graph), out=io.StringIO())
    assert result.exit_code == 1
    message = str(result.error)
    assert message.startswith("node 'writer' failed in process() on seq 0 from camera: ValueError")
    assert "copy the array first, image = frames.image.copy()" in message
    assert "self.<output>.allocate(shape, dtype)" in message


@pytest.mark.parametrize("readme", ["README.md", "benchmarks/README.md"])
def test_every_file_the_readmes_name_exists(readme):
    root = README.parent
    text = (root / readme).read_text()
    named = set(
        re.findall(
            r"(?<![\w/.])((?:benchmarks|graphs|samples|scripts)/[\w./-]+\.(?:yaml|py|mp4))", text
        )
    )
    assert named, readme
    missing = sorted(p for p in named if not (root / p).exists())
    assert not missing, f"{readme} names files that do not exist: {missing}"
    assert "until wired in" not in text

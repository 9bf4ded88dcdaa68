"""The command line's conventions: --version, -q, short listings, help, --set, ${VAR}, drawings,
new-node, process titles."""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import pipeline
from pipeline.cli import build_parser, main
from pipeline.graph.load import check_graph
from pipeline.registry import available_nodes

ROOT = Path(__file__).resolve().parents[2]


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"pipeline {pipeline.__version__}"


def test_quiet_silences_info(capsys, monkeypatch):
    seen = []
    monkeypatch.setattr(logging, "basicConfig", lambda **kw: seen.append(kw["level"]))
    assert main(["-q", "check", str(ROOT / "graphs" / "synthetic.yaml")]) == 0
    assert main(["check", str(ROOT / "graphs" / "synthetic.yaml")]) == 0
    assert seen == [logging.WARNING, logging.INFO]


def test_nodes_without_a_name_prints_one_line_per_type(capsys):
    assert main(["nodes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    types = available_nodes()
    assert [line.split()[0] for line in lines[: len(types)]] == types
    detector = next(line for line in lines if line.startswith("detector "))
    assert "Detect objects" in detector
    assert "params:" not in "\n".join(lines)


def test_models_list_fits_100_columns_and_wide_shows_all(capsys):
    assert main(["models", "list"]) == 0
    narrow = capsys.readouterr().out.splitlines()
    assert max(map(len, narrow)) <= 100
    assert "LICENCE" not in narrow[1]
    assert main(["models", "list", "--wide"]) == 0
    wide = capsys.readouterr().out.splitlines()
    assert "LICENCE" in wide[1] and "SOURCE" in wide[1]
    assert max(map(len, wide)) > 100


def _positionals(parser: argparse.ArgumentParser, prog: str):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _positionals(child, f"{prog} {name}")
        elif not action.option_strings:
            yield prog, action


def test_every_positional_argument_has_help():
    missing = [
        f"{prog}: {action.metavar or action.dest}"
        for prog, action in _positionals(build_parser(), "pipeline")
        if not action.help
    ]
    assert not missing, missing


GRAPH = """
    graph: g
    nodes:
      - id: camera
        node: synthetic
        params:
          width: 32
          height: 24
          frames: ${FRAMES:-3}
          fps: 0
      - id: log
        node: jsonl
        params: {path: "${OUT_DIR}/frames.jsonl"}
        inputs: {messages: camera/frames}
"""


def test_env_variables_with_defaults_and_types(tmp_path, monkeypatch):
    graph = tmp_path / "g.yaml"
    graph.write_text(textwrap.dedent(GRAPH))
    monkeypatch.setenv("OUT_DIR", str(tmp_path / "out"))
    monkeypatch.delenv("FRAMES", raising=False)
    validated, issues = check_graph(graph)
    assert validated is not None, issues
    assert validated.params["camera"].frames == 3
    assert validated.params["log"].path == f"{tmp_path}/out/frames.jsonl"
    monkeypatch.setenv("FRAMES", "7")
    validated, _ = check_graph(graph)
    assert validated is not None
    assert validated.params["camera"].frames == 7


def test_unset_variable_without_default_is_a_located_error(tmp_path, monkeypatch, capsys):
    graph = tmp_path / "g.yaml"
    graph.write_text(textwrap.dedent(GRAPH))
    monkeypatch.delenv("OUT_DIR", raising=False)
    assert main(["check", str(graph)]) == 2
    err = capsys.readouterr().err
    assert (
        f"{graph}:13:20: error: environment variable 'OUT_DIR' is not set and ${{OUT_DIR}} "
        "has no default" in err
    )
    assert "export OUT_DIR=" in err


@pytest.mark.integration
def test_run_set_changes_a_param(tmp_path, monkeypatch, capsys):
    graph = tmp_path / "g.yaml"
    graph.write_text(textwrap.dedent(GRAPH))
    monkeypatch.setenv("OUT_DIR", str(tmp_path))
    code = main(["run", str(graph), "--no-live", "-q", "--set", "camera.frames=5"])
    assert code == 0, capsys.readouterr().err
    assert len((tmp_path / "frames.jsonl").read_text().splitlines()) == 5
    assert main(["run", str(graph), "--no-live", "--set", "camra.frames=5"]) == 2
    assert "did you mean 'camera'?" in capsys.readouterr().err


def test_graph_draws_mermaid_and_dot(capsys):
    file = str(ROOT / "graphs" / "detect_faces.yaml")
    assert main(["graph", file]) == 0
    mermaid = capsys.readouterr().out
    assert mermaid.startswith("flowchart LR\n")
    assert 'faces["faces<br/><i>detector</i>"]' in mermaid
    assert 'faces -->|"detections → messages"| log' in mermaid
    assert main(["graph", file, "--format", "dot"]) == 0
    dot = capsys.readouterr().out
    assert dot.startswith('digraph "detect_faces" {')
    assert '"camera" -> "faces" [label="frames"];' in dot
    assert main(["graph", file, "--format", "svg"]) == 0
    svg = capsys.readouterr().out
    assert svg.startswith("<svg ") and svg.count('class="node"') == 5
    assert svg.count('class="edge"') == 5


def test_new_node_scaffold_passes_its_own_test(tmp_path, capsys):
    assert main(["new-node", "face_blur", "--dir", str(tmp_path)]) == 0
    assert "node: face_blur:FaceBlur" in capsys.readouterr().out
    assert main(["new-node", "face_blur", "--dir", str(tmp_path)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["new-node", "Face-Blur", "--dir", str(tmp_path)]) == 2
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_face_blur.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


@pytest.mark.integration
def test_node_processes_carry_their_node_id_in_the_title(tmp_path, monkeypatch, capsys):
    (tmp_path / "titled.py").write_text(
        textwrap.dedent(
            """
            from pathlib import Path
            from pipeline import Frame, Input, Node, NodeParams

            class Title(Node):
                class Params(NodeParams):
                    out: str

                frames = Input(Frame)

                def open(self):
                    title = Path("/proc/self/cmdline").read_bytes().replace(b"\\0", b" ")
                    Path(self.params.out).write_bytes(title.strip())

                def process(self, frames):
                    pass
            """
        )
    )
    graph = tmp_path / "g.yaml"
    graph.write_text(
        textwrap.dedent(
            f"""
            graph: g
            nodes:
              - {{id: camera, node: synthetic, params: {{frames: 2}}}}
              - id: faces
                node: titled:Title
                params: {{out: {tmp_path}/title}}
                inputs: {{frames: camera/frames}}
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(graph), "--no-live", "-q"]) == 0
    assert (tmp_path / "title").read_text() == "pipeline: faces (titled:Title)"
    assert json.dumps  # keep the import used

"""`pipeline check` catches what would fail in the first second of a run, at the param."""

from __future__ import annotations

import socket
import textwrap
from pathlib import Path

import pytest

from pipeline.cli import main


def write(tmp_path: Path, text: str) -> Path:
    graph = tmp_path / "g.yaml"
    graph.write_text(textwrap.dedent(text).lstrip())
    return graph


def check(capsys, graph: Path) -> tuple[int, str]:
    code = main(["check", str(graph)])
    captured = capsys.readouterr()
    return code, captured.err + captured.out


def test_missing_video_and_image_folder_are_errors_at_their_param(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    graph = write(
        tmp_path,
        """
        graph: g
        nodes:
          - id: video
            node: video_file
            params: {path: clips/missing.mp4}
          - id: photos
            node: image_folder
            params:
              path: no_photos_here
          - id: sink
            node: discard
            inputs: {messages: video/frames}
          - id: sink2
            node: discard
            inputs: {messages: photos/frames}
        """,
    )
    code, out = check(capsys, graph)
    assert code == 2
    assert (
        f"{graph}:5:20: error: params.path of node 'video': no such video file: 'clips/missing.mp4'"
        in out
    )
    assert f"relative paths are from the current folder, {tmp_path}" in out
    assert f"{graph}:9:13: error: params.path of node 'photos': no such image folder" in out


def test_unknown_missing_and_unfetched_models(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PIPELINE_MODELS_DIR", str(tmp_path / "empty_models"))
    graph = write(
        tmp_path,
        """
        graph: g
        nodes:
          - {id: camera, node: synthetic}
          - id: typo
            node: detector
            params: {model: face_short_rang}
            inputs: {frames: camera/frames}
          - id: file
            node: detector
            params: {model: models/nope.onnx, decoder: ssd}
            inputs: {frames: camera/frames}
          - id: unfetched
            node: classifier
            params: {model: face_classifier}
            inputs: {frames: camera/frames}
        """,
    )
    code, out = check(capsys, graph)
    assert code == 2
    assert "6:21: error: params.model of node 'typo': unknown model 'face_short_rang'" in out
    assert "did you mean 'face_short_range'?" in out
    assert (
        "10:21: error: params.model of node 'file': no such model file: 'models/nope.onnx'" in out
    )
    assert (
        "14:21: error: params.model of node 'unfetched': model 'face_classifier' is not fetched yet"
        in out
    )
    assert "run: pipeline models fetch face_classifier" in out


def test_output_that_cannot_be_written_is_an_error(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    graph = write(
        tmp_path,
        f"""
        graph: g
        nodes:
          - {{id: camera, node: synthetic}}
          - id: log
            node: jsonl
            params: {{path: {blocker}/sub/out.jsonl}}
            inputs: {{messages: camera/frames}}
          - id: shots
            node: snapshot
            params: {{folder: {tmp_path}}}
            inputs: {{frames: camera/frames}}
        """,
    )
    code, out = check(capsys, graph)
    assert code == 2
    assert (
        f"6:20: error: params.path of node 'log': cannot create the folder '{blocker}/sub': '{blocker}' is a file"
        in out
    )
    assert "node 'shots'" not in out


def test_port_taken_by_another_program_is_a_warning(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        graph = write(
            tmp_path,
            f"""
            graph: g
            nodes:
              - {{id: camera, node: synthetic}}
              - id: preview
                node: preview
                params: {{port: {port}}}
                inputs: {{frames: camera/frames}}
            """,
        )
        code, out = check(capsys, graph)
    assert code == 0
    assert (
        f"6:20: warning: params.port of node 'preview': port {port} on 127.0.0.1 is in use" in out
    )
    assert "ok (1 warning)" in out


def test_serve_port_taken_is_a_warning_and_a_bad_address_an_error(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        graph = write(
            tmp_path,
            f"""
            graph: g
            nodes:
              - {{id: camera, node: synthetic}}
              - {{id: sink, node: discard, inputs: {{messages: camera/frames}}}}
            serve:
              address: 127.0.0.1:{port}
            """,
        )
        code, out = check(capsys, graph)
    assert code == 0
    assert f"6:12: warning: serve.address: port {port} on 127.0.0.1 is in use" in out
    assert "ok (1 warning)" in out

    # The same file once the other program is gone: no warning.
    code, out = check(capsys, graph)
    assert code == 0 and "warning" not in out

    graph.write_text(graph.read_text().replace(f"127.0.0.1:{port}", "localhost"))
    code, out = check(capsys, graph)
    assert code == 2
    assert "6:12: error: serve.address 'localhost' is not HOST:PORT" in out


def test_a_node_declares_its_own_check(tmp_path, capsys, monkeypatch):
    (tmp_path / "checked_nodes.py").write_text(
        textwrap.dedent(
            """
            from pipeline import Frame, Input, Node, NodeParams, ParamIssue

            class Needs(Node):
                class Params(NodeParams):
                    secret_file: str = "secret.txt"

                frames = Input(Frame)

                @classmethod
                def check(cls, params):
                    if params.secret_file == "secret.txt":
                        yield ParamIssue("secret_file", "the default secret is not allowed",
                                         ("hint: set params.secret_file",))

                def process(self, frames):
                    pass
            """
        )
    )
    graph = write(
        tmp_path,
        """
        graph: g
        nodes:
          - {id: camera, node: synthetic}
          - id: needs
            node: checked_nodes:Needs
            inputs: {frames: camera/frames}
        """,
    )
    monkeypatch.chdir(tmp_path.parent)
    code, out = check(capsys, graph)
    assert code == 2
    assert (
        "4:5: error: params.secret_file of node 'needs': the default secret is not allowed" in out
    )
    assert "hint: set params.secret_file" in out


@pytest.mark.integration
def test_run_refuses_before_starting_anything(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    graph = write(
        tmp_path,
        """
        graph: g
        nodes:
          - {id: video, node: video_file, params: {path: missing.mp4}}
          - {id: sink, node: discard, inputs: {messages: video/frames}}
        """,
    )
    assert main(["run", str(graph), "--no-live"]) == 2
    err = capsys.readouterr().err
    assert "no such video file: 'missing.mp4'" in err
    assert "nothing was started" in err


def test_a_check_method_that_is_not_the_hook_is_reported(tmp_path, capsys, monkeypatch):
    (tmp_path / "other_check.py").write_text(
        textwrap.dedent(
            """
            from pipeline import Frame, Input, Node

            class Checker(Node):
                frames = Input(Frame)

                def check(self, value):  # the user's own method, not the hook
                    return value > 0

                def process(self, frames):
                    pass
            """
        )
    )
    graph = write(
        tmp_path,
        """
        graph: g
        nodes:
          - {id: camera, node: synthetic}
          - {id: checker, node: "other_check:Checker", inputs: {frames: camera/frames}}
        """,
    )
    monkeypatch.chdir(tmp_path)
    code, out = check(capsys, graph)
    assert code == 2
    assert "Checker.check is not a classmethod: Node.check(cls, params) is the pre-run" in out
    assert "or rename your method" in out

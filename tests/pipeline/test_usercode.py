"""A user's ``module:Class`` node next to the graph file: found from anywhere, never shadowing."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.errors import RegistryError
from pipeline.graph.load import check_graph
from pipeline.registry import load_node_class

NODE_MODULE = """
    from blurhelp import FACTOR

    from pipeline import Frame, Input, Node, NodeParams, Output


    class FaceBlur(Node):
        '''Darken every frame by a factor from a helper module next to this one.'''

        class Params(NodeParams):
            pass

        frames = Input(Frame)
        out = Output(Frame)

        def process(self, frames: Frame) -> None:
            image = self.out.allocate(frames.image.shape)
            image[:] = frames.image // FACTOR
            self.out.send(frames.replace(image=image))
"""

GRAPH = """
    graph: blur
    nodes:
      - {id: camera, node: synthetic, params: {width: 64, height: 48, frames: 5}}
      - id: blur
        node: {module}:FaceBlur
        inputs: {frames: camera/frames}
      - id: small
        node: resize
        params: {width: 32, height: 24}
        inputs: {frames: blur/out}
      - id: log
        node: jsonl
        params: {path: out.jsonl}
        inputs: {messages: small/resized}
"""

STRAY_CV2 = "raise RuntimeError('the stray cv2.py in the user folder was imported')\n"


def write_project(root: Path, module: str = "mynodes") -> Path:
    folder = root / "somewhere"
    folder.mkdir(parents=True)
    (folder / f"{module}.py").write_text(textwrap.dedent(NODE_MODULE))
    (folder / "blurhelp.py").write_text("FACTOR = 2\n")
    graph = folder / "blur.yaml"
    graph.write_text(textwrap.dedent(GRAPH).replace("{module}", module))
    return graph


def test_module_next_to_the_graph_is_found_from_another_folder(tmp_path, monkeypatch):
    graph = write_project(tmp_path, "blurnodes_a")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    validated, issues = check_graph(graph)
    assert validated is not None, "\n".join(i.format() for i in issues)
    cls = validated.classes["blur"]
    assert Path(sys.modules[cls.__module__].__file__ or "") == graph.parent / "blurnodes_a.py"


def test_two_graphs_with_modules_of_the_same_name_get_their_own(tmp_path, monkeypatch):
    first = write_project(tmp_path / "one", "samename")
    second = write_project(tmp_path / "two", "samename")
    monkeypatch.chdir(tmp_path)
    a, _ = check_graph(first)
    b, _ = check_graph(second)
    assert a is not None and b is not None
    assert a.classes["blur"] is not b.classes["blur"]
    assert Path(sys.modules["samename"].__file__ or "").parent == second.parent


def test_missing_module_names_the_folders_searched_and_the_fix(tmp_path, monkeypatch):
    folder = tmp_path / "graphs"
    folder.mkdir()
    graph = folder / "g.yaml"
    graph.write_text("graph: g\nnodes:\n  - id: x\n    node: nosuchmodule_here:Thing\n")
    monkeypatch.chdir(tmp_path)
    _, issues = check_graph(graph)
    (issue,) = issues
    text = issue.format()
    assert (issue.line, issue.col) == (4, 11)
    assert "cannot import module 'nosuchmodule_here'" in issue.message
    assert f"{folder} (the graph's folder)" in issue.message
    assert f"{tmp_path} (the current folder)" in issue.message
    assert "installed packages" in issue.message
    assert "put nosuchmodule_here.py next to the graph file" in text


def test_bad_process_signature_is_reported_as_that(tmp_path, monkeypatch):
    (tmp_path / "badsig.py").write_text(
        textwrap.dedent(
            """
            from pipeline import Frame, Input, Node

            class Bad(Node):
                frames = Input(Frame)

                def process(self, image):
                    pass
            """
        )
    )
    graph = tmp_path / "g.yaml"
    graph.write_text("graph: g\nnodes:\n  - id: x\n    node: badsig:Bad\n")
    monkeypatch.chdir(tmp_path.parent)
    _, issues = check_graph(graph)
    (issue,) = issues
    assert "cannot import" not in issue.message
    assert "node type 'badsig:Bad' is malformed" in issue.message
    assert "process() must take one keyword parameter per input port" in issue.message
    assert f"{tmp_path / 'badsig.py'}:4: Bad" in issue.message


def test_error_inside_the_module_names_its_file_and_line(tmp_path):
    (tmp_path / "brokenmod.py").write_text("import os\nimport no_such_dependency_xyz\n")
    with pytest.raises(RegistryError) as info:
        load_node_class("brokenmod:Thing", search=[str(tmp_path)])
    message = str(info.value)
    assert f"failed at {tmp_path / 'brokenmod.py'}:2" in message
    assert "No module named 'no_such_dependency_xyz'" in message
    assert "brokenmod" not in sys.modules


def test_a_module_named_like_a_library_is_refused_not_imported(tmp_path):
    (tmp_path / "json.py").write_text("raise RuntimeError('shadowed')\n")
    with pytest.raises(RegistryError, match=r"has the name of the installed module 'json'"):
        load_node_class("json:Thing", search=[str(tmp_path)])
    assert json.dumps(1) == "1"


@pytest.mark.integration
def test_stray_library_file_in_user_folders_never_runs_in_nodes(tmp_path):
    """A cv2.py next to the graph and in the current folder: resize still uses OpenCV."""
    graph = write_project(tmp_path, "mynodes")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for folder in (graph.parent, elsewhere):
        (folder / "cv2.py").write_text(STRAY_CV2)
    pipeline = Path(sys.executable).parent / "pipeline"
    done = subprocess.run(
        [str(pipeline), "run", str(graph), "--no-live", "-q"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert done.returncode == 0, done.stderr
    assert "stray cv2" not in done.stderr
    lines = (elsewhere / "out.jsonl").read_text().splitlines()
    assert len(lines) == 5
    assert "32" in lines[0]


@pytest.mark.integration
def test_a_users_package_called_nodes_runs_beside_the_built_in_nodes(tmp_path):
    """The built-ins live in ``pipeline_nodes``: a user's own ``nodes/`` package is not shadowed.

    The graph mixes the user's ``nodes.blur:FaceBlur`` with built-in ``synthetic``, ``resize``
    and ``jsonl`` nodes, so both packages are imported in the same run.
    """
    folder = tmp_path / "somewhere"
    package = folder / "nodes"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "blur.py").write_text(textwrap.dedent(NODE_MODULE))
    (folder / "blurhelp.py").write_text("FACTOR = 2\n")
    graph = folder / "blur.yaml"
    graph.write_text(textwrap.dedent(GRAPH).replace("{module}", "nodes.blur"))
    validated, issues = check_graph(graph)
    assert validated is not None, "\n".join(i.format() for i in issues)
    assert validated.classes["blur"].__module__ == "nodes.blur"
    assert validated.classes["small"].__module__.startswith("pipeline_nodes.")
    pipeline = Path(sys.executable).parent / "pipeline"
    done = subprocess.run(
        [str(pipeline), "run", str(graph), "--no-live", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert len(lines) == 5

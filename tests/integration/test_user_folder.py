"""The current folder is for the user's own `module:Class` nodes only: a stray `cv2.py` (or
any module named like a library) there never runs inside a node, built-in or not."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.runtime.worker import node_sys_path

pytestmark = pytest.mark.integration

STRAY = """
from pathlib import Path
Path(__file__).with_name("stray-ran").write_text("a stray cv2.py was imported")
raise ImportError("this is not OpenCV")
"""

MY_NODES = """
import cv2  # the installed OpenCV, not ./cv2.py
from my_helpers import label  # a helper beside this file still resolves

from pipeline import Frame, Input, Node


class Check(Node):
    frames = Input(Frame)

    def open(self) -> None:
        self.seen = 0

    def process(self, frames: Frame) -> None:
        assert hasattr(cv2, "resize"), "not OpenCV"
        self.seen += 1

    def close(self) -> None:
        with open("check.json", "w") as f:
            f.write('{"seen": %d, "label": "%s", "cv2": "%s"}' % (self.seen, label, cv2.__file__))
"""


def test_a_stray_module_in_the_current_folder_never_shadows_a_library(tmp_path: Path):
    (tmp_path / "cv2.py").write_text(STRAY)
    (tmp_path / "my_nodes.py").write_text(MY_NODES)
    (tmp_path / "my_helpers.py").write_text('label = "helper"\n')
    (tmp_path / "graph.yaml").write_text(
        textwrap.dedent("""
        graph: shadow
        nodes:
          - {id: camera, node: synthetic, params: {width: 64, height: 48, fps: 0, frames: 5}}
          - id: small
            node: resize
            params: {width: 32, height: 24}
            inputs: {frames: camera/frames}
          - id: check
            node: my_nodes:Check
            inputs: {frames: small/resized}
    """)
    )
    # `python -m` puts the current folder first on the supervisor's own path, as people run it
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", "graph.yaml", "--no-live"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert not (tmp_path / "stray-ran").exists(), out
    check = json.loads((tmp_path / "check.json").read_text())
    assert check["seen"] == 5
    assert check["label"] == "helper"
    assert not check["cv2"].startswith(str(tmp_path))


@pytest.mark.parametrize(
    ("node_type", "expected"),
    [
        ("resize", ["/lib", "/site"]),  # a built-in node: never the current folder
        ("my_nodes:Check", ["/lib", "/site", "/work"]),  # the user's: last, after libraries
    ],
)
def test_node_sys_path(node_type, expected):
    assert node_sys_path(["", "/work", "/lib", ".", "/site"], node_type, "/work") == expected

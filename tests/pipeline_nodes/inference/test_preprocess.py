"""Model input preparation: sizes are (width, height) wherever they come from, even non-square."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline_nodes.inference.backends.base import TensorInfo
from pipeline_nodes.inference.params import ModelParams
from pipeline_nodes.inference.preprocess import model_input, prepare
from pipeline_nodes.inference.vision import VisionModel
from pipeline_nodes.transforms import geometry


def identity_model(path, shape):
    """An ONNX model that returns its float32 input ``image`` of ``shape`` as ``out``."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["out"])],
        "identity",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, list(shape))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return str(path)


@pytest.mark.parametrize(
    ("shape", "layout", "tensor_shape"),
    [((1, 6, 10, 3), "NHWC", (1, 6, 10, 3)), ((1, 3, 6, 10), "NCHW", (1, 3, 6, 10))],
)
def test_a_non_square_model_input_is_width_by_height(shape, layout, tensor_shape):
    spec = model_input(TensorInfo("image", "float32", shape))
    assert spec.layout == layout
    assert spec.size == (10, 6)  # (width, height) of a tensor 6 high and 10 wide
    tensor, records = prepare(np.zeros((12, 20, 3), np.uint8), spec)
    assert tensor.shape == tensor_shape
    assert geometry.output_wh(records) == (10, 6)


def test_the_catalogs_size_is_width_by_height_too():
    # A model of any size (CenterFace-like) that the catalog pins to 10 wide, 6 high.
    dynamic = TensorInfo("image", "float32", (1, -1, -1, 3))
    catalog = {"name": "image", "layout": "NHWC", "size": [10, 6], "color": "RGB"}
    spec = model_input(dynamic, catalog)
    assert spec.size == (10, 6)
    tensor, _ = prepare(np.zeros((30, 50, 3), np.uint8), spec)
    assert tensor.shape == (1, 6, 10, 3)
    # The node's input_size param, also (width, height), wins.
    spec = model_input(dynamic, catalog, {"size": [8, 4]})
    assert prepare(np.zeros((30, 50, 3), np.uint8), spec)[0].shape == (1, 4, 8, 3)


def test_a_non_square_model_runs_on_the_image_stretched_to_its_input(tmp_path):
    path = identity_model(tmp_path / "wide.onnx", (1, 6, 10, 3))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
    with VisionModel(ModelParams(model=path)) as vision:
        assert vision.input_size == (10, 6)
        outputs, records, input_wh = vision.run(image)
    assert input_wh == (10, 6)
    expected = cv2.cvtColor(cv2.resize(image, (10, 6)), cv2.COLOR_BGR2RGB) / np.float32(255)
    np.testing.assert_allclose(outputs["out"][0], expected, rtol=1e-6)
    assert geometry.original_wh(records) == (20, 12)


def test_every_catalog_size_agrees_with_its_model_files_tensor():
    # The catalog's (width, height) must be the file's tensor read by layout: a non-square
    # entry written (height, width) would fail here.
    from pipeline_nodes.inference.models.catalog import CATALOG
    from pipeline_nodes.inference.models.fetch import fetch_models
    from pipeline_nodes.inference.models.store import default_models_dir
    from pipeline_nodes.inference.service import load_model

    fetch_models(default_models_dir(), log=lambda *_: None)  # nothing to do when present
    checked = 0
    for name, spec in CATALOG.items():
        if spec.input.size is None:
            continue
        with load_model(name) as model:
            tensor = next(t for t in model.metadata().inputs if t.name == spec.input.name)
        assert model_input(tensor).size == spec.input.size, name
        checked += 1
    assert checked >= 6

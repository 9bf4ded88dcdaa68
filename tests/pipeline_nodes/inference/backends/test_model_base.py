"""Input validation shared by every backend, label parsing, and the Model lifecycle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline_nodes.inference.backends.base import (
    InvalidTensorError,
    TensorInfo,
    check_num_threads,
    choose_labels,
    parse_labels,
    read_labels,
)
from pipeline_nodes.inference.backends.onnxruntime import OnnxRuntimeModel
from pipeline_nodes.inference.backends.tflite import TFLiteModel

IMAGE_OK = np.zeros((1, 4, 4, 3), dtype=np.float32)


@pytest.fixture
def onnx_model(onnx_path: Path):
    with OnnxRuntimeModel.load(onnx_path) as model:
        yield model


def infer_error(model, inputs) -> str:
    with pytest.raises(InvalidTensorError) as info:
        model.infer(inputs)
    return str(info.value)


def test_infer_rejects_wrong_dtype_without_casting(onnx_model):
    message = infer_error(onnx_model, {"image": np.zeros((1, 4, 4, 3), dtype=np.uint8)})
    assert message == "input 'image': expected dtype float32, got uint8 (shape (1, 4, 4, 3))"


@pytest.mark.parametrize(
    ("dtype", "shown"),
    [
        (np.float64, "float64"),  # the usual numpy default
        (np.float16, "float16"),  # narrower float
        (np.dtype(">f4"), ">f4"),  # float32, but big-endian: not the same bytes
    ],
)
def test_infer_rejects_other_float_dtypes(onnx_model, dtype, shown):
    message = infer_error(onnx_model, {"image": np.zeros((1, 4, 4, 3), dtype=dtype)})
    assert f"expected dtype float32, got {shown}" in message


@pytest.mark.parametrize(
    ("shape", "why"),
    [
        ((1, 4, 4), "rank 3 instead of 4"),
        ((1, 4, 4, 3, 1), "rank 5 instead of 4"),
        ((1, 4, 5, 3), "a static axis differs"),
        ((2, 3, 4, 3), "a static axis differs next to the dynamic one"),
    ],
)
def test_infer_rejects_wrong_shape(onnx_model, shape, why):
    message = infer_error(onnx_model, {"image": np.zeros(shape, dtype=np.float32)})
    assert message == (
        f"input 'image': expected shape (-1, 4, 4, 3) (-1 = any size), got {shape} (dtype float32)"
    ), why


@pytest.mark.parametrize("batch", [1, 2, 7])
def test_infer_accepts_any_size_on_dynamic_axis(onnx_model, batch):
    outputs = onnx_model.infer({"image": np.ones((batch, 4, 4, 3), dtype=np.float32)})
    assert outputs["scores"].shape == (batch, 4, 4, 3)


def test_infer_rejects_missing_input_and_lists_model_inputs(onnx_model):
    message = infer_error(onnx_model, {})
    assert message == (
        "missing input 'image'\nmodel 'tiny' has inputs: image float32 (-1, 4, 4, 3)"
    )


def test_infer_rejects_misspelt_input_with_did_you_mean(onnx_model):
    message = infer_error(onnx_model, {"imgae": IMAGE_OK})
    assert message.splitlines() == [
        "unknown input 'imgae'; did you mean 'image'?",
        "missing input 'image'",
        "model 'tiny' has inputs: image float32 (-1, 4, 4, 3)",
    ]


def test_infer_rejects_extra_input_next_to_valid_ones(onnx_model):
    # No "did you mean 'image'": that input is already given.
    message = infer_error(onnx_model, {"image": IMAGE_OK, "imag": IMAGE_OK})
    assert message.splitlines() == [
        "unknown input 'imag'",
        "model 'tiny' has inputs: image float32 (-1, 4, 4, 3)",
    ]


def test_infer_rejects_non_array_input(onnx_model):
    message = infer_error(onnx_model, {"image": IMAGE_OK.tolist()})
    assert message == ("input 'image': expected a numpy.ndarray of float32 (-1, 4, 4, 3), got list")


def test_invalid_tensor_error_is_a_value_error_listing_every_problem(onnx_model):
    with pytest.raises(ValueError) as info:
        onnx_model.infer({"image": np.zeros((1, 4, 4), np.uint8), "extra": IMAGE_OK})
    assert isinstance(info.value, InvalidTensorError)
    assert len(info.value.problems) == 3
    assert info.value.problems[0] == "unknown input 'extra'"
    assert "expected dtype float32, got uint8" in info.value.problems[1]


def test_tflite_model_validates_inputs_the_same_way(tflite_path):
    with TFLiteModel.load(tflite_path) as model:
        message = infer_error(model, {"features": np.zeros((2, 4), dtype=np.float64)})
        assert message == "input 'features': expected dtype float32, got float64 (shape (2, 4))"
        message = infer_error(model, {"features": np.zeros((2, 5), dtype=np.float32)})
        assert "expected shape (-1, 4) (-1 = any size), got (2, 5)" in message


def test_tensor_info_accepts_matching_array():
    info = TensorInfo(name="x", dtype="uint8", shape=(-1, 2))
    assert info.problem_with(np.zeros((5, 2), dtype=np.uint8)) is None
    assert info.problem_with(np.zeros((5, 2), dtype=np.int8)) is not None


def test_tensor_info_string_dtype_accepts_text_arrays():
    info = TensorInfo(name="text", dtype="str", shape=(-1,))
    assert info.problem_with(np.array(["a", "b"])) is None
    assert info.problem_with(np.array(["a"], dtype=object)) is None
    assert info.problem_with(np.array([1.0])) is not None


def test_infer_after_close_raises(onnx_path):
    model = OnnxRuntimeModel.load(onnx_path)
    model.close()
    model.close()  # idempotent
    assert model.closed
    with pytest.raises(RuntimeError, match="'tiny' is closed"):
        model.infer({"image": IMAGE_OK})


def test_context_manager_closes_model(onnx_path):
    with OnnxRuntimeModel.load(onnx_path) as model:
        open_repr = repr(model)
        was_closed = model.closed
    assert "'tiny' backend=onnxruntime" in open_repr
    assert not was_closed
    assert model.closed
    assert "closed" in repr(model)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("face\nbackground\n", ("face", "background")),  # one per line, trailing newline
        ("a\r\nb\r\n\r\n", ("a", "b")),  # CRLF and trailing blank lines
        ("???\n\nperson\n", ("???", "", "person")),  # inner blank keeps class indexes
        ('["cat", "dog"]', ("cat", "dog")),  # JSON list
        ('  ["x"]\n', ("x",)),  # JSON with surrounding whitespace
        ("", ()),  # nothing
    ],
)
def test_parse_labels(text, expected):
    assert parse_labels(text) == expected


@pytest.mark.parametrize("text", ['["a", 1]', "[not json", '["a"'])
def test_parse_labels_rejects_bad_json(text):
    with pytest.raises(ValueError, match="JSON"):
        parse_labels(text)


def test_read_labels_from_file_path_as_str_and_path(tmp_path):
    label_file = tmp_path / "labels.txt"
    label_file.write_text("cat\ndog\n", encoding="utf-8")
    assert read_labels(str(label_file)) == ("cat", "dog")
    assert read_labels(label_file) == ("cat", "dog")


def test_read_labels_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="label file not found"):
        read_labels(tmp_path / "nope.txt")


def test_read_labels_rejects_non_strings():
    with pytest.raises(TypeError, match="labels must be strings"):
        read_labels(["a", 2])  # type: ignore[list-item]


def test_choose_labels_prefers_embedded_and_warns(caplog):
    assert choose_labels(("a",), ["b"], "m") == ("a",)
    assert "carries 1 labels of its own" in caplog.text
    assert choose_labels((), ["b"], "m") == ("b",)
    assert choose_labels((), None, "m") == ()


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "2"])
def test_check_num_threads_rejects_bad_values(value):
    with pytest.raises(ValueError, match="num_threads"):
        check_num_threads(value)


@pytest.mark.parametrize("value", [None, 1, 4])
def test_check_num_threads_accepts_none_and_positive(value):
    check_num_threads(value)

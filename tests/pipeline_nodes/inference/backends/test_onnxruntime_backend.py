"""OnnxRuntimeModel: metadata, exact outputs, execution providers, threads, labels, imports."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
from tiny_models import ONNX_OFFSET, ONNX_SCALE, build_onnx_model

from pipeline.errors import MissingDependencyError
from pipeline_nodes.inference.backends.base import TensorInfo
from pipeline_nodes.inference.backends.onnxruntime import (
    DEFAULT_PROVIDERS,
    OnnxRuntimeModel,
    choose_providers,
)

ort = pytest.importorskip("onnxruntime")

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TRT = "TensorrtExecutionProvider"
KNOWN = [TRT, CUDA, "OpenVINOExecutionProvider", "AzureExecutionProvider", CPU]


def random_image(batch: int = 2) -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.standard_normal((batch, 4, 4, 3)).astype(np.float32)


def test_metadata_describes_tensors_with_dynamic_axes(onnx_path):
    with OnnxRuntimeModel.load(onnx_path) as model:
        meta = model.metadata()
    assert meta.name == "tiny"
    assert meta.description == "tiny affine test model"
    assert meta.inputs == (TensorInfo("image", "float32", (-1, 4, 4, 3)),)
    assert meta.outputs == (TensorInfo("scores", "float32", (-1, 4, 4, 3)),)
    assert meta.labels == ()
    assert meta.backend == "onnxruntime"
    assert meta.providers[-1] == CPU


@pytest.mark.parametrize("batch", [1, 3])
def test_infer_output_is_bit_identical_to_raw_session(onnx_path, batch):
    image = random_image(batch)
    raw = ort.InferenceSession(str(onnx_path), providers=[CPU])
    (expected,) = raw.run(None, {"image": image})
    with OnnxRuntimeModel.load(onnx_path, providers=["cpu"]) as model:
        outputs = model.infer({"image": image})
    assert list(outputs) == ["scores"]
    assert outputs["scores"].dtype == expected.dtype
    assert outputs["scores"].tobytes() == expected.tobytes()
    np.testing.assert_allclose(outputs["scores"], image * ONNX_SCALE + ONNX_OFFSET, rtol=1e-6)


def test_infer_accepts_non_contiguous_input_unchanged(onnx_path):
    image = np.ascontiguousarray(random_image(4))[::2]
    assert not image.flags.c_contiguous
    with OnnxRuntimeModel.load(onnx_path) as model:
        outputs = model.infer({"image": image})
    np.testing.assert_array_equal(outputs["scores"], image * ONNX_SCALE + ONNX_OFFSET)


def test_infer_outputs_are_not_overwritten_by_next_call(onnx_path):
    with OnnxRuntimeModel.load(onnx_path) as model:
        first = model.infer({"image": np.ones((1, 4, 4, 3), np.float32)})["scores"]
        kept = first.copy()
        model.infer({"image": np.full((1, 4, 4, 3), 9.0, np.float32)})
    np.testing.assert_array_equal(first, kept)


@pytest.mark.parametrize(
    ("requested", "available", "expected"),
    [
        # aliases map to full names and keep the requested order
        (["cuda", "cpu"], [TRT, CUDA, CPU], [CUDA, CPU]),
        # aliases are case-insensitive, full names are accepted as written
        (["TensorRT", CUDA], [TRT, CUDA, CPU], [TRT, CUDA, CPU]),
        # an unavailable provider is dropped and CPU is the fallback
        (["tensorrt", "cuda"], [CPU, "AzureExecutionProvider"], [CPU]),
        # CPU is always added last, even when not asked for
        (["cuda"], [CUDA, CPU], [CUDA, CPU]),
        # repeats collapse
        (["cpu", CPU, "cpu"], [CPU], [CPU]),
        # a single string is one provider, not a list of letters
        ("cuda", [CUDA, CPU], [CUDA, CPU]),
        # an empty list still runs on CPU
        ([], [CUDA, CPU], [CPU]),
        # default: TensorRT, CUDA, CPU where available, other providers left out
        (None, ["AzureExecutionProvider", CUDA, CPU], [CUDA, CPU]),
        (None, [CPU, CUDA, TRT], [TRT, CUDA, CPU]),
    ],
)
def test_choose_providers(requested, available, expected):
    assert choose_providers(requested, available, KNOWN) == expected


def test_choose_providers_warns_about_unavailable_request(caplog):
    with caplog.at_level(logging.WARNING, logger="pipeline_nodes.inference.backends.onnxruntime"):
        choose_providers(["cuda"], [CPU], KNOWN)
    assert "['CUDAExecutionProvider'] were requested" in caplog.text


def test_default_providers_order():
    assert DEFAULT_PROVIDERS == (TRT, CUDA, CPU)


def test_unknown_provider_is_an_error_listing_known_names():
    with pytest.raises(ValueError, match="unknown execution provider 'cuda2'") as info:
        choose_providers(["cuda2"], [CPU], KNOWN)
    message = str(info.value)
    assert "did you mean 'cuda'?" in message
    assert "tensorrt, cuda, cpu" in message
    assert "OpenVINOExecutionProvider" in message


def test_load_with_unknown_provider_fails_before_creating_session(onnx_path):
    with pytest.raises(ValueError, match="unknown execution provider 'gpu'"):
        OnnxRuntimeModel.load(onnx_path, providers=["gpu"])


def test_load_falls_back_to_cpu_and_logs_providers(onnx_path, caplog):
    available = ort.get_available_providers()
    with caplog.at_level(logging.INFO, logger="pipeline_nodes.inference.backends.onnxruntime"):
        model = OnnxRuntimeModel.load(onnx_path, providers=["tensorrt", "cuda", "cpu"])
    with model:
        used = model.metadata().providers
        assert used == tuple(model._session.get_providers())
    assert used[-1] == CPU
    if CUDA not in available and TRT not in available:
        assert used == (CPU,)
    assert "requested ['tensorrt', 'cuda', 'cpu']" in caplog.text
    assert f"available {available}" in caplog.text
    assert f"used {list(used)}" in caplog.text


def test_num_threads_sets_intra_op_threads(onnx_path):
    with OnnxRuntimeModel.load(onnx_path, num_threads=2) as model:
        options = model._session.get_session_options()
        assert options.intra_op_num_threads == 2
        assert options.inter_op_num_threads == 1
        outputs = model.infer({"image": random_image()})
    assert outputs["scores"].shape == (2, 4, 4, 3)


def test_num_threads_below_one_is_rejected(onnx_path):
    with pytest.raises(ValueError, match="num_threads must be an integer >= 1"):
        OnnxRuntimeModel.load(onnx_path, num_threads=0)


@pytest.mark.parametrize(
    "stored",
    [
        "face\nbackground\n",  # newline-separated
        '["face", "background"]',  # JSON list
    ],
)
def test_labels_from_metadata_props(tmp_path, stored):
    path = build_onnx_model(tmp_path, metadata_props={"labels": stored})
    with OnnxRuntimeModel.load(path) as model:
        assert model.metadata().labels == ("face", "background")


def test_labels_from_label_file_argument(onnx_path, tmp_path):
    label_file = tmp_path / "classes.txt"
    label_file.write_text("cat\ndog\nbird\n", encoding="utf-8")
    with OnnxRuntimeModel.load(onnx_path, labels=str(label_file)) as model:
        assert model.metadata().labels == ("cat", "dog", "bird")


def test_labels_from_list_argument(onnx_path):
    with OnnxRuntimeModel.load(onnx_path, labels=["a", "b"]) as model:
        assert model.metadata().labels == ("a", "b")


def test_embedded_labels_win_over_argument(tmp_path, caplog):
    path = build_onnx_model(tmp_path, metadata_props={"labels": "face"})
    with OnnxRuntimeModel.load(path, labels=["other"]) as model:
        assert model.metadata().labels == ("face",)
    assert "the labels argument is ignored" in caplog.text


def test_the_same_labels_as_the_files_are_no_warning(tmp_path, caplog):
    # A catalog model's labels repeat the file's: loading it says nothing about them.
    path = build_onnx_model(tmp_path, metadata_props={"labels": "face"})
    with OnnxRuntimeModel.load(path, labels=["face"]) as model:
        assert model.metadata().labels == ("face",)
    assert "labels" not in caplog.text


def test_missing_model_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="model file not found"):
        OnnxRuntimeModel.load(tmp_path / "absent.onnx")


def test_missing_onnxruntime_names_the_extra(onnx_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingDependencyError) as info:
        OnnxRuntimeModel.load(onnx_path)
    assert info.value.package == "onnxruntime"
    assert info.value.extra == "onnx"
    assert "pip install '.[onnx]'" in str(info.value)
    assert isinstance(info.value, ImportError)

"""load_model: backend by suffix, explicit backends, argument errors and catalog names."""

from __future__ import annotations

import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from tiny_models import TFLITE_INPUT, TFLITE_OUTPUT

from pipeline.errors import MissingDependencyError
from pipeline_nodes.inference.backends.onnxruntime import OnnxRuntimeModel
from pipeline_nodes.inference.backends.tflite import TFLiteModel
from pipeline_nodes.inference.service import load_model

STORE = "pipeline_nodes.inference.models.store"


def test_onnx_suffix_loads_with_onnxruntime(onnx_path):
    with load_model(onnx_path) as model:
        assert isinstance(model, OnnxRuntimeModel)
        assert model.metadata().backend == "onnxruntime"
        outputs = model.infer({"image": np.ones((1, 4, 4, 3), np.float32)})
    np.testing.assert_array_equal(outputs["scores"], np.full((1, 4, 4, 3), -0.75, np.float32))


def test_tflite_suffix_loads_with_tflite(tflite_path):
    with load_model(str(tflite_path), num_threads=1) as model:
        assert isinstance(model, TFLiteModel)
        outputs = model.infer({TFLITE_INPUT: np.zeros((2, 4), np.float32)})
    assert outputs[TFLITE_OUTPUT].shape == (2, 3)


def test_suffix_is_case_insensitive(onnx_path, tmp_path):
    upper = shutil.copy(onnx_path, tmp_path / "MODEL.ONNX")
    with load_model(upper) as model:
        assert model.metadata().backend == "onnxruntime"


def test_unknown_suffix_is_an_error_naming_the_choices(onnx_path, tmp_path):
    renamed = shutil.copy(onnx_path, tmp_path / "frozen.pb")
    with pytest.raises(ValueError, match=r"from its suffix '\.pb'") as info:
        load_model(renamed)
    assert ".onnx (onnxruntime), .tflite (tflite)" in str(info.value)
    assert "backend='onnxruntime'" in str(info.value)


def test_explicit_backend_loads_any_suffix(onnx_path, tmp_path):
    renamed = shutil.copy(onnx_path, tmp_path / "model.bin")
    with load_model(renamed, backend="onnxruntime", providers=["cpu"]) as model:
        assert model.metadata().providers == ("CPUExecutionProvider",)


def test_unknown_backend_is_an_error(onnx_path):
    with pytest.raises(ValueError, match="unknown backend 'tensorflow'; expected one of: auto"):
        load_model(onnx_path, backend="tensorflow")  # type: ignore[arg-type]


def test_providers_with_tflite_is_an_error(tflite_path):
    with pytest.raises(ValueError, match="apply only to the onnxruntime backend"):
        load_model(tflite_path, providers=["cuda"])


def test_labels_argument_reaches_backend(onnx_path):
    with load_model(onnx_path, labels=["yes", "no"]) as model:
        assert model.metadata().labels == ("yes", "no")


def test_missing_runtime_through_load_model(onnx_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingDependencyError, match=r"\.\[onnx\]"):
        load_model(onnx_path)


def test_a_missing_file_is_neither_a_file_nor_a_catalog_name(tmp_path):
    with pytest.raises(LookupError, match=r"'.*absent\.onnx': not a file, a catalog name"):
        load_model(tmp_path / "absent.onnx")


def fake_store(model_path: Path, labels: list[str]) -> types.ModuleType:
    """A stand-in catalog module, so these tests do not depend on the real one's models."""
    store = types.ModuleType(STORE)

    def resolve_model(name_or_path, models_dir=None):
        if name_or_path != "tiny_affine":
            raise LookupError(f"no model named {name_or_path!r}")
        return model_path

    def model_info(name):
        if name != "tiny_affine":
            raise LookupError(name)
        return {"labels": labels, "task": "test"}

    store.resolve_model = resolve_model  # type: ignore[attr-defined]
    store.model_info = model_info  # type: ignore[attr-defined]
    return store


def test_catalog_name_resolves_with_catalog_labels(onnx_path, monkeypatch):
    monkeypatch.setitem(sys.modules, STORE, fake_store(onnx_path, ["p", "q"]))
    with load_model("tiny_affine") as model:
        assert model.metadata().labels == ("p", "q")
        assert model.metadata().backend == "onnxruntime"


def test_labels_argument_wins_over_catalog_labels(onnx_path, monkeypatch):
    monkeypatch.setitem(sys.modules, STORE, fake_store(onnx_path, ["p", "q"]))
    with load_model("tiny_affine", labels=["mine"]) as model:
        assert model.metadata().labels == ("mine",)


def test_unknown_catalog_name_raises_lookup_error(onnx_path, monkeypatch):
    monkeypatch.setitem(sys.modules, STORE, fake_store(onnx_path, []))
    with pytest.raises(LookupError, match="no model named 'nope'"):
        load_model("nope")

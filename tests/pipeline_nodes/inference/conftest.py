"""Fixtures for the inference tests: tiny models written to a temporary directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_models import build_onnx_model, build_tflite_model


@pytest.fixture
def onnx_path(tmp_path: Path) -> Path:
    """The tiny ONNX model (``image`` float32 [-1, 4, 4, 3] -> ``scores``), no labels."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    return build_onnx_model(tmp_path)


@pytest.fixture
def tflite_path(tmp_path: Path) -> Path:
    """The tiny TFLite model (``features`` float32 [-1, 4] -> ``probabilities`` [-1, 3])."""
    pytest.importorskip("ai_edge_litert")
    return build_tflite_model(tmp_path)

"""A TensorFlow SavedModel built here: uploaded, run in the cloud, converted for the edge.

TensorFlow runs only in subprocesses (the model builder, the server, the converter): its
import warnings would fail this process's ``filterwarnings = error``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.cli import main

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("tensorflow") is None,
        reason="the tensorflow extra is not installed",
    ),
]

BUILD = """
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf

class ColorClassifier(tf.Module):
    '''Mean colour (RGB, 0..1) -> softmax over [red, blue], fixed weights.'''

    def __init__(self):
        super().__init__()
        self.w = tf.constant([[10.0, -10.0], [0.0, 0.0], [-10.0, 10.0]])

    @tf.function(input_signature=[tf.TensorSpec([1, 32, 32, 3], tf.float32, name="image")])
    def __call__(self, image):
        return {"scores": tf.nn.softmax(tf.matmul(tf.reduce_mean(image, axis=[1, 2]), self.w))}

m = ColorClassifier()
tf.saved_model.save(m, sys.argv[1], signatures={"serving_default": m.__call__})
"""

RUN_PARAMS = '{"input_size": [32, 32], "mean": 0, "std": 255, "color": "RGB", "resize": "stretch"}'


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("savedmodel")
    subprocess.run(
        [sys.executable, "-c", BUILD, str(folder / "color_classifier")],
        check=True, capture_output=True, timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip
    archive = folder / "color_classifier.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder / "color_classifier", arcname="color_classifier")
    return archive


def _image(path: Path, bgr: tuple[int, int, int]) -> Path:
    cv2.imwrite(str(path), np.full((48, 64, 3), bgr, np.uint8))
    return path


@pytest.fixture(scope="module")
def uploaded(saved_model, sqlite_cloud, tmp_path_factory) -> tuple[str, str, str, str]:
    """The SavedModel uploaded as ``colors`` version 1: ``(org_id, org, key_id, key)``."""
    org_id, org, key_id, key = sqlite_cloud.org_with_key()
    labels = tmp_path_factory.mktemp("labels") / "labels.txt"
    labels.write_text("red\nblue\n")
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "registry", "upload", str(saved_model), "--org",
         org, "--name", "colors", "--version", "1", "--type", "classification", "--labels",
         str(labels), "--params", RUN_PARAMS, "--address", sqlite_cloud.address,
         "--key-id", key_id, "--key", key],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return org_id, org, key_id, key


@pytest.fixture
def as_uploader(uploaded, sqlite_cloud, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setenv("PIPELINE_CLOUD_ADDRESS", sqlite_cloud.address)
    monkeypatch.setenv("PIPELINE_CLOUD_KEY_ID", uploaded[2])
    monkeypatch.setenv("PIPELINE_CLOUD_KEY", uploaded[3])
    return uploaded


def test_savedmodel_upload_is_checked_and_listed(as_uploader, capsys, tmp_path):
    assert main(["registry", "ls", "--json"]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (row["name"], row["version"], row["framework"]) == ("colors", "1", "tensorflow")
    assert row["inputs"] == [{"name": "image", "dtype": "float32", "shape": [1, 32, 32, 3]}]
    assert row["outputs"] == [{"name": "scores", "dtype": "float32", "shape": [1, 2]}]
    assert row["labels"] == ["red", "blue"]
    bad = tmp_path / "broken.zip"
    bad.write_bytes(b"PK not really")
    code = main(["registry", "upload", str(bad), "--name", "broken", "--type", "classification"])
    assert code == 1
    assert "not a readable archive" in capsys.readouterr().err


def test_savedmodel_runs_in_the_cloud(as_uploader, capsys, tmp_path):
    org_id = as_uploader[0]
    main(["data", "upload", str(_image(tmp_path / "blue.png", (255, 0, 0)))])
    blue = capsys.readouterr().out.split()[0]
    code = main(["infer", "--binary-data-id", blue, "--model-name", "colors", "--model-org-id",
                 org_id, "--model-version", "1", "--org-id", org_id])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "  Tensor Name: scores\n    Shape: [1 2]\n    Values: [0.0000, 1.0000]" in out
    assert "  Classification Label: blue\n    Confidence: 1.0000" in out


@pytest.mark.parametrize("target", ["onnx", "tflite"])
def test_savedmodel_converts_for_the_edge(saved_model, tmp_path, target):
    out = tmp_path / f"colors.{target}"
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "registry", "convert", str(saved_model),
         "--to", target, "-o", str(out)],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    from pipeline_nodes.inference import load_classifier

    red = np.zeros((48, 64, 3), np.uint8)
    red[..., 2] = 255
    with load_classifier(out, labels=["red", "blue"], input_size=(32, 32), mean=0, std=255,
                         color="RGB", resize="stretch") as classifier:  # fmt: skip
        found = classifier.classify(red)
    assert found.class_names[0] == "red"
    assert float(found.confidence[0]) > 0.99

"""A graph's detector node runs a registry model by ``org:name@version``, downloaded once."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from pipeline.cli import main
from pipeline.testing import run_node
from pipeline_nodes.inference import load_detector
from pipeline_nodes.inference.registry_models import parse_registry_ref, registry_cache_dir

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("acme:faces@2025-04-14T16-38-25", ("acme", "faces", "2025-04-14T16-38-25")),
        ("acme:faces", ("acme", "faces", "")),
        ("face_short_range", None),  # a catalog name
        ("models/face.tflite", None),  # a path
        ("a:b:c", None),
    ],
)
def test_parse_registry_ref(text, expected):
    assert parse_registry_ref(text) == expected


def test_detector_node_runs_a_registry_model(
    sqlite_cloud, catalog_model, monkeypatch, tmp_path, capsys
):
    _, org, key_id, key = sqlite_cloud.org_with_key()
    monkeypatch.setenv("PIPELINE_MODELS_DIR", str(catalog_model.parent))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("PIPELINE_CLOUD_ADDRESS", sqlite_cloud.address)
    monkeypatch.setenv("PIPELINE_CLOUD_KEY_ID", key_id)
    monkeypatch.setenv("PIPELINE_CLOUD_KEY", key)
    assert main(["registry", "upload", str(catalog_model), "--name", "faces", "--version", "7",
                 "--type", "object_detection"]) == 0  # fmt: skip
    capsys.readouterr()
    image = cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR)
    with load_detector("face_short_range") as local:
        expected = local.detect(image)
    with load_detector(f"{org}:faces") as remote:  # newest version, downloaded
        found = remote.detect(image)
    np.testing.assert_allclose(found.xyxy, expected.xyxy, atol=1e-6)
    cached = registry_cache_dir() / org / "faces" / "7" / catalog_model.name
    assert cached.read_bytes() == catalog_model.read_bytes()
    # A pinned, cached version needs no server: the node runs with the cloud unreachable.
    monkeypatch.setenv("PIPELINE_CLOUD_ADDRESS", "127.0.0.1:1")
    from pipeline import Frame

    frame = Frame(image=image, seq=1, source="test")
    run = run_node("detector", params={"model": f"{org}:faces@7"}, inputs={"frames": [frame]})
    (dets,) = run.sent["detections"]
    assert list(dets.class_names) == ["face"]
    np.testing.assert_allclose(dets.xyxy, expected.xyxy, atol=1e-6)
    monkeypatch.setenv("PIPELINE_CLOUD_ADDRESS", sqlite_cloud.address)
    with pytest.raises(LookupError, match="not found"):
        load_detector(f"{org}:nothing")

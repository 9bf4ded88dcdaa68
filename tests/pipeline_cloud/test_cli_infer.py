"""The command line against a running cloud: registry, data, ``pipeline infer`` (Viam's layout)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from pipeline.cli import main
from pipeline_nodes.inference import load_detector

pytestmark = pytest.mark.integration


@pytest.fixture
def astronaut(tmp_path: Path) -> Path:
    path = tmp_path / "astronaut.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture
def as_org(sqlite_cloud, monkeypatch, tmp_path):
    """Switch the CLI's credentials (environment) to a new organisation's key."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("PIPELINE_CLOUD_ADDRESS", sqlite_cloud.address)

    def use(prefix: str = "org") -> tuple[str, str]:
        org_id, name, key_id, key = sqlite_cloud.org_with_key(prefix)
        monkeypatch.setenv("PIPELINE_CLOUD_KEY_ID", key_id)
        monkeypatch.setenv("PIPELINE_CLOUD_KEY", key)
        return org_id, name

    return use


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _upload_model_and_image(capsys, org_name: str, model: Path, image: Path) -> tuple[str, str]:
    code, out, err = run(
        capsys, "registry", "upload", str(model), "--org", org_name, "--name", "blazeface",
        "--type", "object_detection",
    )  # fmt: skip
    assert code == 0, err
    version = re.search(r"version:\s+(\S+)", out)
    assert version is not None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d", version.group(1))
    code, out, err = run(capsys, "data", "upload", str(image), "--org", org_name, "--tags", "demo")
    assert code == 0, err
    return version.group(1), out.split()[0]


def test_infer_prints_the_face_in_viams_layout(capsys, as_org, catalog_model, astronaut):
    org_id, org_name = as_org()
    version, binary_id = _upload_model_and_image(capsys, org_name, catalog_model, astronaut)
    code, out, err = run(
        capsys, "infer", "--binary-data-id", binary_id, "--model-name", "blazeface",
        "--model-org-id", org_id, "--model-version", version, "--org-id", org_id,
        "--max-values", "4",
    )  # fmt: skip
    assert code == 0, err
    lines = out.splitlines()
    assert lines[:2] == ["Inference Response:", "Output Tensors:"]
    assert "  Tensor Name: regressors" in lines
    assert "    Shape: [1 896 16]" in lines
    values = [line for line in lines if line.startswith("    Values: ")]
    assert len(values) == 2
    assert all(re.fullmatch(r"    Values: \[(-?\d+\.\d{4}, ){4}\.\.\.\]", v) for v in values)
    i = lines.index("Annotations:")
    assert lines[i + 1] == "Bounding Box Format: [x_min, y_min, x_max, y_max]"
    assert re.fullmatch(r"  Bounding Box ID: [0-9a-f-]{36}, Label: face", lines[i + 2])
    coords = re.fullmatch(r"    Coordinates: \[(\S+), (\S+), (\S+), (\S+)\]", lines[i + 3])
    assert coords is not None
    assert all(re.fullmatch(r"\d\.\d{6}", c) for c in coords.groups())
    assert re.fullmatch(r"    Confidence: 0\.\d{4}", lines[i + 4])
    assert len(lines) == i + 5
    # The same box as the graph's detector node finds in the same (decoded) image.
    image = cv2.imread(str(astronaut))
    with load_detector("face_short_range") as detector:
        expected = detector.detect(image)
    np.testing.assert_allclose([float(c) for c in coords.groups()], expected.xyxy[0], atol=2e-6)

    code, out, _ = run(
        capsys, "infer", "--binary-data-id", binary_id, "--model-name", "blazeface",
        "--model-org-id", org_id, "--model-version", version, "--org-id", org_name, "--json",
    )  # fmt: skip
    assert code == 0
    reply = json.loads(out)
    tensors = {t["name"]: t for t in reply["output_tensors"]}  # a protobuf map: no order
    assert sorted(tensors) == ["classificators", "regressors"]
    assert len(tensors["regressors"]["values"]) == 896 * 16
    assert tensors["regressors"]["dtype"] == "float32"
    assert [b["label"] for b in reply["annotations"]["bboxes"]] == ["face"]


def test_infer_errors_are_one_line_and_exit_1(capsys, as_org, catalog_model, astronaut):
    owner_id, owner = as_org("owner")
    version, owner_image = _upload_model_and_image(capsys, owner, catalog_model, astronaut)
    other_id, other = as_org("other")
    code, out, _ = run(capsys, "data", "upload", str(astronaut), "--org", other)
    other_image = out.split()[0]

    def infer(binary: str, model_org: str, org: str, model_version: str = version):
        return run(
            capsys, "infer", "--binary-data-id", binary, "--model-name", "blazeface",
            "--model-org-id", model_org, "--model-version", model_version, "--org-id", org,
        )  # fmt: skip

    cases = [
        ((other_image, owner_id, other_id), "error: not found: no model"),  # private model
        ((owner_image, owner_id, owner_id), "error: permission denied:"),  # another org's data
        ((owner_image, owner_id, other_id), "error: not found: no binary data"),
        (("no-such-id", owner_id, other_id), "error: not found:"),
    ]
    for args, expected in cases:
        code, out, err = infer(*args)
        assert (code, out) == (1, ""), (args, err)
        assert err.startswith(expected), (args, err)
        assert len(err.strip().splitlines()) == 1
    # An unknown version lists the known ones.
    code, _, err = run(capsys, "registry", "upload", str(catalog_model), "--name", "blazeface",
                       "--type", "object_detection", "--version", "1")  # fmt: skip
    assert code == 0, err
    code, out, err = infer(other_image, other_id, other_id, "9")
    assert code == 1
    assert "has no version '9'; versions: 1" in err


def test_sharing_lets_another_organisation_run_a_model(
    capsys, as_org, sqlite_cloud, catalog_model, astronaut
):
    owner_id, owner = as_org("owner")
    version, _ = _upload_model_and_image(capsys, owner, catalog_model, astronaut)
    other_id, other = as_org("other")
    _, out, _ = run(capsys, "data", "upload", str(astronaut))
    image = out.split()[0]
    code, out, _ = run(capsys, "registry", "ls", "--json")
    assert (code, out) == (0, "")
    # The owner shares: back to the owner's key for that.
    store = sqlite_cloud.store()
    key_id, key = store.create_key(owner_id)
    store.sessions.kw["bind"].dispose()
    code, out, err = run(capsys, "registry", "share", "blazeface", "--with", other,
                         "--key-id", key_id, "--key", key)  # fmt: skip
    assert code == 0, err
    code, out, _ = run(capsys, "registry", "ls", "--json")
    (row,) = [json.loads(line) for line in out.splitlines()]
    assert (row["organization_id"], row["name"], row["version"]) == (owner_id, "blazeface", version)
    assert row["inputs"] == [{"name": "input", "dtype": "float32", "shape": [1, 128, 128, 3]}]
    code, out, err = run(
        capsys, "infer", "--binary-data-id", image, "--model-name", "blazeface",
        "--model-org-id", owner_id, "--model-version", version, "--org-id", other_id,
    )  # fmt: skip
    assert code == 0, err
    assert "Label: face" in out


def test_login_file_and_server_down(capsys, as_org, sqlite_cloud, monkeypatch, tmp_path):
    import os

    _, name = as_org()
    key_id, key = os.environ["PIPELINE_CLOUD_KEY_ID"], os.environ["PIPELINE_CLOUD_KEY"]
    for var in ("PIPELINE_CLOUD_ADDRESS", "PIPELINE_CLOUD_KEY_ID", "PIPELINE_CLOUD_KEY"):
        monkeypatch.delenv(var)
    code, _, err = run(capsys, "data", "ls")
    assert code == 1
    assert "pipeline cloud login" in err
    code, out, err = run(capsys, "cloud", "login", "--address", sqlite_cloud.address,
                         "--key-id", key_id, "--key", key)  # fmt: skip
    assert code == 0, err
    assert f"as organization {name}" in out
    saved = tmp_path / "config" / "pipeline" / "cloud.json"
    assert oct(saved.stat().st_mode & 0o777) == "0o600"
    code, out, err = run(capsys, "data", "ls")
    assert (code, out) == (0, "")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "infer", "--binary-data-id", "x", "--model-name", "m",
         "--model-org-id", "o", "--model-version", "v", "--org-id", "o", "--address", dead],
        capture_output=True, text=True, check=False, env={**os.environ},
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith(f"error: cannot reach the cloud {dead}")


def test_data_ls_and_export(capsys, as_org, astronaut, tmp_path):
    _, name = as_org()
    code, out, _ = run(capsys, "data", "upload", str(astronaut), str(astronaut), "--tags", "a,b")
    ids = [line.split()[0] for line in out.splitlines()]
    assert code == 0
    assert len(set(ids)) == 2
    code, out, _ = run(capsys, "data", "ls", "--json", "--tags", "b")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["binary_data_id"] for r in rows] == ids
    assert rows[0]["tags"] == ["a", "b"]
    assert rows[0]["mime_type"] == "image/jpeg"
    code, out, _ = run(capsys, "data", "export", "--org", name, str(tmp_path / "export"))
    assert code == 0
    index = [
        json.loads(line)
        for line in (tmp_path / "export" / "metadata.jsonl").read_text().splitlines()
    ]
    assert [r["binary_data_id"] for r in index] == ids
    assert (tmp_path / "export" / index[0]["path"]).read_bytes() == astronaut.read_bytes()
    code, _, err = run(capsys, "data", "ls", "--org", "somebody-else")
    assert code == 1
    assert "belongs to organization" in err


def test_infer_with_an_onnx_classifier_prints_its_classes(capsys, as_org, astronaut):
    from pipeline_nodes.inference import load_classifier
    from pipeline_nodes.inference.models.store import resolve_model

    org_id, _ = as_org()
    model = resolve_model("face_classifier")  # ONNX, a catalog model uploaded as it is
    code, _, err = run(capsys, "registry", "upload", str(model), "--name", "is-face",
                       "--version", "1", "--type", "classification")  # fmt: skip
    assert code == 0, err
    _, out, _ = run(capsys, "data", "upload", str(astronaut))
    image_id = out.split()[0]
    code, out, err = run(
        capsys, "infer", "--binary-data-id", image_id, "--model-name", "is-face",
        "--model-org-id", org_id, "--model-version", "1", "--org-id", org_id,
    )  # fmt: skip
    assert code == 0, err
    with load_classifier("face_classifier") as local:
        expected = local.classify(cv2.imread(str(astronaut)))
    lines = out.splitlines()
    i = lines.index("Bounding Box Format: [x_min, y_min, x_max, y_max]")
    printed = lines[i + 1 :]
    assert printed == [
        line
        for name, conf in zip(expected.class_names, expected.confidence)
        for line in (f"  Classification Label: {name}", f"    Confidence: {conf:.4f}")
    ]
    assert printed[0] == "  Classification Label: face"

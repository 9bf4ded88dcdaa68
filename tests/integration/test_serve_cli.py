"""`pipeline call` and `pipeline serve-cert`, against a graph whose file has a serve: section."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from pipeline.serve.images import decode_image, encode_image
from tests.integration.served import ServedGraph, free_port, served_graph_text, wait_for_frames

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _pipeline(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, timeout=60
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def from_file(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("from_file")
    address = f"127.0.0.1:{free_port()}"
    graph = tmp / "g.yaml"
    graph.write_text(
        f"serve:\n  address: {address}\n  unix_socket: {tmp / 'g.sock'}\n" + served_graph_text(tmp)
    )
    served = ServedGraph(graph)  # no --serve: the file's section is enough
    asyncio.run(wait_for_frames(address))
    served.address, served.tmp = address, tmp
    yield served
    assert served.stop() == 130, served.output  # stopped by Ctrl-C


def test_call_lists_resources_and_detections_from_a_camera(from_file):
    assert f"serving on {from_file.address}, unix:" in from_file.output
    listed = _pipeline("call", from_file.address, "-", "resources").stdout.split()
    assert "rdk:service:vision/faces" in listed
    assert "rdk:component:camera/camera" in listed
    found = json.loads(
        _pipeline(
            "call", from_file.address, "faces", "detections", "--camera", "camera", "--json"
        ).stdout
    )
    assert isinstance(found, list)
    for det in found:
        assert 0 <= det["x_min_normalized"] <= det["x_max_normalized"] <= 1
        assert det["class_name"] == "face"


def test_call_infer_with_an_image_file_and_the_camera_image(from_file):
    image_path = from_file.tmp / "frame.jpg"
    _pipeline("call", from_file.address, "camera", "image", "--out", str(image_path))
    assert decode_image(image_path.read_bytes()).shape == (360, 640, 3)
    out = json.loads(
        _pipeline(
            "call", from_file.address, "faces", "infer", "--input", f"input={image_path}", "--json"
        ).stdout
    )
    assert out["regressors"]["shape"] == [1, 896, 16]
    assert out["classificators"]["dtype"] == "float32"
    sock = str(from_file.tmp / "g.sock")
    text = _pipeline("call", sock, "faces", "detections", "--image", str(image_path)).stdout
    assert "face" in text or "no detections" in text


def test_call_reports_the_servers_refusal_and_exits_1(from_file):
    done = _pipeline(
        "call", from_file.address, "nobody", "detections", "--camera", "camera", check=False
    )
    assert done.returncode == 1
    assert "NOT_FOUND: no vision service named 'nobody'" in done.stderr
    assert "faces, kind" in done.stderr


def test_serve_cert_makes_a_pair_the_server_accepts(tmp_path):
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    out = _pipeline("serve-cert", "--cert", str(cert), "--key", str(key)).stdout
    assert "--tls-cert" in out
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    from pipeline.rpc.tls import server_ssl_context

    server_ssl_context(cert, key)


def test_call_classifications_on_an_image(from_file, tmp_path):
    path = tmp_path / "grey.png"
    path.write_bytes(encode_image(np.full((50, 50, 3), 128, np.uint8), "image/png"))
    out = json.loads(
        _pipeline(
            "call",
            from_file.address,
            "kind",
            "classifications",
            "--image",
            str(path),
            "--n",
            "1",
            "--json",
        ).stdout
    )
    assert len(out) == 1
    assert out[0]["class_name"] in ("face", "not_face")


def test_keys_in_the_file_without_a_certificate_serve_tls_with_a_local_pair(tmp_path):
    key_id, key = "0d9c4b1a-7e2f-4a3b-9c8d-112233445566", "inline-secret-key"
    address = f"127.0.0.1:{free_port()}"
    graph = tmp_path / "keys.yaml"
    graph.write_text(
        f"serve:\n  address: {address}\n  api_keys: [{{id: {key_id}, key: {key}}}]\n"
        + served_graph_text(tmp_path)
    )
    (tmp_path / "keys.txt").write_text(f"{key_id} {key}\n")
    served = ServedGraph(graph)
    try:
        assert f"serving on https://{address}" in served.output
        listed = _pipeline(
            "call",
            f"https://{address}",
            "-",
            "resources",
            "--api-key-file",
            str(tmp_path / "keys.txt"),
        ).stdout
        assert "rdk:service:mlmodel/faces" in listed
        refused = _pipeline("call", f"https://{address}", "-", "resources", check=False)
        assert refused.returncode == 1
        assert "UNAUTHENTICATED" in refused.stderr
    finally:
        assert served.stop() == 130, served.output  # stopped by Ctrl-C

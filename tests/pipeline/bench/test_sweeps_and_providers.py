"""`bench compare` of a sweep file, a sweep's notes, and the execution provider really used."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from pipeline.bench.cli import main
from pipeline.bench.compare import compare_files, differing_sets, render_compare
from pipeline.bench.sweep import render_sweep
from tests.pipeline.bench.helpers import make_result


def sweep_file(tmp_path: Path, busy: float = 30.0) -> Path:
    points = []
    for threads, fps in ((1, 8.0), (2, 14.0)):
        result = make_result(fps=fps, graph_hash=f"sha256:{threads}")
        del result["machine"]
        result["graph"]["base_hash"] = "sha256:base"
        result["settings"]["sets"] = {"detector.num_threads": threads, "detector.model": "m"}
        result["run"]["cpu"] = {"busy_pct": busy, "graph_pct": 25.0, "cores": 2}
        points.append(
            {"set": {"detector.num_threads": threads, "detector.model": "m"}, "result": result}
        )
    doc = {
        "schema": "pipeline-bench",
        "schema_version": 1,
        "kind": "sweep",
        "graph": {"name": "detect", "file": "detect.yaml", "base_hash": "sha256:base"},
        "grid": {"detector.num_threads": [1, 2], "detector.model": ["m"]},
        "settings": {},
        "machine": {"hostname": "pi5", "device": {"model": "Raspberry Pi 5"}},
        "points": points,
    }
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(doc))
    return path


def test_compare_takes_a_sweep_file_and_labels_the_points_by_what_differs(tmp_path, capsys):
    path = sweep_file(tmp_path)
    assert main(["bench", "compare", str(path), "--chart", str(tmp_path / "c.png")]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0]
    assert '[detector.num_threads=1 detector.model="m"]' in header
    settings = next(line for line in out.splitlines() if line.startswith("settings"))
    assert "detector.num_threads=1" in settings and "detector.num_threads=2" in settings
    assert "detector.model" not in settings  # the same at every point: not a label
    assert "14.0 (1.75x)" in out
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    results = compare_files([str(path)], force=False)
    assert list(differing_sets(results).values()) == [
        "detector.num_threads=1",
        "detector.num_threads=2",
    ]


def test_sweep_report_warns_about_a_busy_machine(tmp_path):
    doc = json.loads(sweep_file(tmp_path, busy=100.0).read_text())
    text = render_sweep(doc)
    assert "note: other processes kept the 2 cores about 75% busy" in text
    doc["points"][1]["result"]["run"]["cpu"]["busy_pct"] = 30.0
    assert "note: point 1: other processes kept the 2 cores" in render_sweep(doc)


def test_compare_table_shows_providers_and_the_fallback_warning():
    a = make_result()
    a["nodes"]["detector"]["execution_providers"] = {"CPUExecutionProvider": 300}
    a["warnings"] = ["node 'detector' asked for tensorrt, cuda but ran on CPUExecutionProvider"]
    b = copy.deepcopy(a)
    b["nodes"]["detector"]["execution_providers"] = {"CUDAExecutionProvider": 300}
    b["warnings"] = []
    text = render_compare({"cpu.json": a, "gpu.json": b})
    runs_on = next(line for line in text.splitlines() if "runs on" in line)
    assert "CPUExecutionProvider" in runs_on and "CUDAExecutionProvider" in runs_on
    assert "note: cpu.json: WARNING: node 'detector' asked for tensorrt, cuda" in text


GRAPH = """\
graph: gpu_wanted
nodes:
  - id: camera
    node: synthetic
    params: {width: 96, height: 96, fps: 0, frames: 0}
  - id: faces
    node: classifier
    params: {model: face_classifier, providers: [cuda, cpu]}
    inputs: {frames: camera/frames}
  - id: sink
    node: discard
    inputs: {messages: faces/classifications}
"""


@pytest.mark.integration
def test_a_cuda_request_that_ran_on_the_cpu_is_a_warning_in_the_result(tmp_path, capsys):
    graph = tmp_path / "g.yaml"
    graph.write_text(GRAPH)
    out = tmp_path / "r.json"
    code = main(["bench", str(graph), "--duration", "1", "--warmup", "0", "--out", str(out), "-q"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    result = json.loads(out.read_text())
    used = result["nodes"]["faces"]["execution_providers"]
    assert list(used) == ["CPUExecutionProvider"]
    assert used["CPUExecutionProvider"] == result["nodes"]["faces"]["frames"]
    (warning,) = result["warnings"]
    assert warning.startswith("node 'faces' asked for cuda but ran on CPUExecutionProvider")
    assert "runs on      faces: CPUExecutionProvider" in printed
    assert "WARNING: node 'faces' asked for cuda" in printed

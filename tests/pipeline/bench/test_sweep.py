"""`pipeline bench sweep`: the grid, one run per point, one table and one JSON."""

from __future__ import annotations

import json

import pytest

from pipeline.bench.cli import main
from pipeline.bench.sweep import grid_points, parse_grid


def test_grid_is_the_cartesian_product_of_every_set():
    axes = parse_grid(
        [
            "detector.num_threads=1,2,4",
            "detector.backend=tflite,onnxruntime",
            "camera.fps=0",  # one value: the same at every point
        ]
    )
    points = grid_points(axes)
    assert len(points) == 6
    assert [(p[0].value, p[1].value, p[2].value) for p in points[:3]] == [
        (1, "tflite", 0),
        (1, "onnxruntime", 0),
        (2, "tflite", 0),
    ]
    assert [p.key for p in points[0]] == ["detector.num_threads", "detector.backend", "camera.fps"]


def test_grid_values_are_yaml():
    (axis,) = parse_grid(["detector.input_size=[320,240],[640,480]"])
    assert axis.values == ([320, 240], [640, 480])


@pytest.mark.integration
def test_a_sweep_over_two_values_makes_two_runs(synthetic_graph, tmp_path, capsys):
    out = tmp_path / "sweep.json"
    argv = ["bench", "sweep", str(synthetic_graph(0)), "--set", "resize.width=16,24"]
    code = main([*argv, "--warmup", "0", "--duration", "0.5", "--out", str(out), "-q"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    doc = json.loads(out.read_text())
    assert (doc["schema"], doc["kind"]) == ("pipeline-bench", "sweep")
    assert doc["grid"] == {"resize.width": [16, 24]}
    assert [p["set"] for p in doc["points"]] == [{"resize.width": 16}, {"resize.width": 24}]
    hashes = {p["result"]["graph"]["hash"] for p in doc["points"]}
    assert len(hashes) == 2  # each point ran a different graph
    assert {p["result"]["graph"]["base_hash"] for p in doc["points"]} == {doc["graph"]["base_hash"]}
    for point in doc["points"]:
        assert point["result"]["run"]["exit_code"] == 0
        assert point["result"]["end_to_end"]["throughput_fps"] > 0
        assert "machine" not in point["result"]  # recorded once, at the top
    assert doc["machine"]["python"]["version"]
    assert "[1/2] resize.width=16" in captured.err and "[2/2] resize.width=24" in captured.err
    table = captured.out.splitlines()
    assert table[0].startswith("sweep of 'tiny'") and table[0].endswith("2 points")
    assert table[2].split()[:2] == ["resize.width", "frames/s"]
    assert [row.split()[0] for row in table[3:5]] == ["16", "24"]


def test_a_sweep_with_a_bad_value_starts_nothing(synthetic_graph, capsys):
    graph = synthetic_graph(0)
    assert main(["bench", "sweep", str(graph), "--set", "resize.width=16,-1"]) == 2
    err = capsys.readouterr().err
    assert "point 2 (resize.width=-1):" in err
    assert f"{graph}:8:21: error: params.width of node 'resize'" in err
    assert err.rstrip().endswith("1 error; nothing was started")
    assert "[1/2]" not in err

"""`pipeline bench compare`: same-graph check, the side-by-side table, the chart."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.bench.cli import main
from pipeline.bench.compare import render_compare
from tests.pipeline.bench.helpers import make_result


@pytest.fixture
def results(tmp_path: Path) -> Callable[..., str]:
    def write(name: str, **kwargs: Any) -> str:
        path = tmp_path / name
        path.write_text(json.dumps(make_result(**kwargs)))
        return str(path)

    return write


def test_compare_refuses_results_of_different_graphs(results, capsys):
    a = results("pi5.json", model="Raspberry Pi 5 Model B Rev 1.0", graph_hash="sha256:" + "a" * 64)
    b = results("orin.json", model="NVIDIA Jetson Orin Nano", graph_hash="sha256:" + "b" * 64)
    assert main(["bench", "compare", a, b]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "these results are of different graphs (their graph hashes differ)" in captured.err
    assert f"{a}: graph 'detect' sha256:aaaaaaaaaaaa" in captured.err
    assert "--force" in captured.err


def test_compare_with_force_compares_different_graphs(results, capsys):
    a = results("a.json", graph_hash="sha256:1")
    b = results("b.json", graph_hash="sha256:2", fps=20.0)
    assert main(["bench", "compare", a, b, "--force"]) == 0
    captured = capsys.readouterr()
    assert "(2.00x)" in captured.out
    assert "warning: these results are of different graphs (--force)" in captured.err


def test_compare_table_shows_devices_and_ratios_to_the_first(results, capsys):
    a = results("pi5.json", model="Raspberry Pi 5 Model B Rev 1.0", fps=10.0)
    b = results("orin.json", model="NVIDIA Jetson Orin Nano Developer Kit", fps=40.0)
    c = results("laptop.json", hostname="laptop", fps=80.0)
    assert main(["bench", "compare", a, b, c]) == 0
    out = capsys.readouterr().out
    rows = {line.strip().split("  ")[0]: line for line in out.splitlines() if line.strip()}
    assert "Raspberry Pi 5 Model B Rev 1.0" in rows["device"]
    assert "NVIDIA Jetson Orin Nano Developer Kit" in rows["device"]
    assert "laptop" in rows["device"]  # no board model: the host name
    assert rows["throughput frames/s"].split()[2:] == ["10.0", "40.0", "(4.00x)", "80.0", "(8.00x)"]
    assert "25.00 (0.25x)" in rows["latency p50 ms"]
    assert "bottlenecks:" in out


def test_compare_rejects_files_that_are_not_bench_results(results, tmp_path, capsys):
    a = results("a.json")
    other = tmp_path / "stats.json"
    other.write_text(json.dumps({"graph": "x", "nodes": {}}))
    assert main(["bench", "compare", a, str(other)]) == 2
    assert "not a `pipeline bench` result" in capsys.readouterr().err
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({"schema": "pipeline-bench", "schema_version": 1, "kind": "sweep"}))
    assert main(["bench", "compare", a, str(sweep)]) == 2
    assert "a sweep file with no points" in capsys.readouterr().err
    other.write_text(json.dumps({"schema": "pipeline-bench", "schema_version": 1, "kind": "x"}))
    assert main(["bench", "compare", a, str(other)]) == 2
    assert "a x file; compare takes results of" in capsys.readouterr().err
    assert main(["bench", "compare", a, str(tmp_path / "missing.json")]) == 2
    assert "cannot read it" in capsys.readouterr().err


def test_compare_notes_settings_that_differ(results):
    a, b = make_result(), make_result()
    b["settings"]["cpus"] = 2
    text = render_compare({"a.json": a, "b.json": b})
    assert "note: settings differ in cpus (a.json: None, b.json: 2)" in text


def test_compare_writes_a_png_chart(results, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    a = results("pi5.json", model="Raspberry Pi 5 Model B Rev 1.0", fps=12.5)
    b = results("orin.json", model="NVIDIA Jetson Orin Nano Developer Kit", fps=41.0)
    chart = tmp_path / "cmp.png"
    assert main(["bench", "compare", a, b, "--chart", str(chart)]) == 0
    data = chart.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000  # two panels with bars, labels and a title, not an empty canvas
    assert f"chart written to {chart}" in capsys.readouterr().err


def test_compare_without_matplotlib_still_prints_the_table(results, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    a, b = results("a.json"), results("b.json", fps=20.0)
    assert main(["bench", "compare", a, b, "--chart", str(tmp_path / "c.png")]) == 1
    captured = capsys.readouterr()
    assert "throughput frames/s" in captured.out
    assert "the chart needs matplotlib" in captured.err
    assert "pip install 'edge-vision-pipeline[bench]'" in captured.err
    assert not (tmp_path / "c.png").exists()

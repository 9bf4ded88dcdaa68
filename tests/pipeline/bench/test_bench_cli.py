"""`pipeline bench GRAPH`: real short runs, the result file, pinning, and usage errors."""

from __future__ import annotations

import json
import os

import pytest

from pipeline.bench.cli import main
from pipeline.bench.prepare import prepare_graph

RESULT_KEYS = {
    "schema",
    "schema_version",
    "kind",
    "pipeline_version",
    "started_at",
    "graph",
    "settings",
    "run",
    "nodes",
    "end_to_end",
    "bottleneck",
    "machine",
    "conditions",
    "warnings",
}
NODE_KEYS = {
    "type",
    "role",
    "fps",
    "frames",
    "process_ms",
    "latency_ms",
    "queue_peak",
    "queue_capacity",
    "dropped",
    "drop_pct",
    "busy_pct",
    "cpu_pct",
    "max_rss_mb",
}


@pytest.mark.integration
def test_a_short_bench_writes_a_complete_result(synthetic_graph, tmp_path, capsys):
    graph = synthetic_graph(0)
    out = tmp_path / "results" / "tiny.json"
    code = main(["bench", str(graph), "--frames", "100", "--warmup", "20", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(out.read_text())
    assert set(result) == RESULT_KEYS
    assert (result["schema"], result["schema_version"], result["kind"]) == (
        "pipeline-bench",
        1,
        "run",
    )
    prepared, _ = prepare_graph(graph)
    assert prepared is not None
    assert result["graph"]["hash"] == prepared.hash
    assert result["graph"]["name"] == "tiny"
    assert result["settings"]["frames"] == 100 and result["settings"]["warmup"] == 20
    assert result["run"]["stop_reason"] == "frames"
    assert result["run"]["warmup_complete"] is True
    assert set(result["nodes"]) == {"camera", "resize", "sink"}
    for figures in result["nodes"].values():
        assert set(figures) >= NODE_KEYS
        assert figures["fps"] > 0
        assert figures["cpu_pct"] is not None, json.dumps(result["nodes"], indent=1)
    assert result["nodes"]["resize"]["queue_capacity"] == 4
    e2e = result["end_to_end"]
    assert e2e["frames"] >= 100
    assert e2e["throughput_fps"] > 0
    assert (
        0
        < e2e["latency_ms"]["p50_ms"]
        <= e2e["latency_ms"]["p95_ms"]
        <= e2e["latency_ms"]["p99_ms"]
    )
    assert e2e["sinks"]["sink"]["latency_ms"] == e2e["latency_ms"]
    assert result["bottleneck"]["node"] in result["nodes"]
    assert result["machine"]["python"]["version"]
    assert result["conditions"]["start"].keys() == {"thermal", "cpufreq", "throttling"}
    # the report on stdout, the progress and the file's path on stderr
    assert "bench 'tiny'" in captured.out
    assert "bottleneck" in captured.out
    assert "measuring" in captured.err
    assert f"result written to {out}" in captured.err


@pytest.mark.integration
def test_cpus_pins_every_node_and_is_recorded(write_graph, tmp_path, capsys):
    probe = tmp_path / "affinity.json"
    graph = write_graph(
        f"""\
        graph: pinned
        nodes:
          - id: camera
            node: synthetic
            params: {{width: 32, height: 24, fps: 200, frames: 0}}
          - id: probe
            node: {{P}}:AffinityProbe
            params: {{path: {probe}}}
            inputs: {{messages: camera/frames}}
        """
    )
    before = os.sched_getaffinity(0)
    out = tmp_path / "pinned.json"
    code = main(
        [
            "bench",
            str(graph),
            "--cpus",
            "1",
            "--warmup",
            "0",
            "--duration",
            "0.5",
            "--out",
            str(out),
            "-q",
        ]
    )
    assert code == 0, capsys.readouterr().err
    first = min(before)
    assert json.loads(probe.read_text()) == [first]  # what the node process could use
    settings = json.loads(out.read_text())["settings"]
    assert settings["cpus"] == 1 and settings["cpu_ids"] == [first]
    assert os.sched_getaffinity(0) == before  # restored


@pytest.mark.integration
def test_a_graph_that_ends_during_warmup_ends_the_bench(synthetic_graph, capsys):
    code = main(["bench", str(synthetic_graph(40)), "--warmup", "1000", "-q"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "ended by end_of_stream" in captured.out
    assert (
        "note: the graph ended during the warm-up (1000 frames): these figures include it"
        in captured.out
    )


def test_an_invalid_graph_is_reported_compiler_style_and_exits_2(synthetic_graph, capsys):
    graph = synthetic_graph(0)
    graph.write_text(graph.read_text().replace("width: 32", "width: -3"))
    assert main(["bench", str(graph)]) == 2
    err = capsys.readouterr().err
    assert f"{graph}:8:21: error: params.width of node 'resize'" in err
    assert err.rstrip().endswith("1 error; nothing was started")


def test_a_bad_set_exits_2(synthetic_graph, capsys):
    graph = synthetic_graph(0)
    assert main(["bench", str(graph), "--set", "camera.fps"]) == 2
    assert "error: --set 'camera.fps': expected node.param=value" in capsys.readouterr().err
    assert main(["bench", str(graph), "--set", "camra.fps=0"]) == 2
    err = capsys.readouterr().err
    assert "--set camra.fps: graph 'tiny' has no node 'camra'" in err
    assert "did you mean 'camera'?" in err


def test_more_cpus_than_available_exits_2(synthetic_graph, capsys):
    n = len(os.sched_getaffinity(0))
    assert main(["bench", str(synthetic_graph(0)), "--cpus", str(n + 1)]) == 2
    assert f"--cpus {n + 1}: this process may use {n} core" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "a.yaml", "b.yaml"], "`pipeline bench` takes one graph file, got 2"),
        (
            ["bench", "a.yaml", "--chart", "c.png"],
            "--chart and --force are options of `pipeline bench compare`",
        ),
        (["bench", "compare", "a.json", "b.json", "--duration", "3"], "--duration: not options of"),
        (["bench", "compare", "a.json"], "needs two or more result files"),
        (["bench", "sweep", "g.yaml"], "needs --set node.param=v1,v2"),
        (
            ["bench", "sweep", "g.yaml", "--set", "a.b=1", "--set", "a.b=2"],
            "--set a.b is given twice",
        ),
    ],
)
def test_usage_errors_exit_2(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_argparse_rejects_bad_numbers(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "g.yaml", "--duration", "0"])
    assert exc.value.code == 2
    assert "must be more than 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "g.yaml", "--duration", "3", "--frames", "10"])
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.integration
def test_a_node_that_fails_to_open_fails_the_bench_and_writes_nothing(
    write_graph, tmp_path, capsys
):
    graph = write_graph(
        """\
        graph: broken
        nodes:
          - id: camera
            node: synthetic
            params: {width: 32, height: 24, fps: 0, frames: 0}
          - id: sink
            node: {P}:AffinityProbe
            params: {path: /nonexistent-folder/affinity.json}
            inputs: {messages: camera/frames}
        """
    )
    out = tmp_path / "broken.json"
    assert main(["bench", str(graph), "--out", str(out), "-q"]) == 1
    captured = capsys.readouterr()
    assert "error: node 'sink' failed in open(): FileNotFoundError" in captured.out
    assert "note:" not in captured.out
    assert not out.exists()
    assert f"nothing written to {out}" in captured.err

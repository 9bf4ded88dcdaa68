"""The command line: check, nodes, schema; and the public API guard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import pipeline
from pipeline.cli import SCHEMA_PATH, main
from pipeline.graph.spec import graph_json_schema

ROOT = Path(__file__).parents[2]


def test_check_reports_every_error_at_once_and_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "graph: g\n"
        "nodes:\n"
        "  - id: camera\n"
        "    node: synthetic\n"
        "    params: {fps: -1}\n"
        "  - id: sink\n"
        "    node: discard\n"
        "    inputs: {messages: camera/frame}\n"
    )
    assert main(["check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:5:19: error: params.fps of node 'camera'" in err
    assert f"{bad}:8:24: error: input 'messages' of node 'sink' refers to unknown output" in err
    assert "hint: did you mean 'camera/frames'?" in err
    assert err.rstrip().endswith("2 errors, 0 warnings")


def test_check_passes_every_example_graph(capsys):
    graphs = sorted(str(p) for p in (ROOT / "graphs").glob("*.yaml"))
    assert graphs
    assert main(["check", *graphs]) == 0


def test_check_warns_about_outputs_nobody_reads(tmp_path, capsys):
    g = tmp_path / "g.yaml"
    g.write_text("graph: g\nnodes:\n  - {id: camera, node: synthetic}\n")
    assert main(["check", str(g)]) == 0
    err = capsys.readouterr().err
    assert "warning: output 'camera/frames' is not read by any node" in err


def test_check_of_a_missing_file_is_a_clear_error(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read the graph file: No such file or directory" in capsys.readouterr().err


def test_run_validates_first_and_starts_nothing_on_errors(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("graph: g\nnodes:\n  - {id: camera, node: synthtic}\n")
    assert main(["run", str(bad)]) == 2
    assert "1 error; nothing was started" in capsys.readouterr().err


def test_nodes_lists_ports_and_params_with_ranges(capsys):
    assert main(["nodes", "synthetic"]) == 0
    out = capsys.readouterr().out
    assert "frames: Frame" in out
    assert "fps: number | null (default 30.0, >= 0, <= 10000)" in out
    assert "Its frame rate, the one pace: realtime holds it to" in out
    assert main(["nodes", "--all"]) == 0
    listing = capsys.readouterr().out
    for name in ("synthetic", "resize", "discard", "jsonl"):
        assert f"\n{name}  (" in "\n" + listing


def test_nodes_unknown_name_exits_2(capsys):
    assert main(["nodes", "synthtic"]) == 2
    assert "did you mean 'synthetic'?" in capsys.readouterr().err


def test_committed_schema_matches_the_model():
    assert SCHEMA_PATH.read_text() == graph_json_schema(), "run `pipeline schema --write`"
    schema = json.loads(SCHEMA_PATH.read_text())
    assert schema["required"] == ["graph", "nodes"]
    assert "anyOf" in schema["$defs"]["NodeSpec"]["properties"]["inputs"]["additionalProperties"]


def test_public_api_is_exactly_all():
    public = {n for n in dir(pipeline) if not n.startswith("_")} - {
        "errors",
        "graph",
        "messages",
        "node",
        "params",
        "registry",
        "usercode",
        "checks",
        "scaffold",
        "runtime",
        "transport",
        "testing",
        "cli",
        "bench",
        "cluster",  # pipeline.cluster, once imported (the Ray launcher)
        "rpc",
        "serve",
    }
    assert public == set(pipeline.__all__) - {"__version__"}


@pytest.mark.integration
def test_synthetic_example_runs_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    stats = tmp_path / "stats.json"
    assert (
        main(
            [
                "run",
                str(ROOT / "graphs" / "synthetic.yaml"),
                "--no-live",
                "--stats-json",
                str(stats),
            ]
        )
        == 0
    )
    lines = (tmp_path / "out" / "synthetic.jsonl").read_text().splitlines()
    assert len(lines) == 120
    nodes = json.loads(stats.read_text())["nodes"]
    assert nodes["sink"]["inputs"]["messages"]["received"] == 120


def test_a_built_in_command_imports_no_plugin_command_and_plugins_still_run():
    # `pipeline run` must not pay for the plugins' imports (the inference nodes, the cloud
    # package): a built-in command builds only the built-in sub-commands
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from pipeline.cli import main\n"
        "main(['check', 'graphs/synthetic.yaml'])\n"
        "print(sorted(m for m in ('pipeline_cloud', 'pipeline_nodes.inference', "
        "'pipeline.bench.cli', 'zmq.asyncio') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"
    # a plugin's command is still there when it is the one asked for
    help_text = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "models", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "fetch" in help_text

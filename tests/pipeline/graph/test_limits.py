"""A graph file cannot exhaust the machine: size, alias expansion, nesting and node count are
capped before anything is built, each refusal located at file:line:col."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import pytest

from pipeline.graph import limits
from pipeline.graph.load import check_graph, parse_graph

GOOD_HEAD = "graph: g\nnodes:\n  - id: src\n    node: synthetic\n"


def alias_bomb(levels: int) -> str:
    """The 'billion laughs': each level repeats the one before nine times."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        refs = ", ".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join([*lines, "graph: bomb", "nodes: []"]) + "\n"


def errors_of(text: str, file: str = "g.yaml"):
    spec, _marks, issues = parse_graph(text, file)
    assert spec is None
    return [i for i in issues if i.severity == "error"]


def test_alias_bomb_is_refused_at_the_alias_quickly_and_without_memory():
    text = alias_bomb(9)  # 10**9 values when expanded: MemoryError before the limit
    assert len(text) < 1024
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    errors = errors_of(text)
    elapsed = time.monotonic() - started
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert len(errors) == 1
    issue = errors[0]
    assert f"more than {limits.MAX_VALUES} values" in issue.message
    assert "alias" in issue.hints[0]
    # crossed at level 5 (9**5 > 100 000): line 6, at the first alias of that line
    assert (issue.line, issue.col) == (6, 10)
    assert issue.format().startswith("g.yaml:6:10: error: ")
    assert elapsed < 10  # generous under load; without the limit: minutes, then MemoryError
    assert grown_kib < 200_000


def test_small_aliases_stay_allowed():
    text = (
        "common: &common {width: 32, height: 24}\n"
        "graph: g\n"
        "nodes:\n"
        "  - id: src\n"
        "    node: synthetic\n"
        "    params: *common\n"
        "  - id: sink\n"
        "    node: discard\n"
        "    inputs: {frames: src/frames}\n"
    )
    _spec, _marks, issues = parse_graph(text, "g.yaml")
    # 'common' is an unknown top-level key, but the alias itself was accepted
    assert all("alias" not in i.message for i in issues)
    assert any("unknown key 'common'" in i.message for i in issues)


def test_recursive_alias_is_refused_not_a_recursion_error():
    text = "graph: g\nnodes: &n [*n]\n"
    (issue,) = errors_of(text)
    assert "cycle" in issue.message
    assert (issue.line, issue.col) == (2, 12)


def test_deep_nesting_is_refused_at_the_level_that_crosses():
    depth = limits.MAX_DEPTH + 10
    text = "graph: g\nnodes: " + "[" * depth + "]" * depth + "\n"
    (issue,) = errors_of(text)
    assert f"more than {limits.MAX_DEPTH} levels" in issue.message
    # the root mapping is level 1; nodes' list is level 2
    assert (issue.line, issue.col) == (2, 8 + limits.MAX_DEPTH - 1)


def test_very_deep_nesting_is_located_not_a_traceback():
    depth = 200_000  # a RecursionError in a recursive composer
    (issue,) = errors_of("x: " + "[" * depth + "]" * depth)
    assert "levels deep" in issue.message


def test_a_long_flat_list_is_refused_quickly():
    text = "graph: g\nnodes: [" + "1," * 400_000 + "1]\n"  # 800 KB, under the size limit
    started = time.monotonic()
    (issue,) = errors_of(text)
    assert time.monotonic() - started < 20  # stops at the limit, not at the end of the list
    assert f"more than {limits.MAX_VALUES} values" in issue.message
    assert issue.line == 2


def test_too_many_nodes_is_refused_at_the_first_one_past_the_limit():
    nodes = "".join(f"  - {{id: n{i}, node: discard}}\n" for i in range(limits.MAX_NODES + 5))
    (issue,) = errors_of("graph: g\nnodes:\n" + nodes)
    assert f"has {limits.MAX_NODES + 5} nodes; at most {limits.MAX_NODES}" in issue.message
    assert (issue.line, issue.col) == (3 + limits.MAX_NODES, 5)


def test_an_oversized_file_is_refused_before_it_is_read_whole(tmp_path: Path):
    path = tmp_path / "huge.yaml"
    path.write_text(GOOD_HEAD + "#" * (limits.MAX_FILE_BYTES + 10) + "\n")
    graph, issues = check_graph(path)
    assert graph is None
    (issue,) = issues
    size = path.stat().st_size
    assert f"the graph file is {size} bytes" in issue.message
    assert issue.format().startswith(f"{path}:1:1: error: ")


def test_an_oversized_text_is_refused_too():
    (issue,) = errors_of(GOOD_HEAD + "#" * limits.MAX_FILE_BYTES)
    assert f"the most a graph file may hold is {limits.MAX_FILE_BYTES} bytes" in issue.message


@pytest.mark.parametrize(
    "text",
    [
        GOOD_HEAD,  # no alias at all
        "x: &x 1\ny: *x\n" + GOOD_HEAD,  # scalar alias
        "x: &x {a: [1, 2]}\ny: [*x, *x, *x]\n" + GOOD_HEAD,  # small collection, repeated
    ],
)
def test_texts_within_the_limits_pass(text: str):
    assert limits.check_text(text, "g.yaml") == []


GOOD = """
graph: g
nodes:
  - {id: camera, node: synthetic, params: {frames: 3}}
  - {id: log, node: jsonl, params: {path: out.jsonl}, inputs: {messages: camera/frames}}
"""


def _spy(monkeypatch: pytest.MonkeyPatch, name: str) -> list[object]:
    import yaml

    used: list[object] = []
    real = getattr(yaml, name)

    def spy(text: str, Loader: object) -> object:
        used.append(Loader)
        return real(text, Loader=Loader)

    monkeypatch.setattr(yaml, name, spy)
    return used


def test_a_valid_graph_is_read_by_libyaml_alone(monkeypatch: pytest.MonkeyPatch):
    import yaml

    assert yaml.__with_libyaml__  # PyYAML's wheels have it: ~10x faster for every run
    parsed, composed = _spy(monkeypatch, "parse"), _spy(monkeypatch, "compose")
    spec, _, issues = parse_graph(GOOD)
    assert spec is not None and not issues
    assert parsed == [yaml.CSafeLoader] and composed == [yaml.CSafeLoader]


def test_a_text_libyaml_refuses_is_decided_and_worded_by_the_python_parser(
    monkeypatch: pytest.MonkeyPatch,
):
    import yaml

    composed = _spy(monkeypatch, "compose")
    spec, _, issues = parse_graph("graph: g\nnodes: [a, b\n")
    assert spec is None
    assert composed == [yaml.CSafeLoader, yaml.SafeLoader]
    # PyYAML's own wording ("expected ..."), not libyaml's ("did not find expected ...")
    assert issues[0].message.startswith("YAML syntax: expected")
    assert (issues[0].line, issues[0].col) == (3, 1)

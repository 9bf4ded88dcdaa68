"""Every broken graph in tests/config_cases/invalid reports its expected message and place."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.graph.load import check_graph

CASES = Path(__file__).parents[2] / "config_cases"
INVALID = sorted((CASES / "invalid").glob("*.yaml"))
VALID = sorted((CASES / "valid").glob("*.yaml"))
EXPECT = re.compile(r"^# expect: (\d+):(\d+): (.+)$")
HINT = re.compile(r"^# hint: (.+)$")


def _expectations(path: Path) -> tuple[list[tuple[int, int, str]], list[str]]:
    expects, hints = [], []
    for line in path.read_text().splitlines():
        if m := EXPECT.match(line):
            expects.append((int(m.group(1)), int(m.group(2)), m.group(3).rstrip(". ")))
        elif m := HINT.match(line):
            hints.append(m.group(1))
    return expects, hints


def test_there_are_at_least_twenty_distinct_invalid_cases():
    assert len(INVALID) >= 20
    messages = {_expectations(p)[0][0][2] for p in INVALID}
    assert len(messages) == len(INVALID)


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_graph_reports_message_at_line_and_column(path: Path):
    graph, issues = check_graph(path)
    assert graph is None
    expects, hints = _expectations(path)
    assert expects, f"{path.name} has no '# expect:' line"
    errors = [i for i in issues if i.severity == "error"]
    rendered = "\n".join(i.format() for i in errors)
    for line, col, text in expects:
        matching = [i for i in errors if text in i.message]
        assert matching, f"no error containing {text!r}; got:\n{rendered}"
        assert (matching[0].line, matching[0].col) == (line, col), rendered
        assert matching[0].format().startswith(f"{path}:{line}:{col}: error: ")
    for hint in hints:
        assert hint in rendered, f"hint {hint!r} missing in:\n{rendered}"


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_graph_loads_cleanly(path: Path):
    graph, issues = check_graph(path)
    assert graph is not None, "\n".join(i.format() for i in issues)
    assert not [i for i in issues if i.severity == "error"]

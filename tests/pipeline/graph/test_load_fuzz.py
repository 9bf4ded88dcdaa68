"""Fuzzing the graph loader: any document gives a valid graph or located errors, never a
traceback.

Three sources of documents: random text; random YAML trees biased towards the graph file's
own keys and values; and the example graphs with characters inserted, deleted and replaced
(YAML's punctuation first). Every error must carry a line and a column. The budget is
bounded and derandomized, so CI sees the same cases every time.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline.graph.load import parse_graph
from pipeline.graph.validate import validate_spec

FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
EXAMPLES = sorted((Path(__file__).parents[3] / "graphs").glob("*.yaml"))
# the example graphs without the nodes that load models (those would make each case slow)
TEXTS = [p.read_text() for p in EXAMPLES if "model:" not in p.read_text()]


def check(text: str) -> None:
    """Load ``text`` as `pipeline check` does; assert a valid graph or located errors."""
    spec, marks, issues = parse_graph(text, "fuzz.yaml")
    graph = None
    if spec is not None:
        graph, more = validate_spec(spec, marks)
        issues = [*issues, *more]
    errors = [i for i in issues if i.severity == "error"]
    if graph is None:
        assert errors, "no graph and no error"
    else:
        assert not errors
    for issue in issues:
        assert issue.line >= 1, issue.format()
        assert issue.col >= 1, issue.format()
        assert issue.message.strip()
        assert issue.format().startswith(f"fuzz.yaml:{issue.line}:{issue.col}: ")


def test_the_example_graphs_load():
    assert TEXTS
    for text in TEXTS:
        check(text)


@FUZZ
@given(text=st.text(max_size=300))
@example(text="=")  # YAML's 'value' tag: no constructor (found by this test)
@example(text="graph: !!python/object/apply:os.system [echo]\nnodes: []")
@example(text="graph: !mine x\nnodes: []")
@example(text="? [a, b]\n: 1")  # a key that is a list
def test_random_text(text: str):
    check(text)


KEYS = ["graph", "nodes", "id", "node", "params", "inputs", "from", "queue", "when_full"]
KEYS += ["transport", "frames", "messages", "width", "fps", "path", "frames_in", "x"]
TYPES = ["synthetic", "resize", "discard", "jsonl", "overlay", "nope", "no_such_module:Node"]
VALUES = [*TYPES, "src/frames", "a/b", "src", "block", "drop_oldest", "tcp", "shm", "", "/"]
scalars = st.one_of(
    st.sampled_from(VALUES),
    st.integers(-5, 2000),
    st.floats(allow_nan=True),
    st.booleans(),
    st.none(),
    st.text(max_size=6),
)
trees = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(KEYS), st.text(max_size=4)), children, max_size=5
        ),
    ),
    max_leaves=30,
)
graphs = st.fixed_dictionaries(
    {
        "graph": scalars,
        "nodes": st.lists(
            st.fixed_dictionaries(
                {"id": st.sampled_from(["src", "sink", "r", "1bad", "src"])},
                optional={
                    "node": st.sampled_from(TYPES),
                    "params": trees,
                    "inputs": st.dictionaries(
                        st.sampled_from(["frames", "messages", "x"]),
                        st.one_of(
                            st.sampled_from(VALUES),
                            st.fixed_dictionaries(
                                {"from": st.sampled_from(VALUES)},
                                optional={
                                    "queue": st.integers(-1, 2000),
                                    "when_full": st.sampled_from(VALUES),
                                    "transport": st.sampled_from(VALUES),
                                },
                            ),
                            trees,
                        ),
                        max_size=2,
                    ),
                    "extra": trees,
                },
            ),
            max_size=4,
        ),
    },
    optional={"other": trees},
)


@FUZZ
@given(tree=st.one_of(trees, graphs))
def test_random_yaml_documents(tree: object):
    check(yaml.safe_dump(tree, sort_keys=False))


PUNCTUATION = [*":-[]{}&*!|>'\"#,?%@`\n\t ", "\n  ", "\n- ", ": ", "&a ", "*a", "!!python/"]


@FUZZ
@given(
    which=st.integers(0, 100),
    edits=st.lists(
        st.tuples(
            st.sampled_from(["insert", "delete", "replace"]),
            st.integers(0, 100_000),
            st.one_of(st.sampled_from(PUNCTUATION), st.text(max_size=3)),
        ),
        min_size=1,
        max_size=5,
    ),
)
def test_example_graphs_with_edits(which: int, edits: list[tuple[str, int, str]]):
    text = TEXTS[which % len(TEXTS)]
    for op, at, piece in edits:
        at %= len(text) + 1
        if op == "insert":
            text = text[:at] + piece + text[at:]
        elif op == "delete":
            text = text[:at] + text[at + len(piece) + 1 :]
        else:
            text = text[:at] + piece + text[at + len(piece) :]
    check(text)

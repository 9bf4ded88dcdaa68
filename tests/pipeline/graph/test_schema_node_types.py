"""The committed JSON Schema knows every node type's params, as an editor uses it."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from pipeline.cli import SCHEMA_PATH
from pipeline.registry import available_nodes, load_node_class

ROOT = Path(__file__).resolve().parents[3]
SCHEMA = json.loads(SCHEMA_PATH.read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def errors(doc: dict) -> list[str]:
    return [e.message for e in VALIDATOR.iter_errors(doc)]


def one_node(node: str, params: dict) -> dict:
    return {"graph": "g", "nodes": [{"id": "x", "node": node, "params": params}]}


def test_every_node_type_has_its_params_with_types_defaults_ranges_and_descriptions():
    defs = SCHEMA["$defs"]
    for type_id in available_nodes():
        params = defs[f"params.{type_id}"]
        fields = load_node_class(type_id).Params.model_fields
        assert set(params.get("properties", {})) == set(fields), type_id
        assert params["additionalProperties"] is False
    width = defs["params.synthetic"]["properties"]["width"]
    number = width["anyOf"][0]
    assert (width["default"], number["type"], number["minimum"]) == (640, "integer", 8)
    assert width["description"] == "Frame width in pixels."
    assert width["anyOf"][1] == {"$ref": "#/$defs/env"}
    assert "enum" in json.dumps(defs["params.detector"]["properties"]["backend"])
    assert (
        SCHEMA["$defs"]["NodeSpec"]["properties"]["node"]["anyOf"][0]["enum"] == available_nodes()
    )


@pytest.mark.parametrize("path", sorted((ROOT / "graphs").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_example_graph_is_valid_against_the_schema(path):
    assert errors(yaml.safe_load(path.read_text())) == []


def test_params_of_a_node_type_are_checked_by_the_schema():
    assert errors(one_node("detector", {"model": "centerface", "num_threads": 2})) == []
    assert errors(one_node("detector", {"model": "centerface", "num_threads": 0}))
    assert errors(one_node("detector", {"model": "centerface", "num_thread": 2}))
    assert errors(one_node("detector", {}))  # model is required
    assert errors(one_node("synthetic", {"fps": "fast"}))
    assert errors(one_node("synthetic", {"fps": "${FPS:-10}"})) == []
    # a user's class is not known to the schema: its params are free
    assert errors(one_node("my_nodes:Blur", {"anything": 1})) == []
    assert errors(one_node("not a type", {}))

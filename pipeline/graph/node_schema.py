"""The node types in the graph file's JSON Schema: an editor completes ``params:`` per type.

For every registered node type, its ``Params`` model's JSON Schema (types, defaults, ranges,
descriptions) goes under ``$defs`` as ``params.<type>``, and ``NodeSpec`` gets one
``if: {node: <type>} then: {params: <that>}`` per type; ``node`` itself lists the registered
names (a ``module:Class`` stays allowed). A param may also be a whole ``${VAR:-default}``.
``pipeline schema --check`` catches drift.
"""

from __future__ import annotations

import logging
from typing import Any

from pipeline.errors import RegistryError
from pipeline.registry import available_nodes, load_node_class

__all__ = ["add_node_types"]

log = logging.getLogger(__name__)

CLASS_PATH = r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$"


def _rename_refs(value: Any, prefix: str) -> Any:
    """Point ``#/$defs/X`` at ``#/$defs/<prefix>X`` all the way down."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "$ref" and isinstance(item, str) and item.startswith("#/$defs/"):
                out[key] = "#/$defs/" + prefix + item.removeprefix("#/$defs/")
            else:
                out[key] = _rename_refs(item, prefix)
        return out
    if isinstance(value, list):
        return [_rename_refs(item, prefix) for item in value]
    return value


ENV_VALUE = {
    "type": "string",
    "pattern": r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:-.*)?\}$",
    "description": "From the environment: ${VAR} or ${VAR:-default} (pipeline.graph.envsubst).",
}


def _or_env(prop: dict[str, Any]) -> dict[str, Any]:
    """A param's schema that also takes a whole ``${VAR:-default}`` (replaced when loading)."""
    shown: dict[str, Any] = {k: prop[k] for k in ("title", "description", "default") if k in prop}
    inner = {k: v for k, v in prop.items() if k not in ("title", "description", "default")}
    return {**shown, "anyOf": [inner, {"$ref": "#/$defs/env"}]}


def add_node_types(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` (the graph file's) with every registered node type's params."""
    defs = schema.setdefault("$defs", {})
    node_spec = defs["NodeSpec"]
    names = []
    rules = []
    for type_id in available_nodes():
        try:
            cls = load_node_class(type_id)
        except RegistryError as exc:  # a broken plugin must not break the schema
            log.warning("node type %r left out of the schema: %s", type_id, exc)
            continue
        params = cls.Params.model_json_schema()
        prefix = f"params.{type_id}."
        for name, sub in params.pop("$defs", {}).items():
            defs[prefix + name] = _rename_refs(sub, prefix)
        params = _rename_refs(params, prefix)
        params["properties"] = {
            name: _or_env(prop) for name, prop in params.get("properties", {}).items()
        }
        doc = (cls.__doc__ or "").strip().splitlines()
        params["title"] = f"params of {type_id}"
        if doc:
            params["description"] = doc[0]
        defs[f"params.{type_id}"] = params
        names.append(type_id)
        rules.append(
            {
                "if": {"properties": {"node": {"const": type_id}}, "required": ["node"]},
                "then": {"properties": {"params": {"$ref": f"#/$defs/params.{type_id}"}}},
            }
        )
    defs["env"] = ENV_VALUE
    node = node_spec["properties"]["node"]
    node["anyOf"] = [
        {"enum": names, "description": "A registered node type."},
        {"pattern": CLASS_PATH, "description": "A node class: package.module:Class."},
    ]
    node_spec["allOf"] = rules
    return schema

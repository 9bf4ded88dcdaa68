"""The typed model of a graph file (``GraphSpec``), and the JSON Schema generated from it.

An input is written in short form ``node/port`` or long form ``{from: node/port, queue: 2,
when_full: drop_oldest, transport: shm}``; both parse to an ``EdgeSpec`` (the edge as
written; ``pipeline.graph.validate.Edge`` once checked, ``pipeline.transport.plan.EdgePlan``
once planned). Node params stay a plain mapping here: each node type validates its own
``Params`` model in ``pipeline.graph.validate``.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.serve.config import ServeConfig

__all__ = ["EdgeSpec", "GraphSpec", "NodeSpec", "Pace", "WhenFull", "graph_json_schema"]

ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*$"
REF_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*/[A-Za-z_][A-Za-z0-9_]*$"

WhenFull = Literal["block", "drop_oldest", "drop_newest"]
Pace = Literal["realtime", "fast"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class EdgeSpec(_Strict):
    """One edge into a node's input port."""

    from_: str = Field(
        alias="from",
        pattern=REF_PATTERN,
        description="The producing output as node/port, e.g. camera/frames.",
    )
    queue: int = Field(
        4, ge=1, le=1024, description="Messages in flight on this edge before when_full applies."
    )
    when_full: WhenFull = Field(
        "block",
        description="block: lossless back-pressure to the producer; drop_oldest: the consumer "
        "sees the freshest messages; drop_newest: new messages are dropped. Drops are counted.",
    )
    transport: Literal["shm", "tcp"] = Field(
        "shm",
        description="shm: shared-memory slots with descriptors over ZeroMQ (one host); tcp: the "
        "buffers travel as ZeroMQ frames (as between hosts).",
    )

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"from": value}
        return value

    @property
    def node(self) -> str:
        return self.from_.split("/", 1)[0]

    @property
    def port(self) -> str:
        return self.from_.split("/", 1)[1]


class NodeSpec(_Strict):
    """One node of the graph."""

    id: str = Field(pattern=ID_PATTERN, description="Unique id of this node in the graph.")
    node: str = Field(
        min_length=1,
        description="Node type: a registered name (see `pipeline nodes`) or package.module:Class.",
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="Parameters, checked against the node type's Params."
    )
    inputs: dict[str, EdgeSpec] = Field(
        default_factory=dict,
        description="Input port -> producing output, short form node/port or long form.",
    )
    pace: Pace | None = Field(
        None,
        description="Sources only. realtime (the default): at the source's own frame rate "
        "(a video file's, the fps param of synthetic and image_folder; a camera paces "
        "itself); fast: as fast as the consumers take them.",
    )
    max_fps: float | None = Field(
        None,
        gt=0,
        le=10000,
        description="Sources only. At most this many frames per second, whatever the pace.",
    )
    health_timeout_s: float | None = Field(
        60.0,
        gt=0,
        description="A node inside one process() or flush() call for this long is stuck: "
        "the graph stops with its stack printed (a stall warning comes at half); null: never.",
    )
    open_timeout_s: float | None = Field(
        120.0, gt=0, description="The longest open() may take (loading a model); null: no limit."
    )
    close_timeout_s: float | None = Field(
        30.0, gt=0, description="The longest close() may take; null: no limit."
    )


class GraphSpec(_Strict):
    """A graph file."""

    graph: str = Field(min_length=1, description="Name of the graph.")
    description: str = Field("", description="What the graph does.")
    nodes: list[NodeSpec] = Field(min_length=1, description="The nodes, in any order.")
    serve: ServeConfig | None = Field(
        None, description="Serve Viam's vision, ML model and camera APIs beside the graph."
    )


def graph_json_schema() -> str:
    """The JSON Schema of a graph file, as committed in ``pipeline/graph/schema.json``.

    It knows every registered node type's params (``pipeline.graph.node_schema``).
    """
    schema = GraphSpec.model_json_schema(by_alias=True)
    # An input may also be written in short form, "node/port".
    inputs = schema["$defs"]["NodeSpec"]["properties"]["inputs"]
    inputs["additionalProperties"] = {
        "anyOf": [
            {"type": "string", "pattern": REF_PATTERN, "description": "Short form: node/port."},
            {"$ref": "#/$defs/EdgeSpec"},
        ]
    }
    from pipeline.graph.node_schema import add_node_types  # imports every node type

    add_node_types(schema)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "pipeline graph"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"

"""The typed model of a graph file (``GraphSpec``), and the JSON Schema generated from it.

An input is written in short form ``node/port`` or long form ``{from: node/port, queue: 2,
when_full: drop_oldest, transport: shm}``; both parse to an ``EdgeSpec`` (the edge as
written; ``pipeline.graph.validate.Edge`` once checked, ``pipeline.transport.plan.EdgePlan``
once planned). A streams input (``Input(..., streams=True)``, e.g. a detector serving several
cameras) may take a list of them, one per upstream stream. Node params stay a plain mapping
here: each node type validates its own ``Params`` model in ``pipeline.graph.validate``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    field_validator,
    model_validator,
)

from pipeline.serve.config import ServeConfig

__all__ = [
    "EdgeSpec",
    "GraphSpec",
    "NodeSpec",
    "Pace",
    "PlacementSpec",
    "WhenFull",
    "graph_json_schema",
]

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
    source: str = Field(
        "",
        pattern=r"^([A-Za-z_][A-Za-z0-9_-]*)?$",
        description="Only the messages of this source node (their `source`): picks one "
        "camera's messages out of a node that serves several. Empty: every message.",
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


def _one_or_many(value: Any) -> str:
    return "many" if isinstance(value, list) else "one"


InputRefs = Annotated[
    Annotated[EdgeSpec, Tag("one")] | Annotated[list[EdgeSpec], Field(min_length=1), Tag("many")],
    Discriminator(_one_or_many),
]
"""One edge into an input, or (a streams input) a list of them."""


# Ray's rules: a label key is an optional DNS prefix and '/' then a name of up to 63
# characters; a value is up to 63 characters of the same kind (or empty).
LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE_PATTERN = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"
ResourceName = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class PlacementSpec(_Strict):
    """Where a node runs on a cluster (``pipeline run --cluster``): Ray-style resources and
    labels, or one machine by name. Ignored when the graph runs on one machine."""

    resources: dict[ResourceName, float] = Field(
        default_factory=dict,
        description="Ray resources the node needs, e.g. {GPU: 1} or {CPU: 2, camera: 1}; it "
        "runs on a Ray node that has them free, and holds them while it runs.",
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Ray node labels the node's machine must carry, e.g. {site: dock-3} "
        "(set with `ray start --labels`).",
    )
    host: str | None = Field(
        None,
        min_length=1,
        description="Run on this machine: its host name or IP address as Ray knows it.",
    )

    @field_validator("resources")
    @classmethod
    def _amounts(cls, value: dict[str, float]) -> dict[str, float]:
        for name, amount in value.items():
            if amount <= 0:
                raise ValueError(f"resource {name!r} must be more than 0, got {amount:g}")
            if amount > 1 and amount != int(amount):
                raise ValueError(
                    f"resource {name!r}: an amount above 1 must be a whole number (Ray's "
                    f"rule), got {amount:g}"
                )
        return value

    @field_validator("labels")
    @classmethod
    def _label_syntax(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            if key.startswith("ray.io/"):
                raise ValueError(f"label {key!r}: keys under ray.io/ are Ray's own")
            if not re.match(LABEL_KEY_PATTERN, key):
                raise ValueError(
                    f"label key {key!r}: letters, digits, '-', '_' and '.', up to 63, "
                    "optionally after a 'domain/' prefix"
                )
            if not re.match(LABEL_VALUE_PATTERN, text):
                raise ValueError(
                    f"label {key}={text!r}: a value is up to 63 letters, digits, '-', '_' "
                    "and '.', starting and ending with a letter or digit"
                )
        return value

    @model_validator(mode="after")
    def _host_or_labels(self) -> PlacementSpec:
        if self.host is not None and self.labels:
            raise ValueError(
                "give either host (one machine) or labels (any machine that has them), not both"
            )
        return self

    def merged_over(self, default: PlacementSpec | None) -> PlacementSpec:
        """This placement on top of a graph's default: each resource and label of the node
        wins over the default's; a node's host replaces the default's labels and host."""
        if default is None:
            return self
        host = self.host if self.host is not None else (None if self.labels else default.host)
        labels = {} if self.host is not None else {**default.labels, **self.labels}
        return PlacementSpec(
            resources={**default.resources, **self.resources}, labels=labels, host=host
        )

    @property
    def empty(self) -> bool:
        return not (self.resources or self.labels or self.host)


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
    inputs: dict[str, InputRefs] = Field(
        default_factory=dict,
        description="Input port -> producing output, short form node/port or long form; a "
        "streams input may take a list of them (one per camera).",
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
    placement: PlacementSpec | None = Field(
        None,
        description="On a cluster (`pipeline run --cluster`): which machine runs this node, by "
        "Ray resources, labels or host; over the graph's default placement.",
    )
    replicas: int = Field(
        1,
        ge=1,
        le=64,
        description="Run this many copies of the node (processes `id[0]`, `id[1]`, ...; on a "
        "cluster each placed on its own, spread over the machines): each message goes to one "
        "copy (the next with room; by seq when the node joins several inputs) and their "
        "results are merged back in seq order. Not for sources.",
    )

    def input_refs(self) -> Iterator[tuple[str, int | None, EdgeSpec]]:
        """Every edge into this node: ``(port, index in the port's list or None, spec)``."""
        for port, refs in self.inputs.items():
            if isinstance(refs, list):
                for i, ref in enumerate(refs):
                    yield port, i, ref
            else:
                yield port, None, refs


class GraphSpec(_Strict):
    """A graph file."""

    graph: str = Field(min_length=1, description="Name of the graph.")
    description: str = Field("", description="What the graph does.")
    nodes: list[NodeSpec] = Field(min_length=1, description="The nodes, in any order.")
    placement: PlacementSpec | None = Field(
        None,
        description="On a cluster: the default placement of every node (a node's own "
        "placement adds to it).",
    )

    def placement_of(self, node: NodeSpec) -> PlacementSpec:
        """A node's placement over the graph's default (empty when neither gives one)."""
        own = node.placement or PlacementSpec.model_validate({})
        return own.merged_over(self.placement)

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
    one = [
        {"type": "string", "pattern": REF_PATTERN, "description": "Short form: node/port."},
        {"$ref": "#/$defs/EdgeSpec"},
    ]
    inputs["additionalProperties"] = {
        "anyOf": [
            *one,
            {
                "type": "array",
                "minItems": 1,
                "items": {"anyOf": one},
                "description": "A streams input: one edge per upstream stream.",
            },
        ]
    }
    from pipeline.graph.node_schema import add_node_types  # imports every node type

    add_node_types(schema)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "pipeline graph"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"

"""``NodeParams``: the base of every node's typed, frozen parameter model.

A node declares ``class Params(NodeParams)`` with pydantic fields, each with a
``description``; the same model validates the graph file's ``params:`` mapping, feeds the JSON
Schema, and is what ``pipeline nodes NAME`` prints.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["NodeParams"]


class NodeParams(BaseModel):
    """Base of a node's parameters: frozen, and unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")

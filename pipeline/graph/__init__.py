"""Graph files: YAML -> typed spec -> validated graph, with file:line:col errors."""

from pipeline.graph.load import check_graph, load_graph
from pipeline.graph.spec import EdgeSpec, GraphSpec, NodeSpec
from pipeline.graph.validate import Edge, ValidatedGraph

__all__ = [
    "Edge",
    "EdgeSpec",
    "GraphSpec",
    "NodeSpec",
    "ValidatedGraph",
    "check_graph",
    "load_graph",
]

"""A streaming dataflow pipeline for vision inference on small machines.

Graphs are YAML files of nodes (sources, transforms, inference, sinks); every node runs in its
own process, nodes are linked by ZeroMQ, and frames move through shared memory with no copy.
This package is the framework; the built-in nodes live in ``nodes`` and use only what is
exported here, exactly as a plugin does.
"""

from pipeline.checks import ParamIssue
from pipeline.errors import (
    ConfigError,
    ConfigIssue,
    MissingDependencyError,
    NodeDefinitionError,
    NodeError,
    NodeExitError,
    NodeOpenError,
    NodeProcessError,
    PipelineError,
    RegistryError,
    TransportError,
)
from pipeline.graph import ValidatedGraph, check_graph, load_graph
from pipeline.messages import Classifications, Detections, Frame, Message, Tensors
from pipeline.node import EndOfStream, Input, Node, Output, OutputPort
from pipeline.params import NodeParams
from pipeline.registry import available_nodes, load_node_class
from pipeline.runtime import NodeStats, RunResult, run_graph

__version__ = "0.1.0"

__all__ = [
    "Classifications",
    "ConfigError",
    "ConfigIssue",
    "Detections",
    "EndOfStream",
    "Frame",
    "Input",
    "Message",
    "MissingDependencyError",
    "Node",
    "NodeDefinitionError",
    "NodeError",
    "NodeExitError",
    "NodeOpenError",
    "NodeParams",
    "NodeProcessError",
    "NodeStats",
    "Output",
    "OutputPort",
    "ParamIssue",
    "PipelineError",
    "RegistryError",
    "RunResult",
    "Tensors",
    "TransportError",
    "ValidatedGraph",
    "__version__",
    "available_nodes",
    "check_graph",
    "load_graph",
    "load_node_class",
    "run_graph",
]

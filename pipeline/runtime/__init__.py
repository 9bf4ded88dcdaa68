"""Running graphs: the plan, the supervisor, the node worker and its lifecycle driver, the
control protocol and node states, pacing, joins and statistics (see ARCHITECTURE.md)."""

from pipeline.runtime.protocol import NodeState
from pipeline.runtime.runner import Launcher, RunMonitor, RunResult, launch_local, run_graph
from pipeline.runtime.stats import NodeStats

__all__ = [
    "Launcher",
    "NodeState",
    "NodeStats",
    "RunMonitor",
    "RunResult",
    "launch_local",
    "run_graph",
]

"""Running graphs: the supervisor, the node worker, joins and statistics."""

from pipeline.runtime.runner import RunMonitor, RunResult, run_graph
from pipeline.runtime.stats import NodeStats

__all__ = ["NodeStats", "RunMonitor", "RunResult", "run_graph"]

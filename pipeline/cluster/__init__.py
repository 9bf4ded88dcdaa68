"""Run one graph across the machines of a Ray cluster (``pipeline run --cluster ADDRESS``).

Ray does membership, placement by resources and labels, process supervision and failure
detection; the data plane stays the pipeline's: shared memory between nodes on one machine,
ZeroMQ tcp (CURVE, keys per run) between machines. ``RayLauncher`` is the
``pipeline.runtime.runner.ClusterLauncher`` that does it. Ray is imported only here, and only
when a cluster is used (the ``cluster`` extra).
"""

from __future__ import annotations

from pipeline.cluster.ray_launcher import RayLauncher

__all__ = ["RayLauncher"]

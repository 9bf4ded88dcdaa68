"""A running graph as a Viam machine: vision, ML model and camera services over gRPC.

``pipeline run GRAPH --serve 127.0.0.1:8081`` (or a ``serve:`` section in the graph file)
starts a server beside the graph that the unmodified Viam SDK talks to (``RobotClient``,
``VisionClient``, ``MLModelClient``, ``CameraClient``). Modules:

- ``contract``: what a node type offers remote callers (``NodeService``) and how pipeline finds
  it (a ``remote_service`` classmethod on the node class, or a ``pipeline.services`` entry
  point named like the node type), so pipeline never imports nodes;
- ``config``: the ``serve:`` section / command-line options (``ServeConfig``);
- ``resources``: which resources a graph offers, under Viam's names;
- ``machine``: the grpclib handlers of Viam's robot, vision, mlmodel and camera APIs;
- ``images``: decoding client images, encoding camera images;
- ``app``: the server process started beside the graph;
- ``call``/``commands``: ``pipeline call`` and ``pipeline serve-cert``.
"""

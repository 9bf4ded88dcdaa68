"""A sink that takes anything and keeps nothing."""

from __future__ import annotations

from pipeline import Input, Message, Node


class DiscardSink(Node):
    """Take every message and keep nothing: the end of a benchmark graph.

    Its statistics (received, latency since capture) are the graph's end-to-end figures.
    Ends when its input ends.

    Example:
        - id: sink
          node: discard
          inputs: {messages: detector/detections}
    """

    messages = Input(Message, description="Any message.")

    def process(self, messages: Message) -> None:
        pass

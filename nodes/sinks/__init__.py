"""Built-in nodes: sinks."""

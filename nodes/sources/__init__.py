"""Built-in nodes: sources."""

"""Built-in nodes, written only against the pipeline's public API, as a plugin would be."""

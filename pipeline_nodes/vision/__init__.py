"""Vision nodes that need no model."""

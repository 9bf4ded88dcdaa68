"""Transform nodes: resize, letterbox, crop, colour and normalise frames."""

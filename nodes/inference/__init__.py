"""Inference: model runtimes (ONNX Runtime, LiteRT/TFLite), the model service and its nodes."""

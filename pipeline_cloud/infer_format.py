"""How ``pipeline infer`` prints a ``GetInferenceResponse``: the layout of Viam's ``viam infer``.

Viam's CLI prints, one tensor after another, the name, the shape (``[32 1 4]``, Go's ``%v``
of a slice) and the values of float64 tensors to 4 decimals; then the annotations: each
bounding box's id, label, normalised corners to 6 decimals and confidence to 4, and each
classification's label and confidence. Here the values of every dtype are printed, and a
list longer than ``max_values`` ends with ``, ...``; :func:`response_json` is the same for
machines.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["format_response", "response_json"]


def _values(array: np.ndarray, max_values: int) -> str:
    flat = array.reshape(-1)
    shown = flat[:max_values] if max_values >= 0 else flat
    if flat.dtype.kind in "biuf":
        text = ", ".join(f"{float(v):.4f}" for v in shown)
    else:
        text = ", ".join(str(v) for v in shown)
    if len(flat) > len(shown):
        text += ", ..."
    return f"[{text}]"


def format_response(
    tensors: Mapping[str, np.ndarray], annotations: Any, max_values: int = 64
) -> str:
    """The text Viam's ``viam infer`` prints, for tensors by name and an ``Annotations``."""
    lines = ["Inference Response:", "Output Tensors:"]
    if not tensors:
        lines.append("  No output tensors.")
    for name, array in tensors.items():
        lines.append(f"  Tensor Name: {name}")
        lines.append(f"    Shape: [{' '.join(str(d) for d in array.shape)}]")
        if array.size:
            lines.append(f"    Values: {_values(array, max_values)}")
        else:
            lines.append("    No values available.")
    lines.append("Annotations:")
    lines.append("Bounding Box Format: [x_min, y_min, x_max, y_max]")
    bboxes = list(annotations.bboxes) if annotations is not None else []
    classes = list(annotations.classifications) if annotations is not None else []
    if not bboxes and not classes:
        lines.append("  No annotations.")
    for box in bboxes:
        lines.append(f"  Bounding Box ID: {box.id}, Label: {box.label}")
        corners = (
            box.x_min_normalized,
            box.y_min_normalized,
            box.x_max_normalized,
            box.y_max_normalized,
        )
        lines.append("    Coordinates: [" + ", ".join(f"{c:.6f}" for c in corners) + "]")
        if box.HasField("confidence"):
            lines.append(f"    Confidence: {box.confidence:.4f}")
    for label in classes:
        lines.append(f"  Classification Label: {label.label}")
        if label.HasField("confidence"):
            lines.append(f"    Confidence: {label.confidence:.4f}")
    return "\n".join(lines)


def response_json(
    tensors: Mapping[str, np.ndarray], annotations: Any, max_values: int = -1
) -> dict[str, Any]:
    """The response as JSON data: tensors (name, dtype, shape, values) and annotations."""

    def values(array: np.ndarray) -> list[Any]:
        flat = array.reshape(-1)
        out: list[Any] = (flat[:max_values] if max_values >= 0 else flat).tolist()
        return out

    return {
        "output_tensors": [
            {"name": n, "dtype": str(a.dtype), "shape": list(a.shape), "values": values(a)}
            for n, a in tensors.items()
        ],
        "annotations": {
            "bounding_box_format": "[x_min, y_min, x_max, y_max]",
            "bboxes": [
                {
                    "id": b.id,
                    "label": b.label,
                    "coordinates": [
                        b.x_min_normalized,
                        b.y_min_normalized,
                        b.x_max_normalized,
                        b.y_max_normalized,
                    ],
                    "confidence": b.confidence if b.HasField("confidence") else None,
                }
                for b in (annotations.bboxes if annotations is not None else [])
            ],
            "classifications": [
                {
                    "label": c.label,
                    "confidence": c.confidence if c.HasField("confidence") else None,
                }
                for c in (annotations.classifications if annotations is not None else [])
            ],
        },
    }

"""Message types: their checks and helpers."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import Detections


def test_detections_validate_shapes():
    with pytest.raises(ValueError, match=r"xyxy must have shape \(N, 4\)"):
        Detections(xyxy=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="confidence has 1 entries for 2 boxes"):
        Detections(xyxy=np.zeros((2, 4)), confidence=[0.5], class_id=[0, 0])


def test_detections_pixels_and_where():
    d = Detections(
        xyxy=[[0.0, 0.5, 0.5, 1.0], [0.1, 0.1, 0.2, 0.2]],
        confidence=[0.9, 0.1],
        class_id=[1, 2],
        class_names=["a", "b"],
        image_wh=(200, 100),
    )
    assert d.pixels().tolist() == [[0, 50, 100, 100], [20, 10, 40, 20]]
    kept = d.where(d.confidence > 0.5)
    assert len(kept) == 1 and kept.class_names == ("a",)
    with pytest.raises(ValueError, match="needs image_wh"):
        Detections().pixels()

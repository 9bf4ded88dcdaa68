"""What a derived message keeps of its frame's meta."""

from __future__ import annotations

from pipeline_nodes.meta import derived_meta


def test_the_frames_identity_stays_its_pixels_description_goes_the_nodes_keys_win():
    frame_meta = {"file": "a.png", "index": 3, "color": "rgb", "transforms": [{}], "model": "x"}
    meta = derived_meta(frame_meta, {"model": "faces", "inference_ms": 1.5})
    assert meta == {"file": "a.png", "index": 3, "model": "faces", "inference_ms": 1.5}
    assert frame_meta["color"] == "rgb"  # the frame's own meta is not changed

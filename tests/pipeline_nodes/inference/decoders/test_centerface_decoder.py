"""Tests of the CenterFace decoder on synthetic heatmaps."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline_nodes.inference.decoders import CenterFaceConfig, CenterFaceDecoder, DecoderError
from pipeline_nodes.inference.decoders.centerface import decode_centerface

W, H = 64, 96  # input; the output grid is 16 x 24
LANDMARKS_YX = [(0.3, 0.25), (0.3, 0.75), (0.5, 0.5), (0.8, 0.3), (0.8, 0.7)]


def maps(peak: float = 0.9) -> dict[str, np.ndarray]:
    """One face: cell (row 10, col 5), 12 px wide, 20 px high, offset y +0.25, x -0.5."""
    heatmap = np.full((1, 1, H // 4, W // 4), 0.01, np.float32)
    scale = np.zeros((1, 2, H // 4, W // 4), np.float32)
    offset = np.zeros((1, 2, H // 4, W // 4), np.float32)
    landmarks = np.zeros((1, 10, H // 4, W // 4), np.float32)
    heatmap[0, 0, 10, 5] = peak
    scale[0, :, 10, 5] = [np.log(20 / 4), np.log(12 / 4)]
    offset[0, :, 10, 5] = [0.25, -0.5]
    for j, (ly, lx) in enumerate(LANDMARKS_YX):
        landmarks[0, 2 * j : 2 * j + 2, 10, 5] = [ly, lx]
    return {"537": heatmap, "538": scale, "539": offset, "540": landmarks}


# centre x = (5 - 0.5 + 0.5) * 4 = 20, y = (10 + 0.25 + 0.5) * 4 = 43: box [14, 33, 26, 53] px
EXPECTED_BOX = np.array([14 / W, 33 / H, 26 / W, 53 / H])
EXPECTED_KPS = np.array([[(14 + lx * 12) / W, (33 + ly * 20) / H] for ly, lx in LANDMARKS_YX])


def test_one_peak_decodes_to_a_known_box_and_landmarks():
    detections = CenterFaceDecoder().decode(maps(), (W, H))
    assert len(detections) == 1
    np.testing.assert_allclose(detections.xyxy[0], EXPECTED_BOX, atol=1e-6)
    assert detections.confidence[0] == pytest.approx(0.9)
    assert detections.class_names == ("face",)
    assert detections.image_wh == (W, H)
    assert detections.keypoints is not None
    np.testing.assert_allclose(detections.keypoints[0], EXPECTED_KPS, atol=1e-6)


def test_a_weaker_neighbouring_peak_is_suppressed():
    outputs = maps()
    for name, value in (("537", [0.7]), ("538", None), ("539", None), ("540", None)):
        neighbour = outputs[name][0, :, 10, 5] if value is None else value
        outputs[name][0, :, 10, 6] = neighbour  # same box one cell to the right (4 px)
    detections = CenterFaceDecoder().decode(outputs, (W, H))
    assert detections.confidence.tolist() == pytest.approx([0.9])


def test_a_distant_second_face_is_kept():
    outputs = maps()
    for name in ("538", "539", "540"):
        outputs[name][0, :, 2, 12] = outputs[name][0, :, 10, 5]
    outputs["537"][0, 0, 2, 12] = 0.6
    detections = CenterFaceDecoder().decode(outputs, (W, H))
    assert detections.confidence.tolist() == pytest.approx([0.9, 0.6])


@pytest.mark.parametrize(
    ("peak", "min_confidence", "kept"),
    [
        # at the threshold
        (0.5, 0.5, 1),
        # below
        (0.49, 0.5, 0),
        # a looser threshold
        (0.3, 0.2, 1),
    ],
)
def test_min_confidence_threshold(peak, min_confidence, kept):
    decoder = CenterFaceDecoder(CenterFaceConfig(min_confidence=min_confidence))
    assert len(decoder.decode(maps(peak), (W, H))) == kept


def test_no_face_gives_empty_detections():
    detections = CenterFaceDecoder().decode(maps(peak=0.1), (W, H))
    assert len(detections) == 0
    assert detections.keypoints is not None
    assert detections.keypoints.shape == (0, 5, 2)


def test_input_size_must_be_a_multiple_of_32():
    with pytest.raises(DecoderError, match="multiples of 32"):
        CenterFaceDecoder().decode(maps(), (60, 96))


def test_heatmap_shape_must_match_the_input_size():
    with pytest.raises(DecoderError, match="'heatmap' has shape"):
        CenterFaceDecoder().decode(maps(), (W * 2, H))


def test_outputs_with_unknown_names_are_taken_in_order():
    named = maps()
    outputs = {f"out{i}": named[k] for i, k in enumerate(("537", "538", "539", "540"))}
    detections = CenterFaceDecoder().decode(outputs, (W, H))
    np.testing.assert_allclose(detections.xyxy[0], EXPECTED_BOX, atol=1e-6)


def test_landmarks_are_optional():
    named = maps()
    outputs = {"heatmap": named["537"], "scale": named["538"], "offset": named["539"]}
    detections = CenterFaceDecoder().decode(outputs, (W, H))
    np.testing.assert_allclose(detections.xyxy[0], EXPECTED_BOX, atol=1e-6)
    assert detections.keypoints is None


def test_missing_heatmap_is_reported_with_the_model_outputs():
    named = maps()
    outputs = {"538": named["538"], "539": named["539"], "540": named["540"]}
    with pytest.raises(DecoderError, match=r"'heatmap'.*\['538', '539', '540'\]"):
        CenterFaceDecoder().decode(outputs, (W, H))


def test_decode_function_on_arrays_without_batch():
    named = maps()
    boxes = decode_centerface(
        named["537"][0], named["538"][0], named["539"][0], None, (W, H), min_confidence=0.5
    )
    np.testing.assert_allclose(boxes.xyxy[0], EXPECTED_BOX, atol=1e-6)
    assert boxes.keypoints is None

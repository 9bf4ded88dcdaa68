"""End-to-end checks with real face models on real photos: decoders plus geometry records.

Each photo is letterboxed (and sometimes cropped) the way a transform node would, the model
runs, the decoder decodes, and ``map_boxes_back`` maps the boxes to the photo through the
recorded transforms. Reference boxes are from the research notes (measured independently).
Skipped when the model files or runtimes are unavailable (see conftest.py).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest

from pipeline_nodes.inference.decoders import make_decoder
from pipeline_nodes.inference.decoders.nms import iou_matrix
from pipeline_nodes.transforms.geometry import (
    letterbox_params,
    map_boxes_back,
    map_points_back,
    record_crop,
    record_letterbox,
)

ASTRONAUT_FACE_BLAZEFACE = [180, 82, 274, 176]  # px of the 512 x 512 photo
ASTRONAUT_FACE_CENTERFACE = [181, 58, 269, 177]
NO_FACES = ("coffee", "chelsea", "rocket")


def letterbox(image: np.ndarray, dst_wh: tuple[int, int]) -> tuple[np.ndarray, dict[str, Any]]:
    """The image letterboxed onto a black ``dst_wh`` canvas, and the transform record."""
    src_wh = (image.shape[1], image.shape[0])
    _, (px, py), (nw, nh) = letterbox_params(src_wh, dst_wh)
    canvas = np.zeros((dst_wh[1], dst_wh[0], 3), np.uint8)
    canvas[py : py + nh, px : px + nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
    return canvas, record_letterbox(src_wh, dst_wh)


def to_pixels(xyxy_norm: np.ndarray, image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    return xyxy_norm * np.array([w, h, w, h], np.float32)


def test_blazeface_finds_the_astronaut_face(blazeface_short_range, photos):
    image = photos["astronaut"]
    model_input, record = letterbox(image, (128, 128))
    detections = make_decoder("blazeface", min_confidence=0.5).decode(
        blazeface_short_range(model_input), (128, 128)
    )
    assert len(detections) == 1
    assert detections.class_names == ("face",)
    assert detections.confidence[0] == pytest.approx(0.923, abs=0.01)
    box = to_pixels(map_boxes_back(detections.xyxy, [record]), image)
    assert iou_matrix(box, [ASTRONAUT_FACE_BLAZEFACE])[0, 0] >= 0.8
    # keypoints: the person's right eye is on the image's left, both inside the face box
    assert detections.keypoints is not None
    kps = map_points_back(detections.keypoints, [record])[0] * 512
    right_eye, left_eye = kps[0], kps[1]
    assert right_eye[0] < left_eye[0]
    assert np.all((kps[:4] >= box[0, :2]) & (kps[:4] <= box[0, 2:]))


@pytest.mark.parametrize("name", NO_FACES)
def test_blazeface_finds_no_face_without_faces(blazeface_short_range, photos, name):
    model_input, _ = letterbox(photos[name], (128, 128))
    detections = make_decoder("blazeface", min_confidence=0.5).decode(
        blazeface_short_range(model_input), (128, 128)
    )
    assert len(detections) == 0


def test_blazeface_box_maps_back_through_crop_and_letterbox_padding(blazeface_short_range, photos):
    # Crop a 200 x 170 region around the face and letterbox it into 128 x 128 (scale 0.64,
    # bands of 9 px above and below): the box mapped through both records must land on the
    # face found on the whole photo.
    image = photos["astronaut"]
    transforms = [record_crop((512, 512), (130, 40, 200, 170))]
    model_input, record = letterbox(image[40:210, 130:330], (128, 128))
    transforms.append(record)
    assert record["pad_xy"] == [0, 9]
    detections = make_decoder("blazeface").decode(blazeface_short_range(model_input), (128, 128))
    assert len(detections) == 1
    box = to_pixels(map_boxes_back(detections.xyxy, transforms), image)
    assert iou_matrix(box, [ASTRONAUT_FACE_BLAZEFACE])[0, 0] >= 0.8


def test_centerface_finds_the_astronaut_face(centerface, photos):
    image = photos["astronaut"]
    model_input, record = letterbox(image, (512, 512))
    detections = make_decoder("centerface", min_confidence=0.5).decode(
        centerface(model_input), (512, 512)
    )
    assert len(detections) == 1
    assert detections.confidence[0] == pytest.approx(0.929, abs=0.01)
    box = to_pixels(map_boxes_back(detections.xyxy, [record]), image)
    assert iou_matrix(box, [ASTRONAUT_FACE_CENTERFACE])[0, 0] >= 0.8
    assert detections.keypoints is not None
    kps = map_points_back(detections.keypoints, [record])[0] * 512
    assert kps[0, 0] < kps[1, 0]  # right eye (image left) before left eye
    assert kps[3, 0] < kps[4, 0]  # right mouth corner before left
    assert np.all((kps >= box[0, :2]) & (kps <= box[0, 2:]))


@pytest.mark.parametrize("name", NO_FACES)
def test_centerface_finds_no_face_without_faces(centerface, photos, name):
    model_input, _ = letterbox(photos[name], (512, 512))
    detections = make_decoder("centerface", min_confidence=0.5).decode(
        centerface(model_input), (512, 512)
    )
    assert len(detections) == 0


def test_centerface_box_maps_back_through_crop_and_letterbox(centerface, photos):
    # Crop a 400 x 300 region around the face, letterbox it into 320 x 320 (scale 0.8, bands
    # of 40 px): the mapped box must match the one found on the whole photo.
    image = photos["astronaut"]
    transforms = [record_crop((512, 512), (60, 10, 400, 300))]
    crop = image[10:310, 60:460]
    model_input, record = letterbox(crop, (320, 320))
    transforms.append(record)
    assert record["pad_xy"] == [0, 40]
    detections = make_decoder("centerface").decode(centerface(model_input), (320, 320))
    assert len(detections) == 1
    box = to_pixels(map_boxes_back(detections.xyxy, transforms), image)
    assert iou_matrix(box, [ASTRONAUT_FACE_CENTERFACE])[0, 0] >= 0.8

"""load_detector / load_classifier: the objects the model nodes run, from plain Python code."""

from __future__ import annotations

import cv2
import numpy as np
import pydantic
import pytest
from photos import ASTRONAUT_FACE as FACES
from photos import bgr, iou, lfw_frames

from pipeline import Frame
from pipeline.testing import run_node
from pipeline_nodes.inference import Classifier, Detector, load_classifier, load_detector
from pipeline_nodes.inference.classifier import ClassifierNode
from pipeline_nodes.inference.detector import DetectorNode
from pipeline_nodes.inference.models.fetch import fetch_models
from pipeline_nodes.inference.models.store import default_models_dir

ASTRONAUT_FACE = FACES["face_short_range"]  # pixels of the 512x512 photo


@pytest.fixture(scope="module", autouse=True)
def models() -> None:
    fetch_models(default_models_dir(), log=lambda *_: None)  # nothing to do when present


def same_detections(a, b) -> None:
    assert a.class_names == b.class_names
    np.testing.assert_array_equal(a.xyxy, b.xyxy)
    np.testing.assert_array_equal(a.confidence, b.confidence)
    np.testing.assert_array_equal(a.class_id, b.class_id)
    if a.keypoints is None:
        assert b.keypoints is None
    else:
        np.testing.assert_array_equal(a.keypoints, b.keypoints)
    assert a.image_wh == b.image_wh


@pytest.mark.parametrize(
    ("model", "params"),
    [
        ("face_short_range", {}),  # TFLite, letterbox, BlazeFace anchors
        ("centerface", {"input_size": [512, 384]}),  # ONNX, NCHW, heatmaps, non-square input
        ("person_ssdlite", {"default_minimum_confidence": 0.3}),  # ONNX, SSD post-processed
    ],
)
def test_detect_gives_exactly_what_the_detector_node_sends(model, params):
    images = [bgr("astronaut"), bgr("camera"), bgr("coffee")]
    frames = [Frame(image=im, seq=i, source="photos") for i, im in enumerate(images)]
    sent = run_node(DetectorNode, {"model": model, **params}, {"frames": frames}).sent
    with load_detector(model, **params) as detector:
        for image, from_node in zip(images, sent["detections"]):
            same_detections(detector.detect(image), from_node)
    assert sent["detections"][0].seq == 0 and sent["detections"][0].source == "photos"


def test_detector_finds_the_astronaut_face_in_normalised_top_left_boxes():
    image = bgr("astronaut")
    with load_detector("face_short_range") as faces:
        assert isinstance(faces, Detector)
        assert faces.labels == ("face",)
        assert faces.input_size == (128, 128)
        assert faces.model.metadata().inputs[0].shape == (1, 128, 128, 3)
        assert set(faces.model.infer({"input": np.zeros((1, 128, 128, 3), np.float32)})) == {
            "regressors",
            "classificators",
        }
        found = faces.detect(image)
    assert found.class_names == ("face",)
    assert found.image_wh == (512, 512)
    assert np.all((found.xyxy >= 0) & (found.xyxy <= 1))
    assert iou(found.pixels()[0], ASTRONAUT_FACE) >= 0.8
    assert found.meta["model"] == "face_short_range" and found.meta["inference_ms"] > 0
    # The face cut out and pasted at the bottom-right of a black image of the same size:
    # the box moves right and down (origin at the top-left).
    canvas = np.zeros_like(image)
    canvas[256:, 256:] = image[50:306, 130:386]
    with load_detector("face_short_range") as faces:
        moved = faces.detect(canvas)
    shift = np.array([256 - 130, 256 - 50, 256 - 130, 256 - 50], np.float32)
    assert iou(moved.pixels()[0], ASTRONAUT_FACE + shift) >= 0.8


def test_detect_maps_boxes_back_through_the_transforms_given():
    image = bgr("astronaut")
    big = cv2.resize(image, (1024, 1024))
    record = {"op": "resize", "src_wh": [512, 512], "dst_wh": [1024, 1024]}
    with load_detector("face_short_range") as faces:
        found = faces.detect(big, [record])
    assert found.image_wh == (512, 512)
    assert iou(found.pixels()[0], ASTRONAUT_FACE) >= 0.8


def test_a_threshold_of_zero_keeps_low_confidence_detections():
    # It used to become 1.0 (``0 or 1.0``), so nothing at all was detected.
    image = bgr("coffee")
    with load_detector("face_short_range") as default:
        assert default.default_minimum_confidence == 0.5  # the catalog's decoder setting
        normal = default.detect(image)
    with load_detector("face_short_range", default_minimum_confidence=0.0) as zero:
        assert zero.default_minimum_confidence == 0.0
        everything = zero.detect(image)
    assert len(normal) == 0
    assert len(everything) > 0 and float(everything.confidence.min()) < 0.5


def test_unlisted_labels_keep_the_decoders_default_threshold():
    image = bgr("astronaut")
    with load_detector("person_ssdlite", label_confidences={"dog": 0.01}) as people:
        found = people.detect(image)
    with load_detector("person_ssdlite") as plain:
        reference = plain.detect(image)
    same_detections(found, reference)


def test_classify_gives_exactly_what_the_classifier_node_sends():
    frames = lfw_frames([0, 1, 150, 151])
    crops = [f.image for f in frames]
    sent = run_node(ClassifierNode, {"model": "face_classifier"}, {"frames": frames}).sent
    with load_classifier("face_classifier", label_confidences={"face": 0.0}) as classifier:
        assert isinstance(classifier, Classifier)
        assert classifier.labels == ("not_face", "face")
        assert classifier.input_size == (25, 25)
        for crop, from_node in zip(crops, sent["classifications"]):
            got = classifier.classify(crop)
            assert got.class_names == from_node.class_names
            np.testing.assert_array_equal(got.confidence, from_node.confidence)
            np.testing.assert_array_equal(got.class_id, from_node.class_id)
    assert [c.class_names[0] for c in sent["classifications"]][:2] == ["face", "face"]


def test_classifier_thresholds_drop_classes_below_their_label_floor():
    crop = cv2.cvtColor(bgr("astronaut")[82:176, 180:274], cv2.COLOR_BGR2GRAY)
    crop = cv2.cvtColor(cv2.resize(crop, (25, 25)), cv2.COLOR_GRAY2BGR)
    with load_classifier("face_classifier", top_k=2) as both:
        assert len(both.classify(crop)) == 2
    with load_classifier("face_classifier", top_k=2, label_confidences={"not_face": 1.0}) as c:
        got = c.classify(crop)
    assert "not_face" not in got.class_names and len(got) == 1


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((10, 10, 4), np.uint8),
        np.zeros((10, 10, 3), np.float32),
        np.zeros((0, 10, 3), np.uint8),
        [[0, 0, 0]],
    ],
)
def test_a_wrong_image_is_a_clear_error(image):
    with load_detector("face_short_range") as faces, pytest.raises(ValueError, match="image"):
        faces.detect(image)


def test_unknown_params_and_models_are_errors_before_anything_runs():
    with pytest.raises(pydantic.ValidationError, match="min_confidence"):
        load_detector("face_short_range", min_confidence=0.5)
    with pytest.raises(LookupError, match="face_short_range"):
        load_detector("face_shortrange")
    with pytest.raises(ValueError, match="decoder"):
        load_detector(default_models_dir() / "face_classifier.onnx")


@pytest.mark.parametrize(
    ("load", "model"),
    [(load_detector, "person_ssdlite"), (load_classifier, "face_classifier")],
)
def test_catalog_models_load_without_a_labels_warning(load, model, caplog):
    # Their files carry the catalog's labels; repeating them is not worth a warning.
    with load(model) as loaded:
        assert loaded.labels
    assert "labels argument is ignored" not in caplog.text

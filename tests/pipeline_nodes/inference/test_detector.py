"""The detector node on real models and real photos (scikit-image)."""

from __future__ import annotations

import io
import json
import textwrap

import cv2
import numpy as np
import pytest
from photos import ASTRONAUT_FACE, ASTRONAUT_PERSON, CAMERA_PERSON, iou, photo
from skimage import data

from pipeline import Frame, load_graph, run_graph
from pipeline.testing import run_node
from pipeline_nodes.inference.detector import DetectorNode
from pipeline_nodes.inference.models.fetch import fetch_models
from pipeline_nodes.inference.models.store import default_models_dir


@pytest.fixture(scope="module", autouse=True)
def models() -> None:
    fetch_models(default_models_dir(), log=lambda *_: None)  # nothing to do when present


@pytest.mark.parametrize(
    ("model", "params"),
    [
        ("face_short_range", {}),  # TFLite, letterboxed 128x128
        ("centerface", {"input_size": [512, 512]}),  # ONNX, heatmaps
    ],
)
def test_face_detector_finds_the_astronaut_and_nothing_elsewhere(model, params):
    frames = [photo(n, i) for i, n in enumerate(["astronaut", "coffee", "chelsea", "rocket"])]
    run = run_node(DetectorNode, {"model": model, **params}, {"frames": frames})
    found = run.sent["detections"]
    assert [d.seq for d in found] == [0, 1, 2, 3]  # one message per frame, joined by seq
    astronaut = found[0]
    assert len(astronaut) == 1 and astronaut.class_names == ("face",)
    assert astronaut.image_wh == (512, 512)
    assert iou(astronaut.pixels()[0], ASTRONAUT_FACE[model]) >= 0.8
    assert astronaut.keypoints is not None and astronaut.keypoints.shape[1] in (5, 6)
    assert [len(d) for d in found[1:]] == [0, 0, 0]


def test_tflite_and_onnx_face_boxes_agree():
    frame = photo("astronaut")
    tfl = run_node(DetectorNode, {"model": "face_short_range"}, {"frames": [frame]})
    onx = run_node(
        DetectorNode, {"model": "centerface", "input_size": [512, 512]}, {"frames": [frame]}
    )
    a = tfl.sent["detections"][0].xyxy[0]
    b = onx.sent["detections"][0].xyxy[0]
    assert iou(a, b) >= 0.7


def test_person_detector_finds_people_and_not_cats_or_cups():
    frames = [photo(n, i) for i, n in enumerate(["astronaut", "camera", "coffee", "chelsea"])]
    run = run_node(DetectorNode, {"model": "person_ssdlite"}, {"frames": frames})
    astronaut, camera, coffee, chelsea = run.sent["detections"]
    assert astronaut.class_names[0] == "person"
    assert iou(astronaut.pixels()[0], ASTRONAUT_PERSON) >= 0.8
    assert iou(camera.pixels()[0], CAMERA_PERSON) >= 0.8
    assert len(coffee) == 0 and len(chelsea) == 0


def test_boxes_map_back_through_an_upstream_resize():
    # A 1024x1024 upscale recorded upstream: boxes must still refer to the 512x512 original.
    frame = photo("astronaut")
    big = cv2.resize(frame.image, (1024, 1024))
    resized = frame.replace(
        image=big,
        meta={"transforms": [{"op": "resize", "src_wh": [512, 512], "dst_wh": [1024, 1024]}]},
    )
    run = run_node(DetectorNode, {"model": "face_short_range"}, {"frames": [resized]})
    found = run.sent["detections"][0]
    assert found.image_wh == (512, 512)
    assert iou(found.pixels()[0], ASTRONAUT_FACE["face_short_range"]) >= 0.8


def test_per_label_and_default_thresholds_filter():
    frame = photo("astronaut")
    strict = run_node(
        DetectorNode,
        {"model": "face_short_range", "label_confidences": {"face": 0.99}},
        {"frames": [frame]},
    )
    assert len(strict.sent["detections"][0]) == 0
    loose = run_node(
        DetectorNode,
        {"model": "face_short_range", "default_minimum_confidence": 0.3},
        {"frames": [frame]},
    )
    assert len(loose.sent["detections"][0]) >= 1


def test_unknown_model_fails_open_with_the_known_names():
    run = run_node(DetectorNode, {"model": "face_shortrange"}, {"frames": []}, raise_errors=False)
    assert run.calls == ["open"]
    assert "face_short_range" in str(run.error)


@pytest.mark.parametrize(
    ("model", "params"),
    [("face_short_range", {}), ("centerface", {"input_size": [192, 192]})],
)
def test_face_detector_recall_and_false_positives_on_labelled_faces(model, params):
    # scikit-image's lfw_subset: 100 faces then 100 non-faces, 25x25 grey. Each is shown
    # at 96x96 with a 16-pixel black border. (On a mid-grey border BlazeFace fires on up to
    # 20% of the non-faces: measured, and worth knowing for a real scene.)
    images = data.lfw_subset()
    frames = []
    for i, img in enumerate(images):
        grey = cv2.resize(
            np.clip(img * 255 if img.max() <= 1 else img, 0, 255).astype(np.uint8),
            (96, 96),
            interpolation=cv2.INTER_LINEAR,
        )
        canvas = cv2.copyMakeBorder(grey, 16, 16, 16, 16, cv2.BORDER_CONSTANT, value=0)
        frames.append(Frame(image=cv2.cvtColor(canvas, cv2.COLOR_GRAY2BGR), seq=i))
    run = run_node(DetectorNode, {"model": model, **params}, {"frames": frames})
    found = [len(d) > 0 for d in run.sent["detections"]]
    recall = np.mean(found[:100])
    false_positive_rate = np.mean(found[100:])
    assert recall >= 0.95, recall
    assert false_positive_rate <= 0.05, false_positive_rate


def test_a_default_minimum_confidence_of_zero_keeps_everything_the_decoder_finds():
    # `0 or 1.0` used to turn a threshold of 0 into 1.0: nothing was ever detected.
    frames = [photo("coffee")]
    plain = run_node(DetectorNode, {"model": "face_short_range"}, {"frames": frames})
    zero = run_node(
        DetectorNode,
        {"model": "face_short_range", "default_minimum_confidence": 0.0},
        {"frames": frames},
    )
    assert len(plain.sent["detections"][0]) == 0
    found = zero.sent["detections"][0]
    assert len(found) > 0 and float(found.confidence.min()) < 0.5


def test_detections_carry_the_frames_seq_capture_time_and_source():
    frame = photo("astronaut", seq=41)
    (found,) = run_node(DetectorNode, {"model": "face_short_range"}, {"frames": [frame]}).sent[
        "detections"
    ]
    assert (found.seq, found.t_capture_ns, found.source) == (41, frame.t_capture_ns, "photos")
    assert found.meta["model"] == "face_short_range"


def test_detections_keep_which_image_they_are_for_but_not_its_geometry():
    frame = photo("astronaut").replace(
        meta={"file": "astronaut.png", "index": 7, "color": "bgr", "transforms": []}
    )
    (found,) = run_node(DetectorNode, {"model": "face_short_range"}, {"frames": [frame]}).sent[
        "detections"
    ]
    assert found.meta["file"] == "astronaut.png" and found.meta["index"] == 7
    assert found.meta["model"] == "face_short_range" and "inference_ms" in found.meta
    assert "transforms" not in found.meta and "color" not in found.meta


@pytest.mark.integration
def test_a_jsonl_of_detections_over_a_folder_says_which_image_each_line_is_for(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("astronaut", "coffee", "camera"):
        cv2.imwrite(str(folder / f"{name}.png"), photo(name).image)
    graph = tmp_path / "graph.yaml"
    graph.write_text(
        textwrap.dedent(f"""
        graph: faces_in_photos
        nodes:
          - id: photos
            node: image_folder
            params: {{path: {folder}, pattern: "*.png"}}
          - id: faces
            node: detector
            params: {{model: face_short_range}}
            inputs: {{frames: photos/frames}}
          - id: log
            node: jsonl
            params: {{path: {tmp_path}/faces.jsonl}}
            inputs: {{messages: faces/detections}}
        """)
    )
    result = run_graph(load_graph(graph), out=io.StringIO())
    assert result.exit_code == 0, result.error
    lines = [json.loads(line) for line in (tmp_path / "faces.jsonl").read_text().splitlines()]
    by_file = {line["meta"]["file"]: line for line in lines}
    assert sorted(by_file) == ["astronaut.png", "camera.png", "coffee.png"]
    assert [by_file[f]["meta"]["index"] for f in sorted(by_file)] == [0, 1, 2]
    assert [d["label"] for d in by_file["astronaut.png"]["detections"]] == ["face"]
    assert by_file["coffee.png"]["detections"] == []


def test_the_threshold_param_says_each_catalog_models_default():
    from pipeline_nodes.inference import load_detector

    description = DetectorNode.Params.model_fields["default_minimum_confidence"].description
    assert "face_short_range" in description and "person_ssdlite" in description
    assert "yolo 0.25" in description
    with load_detector("centerface") as centerface:
        assert f"centerface {centerface.default_minimum_confidence:g}," in description


def camera_frames(names: list[str], seqs: int) -> list[Frame]:
    """``seqs`` frames from each of several cameras (one photo each), as they arrive."""
    return [
        Frame(image=photo(name).image, seq=seq, t_capture_ns=1, source=f"cam_{name}")
        for seq in range(seqs)
        for name in names
    ]


@pytest.mark.parametrize(
    ("model", "params", "batches"),
    [
        ("centerface", {"input_size": [320, 320]}, True),  # ONNX, dynamic batch axis
        ("face_short_range", {}, False),  # TFLite, batch of 1: run one by one
    ],
)
def test_one_detector_serves_several_cameras_batched_with_the_same_results(model, params, batches):
    names = ["astronaut", "coffee", "chelsea"]
    frames = camera_frames(names, 2)
    one = run_node(DetectorNode, {"model": model, **params}, {"frames": frames})
    batched = run_node(DetectorNode, {"model": model, **params, "max_batch": 3}, {"frames": frames})
    for run in (one, batched):
        got = [(d.source, d.seq) for d in run.sent["detections"]]
        assert got == [(f.source, f.seq) for f in frames]  # round-robin, routed by source
        counts = {d.source: len(d) for d in run.sent["detections"]}
        assert counts == {"cam_astronaut": 1, "cam_coffee": 0, "cam_chelsea": 0}
    # two batches of three cameras; a model without a batch axis is served frame by frame
    assert batched.calls.count("process") == (2 if batches else 6)
    for a, b in zip(one.sent["detections"], batched.sent["detections"]):
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-4)
        np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-4)
    node = DetectorNode(DetectorNode.Params.model_validate({"model": model, **params}))
    node.open()
    try:
        assert node.vision.batches is batches
    finally:
        node.close()

"""Every catalog model, configured only from ``model_info``, runs and decodes on real photos.

The preprocessing below reads nothing but ``info["input"]`` (size, layout, colour, resize mode,
mean/std), and the decoder is ``make_decoder(info["decoder"], **info["decoder_params"])``
from ``pipeline_nodes.inference.decoders``: this is what the detector and classifier nodes do, so a
wrong field in the catalog fails here.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline_nodes.inference.models import CATALOG, model_info

cv2 = pytest.importorskip("cv2")
decoders = pytest.importorskip("pipeline_nodes.inference.decoders")

# Reference boxes on skimage's astronaut photo (x1, y1, x2, y2 pixels), from the research note.
ASTRONAUT_FACE = [180, 70, 274, 176]
ASTRONAUT_PERSON = [3, 32, 373, 508]
DETECTORS = sorted(n for n, s in CATALOG.items() if s.task == "detection")
CLASSIFIERS = sorted(n for n, s in CATALOG.items() if s.task == "classification")


def iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def prepare(image: np.ndarray, spec: dict):
    """Image (RGB or grey uint8) -> (input tensor, (in_w, in_h), box mapping to pixels)."""
    height, width = image.shape[:2]
    if spec["size"] is None:
        m = spec["size_multiple"]
        in_h, in_w = -(-height // m) * m, -(-width // m) * m
    else:
        in_h, in_w = spec["size"]
    if spec["color"] == "GRAY" and image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if spec["resize"] == "letterbox":
        scale = min(in_w / width, in_h / height)
        w, h = round(width * scale), round(height * scale)
        left, top = (in_w - w) // 2, (in_h - h) // 2
        canvas = np.zeros((in_h, in_w, *image.shape[2:]), image.dtype)
        canvas[top : top + h, left : left + w] = cv2.resize(image, (w, h))
        image = canvas
        sx = sy = scale
    else:
        image = cv2.resize(image, (in_w, in_h))
        sx, sy, left, top = in_w / width, in_h / height, 0, 0
    x = (image.astype(np.float32) - spec["mean"]) / spec["std"]
    if x.ndim == 2:
        x = x[..., None]
    x = x[None]
    if spec["layout"] == "NCHW":
        x = x.transpose(0, 3, 1, 2)

    def to_pixels(xyxy: np.ndarray) -> list[float]:
        x1, y1, x2, y2 = xyxy * [in_w, in_h, in_w, in_h]
        return [(x1 - left) / sx, (y1 - top) / sy, (x2 - left) / sx, (y2 - top) / sy]

    return np.ascontiguousarray(x, np.float32), (in_w, in_h), to_pixels


def run(models_dir, info: dict, x: np.ndarray) -> dict[str, np.ndarray]:
    path = str(models_dir / info["file"])
    if info["format"] == "onnx":
        ort = pytest.importorskip("onnxruntime")
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, {info["input"]["name"]: x})))
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    interpreter = litert.Interpreter(model_path=path, num_threads=1)
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    assert inp["name"] == info["input"]["name"]
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    return {d["name"]: interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()}


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_decoder_builds_from_model_info(name):
    info = model_info(name)
    decoder = decoders.make_decoder(info["decoder"], **info["decoder_params"])
    assert decoder.kind == info["decoder"]


@pytest.mark.parametrize("name", DETECTORS)
def test_detector_finds_the_astronaut(models_dir, skimage_data, name):
    info = model_info(name)
    x, input_wh, to_pixels = prepare(skimage_data.astronaut(), info["input"])
    decoder = decoders.make_decoder(info["decoder"], **info["decoder_params"])
    detections = decoder.decode(run(models_dir, info, x), input_wh)
    assert len(detections) >= 1
    assert detections.class_names[0] == info["labels"][0]
    reference = ASTRONAUT_PERSON if info["labels"] == ["person"] else ASTRONAUT_FACE
    assert detections.confidence[0] > 0.75
    assert iou(to_pixels(detections.xyxy[0]), reference) >= 0.7


@pytest.mark.parametrize("name", DETECTORS)
def test_detector_finds_nothing_in_coffee(models_dir, skimage_data, name):
    info = model_info(name)
    x, input_wh, _ = prepare(skimage_data.coffee(), info["input"])
    decoder = decoders.make_decoder(info["decoder"], **info["decoder_params"])
    assert len(decoder.decode(run(models_dir, info, x), input_wh)) == 0


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifier_labels_a_face_and_a_non_face(models_dir, name):
    from model_builder.build_classifier import load_lfw_subset

    info = model_info(name)
    images, labels = load_lfw_subset()
    decoder = decoders.make_decoder(info["decoder"], **info["decoder_params"])
    for index in (0, 199):  # first image is a face, last is not
        x, input_wh, _ = prepare(images[index].astype(np.uint8), info["input"])
        result = decoder.decode(run(models_dir, info, x), input_wh)
        assert result.class_names[0] == info["labels"][labels[index]]
        assert result.confidence[0] > 0.5

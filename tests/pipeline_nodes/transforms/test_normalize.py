"""Tests of tensor_shape, normalize_into and the Normalize node."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest

from pipeline import Tensors
from pipeline.testing import make_frame, run_node
from pipeline_nodes.transforms.normalize import Normalize, normalize_into, per_channel, tensor_shape

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


@pytest.mark.parametrize(
    ("image_shape", "layout", "batch", "expected"),
    [
        ((48, 64, 3), "NHWC", True, (1, 48, 64, 3)),
        ((48, 64, 3), "NCHW", True, (1, 3, 48, 64)),
        ((48, 64, 3), "NHWC", False, (48, 64, 3)),
        ((48, 64, 3), "NCHW", False, (3, 48, 64)),
        # grey (H, W) is one channel
        ((48, 64), "NCHW", True, (1, 1, 48, 64)),
    ],
)
def test_tensor_shape(image_shape, layout, batch, expected):
    assert tensor_shape(image_shape, layout, batch) == expected


@pytest.mark.parametrize(
    ("values", "channels", "expected"),
    [
        ([2.0], 3, [2.0, 2.0, 2.0]),  # one value for every channel
        ([1.0, 2.0, 3.0], 3, [1.0, 2.0, 3.0]),
    ],
)
def test_per_channel(values, channels, expected):
    np.testing.assert_array_equal(per_channel(values, channels, "mean"), expected)


def test_per_channel_rejects_a_wrong_count():
    with pytest.raises(ValueError, match="mean has 2 values for an image of 3 channels"):
        per_channel([1.0, 2.0], 3, "mean")


def reference(image, mean, std, scale):
    pixels = image.astype(np.float64)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return (pixels * scale - np.asarray(mean)) / np.asarray(std)


@pytest.mark.parametrize(("layout", "batch"), [("NHWC", True), ("NCHW", True), ("NCHW", False)])
def test_normalize_into_matches_the_formula(layout, batch):
    image = np.random.default_rng(0).integers(0, 256, (12, 16, 3), np.uint8)
    out = np.empty(tensor_shape(image.shape, layout, batch), np.float32)
    normalize_into(image, out, mean=MEAN, std=STD, scale=1 / 255, layout=layout, batch=batch)
    expected = reference(image, MEAN, STD, 1 / 255)
    body = out[0] if batch else out
    if layout == "NCHW":
        body = body.transpose(1, 2, 0)
    np.testing.assert_allclose(body, expected, rtol=1e-5, atol=1e-5)


def test_normalize_into_handles_grey_images():
    image = np.array([[0, 255], [128, 64]], np.uint8)
    out = np.empty((1, 1, 2, 2), np.float32)
    normalize_into(image, out, mean=[127.5], std=[127.5], layout="NCHW")
    np.testing.assert_allclose(out[0, 0], (image - 127.5) / 127.5, atol=1e-6)


def test_normalize_into_uint8_rounds_and_clips():
    image = np.array([[[0, 100, 250]]], np.uint8)
    out = np.empty((1, 1, 1, 3), np.uint8)
    normalize_into(image, out, mean=[10.0], std=[0.5], scale=1.0)
    # (0-10)/0.5 = -20 -> 0; (100-10)/0.5 = 180; (250-10)/0.5 = 480 -> 255
    np.testing.assert_array_equal(out[0, 0, 0], [0, 180, 255])


def test_normalize_into_uint8_identity_copies_the_pixels():
    image = np.random.default_rng(2).integers(0, 256, (5, 7, 3), np.uint8)
    out = np.empty((1, 3, 5, 7), np.uint8)
    normalize_into(image, out, layout="NCHW")
    np.testing.assert_array_equal(out[0], image.transpose(2, 0, 1))


@pytest.mark.parametrize(
    ("out", "kwargs", "message"),
    [
        # wrong shape
        (np.empty((1, 4, 4, 3), np.float32), {}, "expected"),
        # wrong dtype
        (np.empty((1, 8, 8, 3), np.float64), {}, "expected"),
        # mean has neither 1 nor 3 values
        (np.empty((1, 8, 8, 3), np.float32), {"mean": [0.0, 1.0]}, "mean has 2 values"),
        # a zero std
        (np.empty((1, 8, 8, 3), np.float32), {"std": [0.0]}, "std values must be > 0"),
    ],
)
def test_normalize_into_rejects_bad_arguments(out, kwargs, message):
    with pytest.raises(ValueError, match=message):
        normalize_into(np.zeros((8, 8, 3), np.uint8), out, **kwargs)


def test_normalize_node_emits_one_named_tensor_carrying_the_frame_identity():
    frame = make_frame(32, 24, seq=9)
    transforms = [{"op": "resize", "src_wh": [64, 48], "dst_wh": [32, 24]}]
    frame = frame.replace(meta={"transforms": transforms})
    run = run_node(
        Normalize,
        {"mean": MEAN, "std": STD, "layout": "NCHW", "name": "images"},
        inputs={"frames": [frame]},
    )
    (out,) = run.sent["tensors"]
    assert isinstance(out, Tensors)
    assert list(out.tensors) == ["images"]
    tensor = out["images"]
    assert tensor.shape == (1, 3, 24, 32)
    assert tensor.dtype == np.float32
    assert (out.seq, out.t_capture_ns, out.source) == (9, frame.t_capture_ns, frame.source)
    assert out.meta["transforms"] == transforms
    np.testing.assert_allclose(
        tensor[0].transpose(1, 2, 0), reference(frame.image, MEAN, STD, 1 / 255), atol=1e-5
    )


@pytest.mark.parametrize(
    ("dtype", "low", "high"),
    [
        # float32 scales by 1/255 unless told otherwise
        ("float32", 0.0, 1.0),
        # uint8 keeps the pixels
        ("uint8", 0, 255),
    ],
)
def test_normalize_node_default_scale_follows_the_dtype(dtype, low, high):
    frame = make_frame(4, 1, value=0)
    image = frame.image.copy()
    image[0, 1:] = 255
    run = run_node(
        Normalize, {"dtype": dtype, "batch": False}, inputs={"frames": [frame.replace(image=image)]}
    )
    tensor = run.sent["tensors"][0]["input"]
    assert tensor.shape == (1, 4, 3)
    assert tensor.dtype == np.dtype(dtype)
    assert tensor.min() == low
    assert tensor.max() == high


def test_normalize_node_reports_a_mean_that_does_not_fit_the_frame():
    run = run_node(
        Normalize,
        {"mean": [0.1, 0.2]},
        inputs={"frames": [make_frame(8, 8)]},
        node_id="prep",
        raise_errors=False,
    )
    assert run.failed_in == "process"
    assert "'prep'" in str(run.error)
    assert "mean has 2 values for an image of 3 channels" in str(run.error)


@pytest.mark.parametrize(
    "params",
    [
        {"std": [1.0, 0.0, 1.0]},  # a zero std
        {"mean": []},  # no value at all
        {"layout": "CHWN"},  # not a layout
        {"scale": 0},  # scale must be > 0
    ],
)
def test_normalize_params_reject_bad_values(params):
    with pytest.raises(pydantic.ValidationError):
        Normalize.Params.model_validate(params)

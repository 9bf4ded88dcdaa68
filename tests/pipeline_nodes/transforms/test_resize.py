"""Tests of resize_into (stretch and letterbox) and of the Resize node."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.testing import make_frame, run_node
from pipeline_nodes.transforms.geometry import map_boxes_back, record_letterbox, record_resize
from pipeline_nodes.transforms.resize import Resize, resize_into


def square_image(wh: tuple[int, int], xyxy: tuple[int, int, int, int], channels: int = 3):
    """A black image with a white rectangle at ``xyxy`` (pixels, end exclusive)."""
    w, h = wh
    image = np.zeros((h, w, channels) if channels > 1 else (h, w), np.uint8)
    x0, y0, x1, y1 = xyxy
    image[y0:y1, x0:x1] = 255
    return image


def white_bbox(image: np.ndarray) -> tuple[int, int, int, int]:
    plane = image if image.ndim == 2 else image[..., 0]
    ys, xs = np.nonzero(plane > 127)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@pytest.mark.parametrize(
    ("src_shape", "dst_shape"),
    [
        # colour, shrink
        ((48, 64, 3), (24, 32, 3)),
        # grey (H, W), enlarge
        ((48, 64), (96, 128)),
        # one channel kept as (H, W, 1): OpenCV would return (H, W)
        ((48, 64, 1), (30, 40, 1)),
        # four channels
        ((48, 64, 4), (10, 20, 4)),
    ],
)
def test_resize_into_stretches_any_channel_layout_into_the_buffer(src_shape, dst_shape):
    src = np.full(src_shape, 77, np.uint8)
    dst = np.zeros(dst_shape, np.uint8)
    record = resize_into(src, dst)
    assert (dst == 77).all()
    assert record == record_resize((src_shape[1], src_shape[0]), (dst_shape[1], dst_shape[0]))


@pytest.mark.parametrize(
    ("src_wh", "dst_wh", "content_xyxy"),
    [
        # landscape into a square: bands above and below
        ((640, 480), (320, 320), (0, 40, 320, 280)),
        # portrait into a square: bands left and right
        ((480, 640), (320, 320), (40, 0, 280, 320)),
        # same aspect: no band at all
        ((640, 480), (320, 240), (0, 0, 320, 240)),
    ],
)
def test_letterbox_pads_the_bands_and_fills_the_content_region(src_wh, dst_wh, content_xyxy):
    src = np.full((src_wh[1], src_wh[0], 3), 200, np.uint8)
    dst = np.full((dst_wh[1], dst_wh[0], 3), 1, np.uint8)  # garbage the bands must overwrite
    record = resize_into(src, dst, keep_aspect=True, pad_value=114)
    x0, y0, x1, y1 = content_xyxy
    assert (dst[y0:y1, x0:x1] == 200).all()
    band = np.ones(dst.shape[:2], bool)
    band[y0:y1, x0:x1] = False
    assert (dst[band] == 114).all()
    assert record == record_letterbox(src_wh, dst_wh)


def test_letterboxed_object_maps_back_to_where_it_was():
    src = square_image((640, 480), (100, 60, 300, 200))
    dst = np.zeros((320, 320, 3), np.uint8)
    record = resize_into(src, dst, keep_aspect=True, interpolation="nearest")
    x0, y0, x1, y1 = white_bbox(dst)
    found = np.array([[x0 / 320, y0 / 320, x1 / 320, y1 / 320]])
    back = map_boxes_back(found, [record]) * np.array([640, 480, 640, 480])
    np.testing.assert_allclose(back[0], [100, 60, 300, 200], atol=2)


def test_nearest_doubling_repeats_each_pixel():
    src = np.arange(12, dtype=np.uint8).reshape(3, 4)
    dst = np.zeros((6, 8), np.uint8)
    resize_into(src, dst, interpolation="nearest")
    np.testing.assert_array_equal(dst, np.repeat(np.repeat(src, 2, axis=0), 2, axis=1))


def test_resize_into_refuses_a_buffer_with_other_channels():
    with pytest.raises(ValueError, match="differ in channels"):
        resize_into(np.zeros((4, 4, 3), np.uint8), np.zeros((2, 2), np.uint8))


def test_resize_node_appends_its_record_to_the_existing_transforms():
    earlier = {"op": "crop", "src_wh": [128, 96], "xywh": [0, 0, 64, 48]}
    frame = make_frame(64, 48, seq=3)
    frame = frame.replace(meta={"transforms": [earlier], "color": "bgr"})
    before = frame.image.copy()
    run = run_node(
        Resize, {"width": 32, "height": 32, "keep_aspect": True}, inputs={"frames": [frame]}
    )
    (out,) = run.sent["resized"]
    assert out.image.shape == (32, 32, 3)
    assert out.seq == 3
    assert out.meta["color"] == "bgr"
    assert out.meta["transforms"] == [earlier, record_letterbox((64, 48), (32, 32))]
    np.testing.assert_array_equal(frame.image, before)  # the input was not touched
    assert run.calls == ["open", "process", "flush", "close"]


def test_resize_node_keeps_the_params_of_existing_graphs():
    # the params graphs/synthetic.yaml and older graphs use, stretched and in each interpolation
    for interpolation in ("nearest", "linear", "cubic", "area", "lanczos"):
        run = run_node(
            Resize,
            {"width": 20, "height": 10, "interpolation": interpolation, "pad_value": 0},
            inputs={"frames": [make_frame(40, 30, channels=1)]},
        )
        (out,) = run.sent["resized"]
        assert out.image.shape == (10, 20)
        assert out.meta["transforms"] == [record_resize((40, 30), (20, 10))]

"""Tests of the snapshot sink: file names, the label filter, and the files it writes."""

from __future__ import annotations

from contextlib import nullcontext as does_not_raise

import cv2
import numpy as np
import pydantic
import pytest

from pipeline import Detections, Frame
from pipeline.testing import make_frame, run_node
from pipeline_nodes.sinks.snapshot import SnapshotSink, has_labels, snapshot_name


@pytest.mark.parametrize(
    ("pattern", "expected", "raises"),
    [
        ("{source}_{seq:06d}.jpg", "cam_000042.jpg", does_not_raise()),
        ("{node}-{seq}.PNG", "snap-42.PNG", does_not_raise()),
        # no seq: one file, replaced each time (a "latest" picture)
        ("latest.jpeg", "latest.jpeg", does_not_raise()),
        # an unknown field
        ("{frame}.jpg", None, pytest.raises(ValueError, match="cannot be formatted")),
        # a positional field
        ("{}.jpg", None, pytest.raises(ValueError, match="cannot be formatted")),
        # a format the field does not take
        ("{source:d}.jpg", None, pytest.raises(ValueError, match="cannot be formatted")),
        # an extension that is no image format
        ("{seq}.bmp", None, pytest.raises(ValueError, match=r"\.jpg, \.jpeg, \.png")),
        # a folder in the name
        ("sub/{seq}.jpg", None, pytest.raises(ValueError, match="not a plain file name")),
    ],
)
def test_snapshot_name(pattern, expected, raises):
    with raises:
        assert snapshot_name(pattern, seq=42, source="cam", node="snap") == expected


def dets(names, confidences, seq=0):
    return Detections(
        xyxy=[[0, 0, 1, 1]] * len(names),
        confidence=confidences,
        class_id=list(range(len(names))),
        class_names=names,
        seq=seq,
    )


@pytest.mark.parametrize(
    ("names", "confidences", "labels", "min_confidence", "expected"),
    [
        (["person", "car"], [0.9, 0.8], {"person"}, 0.5, True),
        (["car"], [0.9], {"person"}, 0.0, False),  # another label
        (["person"], [0.3], {"person"}, 0.5, False),  # too unsure
        (["person"], [0.5], {"person"}, 0.5, True),  # at the threshold
        ([], [], {"person"}, 0.0, False),  # nothing found
    ],
)
def test_has_labels(names, confidences, labels, min_confidence, expected):
    assert has_labels(dets(names, confidences), labels, min_confidence) is expected


def test_bad_pattern_is_a_params_error():
    with pytest.raises(pydantic.ValidationError, match="cannot be formatted"):
        SnapshotSink.Params(folder="out", pattern="{when}.jpg")


def frames(n, **kw):
    return [make_frame(64, 48, seq=i, source="cam", **kw) for i in range(n)]


def test_every_nth_frame_is_saved_as_a_whole_jpeg(tmp_path):
    folder = tmp_path / "shots"
    run = run_node(
        SnapshotSink,
        {"folder": str(folder), "every_n": 3, "pattern": "{source}_{seq:03d}.jpg"},
        inputs={"frames": frames(10)},
    )
    assert run.error is None
    assert run.stats.counters == {"written": 4}
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["cam_000.jpg", "cam_003.jpg", "cam_006.jpg", "cam_009.jpg"]  # no temp files
    image = cv2.imread(str(folder / "cam_003.jpg"))
    assert image.shape == (48, 64, 3)
    assert np.abs(image.astype(int) - frames(4)[3].image.astype(int)).mean() < 4


def test_png_keeps_the_exact_pixels_and_rgb_is_saved_as_bgr(tmp_path):
    image = np.random.default_rng(3).integers(0, 256, (12, 16, 3), np.uint8)
    rgb = Frame(image=image, seq=1, source="cam", meta={"color": "rgb"})
    grey = Frame(image=image[:, :, 0].copy(), seq=2, source="cam")
    run_node(
        SnapshotSink,
        {"folder": str(tmp_path), "pattern": "{seq}.png"},
        inputs={"frames": [rgb, grey]},
    )
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "1.png")), image[:, :, ::-1])
    saved_grey = cv2.imread(str(tmp_path / "2.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(saved_grey, image[:, :, 0])


def test_only_frames_with_wanted_labels_are_saved(tmp_path):
    detections = [
        dets(["car"], [0.9], seq=0),
        dets(["person"], [0.9], seq=1),
        dets(["person"], [0.2], seq=2),  # below min_confidence
        dets(["dog", "person"], [0.9, 0.7], seq=3),
        dets(["person"], [0.8], seq=4),
    ]
    run_node(
        SnapshotSink,
        {
            "folder": str(tmp_path),
            "pattern": "{seq}.jpg",
            "labels": ["person"],
            "min_confidence": 0.5,
            "every_n": 2,  # counted over the frames that qualify: 1, 3, 4 -> 1 and 4
        },
        inputs={"frames": frames(5), "detections": detections},
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.jpg", "4.jpg"]


def test_labels_without_detections_fail_the_first_frame(tmp_path):
    run = run_node(
        SnapshotSink,
        {"folder": str(tmp_path), "labels": ["person"]},
        inputs={"frames": frames(1)},
        node_id="snap",
        raise_errors=False,
    )
    assert run.failed_in == "process"
    assert "'snap'" in str(run.error)
    assert "no 'detections' input" in str(run.error)


def test_folder_that_cannot_be_written_fails_open(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    folder = tmp_path / "a_file" / "shots"
    run = run_node(
        SnapshotSink,
        {"folder": str(folder)},
        inputs={"frames": frames(1)},
        node_id="snap",
        raise_errors=False,
    )
    assert run.failed_in == "open"
    assert run.calls == ["open"]
    message = str(run.error)
    assert "'snap'" in message
    assert str(folder) in message
    assert "set 'folder'" in message

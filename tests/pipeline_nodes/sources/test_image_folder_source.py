"""The image folder source on image files written by the tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from pydantic import ValidationError
from source_harness import sent_frames
from source_media import pattern_frame

from pipeline.testing import run_node
from pipeline_nodes.sources.image_folder import ImageFolderSource, natural_key


def write_images(folder: Path, names: list[str]) -> dict[str, np.ndarray]:
    """Write a distinct lossless image under each name; returns them by name."""
    images = {}
    for i, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image = pattern_frame(i, 64, 48)
        assert cv2.imwrite(str(path), image)
        images[name] = image
    return images


def test_image_folder_sends_images_in_natural_order_with_exact_pixels(tmp_path: Path) -> None:
    images = write_images(tmp_path, ["img10.png", "img2.png", "img1.png", "IMG3.bmp"])
    (tmp_path / "notes.txt").write_text("not an image")  # not matched without a pattern
    run = run_node(ImageFolderSource, {"path": str(tmp_path)}, node_id="shots")
    frames = sent_frames(run)
    names = [f.meta["file"] for f in frames]
    assert names == ["img1.png", "img2.png", "IMG3.bmp", "img10.png"]
    assert [f.meta["index"] for f in frames] == [0, 1, 2, 3]
    assert [f.seq for f in frames] == [0, 1, 2, 3]
    for frame in frames:
        assert np.array_equal(frame.image, images[frame.meta["file"]])
        assert frame.meta["path"] == str(tmp_path / frame.meta["file"])
        assert frame.source == "shots"
    assert run.calls[-2:] == ["flush", "close"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        # a folder and a pattern
        ({"pattern": "*.jpg"}, ["a1.jpg", "a2.jpg"]),
        # a glob in path
        ({"glob": "*.png"}, ["b1.png"]),
        # ** descends into sub-folders; sorted by the whole path
        ({"pattern": "**/*.jpg"}, ["a1.jpg", "a2.jpg", "c1.jpg", "d5.jpg"]),
    ],
)
def test_image_folder_matches_the_glob(
    tmp_path: Path, params: dict[str, Any], expected: list[str]
) -> None:
    write_images(tmp_path, ["a2.jpg", "a1.jpg", "b1.png", "sub/c1.jpg", "sub/deeper/d5.jpg"])
    if "glob" in params:
        params = {"path": str(tmp_path / params["glob"])}
    else:
        params = {"path": str(tmp_path), **params}
    run = run_node(ImageFolderSource, params)
    assert [f.meta["file"] for f in sent_frames(run)] == expected


def test_image_folder_takes_a_folder_name_literally_even_with_glob_characters(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "day [1]"
    write_images(folder, ["a.png", "b.png"])
    run = run_node(ImageFolderSource, {"path": str(folder)})
    assert [f.meta["file"] for f in sent_frames(run)] == ["a.png", "b.png"]


def test_image_folder_skips_and_counts_unreadable_files(tmp_path: Path) -> None:
    write_images(tmp_path, ["f1.png", "f3.png"])
    (tmp_path / "f2.png").write_bytes(b"\x89PNG but not really")
    run = run_node(ImageFolderSource, {"path": str(tmp_path)})
    assert [f.meta["file"] for f in sent_frames(run)] == ["f1.png", "f3.png"]
    assert [f.seq for f in sent_frames(run)] == [0, 1]
    assert run.stats.counters == {"unreadable_files": 1}
    assert run.error is None


def test_image_folder_with_no_readable_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").write_text("no")
    run = run_node(ImageFolderSource, {"path": str(tmp_path)}, node_id="shots", raise_errors=False)
    assert isinstance(run.error, ValueError)
    assert "image_folder 'shots'" in str(run.error)
    assert "none of the 1 files" in str(run.error)


def test_image_folder_converts_grey_images_to_bgr(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "grey.png"), np.full((10, 12), 77, np.uint8))
    run = run_node(ImageFolderSource, {"path": str(tmp_path)})
    (frame,) = sent_frames(run)
    assert frame.image.shape == (10, 12, 3)
    assert (frame.image == 77).all()


def test_image_folder_loops_and_never_restarts_seq(tmp_path: Path) -> None:
    write_images(tmp_path, ["1.png", "2.png", "3.png"])
    run = run_node(ImageFolderSource, {"path": str(tmp_path), "loop": True}, max_calls=7)
    frames = sent_frames(run)
    assert [f.meta["file"] for f in frames] == ["1.png", "2.png", "3.png"] * 2 + ["1.png"]
    assert [f.meta["loop"] for f in frames] == [0, 0, 0, 1, 1, 1, 2]
    assert [f.seq for f in frames] == list(range(7))


def test_image_folder_paces_at_fps(tmp_path: Path) -> None:
    write_images(tmp_path, [f"{i}.png" for i in range(6)])
    run = run_node(ImageFolderSource, {"path": str(tmp_path), "fps": 25})
    stamps = np.array([f.t_capture_ns for f in sent_frames(run)]) / 1e9
    assert stamps[-1] - stamps[0] >= 5 * 0.04 * 0.97
    assert stamps[-1] - stamps[0] < 5 * 0.04 + 0.3


@pytest.mark.parametrize(
    ("make", "params", "error", "text"),
    [
        # an empty folder
        (lambda d: None, {}, FileNotFoundError, "no image file matches"),
        # a pattern that matches nothing
        (
            lambda d: (d / "a.png").write_bytes(b""),
            {"pattern": "*.jpg"},
            FileNotFoundError,
            "*.jpg",
        ),
        # a folder that does not exist
        (lambda d: None, {"path": "missing"}, FileNotFoundError, "no such folder"),
        # a file instead of a folder
        (
            lambda d: (d / "a.png").write_bytes(b""),
            {"path": "a.png"},
            NotADirectoryError,
            "is a file",
        ),
    ],
)
def test_image_folder_bad_path_fails_open_naming_the_node(
    tmp_path: Path,
    make: Callable[[Path], object],
    params: dict[str, Any],
    error: type[Exception],
    text: str,
) -> None:
    make(tmp_path)
    params = dict(params)
    params["path"] = str(tmp_path / params["path"]) if "path" in params else str(tmp_path)
    run = run_node(ImageFolderSource, params, node_id="shots", raise_errors=False)
    assert isinstance(run.error, error)
    assert "image_folder 'shots'" in str(run.error)
    assert text in str(run.error)
    assert run.calls == ["open"]


def test_image_folder_pattern_with_a_glob_path_is_a_params_error() -> None:
    with pytest.raises(ValidationError, match="already a glob"):
        ImageFolderSource.Params.model_validate({"path": "data/*.jpg", "pattern": "*.png"})


def test_natural_key_orders_numbers_by_value() -> None:
    names = ["img10.png", "img2.png", "Img1.png", "img2b.png", "a/img3.png"]
    assert sorted(names, key=natural_key) == [
        "a/img3.png",
        "Img1.png",
        "img2.png",
        "img2b.png",
        "img10.png",
    ]

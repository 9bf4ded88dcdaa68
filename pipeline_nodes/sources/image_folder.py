"""The image folder source: the images matching a glob, in natural order, as a stream of frames.

The file list is taken once, at ``open()``, and sorted in natural order (``img2`` before
``img10``). Images are decoded with ``cv2.imread`` and copied once into a shared-memory slot:
``imread`` can decode into a given array, but on an undecodable file it leaves that array
untouched and reports nothing, so an unreadable image could not be told from a good one.
"""

from __future__ import annotations

import glob
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from pipeline import EndOfStream, Frame, Node, NodeParams, Output, ParamIssue
from pipeline.checks import input_folder
from pipeline_nodes.dependencies import import_cv2

__all__ = ["IMAGE_SUFFIXES", "ImageFolderSource", "natural_key"]

#: The suffixes matched when ``path`` is a folder and no ``pattern`` is given (any case).
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm"}
)
_GLOB_CHARS = re.compile(r"[*?\[]")
_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> list[Any]:
    """A sort key that orders the numbers inside names by value: ``img2`` before ``img10``."""
    # re.split with a group alternates text and digits, starting with text, so the keys of
    # any two names compare str with str and int with int at every position.
    return [int(part) if i % 2 else part.casefold() for i, part in enumerate(_DIGITS.split(name))]


class ImageFolderSource(Node):
    """Send the images of a folder (or matching a glob), in natural order, as frames.

    ``path`` is a folder (every image in it, or those matching ``pattern``) or a glob such as
    ``data/**/*.jpg`` (``**`` descends into sub-folders). Files are sorted in natural order of
    their path (``img2`` before ``img10``). Its frame rate is ``fps``: the runtime holds it
    there (the node's ``pace: realtime``, the default); without ``fps`` (or with ``pace: fast``)
    it goes as fast as the consumers take them. A file that cannot be read as an image is
    skipped, logged and counted as ``unreadable_files``. Ends with end of stream after the last
    file; with ``loop`` it starts again and ends only when the graph is stopped. Nothing
    matching fails ``open()``; a whole pass in which no file could be read is an error.

    Output ``frames``: ``(H, W, 3)`` uint8 BGR (grey and alpha images are converted); ``meta``
    carries ``file`` (the file name), ``path``, ``index`` (position in the sorted list) and
    ``loop``.

    Example:
        - id: images
          node: image_folder
          params: {path: data/shots, pattern: "*.jpg", fps: 2, loop: true}
    """

    class Params(NodeParams):
        path: str = Field(
            min_length=1,
            description="A folder, or a glob such as 'data/**/*.jpg' (relative paths are from "
            "the working directory).",
        )
        pattern: str | None = Field(
            None,
            min_length=1,
            description="With a folder path: the glob of file names to read, e.g. '*.png' or "
            "'**/*.jpg'; null: every image file (jpg, png, bmp, tiff, webp, pnm).",
        )
        fps: float | None = Field(
            None,
            gt=0,
            le=1000,
            description="Its frame rate, the one pace: realtime holds it to; null: none, so it "
            "goes as fast as taken.",
        )
        loop: bool = Field(
            False,
            description="After the last image start again; the stream then ends only when the "
            "graph is stopped.",
        )

        @field_validator("pattern")
        @classmethod
        def _pattern_needs_a_folder(cls, value: str | None, info: ValidationInfo) -> str | None:
            path = info.data.get("path")
            if value is not None and path is not None and _GLOB_CHARS.search(path):
                raise ValueError(
                    f"path {path!r} is already a glob; give either a glob in path, or a folder "
                    "in path and the glob in pattern"
                )
            return value

    frames = Output(Frame, description="(H, W, 3) uint8 BGR images; meta: file, path, index, loop.")

    @classmethod
    def check(cls, params: Params) -> Iterator[ParamIssue]:
        path = os.path.expanduser(params.path)
        if _GLOB_CHARS.search(path) and not os.path.isdir(path):
            if not any(os.path.isfile(f) for f in glob.iglob(path, recursive=True)):
                yield ParamIssue("path", f"no file matches {params.path!r}")
        else:
            yield from input_folder("path", params.path, "image folder")

    def open(self) -> None:
        self._cv2 = import_cv2("image_folder")
        self._where = f"image_folder {self.id!r}"
        self._files = self._list_files()
        self._next = 0
        self._loops = 0
        self._seq = 0
        self._sent_this_pass = 0
        self._warned: set[int] = set()
        self.log.info("reading %d files matching %s", len(self._files), self._glob)

    def _list_files(self) -> list[Path]:
        p = self.params
        path = os.path.expanduser(p.path)
        if _GLOB_CHARS.search(path) and not os.path.isdir(path):
            self._glob = path
            suffixes = None
        else:
            folder = Path(path)
            if not folder.exists():
                raise FileNotFoundError(
                    f"{self._where}: no such folder {path!r} (relative paths are from "
                    f"{os.getcwd()!r}); check params.path"
                )
            if not folder.is_dir():
                raise NotADirectoryError(
                    f"{self._where}: {path!r} is a file, not a folder; give its folder in "
                    "params.path (and a pattern), or read a video file with the video_file node"
                )
            # the folder's name is literal: a '[' in it is not a glob
            self._glob = os.path.join(glob.escape(path), p.pattern or "*")
            suffixes = None if p.pattern else IMAGE_SUFFIXES
        files = [
            Path(name)
            for name in glob.glob(self._glob, recursive=True)
            if os.path.isfile(name)
            and (suffixes is None or os.path.splitext(name)[1].lower() in suffixes)
        ]
        if not files:
            what = "image file" if suffixes is not None else "file"
            raise FileNotFoundError(
                f"{self._where}: no {what} matches {self._glob!r}; check params.path"
                + (" and params.pattern" if p.pattern else "")
                + " (a pattern like '**/*.jpg' also reads sub-folders)"
            )
        files.sort(key=lambda f: natural_key(str(f)))
        return files

    def frame_rate(self) -> float | None:
        fps: float | None = self.params.fps
        return fps

    def process(self) -> None:
        while True:
            if self._next >= len(self._files):
                self._end_of_pass()
            index = self._next
            self._next += 1
            path = self._files[index]
            decoded = self._cv2.imread(str(path), self._cv2.IMREAD_COLOR)
            if decoded is None:
                self.count("unreadable_files")
                if index not in self._warned:
                    self._warned.add(index)
                    self.log.warning("skipped %s: not readable as an image", path)
                continue
            image = self.frames.allocate(decoded.shape, np.uint8)
            np.copyto(image, decoded)
            seq = self._seq
            self._seq += 1
            self._sent_this_pass += 1
            self.frames.send(
                Frame(
                    image=image,
                    seq=seq,
                    t_capture_ns=time.monotonic_ns(),
                    source=self.id,
                    meta={
                        "file": path.name,
                        "path": str(path),
                        "index": index,
                        "loop": self._loops,
                    },
                )
            )
            return

    def _end_of_pass(self) -> None:
        if self._sent_this_pass == 0:
            raise ValueError(
                f"{self._where}: none of the {len(self._files)} files matching {self._glob!r} "
                "could be read as an image; check that they are images OpenCV reads"
            )
        if not self.params.loop:
            raise EndOfStream
        self._loops += 1
        self._next = 0
        self._sent_this_pass = 0

"""A sink that writes frames to a video file that stays playable after any stop, via PyAV.

MP4 (and ``.m4v``/``.mov``) is written *fragmented* (``movflags=frag_keyframe+empty_moov``):
the header at the start describes the tracks, and every keyframe starts a self-contained
fragment (``moof`` + ``mdat``) that is on disk once the next one begins. A plain MP4 is
unplayable until its ``moov`` index is written at the very end, so a SIGKILL, an OOM kill or
a power cut used to leave nothing; now such a stop loses at most the last fragment
(``fragment_s``, one second by default: the keyframe interval). Each finished fragment is
handed to the operating system at once (``flush_packets``) and synced to the disk
(``fsync``), so the bound holds for a power cut too.

The codec is H.264 (``libx264`` from the PyAV wheel; every browser plays it), falling back to
MPEG-4 part 2 where the wheel has no H.264 encoder; ``.avi`` gets MJPEG, which is not
fragmented and so not kill-safe (the table of :func:`choose_codec` is tested). Encoding uses
x264's ``zerolatency`` tuning: no frame is held back in the encoder, so a fragment holds
exactly the frames that arrived.

The writer starts on the first frame, because the video's size and rate come from the stream
(``meta["video_fps"]`` of a video-file source, else the ``fps`` param). The new file is
written under a hidden partial name and replaces an existing file at ``path`` only once its
first fragment is complete (or at ``close()`` for a shorter video): a run that fails early
leaves the previous recording as it was.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from pipeline import Frame, Input, MissingDependencyError, Node, NodeParams, ParamIssue
from pipeline.checks import output_path
from pipeline_nodes.dependencies import import_cv2
from pipeline_nodes.files import fsync_folder, partial_path, publish, writable_file
from pipeline_nodes.transforms.color import to_bgr

Codec = Literal["h264", "mpeg4", "mjpeg"]

# extension -> (PyAV container format, default codec, fragmented)
CONTAINERS: dict[str, tuple[str, Codec, bool]] = {
    ".mp4": ("mp4", "h264", True),
    ".m4v": ("mp4", "h264", True),
    ".mov": ("mov", "h264", True),
    ".avi": ("avi", "mjpeg", False),
}
ENCODERS: dict[Codec, str] = {"h264": "libx264", "mpeg4": "mpeg4", "mjpeg": "mjpeg"}
FRAGMENTED_OPTIONS = {
    # empty_moov: the header holds no sample table; frag_keyframe: a fragment per keyframe;
    # default_base_moof: fragments that players and browsers (MSE) accept
    "movflags": "frag_keyframe+empty_moov+default_base_moof",
    "flush_packets": "1",  # each fragment reaches the operating system when it is written
}
QSCALE = 3  # quality of the MPEG-4 and MJPEG encoders (2 best .. 31 worst)
FF_QP2LAMBDA = 118


def _import_av(node_id: str) -> Any:
    try:
        import av
    except ImportError:
        raise MissingDependencyError(
            "av", extra="vision", purpose=f"the video_writer node {node_id!r}"
        ) from None
    return av


def encoder_available(av: Any, encoder: str) -> bool:
    """Whether PyAV's FFmpeg has the encoder ``encoder`` (``libx264`` is in its wheels)."""
    try:
        av.codec.Codec(encoder, "w")
    except Exception:  # av's UnknownCodecError, a ValueError on some versions
        return False
    return True


def choose_codec(
    path: str | Path, codec: Codec | None = None, h264_available: bool = True
) -> tuple[str, Codec, bool]:
    """``(container format, codec, fragmented)`` for a video file.

    The codec is ``codec`` if given, else the extension's default; H.264 becomes MPEG-4 part
    2 when ``h264_available`` is false. MJPEG goes only in ``.avi``, H.264 and MPEG-4 only in
    the MP4 family.

    Raises:
        ValueError: an extension with no container, or a codec the container cannot hold.
    """
    suffix = Path(path).suffix.lower()
    try:
        container, default, fragmented = CONTAINERS[suffix]
    except KeyError:
        known = ", ".join(f"{ext} ({c[1]})" for ext, c in CONTAINERS.items())
        raise ValueError(
            f"no video container is known for {suffix or 'a file without extension'!r}; "
            f"use one of {known}"
        ) from None
    chosen = codec or default
    if chosen == "h264" and not h264_available:
        chosen = "mpeg4"
    if (container == "avi") != (chosen == "mjpeg"):
        raise ValueError(
            f"codec {chosen!r} does not go in a {suffix} file; use mjpeg in .avi, h264 or "
            "mpeg4 in .mp4/.m4v/.mov"
        )
    return container, chosen, fragmented


def video_fps(meta: Any, default: float) -> float:
    """The stream's frame rate: ``meta["video_fps"]`` when it is a usable rate, else ``default``."""
    value = meta.get("video_fps") if hasattr(meta, "get") else None
    try:
        fps = float(value) if value is not None else 0.0
    except (TypeError, ValueError):
        return default
    return fps if math.isfinite(fps) and 0 < fps <= 1000 else default


class VideoWriterSink(Node):
    """Write frames to an MP4 (H.264, fragmented) or AVI (MJPEG) file that survives any stop.

    The codec follows the extension (``.mp4``/``.m4v``/``.mov``: H.264, or MPEG-4 part 2 where
    PyAV has no H.264 encoder; ``.avi``: MJPEG) unless ``codec`` says otherwise. MP4 files are
    fragmented: a node killed with SIGKILL, or a power cut, loses at most the last
    ``fragment_s`` seconds, and the rest plays; a clean stop (end of stream, Ctrl-C, SIGTERM)
    loses nothing. AVI files are complete only after ``close()``. The video's size is the
    first frame's, rounded down to even numbers (the codecs need them); later frames of
    another size are resized to it (counted as ``resized``). Its rate is the source's
    ``meta["video_fps"]``, else ``fps``. Grey and RGB frames are converted; the input is
    read-only. An existing file at ``path`` is replaced only when the first fragment is
    complete (or at the end of a shorter run). A folder it cannot write, or a codec the
    container cannot hold, fails ``open()``. Ends when its input ends. Encoding is
    synchronous, so a full input edge waits or drops as its ``when_full`` says (``block``
    keeps every frame of a file; ``drop_oldest`` suits a live camera on a slow machine).

    Example:
        - id: record
          node: video_writer
          params: {path: out/annotated.mp4, fragment_s: 1}
          inputs: {frames: overlay/annotated}
    """

    preload_modules = ("cv2", "av")

    class Params(NodeParams):
        path: str = Field(description="The video file to write (.mp4, .m4v, .mov or .avi).")
        codec: Codec | None = Field(
            None,
            description="h264 (browsers play it), mpeg4 or mjpeg (.avi only); default: h264 "
            "for the MP4 family, mjpeg for .avi.",
        )
        fps: float = Field(
            30.0,
            gt=0,
            le=1000,
            description="Frame rate of the file when the frames carry no meta['video_fps'].",
        )
        fragment_s: float = Field(
            1.0,
            gt=0,
            le=60,
            description="Seconds between keyframes, each starting an MP4 fragment: the most "
            "video a killed writer or a power cut loses.",
        )

    frames = Input(Frame, description="(H, W[, C]) uint8 frames in meta['color'].")

    @classmethod
    def check(cls, params: Params) -> Iterator[ParamIssue]:
        yield from output_path("path", params.path)

    def open(self) -> None:
        av = self._av = _import_av(self.id)
        p = self.params
        self._path = writable_file(p.path, node_id=self.id, param="path")
        h264 = encoder_available(av, ENCODERS["h264"])
        try:
            self._format, self._codec, self._fragmented = choose_codec(self._path, p.codec, h264)
        except ValueError as exc:
            raise ValueError(f"node {self.id!r}: path {p.path!r}: {exc}") from None
        if (p.codec or "h264") == "h264" and self._codec == "mpeg4":
            self.log.warning(
                "PyAV has no H.264 encoder here: writing MPEG-4 part 2, which browsers do not play"
            )
        if not encoder_available(av, ENCODERS[self._codec]):
            raise ValueError(
                f"node {self.id!r}: PyAV's FFmpeg has no {self._codec!r} encoder; "
                "choose another 'codec'"
            )
        self._partial = partial_path(self._path)
        self._partial.unlink(missing_ok=True)  # left by a run killed before its first fragment
        self._container: Any = None
        self._stream: Any = None
        self._sync_fd = -1
        self._published = False
        self._size = (0, 0)
        self._frames_written = 0
        self._frames_resized = 0
        self._keyframes = 0

    def _start(self, frames: Frame, image_wh: tuple[int, int]) -> None:
        av = self._av
        fps = video_fps(frames.meta, self.params.fps)
        width, height = max(2, image_wh[0] & ~1), max(2, image_wh[1] & ~1)
        options = dict(FRAGMENTED_OPTIONS) if self._fragmented else {}
        # fsync on any descriptor of a file writes all of its data: this one is only for that
        # (created here: FFmpeg opens the file only when it writes the header)
        self._sync_fd = os.open(self._partial, os.O_RDONLY | os.O_CREAT, 0o644)
        container = av.open(str(self._partial), "w", format=self._format, options=options)
        try:
            stream = container.add_stream(
                ENCODERS[self._codec], rate=Fraction(fps).limit_denominator(1001)
            )
            stream.width, stream.height = width, height
            stream.pix_fmt = "yuvj420p" if self._codec == "mjpeg" else "yuv420p"
            gop = max(1, round(fps * self.params.fragment_s))
            stream.gop_size = gop
            if self._codec == "h264":
                stream.codec_context.options = {
                    "preset": "veryfast",
                    "tune": "zerolatency",  # no frame held in the encoder: none lost at a kill
                    "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0",
                }
            else:
                stream.codec_context.options = {
                    "flags": "+qscale",
                    "global_quality": str(QSCALE * FF_QP2LAMBDA),
                }
        except Exception:
            container.close()
            os.close(self._sync_fd)
            self._sync_fd = -1
            self._partial.unlink(missing_ok=True)
            raise
        self._container, self._stream = container, stream
        self._size = (width, height)
        self.log.info(
            "writing %s (%s in %s, %dx%d at %.5g fps, a fragment every %d frames)",
            self._path,
            self._codec,
            self._format,
            width,
            height,
            fps,
            gop,
        )

    def _mux(self, packets: Any) -> None:
        for packet in packets:
            keyframe = bool(packet.is_keyframe) and self._fragmented
            self._container.mux(packet)
            if keyframe:
                # muxing a keyframe wrote the fragment before it: make that one durable
                self._keyframes += 1
                if self._keyframes > 1:
                    self._fragment_written()

    def _fragment_written(self) -> None:
        os.fsync(self._sync_fd)
        if not self._published:
            publish(self._partial, self._path)  # the new file has a whole fragment
            self._published = True

    def process(self, frames: Frame) -> None:
        image = to_bgr(frames)
        image_wh = (int(image.shape[1]), int(image.shape[0]))
        if self._container is None:
            self._start(frames, image_wh)
        width, height = self._size
        if image_wh != self._size:
            if (image_wh[0] & ~1, image_wh[1] & ~1) == self._size:
                image = image[:height, :width]  # an odd size, cropped by one pixel
            else:
                if not self._frames_resized:
                    self.log.warning(
                        "frame seq %d is %dx%d but the video is %dx%d: resizing such frames",
                        frames.seq,
                        *image_wh,
                        *self._size,
                    )
                self._frames_resized += 1
                self.count("resized")
                cv2 = import_cv2(f"the video_writer node {self.id!r}")
                image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        video_frame = self._av.VideoFrame.from_ndarray(
            image if image.flags.c_contiguous else image.copy(), format="bgr24"
        )
        if self._stream.pix_fmt != "yuvj420p":
            try:
                # To the encoder's format here, on one thread: the encoder's own conversion
                # runs swscale's automatic thread pool (a thread, stack and arena per core).
                video_frame = video_frame.reformat(format=self._stream.pix_fmt, threads=1)
            except TypeError:  # a PyAV without the threads argument: the encoder converts
                pass
        video_frame.pts = self._frames_written
        self._mux(self._stream.encode(video_frame))
        self._frames_written += 1

    def close(self) -> None:
        if self._container is None:
            self.log.warning("no frame arrived: %s was not written", self._path)
            return
        try:
            self._mux(self._stream.encode(None))  # what the encoder still holds
        finally:
            self._container.close()  # writes the last fragment (and an AVI's index)
            self._container = None
            with contextlib.suppress(OSError):
                os.fsync(self._sync_fd)
            os.close(self._sync_fd)
            if not self._published:
                publish(self._partial, self._path)
                self._published = True
            fsync_folder(self._path.parent)
        self.log.info("wrote %d frames to %s", self._frames_written, self._path)

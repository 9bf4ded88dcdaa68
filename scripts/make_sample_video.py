"""Make ``samples/people.mp4``: real photographs from scikit-image, panned and zoomed into a video.

The example graphs and the demos need a video with people and faces in it that can be
committed and regenerated anywhere without a download. scikit-image ships a few real
photographs (the astronaut Eileen Collins, the "cameraman", a cat, a coffee cup, a rocket);
this script moves a 16:9 window over each (a Ken Burns pan and zoom, eased, sub-pixel smooth
with ``cv2.warpAffine``) so that faces travel through and grow in the view, slides two
portraits across a background as a last scene, and cross-fades from scene to scene. The
small random variations of each move come from a seeded generator, so the same seed gives
the same frames. Written with OpenCV's ``mp4v`` encoder (this OpenCV build has no H.264
encoder); the script reads the file back and prints its size, duration, fps and frame count.

Usage: ``python scripts/make_sample_video.py [--out samples/people.mp4] [--seed 7]``
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from skimage import data

WIDTH, HEIGHT = 640, 360
FPS = 20
SCENE_S = 2.5  # each scene's length, cross-fades included
FADE_S = 0.5  # overlap of two scenes, during which the first fades into the second
SEED = 7
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "samples" / "people.mp4"

Window = tuple[float, float, float]  # centre x, centre y, width: source pixels (16:9 height)


def _photo(name: str) -> np.ndarray:
    """A photograph shipped inside scikit-image (no download), as ``(H, W, 3)`` uint8 BGR."""
    load: Callable[[], np.ndarray] = getattr(data, name)
    image = np.asarray(load())
    code = cv2.COLOR_GRAY2BGR if image.ndim == 2 else cv2.COLOR_RGB2BGR
    return np.asarray(cv2.cvtColor(image, code))


@dataclasses.dataclass(frozen=True)
class KenBurns:
    """A window moving from ``start`` to ``end`` over one photograph."""

    photo: np.ndarray  # (H, W, 3) uint8 BGR
    start: Window
    end: Window

    def render(self, t: float) -> np.ndarray:
        """The view at ``t`` in 0..1 of the scene, eased in and out."""
        e = t * t * (3 - 2 * t)  # smoothstep: no jolt at the start or the end of a move
        cx, cy, w = (a + (b - a) * e for a, b in zip(self.start, self.end))
        h_img, w_img = self.photo.shape[:2]
        w = min(w, w_img, h_img * WIDTH / HEIGHT)  # the window stays inside the photo
        h = w * HEIGHT / WIDTH
        x0 = min(max(cx - w / 2, 0.0), w_img - w)
        y0 = min(max(cy - h / 2, 0.0), h_img - h)
        s = WIDTH / w
        matrix = np.array([[s, 0.0, -s * x0], [0.0, s, -s * y0]])
        return np.asarray(
            cv2.warpAffine(
                self.photo,
                matrix,
                (WIDTH, HEIGHT),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REFLECT,
            )
        )


@dataclasses.dataclass(frozen=True)
class Parade:
    """Portraits sliding across a background, bobbing slightly, like people walking past."""

    background: np.ndarray  # (HEIGHT, WIDTH, 3) uint8 BGR
    portraits: tuple[np.ndarray, ...]
    speeds: tuple[float, ...]  # screen widths per scene
    phases: tuple[float, ...]

    def render(self, t: float) -> np.ndarray:
        frame: np.ndarray = self.background.copy()
        for portrait, speed, phase in zip(self.portraits, self.speeds, self.phases):
            ph, pw = portrait.shape[:2]
            x = round(-pw + (WIDTH + pw) * ((phase + speed * t) % 1.0))
            y = round((HEIGHT - ph) / 2 + 10 * np.sin(2 * np.pi * (3 * t + phase)))
            x0, x1 = max(x, 0), min(x + pw, WIDTH)
            y0, y1 = max(y, 0), min(y + ph, HEIGHT)
            if x1 > x0 and y1 > y0:
                frame[y0:y1, x0:x1] = portrait[y0 - y : y1 - y, x0 - x : x1 - x]
        return frame


Scene = KenBurns | Parade


def _jitter(rng: np.random.Generator, window: Window, amount: float) -> Window:
    cx, cy, w = window
    dx, dy, dw = rng.uniform(-amount, amount, 3)
    return (cx + dx, cy + dy, w * (1 + dw / 200))


def build_scenes(seed: int = SEED) -> list[Scene]:
    """The scenes, in order; ``seed`` varies each move a little, reproducibly."""
    rng = np.random.default_rng(seed)
    astronaut = _photo("astronaut")  # 512 x 512, face near (250, 120)
    cameraman = _photo("camera")  # 512 x 512 grey, head near (260, 110)
    chelsea = _photo("chelsea")  # 451 x 300, the cat's face near (165, 125)
    coffee = _photo("coffee")  # 600 x 400
    rocket = _photo("rocket")  # 640 x 427

    def burns(photo: np.ndarray, start: Window, end: Window) -> KenBurns:
        return KenBurns(photo, _jitter(rng, start, 12), _jitter(rng, end, 12))

    backdrop = cv2.GaussianBlur(
        cv2.resize(rocket, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA), (0, 0), 6
    )
    portrait_a = cv2.resize(astronaut[20:360, 80:420], (200, 200), interpolation=cv2.INTER_AREA)
    portrait_b = cv2.resize(cameraman[20:320, 110:410], (170, 170), interpolation=cv2.INTER_AREA)
    scenes: list[Callable[[], Scene]] = [
        # the astronaut: from the whole picture in to her face
        lambda: burns(astronaut, (256, 150, 512), (250, 125, 230)),
        # the cameraman: a pan from the left edge across his face, zooming out
        lambda: burns(cameraman, (130, 210, 260), (300, 170, 420)),
        # the cat: zoom in on its face
        lambda: burns(chelsea, (225, 150, 451), (165, 125, 290)),
        # coffee: a slow pull back
        lambda: burns(coffee, (300, 190, 300), (300, 200, 600)),
        # the rocket: a pan up the launch pad
        lambda: burns(rocket, (320, 300, 420), (330, 140, 460)),
        # two people walk past, in opposite phases
        lambda: Parade(
            backdrop,
            (portrait_a, portrait_b),
            speeds=(0.8, 1.1),
            phases=(0.0, float(rng.uniform(0.35, 0.55))),
        ),
    ]
    return [make() for make in scenes]


def frame_count(n_scenes: int) -> int:
    """Frames of a video of ``n_scenes`` scenes (consecutive scenes overlap by a fade)."""
    return round((n_scenes * SCENE_S - (n_scenes - 1) * FADE_S) * FPS)


def render(scenes: list[Scene], index: int) -> np.ndarray:
    """Frame ``index``: the scene playing then, blended with the next one during a fade."""
    t = index / FPS
    step = SCENE_S - FADE_S
    layers: list[tuple[np.ndarray, float]] = []
    for k, scene in enumerate(scenes):
        local = t - k * step
        if 0 <= local < SCENE_S:
            weight = 1.0
            if k > 0 and local < FADE_S:
                weight = local / FADE_S  # fading in over the previous scene
            layers.append((scene.render(local / SCENE_S), weight))
    frame = layers[0][0]
    for image, weight in layers[1:]:
        frame = cv2.addWeighted(image, weight, frame, 1.0 - weight, 0.0)
    return frame


def make_video(out: Path, seed: int = SEED) -> int:
    """Write the video to ``out``; returns the number of frames written."""
    scenes = build_scenes(seed)
    n = frame_count(len(scenes))
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter.fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {out} with the mp4v codec")
    try:
        for i in range(n):
            writer.write(render(scenes, i))
    finally:
        writer.release()
    return n


def describe(path: Path) -> dict[str, float]:
    """What a reader sees in the file: size, frames (counted by decoding), fps, duration."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise RuntimeError(f"cannot read back {path}")
    fps = float(cap.get(cv2.CAP_PROP_FPS))
    width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    frames = 0
    while cap.grab():
        frames += 1
    cap.release()
    return {
        "size_mb": round(path.stat().st_size / 1e6, 3),
        "frames": frames,
        "fps": fps,
        "duration_s": round(frames / fps, 3) if fps else 0.0,
        "width": width,
        "height": height,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the video to write")
    parser.add_argument("--seed", type=int, default=SEED, help="varies the camera moves")
    args = parser.parse_args(argv)
    written = make_video(args.out, args.seed)
    facts = describe(args.out)
    print(
        f"{args.out}: {facts['size_mb']} MB, {facts['duration_s']} s, {facts['fps']:g} fps, "
        f"{facts['frames']} frames ({written} written), {facts['width']}x{facts['height']}, mp4v"
    )
    return 0 if facts["frames"] == written else 1


if __name__ == "__main__":
    sys.exit(main())

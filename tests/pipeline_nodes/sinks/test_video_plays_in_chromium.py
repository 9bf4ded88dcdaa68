"""The default job's video (`make run` -> out/detect_faces.mp4) plays in a browser."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

PAGE = """<!doctype html>
<html><body>
<video id="v" src="VIDEO" muted autoplay playsinline></video>
<pre id="out">[]</pre>
<script>
const v = document.getElementById("v"), out = document.getElementById("out");
const samples = [];
v.addEventListener("error", () => samples.push({error: v.error ? v.error.code : -1}));
setInterval(() => {
  samples.push({ready: v.readyState, t: v.currentTime, w: v.videoWidth, h: v.videoHeight});
  out.textContent = JSON.stringify(samples);
}, 200);
</script>
</body></html>
"""


@pytest.mark.integration
def test_the_default_jobs_video_plays_in_chromium(tmp_path, chromium):
    video = tmp_path / "detect_faces.mp4"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "run",
            "graphs/detect_faces.yaml",
            "--no-live",
            "-q",
            "--set",
            f"record.path={video}",
            "--set",
            f"log.path={tmp_path}/d.jsonl",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=55,
    )
    assert done.returncode == 0, done.stderr
    page = tmp_path / "play.html"
    page.write_text(PAGE.replace("VIDEO", video.name))
    dom = chromium(
        page.as_uri(),
        "--autoplay-policy=no-user-gesture-required",
        "--allow-file-access-from-files",
        "--virtual-time-budget=3000",
        "--dump-dom",
    ).stdout
    samples = json.loads(re.search(r'<pre id="out">(.*?)</pre>', dom, re.S).group(1))
    assert samples and not any("error" in s for s in samples), samples
    playing = [s for s in samples if s["ready"] >= 2]
    assert playing, f"the video never had a frame to show: {samples}"
    assert (playing[-1]["w"], playing[-1]["h"]) == (640, 360)
    assert playing[-1]["t"] > playing[0]["t"] + 0.5  # it plays: currentTime advances

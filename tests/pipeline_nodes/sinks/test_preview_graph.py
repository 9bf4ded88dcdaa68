"""The preview page shows the graph it runs in (the drawing of `pipeline graph --format svg`)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

GRAPH = """
    graph: drawn
    nodes:
      - {id: camera, node: synthetic, params: {width: 160, height: 120, fps: 30, frames: 0}}
      - id: overlay
        node: overlay
        inputs: {frames: camera/frames}
      - id: preview
        node: preview
        params: {port: PORT, max_fps: 10}
        inputs: {frames: {from: overlay/annotated, queue: 2, when_full: drop_oldest}}
"""


def fetch(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, "", b""


@pytest.mark.integration
def test_the_page_shows_the_graph_drawing(write_graph, chromium, free_port, shm_segments):
    graph = write_graph(GRAPH.replace("PORT", str(free_port)))
    url = f"http://127.0.0.1:{free_port}/"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "run", str(graph), "--no-live", "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, kind, body = fetch(url + "graph.svg")
                if status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the preview page never served /graph.svg"
            assert proc.poll() is None
            time.sleep(0.1)
        dom = chromium(url, "--virtual-time-budget=2000", "--dump-dom").stdout
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode != 1, out
    assert shm_segments(proc.pid) == []
    svg = body.decode()
    assert kind == "image/svg+xml"
    assert svg.startswith("<svg ") and "<title>drawn</title>" in svg
    for node_id, node_type in (
        ("camera", "synthetic"),
        ("overlay", "overlay"),
        ("preview", "preview"),
    ):
        assert f'data-node="{node_id}"' in svg
        assert f">{node_type}</text>" in svg
    assert svg.count('class="edge"') == 2
    # the image loaded in the page (a failed load removes it)
    assert '<img id="graph" src="/graph.svg"' in dom

"""The HTML page that the ``preview`` sink serves at ``/``: the stream and a statistics table.

It is a Python string rather than an ``.html`` file so that it ships with the module in any
install (the package has no data-file list for ``nodes``). The page shows
``<img src="/stream.mjpg">`` (reconnecting if the stream drops) and a table of every node's
statistics, fetched from ``/stats.json`` every second, and the graph's drawing
(``/graph.svg``). With several cameras (``streams`` in ``/stats.json``) the single stream
gives way to a grid, one ``<figure data-source=...>`` per camera with
``/stream.mjpg?source=<id>`` and a caption of its frame rate and latency. ``{{node_id}}`` is
replaced, escaped, by the preview node's id.
"""

from __future__ import annotations

import html

__all__ = ["PAGE", "render_page"]

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>preview: {{node_id}}</title>
<style>
  body { margin: 0; font: 14px system-ui, sans-serif; background: #111; color: #ddd; }
  main { display: flex; flex-wrap: wrap; gap: 16px; padding: 16px; align-items: flex-start; }
  #stream { max-width: 100%; min-width: 320px; min-height: 240px; background: #000; }
  h1 { font-size: 16px; margin: 0 0 8px; }
  table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
  th, td { padding: 3px 10px; text-align: right; border-bottom: 1px solid #333; }
  th:first-child, td:first-child, th:nth-child(2), td:nth-child(2) { text-align: left; }
  #status { color: #888; }
  #grid { display: none; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr));
          gap: 8px; flex: 1 1 640px; }
  #grid figure { margin: 0; background: #000; }
  #grid img { width: 100%; display: block; }
  #grid figcaption { padding: 2px 6px; font-variant-numeric: tabular-nums; }
</style>
</head>
<body>
<main>
  <img id="stream" src="/stream.mjpg" alt="live stream of {{node_id}}">
  <div id="grid"></div>
  <section>
    <h1>{{node_id}}</h1>
    <table id="stats" data-refreshes="0">
      <thead><tr>
        <th>node</th><th>state</th><th>fps</th><th>in</th><th>out</th><th>dropped</th>
        <th>process p50 ms</th><th>latency p95 ms</th>
      </tr></thead>
      <tbody></tbody>
    </table>
    <p id="status">waiting for statistics</p>
    <img id="graph" src="/graph.svg" alt="the graph" onerror="this.remove()">
  </section>
</main>
<script>
"use strict";
const table = document.getElementById("stats");
const statusLine = document.getElementById("status");
const stream = document.getElementById("stream");

const grid = document.getElementById("grid");

function streamUrl(source) {
  return "/stream.mjpg?source=" + encodeURIComponent(source) + "&t=" + Date.now();
}

function caption(source, s) {
  return source + ": " + s.fps.toFixed(1) + " fps, latency p50 " +
    s.latency_p50_ms.toFixed(0) + " ms, p95 " + s.latency_p95_ms.toFixed(0) + " ms";
}

// Several cameras: a grid of their streams, each captioned with its rate and latency.
function showStreams(streams) {
  const sources = Object.keys(streams || {});
  if (sources.length < 2) {
    return sources.length ? " | " + caption(sources[0], streams[sources[0]]) : "";
  }
  if (stream.style.display !== "none") {
    stream.style.display = "none";
    stream.removeAttribute("src");  // stop the single stream
    grid.style.display = "grid";
  }
  for (const source of sources) {
    let figure = grid.querySelector('figure[data-source="' + CSS.escape(source) + '"]');
    if (!figure) {
      figure = document.createElement("figure");
      figure.dataset.source = source;
      const img = document.createElement("img");
      img.alt = "live stream of " + source;
      img.src = streamUrl(source);
      img.addEventListener("error", () => {
        setTimeout(() => { img.src = streamUrl(source); }, 1000);
      });
      figure.append(img, document.createElement("figcaption"));
      grid.appendChild(figure);
    }
    figure.querySelector("figcaption").textContent = caption(source, streams[source]);
  }
  return " | " + sources.length + " cameras";
}

function total(ports, key) {
  return Object.values(ports || {}).reduce((sum, port) => sum + (port[key] || 0), 0);
}

function row(id, s) {
  const tr = document.createElement("tr");
  tr.dataset.node = id;
  const cells = [
    id, s.state, (s.fps || 0).toFixed(1), total(s.inputs, "received"),
    total(s.outputs, "sent"), total(s.inputs, "dropped"),
    ((s.process_ms || {}).p50_ms || 0).toFixed(2), ((s.latency_ms || {}).p95_ms || 0).toFixed(1),
  ];
  for (const value of cells) {
    const td = document.createElement("td");
    td.textContent = String(value);
    tr.appendChild(td);
  }
  return tr;
}

async function refresh() {
  try {
    const response = await fetch("/stats.json", {cache: "no-store"});
    const data = await response.json();
    const rows = Object.entries(data.nodes).map(([id, s]) => row(id, s));
    table.tBodies[0].replaceChildren(...rows);
    table.dataset.refreshes = String(Number(table.dataset.refreshes) + 1);
    const streams = showStreams(data.streams);
    statusLine.textContent = "updated " + new Date().toLocaleTimeString() + ", " +
      data.viewers + " viewer(s), " + data.frames_encoded + " frames encoded" + streams;
  } catch (error) {
    statusLine.textContent = "statistics unavailable: " + error;
  }
}

// The stream ends when the graph stops; try again, so a restarted graph shows up by itself.
stream.addEventListener("error", () => {
  if (stream.style.display === "none") return;  // replaced by the grid
  setTimeout(() => { stream.src = "/stream.mjpg?t=" + Date.now(); }, 1000);
});
refresh();
setInterval(refresh, 1000);
</script>
</body>
</html>
"""


def render_page(node_id: str) -> bytes:
    """The page for a preview node, UTF-8 encoded."""
    return PAGE.replace("{{node_id}}", html.escape(node_id)).encode("utf-8")

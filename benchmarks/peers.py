"""The peers of ``benchmarks/transport.py --peers``: dora-rs and eclipse-zenoh moving the same
frames between two processes, measured like ours (flat out for frames/s, paced for one-way
latency from a stamp written by the sender to the receiver's arrival).

- dora-rs (``pip install -e '.[peers]'``: ``dora-rs``, ``dora-rs-cli``): a two-node dataflow
  run with ``dora run`` (which starts its daemon and stops it at the end). The sender fills
  each frame in place in a ``send_output_raw`` sample (dora's zero-copy path: the frame is
  made in shared memory, the stamp written into it, like our in-place mode); the receiver
  views it without a copy and reads one byte. Shared-memory pool raised to 64 MiB so that
  1080p stays in shared memory (with the default 8 MiB it falls back to the heap).
- eclipse-zenoh: two sessions in peer mode on loopback TCP, a publisher with
  ``CongestionControl.BLOCK`` (lossless, like ``when_full: block``) putting the frame bytes.

Each side is this file run as a script (``peers.py dora-send ...``); a peer whose package is
not installed is skipped, and the table says so.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve()
END = b"E"


def available(peer: str) -> str | None:
    """None when ``peer`` can run here, else why not."""
    if peer == "dora":
        if importlib.util.find_spec("dora") is None:
            return "dora-rs is not installed (pip install -e '.[peers]')"
        if _dora_cli() is None:
            return "the dora CLI is not installed (pip install -e '.[peers]')"
        return None
    if peer == "zenoh":
        if importlib.util.find_spec("zenoh") is None:
            return "eclipse-zenoh is not installed (pip install -e '.[peers]')"
        return None
    return f"unknown peer {peer!r}"


def _dora_cli() -> str | None:
    beside = Path(sys.executable).with_name("dora")
    return str(beside) if beside.exists() else shutil.which("dora")


def _summary(lat_ns: list[int], t0: float, t1: float, expected: int) -> dict[str, Any]:
    n = len(lat_ns)
    lat = np.array(lat_ns, np.float64) / 1e6 if n else np.zeros(1)
    return {
        "frames": n,
        "lost": max(0, expected - n),
        "fps": (n - 1) / (t1 - t0) if n > 1 and t1 > t0 else 0.0,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
    }


def _pace(period: float, nxt: float) -> float:
    if period:
        while time.perf_counter() < nxt:
            pass
        return nxt + period
    return nxt


# --- dora-rs ----------------------------------------------------------------------------------


def _dora_send(width: int, height: int, frames: int, fps: float) -> None:
    from dora import Node

    node = Node()
    size = width * height * 3
    period = 1.0 / fps if fps else 0.0
    nxt = time.perf_counter()
    for i in range(frames):
        nxt = _pace(period, nxt)
        sample = node.send_output_raw("frames", size)
        mv = sample.as_memoryview()
        mv[:8] = time.monotonic_ns().to_bytes(8, "little")
        mv[8] = i & 0xFF
        mv.release()
        sample.send()
    with node.send_output_raw("frames", 1) as buf:
        memoryview(buf)[0:1] = END


def _dora_recv(out: str, frames: int) -> None:
    from dora import Node

    node = Node()
    lat: list[int] = []
    t0 = t1 = 0.0
    for event in node:
        if event["type"] != "INPUT":
            if event["type"] in ("STOP", "ERROR"):
                break
            continue
        value = event["value"].to_numpy(zero_copy_only=True)
        if len(value) == 1:
            break
        now = time.monotonic_ns()
        t1 = time.perf_counter()
        if not lat:
            t0 = t1
        lat.append(now - int.from_bytes(value[:8].tobytes(), "little"))
        _ = value[8]
        del value, event
    Path(out).write_text(json.dumps(_summary(lat, t0, t1, frames)))


def dora(width: int, height: int, frames: int, fps: float) -> dict[str, Any]:
    cli = _dora_cli()
    assert cli is not None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        py = sys.executable
        flow = f"""
nodes:
  - id: sender
    path: {py}
    args: {HERE} dora-send {width} {height} {frames} {fps}
    outputs: [frames]
    env: {{DORA_NODE_SHM_POOL_SIZE: "67108864"}}
  - id: receiver
    path: {py}
    args: {HERE} dora-recv {out} {frames}
    inputs:
      frames: sender/frames
    env: {{DORA_NODE_SHM_POOL_SIZE: "67108864"}}
"""
        (Path(tmp) / "flow.yml").write_text(flow)
        proc = subprocess.run(
            [cli, "run", "flow.yml"],
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if not out.exists():
            raise RuntimeError(f"dora run failed ({proc.returncode}): {proc.stderr[-2000:]}")
        result: dict[str, Any] = json.loads(out.read_text())
        return result


# --- zenoh --------------------------------------------------------------------------------------


def _zenoh_config(port: int, listen: bool) -> Any:
    import zenoh

    conf = zenoh.Config()
    conf.insert_json5("mode", '"peer"')
    conf.insert_json5("scouting/multicast/enabled", "false")
    if listen:
        conf.insert_json5("listen/endpoints", f'["tcp/127.0.0.1:{port}"]')
    else:
        conf.insert_json5("connect/endpoints", f'["tcp/127.0.0.1:{port}"]')
    return conf


def _zenoh_send(port: int, width: int, height: int, frames: int, fps: float) -> None:
    import zenoh

    session = zenoh.open(_zenoh_config(port, listen=False))
    pub = session.declare_publisher(
        "bench/frames", congestion_control=zenoh.CongestionControl.BLOCK
    )
    ready = session.declare_subscriber("bench/ready", zenoh.handlers.FifoChannel(4))
    deadline = time.monotonic() + 20
    while ready.try_recv() is None and time.monotonic() < deadline:
        pub.put(b"W")  # until the receiver says it gets our messages
        time.sleep(0.01)
    frame = np.zeros(width * height * 3, np.uint8)
    period = 1.0 / fps if fps else 0.0
    nxt = time.perf_counter()
    for i in range(frames):
        nxt = _pace(period, nxt)
        frame[:8] = np.frombuffer(time.monotonic_ns().to_bytes(8, "little"), np.uint8)
        frame[8] = i & 0xFF
        pub.put(frame.tobytes())
    pub.put(END)
    time.sleep(0.5)
    session.close()


def zenoh_put(width: int, height: int, frames: int, fps: float) -> dict[str, Any]:
    import zenoh

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    session = zenoh.open(_zenoh_config(port, listen=True))
    sub = session.declare_subscriber("bench/frames", zenoh.handlers.FifoChannel(64))
    ready = session.declare_publisher("bench/ready")
    args = [str(port), str(width), str(height), str(frames), str(fps)]
    proc = subprocess.Popen([sys.executable, str(HERE), "zenoh-send", *args])
    lat: list[int] = []
    t0 = t1 = 0.0
    told = False
    try:
        while True:
            sample = sub.recv()
            data = sample.payload.to_bytes()
            if len(data) == 1:
                if data == END:
                    break
                if not told:
                    ready.put(b"R")
                    told = True
                continue
            now = time.monotonic_ns()
            t1 = time.perf_counter()
            if not lat:
                t0 = t1
            lat.append(now - int.from_bytes(data[:8], "little"))
    finally:
        proc.wait(60)
        session.close()
    return _summary(lat, t0, t1, frames)


PEERS = {"dora_rs": ("dora", dora), "zenoh": ("zenoh", zenoh_put)}


def main(argv: list[str]) -> None:
    role, *args = argv
    if role == "dora-send":
        _dora_send(int(args[0]), int(args[1]), int(args[2]), float(args[3]))
    elif role == "dora-recv":
        _dora_recv(args[0], int(args[1]))
    elif role == "zenoh-send":
        _zenoh_send(int(args[0]), int(args[1]), int(args[2]), int(args[3]), float(args[4]))
    else:
        raise SystemExit(f"unknown role {role!r}")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])

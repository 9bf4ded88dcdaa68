"""A real RTSP server on 127.0.0.1 for camera tests (GStreamer's, from Debian packages).

Run as its own process under Debian's ``/usr/bin/python3`` (the ``gi`` bindings are not in
the virtual environment): ``RtspServer`` starts it, waits until the port accepts, and stops
it (SIGTERM, then SIGKILL), which is a real camera outage; ``start()`` again on the same port
is the camera coming back. The stream is H.264 over RTP, ``videotestsrc`` with a running
timestamp drawn in, at the size and rate asked; ``user``/``password`` turn on basic
authentication. Needs the packages ``.ci/run`` installs (gir1.2-gst-rtsp-server-1.0,
python3-gi, gstreamer1.0-plugins-{base,good,ugly}).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"

_SERVER = r"""
import signal, sys
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer

port, mount, width, height, fps, user, password = sys.argv[1:8]
Gst.init(None)
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(
    f"( videotestsrc is-live=true pattern=ball ! "
    f"video/x-raw,width={width},height={height},framerate={fps}/1 ! "
    "timeoverlay ! videoconvert ! "
    "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 ! "
    "rtph264pay name=pay0 pt=96 config-interval=1 )"
)
factory.set_shared(True)
if user:
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
    auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
    server.set_auth(auth)
    permissions = GstRtspServer.RTSPPermissions()
    permissions.add_permission_for_role("user", "media.factory.access", True)
    permissions.add_permission_for_role("user", "media.factory.construct", True)
    factory.set_permissions(permissions)
server.get_mount_points().add_factory(mount, factory)
if server.attach(None) == 0:
    sys.exit("cannot listen on port " + port)
loop = GLib.MainLoop()
GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
loop.run()
"""


def rtsp_available() -> str:
    """Empty when a server can run here, else why not (the packages to install)."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} is missing"
    check = subprocess.run(
        [
            SYSTEM_PYTHON,
            "-c",
            "import gi; gi.require_version('Gst', '1.0'); "
            "gi.require_version('GstRtspServer', '1.0'); "
            "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
            "import sys; sys.exit(0 if Gst.ElementFactory.find('x264enc') else 1)",
        ],
        capture_output=True,
        timeout=30,
    )
    if check.returncode:
        return (
            "the RTSP test server needs Debian packages: apt-get install "
            "gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base "
            "gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly (.ci/run installs them)"
        )
    return ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class RtspServer:
    """One RTSP server process on ``127.0.0.1:<port>/<mount>``."""

    def __init__(
        self,
        port: int | None = None,
        *,
        mount: str = "/cam",
        width: int = 320,
        height: int = 240,
        fps: int = 15,
        user: str = "",
        password: str = "",
    ) -> None:
        self.port = port or free_port()
        self.mount = mount
        self.size = (width, height)
        self.fps = fps
        self.user = user
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}{self.mount}"

    def url_with(self, user: str, password: str) -> str:
        return f"rtsp://{user}:{password}@127.0.0.1:{self.port}{self.mount}"

    def start(self, timeout_s: float = 20.0) -> RtspServer:
        """Start the process and wait until the port accepts connections."""
        w, h = self.size
        args = [str(self.port), self.mount, str(w), str(h), str(self.fps)]
        args += [self.user, self.password]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, "-c", _SERVER, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=sys.stderr,
            env=env,
        )
        deadline = time.monotonic() + timeout_s
        while not accepts(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"the RTSP server exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the RTSP server did not listen on {self.port}")
            try:  # wait on the process (it may exit) between two looks at the port
                self.proc.wait(0.05)
            except subprocess.TimeoutExpired:
                pass
        return self

    def stop(self) -> None:
        """End the process (an outage): SIGTERM, SIGKILL after 5 s."""
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

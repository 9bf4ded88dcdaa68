"""Why a camera did not open: real sockets on 127.0.0.1 and real (absent) device paths."""

from __future__ import annotations

import socket
import sys

import pytest
from mjpeg_server import free_port

from pipeline_nodes.sources.camera.diagnosis import diagnose_device, diagnose_url, redact_url


def test_redact_url_hides_the_password_in_messages() -> None:
    assert (
        redact_url("rtsp://admin:s3cret@10.0.0.5:554/live") == "rtsp://admin:***@10.0.0.5:554/live"
    )
    assert redact_url("http://10.0.0.5/video.mjpg") == "http://10.0.0.5/video.mjpg"


def test_a_url_with_nothing_listening_is_connection_refused() -> None:
    port = free_port()
    reason = diagnose_url(f"rtsp://127.0.0.1:{port}/live", timed_out=False, open_timeout_s=5)
    assert f"connection refused: nothing listens on 127.0.0.1:{port}" in reason


def test_a_listening_host_that_sends_nothing_is_told_apart_from_a_dead_one() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        url = f"http://127.0.0.1:{server.getsockname()[1]}/video.mjpg"
        silent = diagnose_url(url, timed_out=True, open_timeout_s=2)
        garbled = diagnose_url(url, timed_out=False, open_timeout_s=2)
    assert "accepts connections but sent no video within 2 s" in silent
    assert "answers but sent nothing OpenCV reads as video" in garbled


def test_a_bad_port_and_an_unknown_host_are_named() -> None:
    assert "port is not a number" in diagnose_url(
        "rtsp://127.0.0.1:notaport/x", timed_out=False, open_timeout_s=1
    )
    assert "not found" in diagnose_url(
        "rtsp://no-such-host.invalid/x", timed_out=False, open_timeout_s=1
    )


@pytest.mark.skipif(sys.platform != "linux", reason="/dev/video paths are Linux's")
def test_an_absent_device_lists_the_devices_present() -> None:
    reason = diagnose_device("/dev/video63", timed_out=False, open_timeout_s=5)
    assert "/dev/video63 does not exist (video devices present:" in reason
    assert "no answer within 5 s" in diagnose_device(0, timed_out=True, open_timeout_s=5)
    assert "no such device or file" in diagnose_device(
        "/nowhere/cam", timed_out=False, open_timeout_s=5
    )

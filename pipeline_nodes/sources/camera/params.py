"""The params of the ``camera`` source."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from pipeline import NodeParams

__all__ = ["CameraParams"]


class CameraParams(NodeParams):
    """Params of the ``camera`` node (see ``CameraSource``)."""

    device: int | str = Field(
        0,
        description="A device index (0), a device path (/dev/video0), or a stream URL "
        "(rtsp://host/stream, http://host/video.mjpg).",
    )
    width: int | None = Field(
        None, ge=16, le=16384, description="Requested frame width in pixels (devices)."
    )
    height: int | None = Field(
        None, ge=16, le=16384, description="Requested frame height in pixels (devices)."
    )
    fps: float | None = Field(
        None, gt=0, le=1000, description="Requested frames per second (devices)."
    )
    fourcc: str | None = Field(
        None,
        min_length=4,
        max_length=4,
        description="Requested pixel format of a device, e.g. MJPG (USB cameras often "
        "reach full frame rates only with it) or YUYV.",
    )
    backend: Literal["auto", "v4l2", "ffmpeg", "gstreamer"] = Field(
        "auto",
        description="OpenCV capture backend; auto: FFMPEG for URLs, V4L2 for /dev paths, "
        "OpenCV's choice for an index.",
    )
    rtsp_transport: Literal["tcp", "udp"] = Field(
        "tcp",
        description="How an rtsp:// stream's RTP packets travel: tcp, inside the RTSP "
        "connection (no packet loss, passes firewalls and NAT: what most NVRs use); udp, as "
        "separate datagrams (a little lower latency on a clean LAN, frames break up on loss).",
    )
    open_timeout_s: float = Field(
        10.0, gt=0, le=600, description="Give up opening (or reopening) after this long."
    )
    stall_timeout_s: float = Field(
        5.0,
        gt=0,
        le=600,
        description="No new frame for this long counts as a lost stream: reconnect.",
    )
    reconnect_backoff_s: float = Field(
        0.5,
        gt=0,
        le=600,
        description="Wait before the first reconnect attempt; doubles after each failure.",
    )
    reconnect_backoff_max_s: float = Field(
        10.0, gt=0, le=3600, description="Longest wait between reconnect attempts."
    )

    @field_validator("device")
    @classmethod
    def _device(cls, value: int | str) -> int | str:
        if isinstance(value, str):
            value = value.strip()
            if value.isdigit():
                return int(value)
            if not value:
                raise ValueError(
                    "device is empty; give an index (0), a path (/dev/video0) or a URL"
                )
        elif value < 0:
            raise ValueError(f"device index must be >= 0, got {value}")
        return value

    @field_validator("reconnect_backoff_max_s")
    @classmethod
    def _max_at_least_initial(cls, value: float, info: ValidationInfo) -> float:
        initial = info.data.get("reconnect_backoff_s")
        if initial is not None and value < initial:
            raise ValueError(
                f"reconnect_backoff_max_s ({value}) must be >= reconnect_backoff_s ({initial})"
            )
        return value

"""A sink that uploads frames (JPEG) with their detections to the cloud, durably.

:func:`should_take` is the policy (every N-th frame, only frames with a detection at a
confidence, at most K per minute). A taken frame is encoded, written to the spool
(:mod:`pipeline_nodes.sinks.spool`) and fsynced before ``process`` returns, so it is never lost once
taken; a background thread sends the spool oldest first through Viam's
``DataSyncService.DataCaptureUpload`` (the detections as the reading's annotations), with an
idempotency key per record, retries with exponential backoff, and deletes a record only after
the server acknowledged it. A slow or dead server fills the spool, never the graph's queues.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import Field

from pipeline import Detections, Frame, Input, Node, NodeParams
from pipeline_nodes.colors import frame_color, to_bgr
from pipeline_nodes.dependencies import import_cv2
from pipeline_nodes.sinks.spool import Record, Spool

__all__ = ["UploaderSink", "should_take"]

log = logging.getLogger(__name__)


def should_take(
    n_seen: int,
    every_n: int,
    detections: Detections | None,
    min_confidence: float | None,
    recent: collections.deque[float],
    max_per_minute: int | None,
    now: float,
) -> str | None:
    """Why a frame is skipped (``"every_n"``, ``"confidence"``, ``"rate"``), or None to take it.

    ``n_seen`` counts frames from 1; ``recent`` holds the times of frames taken in the last
    minute (pruned here).
    """
    if (n_seen - 1) % every_n:
        return "every_n"
    if min_confidence is not None:
        if detections is None or not len(detections):
            return "confidence"
        if float(detections.confidence.max()) < min_confidence:
            return "confidence"
    if max_per_minute is not None:
        while recent and now - recent[0] >= 60.0:
            recent.popleft()
        if len(recent) >= max_per_minute:
            return "rate"
    return None


class UploaderSink(Node):
    """Upload frames as JPEG, with their detections as annotations, to the cloud.

    Policy: one frame in ``every_n``; with ``min_confidence``, only frames with a detection
    at that confidence or more; at most ``max_per_minute`` per minute. A taken frame is
    written to ``spool`` and fsynced before it counts as taken (``spooled``); a background
    thread uploads it with retries (exponential backoff up to ``max_backoff_s``) and removes
    it only when the server acknowledged. Records survive a crash or kill and are sent after
    a restart with the same idempotency key, so the server never stores one twice. The spool
    is capped at ``max_spool_mb``: when full, the **oldest** records are dropped and counted
    (``dropped``). Statistics: ``spooled``, ``uploaded``, ``retried``, ``dropped``,
    ``skipped``, and ``backlog`` (records waiting). On end of stream the node waits up to
    ``drain_timeout_s`` for the spool to empty; what is left is sent on the next run.
    Credentials: ``address``/``key_id``/``key``, else ``PIPELINE_CLOUD_*`` variables, else
    ``pipeline cloud login``'s file.

    Example:
        - id: upload
          node: uploader
          params: {spool: spool/front, min_confidence: 0.6, max_per_minute: 30}
          inputs:
            frames: camera/frames
            detections: faces/detections
    """

    class Params(NodeParams):
        spool: str = Field(description="Folder of the durable spool (created if missing).")
        address: str | None = Field(None, description="Cloud HOST:PORT (default: login).")
        key_id: str | None = Field(None, description="API key id (default: env or login).")
        key: str | None = Field(None, description="API key (default: env or login).")
        insecure: bool | None = Field(None, description="Plain HTTP/2 (loopback only).")
        ca_file: str | None = Field(None, description="CA certificate to verify the server.")
        every_n: int = Field(1, ge=1, description="Take one frame in every N.")
        min_confidence: float | None = Field(
            None, ge=0, le=1, description="Take only frames with a detection this confident."
        )
        max_per_minute: int | None = Field(None, ge=1, description="Take at most K per minute.")
        max_spool_mb: float = Field(1024.0, gt=0, description="Spool cap; oldest dropped.")
        jpeg_quality: int = Field(90, ge=1, le=100, description="JPEG quality, 1..100.")
        tags: list[str] = Field([], description="Tags on every upload.")
        part_id: str = Field("", description="Machine part id sent with each upload.")
        component_name: str | None = Field(
            None, description="Component name sent (default: the frame's source)."
        )
        max_backoff_s: float = Field(30.0, gt=0, description="Longest wait between retries.")
        drain_timeout_s: float = Field(
            10.0, ge=0, description="At end of stream, wait this long for the spool to empty."
        )

    frames = Input(Frame, description="(H, W[, 3]) uint8 frames to upload as JPEG.")
    detections = Input(
        Detections, required=False, description="Detections of the same frames (annotations)."
    )

    def open(self) -> None:
        cv2 = import_cv2(f"the uploader node {self.id!r}")
        self._imencode = cv2.imencode
        self._jpeg = [int(cv2.IMWRITE_JPEG_QUALITY), self.params.jpeg_quality]
        from pipeline_cloud.client import load_credentials

        p = self.params
        self._creds = load_credentials(p.address, p.key_id, p.key, p.insecure, p.ca_file)
        self.spool = Spool(Path(p.spool), int(p.max_spool_mb * 1024 * 1024))
        self._seen = 0
        self._recent: collections.deque[float] = collections.deque()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.count("backlog", self.spool.backlog)
        self._sender = threading.Thread(
            target=self._send_loop, name=f"{self.id}-upload", daemon=True
        )
        self._sender.start()

    def process(self, frames: Frame, detections: Detections | None = None) -> None:
        p = self.params
        self._seen += 1
        now = time.monotonic()
        why = should_take(
            self._seen, p.every_n, detections, p.min_confidence, self._recent,
            p.max_per_minute, now,
        )  # fmt: skip
        if why is not None:
            self.count("skipped")
            return
        self._recent.append(now)
        keep = frame_color(frames.image, frames.meta) in ("gray", "bgr")
        ok, jpeg = self._imencode(".jpg", frames.image if keep else to_bgr(frames), self._jpeg)
        if not ok:
            raise RuntimeError(f"node {self.id!r}: JPEG encoding of seq {frames.seq} failed")
        header: dict[str, Any] = {
            "seq": frames.seq,
            "source": frames.source,
            "time": time.time(),
            "boxes": [],
        }
        if detections is not None:
            header["boxes"] = [
                [str(n), *(float(v) for v in xyxy), float(c)]
                for n, xyxy, c in zip(
                    detections.class_names, detections.xyxy, detections.confidence
                )
            ]
        _, dropped = self.spool.put(header, jpeg.tobytes())
        self.count("spooled")
        self.count("backlog", 1 - dropped)
        if dropped:
            self.count("dropped", dropped)
        self._wake.set()

    def flush(self) -> None:
        deadline = time.monotonic() + self.params.drain_timeout_s
        while self.spool.backlog and time.monotonic() < deadline and self._sender.is_alive():
            self._wake.set()
            time.sleep(0.02)

    def close(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
            self._wake.set()
            self._sender.join(timeout=5.0)
            self.spool.close()

    # -- the background sender ---------------------------------------------------------------

    def _send_loop(self) -> None:
        try:
            asyncio.run(self._send_all())
        except Exception:
            log.exception("node %r: the uploader thread failed", self.id)

    async def _send_all(self) -> None:
        from pipeline_cloud.client import CloudClient

        backoff = 0.0
        unreadable = 0
        client = CloudClient(self._creds, timeout_s=15.0)
        try:
            while not self._stop.is_set():
                record = self.spool.oldest()
                if self.spool.unreadable != unreadable:
                    lost = self.spool.unreadable - unreadable
                    unreadable = self.spool.unreadable
                    self.count("dropped", lost)
                    self.count("backlog", -lost)
                if record is None:
                    await asyncio.to_thread(self._wake.wait, 0.5)
                    self._wake.clear()
                    continue
                try:
                    await self._upload(client, record)
                except Exception as exc:
                    self.count("retried")
                    backoff = min(self.params.max_backoff_s, max(0.05, backoff * 2))
                    log.warning(
                        "node %r: upload failed (%s: %s); retrying in %.2f s",
                        self.id, type(exc).__name__, exc, backoff,
                    )  # fmt: skip
                    await client.aclose(0.5)
                    client = CloudClient(self._creds, timeout_s=15.0)
                    await asyncio.to_thread(self._stop.wait, backoff * random.uniform(0.8, 1.2))
                    continue
                backoff = 0.0
                if self.spool.remove(record):
                    self.count("backlog", -1)
                self.count("uploaded")
        finally:
            await client.aclose(0.5)

    async def _upload(self, client: Any, record: Record) -> None:
        from google.protobuf.timestamp_pb2 import Timestamp
        from viam.gen.app.data.v1 import data_pb2
        from viam.gen.app.datasync.v1 import data_sync_grpc, data_sync_pb2

        p = self.params
        h = record.header
        taken = Timestamp()
        taken.FromNanoseconds(int(float(h["time"]) * 1e9))
        boxes = [
            data_pb2.BoundingBox(
                label=label,
                x_min_normalized=x0,
                y_min_normalized=y0,
                x_max_normalized=x1,
                y_max_normalized=y1,
                confidence=conf,
            )
            for label, x0, y0, x1, y1, conf in h["boxes"]
        ]
        request = data_sync_pb2.DataCaptureUploadRequest(
            metadata=data_sync_pb2.UploadMetadata(
                part_id=p.part_id,
                component_type="camera",
                component_name=p.component_name or str(h["source"]),
                method_name="GetImages",
                type=data_sync_pb2.DATA_TYPE_BINARY_SENSOR,
                file_extension=".jpg",
                tags=list(p.tags),
                mime_type="image/jpeg",
            ),
            sensor_contents=[
                data_sync_pb2.SensorData(
                    metadata=data_sync_pb2.SensorMetadata(
                        time_requested=taken,
                        time_received=taken,
                        mime_type=data_sync_pb2.MIME_TYPE_IMAGE_JPEG,
                        annotations=data_pb2.Annotations(bboxes=boxes),
                    ),
                    binary=record.payload,
                )
            ],
        )
        stub = data_sync_grpc.DataSyncServiceStub(client.channel)
        await client.call(
            lambda md: stub.DataCaptureUpload(request, timeout=15.0, metadata=md),
            **{"idempotency-key": record.id},
        )

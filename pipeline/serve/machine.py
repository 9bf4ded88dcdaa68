"""The grpclib handlers: Viam's robot, vision, ML model and camera APIs over a running graph.

Requests are answered from the graph's newest outputs (through the taps) or by running the
node's own service (its model, with the node's params and preprocessing) in the server
process: never inside the graph, so a request cannot slow a source or break a node. Each node's
requests run on its own small thread pool (``threads_per_node``) behind a bounded queue
(``queue_per_node``, then RESOURCE_EXHAUSTED), each with a timeout (DEADLINE_EXCEEDED).

Every refusal is a gRPC status with a message naming what was wrong: NOT_FOUND for an unknown
resource or camera (listing the known ones), INVALID_ARGUMENT for a bad image or tensor,
UNAVAILABLE before a camera's first frame, UNIMPLEMENTED for what a graph cannot do (point
clouds, 3D detections, DoCommand), INTERNAL (logged with the traceback) for a failure inside a
service.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar, cast

import numpy as np
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2
from grpclib import GRPCError, Status
from grpclib.server import Stream
from viam.gen.common.v1 import common_pb2
from viam.gen.component.camera.v1 import camera_grpc, camera_pb2
from viam.gen.robot.v1 import robot_grpc, robot_pb2
from viam.gen.service.mlmodel.v1 import mlmodel_grpc, mlmodel_pb2
from viam.gen.service.vision.v1 import vision_grpc, vision_pb2

from pipeline.messages import Classifications, Detections, Frame, Message
from pipeline.rpc.flat_tensors import (
    InferRequestView,
    encode_infer_response,
    from_flat_tensors,
    parse_infer_request,
)
from pipeline.rpc.server import PreEncoded
from pipeline.serve.config import ServeConfig
from pipeline.serve.contract import ModelInfo
from pipeline.serve.images import JPEG, PNG, VIAM_RGBA, ImageError, decode_image, encode_image
from pipeline.serve.resources import Resources, ServedNode

__all__ = ["RAW_DECODERS", "GraphView", "Machine", "handlers"]

log = logging.getLogger("pipeline.serve")
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Coroutine[Any, Any, None]])
HEARTBEAT_WINDOW_S = 2.0
_LABEL_TYPES = {
    "value": mlmodel_pb2.LABEL_TYPE_TENSOR_VALUE,
    "axis": mlmodel_pb2.LABEL_TYPE_TENSOR_AXIS,
}


class GraphView(Protocol):
    """What the server reads of the running graph (``pipeline.serve.taps.TapReceiver``)."""

    def newest(self, node: str, port: str) -> Message | None: ...

    def frame(self, source: str, seq: int | None = None) -> Frame | None: ...

    def frame_rate(self, source: str) -> float: ...


class NodeRunner:
    """Runs one node's service calls: ``threads`` at once, ``queue`` more waiting, then no."""

    def __init__(self, node_id: str, threads: int, queue: int) -> None:
        self.node_id = node_id
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix=f"serve-{node_id}")
        self._limit = threads + queue
        self._queue = queue
        self._pending = 0  # submitted and not finished (the thread may outlive a timeout)
        self._lock = threading.Lock()

    def _done(self, _: object) -> None:
        with self._lock:
            self._pending -= 1

    async def run(self, what: str, fn: Callable[[], T], timeout_s: float) -> T:
        with self._lock:
            if self._pending >= self._limit:
                raise GRPCError(
                    Status.RESOURCE_EXHAUSTED,
                    f"node {self.node_id!r} already has {self._pending} requests running or "
                    f"waiting (at most {self._limit}); retry later",
                )
            self._pending += 1
        future = self._pool.submit(fn)
        future.add_done_callback(self._done)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)
        except asyncio.TimeoutError:
            raise GRPCError(
                Status.DEADLINE_EXCEEDED,
                f"{what} on node {self.node_id!r} took longer than {timeout_s:g} s",
            ) from None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _guard(method: F) -> F:
    """Map user mistakes and service failures to statuses with messages."""

    @functools.wraps(method)
    async def wrapper(self: Any, stream: Stream[Any, Any]) -> None:
        try:
            await method(self, stream)
        except GRPCError:
            raise
        except (ImageError, ValueError) as exc:
            raise GRPCError(Status.INVALID_ARGUMENT, str(exc)) from None
        except NotImplementedError as exc:
            raise GRPCError(Status.UNIMPLEMENTED, str(exc)) from None
        except Exception as exc:
            log.exception("%s failed", method.__name__)
            raise GRPCError(
                Status.INTERNAL, f"{method.__name__} failed: {type(exc).__name__}: {exc}"
            ) from None

    return cast("F", wrapper)


async def _recv(stream: Stream[Any, Any]) -> Any:
    request = await stream.recv_message()
    if request is None:  # pragma: no cover - a unary call always carries its request
        raise GRPCError(Status.INVALID_ARGUMENT, "no request message")
    return request


def _unimplemented(what: str) -> GRPCError:
    return GRPCError(Status.UNIMPLEMENTED, what)


class Machine:
    """The served graph: resources, the view of its outputs, and a runner per service."""

    def __init__(self, resources: Resources, view: GraphView, config: ServeConfig) -> None:
        self.resources = resources
        self.view = view
        self.config = config
        self.started = time.time()
        self.runners = {
            node.id: NodeRunner(node.id, config.threads_per_node, config.queue_per_node)
            for node in resources.nodes.values()
        }
        self.sessions: dict[str, float] = {}  # session id -> expiry (time.monotonic)

    def close(self) -> None:
        for runner in self.runners.values():
            runner.close()

    # --- lookups -------------------------------------------------------------------------

    def _find(self, table: Mapping[str, ServedNode], kind: str, name: str) -> ServedNode:
        node = table.get(name)
        if node is None:
            known = ", ".join(sorted(table)) or "none"
            raise GRPCError(
                Status.NOT_FOUND, f"no {kind} named {name!r} on this machine; it has: {known}"
            )
        return node

    def vision(self, name: str) -> ServedNode:
        return self._find(self.resources.vision, "vision service", name)

    def mlmodel(self, name: str) -> ServedNode:
        return self._find(self.resources.mlmodel, "ML model service", name)

    def camera(self, name: str) -> ServedNode:
        return self._find(self.resources.cameras, "camera", name)

    def camera_for(self, node: ServedNode, camera_name: str) -> str:
        """The camera a ``*FromCamera`` call means; an empty name is the node's default."""
        if not camera_name:
            if not node.cameras:
                raise GRPCError(
                    Status.INVALID_ARGUMENT, f"{node.id!r} has no default camera; name one"
                )
            return node.cameras[0]
        return self.camera(camera_name).id

    def newest_frame(self, camera: str, seq: int | None = None) -> Frame:
        frame = self.view.frame(camera, seq)
        if frame is None:
            raise GRPCError(
                Status.UNAVAILABLE, f"camera {camera!r} has not produced a frame yet; retry"
            )
        return frame

    async def run(self, node: ServedNode, what: str, fn: Callable[[], T]) -> T:
        return await self.runners[node.id].run(what, fn, self.config.request_timeout_s)

    # --- the newest results of a vision node for a camera --------------------------------

    async def detections_for(
        self, node: ServedNode, camera: str
    ) -> tuple[Detections, Frame | None]:
        """The node's newest detections when they are of this camera, else a fresh run on the
        camera's newest frame. Returns them and their frame (when still held)."""
        service = node.service
        assert service is not None
        if not service.detects:
            raise _unimplemented(
                f"vision service {node.id!r} does not detect objects "
                "(GetProperties: detections_supported=false)"
            )
        newest = self.view.newest(node.id, node.detections_port) if node.detections_port else None
        if isinstance(newest, Detections) and newest.source == camera:
            return newest, self.view.frame(camera, newest.seq)
        frame = self.newest_frame(camera)
        found = await self.run(node, "detect", lambda: service.detect(frame.image))
        return found.replace(seq=frame.seq, source=camera), frame

    async def classifications_for(
        self, node: ServedNode, camera: str
    ) -> tuple[Classifications, Frame | None]:
        service = node.service
        assert service is not None
        if not service.classifies:
            raise _unimplemented(
                f"vision service {node.id!r} does not classify images "
                "(GetProperties: classifications_supported=false)"
            )
        port = node.classifications_port
        newest = self.view.newest(node.id, port) if port else None
        if isinstance(newest, Classifications) and newest.source == camera:
            return newest, self.view.frame(camera, newest.seq)
        frame = self.newest_frame(camera)
        found = await self.run(node, "classify", lambda: service.classify(frame.image))
        return found.replace(seq=frame.seq, source=camera), frame


# --- conversions ---------------------------------------------------------------------------


def detections_to_proto(found: Detections, image_wh: tuple[int, int]) -> list[Any]:
    """Viam ``Detection``s: pixel corners (rounded) and normalised ones (0..1, top-left)."""
    w, h = image_wh if all(image_wh) else found.image_wh
    out = []
    for i in range(len(found)):
        x0, y0, x1, y1 = (float(v) for v in found.xyxy[i])
        name = found.class_names[i] if i < len(found.class_names) else str(int(found.class_id[i]))
        out.append(
            vision_pb2.Detection(
                x_min=round(x0 * w),
                y_min=round(y0 * h),
                x_max=round(x1 * w),
                y_max=round(y1 * h),
                x_min_normalized=x0,
                y_min_normalized=y0,
                x_max_normalized=x1,
                y_max_normalized=y1,
                confidence=float(found.confidence[i]),
                class_name=name,
            )
        )
    return out


def classifications_to_proto(found: Classifications, n: int) -> list[Any]:
    """The top ``n`` (all when ``n`` <= 0), highest confidence first."""
    order = np.argsort(-np.asarray(found.confidence, np.float64), kind="stable")
    if n > 0:
        order = order[:n]
    return [
        vision_pb2.Classification(
            class_name=str(found.class_names[i]), confidence=float(found.confidence[i])
        )
        for i in order
    ]


def _image_wh(frame: Frame | None, found: Detections) -> tuple[int, int]:
    if frame is not None:
        return frame.width, frame.height
    return found.image_wh


def _identity(message: Message) -> struct_pb2.Struct:
    extra = struct_pb2.Struct()
    extra.update(
        {"seq": message.seq, "source": message.source, "t_capture_ns": message.t_capture_ns}
    )
    return extra


def model_info_to_proto(info: ModelInfo) -> Any:
    def tensor(spec: Any) -> Any:
        files = []
        if spec.labels:
            files.append(
                mlmodel_pb2.File(
                    name="labels.txt",
                    description=f"{len(spec.labels)} class names, one per line",
                    label_type=_LABEL_TYPES.get(
                        spec.label_type, mlmodel_pb2.LABEL_TYPE_TENSOR_VALUE
                    ),
                )
            )
        extra = struct_pb2.Struct()
        if spec.labels:
            extra.update({"labels": list(spec.labels)})
        return mlmodel_pb2.TensorInfo(
            name=spec.name,
            description=spec.description,
            data_type=spec.dtype,
            shape=list(spec.shape),
            associated_files=files,
            extra=extra,
        )

    return mlmodel_pb2.Metadata(
        name=info.name,
        type=info.type,
        description=info.description,
        input_info=[tensor(s) for s in info.inputs],
        output_info=[tensor(s) for s in info.outputs],
    )


def _image_proto(name: str, frame: Frame, mime_type: str) -> Any:
    return camera_pb2.Image(
        source_name=name, image=encode_image(frame.image, mime_type), mime_type=mime_type or JPEG
    )


def _mime_from(extra: struct_pb2.Struct, default: str = JPEG) -> str:
    value = extra.fields.get("mime_type")
    if value is None:
        return default
    mime = str(value.string_value)
    if mime not in (JPEG, PNG, VIAM_RGBA):
        raise GRPCError(
            Status.INVALID_ARGUMENT,
            f"extra.mime_type {mime!r} is not offered; ask for {JPEG}, {PNG} or {VIAM_RGBA}",
        )
    return mime


# --- services ------------------------------------------------------------------------------


class RobotHandler(robot_grpc.UnimplementedRobotServiceBase):
    """The machine-level calls the SDK makes on connect and while connected."""

    def __init__(self, machine: Machine) -> None:
        self.m = machine

    def _names(self) -> list[Any]:
        return [
            common_pb2.ResourceName(namespace="rdk", type=t, subtype=s, name=n)
            for t, s, n in self.m.resources.names()
        ]

    @_guard
    async def ResourceNames(self, stream: Stream[Any, Any]) -> None:
        await _recv(stream)
        await stream.send_message(robot_pb2.ResourceNamesResponse(resources=self._names()))

    @_guard
    async def ResourceRPCSubtypes(self, stream: Stream[Any, Any]) -> None:
        await _recv(stream)
        services = {
            ("component", "camera"): "viam.component.camera.v1.CameraService",
            ("service", "vision"): "viam.service.vision.v1.VisionService",
            ("service", "mlmodel"): "viam.service.mlmodel.v1.MLModelService",
        }
        subtypes = [
            robot_pb2.ResourceRPCSubtype(
                subtype=common_pb2.ResourceName(namespace="rdk", type=t, subtype=s, name=""),
                proto_service=name,
            )
            for (t, s), name in services.items()
        ]
        await stream.send_message(
            robot_pb2.ResourceRPCSubtypesResponse(resource_rpc_subtypes=subtypes)
        )

    @_guard
    async def StartSession(self, stream: Stream[Any, Any]) -> None:
        request = await _recv(stream)
        now = time.monotonic()
        self.m.sessions = {k: v for k, v in self.m.sessions.items() if v > now}
        session = request.resume if request.resume in self.m.sessions else str(uuid.uuid4())
        self.m.sessions[session] = now + HEARTBEAT_WINDOW_S
        window = duration_pb2.Duration()
        window.FromTimedelta(datetime.timedelta(seconds=HEARTBEAT_WINDOW_S))
        await stream.send_message(
            robot_pb2.StartSessionResponse(id=session, heartbeat_window=window)
        )

    @_guard
    async def SendSessionHeartbeat(self, stream: Stream[Any, Any]) -> None:
        request = await _recv(stream)
        now = time.monotonic()
        if self.m.sessions.get(request.id, 0.0) <= now:
            self.m.sessions.pop(request.id, None)
            raise GRPCError(Status.INVALID_ARGUMENT, "SESSION_EXPIRED")
        self.m.sessions[request.id] = now + HEARTBEAT_WINDOW_S
        await stream.send_message(robot_pb2.SendSessionHeartbeatResponse())

    @_guard
    async def GetSessions(self, stream: Stream[Any, Any]) -> None:
        await _recv(stream)
        now = time.monotonic()
        sessions = [robot_pb2.Session(id=k) for k, v in self.m.sessions.items() if v > now]
        await stream.send_message(robot_pb2.GetSessionsResponse(sessions=sessions))

    @_guard
    async def GetMachineStatus(self, stream: Stream[Any, Any]) -> None:
        await _recv(stream)
        updated = timestamp_pb2.Timestamp()
        updated.FromSeconds(int(self.m.started))
        statuses = [
            robot_pb2.ResourceStatus(
                name=name, state=robot_pb2.ResourceStatus.STATE_READY, last_updated=updated
            )
            for name in self._names()
        ]
        await stream.send_message(
            robot_pb2.GetMachineStatusResponse(
                resources=statuses,
                config=robot_pb2.ConfigStatus(revision="", last_updated=updated),
                state=robot_pb2.GetMachineStatusResponse.STATE_RUNNING,
            )
        )

    @_guard
    async def GetVersion(self, stream: Stream[Any, Any]) -> None:
        await _recv(stream)
        from importlib.metadata import PackageNotFoundError, version

        try:
            ours = version("edge-vision-pipeline")
        except PackageNotFoundError:  # pragma: no cover - running from a source tree
            ours = "0"
        await stream.send_message(
            robot_pb2.GetVersionResponse(platform="edge-vision-pipeline", version=ours)
        )

    @_guard
    async def GetOperations(self, stream: Stream[Any, Any]) -> None:
        await _recv(stream)
        await stream.send_message(robot_pb2.GetOperationsResponse())

    @_guard
    async def StopAll(self, stream: Stream[Any, Any]) -> None:
        await _recv(stream)  # nothing moves: there is nothing to stop
        await stream.send_message(robot_pb2.StopAllResponse())


class VisionHandler(vision_grpc.VisionServiceBase):
    """Viam's vision service (2D): detections and classifications."""

    def __init__(self, machine: Machine) -> None:
        self.m = machine

    @_guard
    async def GetDetectionsFromCamera(self, stream: Stream[Any, Any]) -> None:
        request = await _recv(stream)
        node = self.m.vision(request.name)
        camera = self.m.camera_for(node, request.camera_name)
        found, frame = await self.m.detections_for(node, camera)
        await stream.send_message(
            vision_pb2.GetDetectionsFromCameraResponse(
                detections=detections_to_proto(found, _image_wh(frame, found))
            )
        )

    @_guard
    async def GetDetections(self, stream: Stream[Any, Any]) -> None:
        request = await _recv(stream)
        node = self.m.vision(request.name)
        service = node.service
        assert service is not None
        if not service.detects:
            raise _unimplemented(f"vision service {node.id!r} does not detect objects")

        def detect() -> tuple[Detections, tuple[int, int]]:
            # decoding runs on the node's threads too: a 640x480 JPEG takes milliseconds,
            # which the event loop must not spend
            image = decode_image(request.image, request.mime_type, request.width, request.height)
            return service.detect(image), (image.shape[1], image.shape[0])

        found, image_wh = await self.m.run(node, "detect", detect)
        await stream.send_message(
            vision_pb2.GetDetectionsResponse(detections=detections_to_proto(found, image_wh))
        )

    @_guard
    async def GetClassificationsFromCamera(self, stream: Stream[Any, Any]) -> None:
        request = await _recv(stream)
        node = self.m.vision(request.name)
        camera = self.m.camera_for(node, request.camera_name)
        found, _ = await self.m.classifications_for(node, camera)
        await stream.send_message(
            vision_pb2.GetClassificationsFromCameraResponse(
                classifications=classifications_to_proto(found, request.n)
            )
        )

    @_guard
    async def GetClassifications(self, stream: Stream[Any, Any]) -> None:
        request = await _recv(stream)
        node = self.m.vision(request.name)
        service = node.service
        assert service is not None
        if not service.classifies:
            raise _unimplemented(f"vision service {node.id!r} does not classify images")

        def classify() -> Classifications:
            image = decode_image(request.image, request.mime_type, request.width, request.height)
            return service.classify(image)

        found = await self.m.run(node, "classify", classify)
        await stream.send_message(
            vision_pb2.GetClassificationsResponse(
                classifications=classifications_to_proto(found, request.n)
            )
        )

    @_guard
    async def CaptureAllFromCamera(self, stream: Stream[Any, Any]) -> None:
        request = await _recv(stream)
        node = self.m.vision(request.name)
        camera = self.m.camera_for(node, request.camera_name)
        service = node.service
        assert service is not None
        response = vision_pb2.CaptureAllFromCameraResponse()
        frame: Frame | None = None
        anchor: Message | None = None
        if request.return_detections and service.detects:
            found, frame = await self.m.detections_for(node, camera)
            anchor = found
        if request.return_classifications and service.classifies:
            classes, class_frame = await self.m.classifications_for(node, camera)
            if frame is None or class_frame is None or class_frame.seq != frame.seq:
                # the same frame for both: classify the frame the detections came from
                base = frame or class_frame or self.m.newest_frame(camera)
                image = base.image
                classes = await self.m.run(node, "classify", lambda: service.classify(image))
                classes = classes.replace(seq=base.seq, source=camera)
                frame = base
            response.classifications.extend(classifications_to_proto(classes, 0))
            anchor = anchor or classes
        if request.return_detections and service.detects and anchor is not None:
            assert isinstance(anchor, Detections)
            if frame is None:
                # the detections' frame has left the history: detect on the newest frame
                frame = self.m.newest_frame(camera)
                image = frame.image
                anchor = await self.m.run(node, "detect", lambda: service.detect(image))
                anchor = anchor.replace(seq=frame.seq, source=camera)
            response.detections.extend(detections_to_proto(anchor, (frame.width, frame.height)))
        if request.return_image:
            frame = frame or self.m.newest_frame(camera)
            mime = _mime_from(request.extra)
            shown = frame
            image_proto = await self.m.run(
                self.m.camera(camera), "encode", lambda: _image_proto(camera, shown, mime)
            )
            response.image.CopyFrom(image_proto)
        if request.return_object_point_clouds or request.return_detections_3d:
            raise _unimplemented(
                "a graph has no point clouds: ask CaptureAllFromCamera without "
                "return_object_point_clouds/return_detections_3d"
            )
        identity = frame or anchor
        if identity is not None:
            response.extra.CopyFrom(_identity(identity))
        await stream.send_message(response)

    @_guard
    async def GetProperties(self, stream: Stream[Any, Any]) -> None:
        request = await _recv(stream)
        node = self.m.vision(request.name)
        service = node.service
        assert service is not None
        await stream.send_message(
            vision_pb2.GetPropertiesResponse(
                classifications_supported=service.classifies,
                detections_supported=service.detects,
                object_point_clouds_supported=False,
                detections_3d_supported=False,
                default_camera=node.cameras[0] if node.cameras else "",
            )
        )

    async def GetObjectPointClouds(self, stream: Stream[Any, Any]) -> None:
        await _recv(stream)
        raise _unimplemented("GetObjectPointClouds: a graph's vision services are 2D only")

    async def GetDetections3D(self, stream: Stream[Any, Any]) -> None:
        await _recv(stream)
        raise _unimplemented("GetDetections3D: a graph's vision services are 2D only")

    async def DoCommand(self, stream: Stream[Any, Any]) -> None:
        await _recv(stream)
        raise _unimplemented("DoCommand: a graph's vision services take no commands")

    @_guard
    async def GetStatus(self, stream: Stream[Any, Any]) -> None:
        request = await _recv(stream)
        self.m.vision(request.name)
        await stream.send_message(common_pb2.GetStatusResponse(result=struct_pb2.Struct()))


class MLModelHandler(mlmodel_grpc.MLModelServiceBase):
    """Viam's ML model service: Infer on flat tensors, Metadata."""

    def __init__(self, machine: Machine) -> None:
        self.m = machine

    @_guard
    async def Infer(self, stream: Stream[Any, Any]) -> None:
        request = await _recv(stream)  # an InferRequestView on our server (the fast path)
        node = self.m.mlmodel(request.name)
        service = node.service
        assert service is not None
        if isinstance(request, InferRequestView):
            inputs = request.tensors
        else:
            try:
                inputs = from_flat_tensors(request.input_tensors)
            except ValueError as exc:
                raise GRPCError(Status.INVALID_ARGUMENT, f"{node.id!r}: {exc}") from None
        try:
            outputs = await self.m.run(node, "infer", lambda: service.infer(inputs))
        except ValueError as exc:
            raise GRPCError(
                Status.INVALID_ARGUMENT, f"model of {node.id!r} cannot take these inputs: {exc}"
            ) from None
        try:
            reply = encode_infer_response(outputs)
        except ValueError as exc:
            raise GRPCError(Status.INTERNAL, f"model of {node.id!r} returned {exc}") from None
        await stream.send_message(cast("Any", PreEncoded(reply)))

    @_guard
    async def Metadata(self, stream: Stream[Any, Any]) -> None:
        request = await _recv(stream)
        node = self.m.mlmodel(request.name)
        service = node.service
        assert service is not None
        info = await self.m.run(node, "metadata", service.model_info)
        await stream.send_message(mlmodel_pb2.MetadataResponse(metadata=model_info_to_proto(info)))

    @_guard
    async def GetStatus(self, stream: Stream[Any, Any]) -> None:
        request = await _recv(stream)
        self.m.mlmodel(request.name)
        await stream.send_message(common_pb2.GetStatusResponse(result=struct_pb2.Struct()))


class CameraHandler(camera_grpc.CameraServiceBase):
    """Viam's camera component for each source: its newest frame."""

    def __init__(self, machine: Machine) -> None:
        self.m = machine

    @_guard
    async def GetImages(self, stream: Stream[Any, Any]) -> None:
        request = await _recv(stream)
        camera = self.m.camera(request.name)
        wanted = list(request.filter_source_names)
        if wanted and camera.id not in wanted:
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                f"camera {camera.id!r} has one source, {camera.id!r}; filter_source_names "
                f"asked for {wanted}",
            )
        frame = self.m.newest_frame(camera.id)
        mime = _mime_from(request.extra)
        image = await self.m.run(camera, "encode", lambda: _image_proto(camera.id, frame, mime))
        captured = timestamp_pb2.Timestamp()
        captured.FromNanoseconds(time.time_ns() - (time.monotonic_ns() - frame.t_capture_ns))
        await stream.send_message(
            camera_pb2.GetImagesResponse(
                images=[image],
                response_metadata=common_pb2.ResponseMetadata(captured_at=captured),
            )
        )

    @_guard
    async def GetProperties(self, stream: Stream[Any, Any]) -> None:
        request = await _recv(stream)
        camera = self.m.camera(request.name)
        frame = self.m.view.frame(camera.id)
        response = camera_pb2.GetPropertiesResponse(
            supports_pcd=False,
            mime_types=[JPEG, PNG, VIAM_RGBA],
            frame_rate=self.m.view.frame_rate(camera.id),
        )
        if frame is not None:
            response.intrinsic_parameters.width_px = frame.width
            response.intrinsic_parameters.height_px = frame.height
        await stream.send_message(response)

    async def GetPointCloud(self, stream: Stream[Any, Any]) -> None:
        await _recv(stream)
        raise _unimplemented("GetPointCloud: a graph's cameras have no depth")

    async def GetGeometries(self, stream: Stream[Any, Any]) -> None:
        await _recv(stream)
        raise _unimplemented("GetGeometries: a graph's cameras have no geometry")

    async def DoCommand(self, stream: Stream[Any, Any]) -> None:
        await _recv(stream)
        raise _unimplemented("DoCommand: a graph's cameras take no commands")

    @_guard
    async def GetStatus(self, stream: Stream[Any, Any]) -> None:
        request = await _recv(stream)
        self.m.camera(request.name)
        await stream.send_message(common_pb2.GetStatusResponse(result=struct_pb2.Struct()))


#: Request types the machine's server reads straight from their bytes (RpcServer raw_decoders).
RAW_DECODERS: dict[type, Callable[[bytes], Any]] = {mlmodel_pb2.InferRequest: parse_infer_request}


def handlers(machine: Machine) -> list[Any]:
    """Every grpclib handler of the machine."""
    return [
        RobotHandler(machine),
        VisionHandler(machine),
        MLModelHandler(machine),
        CameraHandler(machine),
    ]

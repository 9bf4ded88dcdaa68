"""The machine's handlers with stand-in services, called by the real Viam SDK client.

The real graph is tested in tests/integration/test_serve*.py; here a service that echoes its
tensors shows every Viam dtype round-trips bit-exact through MLModelClient.infer (no model
takes all ten dtypes), and a slow one shows the per-node queue and the timeout.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from grpclib import GRPCError, Status
from grpclib.client import Channel
from viam.gen.service.mlmodel.v1 import mlmodel_grpc, mlmodel_pb2
from viam.robot.client import RobotClient
from viam.services.mlmodel import MLModelClient

from pipeline.messages import Frame
from pipeline.rpc.flat_tensors import VIAM_DTYPES, to_flat_tensors
from pipeline.rpc.server import RpcServer
from pipeline.serve.config import ServeConfig
from pipeline.serve.contract import ModelInfo, NodeService, TensorSpec
from pipeline.serve.machine import RAW_DECODERS, Machine, handlers
from pipeline.serve.resources import Resources, ServedNode
from pipeline.serve.taps import decode_tapped, encode_tapped
from tests.pipeline.rpc.conftest import ServerThread, robot_options, run_sdk


class Echo(NodeService):
    kinds = frozenset({"mlmodel"})

    def infer(self, inputs):
        return {name: value.copy() for name, value in inputs.items()}

    def model_info(self):
        spec = TensorSpec("x", "float32", (-1, 3), labels=("a", "b"), label_type="axis")
        return ModelInfo("echo", "tensors", "returns its inputs", (spec,), (spec,))


class Slow(NodeService):
    kinds = frozenset({"mlmodel"})

    def __init__(self) -> None:
        self.release = threading.Event()

    def infer(self, inputs):
        self.release.wait(10)
        return dict(inputs)


class NoView:
    def newest(self, node, port):
        return None

    def frame(self, source, seq=None):
        return None

    def frame_rate(self, source):
        return 0.0


def _serve(services: dict[str, NodeService], fast: bool = True, **config) -> ServerThread:
    resources = Resources({k: ServedNode(id=k, type="t", service=s) for k, s in services.items()})
    machine = Machine(resources, NoView(), ServeConfig(**config))
    raw = RAW_DECODERS if fast else {}
    return ServerThread(lambda: RpcServer(handlers(machine), raw_decoders=raw), "127.0.0.1:0")


def _values(dtype: str) -> np.ndarray:
    if dtype.startswith("float"):
        info = np.finfo(dtype)
        return np.array([[0, -0.0, info.max, info.tiny], [np.nan, np.inf, -np.inf, 1.5]], dtype)
    info = np.iinfo(dtype)
    return np.array([[info.min, info.max, 0, 1], [2, 3, info.max - 1, info.min + 1]], dtype)


@pytest.mark.parametrize("fast", [True, False], ids=["raw-bytes-path", "protobuf-path"])
def test_every_viam_dtype_round_trips_bit_exact_through_the_sdk_client(fast):
    tensors = {f"t_{d}": _values(d) for d in VIAM_DTYPES}

    async def scenario(address):
        robot = await RobotClient.at_address(address, robot_options(insecure=True))
        try:
            model = MLModelClient.from_robot(robot=robot, name="echo")
            return await model.infer(tensors), await model.metadata()
        finally:
            await robot.close()

    with _serve({"echo": Echo()}, fast=fast) as running:
        outputs, metadata = run_sdk(scenario(str(running.endpoint)))
    for name, value in tensors.items():
        assert outputs[name].dtype == value.dtype, name
        assert outputs[name].tobytes() == value.tobytes(), name
    assert list(metadata.input_info[0].shape) == [-1, 3]
    files = metadata.output_info[0].associated_files
    assert files[0].label_type == mlmodel_pb2.LABEL_TYPE_TENSOR_AXIS


def test_a_full_node_queue_answers_resource_exhausted_and_slow_calls_time_out():
    slow = Slow()

    async def scenario(port):
        channel = Channel("127.0.0.1", port)
        stub = mlmodel_grpc.MLModelServiceStub(channel)
        request = mlmodel_pb2.InferRequest(
            name="slow", input_tensors=to_flat_tensors({"x": np.zeros(2, np.float32)})
        )
        try:
            calls = [asyncio.ensure_future(stub.Infer(request)) for _ in range(2)]
            await asyncio.sleep(0.2)  # the two hold the thread and the queue's one place
            with pytest.raises(GRPCError) as busy:
                await stub.Infer(request)
            done = await asyncio.gather(*calls, return_exceptions=True)
            return busy.value, done
        finally:
            slow.release.set()
            channel.close()

    with _serve({"slow": slow}, threads_per_node=1, queue_per_node=1, request_timeout_s=0.5) as r:
        busy, done = asyncio.run(scenario(r.endpoint.port))
    assert busy.status == Status.RESOURCE_EXHAUSTED
    assert "node 'slow'" in busy.message
    assert [d.status for d in done] == [Status.DEADLINE_EXCEEDED] * 2
    assert "infer on node 'slow' took longer than 0.5 s" in done[0].message


def test_tapped_messages_survive_the_trip_to_the_server():
    frame = Frame(image=np.arange(24, dtype=np.uint8).reshape(2, 4, 3), seq=7, source="cam")
    node, port, back = decode_tapped(encode_tapped("cam", "frames", frame))
    assert (node, port) == ("cam", "frames")
    assert isinstance(back, Frame)
    assert back.seq == 7
    assert back.source == "cam"
    np.testing.assert_array_equal(back.image, frame.image)


def test_sessions_start_beat_and_expire_as_the_sdk_expects():
    from viam.gen.robot.v1 import robot_grpc, robot_pb2

    async def scenario(port):
        channel = Channel("127.0.0.1", port)
        robot = robot_grpc.RobotServiceStub(channel)
        try:
            started = await robot.StartSession(robot_pb2.StartSessionRequest())
            await robot.SendSessionHeartbeat(robot_pb2.SendSessionHeartbeatRequest(id=started.id))
            listed = await robot.GetSessions(robot_pb2.GetSessionsRequest())
            resumed = await robot.StartSession(robot_pb2.StartSessionRequest(resume=started.id))
            with pytest.raises(GRPCError) as expired:
                await robot.SendSessionHeartbeat(
                    robot_pb2.SendSessionHeartbeatRequest(id="not-a-session")
                )
            return started, listed, resumed, expired.value
        finally:
            channel.close()

    with _serve({"echo": Echo()}) as running:
        started, listed, resumed, expired = asyncio.run(scenario(running.endpoint.port))
    assert started.id
    assert started.heartbeat_window.ToTimedelta().total_seconds() == 2.0
    assert [s.id for s in listed.sessions] == [started.id]
    assert resumed.id == started.id
    # the SDK resets its session on exactly this status and message
    assert expired.status == Status.INVALID_ARGUMENT
    assert expired.message == "SESSION_EXPIRED"

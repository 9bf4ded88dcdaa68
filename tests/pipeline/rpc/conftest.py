"""A tiny machine for the rpc tests: Viam's RobotService answering ResourceNames."""

from __future__ import annotations

from typing import Any

from viam.gen.common.v1 import common_pb2
from viam.gen.robot.v1 import robot_grpc, robot_pb2

RESOURCE = common_pb2.ResourceName(namespace="rdk", type="service", subtype="vision", name="x")


class TinyRobot(robot_grpc.UnimplementedRobotServiceBase):
    async def ResourceNames(self, stream: Any) -> None:
        await stream.recv_message()
        await stream.send_message(robot_pb2.ResourceNamesResponse(resources=[RESOURCE]))

    async def Log(self, stream: Any) -> None:
        await stream.recv_message()
        await stream.send_message(robot_pb2.LogResponse())


def robot_options(**dial: Any) -> Any:
    """RobotClient options for a direct (no WebRTC) dial with no background tasks."""
    from viam.robot.client import RobotClient
    from viam.rpc.dial import DialOptions

    api_key = dial.pop("api_key", None)
    if api_key is not None:
        options = RobotClient.Options.with_api_key(api_key=api_key[1], api_key_id=api_key[0])
        options.dial_options.disable_webrtc = True
        for name, value in dial.items():
            setattr(options.dial_options, name, value)
    else:
        options = RobotClient.Options(dial_options=DialOptions(disable_webrtc=True, **dial))
    options.disable_sessions = True
    options.check_connection_interval = 0
    options.attempt_reconnect_interval = 0
    return options


class ServerThread:
    """An RpcServer on its own event loop in a thread.

    The SDK probes TLS with a blocking handshake inside its coroutine, so a server on the
    client's own loop would never answer it.
    """

    def __init__(self, make_server: Any, *start_args: Any, **start_kwargs: Any) -> None:
        import asyncio
        import threading

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

        async def start() -> Any:
            self.server = make_server()
            return await self.server.start(*start_args, **start_kwargs)

        self.endpoint = asyncio.run_coroutine_threadsafe(start(), self._loop).result(10)

    def __enter__(self) -> ServerThread:
        return self

    def __exit__(self, *exc: object) -> None:
        import asyncio

        asyncio.run_coroutine_threadsafe(self.server.stop(1.0), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def run_sdk(coroutine: Any) -> Any:
    """``asyncio.run`` for code that uses the Viam SDK client.

    The SDK's authenticated channel leaves a socket for the garbage collector after
    ``machine.close()``; collect it here, where its ResourceWarning is expected.
    """
    import asyncio
    import gc
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            return asyncio.run(coroutine)
        finally:
            gc.collect()

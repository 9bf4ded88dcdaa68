"""``pipeline cloud serve --workers ray://...``: cloud inference on replicas that are Ray actors
on the two-node loopback cluster, through the real client: the local pool's answers, requests
spread over the replicas, a replica killed mid-request, autoscaling by queue depth."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from pipeline.rpc.flat_tensors import from_flat_tensors

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.timeout(120),
]

pytest.importorskip("sqlalchemy", reason="the cloud extra is not installed")


@pytest.fixture(scope="module")
def ray_cloud(ray_cluster: Any) -> Iterator[SimpleNamespace]:
    """The cloud server on the Ray cluster (Ray Client): model ``blazeface`` with two fixed
    replicas, ``burst`` (the same file) with one that may grow to two, ``fragile`` with one."""
    from pipeline_cloud.blobs import BlobStore
    from pipeline_cloud.registry import Registry, params_from_catalog
    from pipeline_cloud.store import UploadMeta
    from pipeline_nodes.inference.models.store import resolve_model
    from tests.pipeline_cloud.conftest import CloudServer

    data = Path(tempfile.mkdtemp(prefix="pipeline-cloud-ray-"))
    server = CloudServer(
        data,
        None,
        tls=False,
        workers=ray_cluster.client_address,  # type: ignore[arg-type]
        extra_args=(
            "--replicas", "2", "--model-replicas", "burst=1:2", "--model-replicas", "fragile=1",
            "--scale-up-queue", "1", "--scale-down-after", "1",
        ),
    )  # fmt: skip
    server.start(timeout_s=90)
    try:
        org_id, _, key_id, key = server.org_with_key("ray")
        store = server.store()
        registry = Registry(store.sessions, BlobStore(data / "blobs"))
        model = Path(resolve_model("face_short_range"))
        params = params_from_catalog("face_short_range")
        for name in ("blazeface", "burst", "fragile"):
            registry.create_version(
                org_id, name, "object_detection", model.name, model.read_bytes(), "1",
                run_params=params,
            )  # fmt: skip
        astronaut = cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR)
        image_id, _ = store.upload(
            org_id,
            UploadMeta(file_ext=".jpg", mime_type="image/jpeg"),
            cv2.imencode(".jpg", astronaut)[1].tobytes(),
        )
        image_path = store.blob_path(org_id, image_id)
        store.sessions.kw["bind"].dispose()
        yield SimpleNamespace(
            server=server, org=org_id, key_id=key_id, key=key, image=image_id, model=model,
            params=params, data=data, image_path=image_path,
        )  # fmt: skip
    finally:
        server.stop()


def with_client(cloud: SimpleNamespace, body: Callable[[Any], Awaitable[Any]]) -> Any:
    from pipeline_cloud.client import CloudClient, Credentials

    async def main() -> Any:
        creds = Credentials(cloud.server.address, cloud.key_id, cloud.key, insecure=True)
        async with CloudClient(creds) as client:
            return await body(client)

    return asyncio.run(main())


async def infer(client: Any, cloud: SimpleNamespace, model: str = "blazeface") -> Any:
    from viam.gen.app.mlinference.v1 import ml_inference_grpc, ml_inference_pb2

    request = ml_inference_pb2.GetInferenceRequest(
        registry_item_id=f"{cloud.org}:{model}", registry_item_version="1",
        binary_data_id=cloud.image, organization_id=cloud.org,
    )  # fmt: skip
    stub = ml_inference_grpc.MLInferenceServiceStub(client.channel)
    return await client.call(lambda md: stub.GetInference(request, metadata=md))


async def load(
    client: Any, cloud: SimpleNamespace, clients: int, until: Callable[[], Awaitable[bool]],
    model: str = "blazeface", timeout_s: float = 60.0,
) -> list[Any]:  # fmt: skip
    """``clients`` request loops on ``model`` until ``until()`` is true; every reply."""
    replies: list[Any] = []
    done = asyncio.Event()

    async def one() -> None:
        while not done.is_set():
            replies.append(await infer(client, cloud, model))

    loops = [asyncio.create_task(one()) for _ in range(clients)]
    deadline = time.monotonic() + timeout_s
    try:
        while not await until():
            assert time.monotonic() < deadline, "the condition never came"
            for task in loops:
                if task.done():
                    task.result()  # a failed request fails the test here
            await asyncio.sleep(0.05)
    finally:
        done.set()
    await asyncio.gather(*loops)
    return replies


def test_ray_replicas_answer_exactly_what_the_local_pool_answers(ray_cloud):
    from pipeline_cloud.inference import Job, run_job

    reply = with_client(ray_cloud, lambda c: infer(c, ray_cloud))
    local = run_job(
        Job("v", "object_detection", "tflite", str(ray_cloud.model), ray_cloud.params,
            str(ray_cloud.image_path))
    )  # fmt: skip
    tensors = from_flat_tensors(reply.output_tensors)
    assert sorted(tensors) == sorted(local.outputs) == ["classificators", "regressors"]
    for name, array in local.outputs.items():
        np.testing.assert_array_equal(tensors[name], array)
    boxes = [
        (b.label, (b.x_min_normalized, b.y_min_normalized, b.x_max_normalized,
                   b.y_max_normalized), b.confidence)
        for b in reply.annotations.bboxes
    ]  # fmt: skip
    assert [b[0] for b in boxes] == [b[0] for b in local.boxes] == ["face"]
    np.testing.assert_array_equal([b[1] for b in boxes], [b[1] for b in local.boxes])
    np.testing.assert_array_equal([b[2] for b in boxes], [b[2] for b in local.boxes])


def _status_of(cloud: SimpleNamespace) -> Callable[[Any, str], Awaitable[dict[str, Any]]]:
    async def get(client: Any, model: str = "blazeface") -> dict[str, Any]:
        reply = await client.admin("InferenceStatus")
        found: dict[str, Any] = reply["models"].get(f"{cloud.org}:{model}@1", {})
        return {**found, "pool": reply}

    return get


def test_two_replicas_on_the_two_ray_nodes_both_serve(ray_cloud, capsys):
    get = _status_of(ray_cloud)

    async def body(client: Any) -> dict[str, Any]:
        async def both_served() -> bool:
            s = await get(client)
            return len(s.get("replica", [])) == 2 and all(r["served"] >= 5 for r in s["replica"])

        await load(client, ray_cloud, 4, both_served)
        return await get(client)

    s = with_client(ray_cloud, body)
    assert s["replicas"] == 2 and s["min_replicas"] == 2 and s["max_replicas"] == 2
    replicas = s["replica"]
    assert len({r["pid"] for r in replicas}) == 2
    assert len({r["actor"] for r in replicas}) == 2
    assert all(int(r["pid"]) != ray_cloud.server.proc.pid for r in replicas)
    # Ray's SPREAD strategy put them on different Ray nodes
    assert len({r["node"] for r in replicas}) == 2
    assert s["pool"]["workers"].startswith("ray://")

    # the same through the command line
    from pipeline.cli import main

    code = main(
        ["cloud", "workers", "--address", ray_cloud.server.address, "--key-id",
         ray_cloud.key_id, "--key", ray_cloud.key, "--insecure"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith(f"workers: {s['pool']['workers']}  in flight: 0  replicas lost: ")
    assert f"{ray_cloud.org}:blazeface@1: 2 replicas (2..2, 0 starting), 0 in flight" in out
    for r in replicas:
        assert re.search(rf"replica \d: Ray node \w{{8}} \(\S+\) pid {int(r['pid'])} ", out)


def test_a_replica_killed_mid_request_is_retried_on_another_and_replaced(ray_cloud):
    get = _status_of(ray_cloud)

    async def body(client: Any) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
        before = await get(client)
        lost_before = before["pool"].get("lost", 0)
        killed: list[int] = []

        async def kill_then_replaced() -> bool:
            s = await get(client)
            if not killed:
                busy = [r for r in s.get("replica", []) if r["inflight"] > 0]
                if busy:  # requests in flight on it (running and queued): kill it now
                    killed.append(int(busy[0]["pid"]))
                    os.kill(killed[0], signal.SIGKILL)
                return False
            pids = {int(r["pid"]) for r in s.get("replica", [])}
            return s["pool"]["lost"] > lost_before and len(pids) == 2 and killed[0] not in pids

        replies = await load(client, ray_cloud, 6, kill_then_replaced)
        after = await get(client)
        more = [await infer(client, ray_cloud) for _ in range(4)]
        return replies + more, before, after

    replies, before, after = with_client(ray_cloud, body)
    # every request succeeded (load() fails on the first error), each with the face
    assert replies and all(len(r.annotations.bboxes) == 1 for r in replies)
    assert after["pool"]["lost"] >= before["pool"].get("lost", 0) + 1
    assert after["pool"]["retried"] >= before["pool"].get("retried", 0) + 1
    assert after["replicas"] == 2
    log = "".join(ray_cloud.server.output)
    assert "was lost (" in log and "retried on another" in log


def test_autoscaling_adds_a_replica_under_a_burst_and_removes_it_when_idle(ray_cloud):
    get = _status_of(ray_cloud)

    async def body(client: Any) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        await infer(client, ray_cloud, "burst")
        seen.append(await get(client, "burst"))

        async def grown_and_both_served() -> bool:
            s = await get(client, "burst")
            return s["replicas"] == 2 and all(r["served"] > 0 for r in s["replica"])

        await load(client, ray_cloud, 6, grown_and_both_served, model="burst")
        seen.append(await get(client, "burst"))
        deadline = time.monotonic() + 30
        while (s := await get(client, "burst"))["replicas"] != 1:
            assert time.monotonic() < deadline, s
            await asyncio.sleep(0.1)
        seen.append(s)
        return seen

    first, grown, shrunk = with_client(ray_cloud, body)
    assert first["replicas"] == 1 and first["min_replicas"] == 1 and first["max_replicas"] == 2
    assert grown["replicas"] == 2
    assert shrunk["replicas"] == 1 and shrunk["pending"] == 0
    log = "".join(ray_cloud.server.output)
    assert "burst@1: replica 2 ready" in log
    assert "stopped (idle)" in log


def test_a_request_that_loses_two_replicas_answers_unavailable(ray_cloud):
    from grpclib import GRPCError
    from grpclib.const import Status

    get = _status_of(ray_cloud)

    async def body(client: Any) -> list[Any]:
        await infer(client, ray_cloud, "fragile")
        outcomes: list[Any] = []
        killed: list[int] = []
        done = asyncio.Event()

        async def one() -> None:
            while not done.is_set():
                try:
                    outcomes.append(await infer(client, ray_cloud, "fragile"))
                except GRPCError as exc:
                    outcomes.append(exc)

        loops = [asyncio.create_task(one()) for _ in range(6)]
        deadline = time.monotonic() + 60
        while len(killed) < 2 or not any(isinstance(o, GRPCError) for o in outcomes):
            assert time.monotonic() < deadline, (killed, await get(client, "fragile"))
            for r in (await get(client, "fragile")).get("replica", []):
                # the one replica, then its replacement, each with requests in flight
                if r["inflight"] > 0 and int(r["pid"]) not in killed and len(killed) < 2:
                    killed.append(int(r["pid"]))
                    os.kill(killed[-1], signal.SIGKILL)
            await asyncio.sleep(0.005)
        done.set()
        await asyncio.gather(*loops)
        outcomes.append(await infer(client, ray_cloud, "fragile"))  # a third replica serves
        return outcomes

    outcomes = with_client(ray_cloud, body)
    errors = [o for o in outcomes if isinstance(o, GRPCError)]
    assert errors and all(e.status == Status.UNAVAILABLE for e in errors)
    assert "were lost twice running this request" in str(errors[0].message)
    assert not isinstance(outcomes[-1], GRPCError)

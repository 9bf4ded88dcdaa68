"""A real graph served by `pipeline run --serve`, called with the unmodified Viam SDK."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest
from grpclib import GRPCError, Status
from viam.components.camera import Camera
from viam.media.video import CameraMimeType, ViamImage
from viam.robot.client import RobotClient
from viam.services.mlmodel import MLModelClient
from viam.services.vision import VisionClient

from pipeline.serve.images import decode_image, encode_image
from tests.integration.served import (
    ServedGraph,
    free_port,
    run_sdk,
    sdk_options,
    served_graph_text,
    wait_for_frames,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def machine(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("served")
    graph = tmp / "served.yaml"
    graph.write_text(served_graph_text(tmp))
    address = f"127.0.0.1:{free_port()}"
    sock = str(tmp / "machine.sock")
    served = ServedGraph(graph, "--serve", address, "--unix-socket", sock)
    asyncio.run(wait_for_frames(address))
    served.address, served.socket, served.tmp = address, sock, tmp
    yield served
    code = served.stop()
    assert code == 130, served.output  # stopped by Ctrl-C


async def _connect(address: str, **dial) -> RobotClient:
    return await RobotClient.at_address(address, sdk_options(**dial))


def test_the_readme_snippet_runs_unchanged(machine):
    async def snippet():
        from viam.rpc.dial import DialOptions

        robot = await RobotClient.at_address(
            machine.address,
            RobotClient.Options(dial_options=DialOptions(insecure=True, disable_webrtc=True)),
        )
        try:
            faces = VisionClient.from_robot(robot, "faces")
            detections = await faces.get_detections_from_camera("camera")
            model = MLModelClient.from_robot(robot=robot, name="faces")
            outputs = await model.infer({"input": np.zeros((1, 128, 128, 3), dtype=np.uint8)})
            return detections, outputs
        finally:
            await robot.close()

    detections, outputs = run_sdk(snippet())
    assert isinstance(detections, list)
    assert sorted(outputs) == ["classificators", "regressors"]
    assert outputs["regressors"].shape == (1, 896, 16)
    assert outputs["regressors"].dtype == np.float32


def test_resources_machine_status_and_version(machine):
    async def scenario():
        robot = await _connect(machine.address, insecure=True)
        try:
            names = {(r.type, r.subtype, r.name) for r in robot.resource_names}
            status = await robot.get_machine_status()
            version = await robot.get_version()
            return names, status, version
        finally:
            await robot.close()

    names, status, version = run_sdk(scenario())
    assert names == {
        ("component", "camera", "camera"),
        ("service", "vision", "faces"),
        ("service", "mlmodel", "faces"),
        ("service", "vision", "kind"),
        ("service", "mlmodel", "kind"),
    }
    assert status.state == status.STATE_RUNNING
    assert len(status.resources) == 5
    assert version.platform == "edge-vision-pipeline"


def test_capture_all_detections_equal_what_the_jsonl_sink_wrote_for_that_frame(machine):
    async def scenario():
        robot = await _connect(machine.address, insecure=True)
        try:
            faces = VisionClient.from_robot(robot, "faces")
            for _ in range(100):  # a frame with faces (the sample has them in most frames)
                result = await faces.capture_all_from_camera(
                    "camera", return_image=True, return_detections=True
                )
                if result.detections:
                    return result
                await asyncio.sleep(0.05)
            raise AssertionError("no faces in 100 captures")
        finally:
            await robot.close()

    result = run_sdk(scenario())
    seq = int(result.extra["seq"])
    assert result.extra["source"] == "camera"
    image = decode_image(result.image.data)
    assert image.shape == (360, 640, 3)
    line = None
    deadline = time.monotonic() + 10
    while line is None and time.monotonic() < deadline:
        for text in (machine.tmp / "faces.jsonl").read_text().splitlines():
            record = json.loads(text)
            if record["seq"] == seq:
                line = record
        time.sleep(0.05)
    assert line is not None, f"seq {seq} not in the jsonl"
    written = line["detections"]
    assert len(written) == len(result.detections)
    for det, rec in zip(result.detections, written):
        assert det.class_name == rec["label"]
        assert det.confidence == pytest.approx(rec["confidence"], abs=1e-5)
        box = [
            det.x_min_normalized,
            det.y_min_normalized,
            det.x_max_normalized,
            det.y_max_normalized,
        ]
        assert box == pytest.approx(rec["xyxy"], abs=1e-5)
        assert det.x_min == round(det.x_min_normalized * 640)
        assert det.y_max == round(det.y_max_normalized * 360)


def test_get_detections_on_a_client_image_uses_the_nodes_model_and_preprocessing(machine):
    from pipeline_nodes.inference import load_detector

    async def scenario():
        robot = await _connect(machine.address, insecure=True)
        try:
            camera = Camera.from_robot(robot, "camera")
            images, _ = await camera.get_images()
            frame = decode_image(images[0].data)
            faces = VisionClient.from_robot(robot, "faces")
            png = encode_image(frame, "image/png")
            over_png = await faces.get_detections(ViamImage(png, CameraMimeType.PNG))
            return frame, over_png
        finally:
            await robot.close()

    frame, over_png = run_sdk(scenario())
    with load_detector("face_short_range", num_threads=1, default_minimum_confidence=0.5) as det:
        local = det.detect(frame)
    assert len(over_png) == len(local)
    for remote, box, conf in zip(over_png, local.xyxy, local.confidence):
        assert remote.confidence == pytest.approx(float(conf), abs=1e-6)
        assert remote.x_min_normalized == pytest.approx(float(box[0]), abs=1e-6)
        assert remote.y_max_normalized == pytest.approx(float(box[3]), abs=1e-6)


def test_classifications_properties_and_camera(machine):
    async def scenario():
        robot = await _connect(machine.address, insecure=True)
        try:
            kind = VisionClient.from_robot(robot, "kind")
            faces = VisionClient.from_robot(robot, "faces")
            camera = Camera.from_robot(robot, "camera")
            from_camera = await kind.get_classifications_from_camera("camera", 1)
            images, _ = await camera.get_images()
            on_image = await kind.get_classifications(images[0], 2)
            png_images, _ = await camera.get_images(extra={"mime_type": "image/png"})
            return (
                from_camera,
                on_image,
                await kind.get_properties(),
                await faces.get_properties(),
                await camera.get_properties(),
                images[0],
                png_images[0],
            )
        finally:
            await robot.close()

    from_camera, on_image, kind_props, face_props, cam_props, jpeg, png = run_sdk(scenario())
    assert len(from_camera) == 1
    assert from_camera[0].class_name in ("face", "not_face")
    assert len(on_image) == 2
    assert on_image[0].confidence >= on_image[1].confidence
    assert kind_props.classifications_supported and not kind_props.detections_supported
    assert face_props.detections_supported and not face_props.classifications_supported
    assert not face_props.object_point_clouds_supported
    assert cam_props.intrinsic_parameters.width_px == 640
    assert cam_props.intrinsic_parameters.height_px == 360
    assert cam_props.frame_rate > 0
    assert jpeg.mime_type == CameraMimeType.JPEG and jpeg.data[:2] == b"\xff\xd8"
    assert png.mime_type == CameraMimeType.PNG and png.data[:8] == b"\x89PNG\r\n\x1a\n"
    assert decode_image(png.data).shape == (360, 640, 3)


def test_infer_and_metadata_match_the_model_in_process(machine):
    from pipeline_nodes.inference import load_model

    tensor = np.random.default_rng(3).random((1, 128, 128, 3), dtype=np.float32)

    async def scenario():
        robot = await _connect(machine.address, insecure=True)
        try:
            model = MLModelClient.from_robot(robot=robot, name="faces")
            return await model.infer({"input": tensor}), await model.metadata()
        finally:
            await robot.close()

    outputs, metadata = run_sdk(scenario())
    with load_model("face_short_range", num_threads=1) as local:
        expected = local.infer({"input": tensor})
    for name, value in expected.items():
        assert np.array_equal(outputs[name], value), name
    assert metadata.name == "face_short_range"
    assert metadata.type == "object_detector"
    assert [(t.name, t.data_type, list(t.shape)) for t in metadata.input_info] == [
        ("input", "float32", [1, 128, 128, 3])
    ]
    classes = {t.name: t for t in metadata.output_info}["classificators"]
    assert classes.associated_files[0].name == "labels.txt"


def test_unix_socket_serves_the_sdk(machine):
    async def scenario():
        robot = await RobotClient.at_address(machine.socket, sdk_options())
        try:
            faces = VisionClient.from_robot(robot, "faces")
            return await faces.get_properties()
        finally:
            await robot.close()

    assert run_sdk(scenario()).detections_supported


def test_point_clouds_answer_unimplemented_with_a_message(machine):
    async def scenario():
        robot = await _connect(machine.address, insecure=True)
        try:
            faces = VisionClient.from_robot(robot, "faces")
            with pytest.raises(GRPCError) as clouds:
                await faces.get_object_point_clouds("camera")
            camera = Camera.from_robot(robot, "camera")
            with pytest.raises(GRPCError) as pcd:
                await camera.get_point_cloud()
            return clouds.value, pcd.value
        finally:
            await robot.close()

    clouds, pcd = run_sdk(scenario())
    assert clouds.status == Status.UNIMPLEMENTED and "2D only" in clouds.message
    assert pcd.status == Status.UNIMPLEMENTED and "no depth" in pcd.message

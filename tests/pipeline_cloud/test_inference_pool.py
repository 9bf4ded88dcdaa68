"""The inference workers run a registry model exactly as the graph's detector node does."""

from __future__ import annotations

import asyncio
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from pipeline_cloud.errors import InvalidArgument, ModelFailed
from pipeline_cloud.inference import InferencePool, Job, decode_image
from pipeline_cloud.registry import params_from_catalog
from pipeline_nodes.inference import load_detector


@pytest.fixture(scope="module")
def pool():
    p = InferencePool(2)
    yield p
    p.close()


def _astronaut_jpeg(tmp_path: Path) -> Path:
    bgr = cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR)
    path = tmp_path / "astronaut.jpg"
    path.write_bytes(cv2.imencode(".jpg", bgr)[1].tobytes())
    return path


def test_pool_matches_the_detector_node_on_the_same_image(pool, tmp_path, catalog_model):
    image_path = _astronaut_jpeg(tmp_path)
    job = Job(
        version_id="v1",
        model_type="object_detection",
        framework="tflite",
        model_path=str(catalog_model),
        run_params=params_from_catalog("face_short_range"),
        image_path=str(image_path),
    )
    result = asyncio.run(pool.run(job))
    image = decode_image(image_path.read_bytes(), "astronaut")
    with load_detector("face_short_range", num_threads=1) as detector:
        expected = detector.detect(image)
        raw = detector.run(image).outputs
    assert len(expected) == 1
    assert [b[0] for b in result.boxes] == list(expected.class_names) == ["face"]
    np.testing.assert_allclose([b[1] for b in result.boxes], expected.xyxy, atol=1e-5)
    np.testing.assert_allclose([b[2] for b in result.boxes], expected.confidence, atol=1e-5)
    assert set(result.outputs) == set(raw)
    for name, array in raw.items():
        np.testing.assert_allclose(result.outputs[name], array, atol=1e-4)


def test_pool_reports_undecodable_images_and_broken_models(pool, tmp_path, catalog_model):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image")
    job = Job("v1", "object_detection", "tflite", str(catalog_model), {}, str(junk), "abc")
    with pytest.raises(InvalidArgument, match="'abc' is not an image"):
        asyncio.run(pool.run(job))
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"nope")
    job = Job("v2", "object_detection", "tflite", str(broken), {"decoder": "ssd"},
              str(_astronaut_jpeg(tmp_path)))  # fmt: skip
    with pytest.raises(ModelFailed, match="could not be loaded"):
        asyncio.run(pool.run(job))


def test_a_full_pool_refuses_instead_of_queueing_without_bound(tmp_path, catalog_model):
    from pipeline_cloud.errors import Busy

    image_path = _astronaut_jpeg(tmp_path)
    job = Job("v1", "object_detection", "tflite", str(catalog_model),
              params_from_catalog("face_short_range"), str(image_path))  # fmt: skip
    small = InferencePool(1, max_pending=2)
    try:

        async def three_at_once() -> list[object]:
            return await asyncio.gather(*(small.run(job) for _ in range(3)), return_exceptions=True)

        results = asyncio.run(three_at_once())
        assert [type(r).__name__ for r in results] == ["InferenceResult", "InferenceResult", "Busy"]
        assert isinstance(results[2], Busy)
        assert "2 inferences are already waiting on 1 workers" in str(results[2])
        assert small.pending == 0
        assert len(asyncio.run(small.run(job)).boxes) == 1  # room again
    finally:
        small.close()

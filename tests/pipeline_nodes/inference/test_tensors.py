"""The tensors node: a model's raw outputs by name."""

from __future__ import annotations

import pytest
from photos import photo

from pipeline.testing import run_node
from pipeline_nodes.inference.models.fetch import fetch_models
from pipeline_nodes.inference.models.store import default_models_dir
from pipeline_nodes.inference.tensors import TensorsNode
from pipeline_nodes.transforms import geometry


@pytest.fixture(scope="module", autouse=True)
def models() -> None:
    fetch_models(default_models_dir(), log=lambda *_: None)  # nothing to do when present


def test_tensors_node_sends_raw_outputs_by_name():
    run = run_node(TensorsNode, {"model": "face_short_range"}, {"frames": [photo("astronaut")]})
    tensors = run.sent["tensors"][0]
    assert set(tensors.tensors) == {"regressors", "classificators"}
    assert tensors["regressors"].shape == (1, 896, 16)
    assert tensors.seq == 0


def test_tensors_keep_the_frames_meta_and_chain_the_transforms():
    upstream = {"op": "resize", "src_wh": [1024, 1024], "dst_wh": [512, 512]}
    frame = photo("astronaut").replace(
        meta={"frame_index": 12, "color": "bgr", "transforms": [upstream]}
    )
    (tensors,) = run_node(TensorsNode, {"model": "face_short_range"}, {"frames": [frame]}).sent[
        "tensors"
    ]
    assert tensors.meta["frame_index"] == 12 and "color" not in tensors.meta
    chain = tensors.meta["transforms"]
    assert chain[0] == upstream and chain[-1]["op"] == "letterbox"
    assert geometry.original_wh(chain) == (1024, 1024)

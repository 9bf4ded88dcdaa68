"""The tensors node: a model's raw outputs by name."""

from __future__ import annotations

import pytest
from photos import photo

from nodes.inference.models.fetch import fetch_models
from nodes.inference.models.store import default_models_dir
from nodes.inference.tensors import TensorsNode
from pipeline.testing import run_node


@pytest.fixture(scope="module", autouse=True)
def models() -> None:
    fetch_models(default_models_dir(), log=lambda *_: None)  # nothing to do when present


def test_tensors_node_sends_raw_outputs_by_name():
    run = run_node(TensorsNode, {"model": "face_short_range"}, {"frames": [photo("astronaut")]})
    tensors = run.sent["tensors"][0]
    assert set(tensors.tensors) == {"regressors", "classificators"}
    assert tensors["regressors"].shape == (1, 896, 16)
    assert tensors.seq == 0

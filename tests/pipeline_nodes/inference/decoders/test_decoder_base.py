"""What every decoder shares: outputs by role, the batch axis, label names and thresholds."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline_nodes.inference.decoders.base import (
    DecoderError,
    class_names_for,
    drop_batch,
    select_outputs,
    thresholds_for,
)

OUTPUTS = {"537": np.zeros(1), "scores": np.ones(1), "Identity": np.full(1, 2.0)}


def test_roles_are_found_by_remap_then_name_then_alias():
    found = select_outputs(
        OUTPUTS,
        ("heatmap", "scores", "boxes"),
        decoder="x",
        remap={"537": "heatmap"},
        aliases={"boxes": ("Identity",)},
    )
    assert found["heatmap"] is OUTPUTS["537"]
    assert found["scores"] is OUTPUTS["scores"]
    assert found["boxes"] is OUTPUTS["Identity"]


def test_a_missing_role_names_what_was_tried_and_how_to_fix_it():
    with pytest.raises(DecoderError, match=r"no output tensor for 'boxes'.*remap=") as info:
        select_outputs(OUTPUTS, ("boxes",), decoder="ssd", aliases={"boxes": ("loc",)})
    assert "'loc'" in str(info.value) and "537" in str(info.value)
    assert select_outputs(OUTPUTS, ("boxes",), decoder="ssd", optional=("boxes",)) == {}
    with pytest.raises(DecoderError, match="unknown role 'nope'"):
        select_outputs(OUTPUTS, ("boxes",), decoder="ssd", remap={"537": "nope"})
    with pytest.raises(DecoderError, match="which the model does not have"):
        select_outputs(OUTPUTS, ("boxes",), decoder="ssd", remap={"absent": "boxes"})


def test_drop_batch_takes_one_image_only():
    assert drop_batch(np.zeros((1, 5, 4)), "boxes", 2).shape == (5, 4)
    assert drop_batch(np.zeros((5, 4)), "boxes", 2).shape == (5, 4)
    with pytest.raises(DecoderError, match="a batch of 2"):
        drop_batch(np.zeros((2, 5, 4)), "boxes", 2)
    with pytest.raises(DecoderError, match="expected 2 dimensions"):
        drop_batch(np.zeros(5), "boxes", 2)


def test_class_names_fall_back_to_the_id():
    assert class_names_for(np.array([1, 0, 7]), ("cat", "dog")) == ("dog", "cat", "7")


def test_each_label_gets_its_own_floor_or_the_default():
    floors = thresholds_for(["face", "person", "face"], 0.5, {"person": 0.2})
    np.testing.assert_array_equal(floors, np.array([0.5, 0.2, 0.5], np.float32))
    assert thresholds_for([], 0.5, None).shape == (0,)

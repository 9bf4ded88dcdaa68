"""Tests of make_decoder: kinds, options from YAML, and its error messages."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline_nodes.inference.decoders import (
    DECODER_KINDS,
    BlazeFaceDecoder,
    CenterFaceDecoder,
    ClassificationDecoder,
    DecoderError,
    SsdAnchorOptions,
    SSDDecoder,
    YOLODecoder,
    make_decoder,
)


@pytest.mark.parametrize(
    ("kind", "options", "cls"),
    [
        # post-processed SSD needs its box order
        ("ssd", {"box_order": "yxyx"}, SSDDecoder),
        # defaults are the short-range face model
        ("blazeface", {}, BlazeFaceDecoder),
        ("centerface", {"min_confidence": 0.3}, CenterFaceDecoder),
        ("yolo", {"labels": ["a", "b"]}, YOLODecoder),
        ("classification", {"top_k": 3}, ClassificationDecoder),
    ],
)
def test_make_decoder_builds_each_kind(kind, options, cls):
    decoder = make_decoder(kind, **options)
    assert isinstance(decoder, cls)
    assert decoder.kind == kind


def test_kinds_are_listed():
    assert DECODER_KINDS == ("ssd", "blazeface", "centerface", "yolo", "classification")


def test_unknown_kind_lists_the_kinds():
    with pytest.raises(
        DecoderError, match="unknown decoder kind 'retinanet'; kinds: ssd, blazeface"
    ):
        make_decoder("retinanet")


def test_unknown_option_lists_the_options():
    with pytest.raises(
        DecoderError, match=r"unknown option\(s\) 'min_score'; options: .*min_confidence"
    ):
        make_decoder("blazeface", min_score=0.5)


def test_yaml_lists_become_tuples():
    decoder = make_decoder("ssd", box_order=[1, 0, 3, 2], labels=["person"])
    assert isinstance(decoder, SSDDecoder)
    assert decoder.config.box_order == (1, 0, 3, 2)
    assert decoder.config.labels == ("person",)


def test_blazeface_anchors_from_a_mapping():
    decoder = make_decoder(
        "blazeface",
        anchors={"input_wh": [192, 192], "strides": [4], "interpolated_scale_aspect_ratio": 0},
    )
    assert isinstance(decoder, BlazeFaceDecoder)
    assert decoder.config.anchor_options == SsdAnchorOptions(
        input_wh=(192, 192), strides=(4,), interpolated_scale_aspect_ratio=0.0
    )
    assert decoder.anchors((192, 192)).shape == (2304, 4)


def test_invalid_values_become_decoder_errors():
    with pytest.raises(DecoderError, match="blazeface decoder: strides"):
        make_decoder("blazeface", anchors={"input_wh": [128, 128], "strides": []})
    with pytest.raises(DecoderError, match="box_order"):
        make_decoder("ssd", box_order="xy")


def test_a_made_decoder_decodes():
    decoder = make_decoder("classification", labels=["no", "yes"])
    result = decoder.decode({"p": np.array([[0.2, 0.8]], np.float32)}, (1, 1))
    assert result.class_names == ("yes", "no")

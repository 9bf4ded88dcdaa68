"""The wire codec: bodies and envelopes."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import Classifications, Detections, Frame, Tensors
from pipeline.transport import codec


def roundtrip(message, where="i"):
    arrays = [
        (n, a, "i", np.ascontiguousarray(a).tobytes()) for n, a in message.wire_arrays().items()
    ]
    body = codec.pack_body(message, arrays)
    return codec.decode_body(body, lambda *a: None)


@pytest.mark.parametrize(
    "message",
    [
        Frame(
            image=np.arange(24, dtype=np.uint8).reshape(2, 4, 3),
            seq=3,
            source="cam",
            t_capture_ns=5,
            meta={"k": [1, 2]},
        ),
        Detections(
            seq=9,
            xyxy=[[0.1, 0.2, 0.3, 0.4]],
            confidence=[0.5],
            class_id=[2],
            class_names=["person"],
            keypoints=np.zeros((1, 6, 2)),
            image_wh=(640, 480),
        ),
        Classifications(
            seq=1, class_names=["face", "not_face"], confidence=[0.9, 0.1], class_id=[1, 0]
        ),
        Tensors(seq=2, tensors={"b": np.ones((2, 2), np.float32), "a": np.zeros(3, np.int64)}),
    ],
    ids=["frame", "detections", "classifications", "tensors"],
)
def test_codec_roundtrip_keeps_every_field(message):
    back = roundtrip(message)
    assert type(back) is type(message)
    assert (back.seq, back.source, back.t_capture_ns) == (
        message.seq,
        message.source,
        message.t_capture_ns,
    )
    assert dict(back.meta) == dict(message.meta)
    assert back.wire_fields() == message.wire_fields()
    for (name, a), (name_b, b) in zip(message.wire_arrays().items(), back.wire_arrays().items()):
        assert name == name_b
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
        assert not b.flags.writeable


def test_envelope_roundtrip():
    env = codec.envelope(codec.MSG, 7, 2, 123)
    assert codec.unpack_envelope(env) == (codec.MSG, 7, 2, 123)

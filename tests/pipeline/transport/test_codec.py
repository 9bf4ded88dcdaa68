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


def _assert_same_message(back, message):
    """``back`` (decoded) carries every field and array of ``message``."""
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
    _assert_same_message(back, message)
    assert not any(b.flags.writeable for b in back.wire_arrays().values())


def test_envelope_roundtrip():
    env = codec.envelope(codec.MSG, 7, 2, 123)
    assert codec.unpack_envelope(env) == (codec.MSG, 7, 2, 123)


def _shm_roundtrip(message, segments):
    """Pack with every array in 'shared memory' (a dict of named buffers) and decode."""
    arrays = [(n, a, "s", (f"seg-{n}", 0)) for n, a in message.wire_arrays().items()]
    for n, a in message.wire_arrays().items():
        segments[f"seg-{n}"] = np.ascontiguousarray(a)

    def view(name, offset, shape, dtype):
        assert offset == 0
        out = segments[name].view(dtype).reshape(shape)
        out.flags.writeable = False
        return out

    body = codec.pack_body(message, arrays)
    return body, codec.decode_body(body, view)


@pytest.mark.parametrize(
    "message",
    [
        Frame(image=np.arange(24, dtype=np.uint8).reshape(2, 4, 3), seq=3, t_capture_ns=5),
        Frame(
            image=np.zeros((4, 6), np.uint8),
            seq=-1,
            source="cam",
            t_capture_ns=2**62,
            meta={"resize": [1, 2], "color": "gray"},
        ),
        Tensors(seq=2, tensors={"b": np.ones((2, 2), np.float32), "a": np.zeros(3, np.int64)}),
    ],
    ids=["frame", "frame-with-meta", "tensors"],
)
def test_the_short_form_round_trips_messages_whose_arrays_are_in_shared_memory(message):
    body, back = _shm_roundtrip(message, {})
    assert body[0] == codec.SHORT  # not msgpack: the fast same-host form
    _assert_same_message(back, message)


def test_each_short_form_message_gets_its_own_meta_even_when_the_layout_is_cached():
    segments: dict[str, np.ndarray] = {}
    frame = Frame(image=np.zeros((2, 2), np.uint8), meta={"k": [1]})
    _, first = _shm_roundtrip(frame, segments)
    _, second = _shm_roundtrip(frame, segments)
    assert first.meta == second.meta == {"k": [1]}
    assert first.meta is not second.meta and first.meta["k"] is not second.meta["k"]
    _, bare = _shm_roundtrip(Frame(image=np.zeros((2, 2), np.uint8)), segments)
    assert bare.meta == {} and bare.meta is not _shm_roundtrip(frame, segments)[1].meta


def test_inline_frames_and_out_of_range_seqs_keep_the_msgpack_form():
    small = Frame(image=np.zeros((2, 2), np.uint8), seq=2**63)
    body, back = _shm_roundtrip(small, {})
    assert body[0] != codec.SHORT and back.seq == 2**63
    inline = codec.pack_body(small, [("image", small.image, "i", small.image.tobytes())])
    assert inline[0] != codec.SHORT


def test_the_layout_cache_is_bounded():
    segments: dict[str, np.ndarray] = {}
    for i in range(codec._MAX_LAYOUTS + 10):
        _shm_roundtrip(Frame(image=np.zeros((1, i + 1), np.uint8)), segments)
    assert 0 < len(codec._LAYOUTS) <= codec._MAX_LAYOUTS


def test_the_senders_cached_layout_is_only_reused_for_the_same_slot_shape_and_source():
    segments: dict[str, np.ndarray] = {}
    seen = []
    for source, shape, seq in [
        ("cam", (2, 3), 1),
        ("cam", (2, 3), 2),  # from the cache: only seq differs
        ("cam2", (2, 3), 3),
        ("cam", (3, 2), 4),
        ("cam", (2, 3, 1), 5),
    ]:
        frame = Frame(image=np.zeros(shape, np.uint8), seq=seq, source=source, t_capture_ns=seq)
        body, back = _shm_roundtrip(frame, segments)
        assert (back.seq, back.source, back.image.shape) == (seq, source, shape)
        seen.append(body[codec._SHORT_SIZE :])
    assert seen[0] == seen[1]
    assert len(set(seen)) == 4
    for i in range(codec._MAX_LAYOUTS + 10):
        _shm_roundtrip(Frame(image=np.zeros((1, 1), np.uint8), source=f"s{i}"), segments)
    assert 0 < len(codec._PACKED) <= codec._MAX_LAYOUTS


def test_a_short_form_frame_is_a_whole_frame():
    frame = Frame(image=np.ones((3, 4, 3), np.uint8), seq=7, source="cam", t_capture_ns=9)
    _, back = _shm_roundtrip(frame, {})
    assert type(back) is Frame
    assert (back.width, back.height) == (4, 3)
    assert back.meta == {} and back.wire_fields() == {}
    with pytest.raises(AttributeError):  # still frozen
        back.seq = 8
    assert repr(back).startswith("Frame(seq=7, t_capture_ns=9, source='cam', meta={}")

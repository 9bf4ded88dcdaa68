"""Messages, the wire codec, and shared-memory slots."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import Classifications, Detections, Frame, Tensors
from pipeline.transport import codec
from pipeline.transport.shm import SHM_DIR, ShmReader, SlotPool


def roundtrip(message, where="i"):
    arrays = [
        (n, a, "i", np.ascontiguousarray(a).tobytes()) for n, a in message.wire_arrays().items()
    ]
    body = codec.pack_body(message, arrays)
    return codec.decode_body(body, lambda *a: None)


def test_detections_validate_shapes():
    with pytest.raises(ValueError, match=r"xyxy must have shape \(N, 4\)"):
        Detections(xyxy=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="confidence has 1 entries for 2 boxes"):
        Detections(xyxy=np.zeros((2, 4)), confidence=[0.5], class_id=[0, 0])


def test_detections_pixels_and_where():
    d = Detections(
        xyxy=[[0.0, 0.5, 0.5, 1.0], [0.1, 0.1, 0.2, 0.2]],
        confidence=[0.9, 0.1],
        class_id=[1, 2],
        class_names=["a", "b"],
        image_wh=(200, 100),
    )
    assert d.pixels().tolist() == [[0, 50, 100, 100], [20, 10, 40, 20]]
    kept = d.where(d.confidence > 0.5)
    assert len(kept) == 1 and kept.class_names == ("a",)
    with pytest.raises(ValueError, match="needs image_wh"):
        Detections().pixels()


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


def test_slot_pool_reuses_released_slots_and_grows_for_bigger_frames():
    pool = SlotPool("pipeline-test-pool", max_slots=2)
    try:
        a = pool.acquire(1000)
        b = pool.acquire(1000)
        assert a is not None and b is not None and a.name != b.name
        assert pool.acquire(10) is None  # both held
        a.refs = 0
        again = pool.acquire(500)
        assert again is a  # reused, no new segment
        b.refs = 0
        big = pool.acquire(1 << 20)
        assert big is not None and big.size >= 1 << 20 and big.name != b.name
        assert not (SHM_DIR / b.name).exists()  # the small one it replaced is unlinked
    finally:
        names = [s.name for s in pool.slots]
        pool.close()
    assert not any((SHM_DIR / n).exists() for n in names)


def test_reader_views_a_producer_slot_without_copy_and_read_only():
    pool = SlotPool("pipeline-test-reader", max_slots=1)
    reader = ShmReader()
    try:
        slot = pool.acquire(4 * 6)
        view = slot.view((2, 3), np.dtype(np.float32))
        view[:] = [[1, 2, 3], [4, 5, 6]]
        seen = reader.view(slot.name, (2, 3), np.dtype(np.float32))
        assert seen.tolist() == [[1, 2, 3], [4, 5, 6]]
        assert not seen.flags.writeable
        view[0, 0] = 42  # the consumer sees the producer's memory itself
        assert seen[0, 0] == 42
        with pytest.raises(ValueError, match="read-only"):
            seen[0, 0] = 1
    finally:
        del seen, view
        reader.close()
        pool.close()

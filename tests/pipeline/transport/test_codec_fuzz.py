"""Fuzzing the wire decoder: whatever arrives on an edge, the receiver gets a message or a
``MalformedMessage`` (or the ``TransportError`` of a refused segment), never another
exception, and never a read of a file that is not one of its run's segments.

Random bytes, real messages with bytes flipped, inserted and cut, and hand-built bodies whose
every entry may be hostile (paths as segment names, object dtypes, huge shapes, negative
offsets). The budget is bounded and the runs are derandomized, so CI sees the same cases
every time.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import Classifications, Detections, Frame, Message, Tensors
from pipeline.errors import TransportError
from pipeline.transport import codec
from pipeline.transport.shm import ShmReader, SlotPool

FUZZ = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,  # the same cases on every run: CI stays deterministic
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
RUN_PREFIX = "pipeline-fuzz-run"


class RunView:
    """A receiver's view of its run's segments, as an edge builds it: only names of its own
    run, only arrays that fit in the segment. Records every name it was asked for."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.reader = ShmReader()
        self.asked: list[str] = []

    def __call__(
        self, name: str, offset: int, shape: tuple[int, ...], dtype: np.dtype
    ) -> np.ndarray:
        self.asked.append(name)
        if not name.startswith(self.prefix + "-"):
            raise TransportError(f"segment {name!r} is not this run's")
        flat = self.reader.view(name, (0,), np.dtype(np.uint8)).base
        size = len(memoryview(flat)) if flat is not None else 0
        nbytes = math.prod(shape) * dtype.itemsize
        if offset + nbytes > size:
            raise TransportError(f"an array of {nbytes} bytes at {offset} overruns {name!r}")
        whole = self.reader.view(name, (size,), np.dtype(np.uint8))
        return whole[offset : offset + nbytes].view(dtype).reshape(shape)


@pytest.fixture(scope="module")
def segment() -> Iterator[str]:
    pool = SlotPool(RUN_PREFIX, max_slots=1)
    slot = pool.acquire(64 * 48 * 3)
    assert slot is not None
    slot.array[:] = 7
    yield slot.name
    pool.close()


def real_bodies(segment: str) -> list[bytes]:
    """Well-formed bodies of every message type, with inline, shared-memory and frame arrays."""
    frame = Frame(image=np.zeros((48, 64, 3), np.uint8), seq=3, source="cam", meta={"k": [1]})
    dets = Detections(
        xyxy=[[0.1, 0.2, 0.3, 0.4]], confidence=[0.9], class_id=[1], class_names=["a"]
    )
    classes = Classifications(class_names=["x", "y"], confidence=[0.7, 0.2], class_id=[3, 4])
    tensors = Tensors(tensors={"t": np.arange(6, dtype=np.float32).reshape(2, 3)})
    bodies = [
        codec.pack_body(frame, [("image", frame.image, "s", (segment, 0))]),
        codec.pack_body(frame, [("image", frame.image, "b", 1)]),
    ]
    for message in (dets, classes, tensors):
        arrays = [(n, a, "i", a.tobytes()) for n, a in message.wire_arrays().items()]
        bodies.append(codec.pack_body(message, arrays))
    return bodies


def decode(body: bytes, view: RunView) -> Message | None:
    """Decode as an edge does; None for a refused message. Any other exception fails."""
    frame = np.zeros(48 * 64 * 3, np.uint8).data
    error: Exception
    try:
        return codec.decode_body(body, view, [b"head", frame])
    except codec.MalformedMessage as exc:
        error = exc
    except TransportError as exc:  # a segment the view refused (not its run's, too small)
        error = exc
        assert "segment" in str(error) or "overruns" in str(error)
    assert str(error)  # says what was wrong
    return None


def check_reads(view: RunView) -> None:
    for name in view.asked:
        assert "/" not in name
        assert ".." not in name


@FUZZ
@given(data=st.binary(max_size=64))
def test_envelope_of_any_bytes_is_read_or_refused(data: bytes):
    try:
        kind, n, dropped, _t = codec.unpack_envelope(data)
    except codec.MalformedMessage:
        return
    assert kind in (codec.MSG, codec.EOS)
    assert n >= 0
    assert dropped >= 0


def test_short_envelopes_are_refused_by_name():
    for data in (b"", b"M", b"\x00" * (codec.ENVELOPE_SIZE - 1)):
        with pytest.raises(codec.MalformedMessage, match="shorter than its"):
            codec.unpack_envelope(data)
    with pytest.raises(codec.MalformedMessage, match="unknown message kind"):
        codec.unpack_envelope(b"X" + b"\x00" * codec.ENVELOPE_SIZE)


@FUZZ
@given(body=st.binary(max_size=512))
def test_body_of_any_bytes_is_a_message_or_refused(body: bytes, segment: str):
    view = RunView(RUN_PREFIX)
    decode(body, view)
    check_reads(view)


@FUZZ
@given(
    which=st.integers(0, 4),
    edits=st.lists(
        st.tuples(
            st.sampled_from(["flip", "insert", "cut"]),
            st.integers(0, 10_000),
            st.binary(min_size=1, max_size=1),
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_mutated_real_messages_are_messages_or_refused(which, edits, segment: str):
    body = bytearray(real_bodies(segment)[which])
    for op, at, byte in edits:
        at %= max(len(body), 1)
        if op == "flip" and body:
            body[at] ^= byte[0] or 1
        elif op == "insert":
            body[at:at] = byte
        elif op == "cut":
            del body[at:]
    view = RunView(RUN_PREFIX)
    message = decode(bytes(body), view)
    check_reads(view)
    if isinstance(message, Frame):
        assert message.image.ndim in (2, 3)
        assert not message.image.flags.writeable  # received arrays are read-only


def test_unmutated_real_messages_decode(segment: str):
    view = RunView(RUN_PREFIX)
    messages = [decode(body, view) for body in real_bodies(segment)]
    assert [type(m).__name__ for m in messages] == [
        "Frame",
        "Frame",
        "Detections",
        "Classifications",
        "Tensors",
    ]
    assert int(messages[0].image[0, 0, 0]) == 7  # read from the run's segment
    assert view.asked == [segment]


HOSTILE_NAMES = [
    "../../etc/passwd",
    "/etc/passwd",
    "pipeline-fuzz-run-0-1/../../../etc/passwd",
    "..",
    ".hidden",
    "",
    "a" * 300,
    "pipeline-other-run-0-1",  # well-formed, but another run's: the view refuses it
]
names = st.one_of(st.sampled_from(HOSTILE_NAMES), st.text(max_size=20), st.integers(-9, 9))
dtype_codes = st.one_of(
    st.sampled_from(["|u1", "<f4", "<i4", "|b1", "<U4", "|O", "|V8", "(3,)<f8", "<M8[s]", "x"]),
    st.text(max_size=8),
    st.integers(-9, 9),
)
shapes = st.one_of(
    st.lists(st.integers(-2, 64), max_size=4),
    st.lists(st.integers(0, 2**62), min_size=1, max_size=3),
    st.just([1] * 40),
    st.text(max_size=4),
)
refs = st.one_of(
    st.tuples(names, st.integers(-(2**63), 2**63 - 1)).map(list),
    st.binary(max_size=64),
    st.integers(-3, 3),
    st.none(),
)
entries = st.one_of(
    st.tuples(
        st.sampled_from(["image", "xyxy", "confidence", "class_id", "t"]),
        dtype_codes,
        shapes,
        st.sampled_from(["s", "i", "b", "x", 1]),
        refs,
    ).map(list),
    st.lists(st.integers(-9, 9), max_size=6),
    st.none(),
)
ints = st.integers(-(2**63), 2**64 - 1)  # what msgpack can carry
scalars = st.one_of(ints, st.text(max_size=8), st.none(), st.floats(), st.binary(max_size=4))
bodies = st.fixed_dictionaries(
    {
        "k": st.one_of(
            st.sampled_from(["frame", "detections", "classifications", "tensors", "nope"]), scalars
        ),
        "q": st.one_of(st.integers(-5, 2**63), scalars),
        "c": st.one_of(st.integers(0, 2**63), scalars),
        "s": st.one_of(st.text(max_size=8), scalars),
        "m": st.one_of(st.dictionaries(st.text(max_size=4), scalars, max_size=3), scalars),
        "f": st.one_of(
            st.fixed_dictionaries(
                {},
                optional={
                    "class_names": st.one_of(st.lists(scalars, max_size=3), scalars),
                    "image_wh": st.one_of(st.lists(st.integers(-1, 9), max_size=3), scalars),
                    "order": st.one_of(st.lists(st.text(max_size=3), max_size=3), scalars),
                    "extra": scalars,
                },
            ),
            scalars,
        ),
        "a": st.one_of(st.lists(entries, max_size=4), scalars),
    }
)


@FUZZ
@given(body=bodies)
def test_hostile_bodies_are_messages_or_refused_and_never_read_another_file(
    body: dict, segment: str
):
    view = RunView(RUN_PREFIX)
    decode(msgpack.packb(body, use_bin_type=True), view)
    check_reads(view)


@pytest.mark.parametrize("name", HOSTILE_NAMES[:-1])
def test_a_path_as_segment_name_is_refused_before_any_file_is_opened(name: str, segment: str):
    frame = Frame(image=np.zeros((4, 4), np.uint8))
    body = codec.pack_body(frame, [("image", frame.image, "s", (name, 0))])
    view = RunView(RUN_PREFIX)
    with pytest.raises(codec.MalformedMessage, match="not a shared-memory segment name"):
        codec.decode_body(body, view)
    assert view.asked == []


def test_a_receiver_without_shared_memory_refuses_references(segment: str):
    frame = Frame(image=np.zeros((48, 64, 3), np.uint8))
    body = codec.pack_body(frame, [("image", frame.image, "s", (segment, 0))])
    with pytest.raises(codec.MalformedMessage, match="does not use"):
        codec.decode_body(body, None)


@pytest.mark.parametrize("code", ["|O", "|V8", "(3,)<f8", "<U0"])
def test_arrays_of_objects_records_or_subarrays_are_refused(code: str):
    body = msgpack.packb(
        {
            "k": "tensors",
            "q": 0,
            "c": 0,
            "s": "",
            "m": {},
            "f": {},
            "a": [["t", code, [1], "i", b"\0" * 24]],
        },
        use_bin_type=True,
    )
    with pytest.raises(codec.MalformedMessage):
        codec.decode_body(body, None)


def short_body(layout: object, rest: bytes = b"", seq: int = 1, size: int | None = None) -> bytes:
    """A short-form body (``codec.SHORT``) around any layout, as a hostile sender builds it."""
    packed = msgpack.packb(layout, use_bin_type=True)
    length = len(packed) if size is None else size
    return codec._SHORT_HEAD.pack(codec.SHORT, seq, 5, length) + packed + rest


short_layouts = st.one_of(
    st.tuples(
        st.one_of(st.sampled_from(["frame", "tensors", "detections", "nope"]), scalars),
        st.one_of(st.text(max_size=8), scalars),
        st.one_of(
            st.lists(
                st.one_of(
                    st.tuples(
                        st.sampled_from(["image", "t", "xyxy"]), dtype_codes, shapes, names, ints
                    ).map(list),
                    entries,
                ),
                max_size=4,
            ),
            scalars,
        ),
    ).map(list),
    st.lists(scalars, max_size=4),
    scalars,
)
short_rests = st.one_of(
    st.just(b""),
    st.binary(max_size=16),
    st.tuples(
        st.one_of(st.dictionaries(st.text(max_size=4), scalars, max_size=2), scalars),
        st.one_of(st.dictionaries(st.text(max_size=4), scalars, max_size=2), scalars),
    ).map(lambda mf: msgpack.packb(list(mf), use_bin_type=True)),
)


@FUZZ
@given(layout=short_layouts, rest=short_rests, size=st.one_of(st.none(), st.integers(0, 0xFFFF)))
def test_hostile_short_form_bodies_are_messages_or_refused_and_never_read_another_file(
    layout: object, rest: bytes, size: int | None, segment: str
):
    view = RunView(RUN_PREFIX)
    decode(short_body(layout, rest, size=size), view)
    check_reads(view)


def test_a_short_form_body_is_refused_by_name_when_cut_or_not_for_this_edge(segment: str):
    frame = Frame(image=np.zeros((48, 64, 3), np.uint8), seq=4)
    body = codec.pack_body(frame, [("image", frame.image, "s", (segment, 0))])
    assert body[0] == codec.SHORT
    with pytest.raises(codec.MalformedMessage, match="shorter than its"):
        codec.decode_body(body[:5], RunView(RUN_PREFIX))
    with pytest.raises(codec.MalformedMessage, match="runs past the body's end"):
        codec.decode_body(body[:-3], RunView(RUN_PREFIX))
    with pytest.raises(codec.MalformedMessage, match="does not use"):
        codec.decode_body(body, None)  # a tcp edge never takes shared memory
    with pytest.raises(codec.MalformedMessage, match="not msgpack"):
        codec.decode_body(body + b"\xc1", RunView(RUN_PREFIX))


@pytest.mark.parametrize("name", HOSTILE_NAMES[:-1])
def test_a_path_in_a_short_form_layout_is_refused_before_any_file_is_opened(name: str):
    view = RunView(RUN_PREFIX)
    with pytest.raises(codec.MalformedMessage, match="not a shared-memory segment name"):
        codec.decode_body(short_body(["frame", "cam", [["image", "|u1", [4, 4], name, 0]]]), view)
    assert view.asked == []


def test_a_cached_layout_of_another_run_is_refused_every_time(segment: str):
    other = "pipeline-other-run-0-1"
    body = short_body(["frame", "cam", [["image", "|u1", [4, 4], other, 0]]])
    for _ in range(3):  # validated once, cached: the view still refuses it each time
        with pytest.raises(TransportError, match="not this run's"):
            codec.decode_body(body, RunView(RUN_PREFIX))
    ok = short_body(["frame", "cam", [["image", "|u1", [48, 64, 3], segment, 0]]], seq=9)
    message = codec.decode_body(ok, RunView(RUN_PREFIX))
    assert isinstance(message, Frame) and message.seq == 9 and int(message.image[0, 0, 0]) == 7

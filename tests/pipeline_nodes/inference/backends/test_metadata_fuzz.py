"""Fuzzing the model metadata reader: labels from text, from a zip packed into a .tflite
file, and from an ONNX model's metadata_props. Whatever the bytes, the reader returns labels
or nothing (packed files), or refuses with a ValueError that says why; never another
exception, and never unbounded memory (a zip bomb in place of a label file).

The budget is bounded and derandomized, so CI sees the same cases every time.
"""

from __future__ import annotations

import io
import resource
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline_nodes.inference.backends.base import parse_labels
from pipeline_nodes.inference.backends.tflite import MAX_LABELS_BYTES, _packed_labels

FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
FLATBUFFER = b"\x1c\x00\x00\x00TFL3" + bytes(range(256)) * 4  # stands in for the model


@FUZZ
@given(text=st.text(max_size=400))
@example(text="[1, 2]")
@example(text='["a", ')
@example(text="[" * 10_000)  # deep JSON: RecursionError inside json
def test_labels_of_any_text_are_labels_or_a_value_error(text: str):
    try:
        labels = parse_labels(text)
    except ValueError as exc:
        error = str(exc)
        assert "labels" in error
        return
    assert isinstance(labels, tuple)
    assert all(isinstance(label, str) for label in labels)


def packed(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return FLATBUFFER + buffer.getvalue()


REAL = packed({"labels.txt": b"person\nbicycle\ncar\n"})


def test_packed_labels_are_read(tmp_path: Path):
    path = tmp_path / "m.tflite"
    path.write_bytes(REAL)
    assert _packed_labels(path) == ("person", "bicycle", "car")


@FUZZ
@given(data=st.binary(max_size=2048))
def test_packed_labels_of_any_bytes(data: bytes, tmp_path: Path):
    path = tmp_path / "m.tflite"
    path.write_bytes(data)
    labels = _packed_labels(path)
    assert all(isinstance(label, str) for label in labels)


@FUZZ
@given(
    edits=st.lists(
        st.tuples(st.integers(0, len(REAL) - 1), st.integers(1, 255)), min_size=1, max_size=8
    ),
    cut=st.one_of(st.none(), st.integers(0, len(REAL))),
)
def test_packed_labels_of_damaged_archives(edits, cut, tmp_path: Path):
    data = bytearray(REAL)
    for at, flip in edits:
        data[at] ^= flip
    if cut is not None:
        del data[cut:]
    path = tmp_path / "m.tflite"
    path.write_bytes(bytes(data))
    labels = _packed_labels(path)  # the labels, or none: a damaged archive is no label file
    assert all(isinstance(label, str) for label in labels)


@pytest.mark.parametrize(
    "members",
    [
        {"labels.txt": b"\xff\xfe not utf-8"},
        {"labels.txt": b'["a", 1]'},  # JSON, but not strings
        {"labels/": b""},  # a folder named like a label file
    ],
)
def test_packed_label_files_that_are_not_labels_give_none(members, tmp_path: Path):
    path = tmp_path / "m.tflite"
    path.write_bytes(packed(members))
    assert _packed_labels(path) == ()


def test_an_encrypted_label_file_gives_none(tmp_path: Path):
    data = bytearray(REAL)
    # set the "encrypted" flag bit in the local header and the central directory entry
    for signature, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.index(signature, len(FLATBUFFER))
        data[at + flag_at] |= 1
    path = tmp_path / "m.tflite"
    path.write_bytes(bytes(data))
    assert _packed_labels(path) == ()


def test_a_zip_bomb_as_label_file_is_not_expanded(tmp_path: Path):
    path = tmp_path / "m.tflite"
    path.write_bytes(packed({"labels.txt": b"a\n" * (32 * 1024 * 1024)}))  # 64 MiB
    assert path.stat().st_size < 512 * 1024
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert _packed_labels(path) == ()
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 4 * MAX_LABELS_BYTES // 1024 + 50_000


def onnx_model(directory: Path, labels: str) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    helper.set_model_props(model, {"labels": labels})
    path = directory / "m.onnx"
    onnx.save(model, str(path))
    return path


@settings(FUZZ, max_examples=25)
@given(labels=st.text(max_size=200))
@example(labels='["a", 2]')
@example(labels="[not json")
def test_onnx_metadata_labels_are_labels_or_a_clear_refusal(labels: str, tmp_path: Path):
    pytest.importorskip("onnxruntime")
    from pipeline_nodes.inference.backends.onnxruntime import OnnxRuntimeModel

    path = onnx_model(tmp_path, labels)
    try:
        model = OnnxRuntimeModel.load(path)
    except ValueError as exc:
        error = str(exc)
        assert "labels" in error
        return
    with model:
        assert all(isinstance(label, str) for label in model.metadata().labels)

"""Flat tensors: every Viam dtype round-trips bit for bit, and agrees with the SDK's own code."""

from __future__ import annotations

import numpy as np
import pytest
from viam.gen.service.mlmodel.v1 import mlmodel_pb2
from viam.services.mlmodel.utils import flat_tensors_to_ndarrays, ndarrays_to_flat_tensors

from pipeline.rpc.flat_tensors import VIAM_DTYPES, from_flat_tensors, to_flat_tensors


def _extremes(dtype: str) -> np.ndarray:
    rng = np.random.default_rng(7)
    if dtype.startswith("float"):
        values = rng.standard_normal(20).astype(dtype)
        special = np.array(
            [np.nan, np.inf, -np.inf, -0.0, np.finfo(dtype).tiny, np.finfo(dtype).max], dtype
        )
        return np.concatenate([values, special]).reshape(2, 13)
    info = np.iinfo(dtype)
    values = rng.integers(info.min, info.max, 22, dtype=dtype, endpoint=True)
    return np.concatenate([values, np.array([info.min, info.max, 0, 1], dtype)]).reshape(2, 13)


@pytest.mark.parametrize("dtype", VIAM_DTYPES)
def test_every_viam_dtype_round_trips_bit_exact(dtype):
    array = _extremes(dtype)
    back = from_flat_tensors(to_flat_tensors({"t": array}))["t"]
    assert back.dtype == array.dtype
    assert back.shape == array.shape
    assert back.tobytes() == array.tobytes()


@pytest.mark.parametrize("dtype", VIAM_DTYPES)
def test_flat_tensors_agree_with_the_viam_sdk_both_ways(dtype):
    array = _extremes(dtype)
    ours_read_by_sdk = flat_tensors_to_ndarrays(to_flat_tensors({"t": array}))["t"]
    sdk_read_by_us = from_flat_tensors(ndarrays_to_flat_tensors({"t": array}))["t"]
    assert ours_read_by_sdk.tobytes() == array.tobytes()
    assert sdk_read_by_us.tobytes() == array.tobytes()
    assert sdk_read_by_us.dtype == array.dtype


def test_scalars_empty_and_non_contiguous_arrays_keep_their_shape():
    arrays = {
        "scalar": np.array(3.5, np.float64),
        "empty": np.zeros((0, 4), np.int32),
        "strided": np.arange(24, dtype=np.uint16).reshape(4, 6)[:, ::2],
        "big_endian": np.arange(5, dtype=">i8"),
    }
    back = from_flat_tensors(to_flat_tensors(arrays))
    assert back["scalar"].shape == () and back["scalar"] == 3.5
    assert back["empty"].shape == (0, 4)
    np.testing.assert_array_equal(back["strided"], arrays["strided"])
    np.testing.assert_array_equal(back["big_endian"], np.arange(5))
    assert back["big_endian"].dtype == np.int64


def test_decoded_arrays_are_writable_copies():
    back = from_flat_tensors(to_flat_tensors({"t": np.ones((2, 2), np.float32)}))["t"]
    back[0, 0] = 5
    assert back[0, 0] == 5


def test_sixteen_bit_values_packed_two_per_entry_are_read_too():
    values = np.array([-2, 7, -32768], np.int16)
    packed = np.concatenate([values, np.zeros(1, np.int16)]).view("<u4")
    flat = mlmodel_pb2.FlatTensors(
        tensors={
            "t": mlmodel_pb2.FlatTensor(
                shape=[3], int16_tensor=mlmodel_pb2.FlatTensorDataInt16(data=packed.tolist())
            )
        }
    )
    np.testing.assert_array_equal(from_flat_tensors(flat)["t"], values)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros(3, np.float16), "dtype float16"),  # not a Viam dtype
        (np.zeros(3, bool), "dtype bool"),
        (np.zeros(3, np.complex64), "use one of int8"),
    ],
)
def test_unsupported_dtypes_are_refused_with_the_supported_list(array, message):
    with pytest.raises(ValueError, match=message):
        to_flat_tensors({"t": array})


def test_data_that_does_not_fill_the_shape_is_refused_naming_the_tensor():
    flat = to_flat_tensors({"image": np.zeros((2, 3), np.float32)})
    flat.tensors["image"].shape[:] = [2, 4]
    with pytest.raises(
        ValueError, match=r"'image': shape \[2, 4\] needs 8 values, float_tensor has 6"
    ):
        from_flat_tensors(flat)


def test_a_tensor_without_data_is_refused():
    empty = mlmodel_pb2.FlatTensors(tensors={"x": mlmodel_pb2.FlatTensor(shape=[1])})
    with pytest.raises(ValueError, match="'x' carries no data"):
        from_flat_tensors(empty)


@pytest.mark.parametrize("dtype", VIAM_DTYPES)
def test_the_fast_wire_encoder_writes_what_protobuf_writes(dtype):
    from pipeline.rpc.flat_tensors import _to_flat_tensors_slow, encode_flat_tensors

    arrays = {"a": _extremes(dtype), "b": _extremes(dtype)[:1, :3]}
    fast = mlmodel_pb2.FlatTensors.FromString(encode_flat_tensors(arrays))
    assert fast == _to_flat_tensors_slow(arrays)  # (map order on the wire may differ)


@pytest.mark.parametrize("dtype", VIAM_DTYPES)
def test_infer_requests_are_read_straight_from_their_bytes(dtype):
    from pipeline.rpc.flat_tensors import parse_infer_request

    array = _extremes(dtype)
    data = mlmodel_pb2.InferRequest(
        name="m", input_tensors=ndarrays_to_flat_tensors({"x": array})
    ).SerializeToString()
    view = parse_infer_request(data)
    assert view.name == "m"
    assert view.tensors["x"].dtype == array.dtype
    assert view.tensors["x"].tobytes() == array.tobytes()
    view.tensors["x"][0, 0] = 0  # writable


def test_fast_reading_reports_the_same_problems():
    from pipeline.rpc.flat_tensors import (
        decode_flat_tensors,
        encode_infer_response,
        parse_infer_response,
    )

    flat = to_flat_tensors({"image": np.zeros((2, 3), np.float32)})
    flat.tensors["image"].shape[:] = [2, 4]
    with pytest.raises(ValueError, match=r"'image': shape \[2, 4\] needs 8 values"):
        decode_flat_tensors(flat.SerializeToString())
    empty = mlmodel_pb2.FlatTensors(tensors={"x": mlmodel_pb2.FlatTensor(shape=[1])})
    with pytest.raises(ValueError, match="'x' carries no data"):
        decode_flat_tensors(empty.SerializeToString())
    data = encode_infer_response({"y": np.ones(3, np.int8)})
    reply = mlmodel_pb2.InferResponse.FromString(data)
    np.testing.assert_array_equal(from_flat_tensors(reply.output_tensors)["y"], np.ones(3))
    np.testing.assert_array_equal(parse_infer_response(data)["y"], np.ones(3))

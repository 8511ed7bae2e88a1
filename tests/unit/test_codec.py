"""The TensorProto/base64 codec against TensorFlow's own serializer and parser."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from ee_model_widgets.errors import InputError
from ee_model_widgets.serving import codec

tf = pytest.importorskip("tensorflow")

RNG = np.random.default_rng(0)

ARRAYS = {
    "float32 tile": RNG.random((16, 16, 4), dtype=np.float32),
    "float64": RNG.random((3, 5)),
    "int32": RNG.integers(-1000, 1000, (4, 4, 1), dtype=np.int32),
    "int64": RNG.integers(-(2**40), 2**40, (7,), dtype=np.int64),
    "uint8": RNG.integers(0, 255, (8, 8, 3), dtype=np.uint8),
    "float16": RNG.random((5,)).astype(np.float16),
    "bool": np.array([[True, False], [False, True]]),
    "scalar": np.float32(2.5),
    "empty": np.zeros((0, 3), np.float32),
    "big-endian": RNG.random((4, 4)).astype(">f4"),
    "non-contiguous": RNG.random((6, 6), dtype=np.float32)[::2, ::3],
}


@pytest.mark.parametrize("name", list(ARRAYS))
def test_serialize_is_byte_identical_to_tensorflow(name):
    arr = ARRAYS[name]
    assert codec.serialize_tensor(arr) == tf.io.serialize_tensor(arr).numpy()


@pytest.mark.parametrize("name", list(ARRAYS))
def test_parse_reads_what_tensorflow_writes_and_tensorflow_reads_ours(name):
    arr = np.asarray(ARRAYS[name])
    ours = codec.parse_tensor(tf.io.serialize_tensor(arr).numpy())
    assert ours.dtype == arr.dtype.newbyteorder("=") and ours.shape == arr.shape
    np.testing.assert_array_equal(ours, arr)
    theirs = tf.io.parse_tensor(codec.serialize_tensor(arr), tf.as_dtype(arr.dtype.newbyteorder("="))).numpy()
    np.testing.assert_array_equal(theirs, arr)


def test_string_tensors_round_trip_both_ways():
    arr = np.array([[b"ab", b""], [b"\x00\xff", "caf\u00e9".encode()]], dtype=object)
    data = codec.serialize_tensor(arr)
    assert data == tf.io.serialize_tensor(tf.constant(arr)).numpy()
    back = codec.parse_tensor(data)
    assert back.dtype == object and back.tolist() == arr.tolist()
    assert codec.parse_tensor(tf.io.serialize_tensor(tf.constant(b"x")).numpy()).tolist() == b"x"
    # str input is sent as UTF-8 bytes, as TensorFlow does
    assert (
        codec.serialize_tensor(np.array(["caf\u00e9"]))
        == tf.io.serialize_tensor(tf.constant(["caf\u00e9"])).numpy()
    )


def test_encode_tensor_matches_tf_encode_base64_and_tf_decodes_it():
    arr = ARRAYS["float32 tile"]
    expected = tf.io.encode_base64(tf.io.serialize_tensor(arr)).numpy().decode()
    text = codec.encode_tensor(arr)
    assert text == expected
    assert "=" not in text and "+" not in text and "/" not in text
    back = tf.io.parse_tensor(tf.io.decode_base64(text), tf.float32).numpy()
    np.testing.assert_array_equal(back, arr)


def test_decode_accepts_both_alphabets_with_or_without_padding():
    arr = np.arange(7, dtype=np.uint8) * 37  # bytes that produce '-'/'_' (and '+'/'/') in base64
    data = codec.serialize_tensor(arr)
    variants = {
        base64.urlsafe_b64encode(data).decode(),
        base64.urlsafe_b64encode(data).decode().rstrip("="),
        base64.b64encode(data).decode(),
        base64.b64encode(data).decode().rstrip("="),
    }
    assert len(variants) == 4
    for text in variants:
        np.testing.assert_array_equal(codec.decode_tensor(text), arr)
        np.testing.assert_array_equal(codec.decode_tensor(text.encode()), arr)


def test_base64_matches_tensorflow_for_every_length():
    for n in range(0, 9):
        data = bytes(range(250, 250 - n, -1))
        assert codec.encode_base64(data) == tf.io.encode_base64(data).numpy().decode()
        assert codec.decode_base64(codec.encode_base64(data)) == data


def test_repeated_val_fields_and_splats_parse_like_tensorflow():
    protos = [
        tf.make_tensor_proto(5.0, dtype=tf.float32, shape=[2, 3]),  # splat: one float_val
        tf.make_tensor_proto(7, dtype=tf.int64, shape=[4]),
        tf.make_tensor_proto(3, dtype=tf.uint8, shape=[2, 2]),
        tf.make_tensor_proto(True, dtype=tf.bool, shape=[3]),
        tf.make_tensor_proto(1.5, dtype=tf.float16, shape=[2]),
        tf.make_tensor_proto(0.25, dtype=tf.float64, shape=[1, 2]),
    ]
    from tensorflow.core.framework import tensor_pb2

    full = tensor_pb2.TensorProto(dtype=1)  # explicit float_val, one per element
    for n in (2, 2):
        full.tensor_shape.dim.add(size=n)
    full.float_val.extend([1.0, 2.0, 3.0, 4.0])
    empty_vals = tensor_pb2.TensorProto(dtype=3)  # no values at all: zeros
    empty_vals.tensor_shape.dim.add(size=3)
    short = tensor_pb2.TensorProto(dtype=3)  # fewer values than elements: the last repeats
    short.tensor_shape.dim.add(size=5)
    short.int_val.extend([1, 2])
    protos += [full, empty_vals, short]
    for proto in protos:
        assert not proto.tensor_content
        expected = tf.make_ndarray(proto)
        ours = codec.parse_tensor(proto.SerializeToString())
        assert ours.dtype == expected.dtype, proto
        np.testing.assert_array_equal(ours, expected)


def test_batches_round_trip():
    batch = RNG.random((3, 4, 4, 2), dtype=np.float32)
    texts = codec.encode_batch(batch)
    assert len(texts) == 3
    np.testing.assert_array_equal(codec.decode_batch(texts, np.float32), batch)


@pytest.mark.parametrize(
    "bad, message",
    [
        ("not base64!", "Not valid base64"),
        ("abcde", "impossible length"),
        ("caf\u00e9", "non-ASCII"),
        (codec.encode_base64(b"\xff\xff\xff garbage"), "Not a serialized TensorProto"),
    ],
)
def test_garbage_gives_a_clear_error(bad, message):
    with pytest.raises(InputError, match=message):
        codec.decode_tensor(bad)


def test_truncated_content_and_dtype_mismatch_are_reported():
    from tensorflow.core.framework import tensor_pb2

    proto = tensor_pb2.TensorProto()
    proto.ParseFromString(codec.serialize_tensor(np.zeros((4, 4), np.float32)))
    proto.tensor_content = proto.tensor_content[:-4]
    with pytest.raises(InputError, match=r"60 bytes, but shape \(4, 4\) of float32 needs 64"):
        codec.parse_tensor(proto.SerializeToString())
    with pytest.raises(InputError, match="Expected a tensor of dtype int32, got float32"):
        codec.parse_tensor(codec.serialize_tensor(np.zeros(2, np.float32)), np.int32)


def test_unsupported_dtype_names_the_supported_ones():
    with pytest.raises(InputError, match="complex128.*float32"):
        codec.serialize_tensor(np.zeros(2, np.complex128))


def test_standard_library_fallback_gives_the_same_results(monkeypatch):
    """Without pybase64 (an accelerator) the stdlib path must agree byte for byte."""
    data = codec.serialize_tensor(RNG.random((9, 7), dtype=np.float32) * 1e6)
    fast = codec.encode_base64(data)
    monkeypatch.setattr(codec, "_b64", None)
    assert codec.encode_base64(data) == fast
    for text in (fast, base64.b64encode(data).decode(), base64.urlsafe_b64encode(data).decode()):
        assert codec.decode_base64(text) == data
    with pytest.raises(InputError, match="Not valid base64"):
        codec.decode_base64("ab!d")


def test_mixed_alphabets_in_one_string_still_decode():
    data = bytes(range(256))
    std = base64.b64encode(data).decode()
    mixed = std.replace("+", "-", 1)  # one web-safe character among standard ones
    assert "+" in mixed and "-" in mixed
    assert codec.decode_base64(mixed) == data

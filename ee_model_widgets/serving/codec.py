"""The Earth Engine wire format: `TensorProto` bytes in web-safe base64, without per-element Python.

EE sends every band (and input property) of every tile as a serialized `tensorflow.TensorProto`
encoded with web-safe base64 (`tf.io.encode_base64`: `-`/`_`, no padding), and a prepared model
answers the same way. This module converts numpy arrays to and from that format:

- numeric tensors go through `tensor_content` (the raw little-endian buffer), exactly like
  `tf.io.serialize_tensor`, so our bytes are identical to TensorFlow's and a 256x256xC tile costs
  a few buffer copies, never a Python loop over pixels;
- parsing also accepts the repeated `*_val` fields (`float_val`, `int_val`, ...) other writers use,
  including TensorFlow's "splat" shorthand (fewer values than elements: the last one repeats);
- decoding accepts web-safe and standard base64, with or without padding.

The protobuf classes are TensorFlow's own (`tensorflow.core.framework.tensor_pb2`), imported on
first use because importing them loads TensorFlow.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np

from ..errors import InputError

# TensorFlow DataType enum values (tensorflow/core/framework/types.proto); stable since TF 1.0.
_DT_TO_NUMPY: dict[int, np.dtype] = {
    1: np.dtype(np.float32),  # DT_FLOAT
    2: np.dtype(np.float64),  # DT_DOUBLE
    3: np.dtype(np.int32),  # DT_INT32
    4: np.dtype(np.uint8),  # DT_UINT8
    5: np.dtype(np.int16),  # DT_INT16
    6: np.dtype(np.int8),  # DT_INT8
    7: np.dtype(object),  # DT_STRING
    9: np.dtype(np.int64),  # DT_INT64
    10: np.dtype(np.bool_),  # DT_BOOL
    17: np.dtype(np.uint16),  # DT_UINT16
    19: np.dtype(np.float16),  # DT_HALF
    22: np.dtype(np.uint32),  # DT_UINT32
    23: np.dtype(np.uint64),  # DT_UINT64
}
_NUMPY_TO_DT: dict[np.dtype, int] = {v: k for k, v in _DT_TO_NUMPY.items() if k != 7}
DT_STRING = 7
_DT_NAMES = {
    1: "float32",
    2: "float64",
    3: "int32",
    4: "uint8",
    5: "int16",
    6: "int8",
    7: "string",
    9: "int64",
    10: "bool",
    17: "uint16",
    19: "float16",
    22: "uint32",
    23: "uint64",
}
# The repeated field that carries each dtype's values when `tensor_content` is not used.
_VAL_FIELD = {
    1: "float_val",
    2: "double_val",
    3: "int_val",
    4: "int_val",
    5: "int_val",
    6: "int_val",
    7: "string_val",
    9: "int64_val",
    10: "bool_val",
    17: "int_val",
    19: "half_val",
    22: "uint32_val",
    23: "uint64_val",
}
SUPPORTED_DTYPES = tuple(_DT_NAMES[k] for k in sorted(_DT_NAMES))
# Leave room for the batch axis numpy adds when stacking instances (numpy allows 64 dimensions).
MAX_RANK = 32
# What numpy can shape at all (its sizes are signed 64-bit byte counts).
_MAX_SPAN = 2**62 // 16


@lru_cache(maxsize=1)
def _tensor_pb2():
    """TensorFlow's TensorProto module (imports TensorFlow, hence lazily)."""
    from tensorflow.core.framework import tensor_pb2

    return tensor_pb2


def dtype_name(dt: int) -> str:
    """'float32' for DT_FLOAT etc.; used in error messages and server metadata."""
    return _DT_NAMES.get(dt, f"DataType {dt}")


def numpy_dtype_to_dt(dtype) -> int:
    """The TensorFlow DataType enum of a numpy dtype (strings/bytes/object -> DT_STRING)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "OSU":
        return DT_STRING
    try:
        return _NUMPY_TO_DT[dtype.newbyteorder("=")]
    except KeyError:
        raise InputError(
            f"Cannot send a {dtype} tensor: supported dtypes are {', '.join(SUPPORTED_DTYPES)}. "
            "Cast the array first (e.g. arr.astype('float32'))."
        ) from None


# ---- base64 ---------------------------------------------------------------------------


try:  # SIMD base64 (a dependency): ~25x faster than the stdlib on a 1 MB tile
    import pybase64 as _b64
except ImportError:  # pragma: no cover - fall back to the standard library
    _b64 = None


def encode_base64(data: bytes) -> str:
    """Web-safe base64 without padding, byte-identical to `tf.io.encode_base64(data)`."""
    return str(encode_base64_bytes(data), "ascii")  # decodes a memoryview without copying it first


def encode_base64_bytes(data: bytes) -> bytes | memoryview:
    """`encode_base64` as ASCII bytes, for writing JSON bodies without a str round trip.

    Without padding the result is a memoryview of the encoded bytes (no megabyte copy just to
    drop one or two '='); `b"".join` and `bytes()` take it as it is."""
    out = _b64.b64encode(data, altchars=b"-_") if _b64 is not None else base64.urlsafe_b64encode(data)
    pad = 2 if out.endswith(b"==") else 1 if out.endswith(b"=") else 0
    return memoryview(out)[: len(out) - pad] if pad else out


def decode_base64(text: str | bytes) -> bytes:
    """Decode web-safe or standard base64, padded or not; garbage raises `InputError`."""
    if isinstance(text, str):
        try:
            raw = text.encode("ascii")
        except UnicodeEncodeError:
            raise InputError(f"Not base64 text: {_preview(text)} contains non-ASCII characters.") from None
    else:
        raw = bytes(text)
    # each step copies ~1 MB for a tile, so only when needed
    if raw[:1].isspace() or raw[-1:].isspace():
        raw = raw.strip()
    if raw.endswith(b"="):
        raw = raw.rstrip(b"=")
    if len(raw) % 4 == 1:
        raise InputError(
            f"Not valid base64: {_preview(text)} has an impossible length ({len(raw)} characters)."
        )
    if len(raw) % 4:
        raw += b"=" * (-len(raw) % 4)
    try:
        # validate=True: reject characters outside the alphabet instead of silently skipping them.
        if _b64 is not None and not (b"+" in raw and b"-" in raw) and not (b"/" in raw and b"_" in raw):
            # one alphabet per string (the normal case): decode in place of a translation pass
            alt = b"+/" if (b"+" in raw or b"/" in raw) else b"-_"
            return _b64.b64decode(raw, altchars=alt, validate=True)
        if b"-" in raw or b"_" in raw:
            raw = raw.replace(b"-", b"+").replace(b"_", b"/")
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError(f"Not valid base64: {_preview(text)} ({exc}).") from None


def _preview(text, n: int = 40) -> str:
    s = text if isinstance(text, str) else repr(bytes(text[:n]))
    return repr(s[:n] + "...") if len(s) > n else repr(s)


# ---- TensorProto ------------------------------------------------------------------------


def serialize_tensor(array) -> bytes:
    """A serialized `TensorProto` of `array`, byte-identical to `tf.io.serialize_tensor(array)`."""
    arr = np.asarray(array)
    dt = numpy_dtype_to_dt(arr.dtype)
    proto = _tensor_pb2().TensorProto(dtype=dt)
    proto.tensor_shape.SetInParent()  # TF always writes the shape, even for a scalar (empty message)
    for n in arr.shape:
        proto.tensor_shape.dim.add(size=n)
    if dt == DT_STRING:
        proto.string_val.extend(_as_bytes_list(arr))
    elif arr.size:
        # tensor_content is the little-endian buffer in C order, as TensorFlow writes it.
        proto.tensor_content = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
    return proto.SerializeToString()


def _as_bytes_list(arr: np.ndarray) -> list[bytes]:
    out = []
    for v in arr.reshape(-1).tolist():  # strings are inherently per element
        if isinstance(v, str):
            v = v.encode("utf-8")
        elif not isinstance(v, bytes):
            raise InputError(f"A string tensor may only hold str or bytes, found {type(v).__name__} {v!r}.")
        out.append(v)
    return out


class TensorTooLarge(InputError):
    """A TensorProto declaring more elements than the reader accepts (HTTP 413 on the server)."""


def parse_tensor(
    data: bytes, dtype=None, *, copy: bool = True, max_elements: int | None = None
) -> np.ndarray:
    """The numpy array in a serialized `TensorProto` (like `tf.io.parse_tensor`).

    `dtype`, when given, must match the tensor's dtype (TensorFlow's rule: no silent casts).
    String tensors come back as numpy object arrays of `bytes`. `copy=False` may return a
    read-only view of the message's buffer: one megabyte copy less for callers that stack the
    tensors into a batch anyway. `max_elements` refuses larger declared shapes before allocating.
    """
    return tensor_proto_to_numpy(parse_tensor_proto(data), dtype, copy=copy, max_elements=max_elements)


def declared_shape(proto, max_elements: int | None = None) -> tuple[int, ...]:
    """The shape a parsed `TensorProto` declares, after the checks `tensor_proto_to_numpy` makes
    (dtype, shape against the bytes carried, `max_elements`), without building the array."""
    shape, _ = _checked_shape(proto, max_elements)
    return shape


def parse_tensor_proto(data: bytes):
    """The `TensorProto` message in serialized bytes (no array built yet); garbage raises InputError."""
    proto = _tensor_pb2().TensorProto()
    try:
        proto.ParseFromString(bytes(data))
    except Exception as exc:  # protobuf's DecodeError; its module path differs between backends
        raise InputError(f"Not a serialized TensorProto ({len(data)} bytes): {exc}.") from None
    return proto


def _checked_shape(proto, max_elements: int | None) -> tuple[tuple[int, ...], int]:
    """Shape and element count of a TensorProto, refused before any allocation when the shape is
    not concrete, exceeds `max_elements`, or disagrees with the bytes of `tensor_content`."""
    dt = proto.dtype
    if dt not in _DT_TO_NUMPY:
        raise InputError(
            f"TensorProto has dtype {dt} ({dtype_name(dt)}), which is not supported: "
            f"supported dtypes are {', '.join(SUPPORTED_DTYPES)}."
        )
    if proto.tensor_shape.unknown_rank:
        raise InputError("TensorProto has an unknown rank; a concrete shape is required.")
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    if any(n < 0 for n in shape):
        raise InputError(f"TensorProto has a negative dimension in shape {shape}.")
    if len(shape) > MAX_RANK:
        raise InputError(
            f"TensorProto has {len(shape)} dimensions; at most {MAX_RANK} are supported (a tile is 2-D or 3-D)."
        )
    count = 1
    for n in shape:  # Python ints: a product of huge dimensions cannot overflow and look small
        count *= n
    # an empty tensor may still declare dimensions no array can have, e.g. (0, 2**62, 2**62)
    span = 1
    for n in shape:
        span *= max(n, 1)
    if count == 0 and span > (max_elements if max_elements is not None else _MAX_SPAN):
        raise TensorTooLarge(
            f"A tensor of shape {shape} is empty but declares dimensions spanning {span} elements; "
            "send a concrete tile shape."
        )
    if max_elements is not None and count > max_elements:
        raise TensorTooLarge(
            f"A tensor of shape {shape} has {count} elements; this reader accepts at most {max_elements} "
            "per instance. Send smaller tiles (input_tile_size) or raise the limit."
        )
    if dt != DT_STRING and proto.tensor_content:
        itemsize = _DT_TO_NUMPY[dt].itemsize
        if len(proto.tensor_content) != count * itemsize:
            raise InputError(
                f"TensorProto content has {len(proto.tensor_content)} bytes, but shape {shape} of "
                f"{dtype_name(dt)} needs {count * itemsize}: the tensor is truncated or corrupt."
            )
    return shape, count


def tensor_proto_to_numpy(
    proto, dtype=None, *, copy: bool = True, max_elements: int | None = None
) -> np.ndarray:
    """A numpy array from a parsed `TensorProto`, reading `tensor_content` or the `*_val` fields."""
    shape, count = _checked_shape(proto, max_elements)
    dt = proto.dtype
    if dt not in _DT_TO_NUMPY:
        raise InputError(
            f"TensorProto has dtype {dt} ({dtype_name(dt)}), which is not supported: "
            f"supported dtypes are {', '.join(SUPPORTED_DTYPES)}."
        )
    np_dtype = _DT_TO_NUMPY[dt]
    if (
        dtype is not None
        and np.dtype(dtype) != np_dtype
        and not (dt == DT_STRING and np.dtype(dtype).kind in "OSU")
    ):
        raise InputError(f"Expected a tensor of dtype {np.dtype(dtype)}, got {dtype_name(dt)}.")

    if dt == DT_STRING:
        values = list(proto.string_val)
        flat = np.empty(len(values), dtype=object)
        flat[:] = values
    elif proto.tensor_content:
        le = np_dtype.newbyteorder("<")
        return np.frombuffer(proto.tensor_content, dtype=le).astype(np_dtype, copy=copy).reshape(shape)
    else:
        vals = getattr(proto, _VAL_FIELD[dt])
        if dt == 19:  # half_val holds the float16 bit patterns in int32s
            flat = np.asarray(vals, dtype=np.uint16).view(np.float16)
        else:
            flat = np.asarray(vals, dtype=np_dtype)
    return _fill(flat, count, shape, np_dtype, dt)


def _fill(flat: np.ndarray, count: int, shape: tuple[int, ...], np_dtype, dt: int) -> np.ndarray:
    """Apply TensorFlow's rule for short `*_val` lists: the last value repeats, none means zeros."""
    n = len(flat)
    if n == count:
        return flat.reshape(shape)
    if n > count:
        raise InputError(f"TensorProto holds {n} values but its shape {shape} has only {count} elements.")
    if n == 0:
        if dt == DT_STRING:
            out = np.empty(count, dtype=object)
            out[:] = b""
            return out.reshape(shape)
        return np.zeros(shape, dtype=np_dtype)
    out = np.empty(count, dtype=flat.dtype)
    out[:n] = flat
    out[n:] = flat[-1]
    return out.reshape(shape)


# ---- the two together --------------------------------------------------------------------


def encode_tensor(array) -> str:
    """One tensor as EE sends it: web-safe base64 (no padding) of the serialized TensorProto."""
    return encode_base64(serialize_tensor(array))


def encode_tensor_bytes(array) -> bytes | memoryview:
    """`encode_tensor` as ASCII bytes (JSON-safe as is: the web-safe alphabet needs no escaping)."""
    return encode_base64_bytes(serialize_tensor(array))


def decode_tensor(
    text: str | bytes, dtype=None, *, copy: bool = True, max_elements: int | None = None
) -> np.ndarray:
    """The inverse of `encode_tensor`; accepts either base64 alphabet, padded or not."""
    return parse_tensor(decode_base64(text), dtype, copy=copy, max_elements=max_elements)


def encode_batch(batch) -> list[str]:
    """One encoded string per instance (axis 0) of `batch`, as in EE's `instances` list."""
    arr = np.asarray(batch)
    if arr.ndim == 0:
        raise InputError("A batch needs a leading instance axis; got a scalar.")
    return [encode_tensor(a) for a in arr]


def decode_batch(texts: Iterable[str | bytes] | Sequence[str | bytes], dtype=None) -> np.ndarray:
    """Decode one string per instance and stack them on a new axis 0 (shapes must agree)."""
    arrays = [decode_tensor(t, dtype, copy=False) for t in texts]  # np.stack copies
    if not arrays:
        raise InputError("Cannot decode an empty batch: no instances were given.")
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise InputError(f"Instances have different shapes {sorted(shapes)}; a batch needs one shape.")
    return np.stack(arrays)

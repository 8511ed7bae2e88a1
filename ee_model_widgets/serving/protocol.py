"""TF Serving's REST predict API as pure functions: JSON request -> feeds, outputs -> JSON reply.

Follows tensorflow_serving/g3doc/api_rest.md (row `instances` and columnar `inputs`,
`signature_name`, `{"b64": ...}` for binary strings, single-output replies without the name),
plus what Earth Engine clients need (docs/earth-engine-semantics.md, section 3):

- a prepared ("EE wire") model gets its strings as the graph expects them: web-safe base64.
  Standard-alphabet text is translated, and a `{"b64": ...}` wrapping the raw TensorProto bytes
  is re-encoded, so both conventions reach the graph in the one form it decodes;
- a plain numeric model also accepts EE's format: an instance value that is a base64 string
  (or `{"b64": ...}`) is decoded as a serialized TensorProto, and the reply then encodes every
  output instance the same way. A plain model served by us is therefore usable by EE-style
  clients without `prepare`;
- numbers sent as JSON strings (Vertex's RAW_JSON) are converted to the input's dtype;
- a single-input model accepts a named instance object whatever its key (EE names the input
  after the band, e.g. "array", while Keras may call it "input_layer").
No request can name a file: inputs are values only.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from ..errors import InputError
from . import codec
from .batcher import ServerBusy
from .public_errors import public_message  # noqa: F401 - the server's error texts (protocol.public_message)
from .servable import Signature, TensorInfo

_TO_WEBSAFE = bytes.maketrans(b"+/", b"-_")
_B64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/=")


class ElementPool:
    """Tensor elements that all the requests in flight may hold together (thread-safe): a
    request over the pool's free room gets a 503 (retry) instead of growing the server."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.used = 0
        self._lock = threading.Lock()

    def reserve(self, n: int) -> None:
        with self._lock:
            if self.used + n > self.capacity:
                raise ServerBusy(
                    f"The server is busy (requests in flight hold {self.used} of {self.capacity} tensor "
                    "elements); retry in a moment."
                )
            self.used += n

    def release(self, n: int) -> None:
        with self._lock:
            self.used -= n


#: What one JSON value (a number or a list) costs the server while a body is parsed, in float32
#: tensor elements: a Python object and its list slot, ~64 bytes against 4. Measured: a 60 MB
#: body of `[[[0]]],...` took 7.7 s of orjson (holding the GIL: every other client waited) and
#: 2.2 GB, before any tensor limit could see it.
JSON_VALUE_ELEMENTS = 16


def json_values(body: bytes) -> int:
    """About how many JSON lists and numbers `body` holds, counted before parsing (its '[' and
    ','; base64 strings have neither): what parsing it would build as Python objects."""
    return body.count(b"[") + body.count(b",") + 1


@dataclass
class Limits:
    """What one request may make the server allocate: checked on declared shapes, before allocating.

    With a `pool`, what the request takes is also reserved there; `release()` gives it back."""

    max_instances: int | None = None
    max_instance_elements: int | None = None  # per instance and input
    max_request_elements: int | None = None  # all instances and inputs together
    pool: ElementPool | None = None
    used: int = 0

    def release(self) -> None:
        if self.pool is not None and self.used:
            self.pool.release(self.used)
        self.used = 0

    def take_json(self, body: bytes) -> int:
        """Reserve what parsing `body` will build, before it is parsed (raises TensorTooLarge ->
        413, or ServerBusy -> 503 when the pool is full); returns it for `give_back_json`, once
        the parsed JSON is dropped. Counted apart from the tensors, which outlive it."""
        values = json_values(body)
        n = values * JSON_VALUE_ELEMENTS
        if self.max_request_elements is not None and n > self.max_request_elements:
            raise codec.TensorTooLarge(
                f"The request body holds about {values} JSON numbers and lists; this server parses at most "
                f"{self.max_request_elements // JSON_VALUE_ELEMENTS} per request. Send fewer instances per "
                'request, or send tiles as base64 TensorProtos ({"b64": ...}, as Earth Engine does).'
            )
        if self.pool is not None:
            self.pool.reserve(n)
        return n

    def give_back_json(self, n: int) -> None:
        if self.pool is not None:
            self.pool.release(n)

    def take(self, name: str, n_instances: int, instance_shape: tuple[int, ...]) -> None:
        """Count one input's instances against the limits (raises TensorTooLarge -> 413)."""
        per = 1
        for d in instance_shape:
            per *= d
        if self.max_instance_elements is not None and per > self.max_instance_elements:
            raise codec.TensorTooLarge(
                f"Input '{name}': an instance of shape {tuple(instance_shape)} has {per} elements; this server "
                f"accepts at most {self.max_instance_elements} per instance. Send smaller tiles."
            )
        n = per * n_instances
        if self.max_request_elements is not None and self.used + n > self.max_request_elements:
            raise codec.TensorTooLarge(
                f"The request holds more than {self.max_request_elements} tensor elements in all; "
                "send fewer instances per request."
            )
        if self.pool is not None:
            self.pool.reserve(n)
        self.used += n


@dataclass
class ParsedRequest:
    """What a predict body asked for: signature, feeds (batch on axis 0) and reply conventions."""

    signature_name: str
    feeds: dict[str, np.ndarray]
    row_format: bool
    batch_size: int
    encoded: set[str] = field(default_factory=set)  # inputs that arrived as EE-encoded TensorProtos


def loads(data: bytes | str) -> Any:
    """Parse JSON: orjson (a 1.4 MB tile body in 0.5 ms, 2 ms with `json`), falling back to the
    standard parser for what orjson refuses but TF Serving writes (NaN, Infinity, huge ints).
    Invalid JSON raises ValueError."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def parse_body(body: bytes) -> dict:
    """The JSON object of a request body; anything else is a 400-worthy InputError."""
    try:
        obj = loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"The request body is not valid JSON: {exc}.") from None
    except RecursionError:  # orjson stops at 1024 levels; the fallback parser then runs out of stack
        raise InputError(
            "The request body is JSON nested too deeply; a predict request needs a few levels."
        ) from None
    if not isinstance(obj, dict):
        raise InputError(f"The request body must be a JSON object, got {type(obj).__name__}.")
    return obj


def signature_name_of(obj: dict) -> str:
    name = obj.get("signature_name", "")
    if not isinstance(name, str):
        raise InputError("'signature_name' must be a string.")
    return name


def parse_predict(
    obj: dict, sig: Signature, max_instances: int | None = None, limits: Limits | None = None
) -> ParsedRequest:
    """Turn a TF Serving predict request into numpy feeds for `sig` (raises InputError -> 400,
    TensorTooLarge -> 413 when `limits` refuse what the request would make us allocate)."""
    limits = limits or Limits()
    if max_instances is None:
        max_instances = limits.max_instances
    has_rows, has_cols = "instances" in obj, "inputs" in obj
    if has_rows == has_cols:
        raise InputError(
            "Missing 'instances' key"
            if not has_rows
            else "The request has both 'instances' and 'inputs'; send only one."
        )
    unknown = set(obj) - {"instances", "inputs", "signature_name", "parameters"}
    if unknown:
        raise InputError(
            f"Unknown key(s) {sorted(unknown)} in the request; expected 'instances' or 'inputs'."
        )
    encoded: set[str] = set()
    if has_rows:
        rows = obj["instances"]
        if not isinstance(rows, list) or not rows:
            raise InputError("'instances' must be a non-empty list, one item per instance.")
        if max_instances is not None and len(rows) > max_instances:
            raise InputError(
                f"{len(rows)} instances in one request; this server accepts at most {max_instances}."
            )
        columns = _rows_to_columns(rows, sig)
        feeds = {
            k: _column_to_array(v, sig.inputs[k], sig.ee_wire, encoded, limits) for k, v in columns.items()
        }
    else:
        cols = obj["inputs"]
        if len(sig.inputs) == 1 and not (isinstance(cols, dict) and not _is_b64(cols)):
            cols = {next(iter(sig.inputs)): cols}
        elif not isinstance(cols, dict):
            raise InputError(f"'inputs' must be an object naming the inputs {sorted(sig.inputs)}.")
        cols = _match_names(cols, sig)
        feeds = {}
        for k, v in cols.items():
            if not isinstance(v, list):
                v = [v]
            if max_instances is not None and len(v) > max_instances:
                raise InputError(
                    f"{len(v)} instances in one request; this server accepts at most {max_instances}."
                )
            feeds[k] = _column_to_array(v, sig.inputs[k], sig.ee_wire, encoded, limits)
    sizes = {k: len(v) for k, v in feeds.items()}
    if len(set(sizes.values())) > 1:
        raise InputError(f"All inputs must have the same number of instances (0-th dimension), got {sizes}.")
    n = next(iter(sizes.values()))
    if max_instances is not None and n > max_instances:
        raise InputError(f"{n} instances in one request; this server accepts at most {max_instances}.")
    return ParsedRequest(signature_name_of(obj), feeds, has_rows, n, encoded)


def _rows_to_columns(rows: list, sig: Signature) -> dict[str, list]:
    names = list(sig.inputs)
    named = [isinstance(r, dict) and not _is_b64(r) for r in rows]
    if len(names) > 1 and not all(named):
        raise InputError(
            f"This model has several inputs {names}: every instance must be an object naming each of them."
        )
    if not all(named):
        if any(named):
            raise InputError("Instances mix named objects and bare values; use one form for all.")
        return {names[0]: rows}
    keys = {tuple(sorted(r)) for r in rows}
    if len(keys) > 1:
        raise InputError(
            f"Instances name different inputs: {sorted(keys)}; every instance needs the same keys."
        )
    first = _match_names(rows[0], sig)
    mapping = dict(zip(rows[0], first))  # request key -> input name
    return {mapping[k]: [r[k] for r in rows] for k in rows[0]}


def _match_names(obj: dict, sig: Signature) -> dict[str, Any]:
    names = list(sig.inputs)
    if set(obj) == set(names):
        return dict(obj)
    if len(names) == 1 and len(obj) == 1:
        return {names[0]: next(iter(obj.values()))}  # one input: the key is just a label
    missing = sorted(set(names) - set(obj))
    extra = sorted(set(obj) - set(names))
    raise InputError(
        f"Input names do not match signature '{sig.name}': missing {missing}, unexpected {extra}. "
        f"The model's inputs: {', '.join(i.describe() for i in sig.inputs.values())}."
    )


def _is_b64(v) -> bool:
    return isinstance(v, dict) and len(v) == 1 and "b64" in v


def _column_to_array(
    values: list, info: TensorInfo, ee_wire: bool, encoded: set[str], limits: Limits
) -> np.ndarray:
    """One input's instances -> a batch array of the input's dtype and shape (checked)."""
    if not values:
        raise InputError(
            f"Input '{info.name}' has no instances; send a list with one value per instance (at least one)."
        )
    if info.is_string:
        arr = _strings(values, info, ee_wire, limits)
    elif all(isinstance(v, str) or _is_b64(v) for v in values):
        # EE's format for a plain model: one serialized TensorProto per instance
        encoded.add(info.name)
        tensors = []
        for v in values:
            try:
                proto = codec.parse_tensor_proto(
                    _b64_field(v, info) if _is_b64(v) else codec.decode_base64(v)
                )
                # the declared shape is counted before the array exists: a few bytes may declare
                # 9000x9000 elements and no data (TensorFlow's "splat" zeros)
                limits.take(info.name, 1, codec.declared_shape(proto, limits.max_instance_elements))
                t = codec.tensor_proto_to_numpy(proto, copy=False)  # np.stack below copies
            except codec.TensorTooLarge as exc:
                raise codec.TensorTooLarge(f"Input '{info.name}': {exc}") from None
            except InputError as exc:
                raise InputError(
                    f"Input '{info.name}': a string value must be a base64 serialized TensorProto ({exc})"
                ) from None
            tensors.append(_cast(t, info))
        shapes = {t.shape for t in tensors}
        if len(shapes) > 1:
            raise InputError(f"Input '{info.name}': instances have different shapes {sorted(shapes)}.")
        arr = np.stack(tensors)
    else:
        try:
            arr = np.asarray(values)
        except ValueError:
            raise InputError(
                f"Input '{info.name}': instances are ragged lists; every instance needs the same shape."
            ) from None
        if arr.dtype == object:
            raise InputError(
                f"Input '{info.name}': instances are ragged or mix types; send nested lists of numbers."
            )
        if arr.dtype.kind == "U":  # numbers sent as strings (Vertex RAW_JSON)
            try:
                arr = arr.astype(np.float64)
            except ValueError as exc:
                raise InputError(f"Input '{info.name}': {exc}; expected numbers.") from None
        arr = _cast(arr, info, batch=True)
        # JSON numbers cost bytes of the body (bounded by the size limit); count them all the same
        limits.take(info.name, len(arr), arr.shape[1:])
    _check_shape(arr, info)
    return arr


def _strings(values: list, info: TensorInfo, ee_wire: bool, limits: Limits) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    flat = []
    for v in values:
        if isinstance(v, list):
            hint = (
                " This model is prepared for Earth Engine: send each instance as a web-safe base64 "
                "serialized TensorProto (ee_model_widgets.serving.codec.encode_tensor)."
                if ee_wire
                else ""
            )
            raise InputError(f"Input '{info.name}' takes one string per instance, got a list.{hint}")
        if _is_b64(v):
            raw = _b64_field(v, info)
            if ee_wire and not (raw and set(raw) <= _B64_ALPHABET):
                raw = codec.encode_base64(raw).encode()  # raw TensorProto bytes -> the graph's text form
        elif isinstance(v, str):
            raw = v.encode("utf-8")
        else:
            raise InputError(f"Input '{info.name}' takes strings, got {type(v).__name__} {str(v)[:40]}.")
        if ee_wire:
            raw = raw.strip().translate(_TO_WEBSAFE)  # tf.io.decode_base64 only knows the web-safe alphabet
            # the graph parses this TensorProto itself (tf.io.parse_tensor would allocate whatever
            # shape it declares): check that shape here first
            try:
                shape = codec.declared_shape(
                    codec.parse_tensor_proto(codec.decode_base64(raw)), limits.max_instance_elements
                )
            except codec.TensorTooLarge as exc:
                raise codec.TensorTooLarge(f"Input '{info.name}': {exc}") from None
            except InputError as exc:
                raise InputError(
                    f"Input '{info.name}': a value must be a web-safe base64 serialized TensorProto ({exc})"
                ) from None
            limits.take(info.name, 1, shape)
        flat.append(raw)
    out[:] = flat
    return out


def _b64_field(v: dict, info: TensorInfo) -> bytes:
    text = v["b64"]
    if not isinstance(text, str):
        raise InputError(f"Input '{info.name}': the value of 'b64' must be a string.")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        try:
            return codec.decode_base64(text)  # be lenient: web-safe or unpadded too
        except InputError as exc:
            raise InputError(f"Input '{info.name}': {exc}") from None


def _cast(arr: np.ndarray, info: TensorInfo, batch: bool = False) -> np.ndarray:
    if arr.dtype == info.dtype:
        return arr
    if arr.dtype.kind in "OSU":
        raise InputError(f"Input '{info.name}' expects {info.dtype}, got strings.")
    if arr.dtype == np.bool_ and info.dtype.kind != "b":
        return arr.astype(info.dtype)
    if info.dtype.kind in "iu" and arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise InputError(f"Input '{info.name}' expects {info.dtype}, got non-integer numbers.")
    if info.dtype.kind == "b" and arr.dtype.kind != "b":
        raise InputError(f"Input '{info.name}' expects booleans, got {arr.dtype}.")
    return arr.astype(info.dtype)


def _check_shape(arr: np.ndarray, info: TensorInfo) -> None:
    if info.shape is None:
        return
    if arr.ndim != len(info.shape):
        raise InputError(
            f"Input '{info.name}' expects {len(info.shape) - 1}-D instances of shape "
            f"{_fmt_shape(info.shape[1:])}, got instances of shape {_fmt_shape(arr.shape[1:])}."
        )
    for want, got in zip(info.shape[1:], arr.shape[1:]):
        if want is not None and want != got:
            raise InputError(
                f"Input '{info.name}' expects instances of shape {_fmt_shape(info.shape[1:])}, "
                f"got {_fmt_shape(arr.shape[1:])}."
            )


def _fmt_shape(shape) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


# ---- replies ----------------------------------------------------------------------------------


def format_predict(outputs: dict[str, np.ndarray], req: ParsedRequest, sig: Signature) -> bytes:
    """The JSON reply: `{"predictions": [...]}` (row) or `{"outputs": ...}` (columnar)."""
    encode = bool(req.encoded)
    for name, arr in outputs.items():
        arr = np.asarray(arr)
        if req.row_format and (arr.ndim == 0 or arr.shape[0] != req.batch_size):
            raise InputError(
                f"Output '{name}' has {arr.shape[0] if arr.ndim else 'no'} rows for {req.batch_size} instances; "
                "row-format replies need a batch axis (send 'inputs' instead)."
            )
    if encode and req.row_format and all(np.asarray(a).dtype != object for a in outputs.values()):
        return _encoded_rows(outputs, req.batch_size)
    cols: dict[str, Any] = {}
    for name, arr in outputs.items():
        arr = np.asarray(arr)
        if encode and not arr.dtype == object:
            cols[name] = codec.encode_batch(arr) if arr.ndim else codec.encode_tensor(arr)
        else:
            cols[name] = _jsonable(arr, name)
    names = list(cols)
    if req.row_format:
        if len(names) == 1:
            payload = {"predictions": cols[names[0]]}
        else:
            payload = {"predictions": [{k: cols[k][i] for k in names} for i in range(req.batch_size)]}
    else:
        payload = {"outputs": cols[names[0]] if len(names) == 1 else cols}
    return json.dumps(payload, separators=(",", ":")).encode()


def _encoded_rows(outputs: dict[str, np.ndarray], n: int) -> bytes:
    """EE-format reply built from byte pieces: base64 needs no escaping, so no json.dumps pass
    over megabytes of text."""
    names = list(outputs)
    keys = [json.dumps(k).encode() for k in names]
    parts = [b'{"predictions":[']
    for i in range(n):
        if i:
            parts.append(b",")
        if len(names) == 1:
            parts += [b'"', codec.encode_tensor_bytes(outputs[names[0]][i]), b'"']
            continue
        parts.append(b"{")
        for j, k in enumerate(names):
            parts += [b"," if j else b"", keys[j], b':"', codec.encode_tensor_bytes(outputs[k][i]), b'"']
        parts.append(b"}")
    parts.append(b"]}")
    return b"".join(parts)


def _jsonable(arr: np.ndarray, name: str):
    if arr.dtype == object or arr.dtype.kind == "S":
        as_b64 = name.endswith("_bytes")
        flat = [_string_out(v, as_b64) for v in arr.reshape(-1).tolist()]
        return np.array(flat, dtype=object).reshape(arr.shape).tolist() if arr.ndim else flat[0]
    return arr.tolist()  # NaN/Infinity become JSON tokens, as TF Serving writes them


def _string_out(v, as_b64: bool):
    if isinstance(v, str):
        v = v.encode()
    if not as_b64:
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return {"b64": base64.b64encode(v).decode("ascii")}


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


# ---- status / metadata -------------------------------------------------------------------------

_DT_ENUM_NAMES = {
    "float32": "DT_FLOAT",
    "float64": "DT_DOUBLE",
    "int32": "DT_INT32",
    "uint8": "DT_UINT8",
    "int16": "DT_INT16",
    "int8": "DT_INT8",
    "string": "DT_STRING",
    "int64": "DT_INT64",
    "bool": "DT_BOOL",
    "uint16": "DT_UINT16",
    "float16": "DT_HALF",
    "uint32": "DT_UINT32",
    "uint64": "DT_UINT64",
}


def status_json(version: str = "1") -> dict:
    """GET /v1/models/NAME, as TF Serving answers it for a loaded model."""
    return {
        "model_version_status": [
            {"version": version, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }


def metadata_json(name: str, signatures: dict[str, Signature], version: str = "1") -> dict:
    """GET /v1/models/NAME/metadata: the SignatureDefs in TF Serving's JSON shape."""

    def tensor(info: TensorInfo) -> dict:
        dt = "string" if info.is_string else str(info.dtype)
        shape = (
            {"dim": [], "unknown_rank": True}
            if info.shape is None
            else {
                "dim": [{"size": str(-1 if d is None else d), "name": ""} for d in info.shape],
                "unknown_rank": False,
            }
        )
        return {
            "dtype": _DT_ENUM_NAMES.get(dt, dt),
            "tensor_shape": shape,
            "name": info.tensor_name or info.name,
        }

    defs = {
        key: {
            "inputs": {k: tensor(v) for k, v in sig.inputs.items()},
            "outputs": {k: tensor(v) for k, v in sig.outputs.items()},
            "method_name": "tensorflow/serving/predict",
            "defaults": {},
        }
        for key, sig in signatures.items()
    }
    return {
        "model_spec": {"name": name, "signature_name": "", "version": version},
        "metadata": {"signature_def": {"signature_def": defs}},
    }

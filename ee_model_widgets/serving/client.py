"""REST predictor client: the transport under `Model.from_vertex_ai` (whose constructors are
`serving/rest_models.py`).

One `RestPredictor` turns a batch of model inputs (dict name -> (N, H, W, C) arrays) into
`:predict` requests the way Earth Engine does (docs/earth-engine-semantics.md, section 3):

- payload formats `SERIALIZED_TF_TENSORS` (default: `{"instances": [{name: <web-safe base64
  TensorProto>}]}`), `RAW_JSON` (`{name: nested lists of JSON numbers}`) and
  `ND_ARRAYS` (bare nested lists, all inputs stacked channels-first as [C][H][W], the layout
  EE's PyTorch example consumes); replies may be single-output bare values or multi-output dicts;
- instances are packed into requests whose bodies stay under `max_payload_bytes` (divided by
  Earth Engine's `outputMultiplier`, so that larger replies fit too); requests run
  concurrently (at most `max_concurrency` at once, shared by every caller of the predictor);
- connection errors, 429, 502, 503 and 504 are retried by urllib3's `Retry`, with its
  exponential backoff (honouring `Retry-After`, at most 30 s); a reply slower than `timeout`
  seconds fails at once with a clear error, and so does one whose body takes longer than
  `timeout` to arrive (a trickling server) or grows past `max_reply_bytes`;
- any other failure raises `ServingError` carrying the server's own error text.

`endpoint` is any TF-Serving-compatible URL (ours, TF Serving, KServe v1:
`http://host:port/v1/models/NAME` -> POST `...:predict`) or a Vertex AI resource name
`projects/P/locations/L/endpoints/E` (Google credentials via the optional `google-auth` extra).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from urllib3 import exceptions as http_errors

from ..errors import InputError, ServingError
from . import codec, protocol
from .transport import RETRY_STATUSES, _pool_manager, _retry, _text, _transport_error, read_reply

PAYLOAD_FORMATS = ("SERIALIZED_TF_TENSORS", "RAW_JSON", "ND_ARRAYS")
GRPC_FORMATS = (
    "GRPC_TF_TENSORS",
    "GRPC_SERIALIZED_TF_TENSORS",
    "GRPC_TF_EXAMPLES",
    "GRPC_SERIALIZED_TF_EXAMPLES",
)
DEFAULT_MAX_PAYLOAD_BYTES = 1_500_000
# Requests in flight per predictor. A batching server is kept busy when twice what one model
# call takes is in flight: one batch runs while the next arrives and is parsed. With 4, our
# server ran one-tile requests in batches of 2; with 8, of ~4 (benchmarks/serving.py).
DEFAULT_MAX_CONCURRENCY = 8
# A reply tensor may declare its shape with no data (TensorProto's "splat" form), so a hostile or
# broken endpoint could make a few bytes allocate gigabytes in the user's kernel: each decoded
# output instance is capped at 2**25 elements (128 MiB of float32, a 4096 x 4096 x 2 tile).
MAX_REPLY_ELEMENTS = 1 << 25
# A reply is expected to be about max_payload_bytes (EE's outputMultiplier sizes requests so);
# one of more than 16 times that (at least 64 MiB) is refused while it arrives, so that a broken
# or hostile endpoint cannot fill the kernel's memory with one endless reply.
REPLY_BYTES_PER_PAYLOAD_BYTE = 16
MIN_MAX_REPLY_BYTES = 64 << 20
_VERTEX_RESOURCE = re.compile(r"^projects/([^/]+)/locations/([^/]+)/endpoints/([^/:]+)$")
_ENVELOPE = len(b'{"instances":[]}')
_CLOUD_SCOPE = "https://www.googleapis.com/auth/cloud-platform"


# ---- endpoints and credentials ----------------------------------------------------------------


def predict_url(endpoint: str) -> str:
    """The POST URL for `endpoint` (URL or Vertex resource name); bad forms raise InputError."""
    if not isinstance(endpoint, str) or not endpoint.strip():
        raise InputError(f"endpoint must be a URL or a Vertex AI endpoint name, got {endpoint!r}.")
    ep = endpoint.strip()
    m = _VERTEX_RESOURCE.match(ep)
    if m:
        return f"https://{m[2]}-aiplatform.googleapis.com/v1/{ep}:predict"
    if re.match(r"^https?://", ep, re.I):
        ep = ep.rstrip("/")
        last = ep.rsplit("/", 1)[-1]
        return ep if ":" in last else ep + ":predict"  # keep an explicit verb (:predict, :rawPredict)
    raise InputError(
        f"endpoint {endpoint!r} is neither an http(s) URL (e.g. http://127.0.0.1:8501/v1/models/NAME) "
        "nor a Vertex AI endpoint name (projects/PROJECT/locations/REGION/endpoints/ID)."
    )


def _needs_google_auth(url: str) -> bool:
    host = re.sub(r"^https?://", "", url, flags=re.I).split("/", 1)[0].split(":", 1)[0]
    return host.endswith(".googleapis.com") or host == "googleapis.com"


class GoogleAuth:
    """Bearer tokens from Application Default Credentials, refreshed when they expire."""

    def __init__(self):
        try:
            import google.auth
            import google.auth.transport.requests
        except ImportError:
            raise ServingError(
                "Google endpoints (Vertex AI, AI Platform) need Google credentials, and the google-auth "
                "package is not installed: pip install 'ee_model_widgets[google]', then run "
                "`gcloud auth application-default login`."
            ) from None
        try:
            self._creds, _ = google.auth.default(scopes=[_CLOUD_SCOPE])
        except Exception as exc:  # DefaultCredentialsError and friends
            raise ServingError(
                f"No Google credentials found ({exc}). Run `gcloud auth application-default login` "
                "or set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file."
            ) from None
        self._request = google.auth.transport.requests.Request()
        self._lock = threading.Lock()

    def headers(self) -> dict[str, str]:
        with self._lock:
            if not self._creds.valid:
                try:
                    self._creds.refresh(self._request)
                except Exception as exc:  # RefreshError, transport errors
                    raise ServingError(f"Could not refresh Google credentials: {exc}.") from None
            return {"Authorization": f"Bearer {self._creds.token}"}


# ---- payloads ------------------------------------------------------------------------------------


def _instance_encoder(inputs: Mapping[str, np.ndarray], payload_format: str) -> Callable[[int], list]:
    """`encode(i)`: row i of the batch as one JSON instance (the bytes between the commas of
    `"instances": [...]`), in pieces that are joined once per request body (a tile is ~1.4 MB
    of base64: every avoided copy counts). Instances are encoded one by one, just before their
    request is sent."""
    names = list(inputs)
    if payload_format == "SERIALIZED_TF_TENSORS":
        # web-safe base64 never needs JSON escaping; names go through json.dumps once
        keys = [json.dumps(k).encode() for k in names]

        def tensors(i: int) -> list:
            parts = [b"{"]
            for j, k in enumerate(names):
                parts += [b"," if j else b"", keys[j], b':"', codec.encode_tensor_bytes(inputs[k][i]), b'"']
            parts.append(b"}")
            return parts

        return tensors
    if payload_format == "RAW_JSON":
        # JSON numbers, as TF Serving, KServe and TorchServe parse them (TF Serving refuses number
        # strings for numeric inputs, although Earth Engine's guide says it sends strings)
        def raw_json(i: int) -> list:
            row = {k: np.asarray(inputs[k][i]).tolist() for k in names}
            return [json.dumps(row, separators=(",", ":")).encode()]

        return raw_json
    # ND_ARRAYS: no keys; all inputs stacked channels-first, one [C][H][W] nested list per instance
    stacked = _channels_first(inputs)
    return lambda i: [json.dumps(stacked[i].tolist(), separators=(",", ":")).encode()]


def _channels_first(inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    arrays = [np.asarray(a) for a in inputs.values()]
    if len(arrays) == 1 and arrays[0].ndim != 4:
        return arrays[0]
    if any(a.ndim != 4 for a in arrays) or len({a.shape[:3] for a in arrays}) != 1:
        raise InputError(
            "ND_ARRAYS sends all inputs as one [C][H][W] array per instance, so every input must be an "
            f"(N, H, W, C) image tensor of the same size; got shapes {[a.shape for a in arrays]}."
        )
    stacked = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=-1)
    return np.transpose(stacked, (0, 3, 1, 2))


def _requests(encode: Callable[[int], list], n: int, max_payload_bytes: int, too_big: Callable[[int], str]):
    """Greedy, order-preserving split of the n instances into request bodies under the limit,
    yielded as soon as each body is complete: `(instance indices, body)`."""
    idx: list[int] = []
    parts: list = [b'{"instances":[']
    size = _ENVELOPE
    for i in range(n):
        inst = encode(i)
        length = sum(len(p) for p in inst)
        if length + _ENVELOPE > max_payload_bytes:
            raise ServingError(too_big(length + _ENVELOPE))
        if idx and size + 1 + length > max_payload_bytes:
            yield idx, b"".join([*parts, b"]}"])
            idx, parts, size = [], [b'{"instances":['], _ENVELOPE
        if idx:
            parts.append(b",")
            size += 1
        idx.append(i)
        parts += inst
        size += length
    if idx:
        yield idx, b"".join([*parts, b"]}"])


def _too_large_reply(where: str, exc: Exception) -> str:
    return (
        f"{where}: the endpoint's reply declares a tensor far larger than a tile, refused before "
        f"allocating it ({exc.args[0].split(';')[0]}; this client accepts at most {MAX_REPLY_ELEMENTS} "
        "elements per output instance). Check that the endpoint serves the model you meant."
    )


def _decode_value(value: Any, payload_format: str, where: str) -> np.ndarray:
    """One output of one instance from the reply."""
    if isinstance(value, str) and payload_format == "SERIALIZED_TF_TENSORS":
        try:
            return codec.decode_tensor(value, copy=False, max_elements=MAX_REPLY_ELEMENTS)  # _stack copies
        except codec.TensorTooLarge as exc:
            raise ServingError(_too_large_reply(where, exc)) from None
        except InputError as exc:
            raise ServingError(f"{where}: not a base64 serialized TensorProto ({exc}).") from None
    if isinstance(value, dict) and set(value) == {"b64"}:
        raw = codec.decode_base64(value["b64"])
        try:  # either the TensorProto bytes, or the graph's base64 text wrapped once more
            return codec.parse_tensor(raw, max_elements=MAX_REPLY_ELEMENTS)
        except codec.TensorTooLarge as exc:
            raise ServingError(_too_large_reply(where, exc)) from None
        except InputError:
            return codec.decode_tensor(raw, max_elements=MAX_REPLY_ELEMENTS)
    arr = _numeric(value, where)
    if payload_format == "ND_ARRAYS":
        if arr.ndim == 2:  # [H][W] -> (H, W, 1)
            arr = arr[..., None]
        elif arr.ndim == 3:  # channels-first [C][H][W] -> (H, W, C)
            arr = np.transpose(arr, (1, 2, 0))
    return arr


def _numeric(value: Any, where: str) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except ValueError:
        raise ServingError(f"{where}: ragged nested lists, not a tensor.") from None
    if arr.dtype.kind == "U":  # numbers as JSON strings (RAW_JSON)
        try:
            arr = arr.astype(np.float64)
        except ValueError:
            raise ServingError(f"{where}: expected numbers, got {str(value)[:80]!r}.") from None
    if arr.dtype.kind not in "biuf":
        raise ServingError(f"{where}: expected numbers or base64 tensors, got {str(value)[:80]!r}.")
    return arr.astype(np.float32) if arr.dtype == np.float64 else arr


# ---- the predictor ---------------------------------------------------------------------------------


class RestPredictor:
    """Callable `fn(dict name -> (N, ...)) -> array or dict` that predicts through a REST endpoint."""

    def __init__(
        self,
        endpoint: str,
        *,
        payload_format: str = "SERIALIZED_TF_TENSORS",
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        timeout: float = 60.0,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        max_retries: int = 4,
        backoff: float = 0.25,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        auth: Callable[[], Mapping[str, str]] | None = None,
    ):
        self.payload_format = check_payload_format(payload_format)
        if (
            isinstance(max_payload_bytes, bool)
            or not isinstance(max_payload_bytes, int)
            or max_payload_bytes < 64
        ):
            raise InputError(
                f"max_payload_bytes must be an integer of at least 64, got {max_payload_bytes!r}."
            )
        if not (isinstance(max_concurrency, int) and max_concurrency >= 1):
            raise InputError(f"max_concurrency must be a positive integer, got {max_concurrency!r}.")
        if not (isinstance(max_retries, int) and max_retries >= 0):
            raise InputError(f"max_retries must be 0 or more, got {max_retries!r}.")
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise InputError(f"timeout must be a positive number of seconds, got {timeout!r}.")
        self.endpoint = endpoint
        self.url = predict_url(endpoint)
        self.max_payload_bytes = max_payload_bytes
        #: Earth Engine's outputMultiplier: the reply is expected to be about this many times the
        #: request, so request bodies are kept under max_payload_bytes / output_multiplier.
        self.output_multiplier = 1.0
        self.timeout = float(timeout)
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.backoff = backoff
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        self._private_headers = frozenset(headers or ())  # not sent on to another host by a redirect
        if token:
            if not re.fullmatch(r"[\x21-\x7e]+", str(token)):  # http.client would fail at the first request
                raise InputError("token may only contain visible ASCII characters (no spaces).")
            self._headers["Authorization"] = f"Bearer {token}"
        if auth is None and not token and _needs_google_auth(self.url):
            auth = GoogleAuth().headers
        self._auth = auth
        self._client = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self.stats = {"calls": 0, "requests": 0, "retries": 0, "instances": 0, "bytes_sent": 0}

    @property
    def request_limit(self) -> int:
        """Largest request body: max_payload_bytes, divided by output_multiplier so that replies
        about output_multiplier times larger than their request stay under the limit too."""
        return max(1, int(self.max_payload_bytes / self.output_multiplier))

    @property
    def fingerprint(self) -> str:
        """Identifies what this predictor computes: endpoint + payload format."""
        return f"rest:{self.url}|{self.payload_format}"

    def __repr__(self) -> str:
        return f"RestPredictor({self.url!r}, payload_format={self.payload_format!r})"

    # Sent to other processes (dask workers) without its connections, threads and lock: the
    # copy opens its own on first use. `core.portable` relies on this and never imports us.
    def __getstate__(self) -> dict:
        return dict(self.__dict__, _client=None, _pool=None, _lock=None)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    # ---- plumbing ---------------------------------------------------------------------------------
    def _http(self):
        with self._lock:
            if self._client is None:
                self._client = _pool_manager(self.max_concurrency, self.timeout)
                self._pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="ee-model-rest")
            return self._client, self._pool

    def close(self) -> None:
        """Close connections and worker threads (a new call reopens them)."""
        with self._lock:
            if self._client is not None:
                self._client.clear()
                self._pool.shutdown(wait=False)
                self._client, self._pool = None, None

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    def _count(self, **kw: int) -> None:
        with self._lock:
            for k, v in kw.items():
                self.stats[k] += v

    # ---- the call -----------------------------------------------------------------------------------
    def __call__(self, inputs: Mapping[str, np.ndarray]):
        """Predict a batch: returns one array (single-output replies) or dict name -> array."""
        arrays = {k: np.asarray(v) for k, v in inputs.items()}
        if not arrays:
            raise InputError("A prediction needs at least one input.")
        sizes = {len(a) if a.ndim else None for a in arrays.values()}
        if len(sizes) != 1 or None in sizes:
            raise InputError(
                f"All inputs need the same batch size on axis 0, got shapes {[a.shape for a in arrays.values()]}."
            )
        n = sizes.pop()
        if n == 0:
            raise InputError("A prediction needs at least one instance.")
        shapes = ", ".join(f"{k} {a.shape[1:]} {a.dtype}" for k, a in arrays.items())

        limit = self.request_limit
        over = f"max_payload_bytes={self.max_payload_bytes}"
        if limit != self.max_payload_bytes:
            over += f" / output_multiplier={self.output_multiplier:g} = {limit}"

        def too_big(size: int) -> str:
            return (
                f"One instance ({shapes}) takes {size} bytes as {self.payload_format}, over {over}: use a "
                "smaller input_tile_size (bytes grow with its square), or raise max_payload_bytes if the "
                "endpoint accepts larger requests."
            )

        self._count(calls=1, instances=n)
        _, pool = self._http()
        # Encoding, the round trips and decoding overlap: a request leaves as soon as its body
        # is complete, and each reply is decoded by the thread that received it.
        encode = _instance_encoder(arrays, self.payload_format)
        futures = []
        try:
            for idx, body in _requests(encode, n, limit, too_big):
                futures.append((idx, pool.submit(self._request, body, len(idx))))
            replies = [(idx, f.result()) for idx, f in futures]
        except BaseException:
            for _, f in futures:
                f.cancel()
            raise
        return self._assemble(replies, n)

    def _request(self, body: bytes, n: int) -> list:
        """POST one body (urllib3 retries it, see `_retry`); the n predictions, decoded."""
        client, _ = self._http()
        headers = dict(self._headers)
        if self._auth is not None:
            headers.update(self._auth())
        try:
            resp = client.request(
                "POST",
                self.url,
                body=body,
                headers=headers,
                retries=_retry(self.max_retries, self.backoff, self._private_headers),
                preload_content=False,  # read by `_read_reply`, under a deadline and a size limit
            )
        except http_errors.ReadTimeoutError:
            self._count(requests=1, bytes_sent=len(body))
            raise ServingError(
                f"No reply from {self.url} within timeout={self.timeout:g} s. The model may be slow or "
                "overloaded: raise timeout=..., or send less per request (smaller max_payload_bytes)."
            ) from None
        except http_errors.HTTPError as exc:  # refused, connect timeout, reset, closed without answer
            attempts = self.max_retries + 1  # urllib3 gives up only when every retry is spent
            self._count(requests=attempts, retries=self.max_retries, bytes_sent=attempts * len(body))
            if "WRONG_VERSION_NUMBER" in str(exc) or "record layer failure" in str(exc):
                raise ServingError(  # OpenSSL's words for a plain-HTTP answer to a TLS hello
                    f"{self.url} answered in plain HTTP, not HTTPS ({_transport_error(exc)}): "
                    "write the endpoint with http://."
                ) from None
            raise ServingError(
                f"Cannot reach {self.url} ({_transport_error(exc)}) after {attempts} attempt(s). "
                "Is the server running and the URL right? (start one with `ee-model serve MODEL_DIR --name NAME`)"
            ) from None
        retries = len(resp.retries.history) if resp.retries is not None else 0
        self._count(requests=1 + retries, retries=retries, bytes_sent=(1 + retries) * len(body))
        data = self._read_reply(resp, len(body))
        return [self._decode(p) for p in self._predictions(resp, data, n, len(body), retries)]

    @property
    def max_reply_bytes(self) -> int:
        """Largest reply body read: REPLY_BYTES_PER_PAYLOAD_BYTE x max_payload_bytes, at least 64 MiB."""
        return max(MIN_MAX_REPLY_BYTES, REPLY_BYTES_PER_PAYLOAD_BYTE * self.max_payload_bytes)

    def _read_reply(self, resp, body_bytes: int) -> bytes:
        return read_reply(
            resp,
            self.url,
            self.timeout,
            self.max_reply_bytes,
            f"for a request of {body_bytes} bytes; refused before it fills memory. Check that the endpoint "
            "serves the model you meant; if replies this large are expected, raise max_payload_bytes "
            f"(replies may be {REPLY_BYTES_PER_PAYLOAD_BYTE} times it, at least 64 MiB).",
        )

    def _predictions(self, resp, data: bytes, n: int, body_bytes: int, attempt: int) -> list:
        try:
            obj = protocol.loads(data)
        except ValueError:
            obj = None
        if resp.status != 200:
            detail = (
                obj.get("error")
                if isinstance(obj, dict) and "error" in obj
                else _text(data)[:500] or "(empty body)"
            )
            if isinstance(detail, dict):  # Google APIs: {"error": {"code", "message", "status"}}
                detail = detail.get("message") or json.dumps(detail)
            raise ServingError(
                f"{self.url} answered HTTP {resp.status} {resp.reason or ''}: {detail}"
                + _hint(resp.status, self, body_bytes, attempt)
            )
        if obj is None:
            ctype = resp.headers.get("content-type", "no content-type")
            raise ServingError(
                f"{self.url} answered something that is not JSON ({ctype}): {_text(data)[:200]!r}."
            )
        if not isinstance(obj, dict) or "predictions" not in obj:
            if isinstance(obj, dict) and "error" in obj:
                raise ServingError(f"{self.url} answered an error: {obj['error']}")
            keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
            raise ServingError(f"{self.url} answered JSON without 'predictions' (got {keys}).")
        if obj.get("error"):  # predictions next to an error may be placeholders (zeros): not used
            raise ServingError(f"{self.url} answered an error next to its predictions: {obj['error']}")
        preds = obj["predictions"]
        if not isinstance(preds, list) or len(preds) != n:
            got = len(preds) if isinstance(preds, list) else type(preds).__name__
            raise ServingError(
                f"{self.url} returned {got} predictions for {n} instances; expected one per instance."
            )
        return preds

    def _decode(self, prediction: Any):
        """One instance's reply: an array, or dict output name -> array (multi-output models)."""
        if isinstance(prediction, dict) and set(prediction) != {"b64"}:
            return {
                k: _decode_value(v, self.payload_format, f"{self.url} output {k!r}")
                for k, v in prediction.items()
            }
        return _decode_value(prediction, self.payload_format, f"{self.url} prediction")

    def _assemble(self, replies: list[tuple[list[int], list]], n: int):
        preds: list = [None] * n
        for idx, reply in replies:
            for i, p in zip(idx, reply):
                preds[i] = p
        if isinstance(preds[0], dict):
            names = list(preds[0])
            if any(not isinstance(p, dict) or list(p) != names for p in preds):
                raise ServingError(f"{self.url}: predictions do not all name the same outputs {names}.")
            return {k: self._stack([p[k] for p in preds], f"{self.url} output {k!r}") for k in names}
        if any(isinstance(p, dict) for p in preds):
            raise ServingError(f"{self.url}: predictions mix named and unnamed outputs.")
        return self._stack(preds, f"{self.url} prediction")

    @staticmethod
    def _stack(arrays: list[np.ndarray], where: str) -> np.ndarray:
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise ServingError(f"{where}: instances came back with different shapes {sorted(shapes)}.")
        return np.stack(arrays)


def _hint(status: int, p: RestPredictor, body_bytes: int, attempt: int) -> str:
    if status in (401, 403):
        return (
            " -- check the credentials: pass token=... for a server started with --token; for Vertex AI run "
            "`gcloud auth application-default login` and make sure you have the 'Vertex AI User' role."
        )
    if status == 404:
        return " -- check the endpoint URL and model name (GET the URL without ':predict' lists the model's status)."
    if status == 413:
        return (
            f" -- the request had {body_bytes} bytes (max_payload_bytes={p.max_payload_bytes}): lower "
            "max_payload_bytes or use a smaller input_tile_size."
        )
    if status in RETRY_STATUSES:
        return f" -- still failing after {attempt} retr{'y' if attempt == 1 else 'ies'}; try again later."
    if status == 400:
        return (
            " -- the server rejected the request: compare input names, tile shapes and dtypes with the model's "
            "metadata (GET <url>/metadata)."
        )
    return ""


def check_payload_format(payload_format: str) -> str:
    """Normalise and validate a payload format name; gRPC ones get an error naming the alternatives."""
    fmt = str(payload_format).upper()
    if fmt in PAYLOAD_FORMATS:
        return fmt
    if fmt in GRPC_FORMATS or fmt == "GRPC_SERAILZED_TF_EXAMPLES":
        raise InputError(
            f"payload_format {payload_format!r} needs gRPC, which ee_model_widgets does not speak. Supported: "
            f"{', '.join(PAYLOAD_FORMATS)}. A model deployed for GRPC_SERIALIZED_TF_TENSORS (an EE-prepared "
            "model) answers SERIALIZED_TF_TENSORS over REST unchanged; GRPC_TF_TENSORS models take RAW_JSON."
        )
    raise InputError(f"Unknown payload_format {payload_format!r}: use one of {', '.join(PAYLOAD_FORMATS)}.")

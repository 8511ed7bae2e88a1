"""How an image and its models travel to another process (a dask worker), and load there once.

An `Image` is a small graph of Python objects (a prediction holds its model and its source
image, a band view its parent...). To run part of it on a worker we pickle that graph with
`dumps`, whose pickler replaces what must not travel:

- an `emw.Model` travels as its `ModelSpec` (a `.keras`/SavedModel path, the bytes of a
  `.keras` file for a model built in memory, a REST endpoint, or a picklable function) plus
  its Earth Engine parameters, never as a TensorFlow object; the worker loads it with the
  same constructor, once per process (`load_model` keeps it by fingerprint);
- locks, thread-locals and cell caches are per process: they arrive new and empty;
- a REST predictor travels as its settings, without its open connections.

Everything else (file paths, in-memory arrays, synthetic scenes) pickles as is: the blob is
sent to each worker once (as one task's result), and `load_image` unpickles it once per worker
process, so in-memory arrays and models are not re-sent or re-loaded per task.
"""

from __future__ import annotations

import _thread
import hashlib
import io
import os
import pickle
import tempfile
import threading
from collections import OrderedDict
from typing import Any

from ..errors import ModelError
from .model_spec import ModelSpec

# Loaded objects per process: models by fingerprint, images by blob token (small LRUs).
_MODELS: OrderedDict[str, Any] = OrderedDict()
_IMAGES: OrderedDict[str, Any] = OrderedDict()
_LOAD_LOCK = threading.RLock()
_KEEP = 8


def _load_spec(spec: ModelSpec):
    """Build the Model this spec describes (without EE parameters: the caller sets them)."""
    from .model import Model

    opts = spec._public_options()
    if spec.kind == "keras":
        if isinstance(spec.source, bytes):
            with tempfile.TemporaryDirectory() as d:
                p = os.path.join(d, "model.keras")
                with open(p, "wb") as fh:
                    fh.write(spec.source)
                return Model.from_keras(p, **opts)
        path = os.fspath(spec.source)
        if not os.path.exists(path):
            raise ModelError(
                f"This worker cannot see the model file {path}: put it on storage every worker "
                "mounts, or pass a keras.Model (it is then sent to the workers as bytes)."
            )
        return Model.from_keras(path, **opts)
    if spec.kind == "saved_model":
        path = os.fspath(spec.source)
        if not os.path.isdir(path):
            raise ModelError(
                f"This worker cannot see the SavedModel directory {path}: put it on storage "
                "every worker mounts (or serve it and use Model.from_vertex_ai)."
            )
        return Model.from_saved_model(path, **opts)
    if spec.kind == "callable":
        return Model.from_callable(spec.source, **opts)
    raise ModelError(f"Unknown model spec kind {spec.kind!r}.")


def _spec_key(spec: ModelSpec) -> str:
    """A digest of what this spec loads (the key under which a worker keeps the model)."""
    key = spec.options.get("_key")
    if key is None:
        key = spec.options["_key"] = token(dumps(spec.portable()))
    return key


def _remember(store: OrderedDict, key: str, value: Any) -> None:
    store[key] = value
    store.move_to_end(key)
    while len(store) > _KEEP:
        store.popitem(last=False)


def load_model(spec: ModelSpec, params, fingerprint: str, name: str, key: str):
    """The model `spec` describes, with `params`: loaded once per process (kept under `key`, the
    digest of the spec), then shared by every image and task that uses it."""
    import copy

    with _LOAD_LOCK:
        base = _MODELS.get(key)
        if base is None:
            base = _load_spec(spec)
            _remember(_MODELS, key, base)
    clone = copy.copy(base)
    clone.params = params  # already completed and checked by the sender
    clone.fingerprint = fingerprint  # so cache keys agree with the sender's
    clone.name = name
    return clone


def _new_cache(max_bytes: int):
    from .cache import CellCache

    return CellCache(max_bytes)


_LOCKS = (type(threading.Lock()), type(threading.RLock()), _thread.LockType)


def _pickler_class():
    try:  # cloudpickle (a dask dependency) also pickles notebook functions and lambdas by value
        import cloudpickle

        return cloudpickle.Pickler
    except ImportError:  # pragma: no cover - without dask only importable functions travel
        return pickle.Pickler


def dumps(obj: Any) -> bytes:
    """Pickle an image (or anything holding images and models) for another process."""
    from .cache import CellCache
    from .model import Model

    base = _pickler_class()

    class _Pickler(base):
        def reducer_override(self, o):
            if isinstance(o, Model):
                spec = getattr(o, "spec", None)
                if spec is None:
                    raise ModelError(
                        f"Model {o.name!r} cannot be sent to workers: it was not built by a Model.from_* "
                        "constructor, so it does not know how to load itself elsewhere."
                    )
                return load_model, (spec.portable(), o.params, o.fingerprint, o.name, _spec_key(spec))
            if isinstance(o, _LOCKS):
                return (threading.RLock if "RLock" in type(o).__name__ else threading.Lock), ()
            if isinstance(o, threading.local):
                return threading.local, ()
            if isinstance(o, threading.Event):
                return threading.Event, ()
            if isinstance(o, CellCache):
                return _new_cache, (o.max_bytes,)
            parent = getattr(super(), "reducer_override", None)
            return parent(o) if parent is not None else NotImplemented

    buf = io.BytesIO()
    _Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buf.getvalue()


def token(blob: bytes) -> str:
    """A short digest naming a blob (the key under which workers keep what it loads to)."""
    return hashlib.blake2b(blob, digest_size=16).hexdigest()


def load_image(blob: bytes, key: str | None = None):
    """Unpickle `blob` once per process (kept under `key`, default its digest)."""
    key = key or token(blob)
    with _LOAD_LOCK:
        obj = _IMAGES.get(key)
        if obj is None:
            obj = pickle.loads(blob)
            _remember(_IMAGES, key, obj)
        else:
            _IMAGES.move_to_end(key)
        return obj


class Portable:
    """An object that stays itself in this process but pickles through `dumps` (for dask graphs):
    on a worker it becomes the object loaded by `load_image`, once per process."""

    def __init__(self, obj: Any):
        self.obj = obj
        self._blob: bytes | None = None
        self._lock = threading.Lock()

    def blob(self) -> tuple[bytes, str]:
        with self._lock:
            if self._blob is None:
                self._blob = dumps(self.obj)
                self._token = token(self._blob)
            return self._blob, self._token

    def __reduce__(self):
        blob, key = self.blob()
        return _loaded_portable, (blob, key)


def _loaded_portable(blob: bytes, key: str) -> Portable:
    p = Portable.__new__(Portable)
    p.obj = load_image(blob, key)
    p._blob, p._token, p._lock = blob, key, threading.Lock()
    return p

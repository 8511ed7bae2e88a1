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
sent to each worker once (`client.scatter`), and `load_image` unpickles it once per worker
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
from dataclasses import dataclass, field
from typing import Any

from ..errors import ModelError

# Loaded objects per process: models by fingerprint, images by blob token (small LRUs).
_MODELS: OrderedDict[str, Any] = OrderedDict()
_IMAGES: OrderedDict[str, Any] = OrderedDict()
_LOAD_LOCK = threading.RLock()
_KEEP = 8


@dataclass
class ModelSpec:
    """What a worker needs to load a model again: `kind` and `source`, plus constructor options.

    kind: "keras" (source: a .keras/.h5 path, a keras.Model, or the bytes of a .keras file),
    "saved_model" (a directory path), "callable" (a picklable function, e.g. a REST predictor).
    """

    kind: str
    source: Any
    options: dict = field(default_factory=dict)

    def portable(self) -> ModelSpec:
        """This spec with an in-memory Keras model replaced by the bytes of its .keras file."""
        if self.kind != "keras" or isinstance(self.source, (str, bytes, os.PathLike)):
            return self
        cached = self.options.get("_bytes")
        if cached is None:
            with tempfile.TemporaryDirectory() as d:
                p = os.path.join(d, "model.keras")
                try:
                    self.source.save(p)
                except Exception as exc:  # noqa: BLE001 - keras raises many types
                    raise ModelError(
                        f"Cannot send Keras model {getattr(self.source, 'name', '?')!r} to the workers: saving it "
                        f"as .keras failed ({type(exc).__name__}: {exc}). Save it yourself and load it with "
                        "Model.from_keras('model.keras') so the workers load the file."
                    ) from None
                with open(p, "rb") as fh:
                    cached = fh.read()
            self.options["_bytes"] = cached  # serialised once per Model, not per export
        return ModelSpec("keras", cached, self._public_options())

    def _public_options(self) -> dict:
        return {k: v for k, v in self.options.items() if not k.startswith("_")}

    def key(self) -> str:
        """A digest of what this spec loads (the key under which a worker keeps the model)."""
        key = self.options.get("_key")
        if key is None:
            key = self.options["_key"] = token(dumps(self.portable()))
        return key

    def load(self):
        """Build the Model this spec describes (without EE parameters: the caller sets them)."""
        from .model import Model

        opts = self._public_options()
        if self.kind == "keras":
            if isinstance(self.source, bytes):
                with tempfile.TemporaryDirectory() as d:
                    p = os.path.join(d, "model.keras")
                    with open(p, "wb") as fh:
                        fh.write(self.source)
                    return Model.from_keras(p, **opts)
            path = os.fspath(self.source)
            if not os.path.exists(path):
                raise ModelError(
                    f"This worker cannot see the model file {path}: put it on storage every worker "
                    "mounts, or pass a keras.Model (it is then sent to the workers as bytes)."
                )
            return Model.from_keras(path, **opts)
        if self.kind == "saved_model":
            path = os.fspath(self.source)
            if not os.path.isdir(path):
                raise ModelError(
                    f"This worker cannot see the SavedModel directory {path}: put it on storage "
                    "every worker mounts (or serve it and use Model.from_vertex_ai)."
                )
            return Model.from_saved_model(path, **opts)
        if self.kind == "callable":
            return Model.from_callable(self.source, **opts)
        raise ModelError(f"Unknown model spec kind {self.kind!r}.")


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
            base = spec.load()
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
                return load_model, (spec.portable(), o.params, o.fingerprint, o.name, spec.key())
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

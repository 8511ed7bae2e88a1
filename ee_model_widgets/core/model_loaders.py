"""How a `Model` is built: `from_keras`, `from_saved_model`, `from_callable`, and the REST
constructors (`ModelLoaders`, a mixin of `Model`).

TensorFlow is imported only when a TF model is loaded. The REST constructors live in
`serving/rest_models.py`, above core; `core/remote.py` finds them (see docs/architecture.md).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from ..errors import InputError, ModelError
from . import remote
from .band_mapping import BAND_INPUTS, DEFAULT_INPUT_NAME, DEFAULT_OUTPUT_NAME, TensorSpec
from .model_spec import ModelSpec
from .params import EEParams

DEFAULT_MAX_BATCH_SIZE = 16

_M = TypeVar("_M", bound="ModelLoaders")


def _describe_exc(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    # TF errors carry long graph dumps: keep the first informative lines.
    text = " ".join(line.strip() for line in msg[:6] if line.strip())
    return f"{type(exc).__name__}: {text[:1500]}" if text else type(exc).__name__


def _call_keras(km, x):
    return km(x, training=False)


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "numpy"):
        value = value.numpy()
    return np.asarray(value)


class ModelLoaders:
    """`Model`'s constructors (a mixin): each builds `cls(call, params, ...)` and sets its `spec`."""

    @classmethod
    def from_keras(
        cls: type[_M],
        model_or_path,
        *,
        max_batch_size: int | None = DEFAULT_MAX_BATCH_SIZE,
        name: str | None = None,
        custom_objects: dict | None = None,
        safe_mode: bool = True,
        **ee_params: Any,
    ) -> _M:
        """A `keras.Model`, or a `.keras` / `.h5` file loaded with `keras.models.load_model`."""
        params = EEParams.from_kwargs(**ee_params)
        import keras

        path = None
        if isinstance(model_or_path, (str, os.PathLike)):
            path = os.fspath(model_or_path)
            if os.path.isdir(path):
                raise ModelError(
                    f"{path} is a directory: load a SavedModel with Model.from_saved_model({path!r}); "
                    "from_keras takes a .keras/.h5 file or a keras.Model."
                )
            if not os.path.exists(path):
                raise ModelError(f"No such model file: {path}. Check the path.")
            try:
                km = keras.models.load_model(
                    path, compile=False, custom_objects=custom_objects, safe_mode=safe_mode
                )
            except Exception as exc:  # noqa: BLE001 - keras raises many types
                raise ModelError(
                    f"Cannot load {path} as a Keras model ({_describe_exc(exc)}). Is it a complete "
                    ".keras/.h5 file? Models with Lambda layers need safe_mode=False; custom layers "
                    "need custom_objects={...}."
                ) from None
        elif isinstance(model_or_path, keras.Model):
            km = model_or_path
        else:
            raise InputError(
                f"from_keras takes a keras.Model or a path to a .keras/.h5 file, got {type(model_or_path).__name__}."
            )
        if not getattr(km, "inputs", None):
            raise ModelError(
                f"Keras model {km.name!r} has no defined inputs (a subclassed model that was never "
                "built?): build it with keras.Input(...) or call it once on data first."
            )
        import tensorflow as tf

        in_specs = [
            TensorSpec(n, tuple(t.shape), np.dtype(keras.backend.standardize_dtype(t.dtype)))
            for n, t in keras_inputs(km)
        ]
        try:
            out_struct = km.output
        except Exception:  # noqa: BLE001 - some models have no single output structure
            out_struct = None
        if isinstance(out_struct, Mapping):  # it returns this dict: its keys name the outputs
            named = sorted((str(k), t) for k, t in out_struct.items())  # Keras' flattened order
            out_names, out_tensors = [n for n, _ in named], [t for _, t in named]
        else:
            out_names = list(getattr(km, "output_names", None) or [])
            out_tensors = list(km.outputs)
        if len(out_names) != len(out_tensors):
            out_names = (
                [DEFAULT_OUTPUT_NAME]
                if len(out_tensors) == 1
                else [f"output_{i}" for i in range(len(out_tensors))]
            )
        out_specs = [
            TensorSpec(n, tuple(t.shape), np.dtype(keras.backend.standardize_dtype(t.dtype)))
            for n, t in zip(out_names, out_tensors)
        ]
        single = len(in_specs) == 1

        # One tf.function per model, over a partial rather than a closure: TensorFlow counts
        # traces per code object, so closures of every model loaded in a session would add up
        # to its "excessive retracing" warning after five models (e.g. switching in the panel).
        forward = tf.function(functools.partial(_call_keras, km), reduce_retracing=True)

        def call(batch: dict[str, np.ndarray]):
            x = next(iter(batch.values())) if single else batch
            out = forward(x)
            if isinstance(out, Mapping):
                return {k: _as_numpy(v) for k, v in out.items()}
            if isinstance(out, (list, tuple)):
                return {n: _as_numpy(v) for n, v in zip(out_names, out)}
            return {out_names[0]: _as_numpy(out)}

        fp = _keras_fingerprint(km)
        model = cls(
            call,
            params,
            name=name or km.name,
            fingerprint=fp,
            inputs=in_specs,
            outputs=out_specs,
            max_batch_size=max_batch_size,
            serialize_calls=True,
            single_input_positional=single,
        )
        opts = dict(
            max_batch_size=max_batch_size, name=name, custom_objects=custom_objects, safe_mode=safe_mode
        )
        model.spec = ModelSpec("keras", path or km, opts)  # how a dask worker loads it (core/portable.py)
        return model

    @classmethod
    def from_saved_model(
        cls: type[_M],
        path,
        signature: str = "serving_default",
        *,
        max_batch_size: int | None = DEFAULT_MAX_BATCH_SIZE,
        name: str | None = None,
        **ee_params: Any,
    ) -> _M:
        """A TensorFlow SavedModel directory (e.g. from `tf.saved_model.save` or keras
        `model.export()`), called through its `signature`."""
        params = EEParams.from_kwargs(**ee_params)
        import tensorflow as tf

        path_s = os.fspath(path)
        if not os.path.isdir(path_s):
            raise ModelError(
                f"{path_s} is not a SavedModel directory"
                + (
                    " (it is a file: use Model.from_keras for .keras/.h5 files)."
                    if os.path.isfile(path_s)
                    else "."
                )
            )
        if not any(os.path.isfile(os.path.join(path_s, f)) for f in ("saved_model.pb", "saved_model.pbtxt")):
            raise ModelError(
                f"{path_s} is not a SavedModel directory (no saved_model.pb).{_dir_hint(path_s)}"
            )
        try:
            loaded = tf.saved_model.load(path_s)
        except Exception as exc:  # noqa: BLE001
            raise ModelError(
                f"Cannot load the SavedModel at {path_s} ({_describe_exc(exc)}). Is saved_model.pb there and complete?"
            ) from None
        sigs = dict(getattr(loaded, "signatures", {}) or {})
        if signature not in sigs:
            avail = sorted(sigs)
            raise ModelError(
                f"The SavedModel at {path_s} has no signature {signature!r}; it has "
                f"{avail if avail else 'no signatures at all (save it with signatures=...)'}."
                + (f" Pass signature={avail[0]!r}." if avail else "")
            )
        fn = sigs[signature]
        _, kw_spec = fn.structured_input_signature
        in_specs = [
            TensorSpec(
                k,
                tuple(s.shape.as_list()) if s.shape.rank is not None else None,
                np.dtype(s.dtype.as_numpy_dtype),
            )
            for k, s in sorted(kw_spec.items())
        ]
        out_struct = fn.structured_outputs
        out_specs = [
            TensorSpec(
                k,
                tuple(s.shape.as_list()) if s.shape.rank is not None else None,
                np.dtype(s.dtype.as_numpy_dtype),
            )
            for k, s in sorted(out_struct.items())
        ]
        not_numeric = [
            (s.name, s.dtype) for s in in_specs if s.dtype is not None and s.dtype.kind not in "biuf"
        ]
        if not_numeric:
            name, dt = not_numeric[0]
            raise ModelError(
                f"Signature {signature!r} of {path_s} takes input {name!r} as {dt} (not a numeric tensor): "
                "this looks like a model wrapped by `earthengine model prepare` (base64 TensorProto strings). "
                "Serve it with `ee-model serve` and use Model.from_vertex_ai, or load the original model."
            )
        tf_dtypes = {k: s.dtype for k, s in kw_spec.items()}

        def call(batch: dict[str, np.ndarray]):
            out = fn(**{k: tf.convert_to_tensor(v, dtype=tf_dtypes.get(k)) for k, v in batch.items()})
            return {k: _as_numpy(v) for k, v in out.items()}

        fp = _dir_fingerprint(path_s, signature)
        model = cls(
            call,
            params,
            name=name or os.path.basename(os.path.normpath(path_s)),
            fingerprint=fp,
            inputs=in_specs,
            outputs=out_specs,
            max_batch_size=max_batch_size,
            serialize_calls=True,
        )
        model.spec = ModelSpec(
            "saved_model", path_s, dict(signature=signature, max_batch_size=max_batch_size, name=name)
        )
        return model

    @classmethod
    def from_callable(
        cls: type[_M],
        fn: Callable[[dict[str, np.ndarray]], Any],
        *,
        name: str | None = None,
        fingerprint: str | None = None,
        input_names: Sequence[str] | None = None,
        output_names: Sequence[str] | None = None,
        max_batch_size: int | None = DEFAULT_MAX_BATCH_SIZE,
        thread_safe: bool = False,
        **ee_params: Any,
    ) -> _M:
        """Any function `fn(dict name -> (N, H, W, C) float32) -> dict name -> array (or one array)`.

        `input_names`: the model's input names (default: one input, "array", which receives
        the image's bands stacked); give band names for per-band inputs, or "bands" for
        whatever bands the image has, each under its own name (EE's request). `fingerprint`: a
        stable string identifying the function's behaviour, so its predictions can be cached
        across Model objects (default: unique per Model object). `output_names`: the keys of
        the returned dict, when known up front. `thread_safe`: the map renders tiles on several
        threads, so `fn` runs one call at a time unless it is declared safe to call concurrently
        (pure numpy, a REST client): a stateful model would otherwise mix tiles up.
        """
        if not callable(fn):
            raise InputError(f"from_callable needs a function, got {type(fn).__name__}.")
        params = EEParams.from_kwargs(**ee_params)
        names = [DEFAULT_INPUT_NAME] if input_names is None else input_names
        if isinstance(names, str) and names == BAND_INPUTS:
            in_specs = None
        elif (
            isinstance(names, str)
            or not names
            or not all(isinstance(n, str) and n for n in names)
            or len(set(names)) != len(names)
        ):
            raise InputError(
                f"input_names must be a list of distinct non-empty names (or {BAND_INPUTS!r}), got {input_names!r}."
            )
        else:
            in_specs = [TensorSpec(n) for n in names]
        out_specs = [TensorSpec(n) for n in output_names] if output_names else None

        def call(batch: dict[str, np.ndarray]):
            return fn(batch)

        label = name or getattr(fn, "__qualname__", None) or type(fn).__name__
        fp = f"callable:{fingerprint}" if fingerprint is not None else f"callable:{label}:{uuid.uuid4().hex}"
        model = cls(
            call,
            params,
            name=label,
            fingerprint=fp,
            inputs=in_specs,
            outputs=out_specs,
            max_batch_size=max_batch_size,
            thread_safe=bool(thread_safe),
        )
        opts = dict(name=name, fingerprint=fingerprint, input_names=input_names, output_names=output_names)
        model.spec = ModelSpec(
            "callable", fn, dict(opts, max_batch_size=max_batch_size, thread_safe=bool(thread_safe))
        )
        return model

    @classmethod
    def from_vertex_ai(cls: type[_M], endpoint: str, **kwargs: Any) -> _M:
        """A model behind a Vertex-AI-style REST endpoint (see `ee_model_widgets.serving.rest_models`)."""
        return remote.constructor("from_vertex_ai")(endpoint, **kwargs)

    @classmethod
    def from_ai_platform_predictor(cls: type[_M], **kwargs: Any) -> _M:
        """A model behind an AI-Platform-style REST predictor (see `ee_model_widgets.serving.rest_models`)."""
        return remote.constructor("from_ai_platform_predictor")(**kwargs)

    # Earth Engine spellings, which also take Earth Engine's positional order
    @classmethod
    def fromVertexAi(cls: type[_M], *args: Any, **kwargs: Any) -> _M:  # noqa: N802
        """`ee.Model.fromVertexAi(endpoint, inputProperties, inputTypeOverride, inputShapes, proj, ...)`."""
        return remote.constructor("fromVertexAi")(*args, **kwargs)

    @classmethod
    def fromAiPlatformPredictor(cls: type[_M], *args: Any, **kwargs: Any) -> _M:  # noqa: N802
        """`ee.Model.fromAiPlatformPredictor(projectName, projectId, modelName, version, region, ...)`."""
        return remote.constructor("fromAiPlatformPredictor")(*args, **kwargs)


def _dir_hint(path: str) -> str:
    """What a directory without saved_model.pb holds that the user may have meant."""
    names = sorted(os.listdir(path))
    versions = [n for n in names if os.path.isfile(os.path.join(path, n, "saved_model.pb"))]
    if versions:  # TF Serving's layout: one numbered SavedModel per version
        latest = max(versions, key=lambda n: (n.isdigit(), int(n) if n.isdigit() else 0, n))
        return f" It holds SavedModel(s) in {versions}: pass {os.path.join(path, latest)!r}."
    keras_files = [n for n in names if n.lower().endswith((".keras", ".h5"))]
    if keras_files:
        return f" It holds {keras_files[0]}: use Model.from_keras({os.path.join(path, keras_files[0])!r})."
    return f" It holds {names[:5]}." if names else " It is empty."


def keras_inputs(km) -> list[tuple[str, Any]]:
    """(name, symbolic tensor) per input of a Keras model: a model built on a dict of inputs is
    called with its keys, whatever its Input layers are named; otherwise the layer names."""
    try:
        struct = km.input
    except Exception:  # noqa: BLE001 - some models have no single input structure
        struct = None
    if isinstance(struct, Mapping):  # in Keras' own (flattened, key-sorted) order
        return sorted((str(k), t) for k, t in struct.items())
    return [(t.name, t) for t in km.inputs]


def _keras_fingerprint(km) -> str:
    """Digest of a Keras model's architecture and weights: equal models share cached cells."""
    h = hashlib.blake2b(digest_size=16)
    try:
        h.update(json.dumps(km.get_config(), sort_keys=True, default=str).encode())
    except Exception:  # noqa: BLE001 - some subclassed models cannot serialise their config
        h.update(type(km).__qualname__.encode())
    for w in km.weights:
        a = np.asarray(w.numpy() if hasattr(w, "numpy") else w)
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return "keras:" + h.hexdigest()


def _dir_fingerprint(path: str, signature: str) -> str:
    """Digest of a SavedModel directory's files and the signature used."""
    h = hashlib.blake2b(digest_size=16)
    h.update(signature.encode())
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for f in sorted(files):
            full = os.path.join(root, f)
            h.update(os.path.relpath(full, path).encode())
            with open(full, "rb") as fh:
                for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                    h.update(block)
    return "saved_model:" + h.hexdigest()

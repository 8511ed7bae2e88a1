"""`Model`: a TensorFlow/Keras model, a SavedModel or any callable, with EE's parameters.

The one raw call is `Model.predict_batch(inputs) -> outputs` (dict name -> batched array);
everything else (`predict_image`, `predict_properties`, the map layer, the REST client)
goes through it, so batching, dtype casts, thread safety and the call counters in
`model.stats` live in one place.

Input mapping (EE semantics, see docs/earth-engine-semantics.md, section 2.1):
- a model with one input whose name is not a band of the image gets all the image's bands
  stacked as (N, H, W, C) under that name (EE's `toArray()` convention; a callable's input is
  named "array" unless `input_names` says otherwise);
- otherwise every model input is a band (or an input property) of the image, sent as
  (N, H, W, 1) under its own name;
- a model whose inputs are unknown (`inputs` None: a hosted model without metadata) gets
  what Earth Engine sends: every band and input property as (N, H, W, 1) under its own name,
  or, for an image that is one array band (bands `name_0 .. name_{K-1}`), (N, H, W, K) as `name`.
Output mapping: outputs are named by `output_bands` (a single-output model's one output
takes the one declared name, default "output"); an output with `dimensions=1` and K values
per pixel becomes K bands `<name>_0 .. <name>_<K-1>` (EE's arrayFlatten), `dimensions=2`
(A x B) becomes `<name>_<i>_<j>`.

TensorFlow is imported only when a TF model is loaded.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError, ModelError
from . import remote
from .params import EEParams, OutputBand, suggest
from .portable import ModelSpec

DEFAULT_MAX_BATCH_SIZE = 16
#: Tile size used when neither `input_tile_size` nor the model's input shape gives one.
DEFAULT_TILE_SIZE = 256
#: Input name of a one-input callable (EE's `toArray()` band name).
DEFAULT_INPUT_NAME = "array"
#: `input_names` value for Earth Engine's request to hosted models: one input per image band
#: (and input property), named after it; `Model.inputs` is then None.
BAND_INPUTS = "bands"
#: Name of a single output when `output_bands` is not given.
DEFAULT_OUTPUT_NAME = "output"


class ModelStats:
    """Thread-safe counters of raw model calls: `calls`, `instances`, `seconds`.

    Every call of the underlying model (after splitting into `max_batch_size` chunks) counts
    once; the map layer's tests use the counters to prove cache hits and batching.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.calls = 0
        self.instances = 0
        self.seconds = 0.0

    def record(self, instances: int, seconds: float) -> None:
        with self._lock:
            self.calls += 1
            self.instances += instances
            self.seconds += seconds

    def reset(self) -> None:
        with self._lock:
            self.calls, self.instances, self.seconds = 0, 0, 0.0

    def snapshot(self) -> dict[str, float]:
        """A consistent copy: {"calls", "instances", "seconds"}."""
        with self._lock:
            return {"calls": self.calls, "instances": self.instances, "seconds": self.seconds}

    def __repr__(self) -> str:
        s = self.snapshot()
        return f"ModelStats(calls={s['calls']}, instances={s['instances']}, seconds={s['seconds']:.3f})"


@dataclass(frozen=True)
class TensorSpec:
    """What a model declares for one input or output: shape (None = any) and dtype (None = any)."""

    name: str
    shape: tuple[int | None, ...] | None = None
    dtype: np.dtype | None = None


@dataclass(frozen=True)
class InputPlan:
    """How an image's bands feed the model: `stacked` (one input, all `bands` as channels)
    or per-name (`names[k]` gets band/property `sources[k]` as one channel)."""

    stacked: bool
    names: tuple[str, ...]
    bands: tuple[str, ...]  # image bands to read, in channel order
    properties: tuple[tuple[str, float], ...] = ()  # input property name -> value (per-name mode)


@dataclass(frozen=True)
class OutputSlot:
    """One declared output and the bands it becomes."""

    band: OutputBand  # declared name, dtype, dimensions
    source: str | None  # key in the model's output dict; None = the model's single output
    pixel_shape: tuple[int, ...]  # per-pixel shape: () scalar, (K,), (A, B)
    band_names: tuple[str, ...]


def _flat_names(name: str, pixel_shape: tuple[int, ...]) -> tuple[str, ...]:
    if not pixel_shape:
        return (name,)
    if len(pixel_shape) == 1:
        return tuple(f"{name}_{i}" for i in range(pixel_shape[0]))
    return tuple(f"{name}_{i}_{j}" for i in range(pixel_shape[0]) for j in range(pixel_shape[1]))


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


class Model:
    """A model plus its Earth Engine parameters. Build with `from_keras`, `from_saved_model`,
    `from_callable` (or the REST constructors); call `predict_image` / `predict_properties`."""

    def __init__(
        self,
        call: Callable[[dict[str, np.ndarray]], Any],
        params: EEParams,
        *,
        name: str,
        fingerprint: str,
        inputs: Sequence[TensorSpec] | None = None,
        outputs: Sequence[TensorSpec] | None = None,
        max_batch_size: int | None = DEFAULT_MAX_BATCH_SIZE,
        serialize_calls: bool = False,
        single_input_positional: bool = False,
    ):
        """Low-level: prefer the `from_*` constructors. `call` takes a dict of batched numpy
        arrays and returns a dict, a list (in `outputs` order) or a single array."""
        if max_batch_size is not None and (
            isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 1
        ):
            raise InputError(f"max_batch_size must be a positive integer or None, got {max_batch_size!r}.")
        self._call = call
        self.name = name
        self.fingerprint = fingerprint
        self.inputs = list(inputs) if inputs is not None else None
        self.outputs = list(outputs) if outputs is not None else None
        self.max_batch_size = max_batch_size
        self.stats = ModelStats()
        # TF/Keras models run one batch at a time (TF already uses every core inside a call);
        # user callables may be thread-safe themselves, so they are not serialised.
        self._lock = threading.Lock() if serialize_calls else None
        self._single_positional = single_input_positional
        self.params = self._complete_params(params)
        #: How another process loads this model again (set by the `from_*` constructors).
        self.spec: ModelSpec | None = None

    # ---- constructors ------------------------------------------------------------------
    @classmethod
    def from_keras(
        cls,
        model_or_path,
        *,
        max_batch_size: int | None = DEFAULT_MAX_BATCH_SIZE,
        name: str | None = None,
        custom_objects: dict | None = None,
        safe_mode: bool = True,
        **ee_params: Any,
    ) -> Model:
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
            TensorSpec(t.name, tuple(t.shape), np.dtype(keras.backend.standardize_dtype(t.dtype)))
            for t in km.inputs
        ]
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
        cls,
        path,
        signature: str = "serving_default",
        *,
        max_batch_size: int | None = DEFAULT_MAX_BATCH_SIZE,
        name: str | None = None,
        **ee_params: Any,
    ) -> Model:
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
        cls,
        fn: Callable[[dict[str, np.ndarray]], Any],
        *,
        name: str | None = None,
        fingerprint: str | None = None,
        input_names: Sequence[str] | None = None,
        output_names: Sequence[str] | None = None,
        max_batch_size: int | None = DEFAULT_MAX_BATCH_SIZE,
        **ee_params: Any,
    ) -> Model:
        """Any function `fn(dict name -> (N, H, W, C) float32) -> dict name -> array (or one array)`.

        `input_names`: the model's input names (default: one input, "array", which receives
        the image's bands stacked); give band names for per-band inputs, or "bands" for
        whatever bands the image has, each under its own name (EE's request). `fingerprint`: a
        stable string identifying the function's behaviour, so its predictions can be cached
        across Model objects (default: unique per Model object). `output_names`: the keys of
        the returned dict, when known up front.
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
        )
        opts = dict(name=name, fingerprint=fingerprint, input_names=input_names, output_names=output_names)
        model.spec = ModelSpec("callable", fn, dict(opts, max_batch_size=max_batch_size))
        return model

    @classmethod
    def from_vertex_ai(cls, endpoint: str, **kwargs: Any) -> Model:
        """A model behind a Vertex-AI-style REST endpoint (see `ee_model_widgets.serving.client`)."""
        return remote.constructor("from_vertex_ai")(endpoint, **kwargs)

    @classmethod
    def from_ai_platform_predictor(cls, **kwargs: Any) -> Model:
        """A model behind an AI-Platform-style REST predictor (see `ee_model_widgets.serving.client`)."""
        return remote.constructor("from_ai_platform_predictor")(**kwargs)

    # Earth Engine spellings, which also take Earth Engine's positional order
    @classmethod
    def fromVertexAi(cls, *args: Any, **kwargs: Any) -> Model:  # noqa: N802
        """`ee.Model.fromVertexAi(endpoint, inputProperties, inputTypeOverride, inputShapes, proj, ...)`."""
        return remote.constructor("fromVertexAi")(*args, **kwargs)

    @classmethod
    def fromAiPlatformPredictor(cls, *args: Any, **kwargs: Any) -> Model:  # noqa: N802
        """`ee.Model.fromAiPlatformPredictor(projectName, projectId, modelName, version, region, ...)`."""
        return remote.constructor("fromAiPlatformPredictor")(*args, **kwargs)

    # ---- parameters completed from the model -------------------------------------------
    def replace(self, **changes: Any) -> Model:
        """The same loaded model with some `EEParams` fields changed (e.g. `fix_input_proj=True`,
        `input_tile_size=(128, 128)`), without loading it again.

        The copy shares the model's call, call lock and stats; the model's own checks run on
        the new parameters (e.g. a fixed input shape), so a size it cannot take raises here.
        """
        fields = {f.name for f in dataclasses.fields(EEParams)}
        unknown = sorted(set(changes) - fields)
        if unknown:
            raise InputError(
                f"Model.replace got unknown parameter(s) {unknown}: use EEParams fields {sorted(fields)}."
            )
        clone = copy.copy(self)
        clone.params = self._complete_params(self.params.replace(**changes))
        return clone

    def _complete_params(self, p: EEParams) -> EEParams:
        """Fill `input_tile_size` from a static model input shape (minus the overlap) when the
        user gave none, and check a given one against it."""
        spatial = self._static_spatial()
        if p.input_tile_size is None:
            if spatial is not None:
                h, w = spatial
                tile = (w - 2 * p.overlap[0], h - 2 * p.overlap[1])
                if (
                    tile[0] < 1
                    or tile[1] < 1
                    or p.overlap_as_given[0] >= tile[0]
                    or p.overlap_as_given[1] >= tile[1]
                ):
                    raise InputError(
                        f"Model {self.name!r} takes {w}x{h} pixel inputs, too small for input_overlap_size "
                        f"{list(p.overlap_as_given)} ({p.overlap_mode}): lower the overlap."
                    )
            else:
                tile = (DEFAULT_TILE_SIZE, DEFAULT_TILE_SIZE)
                if p.overlap_as_given[0] >= tile[0] or p.overlap_as_given[1] >= tile[1]:
                    raise InputError(
                        f"input_overlap_size {list(p.overlap_as_given)} must be smaller than the default "
                        f"input_tile_size {list(tile)}: pass input_tile_size=[x, y]."
                    )
            return p.replace(input_tile_size=tile)
        if spatial is not None:
            h, w = spatial
            mx, my = p.model_input_size
            if (mx, my) != (w, h):
                raise InputError(
                    f"Model {self.name!r} takes {w}x{h} pixel inputs but input_tile_size {list(p.input_tile_size)} "
                    f"+ 2 * input_overlap_size {list(p.overlap)} (per edge) = {mx}x{my}: use "
                    f"input_tile_size=[{w - 2 * p.overlap[0]}, {h - 2 * p.overlap[1]}] or change the overlap."
                )
        return p

    def _static_spatial(self) -> tuple[int, int] | None:
        """(H, W) the model's image inputs require, if all are static and agree."""
        if not self.inputs:
            return None
        found = set()
        for s in self.inputs:
            if s.shape is None or len(s.shape) < 3:
                continue
            h, w = s.shape[1], s.shape[2]
            if h is not None and w is not None:
                found.add((int(h), int(w)))
        return found.pop() if len(found) == 1 else None

    # ---- the one raw call --------------------------------------------------------------
    def predict_batch(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on batched inputs (dict name -> (N, ...)) and return dict name -> (N, ...).

        Splits into `max_batch_size` chunks, casts inputs (`input_type_override`, else the
        model's declared dtypes), counts every raw call in `stats`. Thread-safe. A model
        that raises becomes a `ModelError` carrying its message.
        """
        if not inputs:
            raise InputError(f"predict_batch needs at least one input for model {self.name!r}.")
        arrays = {k: np.asarray(v) for k, v in inputs.items()}
        sizes = {k: (a.shape[0] if a.ndim else None) for k, a in arrays.items()}
        n_set = set(sizes.values())
        if len(n_set) != 1 or None in n_set:
            raise InputError(f"predict_batch inputs need one batch size on axis 0, got {sizes}.")
        n = n_set.pop()
        arrays = self._cast_inputs(arrays)
        if n == 0:
            raise InputError(f"predict_batch got an empty batch for model {self.name!r}.")
        step = self.max_batch_size or n
        parts: list[dict[str, np.ndarray]] = []
        for start in range(0, n, step):
            chunk = {k: a[start : start + step] for k, a in arrays.items()}
            parts.append(self._run(chunk, min(step, n - start)))
        if len(parts) == 1:
            return parts[0]
        keys = parts[0].keys()
        return {k: np.concatenate([p[k] for p in parts], axis=0) for k in keys}

    def _cast_inputs(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        overrides = self.params.type_overrides
        declared = {s.name: s.dtype for s in (self.inputs or []) if s.dtype is not None}
        if self._single_positional and len(arrays) == 1 and self.inputs:
            # one-input Keras model: whatever key the caller used, it is that input
            only = next(iter(arrays))
            declared.setdefault(only, self.inputs[0].dtype)
        out = {}
        for k, a in arrays.items():
            dt = overrides.get(k) or declared.get(k)
            if dt is None and a.dtype.kind == "f" and a.dtype != np.float32:
                dt = np.dtype(np.float32)
            if dt is not None and a.dtype != dt:
                if dt.kind in "iub" and a.dtype.kind == "f":
                    a = np.rint(a)
                a = a.astype(dt)
            out[k] = a
        return out

    def _run(self, chunk: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        # TensorFlow (oneDNN) runs a batch of one through other kernels, whose last bits differ:
        # a lone cell is sent twice, so a cell's value never depends on what it was batched with.
        pad = n == 1 and self._lock is not None
        if pad:
            chunk = {k: np.concatenate([a, a]) for k, a in chunk.items()}
        t0 = time.perf_counter()
        try:
            if self._lock is not None:
                with self._lock:
                    raw = self._call(chunk)
            else:
                raw = self._call(chunk)
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever the model raised, say it plainly
            err = ModelError(f"Model {self.name!r} raised {_describe_exc(exc)}")
            err.model_message = str(exc)
            raise err from exc
        finally:
            self.stats.record(n, time.perf_counter() - t0)
        if pad:
            return {k: v[:1] for k, v in self._normalise_outputs(raw, 2).items()}
        return self._normalise_outputs(raw, n)

    def _normalise_outputs(self, raw: Any, n: int) -> dict[str, np.ndarray]:
        if isinstance(raw, Mapping):
            out = {str(k): _as_numpy(v) for k, v in raw.items()}
        elif isinstance(raw, (list, tuple)) and self.outputs and len(raw) == len(self.outputs):
            out = {s.name: _as_numpy(v) for s, v in zip(self.outputs, raw)}
        else:
            try:
                arr = _as_numpy(raw)
            except Exception:  # noqa: BLE001
                arr = None
            if arr is None or arr.dtype == object:
                raise ModelError(
                    f"Model {self.name!r} returned {type(raw).__name__}: return a dict name -> array "
                    "or a single (N, H, W, C) array."
                )
            name = self.outputs[0].name if self.outputs and len(self.outputs) == 1 else DEFAULT_OUTPUT_NAME
            out = {name: arr}
        for k, a in out.items():
            if a.ndim == 0 or a.shape[0] != n:
                raise ModelError(
                    f"Model {self.name!r} output {k!r} has shape {a.shape}: expected {n} instances on "
                    f"axis 0 (one per input instance)."
                )
            if a.dtype.kind not in "biuf":
                raise ModelError(
                    f"Model {self.name!r} output {k!r} has dtype {a.dtype}: expected a numeric tensor."
                )
        return out

    # ---- planning for images -------------------------------------------------------------
    def input_plan(self, band_names: Sequence[str], properties: Mapping[str, Any] | None = None) -> InputPlan:
        """Which image bands feed which model inputs, validated against the model's signature."""
        bands = list(band_names)
        props = dict(properties or {})
        p = self.params
        missing_props = [q for q in p.input_properties if q not in props]
        if missing_props:
            raise InputError(
                f"input_properties {missing_props} are not properties of the image (it has "
                f"{sorted(props) or 'none'}): set them on the image or drop them from input_properties."
            )
        if self.inputs is None:  # EE's request: every band and input property under its own name
            array = _array_band(bands)
            if array and not p.input_properties:  # one array band: EE sends it as (H, W, K)
                return InputPlan(True, (array,), tuple(bands))
            names = bands + [q for q in p.input_properties if q not in bands]
            used = tuple(b for b in bands if b not in p.input_properties)
            return InputPlan(
                False, tuple(names), used, tuple((q, float(props[q])) for q in p.input_properties)
            )
        specs = self.inputs
        names = [s.name for s in specs]
        sources = set(bands) | set(p.input_properties)
        if len(names) == 1 and names[0] not in sources and not p.input_properties:
            spec = specs[0]
            channels = len(bands)
            want = None
            if spec.shape is not None and len(spec.shape) == 4 and spec.shape[3] is not None:
                want = int(spec.shape[3])
            declared = p.shapes.get(spec.name)
            if declared:
                if want is not None and want != declared[0]:
                    raise InputError(
                        f"input_shapes[{spec.name!r}] = {list(declared)} but model {self.name!r} takes "
                        f"{want} channels: fix input_shapes."
                    )
                want = declared[0]
            if want is not None and want != channels:
                raise InputError(
                    f"Model {self.name!r} input {spec.name!r} takes {want} channel(s) but the image has "
                    f"{channels} band(s) {bands}: select {want} with image.select([...]) (in the order the "
                    "model was trained on)."
                )
            self._check_spatial(spec)
            return InputPlan(True, (spec.name,), tuple(bands))
        unknown = [n for n in names if n not in sources]
        if unknown:
            hint = suggest(unknown[0], sorted(sources))
            raise InputError(
                f"Model {self.name!r} has input(s) {unknown} that are neither bands of the image nor "
                f"input_properties.{hint} The image has bands {bands}; rename bands with "
                "image.rename([...]) or select the ones the model needs."
            )
        for s in specs:
            if s.shape is not None and len(s.shape) == 4 and s.shape[3] not in (None, 1):
                raise InputError(
                    f"Model {self.name!r} input {s.name!r} takes {s.shape[3]} channels, but per-band inputs "
                    "are (H, W, 1): give the model one input per band, or a single input for stacked bands."
                )
            self._check_spatial(s)
        used_bands = tuple(n for n in names if n in bands and n not in p.input_properties)
        prop_values = tuple((n, float(props[n])) for n in names if n in p.input_properties)
        return InputPlan(False, tuple(names), used_bands, prop_values)

    def _check_spatial(self, spec: TensorSpec) -> None:
        if spec.shape is None:
            return
        if len(spec.shape) not in (3, 4):
            raise InputError(
                f"Model {self.name!r} input {spec.name!r} has shape {spec.shape}: image models need "
                "(batch, height, width[, channels]) inputs."
            )

    def build_inputs(self, plan: InputPlan, cells: np.ndarray) -> dict[str, np.ndarray]:
        """Model inputs from cell data (N, h, w, C) with C = len(plan.bands) (masked already 0)."""
        if plan.stacked:
            return {plan.names[0]: cells}
        out = {}
        idx = {b: i for i, b in enumerate(plan.bands)}
        props = dict(plan.properties)
        specs = {s.name: s for s in (self.inputs or [])}
        for name in plan.names:
            if name in props:
                arr = np.full(cells.shape[:3] + (1,), props[name], np.float32)
            else:
                arr = cells[..., idx[name] : idx[name] + 1]
            spec = specs.get(name)
            if spec is not None and spec.shape is not None and len(spec.shape) == 3:
                arr = arr[..., 0]
            out[name] = arr
        return out

    def output_slots(self, probe: Callable[[], dict[str, np.ndarray]] | None = None) -> list[OutputSlot]:
        """The declared outputs and their band names.

        Per-pixel shapes come from `output_bands[...]['shape']`, else the model's static
        output shapes, else from `probe()` (one real call on a zero batch).
        """
        p = self.params
        specs = {s.name: s for s in (self.outputs or [])}
        probed: dict[str, np.ndarray] | None = None

        def probed_outputs() -> dict[str, np.ndarray]:
            nonlocal probed
            if probed is None:
                if probe is None:
                    raise ModelError(f"Cannot tell model {self.name!r}'s outputs without running it.")
                probed = probe()
            return probed

        declared = p.output_bands
        if declared is None:
            names = list(specs) if specs else list(probed_outputs())
            if len(names) == 1:
                declared = (OutputBand(DEFAULT_OUTPUT_NAME, np.dtype("float32"), -1),)
            else:
                declared = tuple(OutputBand(n, np.dtype("float32"), -1) for n in names)
        known = list(specs) if specs else None
        single = (known is not None and len(known) == 1) or (known is None and len(declared) == 1)
        if single and len(declared) > 1 and known is not None:
            raise InputError(
                f"output_bands declares {len(declared)} outputs {[b.name for b in declared]} but model "
                f"{self.name!r} has one output: declare one (use 'dimensions': 1 for a vector per pixel)."
            )
        slots = []
        for b in declared:
            if single:
                source = None
                spec = next(iter(specs.values())) if specs else None
            else:
                avail = known if known is not None else list(probed_outputs())
                if b.name not in avail:
                    raise InputError(
                        f"output_bands names {b.name!r} but model {self.name!r} has outputs {sorted(avail)}"
                        f"{suggest(b.name, avail)} Output band names must match the model's output names."
                    )
                source, spec = b.name, specs.get(b.name)
            shape = self._pixel_shape(b, spec, source, probed_outputs)
            dims = len(shape)
            band = OutputBand(b.name, b.dtype, dims, shape or None) if b.dimensions < 0 else b
            slots.append(OutputSlot(band, source, shape, _flat_names(b.name, shape)))
        all_names = [n for s in slots for n in s.band_names]
        if len(set(all_names)) != len(all_names):
            raise InputError(f"Output band names collide: {all_names}; rename the outputs in output_bands.")
        return slots

    def _pixel_shape(self, b: OutputBand, spec, source, probed_outputs) -> tuple[int, ...]:
        if b.dimensions == 0:
            return ()
        if b.shape is not None:
            return tuple(b.shape)
        dims = b.dimensions
        trailing = None
        if spec is not None and spec.shape is not None and len(spec.shape) >= 3:
            rest = tuple(spec.shape[3:])
            if all(r is not None for r in rest):
                trailing = tuple(int(r) for r in rest)
        if trailing is None:
            out = probed_outputs()
            arr = out[source] if source is not None else next(iter(out.values()))
            trailing = tuple(arr.shape[3:])
        if dims < 0:  # undeclared output: infer scalar vs vector from the channel axis
            if trailing in ((), (1,)):
                return ()
            return trailing if len(trailing) <= 2 else (int(np.prod(trailing)),)
        if dims == 1:
            return (int(np.prod(trailing)) if trailing else 1,)
        if len(trailing) != 2:
            raise ModelError(
                f"Output {b.name!r} is declared with dimensions=2 but model {self.name!r} returns per-pixel "
                f"shape {trailing}: declare dimensions={min(len(trailing), 1)}."
            )
        return trailing

    def output_cells(self, slots: Sequence[OutputSlot], out: Mapping[str, np.ndarray], n: int) -> np.ndarray:
        """Model outputs -> (N, bands, outy, outx) float32 cores, NaN where a value is missing.

        Checks each output's spatial size against `output_tile_size` (+ the scaled overlap,
        which is cropped) and its per-pixel shape against the declared dimensions; casts to
        the declared type (integer types are rounded and clipped to their range).
        """
        p = self.params
        ux, uy = p.output_tile_size
        accepted = p.accepted_output_sizes()
        nbands = sum(len(s.band_names) for s in slots)
        result = np.empty((n, nbands, uy, ux), np.float32)
        k = 0
        for slot in slots:
            arr = self._pick_output(slot, out)
            label = slot.band.name
            if arr.ndim < 3:
                raise ModelError(
                    f"Model {self.name!r} output {label!r} has shape {arr.shape}: expected (N, height, width"
                    f"[, values]) per tile, e.g. (N, {uy}, {ux}, 1)."
                )
            h, w = arr.shape[1:3]
            if (w, h) not in accepted:
                want = " or ".join(f"{ay}x{ax}" for ax, ay in accepted)
                raise ModelError(
                    f"Model {self.name!r} output {label!r} is {h}x{w} pixels per tile (shape {arr.shape}), "
                    f"expected {want} (rows x cols): output_tile_size {list(p.output_tile_size)} (x, y)"
                    + (
                        f" + 2 * the overlap scaled to output pixels {list(p.output_overlap)}"
                        if len(accepted) > 1
                        else ""
                    )
                    + ". Set output_tile_size to what the model returns for an input of "
                    f"{p.model_input_size[1]}x{p.model_input_size[0]} pixels (minus the overlap)."
                )
            pixel = tuple(arr.shape[3:])
            want_n = int(np.prod(slot.pixel_shape)) if slot.pixel_shape else 1
            got_n = int(np.prod(pixel)) if pixel else 1
            if got_n != want_n:
                if not slot.pixel_shape:
                    hint = f"declare {{'dimensions': 1}} for {label!r} to get bands {label}_0..{label}_{got_n - 1}"
                else:
                    hint = f"the declared bands are {list(slot.band_names)}"
                raise ModelError(
                    f"Model {self.name!r} output {label!r} has {got_n} value(s) per pixel (shape {arr.shape}), "
                    f"expected {want_n}: {hint}."
                )
            arr = arr.reshape(n, h, w, want_n)
            if (w, h) != (ux, uy):
                cx, cy = (w - ux) // 2, (h - uy) // 2
                arr = arr[:, cy : cy + uy, cx : cx + ux]
            vals = arr.astype(np.float32) if arr.dtype != np.float32 else arr
            dt = slot.band.dtype
            if dt.kind in "iub" and dt.kind != "b":
                info = np.iinfo(dt)
                vals = np.clip(np.rint(vals), info.min, info.max)
            elif dt.kind == "b":
                vals = np.where(np.isfinite(vals), (vals != 0).astype(np.float32), np.nan)
            elif dt == np.float32 or dt.kind == "f":
                pass
            result[:, k : k + want_n] = vals.transpose(0, 3, 1, 2)
            k += want_n
        result[~np.isfinite(result)] = np.nan
        return result

    def _pick_output(self, slot: OutputSlot, out: Mapping[str, np.ndarray]) -> np.ndarray:
        if slot.source is not None:
            if slot.source not in out:
                raise ModelError(
                    f"Model {self.name!r} returned outputs {sorted(out)}, not {slot.source!r} named in output_bands."
                )
            return out[slot.source]
        if len(out) == 1:
            return next(iter(out.values()))
        if slot.band.name in out:
            return out[slot.band.name]
        raise ModelError(
            f"Model {self.name!r} returned several outputs {sorted(out)}: name the one(s) to use in "
            "output_bands (keys must match the output names)."
        )

    # ---- predictions -----------------------------------------------------------------------
    def predict_image(self, image, *, cache="default", max_cells: int | None = None):
        """A lazy `PredictedImage` of this model applied to `image` (EE's `predictImage`).

        `cache`: "default" (the process-wide cell cache), a `CellCache`, or None (no caching).
        `max_cells`: the most model cells one read may need (default
        `predicted.DEFAULT_MAX_CELLS`); reads needing more raise an `InputError`.
        """
        from .predicted import PredictedImage

        return PredictedImage(self, image, cache=cache, max_cells=max_cells)

    def predict_properties(self, features):
        """Predict per feature (EE's `predictProperties`): one instance per feature.

        `features`: a list of property dicts, or a GeoJSON FeatureCollection (dict). Inputs
        are the `input_properties` (each as (N, ...) under its own name; a one-input model
        whose input is not a property gets them stacked on the last axis). Returns the same
        structure with the `output_properties` (default: the model's outputs) merged in.
        """
        is_fc = isinstance(features, Mapping) and features.get("type") == "FeatureCollection"
        if is_fc:
            feats = list(features.get("features") or [])
            props_list = [dict((f or {}).get("properties") or {}) for f in feats]
        elif isinstance(features, Sequence) and not isinstance(features, (str, bytes)):
            feats = list(features)
            if not all(isinstance(f, Mapping) for f in feats):
                raise InputError(
                    "predict_properties takes a list of property dicts or a GeoJSON FeatureCollection."
                )
            props_list = [
                dict(f.get("properties") or {}) if f.get("type") == "Feature" else dict(f) for f in feats
            ]
        else:
            raise InputError(
                f"predict_properties takes a list of property dicts or a GeoJSON FeatureCollection, "
                f"got {type(features).__name__}."
            )
        if not props_list:
            return features if is_fc else []
        p = self.params
        names = list(p.input_properties)
        if not names:
            if self.inputs and all(s.name in props_list[0] for s in self.inputs):
                names = [s.name for s in self.inputs]
            else:
                raise InputError(
                    "predict_properties needs input_properties=[...] naming the feature properties the model "
                    f"reads (the features have {sorted(props_list[0])})."
                )
        columns = {}
        for q in names:
            missing = [i for i, pr in enumerate(props_list) if q not in pr or pr[q] is None]
            if missing:
                raise InputError(
                    f"Feature(s) {missing[:10]} lack property {q!r} listed in input_properties; "
                    f"the first feature has {sorted(props_list[0])}."
                )
            try:
                columns[q] = np.asarray([pr[q] for pr in props_list], dtype=np.float32)
            except (TypeError, ValueError):
                raise InputError(
                    f"Property {q!r} is not numeric in every feature (or arrays differ in shape): "
                    "use input_type_override or clean the data."
                ) from None
        specs = self.inputs if self.inputs is not None else [TensorSpec(q) for q in names]
        if len(specs) == 1 and specs[0].name not in columns:
            stacked = np.stack([c.reshape(len(props_list), -1) for c in columns.values()], axis=1)
            batch = {specs[0].name: stacked.reshape(len(props_list), -1)}
        else:
            unknown = [s.name for s in specs if s.name not in columns]
            if unknown:
                raise InputError(
                    f"Model {self.name!r} has input(s) {unknown} not listed in input_properties {names}."
                )
            batch = {s.name: columns[s.name] for s in specs}
        out = self.predict_batch(batch)
        result_cols = self._property_outputs(out)
        new_props = [dict(pr) for pr in props_list]
        for key, values in result_cols.items():
            for i, v in enumerate(values):
                new_props[i][key] = v
        if is_fc:
            new_feats = []
            for f, pr in zip(feats, new_props):
                g = dict(f or {})
                g["properties"] = pr
                new_feats.append(g)
            return {**features, "features": new_feats}
        return [
            ({**f, "properties": pr} if isinstance(f, Mapping) and f.get("type") == "Feature" else pr)
            for f, pr in zip(feats, new_props)
        ]

    def _property_outputs(self, out: dict[str, np.ndarray]) -> dict[str, list]:
        declared = self.params.output_properties
        if declared is None:
            declared = tuple(
                OutputBand(k if len(out) > 1 else DEFAULT_OUTPUT_NAME, np.dtype("float32"), -1) for k in out
            )
            sources = list(out)
        elif len(out) == 1 and len(declared) == 1:
            sources = list(out)
        else:
            sources = []
            for b in declared:
                if b.name not in out:
                    raise ModelError(
                        f"output_properties names {b.name!r} but model {self.name!r} returned {sorted(out)}."
                    )
                sources.append(b.name)
        cols = {}
        for b, src in zip(declared, sources):
            a = out[src]
            n = a.shape[0]
            per = a.reshape(n, -1) if a.ndim > 1 else a.reshape(n, 1)
            if b.is_integer:
                per = np.rint(per)
            per = per.astype(b.dtype if b.dimensions >= 0 else np.float64)
            if b.dimensions == 0 or (b.dimensions < 0 and per.shape[1] == 1):
                if per.shape[1] != 1:
                    raise ModelError(
                        f"Output property {b.name!r} is declared scalar but model {self.name!r} returns "
                        f"{per.shape[1]} values per feature: declare 'dimensions': 1."
                    )
                cols[b.name] = [v.item() for v in per[:, 0]]
            else:
                cols[b.name] = [row.tolist() for row in a.astype(per.dtype)]
        return cols

    # EE spellings
    def predictImage(self, image, **kwargs):
        """Earth Engine spelling of `predict_image`."""
        return self.predict_image(image, **kwargs)

    def predictProperties(self, features):
        """Earth Engine spelling of `predict_properties`."""
        return self.predict_properties(features)

    def __repr__(self) -> str:
        p = self.params
        return (
            f"<Model {self.name!r} tile={list(p.input_tile_size)} overlap={list(p.overlap)} "
            f"out_tile={list(p.output_tile_size)} fix_input_proj={p.fix_input_proj}>"
        )


def _array_band(bands: Sequence[str]) -> str | None:
    """`name` when the bands are exactly `name_0 .. name_{K-1}` (K >= 2): one array band, the way
    an output with `dimensions: 1` is flattened into bands."""
    name = bands[0][:-2] if len(bands) >= 2 and bands[0].endswith("_0") else ""
    return name if name and list(bands) == [f"{name}_{i}" for i in range(len(bands))] else None


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

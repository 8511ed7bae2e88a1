"""`Model`: a TensorFlow/Keras model, a SavedModel or any callable, with EE's parameters.

The one raw call is `Model.predict_batch(inputs) -> outputs` (dict name -> batched array);
everything else (`predict_image`, `predict_properties`, the map layer, the REST client)
goes through it, so batching, dtype casts, thread safety and the call counters in
`model.stats` live in one place.

Building a model: `core/model_loaders.py`; how bands become inputs and outputs become bands
(Earth Engine's rules): `core/band_mapping.py`. Both are mixins of `Model`, so
`Model.from_keras(...)`, `model.input_plan(...)` keep their names.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import InputError, ModelError
from .band_mapping import (  # noqa: F401 - re-exported: `from ee_model_widgets.core.model import ...`
    BAND_INPUTS,
    DEFAULT_INPUT_NAME,
    DEFAULT_OUTPUT_NAME,
    BandMapping,
    InputPlan,
    OutputSlot,
    TensorSpec,
    channels_first_hint,
)
from .model_loaders import DEFAULT_MAX_BATCH_SIZE, ModelLoaders, _as_numpy, _describe_exc
from .model_spec import ModelSpec
from .params import EEParams, OutputBand

#: Tile size used when neither `input_tile_size` nor the model's input shape gives one.
DEFAULT_TILE_SIZE = 256


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


class Model(ModelLoaders, BandMapping):
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
        thread_safe: bool = True,
    ):
        """Low-level: prefer the `from_*` constructors. `call` takes a dict of batched numpy
        arrays and returns a dict, a list (in `outputs` order) or a single array.
        `serialize_calls`: a TF/Keras model; `thread_safe=False`: `call` runs one at a time."""
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
        # so do user callables not declared thread-safe: the map renders on several threads.
        self._lock = threading.Lock() if serialize_calls or not thread_safe else None
        self._pad_lone = serialize_calls
        batch_dims = {s.shape[0] for s in self.inputs or () if s.shape}
        self._fixed_batch = batch_dims.pop() if len(batch_dims) == 1 and None not in batch_dims else None
        self._single_positional = single_input_positional
        self.params = self._complete_params(params)
        #: How another process loads this model again (set by the `from_*` constructors).
        self.spec: ModelSpec | None = None

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
                hint = "".join(channels_first_hint(s.shape) for s in self.inputs or ())
                if hint:  # its "size" is channels x height: no tile size fixes that
                    raise InputError(f"Model {self.name!r} cannot take {mx}x{my} pixel tiles.{hint}")
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
        step = self._fixed_batch or self.max_batch_size or n
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
                if dt.kind in "iu" and a.dtype.kind in "fiu":
                    a = _saturate(a, dt)
                a = a.astype(dt)
            out[k] = a
        return out

    def _run(self, chunk: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        # TensorFlow (oneDNN) runs a batch of one through other kernels, whose last bits differ:
        # a lone cell is sent twice, so a cell's value never depends on what it was batched with.
        # A graph built for a fixed batch size gets exactly that many instances (the last repeated).
        size = self._fixed_batch or (2 if n == 1 and self._pad_lone else n)
        pad = size != n
        if pad:
            chunk = {k: np.concatenate([a, np.repeat(a[-1:], size - n, axis=0)]) for k, a in chunk.items()}
        # TF hands out fresh arrays; other runtimes may return a buffer their next call
        # overwrites (TFLite, ONNX Runtime), so those are copied before the lock is released.
        own = _owned if not self._pad_lone else _same
        t0 = time.perf_counter()
        try:
            if self._lock is not None:
                with self._lock:
                    raw = own(self._call(chunk))
            else:
                raw = own(self._call(chunk))
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever the model raised, say it plainly
            err = ModelError(f"Model {self.name!r} raised {_describe_exc(exc)}")
            err.model_message = str(exc)
            raise err from exc
        finally:
            self.stats.record(n, time.perf_counter() - t0)
        if pad:
            return {k: v[:n] for k, v in self._normalise_outputs(raw, size).items()}
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


def _saturate(a: np.ndarray, dt: np.dtype) -> np.ndarray:
    """`a` clipped to integer type `dt`'s range, as the output casts (and Earth Engine's) do:
    `astype` alone wraps around (999 becomes 231 as uint8)."""
    lo, hi = np.iinfo(dt).min, np.iinfo(dt).max
    if a.dtype.kind in "iu":  # bounds must fit a's own type
        lo, hi = max(lo, np.iinfo(a.dtype).min), min(hi, np.iinfo(a.dtype).max)
    return np.clip(a, lo, hi)


def _same(raw: Any) -> Any:
    return raw


def _owned(raw: Any) -> Any:
    """`raw` (an array, a dict or a list of them) with every numpy array copied."""
    if isinstance(raw, np.ndarray):
        return raw.copy()
    if isinstance(raw, Mapping):
        return {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in raw.items()}
    if isinstance(raw, (list, tuple)):
        return [v.copy() if isinstance(v, np.ndarray) else v for v in raw]
    return raw

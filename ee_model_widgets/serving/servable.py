"""What the predict server (and `ee-model prepare`) runs: a model seen as named, typed signatures.

A SavedModel (TF2 `tf.saved_model.save`/Keras 3 `model.export`, or a TF1 one such as those written
by `earthengine model prepare`), a `.keras` file or an in-memory Keras model all become the same
thing here: `Signature`s with typed named inputs/outputs and a `run(feeds) -> outputs` on numpy
arrays. That keeps the REST layer free of TensorFlow details.

A signature is "EE wire" when every input and output is a 1-D string tensor carrying web-safe
base64 TensorProtos, i.e. a model prepared by `ee-model prepare` or `earthengine model prepare`.
The server needs to know because it then passes strings through to the graph (normalising the
base64 alphabet) instead of decoding them itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, ModelError
from .public_errors import public_message

#: Written by `ee-model prepare` into `assets.extra/` (TF Serving's folder for extra files).
PREPARED_MARKER = "ee_model_widgets.json"
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


@dataclass(frozen=True)
class TensorInfo:
    """One named input or output: numpy dtype (object = string), shape (None = unknown)."""

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...] | None
    tensor_name: str = ""

    @property
    def is_string(self) -> bool:
        return self.dtype == np.dtype(object)

    def describe(self) -> str:
        dt = "string" if self.is_string else str(self.dtype)
        shape = (
            "unknown rank"
            if self.shape is None
            else "(" + ", ".join("?" if d is None else str(d) for d in self.shape) + ")"
        )
        return f"{self.name}: {dt} {shape}"


@dataclass
class Signature:
    """A callable signature: `run` takes and returns dicts of numpy arrays (batch on axis 0)."""

    name: str
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]
    fn: Callable[[dict[str, Any]], Mapping[str, Any]] = field(repr=False)
    ee_wire: bool = False

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on a batch; errors name the signature and carry TF's message."""
        missing = [k for k in self.inputs if k not in feeds]
        if missing:
            raise InputError(f"Signature '{self.name}' needs input(s) {missing}; got {sorted(feeds)}.")
        # A graph built for a fixed batch size (e.g. [1, H, W, C]) runs on exactly that many
        # instances: the batch is cut into such runs, the last filled by repeating its last row.
        dims = {i.shape[0] if i.shape else None for i in self.inputs.values()}
        fixed = dims.pop() if len(dims) == 1 else None
        n = len(feeds[next(iter(self.inputs))]) if self.inputs and fixed else 0
        if fixed and n and n != fixed:
            parts = []
            for start in range(0, n, fixed):
                part = {k: np.asarray(feeds[k])[start : start + fixed] for k in self.inputs}
                got = len(next(iter(part.values())))
                part = {
                    k: np.concatenate([v, np.repeat(v[-1:], fixed - got, axis=0)]) for k, v in part.items()
                }
                parts.append({k: v[:got] for k, v in self._run_once(part).items()})
            return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return self._run_once(feeds)

    def _run_once(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        tensors = {k: tf.convert_to_tensor(feeds[k], dtype=_tf_dtype(self.inputs[k])) for k in self.inputs}
        try:
            out = self.fn(tensors)
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as exc:
            raise InputError(
                f"The model rejected the inputs of signature '{self.name}': {_first_line(exc)}"
            ) from exc
        except Exception as exc:  # a model may raise anything; report it as a model failure
            raise ModelError(
                f"The model failed on signature '{self.name}': {type(exc).__name__}: {_first_line(exc)}"
            ) from exc
        return {k: _to_numpy(v) for k, v in out.items()}


class Servable:
    """A loaded model: its signatures by name, and where it came from."""

    def __init__(self, signatures: dict[str, Signature], source: str, keep_alive: Any = None):
        if not signatures:
            raise ModelError(f"{source} has no usable signature.")
        self.signatures = signatures
        self.source = source
        #: The loaded TF object that owns the variables (kept alive; `prepare` saves it with its wrapper).
        self.keep_alive = keep_alive

    @property
    def default_signature(self) -> str:
        if "serving_default" in self.signatures:
            return "serving_default"
        return next(iter(self.signatures))

    def signature(self, name: str | None = None) -> Signature:
        """The named signature ('' or None = the default one); unknown names raise InputError."""
        key = name or self.default_signature
        try:
            return self.signatures[key]
        except KeyError:
            raise InputError(
                f"Serving signature name: '{key}' not found in {self.source}; it has {sorted(self.signatures)}."
            ) from None


# ---- loading ----------------------------------------------------------------------------------


def load_servable(source, *, signature: str | None = None, tag: str = "serve") -> Servable:
    """Load a SavedModel directory, a `.keras`/`.h5` file, a Keras model or a TF module with signatures.

    `signature` keeps only that signature (default: all of them); `tag` picks the MetaGraph of a
    SavedModel (EE's `--tag`).
    """
    if isinstance(source, Servable):
        servable = source
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if str(source).startswith("gs://"):
            raise InputError(
                f"{source}: Cloud Storage paths are not read directly; copy the model locally first (gsutil cp -r)."
            )
        if not path.exists():
            raise ModelError(f"No model at {path}: give a SavedModel directory or a .keras file.")
        if path.is_dir():
            servable = _load_saved_model(path, tag)
        elif path.suffix.lower() in KERAS_SUFFIXES:
            servable = _from_keras(_load_keras_file(path), str(path))
        else:
            raise ModelError(
                f"{path} is neither a SavedModel directory nor a Keras file ({', '.join(KERAS_SUFFIXES)})."
            )
    elif _is_keras_model(source):
        servable = _from_keras(source, f"Keras model {getattr(source, 'name', '')!r}")
    elif hasattr(source, "signatures"):
        servable = _from_tf_signatures(source.signatures, f"module {type(source).__name__}", None, source)
    else:
        raise InputError(
            f"Cannot serve a {type(source).__name__}: give a SavedModel directory, a .keras file, "
            "a Keras model or a tf.Module with signatures."
        )
    if signature:
        servable = Servable({signature: servable.signature(signature)}, servable.source, servable.keep_alive)
    return servable


def _load_saved_model(path: Path, tag: str) -> Servable:
    import tensorflow as tf

    if not (path / "saved_model.pb").exists() and not (path / "saved_model.pbtxt").exists():
        hint = ""
        if any(path.glob("*.keras")):
            hint = f" It contains {next(path.glob('*.keras')).name}: pass that file instead."
        raise ModelError(f"{path} is not a SavedModel directory (no saved_model.pb).{hint}")
    try:
        loaded = tf.saved_model.load(str(path), tags=[tag] if tag else None)
    except (RuntimeError, ValueError, OSError, tf.errors.OpError) as exc:
        raise ModelError(
            f"Cannot load the SavedModel at {path} with tag '{tag}': {_first_line(exc)}"
        ) from exc
    marker = path / "assets.extra" / PREPARED_MARKER
    return _from_tf_signatures(
        loaded.signatures, str(path), read_signature_defs(path, tag), loaded, prepared_marker=marker.exists()
    )


def read_signature_defs(path: Path, tag: str = "serve") -> dict:
    """signature key -> SignatureDef proto of the MetaGraph with `tag`, read from saved_model.pb."""
    from tensorflow.core.protobuf import saved_model_pb2

    pb = Path(path) / "saved_model.pb"
    if not pb.exists():
        return {}
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString(pb.read_bytes())
    for mg in sm.meta_graphs:
        if not tag or tag in mg.meta_info_def.tags:
            return {k: v for k, v in mg.signature_def.items() if not k.startswith("__")}
    return {}


def _from_tf_signatures(
    signatures, source: str, sig_defs, keep_alive, prepared_marker: bool = False
) -> Servable:
    sigs: dict[str, Signature] = {}
    for key, fn in dict(signatures).items():
        if key.startswith("__"):
            continue
        _, kwargs = fn.structured_input_signature
        sig_def = (sig_defs or {}).get(key)
        inputs = {
            k: _info(k, spec, sig_def.inputs[k].name if sig_def is not None and k in sig_def.inputs else "")
            for k, spec in kwargs.items()
        }
        outs = fn.structured_outputs
        if not isinstance(outs, Mapping):
            raise ModelError(f"Signature '{key}' of {source} does not return a dict of named outputs.")
        outputs = {
            k: _info(k, spec, sig_def.outputs[k].name if sig_def is not None and k in sig_def.outputs else "")
            for k, spec in outs.items()
        }
        ee_names = all(i.tensor_name.startswith("earthengine_in_") for i in inputs.values()) and bool(inputs)
        ee_wire = _all_string_vectors(inputs, outputs) and (prepared_marker or ee_names)
        sigs[key] = Signature(key, inputs, outputs, _signature_caller(fn), ee_wire=ee_wire)
    if not sigs:
        raise ModelError(
            f"{source} has no serving signature: export it with `model.export(path)` (Keras 3) or "
            "`tf.saved_model.save(obj, path, signatures=...)`."
        )
    return Servable(sigs, source, keep_alive)


def _signature_caller(fn):
    def call(tensors):
        return fn(**tensors)

    return call


def _load_keras_file(path: Path):
    import keras

    try:
        return keras.saving.load_model(str(path), compile=False)
    except Exception as exc:  # Keras raises many types for corrupt/unsupported files
        raise ModelError(f"Cannot load the Keras model {path}: {_first_line(exc)}") from exc


def _is_keras_model(obj) -> bool:
    try:
        import keras
    except ImportError:  # pragma: no cover - keras ships with tensorflow here
        return False
    return isinstance(obj, keras.Model)


def keras_signature_function(model):
    """A `tf.function` over a Keras model taking and returning dicts of named tensors, and its specs.

    Input names are the Keras input names (a dict-built model's keys); outputs are named by the model's dict keys or its
    `output_names`. Used both to serve a Keras model and to prepare one.
    """
    import tensorflow as tf

    if not getattr(model, "inputs", None):
        raise ModelError(
            f"Keras model {model.name!r} has no defined inputs (a subclassed model that was never built?); "
            "use a Functional/Sequential model or export it with model.export()."
        )
    from ..core.model_loaders import keras_inputs

    specs = {n: tf.TensorSpec(t.shape, tf.as_dtype(t.dtype), name=n) for n, t in keras_inputs(model)}
    names = list(specs)
    out_names = list(getattr(model, "output_names", None) or [])

    def as_dict(y):
        if isinstance(y, Mapping):
            return dict(y)
        if isinstance(y, (list, tuple)):
            keys = out_names if len(out_names) == len(y) else [f"output_{i}" for i in range(len(y))]
            return dict(zip(keys, y))
        return {out_names[0] if len(out_names) == 1 else "output_0": y}

    @tf.function(input_signature=[specs], reduce_retracing=True)
    def fn(feeds):
        x = feeds[names[0]] if len(names) == 1 else feeds
        return as_dict(model(x, training=False))

    concrete = fn.get_concrete_function()
    return fn, specs, concrete.structured_outputs


def _from_keras(model, source: str) -> Servable:
    fn, specs, outs = keras_signature_function(model)
    inputs = {k: _info(k, s, f"serving_default_{k}:0") for k, s in specs.items()}
    outputs = {k: _info(k, s, "") for k, s in outs.items()}
    sig = Signature("serving_default", inputs, outputs, fn)
    return Servable({"serving_default": sig}, source, model)


# ---- helpers ----------------------------------------------------------------------------------


def _info(name: str, spec, tensor_name: str = "") -> TensorInfo:
    dtype = np.dtype(object) if spec.dtype.name == "string" else np.dtype(spec.dtype.as_numpy_dtype)
    shape = None if spec.shape.rank is None else tuple(spec.shape.as_list())
    return TensorInfo(name, dtype, shape, tensor_name)


def _all_string_vectors(inputs: dict[str, TensorInfo], outputs: dict[str, TensorInfo]) -> bool:
    infos = list(inputs.values()) + list(outputs.values())
    return bool(infos) and all(i.is_string and i.shape is not None and len(i.shape) == 1 for i in infos)


def _tf_dtype(info: TensorInfo):
    import tensorflow as tf

    return tf.string if info.is_string else tf.as_dtype(info.dtype)


def _to_numpy(value) -> np.ndarray:
    arr = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
    return np.asarray(arr)


def _first_line(exc: BaseException, limit: int = 600) -> str:
    """TF error messages carry graph dumps and stacks around the error: keep the error itself."""
    return public_message(str(getattr(exc, "message", None) or exc), limit)


def marker_contents(path) -> dict | None:
    """The JSON `ee-model prepare` left in a prepared model, or None."""
    p = Path(path) / "assets.extra" / PREPARED_MARKER
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None

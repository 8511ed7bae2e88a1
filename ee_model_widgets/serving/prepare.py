"""`ee-model prepare`: make a model speak Earth Engine's wire format, with TF2 APIs.

Earth Engine sends each band of each tile as a web-safe base64 serialized TensorProto and
expects the same back. `earthengine model prepare` (the EE CLI) rewires a TF1 graph to do that;
this module builds the equivalent with `tf.function` + `tf.saved_model.save`, so it also works
with Keras 3 (`model.export`), `tf.saved_model.save` SavedModels and `.keras` files:

    serving_default(<EE name>: string[None], ...) -> {<EE name>: string[None], ...}

where every element is one instance (one tile). Flags and mapping syntax are the EE CLI's:
`--input`/`--output` take a comma list or a JSON dict `{"<model name>": "<EE name>"}`; a trailing
`:N` is stripped from public names. Model names may be signature keys (`array`, `output_0`),
graph tensor names as EE users pass them (`serving_default_array:0`, `StatefulPartitionedCall:0`)
or, for Keras files, input/output layer names.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import ExportError, InputError
from .servable import PREPARED_MARKER, Servable, Signature, TensorInfo, load_servable

DEFAULT_VARIABLES = "/variables/variables"


def parse_node_spec(spec: str | Mapping[str, str] | Sequence[str], flag: str = "--input") -> dict[str, str]:
    """EE CLI mapping syntax: JSON dict of strings, or a comma-delimited list (identity mapping)."""
    if isinstance(spec, Mapping):
        mapping = dict(spec)
    elif isinstance(spec, str):
        try:
            parsed = json.loads(spec)
        except ValueError:
            parsed = None
        if parsed is None or isinstance(parsed, (int, float, str)):
            names = [n.strip() for n in spec.split(",") if n.strip()]
            mapping = {n: n for n in names}
        elif isinstance(parsed, dict):
            mapping = parsed
        else:
            raise InputError(f"If flag {flag} is JSON it must specify a dictionary, got {spec!r}.")
    else:
        mapping = {str(n): str(n) for n in spec}
    if not mapping:
        raise InputError(f"Flag {flag} must name at least one tensor.")
    for k, v in mapping.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise InputError(
                f"All key/value pairs of the dictionary specified in {flag} must be strings: {k!r}: {v!r}."
            )
    return mapping


def strip_index(name: str) -> str:
    """'Conv2D:0' -> 'Conv2D', as the EE CLI does for public names."""
    i = name.rfind(":")
    return name if i == -1 else name[:i]


def prepare_model(
    source_dir,
    dest_dir,
    inputs,
    outputs,
    *,
    tag: str = "serve",
    variables: str = DEFAULT_VARIABLES,
    signature: str = "serving_default",
) -> Path:
    """Write an EE-ready copy of a SavedModel or `.keras` file to `dest_dir` and return its path.

    `inputs`/`outputs`: EE CLI mapping (JSON dict/comma list string, dict or list). Every model
    input must be mapped (the prepared model could not feed the others); outputs may be a subset.
    `dest_dir` must not exist yet (the EE CLI would silently nest the model inside it); the model
    is written to a temporary sibling and renamed, so a failure leaves nothing half-written.
    """
    in_map = parse_node_spec(inputs, "--input")
    out_map = parse_node_spec(outputs, "--output")
    src = Path(str(source_dir)).expanduser()
    dest = Path(str(dest_dir)).expanduser()
    for p, flag in ((source_dir, "--source_dir"), (dest_dir, "--dest_dir")):
        if str(p).startswith("gs://"):
            raise InputError(
                f"{flag} {p}: Cloud Storage is not supported by ee-model prepare; copy the model locally "
                "(gsutil cp -r), prepare it, then upload the result."
            )
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InputError(
            f"--dest_dir {dest} already exists and is not empty; choose a new directory or remove it."
        )
    in_the_way = next((p for p in dest.parents if p.exists()), None)
    if in_the_way is not None and not in_the_way.is_dir():
        raise InputError(
            f"--dest_dir {dest}: {in_the_way} is a file, not a folder; choose another --dest_dir."
        )

    if not src.exists():
        raise InputError(f"--source_dir {src} does not exist: give a SavedModel directory or a .keras file.")
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="ee-model-src-") as scratch:
        load_from = src
        if src.is_dir() and variables != DEFAULT_VARIABLES:
            load_from = _with_standard_variables(src, variables, Path(scratch) / "src")
        servable = load_servable(load_from, tag=tag)
        sig = _pick_signature(servable, signature, src)
        resolved_in = _resolve(in_map, sig.inputs, sig, "--input", src)
        resolved_out = _resolve(out_map, sig.outputs, sig, "--output", src)
        unmapped = [k for k in sig.inputs if k not in resolved_in]
        if unmapped:
            raise InputError(
                f"Model input(s) {unmapped} of {src} are not in --input; every input must be mapped "
                f"(the model's inputs: {', '.join(i.describe() for i in sig.inputs.values())})."
            )
        for key in resolved_in:
            if sig.inputs[key].is_string:
                raise InputError(
                    f"Input '{key}' of {src} is already a string tensor: the model looks prepared already."
                )
        _check_unique(list(resolved_in.values()), "--input")
        _check_unique(list(resolved_out.values()), "--output")

        module = _build_module(servable, sig, resolved_in, resolved_out)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        except OSError as exc:  # a file in the way, a read-only or missing folder: not a traceback
            raise ExportError(
                f"--dest_dir {dest}: cannot create it in {dest.parent} ({exc.strerror or exc}); "
                "choose a folder you can write to."
            ) from None
        try:
            with _quiet_tensorflow_logger():  # "INFO: Assets written to <temp dir>" is noise here
                tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serving_default})
            extra = tmp / "assets.extra"
            extra.mkdir(exist_ok=True)
            (extra / PREPARED_MARKER).write_text(
                json.dumps(_marker(src, sig, resolved_in, resolved_out), indent=2, sort_keys=True)
            )
            if dest.exists():
                dest.rmdir()  # empty, checked above
            tmp.rename(dest)
        except OSError as exc:  # e.g. the disk filled up while TensorFlow wrote the variables
            shutil.rmtree(tmp, ignore_errors=True)
            raise ExportError(
                f"Could not write the prepared model to {dest} ({exc.strerror or exc}); nothing was written."
            ) from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return dest


@contextlib.contextmanager
def _quiet_tensorflow_logger():
    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _pick_signature(servable: Servable, name: str, src: Path) -> Signature:
    if name in servable.signatures:
        return servable.signatures[name]
    # The default name stands for "the model's signature" when it has only one; a name the user
    # chose that the model lacks is an error (else another signature is wrapped without a word).
    if len(servable.signatures) == 1 and name == "serving_default":
        return next(iter(servable.signatures.values()))
    raise InputError(
        f"{src} has no signature '{name}'; it has {sorted(servable.signatures)} (pick one with --signature)."
    )


def _resolve(
    mapping: dict[str, str], infos: dict[str, TensorInfo], sig: Signature, flag: str, src: Path
) -> dict:
    """Map user keys (signature keys, graph tensor names, with or without :N) to signature keys."""
    by_tensor = {}
    for key, info in infos.items():
        if info.tensor_name:
            by_tensor[info.tensor_name] = key
            by_tensor.setdefault(strip_index(info.tensor_name), key)
    # `output_0`-style positional names also work for Keras outputs named after layers
    positional = {f"output_{i}": k for i, k in enumerate(infos)}
    out: dict[str, str] = {}
    for user_key, ee_name in mapping.items():
        key = (
            user_key
            if user_key in infos
            else by_tensor.get(user_key)
            or (strip_index(user_key) if strip_index(user_key) in infos else None)
            or positional.get(strip_index(user_key))
        )
        if key is None:
            raise InputError(
                f"{flag} names '{user_key}', which is not an {'input' if flag == '--input' else 'output'} of "
                f"signature '{sig.name}' of {src}. Known names: "
                + ", ".join(
                    f"{k}" + (f" (tensor {infos[k].tensor_name})" if infos[k].tensor_name else "")
                    for k in infos
                )
                + "."
            )
        if key in out:
            raise InputError(f"{flag} maps '{key}' twice.")
        out[key] = strip_index(ee_name)
    return out


def _check_unique(names: list[str], flag: str) -> None:
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"{flag} gives the EE name(s) {dup} to more than one tensor.")


def _build_module(servable: Servable, sig: Signature, in_map: dict[str, str], out_map: dict[str, str]):
    """A tf.Module whose serving_default decodes, runs the model and encodes, per instance."""
    import tensorflow as tf

    module = tf.Module()
    module.model = servable.keep_alive  # tracked: its variables are saved with the wrapper
    call = sig.fn
    ee_to_key = {ee: key for key, ee in in_map.items()}
    dtypes = {key: tf.as_dtype(sig.inputs[key].dtype) for key in in_map}
    shapes = {key: sig.inputs[key].shape for key in in_map}
    input_signature = [{ee: tf.TensorSpec([None], tf.string, name=ee) for ee in ee_to_key}]

    def decode(strings, key):
        shape = shapes[key]
        per_instance = tf.TensorSpec(None if shape is None else shape[1:], dtypes[key])
        x = tf.map_fn(
            lambda s: tf.io.parse_tensor(tf.io.decode_base64(s), dtypes[key]),
            strings,
            fn_output_signature=per_instance,
        )
        # A clear runtime error (and static shape for the model) when a tile has the wrong shape.
        return x if shape is None else tf.ensure_shape(x, shape)

    def encode(t):
        return tf.map_fn(
            lambda x: tf.io.encode_base64(tf.io.serialize_tensor(x)), t, fn_output_signature=tf.string
        )

    @tf.function(input_signature=input_signature)
    def serving_default(feeds):
        decoded = {key: decode(feeds[ee], key) for ee, key in ee_to_key.items()}
        result = call(decoded)
        return {ee: encode(result[key]) for key, ee in out_map.items()}

    module.serving_default = serving_default
    return module


def _marker(src: Path, sig: Signature, in_map: dict[str, str], out_map: dict[str, str]) -> dict:
    from .. import __version__

    def entry(info: TensorInfo, key: str) -> dict:
        return {
            "model_name": key,
            "dtype": "string" if info.is_string else str(info.dtype),
            "shape": None if info.shape is None else list(info.shape),
        }

    return {
        "prepared_by": f"ee_model_widgets {__version__}",
        "source": str(src),
        "signature": sig.name,
        "wire_format": "web-safe base64 of serialized TensorProto, one per instance",
        "inputs": {ee: entry(sig.inputs[key], key) for key, ee in in_map.items()},
        "outputs": {ee: entry(sig.outputs[key], key) for key, ee in out_map.items()},
    }


def _with_standard_variables(src: Path, variables: str, dest: Path) -> Path:
    """A copy of `src` with its variables at the standard place, for EE's `--variables` flag.

    TF2's loader always reads `variables/variables`; EE's flag is a suffix appended to the source
    directory (e.g. '/variables/x'), so we copy those files under the standard prefix.
    """
    prefix = Path(str(src) + variables)
    files = sorted(prefix.parent.glob(prefix.name + ".*"))
    if not files:
        raise InputError(
            f"--variables {variables}: no variable files {prefix}.index / {prefix}.data-* found."
        )
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("variables"))
    (dest / "variables").mkdir()
    for f in files:
        shutil.copy2(f, dest / "variables" / ("variables" + f.name[len(prefix.name) :]))
    return dest


def describe_model(source, *, tag: str = "serve") -> str:
    """A short text of a model's signatures, inputs and outputs (for `ee-model prepare --help`-time hints)."""
    servable = load_servable(source, tag=tag)
    lines = []
    for sig in servable.signatures.values():
        lines.append(f"signature '{sig.name}'" + (" (EE wire format)" if sig.ee_wire else ""))
        lines += [
            f"  input  {i.describe()}" + (f"  [tensor {i.tensor_name}]" if i.tensor_name else "")
            for i in sig.inputs.values()
        ]
        lines += [
            f"  output {o.describe()}" + (f"  [tensor {o.tensor_name}]" if o.tensor_name else "")
            for o in sig.outputs.values()
        ]
    return "\n".join(lines)


__all__ = ["prepare_model", "parse_node_spec", "strip_index", "describe_model"]

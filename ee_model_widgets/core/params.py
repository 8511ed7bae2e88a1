"""Earth Engine `ee.Model` parameters, normalised and validated once, up front.

Users pass the parameters as keywords, either snake_case (`input_tile_size=`) or the
camelCase names of code ported from Earth Engine (`inputTileSize=`). `EEParams.from_kwargs`
turns them into one frozen dataclass so the rest of the core never re-validates anything,
and every mistake is reported before a single pixel is read.

Sizes are kept in Earth Engine's order, `(x, y)` = (columns, rows). Tensors are
`(rows, cols, channels)` = `(y, x, c)`, so code indexing arrays must swap them.

Overlap: `input_overlap_size` is **per edge** by default (the model sees
`input_tile_size + 2 * input_overlap_size`), which matches the `ee.Model` API reference and
Google's working notebooks. The EE guide describes it as a **total** overlap
(`[2N, 2N]` for a buffer of N pixels); pass `overlap_mode="total"` to use that reading: the
value is then halved per edge (and must be even). After normalisation `overlap` is always
per edge.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError

# snake_case name -> camelCase alias (Earth Engine's spelling)
PARAM_ALIASES: dict[str, str] = {
    "input_properties": "inputProperties",
    "input_type_override": "inputTypeOverride",
    "input_shapes": "inputShapes",
    "proj": "proj",
    "fix_input_proj": "fixInputProj",
    "input_tile_size": "inputTileSize",
    "input_overlap_size": "inputOverlapSize",
    "output_tile_size": "outputTileSize",
    "output_bands": "outputBands",
    "output_properties": "outputProperties",
    "output_multiplier": "outputMultiplier",
    "overlap_mode": "overlapMode",
}
_CAMEL_TO_SNAKE = {camel: snake for snake, camel in PARAM_ALIASES.items()}

# Earth Engine / numpy type names we accept for output and override types.
_TYPE_NAMES: dict[str, str] = {
    "float": "float32",
    "float32": "float32",
    "double": "float64",
    "float64": "float64",
    "int": "int32",
    "int8": "int8",
    "uint8": "uint8",
    "byte": "uint8",
    "int16": "int16",
    "short": "int16",
    "uint16": "uint16",
    "int32": "int32",
    "uint32": "uint32",
    "int64": "int64",
    "long": "int64",
    "bool": "bool",
    "boolean": "bool",
}


def parse_dtype(value: Any, what: str) -> np.dtype:
    """A dtype from an EE type name ("float", "int8"...), a numpy/TF dtype or an EE PixelType dict.

    The PixelType JSON form (`{"type": "PixelType", "precision": "int", "min": 0, "max": 255}`)
    is what `inputTypeOverride` examples use; ints pick the smallest type holding [min, max].
    """
    if isinstance(value, Mapping):
        precision = str(value.get("precision", "")).lower()
        if precision in ("float", "double"):
            return np.dtype(_TYPE_NAMES[precision])
        if precision == "int":
            lo, hi = value.get("min"), value.get("max")
            if lo is None or hi is None:
                return np.dtype("int32")
            for name in ("uint8", "int8", "uint16", "int16", "uint32", "int32", "int64"):
                info = np.iinfo(name)
                if info.min <= lo and hi <= info.max:
                    return np.dtype(name)
            return np.dtype("int64")
        raise InputError(
            f"{what}: PixelType {dict(value)!r} has no usable 'precision'; use "
            "{'type': 'PixelType', 'precision': 'float'|'double'|'int'} or a name such as 'float' or 'int8'."
        )
    if isinstance(value, str):
        key = value.strip().lower()
        if key in _TYPE_NAMES:
            return np.dtype(_TYPE_NAMES[key])
        raise InputError(
            f"{what}: unknown type {value!r}; use one of {sorted(set(_TYPE_NAMES))} or a numpy dtype."
        )
    as_numpy = getattr(value, "as_numpy_dtype", None)  # tf.DType
    try:
        dt = np.dtype(as_numpy if as_numpy is not None else value)
    except TypeError:
        raise InputError(f"{what}: {value!r} is not a type; use a name such as 'float' or 'int8'.") from None
    if dt.kind not in "biuf":
        raise InputError(f"{what}: type {dt} is not numeric; use 'float', 'double' or an integer type.")
    return dt


@dataclass(frozen=True)
class OutputBand:
    """One declared output: name, pixel dtype, per-pixel rank (0 scalar, 1 vector, 2 matrix).

    `shape` is the per-pixel array shape when known up front (our extension to EE's dict,
    e.g. `{"type": "float", "dimensions": 1, "shape": [3]}`); otherwise it is read from the
    model's static output shape.
    """

    name: str
    dtype: np.dtype
    dimensions: int = 0
    shape: tuple[int, ...] | None = None

    @property
    def is_integer(self) -> bool:
        return self.dtype.kind in "biu"


def _parse_outputs(value: Any, what: str) -> tuple[OutputBand, ...] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not value:
        raise InputError(
            f"{what} must be a non-empty dict name -> {{'type': ..., 'dimensions': 0|1|2}}, got {value!r}; "
            f"e.g. {what}={{'output': {{'type': 'float'}}}}."
        )
    bands = []
    for name, spec in value.items():
        if not isinstance(name, str) or not name:
            raise InputError(f"{what}: output names must be non-empty strings, got {name!r}.")
        if isinstance(spec, Mapping) and "precision" not in spec:
            unknown = set(spec) - {"type", "dimensions", "shape"}
            if unknown:
                raise InputError(
                    f"{what}[{name!r}]: unknown key(s) {sorted(unknown)}; allowed are 'type', 'dimensions', 'shape'."
                )
            dtype = parse_dtype(spec.get("type", "float"), f"{what}[{name!r}]")
            dims = spec.get("dimensions", None)
            shape = spec.get("shape")
        else:  # a bare type: {"ndvi": "float"} or a PixelType dict
            dtype, dims, shape = parse_dtype(spec, f"{what}[{name!r}]"), None, None
        if shape is not None:
            shape = tuple(_positive_ints(shape, f"{what}[{name!r}]['shape']"))
            if dims is None:
                dims = len(shape)
            if len(shape) != dims:
                raise InputError(
                    f"{what}[{name!r}]: 'shape' {list(shape)} has {len(shape)} axes but 'dimensions' is {dims}."
                )
        dims = 0 if dims is None else dims
        if dims not in (0, 1, 2) or isinstance(dims, bool):
            raise InputError(
                f"{what}[{name!r}]: 'dimensions' must be 0 (scalar), 1 (vector) or 2 (matrix) per pixel, got {dims!r}."
            )
        bands.append(OutputBand(name, dtype, int(dims), shape))
    return tuple(bands)


def _positive_ints(value: Any, what: str) -> list[int]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise InputError(f"{what} must be a list of positive integers, got {value!r}.")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer, float)) or v != int(v) or v <= 0:
            raise InputError(f"{what} must hold positive integers, got {list(value)!r}.")
        out.append(int(v))
    return out


def _size(value: Any, what: str, allow_zero: bool = False) -> tuple[int, int] | None:
    """An EE size: an int (square) or [x, y]; returned as (x, y)."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = [int(value), int(value)]
    if (
        not isinstance(value, (Sequence, np.ndarray))
        or isinstance(value, str)
        or len(value) != 2
        or any(
            isinstance(v, bool) or not isinstance(v, (int, np.integer, float)) or v != int(v) for v in value
        )
    ):
        raise InputError(f"{what} must be an int or a list [x, y] of two integers, got {value!r}.")
    x, y = int(value[0]), int(value[1])
    low = 0 if allow_zero else 1
    if x < low or y < low:
        need = "non-negative" if allow_zero else "positive"
        raise InputError(f"{what} must be {need}, got [{x}, {y}].")
    return (x, y)


def _names(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Sequence) or not all(isinstance(v, str) and v for v in value):
        raise InputError(f"{what} must be a list of names, got {value!r}.")
    return tuple(value)


def suggest(name: str, choices: Sequence[str]) -> str:
    """' Did you mean 'x'?' for the closest choice, or ''."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    if not close:  # camelCase/snake typos differ a lot in ratio; compare squashed forms too
        squashed = {c.replace("_", "").lower(): c for c in choices}
        close = difflib.get_close_matches(name.replace("_", "").lower(), list(squashed), n=1, cutoff=0.6)
        close = [squashed[c] for c in close]
    return f" Did you mean {close[0]!r}?" if close else ""


@dataclass(frozen=True)
class EEParams:
    """The normalised `ee.Model` parameters. Build with `EEParams.from_kwargs(**kwargs)`.

    Sizes are `(x, y)`; `overlap` is per edge whatever `overlap_mode` was given.
    `input_tile_size`/`output_bands` may be None: the model fills them from its own
    signature when it can (see `Model`), as EE requires them only for images.
    """

    input_properties: tuple[str, ...] = ()
    input_type_override: tuple[tuple[str, np.dtype], ...] = ()
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()
    proj: Any = None
    fix_input_proj: bool = False
    input_tile_size: tuple[int, int] | None = None
    overlap: tuple[int, int] = (0, 0)
    output_tile_size: tuple[int, int] | None = None
    output_bands: tuple[OutputBand, ...] | None = None
    output_properties: tuple[OutputBand, ...] | None = None
    output_multiplier: float = 1.0
    overlap_mode: str = "per_edge"
    #: the overlap exactly as the user gave it (for messages)
    overlap_as_given: tuple[int, int] = field(default=(0, 0), repr=False)

    # ---- construction ----------------------------------------------------------------
    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> EEParams:
        """Validate EE keyword parameters (snake_case or camelCase) into an `EEParams`."""
        values: dict[str, Any] = {}
        given_as: dict[str, str] = {}
        valid = list(PARAM_ALIASES) + [c for c in _CAMEL_TO_SNAKE if c not in PARAM_ALIASES]
        for key, value in kwargs.items():
            snake = key if key in PARAM_ALIASES else _CAMEL_TO_SNAKE.get(key)
            if snake is None:
                raise InputError(
                    f"Unknown model parameter {key!r}.{suggest(key, valid)} "
                    f"Valid parameters: {', '.join(PARAM_ALIASES)} (or their camelCase forms)."
                )
            if snake in values:
                raise InputError(
                    f"Parameter given twice: {given_as[snake]!r} and {key!r} mean the same thing; keep only one."
                )
            values[snake], given_as[snake] = value, key
        return cls._build(values)

    @classmethod
    def _build(cls, v: dict[str, Any]) -> EEParams:
        tile = _size(v.get("input_tile_size"), "input_tile_size")
        out_tile = _size(v.get("output_tile_size"), "output_tile_size")
        overlap_given = _size(v.get("input_overlap_size", 0), "input_overlap_size", allow_zero=True)

        mode = v.get("overlap_mode", "per_edge")
        if mode not in ("per_edge", "total"):
            raise InputError(
                f"overlap_mode must be 'per_edge' (the model sees tile + 2*overlap) or 'total' "
                f"(the EE guide's reading: tile + overlap), got {mode!r}."
            )
        if mode == "total":
            if overlap_given[0] % 2 or overlap_given[1] % 2:
                raise InputError(
                    f"With overlap_mode='total' input_overlap_size is split between both edges, so it must be "
                    f"even; got {list(overlap_given)}. Use e.g. {[o + o % 2 for o in overlap_given]}."
                )
            overlap = (overlap_given[0] // 2, overlap_given[1] // 2)
        else:
            overlap = overlap_given

        if tile is not None:
            if overlap_given[0] >= tile[0] or overlap_given[1] >= tile[1]:
                raise InputError(
                    f"input_overlap_size {list(overlap_given)} must be smaller than input_tile_size {list(tile)} "
                    f"on each axis (mode {mode!r}: the model sees {tile[0] + 2 * overlap[0]}x"
                    f"{tile[1] + 2 * overlap[1]} pixels to produce a {tile[0]}x{tile[1]} core). Lower the "
                    f"overlap or raise input_tile_size, e.g. input_tile_size={[max(t, 2 * o + 2) for t, o in zip(tile, overlap_given)]}."
                )
        elif out_tile is not None:
            raise InputError(
                "output_tile_size needs input_tile_size: the output scale is in_scale * "
                "input_tile_size / output_tile_size. Pass input_tile_size=[x, y] too."
            )

        multiplier = v.get("output_multiplier", 1.0)
        if (
            isinstance(multiplier, bool)
            or not isinstance(multiplier, (int, float, np.number))
            or not math.isfinite(multiplier)
            or multiplier < 1
        ):
            raise InputError(
                f"output_multiplier must be a number >= 1 (the approximate output/input data-volume "
                f"ratio), got {multiplier!r}."
            )

        fix = v.get("fix_input_proj", False)
        if not isinstance(fix, (bool, np.bool_)):
            raise InputError(f"fix_input_proj must be True or False, got {fix!r}.")

        proj = v.get("proj")
        if proj is not None and not (hasattr(proj, "crs") and hasattr(proj, "transform")):
            raise InputError(
                f"proj must be an emw.Projection (e.g. emw.Projection('EPSG:32719').at_scale(10)), got {proj!r}."
            )
        if proj is not None and getattr(proj, "transform", None) is None:
            raise InputError(
                f"proj {proj!r} has no pixel size: give it a scale, e.g. emw.Projection('{proj.crs}').at_scale(10)."
            )

        overrides = v.get("input_type_override") or {}
        if not isinstance(overrides, Mapping):
            raise InputError(f"input_type_override must be a dict name -> type, got {overrides!r}.")
        overrides_t = tuple(
            (str(k), parse_dtype(t, f"input_type_override[{k!r}]")) for k, t in sorted(overrides.items())
        )

        shapes = v.get("input_shapes") or {}
        if not isinstance(shapes, Mapping):
            raise InputError(
                f"input_shapes must be a dict name -> per-pixel shape (e.g. [4]), got {shapes!r}."
            )
        shapes_t = []
        for k, s in sorted(shapes.items()):
            if isinstance(s, (int, np.integer)) and not isinstance(s, bool):
                s = [s]
            if not isinstance(s, Sequence) or isinstance(s, str):
                raise InputError(f"input_shapes[{k!r}] must be a list such as [4] or [], got {s!r}.")
            shapes_t.append((str(k), tuple(_positive_ints(list(s), f"input_shapes[{k!r}]")) if s else ()))

        params = cls(
            input_properties=_names(v.get("input_properties"), "input_properties"),
            input_type_override=overrides_t,
            input_shapes=tuple(shapes_t),
            proj=proj,
            fix_input_proj=bool(fix),
            input_tile_size=tile,
            overlap=overlap,
            output_tile_size=out_tile if out_tile is not None else tile,
            output_bands=_parse_outputs(v.get("output_bands"), "output_bands"),
            output_properties=_parse_outputs(v.get("output_properties"), "output_properties"),
            output_multiplier=float(multiplier),
            overlap_mode=mode,
            overlap_as_given=overlap_given,
        )
        return params

    def replace(self, **changes: Any) -> EEParams:
        """A copy with some normalised fields changed (used to fill in model-derived defaults)."""
        from dataclasses import replace

        new = replace(self, **changes)
        if (
            "input_tile_size" in changes
            and "output_tile_size" not in changes
            and self.output_tile_size is None
        ):
            new = replace(new, output_tile_size=new.input_tile_size)
        return new

    # ---- derived values ----------------------------------------------------------------
    @property
    def type_overrides(self) -> dict[str, np.dtype]:
        return dict(self.input_type_override)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self.input_shapes)

    @property
    def model_input_size(self) -> tuple[int, int] | None:
        """(x, y) pixels the model sees per instance: tile + 2 * per-edge overlap."""
        if self.input_tile_size is None:
            return None
        return (
            self.input_tile_size[0] + 2 * self.overlap[0],
            self.input_tile_size[1] + 2 * self.overlap[1],
        )

    @property
    def scale_factor(self) -> tuple[float, float]:
        """(x, y) output pixel size / input pixel size = input_tile_size / output_tile_size."""
        if self.input_tile_size is None or self.output_tile_size is None:
            return (1.0, 1.0)
        return (
            self.input_tile_size[0] / self.output_tile_size[0],
            self.input_tile_size[1] / self.output_tile_size[1],
        )

    @property
    def output_overlap(self) -> tuple[float, float]:
        """Per-edge overlap in output pixels (may be fractional: then only core-sized outputs fit)."""
        fx, fy = self.scale_factor
        return (self.overlap[0] / fx, self.overlap[1] / fy)

    def accepted_output_sizes(self) -> list[tuple[int, int]]:
        """(x, y) model output sizes we accept: padded (cropped by us) and/or core only."""
        assert self.output_tile_size is not None
        ox, oy = self.output_overlap
        sizes = []
        if float(ox).is_integer() and float(oy).is_integer():
            sizes.append((self.output_tile_size[0] + 2 * int(ox), self.output_tile_size[1] + 2 * int(oy)))
        if tuple(self.output_tile_size) not in sizes:
            sizes.append(tuple(self.output_tile_size))
        return sizes

    # ---- identity ----------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """A JSON-able canonical form (also what `fingerprint` hashes)."""

        def bands(bs):
            if bs is None:
                return None
            return [[b.name, b.dtype.str, b.dimensions, list(b.shape) if b.shape else None] for b in bs]

        proj = None
        if self.proj is not None:
            crs = self.proj.crs
            crs_s = crs.to_wkt() if hasattr(crs, "to_wkt") else str(crs)
            proj = [crs_s, [round(float(c), 9) for c in tuple(self.proj.transform)[:6]]]
        return {
            "input_properties": list(self.input_properties),
            "input_type_override": [[k, d.str] for k, d in self.input_type_override],
            "input_shapes": [[k, list(s)] for k, s in self.input_shapes],
            "proj": proj,
            "fix_input_proj": self.fix_input_proj,
            "input_tile_size": list(self.input_tile_size) if self.input_tile_size else None,
            "overlap_per_edge": list(self.overlap),
            "output_tile_size": list(self.output_tile_size) if self.output_tile_size else None,
            "output_bands": bands(self.output_bands),
            "output_properties": bands(self.output_properties),
            "output_multiplier": self.output_multiplier,
        }

    def fingerprint(self) -> str:
        """A stable hex digest of the normalised parameters, for cache keys.

        Equal for equivalent spellings (camelCase vs snake_case, int vs [x, y], per-edge 8 vs
        total 16), different whenever a value that changes predictions differs.
        """
        blob = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

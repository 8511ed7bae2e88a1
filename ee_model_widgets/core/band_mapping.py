"""How an image's bands become a model's inputs, and its outputs become bands (`BandMapping`).

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
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError, ModelError
from .params import OutputBand, suggest

#: Input name of a one-input callable (EE's `toArray()` band name).
DEFAULT_INPUT_NAME = "array"
#: `input_names` value for Earth Engine's request to hosted models: one input per image band
#: (and input property), named after it; `Model.inputs` is then None.
BAND_INPUTS = "bands"
#: Name of a single output when `output_bands` is not given.
DEFAULT_OUTPUT_NAME = "output"
# Integers up to this are exact in float32 (24-bit significand), the type of every band.
_FLOAT32_EXACT = 2**24


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


def _array_band(bands: Sequence[str]) -> str | None:
    """`name` when the bands are exactly `name_0 .. name_{K-1}` (K >= 2): one array band, the way
    an output with `dimensions: 1` is flattened into bands."""
    name = bands[0][:-2] if len(bands) >= 2 and bands[0].endswith("_0") else ""
    return name if name and list(bands) == [f"{name}_{i}" for i in range(len(bands))] else None


def channels_first_hint(shape: Sequence[int | None] | None, channels: int | None = None) -> str:
    """A sentence for a model input that looks channels-first, (N, C, H, W), else "".

    With `channels` (the bands it would get) C must be that count; without, C must be smaller
    than a square H x W. Such models otherwise fail with a misleading size or channel error.
    """
    if shape is None or len(shape) != 4 or shape[1] is None:
        return ""
    c, h, w = shape[1], shape[2], shape[3]
    if channels is not None:
        looks = c == channels and w != channels and h in (None, w)
    else:
        looks = h is not None and h == w and c < h
    if not looks:
        return ""
    dims = ", ".join("None" if d is None else str(d) for d in shape)
    return (
        f" Its input shape ({dims}) looks channels-first (N, C, H, W), but bands arrive channels-last "
        "(N, H, W, C), as in Earth Engine: put a transpose in front of the model (a channels-last "
        "keras.Input followed by keras.layers.Permute((3, 1, 2))) or export it channels-last."
    )


def _trim_hint(model_input: tuple[int, int], got: tuple[int, int]) -> str:
    """For an output smaller than the input by an even border: the 'valid' convolutions setup."""
    (mx, my), (w, h) = model_input, got
    if not (w < mx and h < my and (mx - w) % 2 == 0 and (my - h) % 2 == 0):
        return ""
    return (
        f" If it trims a border instead ('valid' convolutions: the centre of its input, at the same scale), "
        f"use input_tile_size=[{w}, {h}] and input_overlap_size=[{(mx - w) // 2}, {(my - h) // 2}], which keep "
        f"its input at {my}x{mx}: output_tile_size would stretch the result."
    )


class BandMapping:
    """`Model`'s band planning (a mixin): reads `self.params`, `self.inputs`, `self.outputs`
    and `self.name` of the model it is part of."""

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
            hint = channels_first_hint(spec.shape, channels)
            if hint:
                raise InputError(
                    f"Model {self.name!r} input {spec.name!r} cannot take the image's {channels} band(s) "
                    f"{bands}.{hint}"
                )
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
            if spec.shape is not None and len(spec.shape) == 3 and channels != 1:
                raise InputError(
                    f"Model {self.name!r} input {spec.name!r} has shape {spec.shape}: (batch, height, width), one "
                    f"band, but the image has {channels} bands {bands}: select the one it takes with "
                    "image.select([...])."
                )
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
                    + channels_first_hint(s.shape, 1)
                )
            self._check_spatial(s)
        used_bands = tuple(n for n in names if n in bands and n not in p.input_properties)
        prop_values = tuple((n, float(props[n])) for n in names if n in p.input_properties)
        return InputPlan(False, tuple(names), used_bands, prop_values)

    def _check_spatial(self, spec: TensorSpec) -> None:
        if spec.shape is None:
            return
        if len(spec.shape) == 2 and spec.shape[1] is not None:
            # A per-pixel model (e.g. Dense layers trained on sampled pixels): say how to run it.
            c = spec.shape[1]
            raise InputError(
                f"Model {self.name!r} input {spec.name!r} has shape {spec.shape}: one pixel's {c} value(s) "
                "per instance, but bands arrive as (batch, height, width, channels) tiles, as in Earth "
                f"Engine. Rebuild it on keras.Input((None, None, {c})) (1x1 Conv2D layers for Dense ones), or "
                "run it on every pixel of a tile: Model.from_callable(lambda b: np.asarray(model("
                f"b['array'].reshape(-1, {c}))).reshape(*b['array'].shape[:3], -1), input_tile_size=[256, 256])."
            )
        if len(spec.shape) not in (3, 4):
            raise InputError(
                f"Model {self.name!r} input {spec.name!r} has shape {spec.shape}: image models need "
                "(batch, height, width[, channels]) inputs."
            )

    def build_inputs(self, plan: InputPlan, cells: np.ndarray) -> dict[str, np.ndarray]:
        """Model inputs from cell data (N, h, w, C) with C = len(plan.bands) (masked already 0)."""
        if plan.stacked:
            spec = (self.inputs or [None])[0]
            if spec is not None and spec.shape is not None and len(spec.shape) == 3:
                return {plan.names[0]: cells[..., 0]}  # (batch, height, width): one band, no channel axis
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

    def predict_cells(self, plan: InputPlan, slots: Sequence[OutputSlot], cells: np.ndarray) -> np.ndarray:
        """The one entry of predictions into the model: cell data (N, h, w, C) (masked pixels 0)
        -> the model's inputs -> one batched call -> (N, bands, outy, outx) float32 cores."""
        return self.output_cells(slots, self.predict_batch(self.build_inputs(plan, cells)), len(cells))

    def probe(self, plan: InputPlan) -> dict[str, np.ndarray]:
        """One call on a zero cell, to learn the model's output names and per-pixel shapes."""
        mx, my = self.params.model_input_size
        zeros = np.zeros((1, my, mx, len(plan.bands)), np.float32)
        with np.errstate(all="ignore"):  # e.g. 0/0 in an index model: only shapes matter here
            return self.predict_batch(self.build_inputs(plan, zeros))

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
                    + ". If the model changes the scale (strides, pooling, upsampling), set output_tile_size to "
                    f"what it returns for an input of {p.model_input_size[1]}x{p.model_input_size[0]} pixels "
                    "(minus the overlap)."
                    + _trim_hint(p.model_input_size, (w, h))
                    + self._same_size_hint(slots, out, accepted)
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
            dt = slot.band.dtype
            if dt.kind in "iu" and not getattr(self, "_warned_float32", False):
                self._warn_beyond_float32(label, arr)
            vals = arr.astype(np.float32) if arr.dtype != np.float32 else arr
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

    def _same_size_hint(self, slots, out, accepted) -> str:
        """For outputs of several sizes (e.g. deep supervision): name those that fit."""
        fits = []
        for s in slots:
            try:
                a = self._pick_output(s, out)
            except ModelError:
                continue
            if a.ndim >= 3 and (a.shape[2], a.shape[1]) in accepted:
                fits.append(s.band.name)
        if not fits or len(fits) == len(slots):
            return ""
        pick = ", ".join(f"{n!r}: {{'type': 'float'}}" for n in fits)
        return f" Or keep only the outputs of that size: output_bands={{{pick}}}."

    def _warn_beyond_float32(self, label: str, arr: np.ndarray) -> None:
        """Warn (once per model) if integer output values lie beyond 2**24: bands are float32,
        which rounds them (16,777,217 reads as 16,777,216), as a shifted ID would go unnoticed."""
        if arr.dtype.kind not in "iuf" or arr.dtype.itemsize <= 2 or arr.dtype == np.float32:
            return
        with np.errstate(invalid="ignore"):
            big = arr[np.abs(arr) > _FLOAT32_EXACT]
        if big.dtype.kind == "f":
            big = np.rint(big[np.isfinite(big)])
        rounded = big[big.astype(np.float32).astype(big.dtype) != big]
        if rounded.size:
            v = int(rounded.flat[0])
            self._warned_float32 = True
            warnings.warn(
                f"Model {self.name!r} output {label!r} has integer values beyond 2**24 (16,777,216), e.g. "
                f"{v:,}: bands are float32, which cannot hold them exactly ({v:,} reads as "
                f"{int(np.float32(v)):,}). Keep integer outputs below 2**24 (or split them into two bands).",
                stacklevel=2,
            )

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

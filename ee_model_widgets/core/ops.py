"""Lazy per-pixel operations on images (Earth Engine's band math), read window by window.

An operation is a `DerivedImage`: parent images, output band names, and for each output
band the parent bands it is computed from plus a pixel kernel. Reading a window of it reads
exactly those parent bands for that window (one `read`, or `read_many` for a batch of map
tiles, per parent) and applies the kernels, so a derived image never holds whole-image
arrays, shares the caches of its parents (a prediction's cells are computed once whatever
is derived from them), and shows the same pixels on the map, in exports and in `to_numpy`.

Earth Engine's rules (ee.Image.add and friends):
- Operands are images or numbers (a number is a one-band constant without masked pixels).
- Bands pair up in order; a one-band operand is used against every band of the other;
  otherwise the band counts must match. Output bands are named after the operand with
  more bands, or after the first operand when the counts are equal.
- A pixel masked in any operand is masked in the result (`unmask` fills, `where` keeps
  its input where the test or the value is masked).
- `divide` (and `mod`) by zero give 0, not infinity.

Where we differ, on purpose: pixel values are float32 throughout (the `Image.read`
contract), so there is no integer arithmetic (EE truncates int/int divisions), and a
result that is not a finite number (e.g. `log` of a negative) is masked instead of
being kept as NaN/inf (NaN means "no data" everywhere in this package).

The output image has the grid (projection and extent) of its first image operand; reads
on any other grid read the parents on that grid (each parent band with its own default
resampling), then compute, like Earth Engine computes band math in the requested
projection.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from .grid import Grid
from .image import Image

# A kernel takes the values and masks of its inputs (2-D, masked pixels hold 0) and returns
# (values, mask) of one output band; non-finite values are masked afterwards.
Kernel = Callable[[list[np.ndarray], list[np.ndarray], Grid], tuple[np.ndarray, np.ndarray]]
Number = (int, float, np.integer, np.floating)
# Fingerprints longer than this are hashed (deep expression trees make long strings).
_MAX_FINGERPRINT = 256


class DerivedImage(Image):
    """A per-pixel function of parent images; see the module docstring.

    `outputs[name] = (inputs, kernel)` where `inputs` is a list of (parent index, parent band).
    `op` and `params` name the operation for fingerprints (cache keys) and repr.
    """

    def __init__(
        self,
        op: str,
        parents: Sequence[Image],
        outputs: dict[str, tuple[list[tuple[int, str]], Kernel]],
        params: Any = (),
        categorical: Sequence[str] = (),
        grid: Grid | None = None,
        finite: bool = False,
    ):
        for p in parents:
            if not isinstance(p, Image):
                raise InputError(f"{op}: operands must be emw.Images or numbers, got {type(p).__name__}.")
        if not outputs:
            raise InputError(f"{op}: the result would have no band.")
        self.op = op
        self.parents = tuple(parents)
        self._outputs = dict(outputs)
        self._band_names = list(outputs)
        self._params = params
        self.categorical_bands = frozenset(categorical)
        self._grid = grid
        # True when the kernels can only return finite values from finite inputs (comparisons,
        # masks, band copies): the per-pixel finite check is skipped.
        self._finite = bool(finite)

    # ---- what the image is --------------------------------------------------------------
    @property
    def grid(self) -> Grid:
        return self._grid if self._grid is not None else self.parents[0].grid

    @property
    def projection(self):
        return self.parents[0].projection if self._grid is None else super().projection

    def __repr__(self) -> str:
        return f"<{self.op} bands={self.band_names} of {len(self.parents)} image(s)>"

    def fingerprint(self) -> str:
        """The operation, its parameters, its band wiring and its parents' fingerprints."""
        from .predicted import image_fingerprint

        wiring = ";".join(
            f"{n}<-" + ",".join(f"{i}:{b}" for i, b in inputs) for n, (inputs, _k) in self._outputs.items()
        )
        parents = ",".join(image_fingerprint(p) for p in self.parents)
        text = f"{self.op}({_canon(self._params)})[{wiring}]({parents})|{sorted(self.categorical_bands)}"
        if len(text) > _MAX_FINGERPRINT:
            text = f"{self.op}:" + hashlib.sha256(text.encode()).hexdigest()
        return text

    # ---- exports: stream through the predictions' private scratch caches -------------------
    def streaming(self, _views: dict | None = None) -> DerivedImage:
        """The same operation over streaming views of its parents (see `PredictedImage.streaming`),
        so an export of a derived image does not flush the cells the map is showing. A
        prediction used twice in the tree gets one view (its cells are computed once)."""
        views = {} if _views is None else _views

        def view_of(p: Image) -> Image:
            if id(p) not in views:
                if isinstance(p, DerivedImage):
                    views[id(p)] = p.streaming(views)
                elif callable(getattr(p, "streaming", None)):
                    views[id(p)] = p.streaming()
                else:
                    views[id(p)] = p
            return views[id(p)]

        view = copy.copy(self)
        view.parents = tuple(view_of(p) for p in self.parents)
        return view

    def export(self, path, region=None, proj=None, **kwargs) -> str:
        """Write a GeoTIFF window by window (see `Image.export`), reading predictions in streaming mode."""
        return Image.export(self.streaming(), path, region, proj, **kwargs)

    # ---- the map layer's hooks: batched reads and the zoomed-out guard ---------------------
    @property
    def model(self):
        """The model of a prediction this image is computed from (fixInputProj ones first), or None."""
        found = [m for m in (getattr(p, "model", None) for p in self.parents) if m is not None]
        for m in found:
            if getattr(getattr(m, "params", None), "fix_input_proj", False):
                return m
        return found[0] if found else None

    def cell_count(self, grid: Grid) -> int:
        """Model cells reading `grid` needs, summed over the predictions this image uses."""
        total = 0
        for p in self._distinct_parents():
            count = getattr(p, "cell_count", None)
            if count is not None:
                total += count(grid)
        return total

    # ---- the read path ----------------------------------------------------------------------
    def _distinct_parents(self) -> list[Image]:
        seen: dict[int, Image] = {}
        for p in self.parents:
            seen.setdefault(id(p), p)
        return list(seen.values())

    def _needs(self, bands: list[str]) -> dict[int, list[str]]:
        """Parent bands each distinct parent (by id) must read for these output bands."""
        need: dict[int, list[str]] = {}
        for b in bands:
            for i, pb in self._outputs[b][0]:
                lst = need.setdefault(id(self.parents[i]), [])
                if pb not in lst:
                    lst.append(pb)
        return need

    def _read(self, grid: Grid, bands: list[str], resampling) -> np.ma.MaskedArray:
        need = self._needs(bands)
        reads = {
            id(p): p.read(grid, need[id(p)], resampling) for p in self._distinct_parents() if id(p) in need
        }
        return self._combine(grid, bands, need, reads)

    def read_many(self, grids: Sequence[Grid], bands=None, resampling=None) -> list[np.ma.MaskedArray]:
        """Several grids at once: each parent reads them in one batch (one model call for a
        prediction), then the kernels run per grid."""
        names = self._check_bands(bands)
        need = self._needs(names)
        per_parent: dict[int, list[np.ma.MaskedArray]] = {}
        for p in self._distinct_parents():
            if id(p) not in need:
                continue
            many = getattr(p, "read_many", None)
            if many is not None:
                per_parent[id(p)] = many(grids, need[id(p)], resampling)
            else:
                per_parent[id(p)] = [p.read(g, need[id(p)], resampling) for g in grids]
        return [
            self._combine(g, names, need, {k: v[n] for k, v in per_parent.items()})
            for n, g in enumerate(grids)
        ]

    def _combine(
        self, grid: Grid, bands: list[str], need: dict[int, list[str]], reads: dict[int, np.ma.MaskedArray]
    ) -> np.ma.MaskedArray:
        out = np.empty((len(bands), grid.height, grid.width), np.float32)
        mask = np.empty(out.shape, bool)
        cache: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = {}

        def band(i: int, name: str) -> tuple[np.ndarray, np.ndarray]:
            key = (id(self.parents[i]), name)
            if key not in cache:
                data = reads[key[0]]
                k = need[key[0]].index(name)
                cache[key] = (np.ma.getdata(data)[k], np.ma.getmaskarray(data)[k])
            return cache[key]

        with np.errstate(all="ignore"):  # 0/0, log(-1)...: handled by the kernels and the finite check
            for k, b in enumerate(bands):
                inputs, kernel = self._outputs[b]
                pairs = [band(i, name) for i, name in inputs]
                values, m = kernel([v for v, _ in pairs], [mm for _, mm in pairs], grid)
                out[k] = values  # casts booleans and float64 to float32 in place
                mask[k] = m
                if not self._finite:
                    mask[k] |= ~np.isfinite(out[k])
        np.copyto(out, 0, where=mask)
        return np.ma.MaskedArray(out, mask=mask)


def _canon(value: Any) -> str:
    """A deterministic text of operation parameters (numbers exact, dicts sorted)."""
    return json.dumps(value, sort_keys=True, default=repr, separators=(",", ":"))


# ---- operands ------------------------------------------------------------------------------------
def _is_number(v) -> bool:
    return isinstance(v, Number) and not isinstance(v, bool)


def is_scalar(v) -> bool:
    """A number (or bool) usable as a constant operand."""
    return isinstance(v, (*Number, bool, np.bool_))


def _operand(v, op: str):
    """An Image, or a number as float (booleans count as 0/1, like Earth Engine)."""
    if isinstance(v, Image):
        return v
    if isinstance(v, (bool, np.bool_)):
        return float(v)
    if _is_number(v):
        f = float(v)
        if not math.isfinite(f):
            raise InputError(f"{op}: the number {v!r} is not finite; use a finite constant.")
        return f
    raise InputError(
        f"{op} takes an emw.Image or a number, got {type(v).__name__}: wrap arrays with "
        "emw.Image.from_array(arr, transform=, crs=)."
    )


def _pairing(a, b, op: str) -> tuple[list[str], list, list]:
    """Earth Engine's band pairing: (output names, per-output input of a, of b).

    An input is (parent index, band) for images (parents are the image operands in order),
    None for numbers.
    """
    na = len(a.band_names) if isinstance(a, Image) else 1
    nb = len(b.band_names) if isinstance(b, Image) else 1
    if na != nb and na != 1 and nb != 1:
        raise InputError(
            f"{op}: the images have {na} bands {a.band_names} and {nb} bands {b.band_names}; "
            "Earth Engine pairs bands in order, so they need the same number of bands or one of them "
            "one band. select() the bands to combine."
        )
    n = max(na, nb)
    names = a.band_names if isinstance(a, Image) and na == n else b.band_names
    ia = 0 if isinstance(a, Image) else None
    ib = (1 if ia == 0 else 0) if isinstance(b, Image) else None

    def inputs(x, idx, k):
        if idx is None:
            return None
        bands = x.band_names
        return (idx, bands[0] if len(bands) == 1 else bands[k])

    return names, [inputs(a, ia, k) for k in range(n)], [inputs(b, ib, k) for k in range(n)]


def binary(a, b, op: str, fn: Callable, categorical: bool = False) -> Image:
    """`fn(a_values, b_values)` band by band with Earth Engine's pairing; masks are OR-ed."""
    a, b = _operand(a, op), _operand(b, op)
    if not isinstance(a, Image) and not isinstance(b, Image):
        raise InputError(f"{op} needs at least one image operand.")
    parents = [x for x in (a, b) if isinstance(x, Image)]
    names, ins_a, ins_b = _pairing(a, b, op)
    outputs = {}
    for k, name in enumerate(names):
        ia, ib = ins_a[k], ins_b[k]
        inputs = [x for x in (ia, ib) if x is not None]
        outputs[name] = (
            inputs,
            _binary_kernel(fn, None if ia is not None else a, None if ib is not None else b),
        )
    params = [a if not isinstance(a, Image) else "img", b if not isinstance(b, Image) else "img"]
    return DerivedImage(op, parents, outputs, params, names if categorical else (), finite=categorical)


def _binary_kernel(fn: Callable, const_a, const_b) -> Kernel:
    if const_a is not None or const_b is not None:  # image and number: the image's mask
        const = np.float32(const_a if const_a is not None else const_b)

        def with_number(values, masks, _grid):
            v = values[0]
            return (fn(const, v) if const_a is not None else fn(v, const)), masks[0]

        return with_number

    def kernel(values, masks, _grid):
        return fn(values[0], values[1]), np.logical_or(masks[0], masks[1])

    return kernel


def unary(image: Image, op: str, fn: Callable, categorical: bool | None = None) -> Image:
    """`fn(values)` on every band; the mask is kept. `categorical` None keeps the input's flags."""
    image = _image(image, op)
    names = image.band_names
    outputs = {n: ([(0, n)], lambda v, m, _g: (fn(v[0]), m[0])) for n in names}
    cat = image.categorical_bands if categorical is None else (names if categorical else ())
    return DerivedImage(op, [image], outputs, (), cat, finite=op in ("not", "abs", "floor", "ceil", "round"))


def _image(x, op: str) -> Image:
    if not isinstance(x, Image):
        raise InputError(f"{op} needs an emw.Image, got {type(x).__name__}.")
    return x


# ---- the arithmetic and logic of Earth Engine ------------------------------------------------------
def _divide(a, b):
    zero = b == 0
    return np.where(zero, np.float32(0), a / np.where(zero, np.float32(1), b))


def _mod(a, b):
    zero = b == 0
    return np.where(zero, np.float32(0), np.fmod(a, np.where(zero, np.float32(1), b)))


BINARY: dict[str, tuple[Callable, bool]] = {
    "add": (np.add, False),
    "subtract": (np.subtract, False),
    "multiply": (np.multiply, False),
    "divide": (_divide, False),
    "mod": (_mod, False),
    "pow": (np.power, False),
    "min": (np.minimum, False),
    "max": (np.maximum, False),
    "gt": (np.greater, True),
    "gte": (np.greater_equal, True),
    "lt": (np.less, True),
    "lte": (np.less_equal, True),
    "eq": (np.equal, True),
    "neq": (np.not_equal, True),
    "and": (lambda a, b: (a != 0) & (b != 0), True),
    "or": (lambda a, b: (a != 0) | (b != 0), True),
    "xor": (lambda a, b: (a != 0) ^ (b != 0), True),
}

#: Per-pixel math functions with Earth Engine's names (ee.Image.abs, .sqrt, ...).
UNARY: dict[str, Callable] = {
    "abs": np.abs,
    "sqrt": np.sqrt,
    "exp": np.exp,
    "log": np.log,
    "log10": np.log10,
    "floor": np.floor,
    "ceil": np.ceil,
    "round": lambda v: np.floor(v + np.float32(0.5)),  # EE/Java rounds halves up, numpy to even
    "sin": np.sin,
    "cos": np.cos,
    "tan": np.tan,
    "asin": np.arcsin,
    "acos": np.arccos,
    "atan": np.arctan,
    "signum": np.sign,
    "not": lambda v: v == 0,
}


def apply_binary(a, b, op: str) -> Image:
    fn, cat = BINARY[op]
    return binary(a, b, op, fn, cat)


def apply_unary(image, op: str) -> Image:
    return unary(image, op, UNARY[op], categorical=True if op == "not" else None)


# ---- masks -----------------------------------------------------------------------------------------
def _broadcast(image: Image, other: Image | float, op: str) -> list:
    """Inputs of `other` for each band of `image` (one band is used for all, else same count)."""
    if not isinstance(other, Image):
        return [None] * len(image.band_names)
    n, m = len(image.band_names), len(other.band_names)
    if m == 1:
        return [other.band_names[0]] * n
    if m != n:
        raise InputError(
            f"{op}: the second image has {m} bands {other.band_names}; it needs one band or as many as "
            f"the image ({n}: {image.band_names}). select() one band."
        )
    return list(other.band_names)


def update_mask(image: Image, mask) -> Image:
    """Mask pixels where `mask` is zero or masked (EE's updateMask; masks only grow)."""
    image, mask = _image(image, "update_mask"), _operand(mask, "update_mask")
    pick = _broadcast(image, mask, "update_mask")
    parents = [image] + ([mask] if isinstance(mask, Image) else [])
    const = None if isinstance(mask, Image) else mask

    def kernel(values, masks, _g):
        if const is not None:
            return values[0], masks[0] | (const == 0)
        return values[0], masks[0] | masks[1] | (values[1] == 0)

    outputs = {
        n: ([(0, n)] + ([(1, pick[k])] if const is None else []), kernel)
        for k, n in enumerate(image.band_names)
    }
    return DerivedImage("update_mask", parents, outputs, [const], image.categorical_bands, finite=True)


def self_mask(image: Image) -> Image:
    """Mask pixels whose value is zero (EE's selfMask)."""
    image = _image(image, "self_mask")
    outputs = {n: ([(0, n)], lambda v, m, _g: (v[0], m[0] | (v[0] == 0))) for n in image.band_names}
    return DerivedImage("self_mask", [image], outputs, (), image.categorical_bands, finite=True)


def unmask(image: Image, value=0.0, same_footprint: bool = True) -> Image:
    """Masked pixels take `value` (a number or an image's pixels); EE's unmask.

    With `same_footprint` (EE's default) pixels outside the image's extent stay masked;
    False extends the result to the union of both extents.
    """
    image, value = _image(image, "unmask"), _operand(value, "unmask")
    pick = _broadcast(image, value, "unmask")
    parents = [image] + ([value] if isinstance(value, Image) else [])
    const = None if isinstance(value, Image) else value
    footprint = image.grid if same_footprint else None

    def kernel(values, masks, grid):
        if const is not None:
            v, vm = np.float32(const), False
        else:
            v, vm = values[1], masks[1]
        out = np.where(masks[0], v, values[0])
        m = masks[0] & vm
        if footprint is not None:
            m = m | ~grid_footprint(footprint, grid)
        return out, m

    outputs = {
        n: ([(0, n)] + ([(1, pick[k])] if const is None else []), kernel)
        for k, n in enumerate(image.band_names)
    }
    return DerivedImage(
        "unmask", parents, outputs, [const, bool(same_footprint)], image.categorical_bands, finite=True
    )


def where(image: Image, test, value) -> Image:
    """Where `test` is non-zero, take `value`; elsewhere (or where test/value are masked) keep
    `image`. Masked input pixels stay masked (EE's where)."""
    image = _image(image, "where")
    test, value = _operand(test, "where"), _operand(value, "where")
    pick_t, pick_v = _broadcast(image, test, "where"), _broadcast(image, value, "where")
    parents = [image] + [x for x in (test, value) if isinstance(x, Image)]
    ti = 1 if isinstance(test, Image) else None
    vi = (2 if ti else 1) if isinstance(value, Image) else None

    def kernel(values, masks, _g):
        it = iter(zip(values[1:], masks[1:]))
        tv, tm = next(it) if ti else (np.float32(test), False)
        vv, vm = next(it) if vi else (np.float32(value), False)
        use = (tv != 0) & ~tm & ~vm
        return np.where(use, vv, values[0]), masks[0]

    outputs = {}
    for k, n in enumerate(image.band_names):
        inputs = [(0, n)]
        if ti:
            inputs.append((ti, pick_t[k]))
        if vi:
            inputs.append((vi, pick_v[k]))
        outputs[n] = (inputs, kernel)
    params = [None if ti else test, None if vi else value]
    return DerivedImage("where", parents, outputs, params, image.categorical_bands, finite=True)


def conditional(test, a, b) -> Image:
    """`test ? a : b` per pixel (the expression language's ternary); masked where the test,
    or the chosen value, is masked."""
    test, a, b = (_operand(x, "?:") for x in (test, a, b))
    if not isinstance(test, Image):
        return a if test != 0 else b
    names = _pairing(a, b, "?:")[0] if (isinstance(a, Image) or isinstance(b, Image)) else test.band_names
    parents = [test] + [x for x in (a, b) if isinstance(x, Image)]
    ai = 1 if isinstance(a, Image) else None
    bi = (2 if ai else 1) if isinstance(b, Image) else None

    def pick(x, k):
        return x.band_names[0] if len(x.band_names) == 1 else x.band_names[k]

    if len(test.band_names) not in (1, len(names)):
        raise InputError(f"?: the test has {len(test.band_names)} bands; it needs one or {len(names)}.")

    def kernel(values, masks, _g):
        it = iter(zip(values[1:], masks[1:]))
        av, am = next(it) if ai else (np.float32(a), False)
        bv, bm = next(it) if bi else (np.float32(b), False)
        c = values[0] != 0
        return np.where(c, av, bv), masks[0] | np.where(c, am, bm)

    outputs = {}
    for k, n in enumerate(names):
        inputs = [(0, pick(test, k))]
        if ai:
            inputs.append((ai, pick(a, k)))
        if bi:
            inputs.append((bi, pick(b, k)))
        outputs[n] = (inputs, kernel)
    return DerivedImage("conditional", parents, outputs, [None if ai else a, None if bi else b], finite=True)


# ---- footprints and clipping ----------------------------------------------------------------------
def grid_footprint(extent: Grid, grid: Grid) -> np.ndarray:
    """Pixels of `grid` whose centre lies inside `extent` (an image's full grid)."""
    from rasterio.crs import CRS

    poly = _densified(extent.bounds) if extent.transform.b == 0 == extent.transform.d else None
    if poly is None:  # rotated grid: its four corners
        corners = [
            extent.transform @ xy
            for xy in ((0, 0), (extent.width, 0), (extent.width, extent.height), (0, extent.height))
        ]
        poly = {"type": "Polygon", "coordinates": [[list(c) for c in corners] + [list(corners[0])]]}
    return geometry_inside(poly, CRS.from_user_input(extent.crs), grid)


def _densified(bounds, steps: int = 20) -> dict:
    """A bbox as a polygon with points along its edges (curved once reprojected)."""
    w, s, e, n = bounds
    t = np.linspace(0.0, 1.0, steps + 1)[:-1]
    ring = (
        [(w + (e - w) * f, s) for f in t]
        + [(e, s + (n - s) * f) for f in t]
        + [(e - (e - w) * f, n) for f in t]
        + [(w, n - (n - s) * f) for f in t]
    )
    ring.append(ring[0])
    return {"type": "Polygon", "coordinates": [[list(p) for p in ring]]}


def geometry_inside(geometry: dict, crs, grid: Grid) -> np.ndarray:
    """Boolean (rows, cols): pixel centres of `grid` inside `geometry` (given in `crs`)."""
    from rasterio.features import geometry_mask
    from rasterio.warp import transform_geom

    geom = geometry if grid.crs == crs else transform_geom(crs, grid.crs, geometry)
    try:
        return geometry_mask([geom], out_shape=grid.shape, transform=grid.transform, invert=True)
    except ValueError:  # e.g. a geometry that vanished once reprojected
        return np.zeros(grid.shape, bool)


def _region_geometry(region) -> dict:
    """A lon/lat GeoJSON geometry (Polygon/MultiPolygon/...) of a bbox or GeoJSON-like region."""
    from .region import region_bounds

    region_bounds(region)  # validates, with our error messages
    if hasattr(region, "__geo_interface__"):
        region = region.__geo_interface__
    if isinstance(region, dict):
        kind = region.get("type")
        if kind == "Feature":
            return _region_geometry(region["geometry"])
        if kind == "FeatureCollection":
            geoms = [_region_geometry(f) for f in region.get("features") or []]
            return {"type": "GeometryCollection", "geometries": geoms}
        return _densify_geometry(region)
    return _densified(tuple(float(v) for v in region))


def _densify_geometry(geom: dict, max_step: float = 0.05) -> dict:
    """Split lon/lat polygon edges longer than `max_step` degrees so they bend when reprojected."""

    def ring(points):
        out = []
        for p, q in zip(points[:-1], points[1:]):
            n = max(1, math.ceil(max(abs(q[0] - p[0]), abs(q[1] - p[1])) / max_step))
            n = min(n, 64)
            out.extend([p[0] + (q[0] - p[0]) * f, p[1] + (q[1] - p[1]) * f] for f in np.arange(n) / n)
        out.append(list(points[-1][:2]))
        return out

    kind = geom.get("type")
    if kind == "Polygon":
        return {"type": kind, "coordinates": [ring(r) for r in geom["coordinates"]]}
    if kind == "MultiPolygon":
        return {"type": kind, "coordinates": [[ring(r) for r in poly] for poly in geom["coordinates"]]}
    if kind == "GeometryCollection":
        return {"type": kind, "geometries": [_densify_geometry(g) for g in geom.get("geometries") or []]}
    return geom


def clip(image: Image, region) -> Image:
    """Mask pixels whose centre lies outside `region` (EE's clip); the extent shrinks to it."""
    from rasterio.crs import CRS

    from .region import grid_for

    image = _image(image, "clip")
    geom = _region_geometry(region)
    wgs84 = CRS.from_epsg(4326)
    cut = grid_for(image, region)
    base = image.grid
    # The region's box on the image's lattice, intersected with the image's extent.
    c0, r0 = (round(v) for v in ~base.transform @ (cut.transform.c, cut.transform.f))
    c1, r1 = min(c0 + cut.width, base.width), min(r0 + cut.height, base.height)
    c0, r0 = max(c0, 0), max(r0, 0)
    grid = base.window(c0, r0, max(c1 - c0, 1), max(r1 - r0, 1))

    def kernel(values, masks, g):
        return values[0], masks[0] | ~geometry_inside(geom, wgs84, g)

    outputs = {n: ([(0, n)], kernel) for n in image.band_names}
    return DerivedImage("clip", [image], outputs, geom, image.categorical_bands, grid=grid, finite=True)


# ---- band-combining operations ------------------------------------------------------------------
def normalized_difference(image: Image, band_names: Sequence | None = None) -> Image:
    """(first - second) / (first + second) as band "nd"; masked where either input is negative
    (as Earth Engine documents), 0 where the sum is 0."""
    image = _image(image, "normalized_difference")
    if band_names is None:
        if len(image.band_names) < 2:
            raise InputError(
                f"normalized_difference needs two bands; this image has {image.band_names}: pass band_names=[a, b]."
            )
        pair = image.band_names[:2]
    else:
        if isinstance(band_names, str) or len(band_names) != 2:
            raise InputError(f"normalized_difference takes a list of two band names, got {band_names!r}.")
        pair = [image.select(b).band_names[0] for b in band_names]

    def kernel(values, masks, _g):
        a, b = values
        return _divide(a - b, a + b), masks[0] | masks[1] | (a < 0) | (b < 0)

    return DerivedImage("normalized_difference", [image], {"nd": ([(0, pair[0]), (0, pair[1])], kernel)})


def argmax(image: Image, name: str = "argmax") -> Image:
    """The 0-based index of the band with the largest value (the first on ties): a class band.
    Masked where any band is masked."""
    image = _image(image, "argmax")
    names = image.band_names

    def kernel(values, masks, _g):
        return np.argmax(np.stack(values), axis=0).astype(np.float32), np.logical_or.reduce(masks)

    return DerivedImage(
        "argmax", [image], {str(name): ([(0, n) for n in names], kernel)}, (), [str(name)], finite=True
    )


def _identity(values, masks, _g):
    return values[0], masks[0]


def add_bands(image: Image, other: Image, names=None, overwrite: bool = False) -> Image:
    """`image`'s bands then `other`'s (or those `names` selects); EE's addBands.

    A band name already in `image` is an error unless `overwrite=True`, which replaces it
    in place. The result keeps `image`'s grid (extent and projection).
    """
    image, other = _image(image, "add_bands"), _image(other, "add_bands")
    if names is not None:
        other = select_bands(other, names if not isinstance(names, str) else [names])
    outputs: dict[str, tuple[list[tuple[int, str]], Kernel]] = {
        n: ([(0, n)], _identity) for n in image.band_names
    }
    clash = [n for n in other.band_names if n in outputs]
    if clash and not overwrite:
        raise InputError(
            f"add_bands: band(s) {clash} are in both images; rename() one of them or pass overwrite=True."
        )
    for n in other.band_names:
        outputs[n] = ([(1, n)], _identity)
    cat = {n for n in image.band_names if n in image.categorical_bands and n not in other.band_names}
    cat |= set(other.categorical_bands)
    return DerivedImage("add_bands", [image, other], outputs, [bool(overwrite)], sorted(cat), finite=True)


def select_bands(image: Image, selectors: Sequence, new_names: Sequence[str] | None = None) -> Image:
    """Bands picked by names, regular expressions (whole-name match) or 0-based indices, in
    selector order (EE's select); `new_names` renames them."""
    image = _image(image, "select")
    have = image.band_names
    picked: list[str] = []
    for s in selectors:
        if isinstance(s, (int, np.integer)) and not isinstance(s, bool):
            if not -len(have) <= s < len(have):
                raise InputError(f"Band index {s} is out of range: this image has {len(have)} bands {have}.")
            found = [have[s]]
        elif isinstance(s, str):
            if s in have:
                found = [s]
            else:
                try:
                    rx = re.compile(s)
                except re.error:
                    rx = None
                found = [b for b in have if rx is not None and rx.fullmatch(b)]
            if not found:
                raise InputError(
                    f"Unknown band(s) [{s!r}]: no band is named or matches it; this image has bands {have}."
                )
        else:
            raise InputError(f"select takes band names, regular expressions or indices, got {s!r}.")
        picked.extend(found)
    if not picked:
        raise InputError(f"select() needs at least one band; this image has bands {have}.")
    if len(set(picked)) != len(picked):
        raise InputError(f"select() picked band(s) twice: {picked}; each band can be selected once.")
    names = picked if new_names is None else [str(n) for n in new_names]
    if len(names) != len(picked):
        raise InputError(f"select() got {len(names)} new names {names} for the {len(picked)} bands {picked}.")
    if len(set(names)) != len(names):
        raise InputError(f"select() got duplicate band names {names}: band names must be unique.")
    from .image import _BandView

    return _BandView(image, names, picked)

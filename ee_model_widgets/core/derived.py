"""`DerivedImage`: an image computed pixel by pixel from other images, window by window.

The lazy node behind every band-math operation (core/ops.py, core/masks.py): parent images,
output band names, and for each output band the parent bands it is computed from plus a
pixel kernel. Reading a window of it reads exactly those parent bands for that window (one
`read`, or `read_many` for a batch of map tiles, per distinct parent) and applies the
kernels, so a derived image never holds whole-image arrays, shares the caches of its parents
(a prediction's cells are computed once whatever is derived from them), and shows the same
pixels on the map, in exports and in `to_numpy`. Its fingerprint (for the cell caches of
models applied to it) is built from the operation, its parameters and its parents'
fingerprints, so two identical derivations share cached cells.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from .fingerprint import image_fingerprint
from .grid import Grid
from .image import Image, _BandView
from .plan import ReadPlan, plan_of_parents

# A kernel takes the values and masks of its inputs (2-D float32; a masked pixel's value is
# undefined, 0 at a source, anything after another kernel, so a kernel must not let it into an
# unmasked output) and returns (values, mask) of one output band; non-finite values are masked
# afterwards. A kernel returns new arrays or its inputs, never arrays it keeps: a read may use
# a new array as its result.
Kernel = Callable[[list[np.ndarray], list[np.ndarray], Grid], tuple[np.ndarray, np.ndarray]]
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
        keeps_masks: str | None = None,
        zero_masked: bool = False,
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
        # Promises the kernels make, which let a read skip work (see `_Fused.evaluate`):
        # `keeps_masks` "every": a pixel masked in any input is masked in the output; "first":
        # one masked in the first input is; None: no promise (unmask fills masked pixels).
        # `zero_masked`: the output holds 0 wherever it is masked, given inputs that hold 0
        # wherever they are masked (as every read does).
        if keeps_masks not in (None, "first", "every"):
            raise ValueError(f"keeps_masks must be None, 'first' or 'every', not {keeps_masks!r}")
        self._keeps_masks = keeps_masks
        self._zero_masked = bool(zero_masked)

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

    # ---- the model under it -----------------------------------------------------------------
    @property
    def model(self):
        """The model of a prediction this image is computed from (fixInputProj ones first), or None."""
        found = [m for m in (getattr(p, "model", None) for p in self.parents) if m is not None]
        for m in found:
            if getattr(getattr(m, "params", None), "fix_input_proj", False):
                return m
        return found[0] if found else None

    # ---- the read path ----------------------------------------------------------------------
    # A chain of operations (`pred.gt(0.5).self_mask()`, an expression tree) is read as ONE
    # fused evaluation: the sources at its leaves (predictions, rasters...) are each read once
    # for the window, with the union of the bands the whole tree needs, and every kernel then
    # runs on 2-D band arrays. Intermediate images are never stacked, zeroed or masked as
    # (bands, rows, cols) arrays, so a derived tile costs its source's read plus its kernels.
    def _fuse(self, bands: list[str]) -> _Fused:
        """The sources to read (by id: image, bands) and the kernel steps, inputs first."""
        leaves: dict[int, tuple[Image, list[str]]] = {}
        steps: list[tuple[tuple[int, str], DerivedImage, Kernel, list[tuple[int, str]]]] = []
        done: set[tuple[int, str]] = set()
        stack: list[tuple[Image, str, bool]] = [(self, b, False) for b in reversed(bands)]
        while stack:  # iterative depth-first walk: deep expression trees need no recursion
            node, name, expanded = stack.pop()
            node, name = _through_views(node, name)
            key = (id(node), name)
            if key in done:
                continue
            if not isinstance(node, DerivedImage):
                leaves.setdefault(id(node), (node, []))[1].append(name)
                done.add(key)
            elif expanded:
                inputs = [_key(*_through_views(node.parents[i], pb)) for i, pb in node._outputs[name][0]]
                steps.append((key, node, node._outputs[name][1], inputs))
                done.add(key)
            else:
                stack.append((node, name, True))
                stack.extend((node.parents[i], pb, False) for i, pb in reversed(node._outputs[name][0]))
        return _Fused(leaves, steps, [(id(self), b) for b in bands])

    def _read(self, grid: Grid, bands: list[str], resampling) -> np.ma.MaskedArray:
        fused = self._fuse(bands)
        reads = {lid: [leaf.read(grid, names, resampling)] for lid, (leaf, names) in fused.leaves.items()}
        return fused.evaluate([grid], reads)[0]

    def _plan(self, grids: list[Grid], bands: list[str], resampling, max_cells: int | None) -> ReadPlan:
        """Each source under the operation tree plans the grids once (a prediction: its cells
        and budget) for all the bands the tree reads from it; its `parents` are those plans."""
        fused = self._fuse(bands)
        sources = [leaf.plan(grids, names, resampling, max_cells) for leaf, names in fused.leaves.values()]
        return plan_of_parents(grids, bands, resampling, sources)

    def _read_plan(self, plan: ReadPlan) -> list[np.ma.MaskedArray]:
        """Each source reads the plan's grids in one batch (one model call for a prediction),
        then the kernels run per grid."""
        fused = self._fuse(list(plan.bands))  # the same walk as `_plan`: sources in the same order
        per_leaf = {
            lid: list(leaf.read_plan(pp)) for (lid, (leaf, _)), pp in zip(fused.leaves.items(), plan.parents)
        }
        return fused.evaluate(list(plan.grids), per_leaf)


def _through_views(node: Image, name: str) -> tuple[Image, str]:
    """The image and band a `select`/`rename` view reads (views are read through, so two
    views of one prediction share its single read)."""
    while isinstance(node, _BandView):
        node, name = node._parent, node._to_parent[name]
    return node, name


def _key(node: Image, name: str) -> tuple[int, str]:
    return id(node), name


class _Fused:
    """One fused read of a derived image: source reads, then kernel steps in dependency order."""

    def __init__(self, leaves, steps, outputs):
        self.leaves = leaves
        self.steps = steps
        self.outputs = outputs

    def evaluate(self, grids: list[Grid], reads: dict[int, list]) -> list[np.ma.MaskedArray]:
        """The output bands on each grid from the sources' reads of them (`reads[source][n]`
        for `grids[n]`; each is dropped once used, so its memory serves the next grid)."""
        out = []
        with np.errstate(all="ignore"):  # 0/0, log(-1)...: handled by the kernels and the finite check
            for n, grid in enumerate(grids):
                out.append(self._evaluate(grid, {lid: r[n] for lid, r in reads.items()}))
                for r in reads.values():
                    r[n] = None
        return out

    def _evaluate(self, grid: Grid, reads: dict[int, np.ma.MaskedArray]) -> np.ma.MaskedArray:
        """The output bands on `grid` from the sources' reads of it (under np.errstate).

        A map tile costs its source's read plus this, so it does as few full-array passes as it
        can: a band that is masked everywhere (a tile beyond the image's edge) is not computed
        through kernels that keep their inputs' masks, and the final zeroing of masked pixels
        is skipped when the kernels promise it (`zero_masked`) or nothing is masked.
        """
        shape = (grid.height, grid.width)
        # key -> (values, mask, all masked, values hold 0 where masked); values and mask are
        # None for a band known to be masked everywhere without having been computed.
        bands: dict[tuple[int, str], tuple] = {}
        empty = None  # a source's one-band read that is masked everywhere
        for lid, (_leaf, names) in self.leaves.items():
            read = reads[lid]
            data, masks = np.ma.getdata(read), np.ma.getmaskarray(read)
            if data.dtype != np.float32:  # the Image.read contract, enforced for the kernels
                data = data.astype(np.float32)
            for k, name in enumerate(names):
                full = bool(masks[k].all())
                bands[(lid, name)] = (data[k], masks[k], full, True)
                if full and len(names) == 1 and read.dtype == np.float32 and np.ma.isMaskedArray(read):
                    empty = read
        for key, node, kernel, inputs in self.steps:
            ins = [bands[k] for k in inputs]
            keeps = node._keeps_masks
            if keeps is not None and (ins[0][2] or (keeps == "every" and any(e[2] for e in ins))):
                bands[key] = _ALL_MASKED  # e.g. a tile beyond the image's edge
                continue
            if any(e is _ALL_MASKED for e in ins):
                ins = [_materialised(e, shape) for e in ins]
            values, m = kernel([e[0] for e in ins], [e[1] for e in ins], grid)
            values = np.asarray(values)
            if values.dtype != np.float32:  # booleans, float64: float32 as every read returns
                values = values.astype(np.float32)
            if values.shape != shape:  # a kernel may answer a constant
                values = np.broadcast_to(values, shape)
            m = np.asarray(m, bool)
            if m.shape != shape:
                m = np.broadcast_to(m, shape)
            clean = node._zero_masked and all(e[3] for e in ins)
            if not node._finite:
                finite = np.isfinite(values)
                if not finite.all():
                    m, clean = m | ~finite, False
            bands[key] = (values, m, False, clean)
        if len(self.outputs) == 1:
            entry = bands[self.outputs[0]]
            if entry[2] and empty is not None:
                # Masked everywhere (a tile beyond the source's edge): that is the source's own
                # read (zeros, all masked), made for this read alone; no new arrays.
                return empty
            return _single_output(entry, shape)
        out = np.empty((len(self.outputs), *shape), np.float32)
        mask = np.empty(out.shape, bool)
        for k, key in enumerate(self.outputs):
            values, m, full, clean = bands[key]
            if full:
                out[k], mask[k] = 0, True
            else:
                mask[k] = m
                _zeroed_into(values, m, clean, out[k])
        return np.ma.MaskedArray(out, mask=mask)


# A band masked everywhere, not computed (see `_Fused.evaluate`).
_ALL_MASKED = (None, None, True, True)


def _materialised(entry: tuple, shape: tuple[int, int]) -> tuple:
    """The band's arrays, made for a band known to be masked everywhere (for kernels like
    `unmask` that read masked pixels)."""
    if entry is not _ALL_MASKED:
        return entry
    return np.zeros(shape, np.float32), np.ones(shape, bool), True, True


def _single_output(entry: tuple, shape: tuple[int, int]) -> np.ma.MaskedArray:
    """A one-band result; a kernel's freshly made arrays are used in place, not copied."""
    values, m, full, clean = entry
    if full:
        return np.ma.MaskedArray(np.zeros((1, *shape), np.float32), mask=np.ones((1, *shape), bool))
    # A band read from a source or broadcast from a constant is a view: it is copied. A
    # kernel's own result (no base) is this read's alone, so it becomes the output as is.
    if values.base is None and values.flags.writeable and values.flags.c_contiguous:
        _zeroed_into(values, m, clean, values)
        out = values[None]
    else:
        out = np.empty((1, *shape), np.float32)
        _zeroed_into(values, m, clean, out[0])
    mask = m[None] if m.base is None and m.flags.c_contiguous else m[None].copy()
    return np.ma.MaskedArray(out, mask=mask)


def _zeroed_into(values: np.ndarray, m: np.ndarray, clean: bool, out: np.ndarray) -> None:
    """`out` = `values` with masked pixels set to 0 (the Image.read contract); `out` may be `values`."""
    if clean or not m.any():
        if out is not values:
            out[...] = values
        return
    # The bits are AND-ed with 0 (masked) or all ones (kept): exact for any value (NaN too)
    # and twice as fast as a masked copy on speckled masks.
    keep = np.subtract(m, 1, dtype=np.uint32)  # 0 where masked, 0xFFFFFFFF elsewhere
    np.bitwise_and(values.view(np.uint32), keep, out=out.view(np.uint32))


def _canon(value: Any) -> str:
    """A deterministic text of operation parameters (numbers exact, dicts sorted)."""
    return json.dumps(value, sort_keys=True, default=repr, separators=(",", ":"))

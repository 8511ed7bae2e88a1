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
from .image import Image
from .plan import ReadPlan, plan_of_parents

# A kernel takes the values and masks of its inputs (2-D, masked pixels hold 0) and returns
# (values, mask) of one output band; non-finite values are masked afterwards.
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

    def _plan(self, grids: list[Grid], bands: list[str], resampling, max_cells: int | None) -> ReadPlan:
        """Each parent plans the grids once (a prediction: its cells and budget), in
        `_distinct_parents` order, only the parents these bands read."""
        need = self._needs(bands)
        parents = [
            p.plan(grids, need[id(p)], resampling, max_cells)
            for p in self._distinct_parents()
            if id(p) in need
        ]
        return plan_of_parents(grids, bands, resampling, parents)

    def _read_plan(self, plan: ReadPlan) -> list[np.ma.MaskedArray]:
        """Each parent reads the plan's grids in one batch (one model call for a prediction),
        then the kernels run per grid."""
        names = list(plan.bands)
        need = self._needs(names)
        readers = [p for p in self._distinct_parents() if id(p) in need]
        per_parent = {id(p): p.read_plan(pp) for p, pp in zip(readers, plan.parents)}
        return [
            self._combine(g, names, need, {k: v[n] for k, v in per_parent.items()})
            for n, g in enumerate(plan.grids)
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

"""`PredictedImage`: a model applied to an image, lazily, cell by cell (EE's `predictImage`).

Reading a grid from a predicted image (`plan`, then `read_plan`; `read` and `read_many` do both):
1. plan the model cells covering it on a fixed lattice (`tiling`), and refuse it with
   `TooManyCells` when they exceed the cell budget: with
   `fix_input_proj=True` the lattice is the model's `proj` (default: the source image's
   native grid), with False it is the request grid's own CRS and pixel size anchored at the
   CRS origin;
2. take the cells already in the cell cache (or being computed by another thread: each
   missing cell is computed once, whoever asks first);
3. read the inputs of the missing ones, one `image.read` per contiguous block of cells,
   each cell with its overlap; cut them into a batch and make one model call
   (`Model.predict_cells`, split only by `max_batch_size`);
4. crop the overlap, apply the masks (an output pixel is valid only where every input
   pixel under it was), store the cells in the cache;
5. assemble the cells: a plain copy when the request lies on the output lattice, else the
   mosaic of cells is resampled onto the request grid by GDAL through the same path as
   `Image.from_array` reads (`raster.warp_array`).

A predicted image is an `Image`: it can be read, exported, displayed, or fed to another
model (its reads then plan that model's cells).
"""

from __future__ import annotations

import copy
import math
import threading
import warnings
from dataclasses import dataclass

import numpy as np
from affine import Affine
from rasterio.warp import transform_bounds

from ..errors import InputError, ModelError, TooManyCells
from .antimeridian import footprints
from .cache import CellCache, default_cache
from .fingerprint import image_fingerprint
from .grid import Grid, grid_window, lattice_offset, pixel_window
from .image import Image, empty_read
from .plan import ReadPlan
from .raster import warp_array
from .resampling import resolve_resampling
from .tiling import (
    Lattice,
    extract_cells,
    intersect,
    lattice_for_proj,
    lattice_for_request,
    mask_to_output,
)

#: The cell budget: the most model cells one grid read may need unless
#: `predict_image(max_cells=...)` says otherwise (a map layer may ask for less per tile).
DEFAULT_MAX_CELLS = 4096
# Cached marker for a cell whose core has no valid input pixel (all masked, no model call).
_EMPTY = np.zeros(0, np.float32)
_EMPTY.flags.writeable = False
# How many single-cell retries are spent to find which cell of a failed batch raised.
_MAX_BLAME_RETRIES = 16
#: Private cell cache of a streaming (export) view.
EXPORT_SCRATCH_BYTES = 32 * 1024 * 1024


# ---- in-flight de-duplication ----------------------------------------------------------------
class _Pending:
    """A cell being computed by one thread; others wait on it instead of recomputing."""

    __slots__ = ("event", "value", "error")

    def __init__(self):
        self.event = threading.Event()
        self.value: np.ndarray | None = None
        self.error: BaseException | None = None


_INFLIGHT: dict[tuple, _Pending] = {}
_INFLIGHT_LOCK = threading.Lock()


@dataclass
class _Plan:
    """What one request grid needs."""

    grid: Grid
    bands: list[str]
    resampling: object
    lattice: Lattice
    offset: tuple[int, int] | None  # request origin on the output lattice, if aligned
    cells: tuple[int, int, int, int] | None  # i0, j0, i1, j1 (end exclusive); None = nothing to do

    @property
    def count(self) -> int:
        if self.cells is None:
            return 0
        i0, j0, i1, j1 = self.cells
        return (i1 - i0) * (j1 - j0)


class PredictedImage(Image):
    """`model` applied to `source`, computed lazily per cell; see the module docstring."""

    def __init__(self, model, source: Image, cache="default", max_cells: int | None = None):
        if not isinstance(source, Image):
            raise InputError(
                f"predict_image needs an emw.Image, got {type(source).__name__}: wrap arrays with "
                "emw.Image.from_array(arr, transform=, crs=) or files with emw.Image.open(path)."
            )
        if cache == "default":
            cache = default_cache()
        if cache is not None and not isinstance(cache, CellCache):
            raise InputError(f"cache must be 'default', a CellCache or None, got {cache!r}.")
        if max_cells is not None and (
            isinstance(max_cells, bool) or not isinstance(max_cells, int) or max_cells < 1
        ):
            raise InputError(f"max_cells must be a positive integer, got {max_cells!r}.")
        self.model = model
        self.source = source
        self.params = p = model.params
        self.cache = cache
        self.max_cells = max_cells or DEFAULT_MAX_CELLS
        self._plan_in = model.input_plan(source.band_names, getattr(source, "properties", None))
        self._slots = model.output_slots(probe=self._probe)
        self._band_names = [n for s in self._slots for n in s.band_names]
        self.categorical_bands = frozenset(n for s in self._slots if s.band.is_integer for n in s.band_names)
        self._key_prefix = (
            model.fingerprint,
            p.fingerprint(),
            image_fingerprint(source),
            self._plan_in,
            tuple(self._band_names),
        )
        proj = p.proj if p.proj is not None else source.projection
        self._native = lattice_for_proj(
            proj.crs, proj.transform, p.input_tile_size, p.overlap, p.output_tile_size
        )
        self._grid: Grid | None = None
        self._footprint_cache: dict[tuple, list[tuple[int, int, int, int]]] = {}
        self._fp_lock = threading.Lock()
        # [cells the model computed from valid inputs, those whose output had a finite value]:
        # a model that gives nothing but NaN would otherwise only show as an empty map.
        self._output_counts = [0, 0]
        self._counts_lock = threading.Lock()
        # Streaming views (exports) read the shared cache but keep new cells in a small
        # private one, so an export's memory does not grow with its size and it does not
        # flush the cells the map is showing.
        self._scratch: CellCache | None = None
        self._warned_empty = False

    @property
    def cells_without_values(self) -> int:
        """How many cells the model has computed from valid inputs if not one of them had a finite
        output value (only NaN or inf: masked), else 0. Non-zero is the mark of a broken model or
        of inputs it cannot take (e.g. scaled otherwise than it was trained on)."""
        with self._counts_lock:
            computed, with_values = self._output_counts
        return computed if computed and not with_values else 0

    def streaming(self, scratch_bytes: int = EXPORT_SCRATCH_BYTES) -> PredictedImage:
        """A view for one-pass reads (exports): uses cached cells but stores new ones only in
        a private `scratch_bytes` LRU (cells shared by neighbouring windows are still reused)."""
        view = copy.copy(self)
        view._scratch = CellCache(scratch_bytes)
        return view

    def export(self, path, region=None, proj=None, **kwargs) -> str:
        """Write a GeoTIFF window by window (see `Image.export`), without filling the cell cache."""
        return Image.export(self.streaming() if self._scratch is None else self, path, region, proj, **kwargs)

    def __repr__(self) -> str:
        p = self.params
        return (
            f"<PredictedImage of {self.model.name!r} bands={self.band_names} tile={list(p.input_tile_size)} "
            f"overlap={list(p.overlap)} fix_input_proj={p.fix_input_proj}>"
        )

    def fingerprint(self) -> str:
        """Identity of this prediction (model, parameters, source), for caches of composed models."""
        return "pred:" + "|".join(map(str, self._key_prefix))

    # ---- geometry ------------------------------------------------------------------------
    @property
    def grid(self) -> Grid:
        """The native output grid: the output lattice (`proj`, or the source's grid, at the
        output scale) over the source image's footprint."""
        if self._grid is None:
            win = self._footprint(self._native)
            if win is None:
                raise InputError(
                    f"The source image does not overlap the model's proj {self.params.proj!r}: use a "
                    "proj whose CRS covers the image."
                )
            c0, r0, c1, r1 = win
            lat = self._native
            self._grid = Grid(lat.crs, lat.out_transform @ _translate(c0, r0), c1 - c0, r1 - r0)
        return self._grid

    def _footprint(self, lattice: Lattice) -> tuple[int, int, int, int] | None:
        """The source image's extent as an output-pixel window of `lattice` (cached); across
        the antimeridian, unwrapped east past 180° (`_footprints` has both sides)."""
        feet = self._footprints(lattice)
        return feet[0] if feet else None

    def _footprints(self, lattice: Lattice) -> list[tuple[int, int, int, int]]:
        key = lattice.key
        with self._fp_lock:
            if key in self._footprint_cache:
                return self._footprint_cache[key]
        src = self.source.grid
        if src.crs == lattice.crs:  # its corners: a rotated source is not its bounding box
            wins = [grid_window(lattice.out_transform, src)]
        else:
            wins = [
                pixel_window(lattice.out_transform, b) for b in footprints(src.bounds, src.crs, lattice.crs)
            ]
        with self._fp_lock:
            if len(self._footprint_cache) > 64:  # one entry per zoom level in practice
                self._footprint_cache.clear()
            self._footprint_cache[key] = wins
        return wins

    # ---- planning ----------------------------------------------------------------------------
    def _make_plan(self, grid: Grid, bands: list[str], resampling) -> _Plan:
        p = self.params
        if p.fix_input_proj:
            lattice = self._native
            offset = lattice_offset(lattice.out_transform, lattice.crs, grid)
        else:
            lattice, offset = lattice_for_request(grid, p.input_tile_size, p.overlap, p.output_tile_size)
        feet = self._footprints(lattice)
        if offset is not None:
            windows = [(offset[0], offset[1], offset[0] + grid.width, offset[1] + grid.height)]
        else:
            windows = self._request_window(grid, lattice, resampling)
            if windows is None:
                windows = feet[:1]
        cells = None
        hits = [h for w in windows for f in feet if (h := intersect(w, f)) is not None]
        if hits:  # several only for a request across the antimeridian: their bounding box
            hit = (
                min(h[0] for h in hits),
                min(h[1] for h in hits),
                max(h[2] for h in hits),
                max(h[3] for h in hits),
            )
            cells = lattice.cells_for_output_window(*hit)
        return _Plan(grid, bands, resampling, lattice, offset, cells)

    def _request_window(
        self, grid: Grid, lattice: Lattice, resampling
    ) -> list[tuple[int, int, int, int]] | None:
        """Output-lattice pixels needed to resample onto `grid` (kernel margin included); on a
        lon/lat lattice, in each copy of the world (a scene stored past 180° is warped from the
        copy it lies in: see `warp._source_window`)."""
        if grid.crs == lattice.crs:
            bounds = grid.bounds
        else:
            try:
                bounds = transform_bounds(grid.crs, lattice.crs, *grid.bounds, densify_pts=21)
            except Exception:  # noqa: BLE001
                return None
            if not all(math.isfinite(v) for v in bounds):
                return None
        name = getattr(resampling, "name", "bilinear") if resampling is not None else "bilinear"
        pad = 1 if name in ("nearest", "bilinear", "mode") else 3
        boxes = [bounds]
        if lattice.crs.is_geographic:
            w, s, e, n = bounds
            if grid.crs != lattice.crs and w > e:
                e += 360.0  # transform_bounds' answer across 180°: unwrap it
            boxes = [(w + k, s, e + k, n) for k in (0.0, -360.0, 360.0)]
        return [pixel_window(lattice.out_transform, b, pad=pad) for b in boxes]

    def _plan(self, grids: list[Grid], bands: list[str], resampling, max_cells: int | None) -> ReadPlan:
        """One `_Plan` per grid, each checked against the cell budget: `self.max_cells`, or
        `max_cells` if smaller where the cells are the model's native ones (fix_input_proj: a
        zoomed-out grid needs ever more of them); on the request's own lattice a map tile needs
        the same cells at every zoom, so only `self.max_cells` applies there."""
        parts = tuple(self._make_plan(g, bands, resampling) for g in grids)
        native = self.params.fix_input_proj and max_cells is not None and max_cells < self.max_cells
        limit = max_cells if native else self.max_cells
        refusals = tuple(
            self._too_many(pl.count, limit, native) if pl.count > limit else None for pl in parts
        )
        return ReadPlan(
            tuple(grids), tuple(bands), resampling, tuple(pl.count for pl in parts), refusals, parts
        )

    def _too_many(self, count: int, limit: int, per_tile: bool) -> TooManyCells:
        p = self.params
        size = f"{p.input_tile_size[0]}x{p.input_tile_size[1]} px"
        if per_tile:
            msg = (
                f"This map tile needs {count:,} model cells of {size} at the model's native scale (fixInputProj; "
                f"limit {limit:,} per tile): zoom in, or raise the layer's max_cells_per_tile."
            )
        else:
            where = "zoom in" if p.fix_input_proj else "read a smaller area"
            msg = (
                f"This read needs {count:,} model cells of {size} (limit max_cells={limit:,}): {where}, read a "
                "smaller region or a coarser proj, or pass predict_image(..., max_cells=N)."
            )
        return TooManyCells(msg, count, limit)

    # ---- the read path ---------------------------------------------------------------------
    def _read(self, grid: Grid, bands: list[str], resampling) -> np.ma.MaskedArray:
        out = self.read_plan(self._plan([grid], bands, resampling, None))[0]
        silent = self.cells_without_values
        if silent and not self._warned_empty:
            # The map shows this as the layer's notice; reads (to_numpy, export) say it here.
            self._warned_empty = True
            warnings.warn(
                f"Model {self.model.name!r} has returned no finite value (only NaN or inf) for any of the "
                f"{silent} cells computed so far: the result is empty (masked). Check the input bands and "
                "their scaling, or the model.",
                stacklevel=4,
            )
        return out

    def _read_plan(self, plan: ReadPlan) -> list[np.ma.MaskedArray]:
        """All grids of the plan with one batched pass over the union of their missing cells:
        the map layer's tiles of one batch cost one model call (split only by `max_batch_size`)."""
        return self._read_plans(list(plan.detail))

    def _read_plans(self, plans: list[_Plan]) -> list[np.ma.MaskedArray]:
        wanted: dict[tuple, tuple[Lattice, tuple[int, int]]] = {}
        for pl in plans:
            if pl.cells is None:
                continue
            i0, j0, i1, j1 = pl.cells
            lk = pl.lattice.key
            for j in range(j0, j1):
                for i in range(i0, i1):
                    wanted[(lk, i, j)] = (pl.lattice, (i, j))
        values = self._cells(wanted)
        return [self._assemble(pl, values) for pl in plans]

    def _lookup(self, key: tuple) -> np.ndarray | None:
        v = self.cache.get(key) if self.cache is not None else None
        if v is None and self._scratch is not None:
            v = self._scratch.get(key)
        return v

    def _key(self, lattice_key: tuple, cell: tuple[int, int]) -> tuple:
        return (*self._key_prefix, lattice_key, cell)

    def _cells(self, wanted: dict[tuple, tuple[Lattice, tuple[int, int]]]) -> dict[tuple, np.ndarray]:
        """Values of the wanted cells: cached, computed by us, or awaited from other threads."""
        values: dict[tuple, np.ndarray] = {}
        missing = []
        for wk, (_lattice, cell) in wanted.items():
            v = self._lookup(self._key(wk[0], cell))
            if v is None:
                missing.append(wk)
            else:
                values[wk] = v
        if not missing:
            return values
        owned: dict[tuple, _Pending] = {}
        waiting: dict[tuple, _Pending] = {}
        with _INFLIGHT_LOCK:
            for wk in missing:
                full = self._key(wk[0], wanted[wk][1])
                pending = _INFLIGHT.get(full)
                if pending is None:
                    # Last chance: another thread may have finished it since our cache check.
                    v = self._lookup(full)
                    if v is not None:
                        values[wk] = v
                        continue
                    pending = _INFLIGHT[full] = _Pending()
                    owned[wk] = pending
                else:
                    waiting[wk] = pending
        if owned:
            try:
                computed = self._compute({wk: wanted[wk] for wk in owned})
            except BaseException as exc:
                with _INFLIGHT_LOCK:
                    for wk, pending in owned.items():
                        pending.error = exc
                        _INFLIGHT.pop(self._key(wk[0], wanted[wk][1]), None)
                        pending.event.set()
                raise
            with _INFLIGHT_LOCK:
                for wk, pending in owned.items():
                    v = computed[wk]
                    full = self._key(wk[0], wanted[wk][1])
                    store = self._scratch if self._scratch is not None else self.cache
                    if store is not None:
                        store.put(full, v)
                    pending.value = v
                    _INFLIGHT.pop(full, None)
                    pending.event.set()
                    values[wk] = v
        # Only now wait for cells other threads own: ours are done, so no thread waits on a
        # thread that waits on it (composed models read lower levels only).
        for wk, pending in waiting.items():
            pending.event.wait()
            if pending.error is not None:
                raise pending.error
            values[wk] = pending.value
        return values

    def _compute(self, cells: dict[tuple, tuple[Lattice, tuple[int, int]]]) -> dict[tuple, np.ndarray]:
        """Read inputs and run the model for these cells (any lattices) in one batched pass."""
        p = self.params
        by_lattice: dict[tuple, tuple[Lattice, list[tuple[int, int]]]] = {}
        for wk, (lattice, cell) in cells.items():
            by_lattice.setdefault(wk[0], (lattice, []))[1].append(cell)
        results: dict[tuple, np.ndarray] = {}
        inputs, valids, order = [], [], []
        tx, ty = p.input_tile_size
        ox, oy = p.overlap
        for lk, (lattice, cell_list) in by_lattice.items():
            # One read per contiguous block of cells: a read has a fixed cost (GDAL setup,
            # footprint transforms) several times that of a cell's pixels. On the source's
            # own pixel grid reads are plain slices, so a cell's input is exact whatever
            # block it came in; resampled reads may differ in the last digits with the
            # window GDAL is given (the cache keeps the first computed value).
            for i0, j0, i1, j1 in _rectangles(cell_list):
                block_grid = lattice.input_block_grid(i0, j0, i1, j1)
                if self._plan_in.bands:
                    data = self.source.read(block_grid, list(self._plan_in.bands))
                    filled = np.ma.getdata(data).astype(np.float32, copy=False)
                    bad = np.ma.getmaskarray(data) | ~np.isfinite(filled)
                    if bad.any():
                        filled = np.where(bad, np.float32(0), filled)
                    valid_px = ~bad.any(axis=0)
                else:  # only input properties: nothing to mask
                    filled = np.zeros((0, block_grid.height, block_grid.width), np.float32)
                    valid_px = np.ones((block_grid.height, block_grid.width), bool)
                nc, nr = i1 - i0, j1 - j0
                batch = extract_cells(filled, nc, nr, (tx, ty), (ox, oy))
                core = valid_px[oy : oy + nr * ty, ox : ox + nc * tx]
                core = core.reshape(nr, ty, nc, tx).transpose(0, 2, 1, 3).reshape(nr * nc, ty, tx)
                any_valid = core.reshape(nr * nc, -1).any(axis=1)
                ids = [(lk, i, j) for j in range(j0, j1) for i in range(i0, i1)]
                for k in np.flatnonzero(~any_valid):
                    results[ids[k]] = _EMPTY
                if any_valid.all():
                    inputs.append(batch)
                    valids.append(core)
                elif any_valid.any():
                    inputs.append(batch.transpose(3, 0, 1, 2)[:, any_valid].transpose(1, 2, 3, 0))
                    valids.append(core[any_valid])
                order.extend((*ids[k], lattice) for k in np.flatnonzero(any_valid))
        if not order:
            return results
        # No extra copy for the common case of one block of cells; several are joined band by
        # band, keeping each band's cells contiguous (see `extract_cells`)
        if len(inputs) == 1:
            stacked = inputs[0]
        else:
            stacked = np.concatenate([a.transpose(3, 0, 1, 2) for a in inputs], axis=1).transpose(1, 2, 3, 0)
        valid = valids[0] if len(valids) == 1 else np.concatenate(valids)
        del inputs, valids
        out = self._run_model(stacked, order)
        out_valid = mask_to_output(valid, p.output_tile_size)
        if not out_valid.all():
            out[np.broadcast_to(~out_valid[:, None], out.shape)] = np.nan
        with_values = int(np.isfinite(out).reshape(len(order), -1).any(axis=1).sum())
        with self._counts_lock:
            self._output_counts[0] += len(order)
            self._output_counts[1] += with_values
        for k, (lk, i, j, _) in enumerate(order):
            # an owned copy per cell: the cache must not keep the whole batch alive
            results[(lk, i, j)] = out[k].copy()
        return results

    def _run_model(self, stacked: np.ndarray, order: list) -> np.ndarray:
        """One batched model call; on failure find (and name) the cell that raised."""
        n = stacked.shape[0]
        try:
            return self.model.predict_cells(self._plan_in, self._slots, stacked)
        except ModelError as first:
            blame, exc = None, first
            if n > 1:
                for k in range(min(n, _MAX_BLAME_RETRIES)):
                    try:
                        self.model.predict_cells(self._plan_in, self._slots, stacked[k : k + 1])
                    except ModelError as one:
                        blame, exc = k, one
                        break
            else:
                blame = 0
            raise self._cell_error(exc, order, blame) from exc

    def _cell_error(self, exc: ModelError, order: list, blame: int | None) -> ModelError:
        def describe(k):
            lk, i, j, lattice = order[k]
            b = lattice.output_grid(i, j).bounds
            return (i, j), b, lattice.crs

        if blame is not None:
            cell, bounds, crs = describe(blame)
            where = (
                f"cell (i={cell[0]}, j={cell[1]}) covering ({bounds[0]:.6g}, {bounds[1]:.6g}, "
                f"{bounds[2]:.6g}, {bounds[3]:.6g}) in {crs.to_string()}"
            )
        else:
            cell, bounds, crs = describe(0)
            where = (
                f"a batch of {len(order)} cells starting at cell (i={cell[0]}, j={cell[1]}) covering "
                f"({bounds[0]:.6g}, {bounds[1]:.6g}, {bounds[2]:.6g}, {bounds[3]:.6g}) in {crs.to_string()}"
            )
        err = ModelError(f"{exc} [while predicting {where}]")
        err.cell = cell
        err.bounds = bounds
        err.crs = crs
        err.model_message = getattr(exc, "model_message", str(exc))
        return err

    def _probe(self) -> dict[str, np.ndarray]:
        """One call on a zero cell, to learn a model's output names and per-pixel shapes."""
        return self.model.probe(self._plan_in)

    # ---- assembly ------------------------------------------------------------------------------
    def _assemble(self, pl: _Plan, values: dict[tuple, np.ndarray]) -> np.ma.MaskedArray:
        idx = [self._band_names.index(b) for b in pl.bands]
        all_bands = idx == list(range(len(self._band_names)))
        if pl.cells is None:
            return empty_read(len(idx), pl.grid)
        lat = pl.lattice
        ux, uy = lat.out_tile
        i0, j0, i1, j1 = pl.cells
        if pl.offset is not None:
            col, row = pl.offset
            w, h = pl.grid.width, pl.grid.height
        else:
            col, row = i0 * ux, j0 * uy
            w, h = (i1 - i0) * ux, (j1 - j0) * uy
        out = np.full((len(idx), h, w), np.nan, np.float32)
        lk = lat.key
        for j in range(j0, j1):
            r0, r1 = max(j * uy, row), min((j + 1) * uy, row + h)
            if r0 >= r1:
                continue
            for i in range(i0, i1):
                c0, c1 = max(i * ux, col), min((i + 1) * ux, col + w)
                if c0 >= c1:
                    continue
                v = values[(lk, i, j)]
                if v.size == 0:
                    continue  # all masked
                src = v if all_bands else v[idx]
                out[:, r0 - row : r1 - row, c0 - col : c1 - col] = src[
                    :, r0 - j * uy : r1 - j * uy, c0 - i * ux : c1 - i * ux
                ]
        if pl.offset is None:
            mosaic_t = lat.out_transform @ _translate(col, row)
            return warp_array(out, mosaic_t, lat.crs, pl.grid, [resolve_resampling(pl.resampling)] * len(idx))
        mask = np.isnan(out)
        out[mask] = 0
        return np.ma.MaskedArray(out, mask=mask)


def _translate(c: float, r: float) -> Affine:
    return Affine.translation(c, r)


def _rectangles(cells: list[tuple[int, int]]) -> list[tuple[int, int, int, int]]:
    """Group cells into rectangles (i0, j0, i1, j1) so each block needs one image read.

    Cells in a row are split into runs of consecutive columns; runs with the same columns
    on consecutive rows merge. Exact: every cell is in exactly one rectangle.
    """
    rows: dict[int, list[int]] = {}
    for i, j in cells:
        rows.setdefault(j, []).append(i)
    runs: list[tuple[int, int, int]] = []  # (j, i0, i1)
    for j in sorted(rows):
        cols = sorted(set(rows[j]))
        start = prev = cols[0]
        for c in cols[1:]:
            if c != prev + 1:
                runs.append((j, start, prev + 1))
                start = c
            prev = c
        runs.append((j, start, prev + 1))
    open_rects: dict[tuple[int, int], list[int]] = {}  # (i0, i1) -> [j0, j1]
    done: list[tuple[int, int, int, int]] = []
    for j, i0, i1 in runs:
        rect = open_rects.get((i0, i1))
        if rect is not None and rect[1] == j:
            rect[1] = j + 1
        else:
            if rect is not None:
                done.append((i0, rect[0], i1, rect[1]))
            open_rects[(i0, i1)] = [j, j + 1]
    for (i0, i1), (j0, j1) in open_rects.items():
        done.append((i0, j0, i1, j1))
    return done

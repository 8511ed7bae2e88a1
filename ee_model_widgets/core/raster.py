"""Raster-backed images: in-memory arrays (`ArrayImage`) and files GDAL reads (`FileImage`).

Both read through the warp engine of `core/warp.py` (fixed blocks, pyramid levels) and
`core/frame_warp.py` (one GDAL warp set-up per fixed frame), so a pixel's value never depends
on the window it is read in: a map tile, a batch of model cells and an export window agree
bit for bit. Warped blocks and the source pixels under each frame are kept in small LRUs
(`clear_block_cache()` empties both).
"""

from __future__ import annotations

import functools
import math
import os
import threading
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import rasterio
from affine import Affine
from rasterio.errors import RasterioError
from rasterio.windows import Window

from ..errors import ImageReadError, InputError
from .cache import CellCache
from .frame_warp import close_frames, frame_block_shape, frame_grid, frame_size, warp_frame_window
from .grid import Grid, as_crs, as_transform, lattice_offset
from .image import Image, empty_read
from .resampling import resolve_resampling
from .warp import (  # noqa: F401 - BLOCK, TOLERANCE, warp_array, _frame, ... stay importable from here
    BLOCK,
    TOLERANCE,
    _assemble,
    _block_grid,
    _decimate,
    _decimated_grid,
    _frame,
    _groups,
    _image_scales,
    _masked,
    _pad,
    _pyramid_level,
    _source_window,
    _warp_bands,
    level_limit,
    slice_lattice,
    warp_array,
)

# Pixels (per band) read at once when block-averaging a file without overviews.
_STRIP_PIXELS = 16 * 1024 * 1024
# Files without overviews up to this many values (pixels x bands) keep a decimated level in
# memory once built (one pass over the file); larger ones decimate the pixels under each
# block as it is read.
_SMALL_FILE = 64 * 1024 * 1024
# A zoomed-out read of a larger file without overviews reads every full-res pixel under it (or,
# with too few overviews, every pixel of the coarsest): more than this many values (pixels x
# bands: seconds of reading; a zoom-5 map tile of a 50,000 px square file read all 2.5e9 of its
# pixels, ~30 s) is refused with the fix (build overviews) rather than left to stall the map.
_MAX_DECIMATED_READ = 256 * 1024 * 1024

_BLOCKS = CellCache(128 * 1024 * 1024)
# Source pixels under a frame of a target lattice (see `core/frame_warp.py`), read once.
_FRAME_SOURCES = CellCache(64 * 1024 * 1024)
# Striped locks: one thread at a time warps the missing blocks of a frame.
_FRAME_LOCKS = [threading.Lock() for _ in range(64)]
# The source window under a frame: one `transform_bounds` per frame, not per read.
_frame_window = functools.lru_cache(maxsize=4096)(_source_window)
# Cached marker for a block with no valid pixel.
_EMPTY = np.zeros(0, np.float32)
_EMPTY.flags.writeable = False


def clear_block_cache() -> None:
    """Forget every warped block and frame source, close the frames kept open (e.g. to measure
    or to free memory)."""
    _BLOCKS.clear()
    _FRAME_SOURCES.clear()
    close_frames()


# ---- shared helpers ----------------------------------------------------------------------
def _band_names(names: Sequence[str] | None, count: int, default: list[str], what: str) -> list[str]:
    if names is None:
        return default
    if isinstance(names, str):
        names = [names]
    names = [str(n) for n in names]
    if len(names) != count:
        raise InputError(f"{what} has {count} band(s) but band_names has {len(names)}: {names}.")
    if len(set(names)) != len(names):
        raise InputError(f"band_names {names} has duplicates: band names must be unique.")
    return names


def _categorical(categorical, names: list[str]) -> frozenset[str]:
    if categorical is None or categorical is False:
        return frozenset()
    if categorical is True:
        return frozenset(names)
    if isinstance(categorical, str):
        categorical = [categorical]
    unknown = [c for c in categorical if c not in names]
    if unknown:
        raise InputError(f"categorical names unknown band(s) {unknown}: the bands are {names}.")
    return frozenset(categorical)


@dataclass(frozen=True)
class _Level:
    """One resolution of a raster image: full, an overview or a decimated copy."""

    key: tuple  # identifies the level's pixels within its image (cache keys)
    grid: Grid  # its pixel lattice and extent


class _RasterImage(Image):
    """Shared read path of raster-backed images: lattice slices or window-independent warps.

    Subclasses set `_grid`, `_token` and implement `_pick_level` and `_level_window`.
    """

    _grid: Grid
    _token: str

    @property
    def grid(self) -> Grid:
        return self._grid

    def _pick_level(self, limit: float, picking: bool) -> _Level:
        """The level to warp from: the coarsest whose pixels span at most `limit` full-res
        pixels (`warp.level_limit`); a decimated level of `picking` (categorical) bands picks
        pixels, else averages them."""
        raise NotImplementedError

    def _level_window(self, level: _Level, bands: list[int], window: Window) -> np.ndarray:
        """float32 (len(bands), rows, cols) of `window` of `level`, NaN where masked."""
        raise NotImplementedError

    def _warped_read(self, grid: Grid, bands: list[int], names: list[str], resampling) -> np.ma.MaskedArray:
        """`bands` (the subclass's band indices of band `names`) warped onto `grid`. A zoomed-out
        read warps from a coarser level (`warp.level_limit`), built per band as Earth Engine
        builds its pyramids: class bands pick pixels (SAMPLE), the others average them (MEAN)."""
        r = resolve_resampling(resampling)
        t0, col, row = _frame(grid)
        lin = (t0.a, t0.b, t0.d, t0.e)
        frame_key = (grid.crs.to_string(), tuple(t0)[:6])
        scales0 = _image_scales(self._grid, grid.crs, lin)
        out = np.full((len(bands), grid.height, grid.width), np.nan, np.float32)
        for picking, pos in _groups([n in self.categorical_bands for n in names]).items():
            level = self._pick_level(level_limit(scales0, r), picking)
            scales = None
            if scales0 is not None:
                lt, ft = level.grid.transform, self._grid.transform
                fx = math.hypot(lt.a, lt.d) / math.hypot(ft.a, ft.d)
                fy = math.hypot(lt.b, lt.e) / math.hypot(ft.b, ft.e)
                scales = (scales0[0] / fx, scales0[1] / fy)
            picked = [bands[i] for i in pos]
            size = frame_size(scales)
            bw, bh = frame_block_shape(size)
            blocks = self._blocks(grid, t0, col, row, frame_key, level, picked, r, scales, size)

            def block(bx: int, by: int, blocks=blocks):
                values = blocks[(bx, by)]
                if all(v.size == 0 for v in values):
                    return None
                return [v if v.size else None for v in values]

            _assemble(grid, t0, col, row, out, pos, block, bw, bh)
        return _masked(out)

    def _blocks(self, grid, t0, col, row, frame_key, level, picked, r, scales, size) -> dict:
        """(bx, by) -> one warped block (or `_EMPTY`) per band of `picked`, for every block
        of the frames' GDAL block shape that `grid` touches: from the block cache, else warped
        frame by frame, each frame reading the bounding window of its missing blocks at once."""

        def key(bx, by, b):
            return (self._token, level.key, frame_key, size, bx, by, b, r.value)

        bw, bh = frame_block_shape(size)
        found: dict[tuple[int, int], list[np.ndarray]] = {}
        missing: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for by in range(row // bh, (row + grid.height - 1) // bh + 1):
            for bx in range(col // bw, (col + grid.width - 1) // bw + 1):
                values = [_BLOCKS.get(key(bx, by, b)) for b in picked]
                if any(v is None for v in values):
                    missing.setdefault((bx * bw // size, by * bh // size), []).append((bx, by))
                else:
                    found[(bx, by)] = values
        for (fx, fy), todo in missing.items():
            # One thread at a time per frame: another batch of the same viewport, on the other
            # worker, often needs the same blocks (its overlap ring): it waits and finds them
            # cached instead of warping them again (measured: 17-33% of the blocks twice).
            with _FRAME_LOCKS[hash((self._token, frame_key, size, fx, fy)) % len(_FRAME_LOCKS)]:
                self._warp_frame_blocks(
                    grid, t0, frame_key, level, picked, r, scales, size, fx, fy, todo, found, key
                )
        return found

    def _warp_frame_blocks(
        self, grid, t0, frame_key, level, picked, r, scales, size, fx, fy, todo, found, key
    ):
        """Warp the blocks `todo` of frame (fx, fy) not cached meanwhile, into `found` and the
        cache: the bounding window of those blocks in one GDAL read."""
        bw, bh = frame_block_shape(size)
        still = []
        for bx, by in todo:
            values = [_BLOCKS.get(key(bx, by, b)) for b in picked]
            if any(v is None for v in values):
                still.append((bx, by))
            else:
                found[(bx, by)] = values
        if not still:
            return
        fgrid = frame_grid(grid.crs, t0, size, fx, fy)
        c0 = min(bx for bx, _ in still) * bw - fx * size
        r0 = min(by for _, by in still) * bh - fy * size
        c1 = (max(bx for bx, _ in still) + 1) * bw - fx * size
        r1 = (max(by for _, by in still) + 1) * bh - fy * size
        warped = None
        sources, wraps = self._frame_sources(level, picked, fgrid, _pad(r, scales))
        for data, src_t, src_key in sources:
            window = (c0, r0, c1 - c0, r1 - r0)
            vrt_key = (src_key, r.value, scales)
            got = warp_frame_window(data, src_t, level.grid.crs, fgrid, window, r, scales, vrt_key, wraps)
            warped = got if warped is None else np.where(np.isnan(warped), got, warped)
        for bx, by in still:
            bc, br = bx * bw - fx * size - c0, by * bh - fy * size - r0
            values = []
            for j, b in enumerate(picked):
                v = _EMPTY if warped is None else warped[j, br : br + bh, bc : bc + bw]
                if v.size and np.isnan(v).all():
                    v = _EMPTY
                _BLOCKS.put(key(bx, by, b), v)
                values.append(v)
            found[(bx, by)] = values

    def _frame_sources(self, level: _Level, picked: list[int], fgrid: Grid, pad: int) -> tuple[list, bool]:
        """(float32 source pixels under frame `fgrid`, padded by `pad`; their transform; a key
        naming them) per window of `warp._source_window` that has a valid pixel, read once and
        cached; and whether the frame meets the source across 180° (GDAL's SAMPLE_GRID then)."""
        sources = []
        windows = _frame_window(level.grid, fgrid, pad)
        for win, _, shift in windows:
            key = (
                self._token,
                level.key,
                fgrid.crs.to_string(),
                tuple(fgrid.transform)[:6],
                fgrid.width,
                pad,
            )
            key += (win.col_off, win.row_off, win.width, win.height, shift, *picked)
            data = _FRAME_SOURCES.get(key)
            if data is None:
                data = np.ascontiguousarray(self._level_window(level, picked, win), dtype=np.float32)
                if np.isnan(data).all():
                    data = _EMPTY
                _FRAME_SOURCES.put(key, data)
            if data.size:
                t = (
                    Affine.translation(shift, 0)
                    @ level.grid.transform
                    @ Affine.translation(win.col_off, win.row_off)
                )
                sources.append((data, t, key))
        return sources, len(windows) > 1 or any(shift for _, _, shift in windows)


# ---- in-memory arrays ----------------------------------------------------------------------
class ArrayImage(_RasterImage):
    """An image over an in-memory (bands, rows, cols) array; see `Image.from_array`."""

    def __init__(self, arr, transform, crs, band_names=None, nodata=None, categorical=None):
        mask = np.ma.getmaskarray(arr) if np.ma.isMaskedArray(arr) else None
        data = np.ma.getdata(arr) if np.ma.isMaskedArray(arr) else np.asarray(arr)
        if data.ndim == 2:
            data = data[np.newaxis]
            mask = None if mask is None else mask[np.newaxis]
        if data.ndim != 3 or 0 in data.shape:
            raise InputError(
                f"from_array needs a non-empty (bands, rows, cols) or (rows, cols) array, got shape "
                f"{data.shape}; move the band axis first (rasterio order), e.g. np.moveaxis(a, -1, 0)."
            )
        if not (np.issubdtype(data.dtype, np.number) or data.dtype == bool) or np.iscomplexobj(data):
            raise InputError(f"from_array needs a real numeric array, got dtype {data.dtype}.")
        if data.shape[2] <= 4 < min(data.shape[:2]) and (band_names is None or len(band_names) != len(data)):
            # Most likely (rows, cols, bands), the order of PIL, matplotlib and Keras.
            hint = (
                f"from_array reads an array of shape {data.shape} as (bands, rows, cols): {data.shape[0]} "
                f"bands of {data.shape[1]}x{data.shape[2]} pixels. If it is (rows, cols, bands), pass "
                "np.moveaxis(a, -1, 0)."
            )
            if band_names is not None:
                raise InputError(f"{hint} (band_names has {len(band_names)} names.)")
            warnings.warn(hint, stacklevel=3)
        self._crs = as_crs(crs)
        self._transform = as_transform(transform)
        values = data.astype(np.float32, copy=True)  # our copy: later edits of `arr` don't leak in
        bad = ~np.isfinite(values)
        if mask is not None:
            bad |= mask
        if nodata is not None:
            if isinstance(nodata, float) and math.isnan(nodata):
                pass  # NaN is masked anyway
            else:
                bad |= data == nodata
        values[bad] = np.nan
        self._data = values
        n = values.shape[0]
        self._band_names = _band_names(band_names, n, [f"B{i + 1}" for i in range(n)], "The array")
        self.categorical_bands = _categorical(categorical, self._band_names)
        self.band_types = dict.fromkeys(self._band_names, data.dtype)
        self._grid = Grid(self._crs, self._transform, values.shape[2], values.shape[1])
        self._token = uuid.uuid4().hex
        # Lazily built 2x-reduced copies, like a file's overviews: (kind, level) -> array.
        self._pyramid: dict[tuple[str, int], np.ndarray] = {}
        self._pyramid_lock = threading.Lock()

    def _read(self, grid: Grid, bands: list[str], resampling) -> np.ma.MaskedArray:
        idx = [self._band_names.index(b) for b in bands]
        off = lattice_offset(self._grid.transform, self._grid.crs, grid)
        if off is not None:
            src = self._data[idx] if idx != list(range(len(self._band_names))) else self._data
            return slice_lattice(src, off[0], off[1], grid)
        return self._warped_read(grid, idx, bands, resampling)

    def _pick_level(self, limit: float, picking: bool) -> _Level:
        k = _pyramid_level(limit, max(self._grid.width, self._grid.height))
        if k == 0:
            return _Level(("full",), self._grid)
        kind = "nearest" if picking else "average"
        return _Level((kind, k), _decimated_grid(self._grid, k))

    def _level_window(self, level: _Level, bands: list[int], window: Window) -> np.ndarray:
        data = self._data if level.key == ("full",) else self._level(*level.key)
        r0, c0 = int(window.row_off), int(window.col_off)
        return data[bands, r0 : r0 + int(window.height), c0 : c0 + int(window.width)]

    def _level(self, kind: str, level: int) -> np.ndarray:
        """The array decimated 2**level times (block means, or top-left pixels for labels)."""
        if level == 0:
            return self._data
        key = (kind, level)
        with self._pyramid_lock:  # built once, on first use, by whichever thread asks first
            if key not in self._pyramid:
                self._pyramid[key] = _decimate(self._data, level, kind == "nearest")
            return self._pyramid[key]


# ---- files (GeoTIFF / COG / anything GDAL reads) ------------------------------------------
def _gdal_message(exc: Exception) -> str:
    return str(exc).strip() or type(exc).__name__


def _check_values(ds, path: str, names: list[str]) -> None:
    """Refuse complex bands (reads are real float32: the imaginary part would vanish) and say
    that scale/offset metadata is not applied (values are read as stored)."""
    complex_bands = [n for n, t in zip(names, ds.dtypes) if np.issubdtype(np.dtype(t), np.complexfloating)]
    if complex_bands:
        raise ImageReadError(
            f"{path}: bands {complex_bands} hold complex numbers ({ds.dtypes[0]}); images are real-valued. "
            "Write the parts you need as real bands first (e.g. amplitude: `gdal_calc.py -A in.tif "
            "--calc='abs(A)' --type=Float32 --outfile=amp.tif`), or pass np.abs(a) / a.real / a.imag "
            "to Image.from_array."
        )
    scaled = [(n, sc, of) for n, sc, of in zip(names, ds.scales, ds.offsets) if (sc, of) != (1.0, 0.0)]
    if scaled:
        if len(scaled) == len(names) and len({(sc, of) for _, sc, of in scaled}) == 1:
            how = f"img.multiply({scaled[0][1]!r}).add({scaled[0][2]!r})"
        else:
            how = "img.select(name).multiply(scale).add(offset) per band"
        detail = ", ".join(f"{n}: scale {sc!r}, offset {of!r}" for n, sc, of in scaled)
        warnings.warn(
            f"{path} has scale/offset metadata ({detail}); bands are read as stored, without applying "
            f"it. For the scaled values use {how}.",
            stacklevel=4,
        )


class FileImage(_RasterImage):
    """A raster file read lazily through rasterio; see `Image.open`.

    Dataset handles are not thread-safe, so each thread opens its own (kept in a
    `threading.local`, one per overview level used); map tiles can then be read
    concurrently from worker threads.
    """

    def __init__(self, path, band_names=None, categorical=None):
        self.path = os.fspath(path)
        self._local = threading.local()
        ds = self._dataset()
        if ds.crs is None and ds.gcps[0]:
            raise ImageReadError(
                f"{self.path} is georeferenced by ground control points only (no geotransform), so its "
                "pixels are not on a grid: warp it onto one first (e.g. `gdalwarp -t_srs EPSG:xxxx in.tif "
                "out.tif`), then open the result."
            )
        if ds.crs is None and ds.rpcs is not None:
            raise ImageReadError(
                f"{self.path} is georeferenced by RPCs only (a raw satellite scene, no geotransform): "
                "orthorectify it onto a grid first (e.g. `gdalwarp -rpc -t_srs EPSG:xxxx in.tif out.tif`), "
                "then open the result."
            )
        if ds.crs is None:
            raise ImageReadError(
                f"{self.path} has no coordinate reference system, so it cannot be placed on a map: "
                "add one (e.g. `gdal_edit.py -a_srs EPSG:xxxx`) or load it with Image.from_array(..., crs=)."
            )
        if ds.transform.is_identity:
            raise ImageReadError(
                f"{self.path} has no geotransform (pixel coordinates or GCPs only): warp it onto a "
                "regular grid first (e.g. `gdalwarp -t_srs EPSG:xxxx in.tif out.tif`) or load it with "
                "Image.from_array(..., transform=, crs=)."
            )
        self._grid = Grid(ds.crs, ds.transform, ds.width, ds.height)
        self._token = uuid.uuid4().hex
        # Overview factors GDAL reports (same for every band of a GeoTIFF); their grids are
        # looked up when first used.
        self._overview_factors = list(ds.overviews(1)) if ds.count else []
        self._overview_grids: dict[int, Grid] = {}
        self._decimated: dict[tuple[bool, int], np.ndarray] = {}
        self._decimated_lock = threading.Lock()
        descriptions = [d if d else f"B{i + 1}" for i, d in enumerate(ds.descriptions)]
        default = descriptions
        if len(set(descriptions)) != ds.count:
            default = [f"B{i + 1}" for i in range(ds.count)]
            if band_names is None:
                warnings.warn(
                    f"{self.path}: the band descriptions {descriptions} repeat a name, so the bands are "
                    f"named {default}; give your own with Image.open(path, band_names=[...]).",
                    stacklevel=3,
                )
        self._band_names = _band_names(band_names, ds.count, default, self.path)
        cat = set(_categorical(categorical, self._band_names))
        for i, name in enumerate(self._band_names):
            try:
                ds.colormap(i + 1)
                cat.add(name)  # a colour table means class labels
            except ValueError:
                pass
        self.categorical_bands = frozenset(cat)
        self.band_types = {n: np.dtype(t) for n, t in zip(self._band_names, ds.dtypes)}
        _check_values(ds, self.path, self._band_names)

    def _dataset(self, overview: int | None = None):
        """This thread's handle on the file (or on overview level `overview`, 0 = first)."""
        handles = getattr(self._local, "handles", None)
        if handles is None:
            handles = self._local.handles = {}
        ds = handles.get(overview)
        if ds is None or ds.closed:
            try:
                ds = (
                    rasterio.open(self.path)
                    if overview is None
                    else rasterio.open(self.path, overview_level=overview)
                )
            except (RasterioError, OSError) as exc:
                local = "://" not in self.path and not self.path.startswith("/vsi")
                if local and not os.path.exists(self.path):
                    raise ImageReadError(f"No such file: {self.path}. Check the path.") from None
                raise ImageReadError(
                    f"Cannot read {self.path} as a raster (GDAL says: {_gdal_message(exc)}). "
                    "Is it a complete GeoTIFF/COG? Re-download or re-export it."
                ) from None
            handles[overview] = ds
        return ds

    def __getstate__(self):
        state = self.__dict__.copy()
        for name in ("_local", "_decimated", "_decimated_lock"):
            state.pop(name, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._local = threading.local()
        self._decimated = {}
        self._decimated_lock = threading.Lock()

    def _read(self, grid: Grid, bands: list[str], resampling) -> np.ma.MaskedArray:
        indexes = [self._band_names.index(b) + 1 for b in bands]
        try:
            off = lattice_offset(self._grid.transform, self._grid.crs, grid)
            if off is not None:
                return self._read_lattice(indexes, off, grid)
            return self._warped_read(grid, indexes, bands, resampling)
        except ImageReadError:
            raise
        except (RasterioError, OSError) as exc:
            raise ImageReadError(
                f"Reading bands {bands} of {self.path} failed (GDAL says: {_gdal_message(exc)}). "
                "The file may be truncated or corrupt: re-download or re-export it."
            ) from None

    def _read_window(self, indexes, window: Window, overview: int | None = None) -> np.ndarray:
        """float32 (bands, rows, cols) of a window, NaN where the file's masks say no data."""
        ds = self._dataset(overview)
        data = ds.read(indexes, window=window).astype(np.float32, copy=False)
        masks = ds.read_masks(indexes, window=window)
        data[masks == 0] = np.nan
        return data

    def _read_lattice(self, indexes, off: tuple[int, int], grid: Grid) -> np.ma.MaskedArray:
        col, row = off
        c0, r0 = max(col, 0), max(row, 0)
        c1, r1 = min(col + grid.width, self._grid.width), min(row + grid.height, self._grid.height)
        if c1 <= c0 or r1 <= r0:
            return empty_read(len(indexes), grid)
        data = self._read_window(indexes, Window(c0, r0, c1 - c0, r1 - r0))
        return slice_lattice(data, col - c0, row - r0, grid)

    def _pick_level(self, limit: float, picking: bool) -> _Level:
        # The file's own overviews when it has them (the coarsest one within `limit`), else
        # 2**k block means of the full-res pixels (like ArrayImage's pyramid).
        if limit < 2:
            return _Level(("full",), self._grid)
        if self._overview_factors:
            fits = [i for i, o in enumerate(self._overview_factors) if o <= limit]
            if not fits:
                return _Level(("full",), self._grid)
            i = max(fits, key=lambda j: self._overview_factors[j])
            grid = self._overview_grids.get(i)
            if grid is None:
                ds = self._dataset(i)
                grid = self._overview_grids[i] = Grid(ds.crs, ds.transform, ds.width, ds.height)
            return _Level(("overview", i), grid)
        k = _pyramid_level(limit, max(self._grid.width, self._grid.height))
        return _Level(("decimated", picking, k), _decimated_grid(self._grid, k))

    def _level_window(self, level: _Level, bands: list[int], window: Window) -> np.ndarray:
        if level.key[0] in ("full", "overview"):
            values = int(window.width) * int(window.height) * len(bands)
            if values > _MAX_DECIMATED_READ:
                coarsest = max(self._overview_factors, default=1)
                raise ImageReadError(
                    f"{self.path}'s coarsest overview is 1/{coarsest} of its resolution, so this zoomed-out "
                    f"read would read {values:,} values of it. Add coarser overviews (e.g. `gdaladdo -r "
                    f"average {self.path} {coarsest * 2} {coarsest * 4} {coarsest * 8} {coarsest * 16}`), "
                    "or zoom in / read at a finer scale."
                )
            overview = None if level.key[0] == "full" else level.key[1]
            return self._read_window(bands, window, overview=overview)
        _, picking, k = level.key
        g = self._grid
        if g.width * g.height * len(self._band_names) <= _SMALL_FILE:
            key = (picking, k)
            with self._decimated_lock:  # one pass over the file, by the first thread asking
                if key not in self._decimated:
                    everything = list(range(1, len(self._band_names) + 1))
                    self._decimated[key] = self._decimate_window(
                        everything, Window(0, 0, g.width, g.height), k, picking
                    )
                whole = self._decimated[key]
            r0, c0 = int(window.row_off), int(window.col_off)
            return whole[[b - 1 for b in bands], r0 : r0 + int(window.height), c0 : c0 + int(window.width)]
        f = 2**k
        full = Window(
            int(window.col_off) * f,
            int(window.row_off) * f,
            min(int(window.col_off + window.width) * f, g.width) - int(window.col_off) * f,
            min(int(window.row_off + window.height) * f, g.height) - int(window.row_off) * f,
        )
        values = int(full.width) * int(full.height) * len(bands)
        if values > _MAX_DECIMATED_READ:
            raise ImageReadError(
                f"{self.path} has no overviews, so this zoomed-out read (1/{f} of its resolution) would "
                f"read {values:,} values of it at full resolution. Build overviews once (e.g. "
                f"`gdaladdo -r average {self.path}`, or `rio overview --build auto`), or zoom in / read "
                "at a finer scale."
            )
        return self._decimate_window(bands, full, k, picking)

    def _decimate_window(self, bands: list[int], window: Window, k: int, picking: bool) -> np.ndarray:
        """`_decimate` of a full-res window starting on a 2**k block corner, read in strips of
        whole blocks to bound memory (each strip decimates exactly as the whole would)."""
        f = 2**k
        c0, r0 = int(window.col_off), int(window.row_off)
        w, r1 = int(window.width), int(window.row_off + window.height)
        step = max(f, _STRIP_PIXELS // max(w, 1) // f * f)
        strips = [
            _decimate(self._read_window(bands, Window(c0, r, w, min(r + step, r1) - r)), k, picking)
            for r in range(r0, r1, step)
        ]
        return np.concatenate(strips, axis=1)

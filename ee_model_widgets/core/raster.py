"""Raster-backed images: in-memory arrays (`ArrayImage`) and files GDAL reads (`FileImage`).

Both answer `read(grid)` the same way: take the source pixels needed for the target grid,
mark masked pixels as NaN and let GDAL (`rasterio.warp.reproject`) resample them onto the
grid with NaN as nodata, so masked pixels never leak into interpolated values and pixels
outside the source come back masked. Reads on the source's own pixel lattice skip GDAL and
are plain slices (exact values, no cost).
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections.abc import Sequence

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window

from ..errors import ImageReadError, InputError, ProjectionError
from .grid import Grid, as_crs, lattice_offset
from .image import Image, empty_read

# rasterio's MEM -> MEM reproject sometimes warns "Dataset has no geotransform" under
# concurrency although both transforms are given and the output is right (a known spurious
# warning: opendatacube/odc-geo#131). Silence exactly that one, only from rasterio.warp;
# catch_warnings() is not thread-safe, so a targeted filter it is.
warnings.filterwarnings(
    "ignore", message="Dataset has no geotransform", category=NotGeoreferencedWarning, module="rasterio.warp"
)

# Extra source pixels read around the target footprint so that resampling kernels at the
# edge of the footprint see their neighbours (lanczos needs 3).
_PAD = 4
# Read a decimated source (GDAL overviews when present) once the target is this many times
# coarser than the source; the decimated source stays 2x finer than the target.
_DECIMATE_FROM = 2.0


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


def _as_transform(transform) -> Affine:
    if isinstance(transform, Affine):
        t = transform
    else:
        try:
            t = Affine(*list(transform)[:6])
        except (TypeError, ValueError):
            raise ProjectionError(
                f"transform {transform!r} is not an affine transform: pass an affine.Affine "
                "(e.g. rasterio.transform.from_origin(west, north, xres, yres))."
            ) from None
    if t.is_degenerate or not all(math.isfinite(v) for v in t[:6]):
        raise ProjectionError(f"transform {tuple(t)[:6]} is degenerate: pixel sizes must be non-zero.")
    return t


def warp_array(
    src: np.ndarray, src_transform: Affine, src_crs, grid: Grid, resamplings: Sequence[Resampling]
) -> np.ma.MaskedArray:
    """Resample float32 `src` (bands, rows, cols; NaN = masked) onto `grid` with GDAL."""
    n = src.shape[0]
    out = np.full((n, grid.height, grid.width), np.nan, np.float32)
    groups: dict[Resampling, list[int]] = {}
    for i, r in enumerate(resamplings):
        groups.setdefault(r, []).append(i)
    for r, idx in groups.items():
        dst = np.full((len(idx), grid.height, grid.width), np.nan, np.float32)
        part = np.ascontiguousarray(src[idx])
        # GDAL's nodata-aware kernels are ~10x slower; without a masked source pixel the
        # plain kernels give the same values, and pixels outside the source stay NaN.
        nodata = {"src_nodata": np.nan, "dst_nodata": np.nan} if np.isnan(part).any() else {}
        reproject(
            part,
            dst,
            src_transform=src_transform,
            src_crs=src_crs,
            dst_transform=grid.transform,
            dst_crs=grid.crs,
            resampling=r,
            init_dest_nodata=bool(nodata),
            **nodata,
        )
        out[idx] = dst
    mask = np.isnan(out)
    out[mask] = 0
    return np.ma.MaskedArray(out, mask=mask)


def slice_lattice(src: np.ndarray, col: int, row: int, grid: Grid) -> np.ma.MaskedArray:
    """`grid`-shaped cut of `src` (NaN = masked) starting at (col, row); outside is masked."""
    n, h, w = src.shape
    out = np.full((n, grid.height, grid.width), np.nan, np.float32)
    c0, r0 = max(col, 0), max(row, 0)
    c1, r1 = min(col + grid.width, w), min(row + grid.height, h)
    if c1 > c0 and r1 > r0:
        out[:, r0 - row : r1 - row, c0 - col : c1 - col] = src[:, r0:r1, c0:c1]
    mask = np.isnan(out)
    out[mask] = 0
    return np.ma.MaskedArray(out, mask=mask)


# ---- in-memory arrays ----------------------------------------------------------------------
class ArrayImage(Image):
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
        self._crs = as_crs(crs)
        self._transform = _as_transform(transform)
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
        self._grid = Grid(self._crs, self._transform, values.shape[2], values.shape[1])
        # Lazily built 2x-reduced copies, like a file's overviews: (kind, level) -> array.
        self._pyramid: dict[tuple[str, int], np.ndarray] = {}
        self._pyramid_lock = threading.Lock()

    @property
    def grid(self) -> Grid:
        return self._grid

    def _read(self, grid: Grid, bands: list[str], resampling) -> np.ma.MaskedArray:
        idx = [self._band_names.index(b) for b in bands]
        off = lattice_offset(self._grid, grid)
        if off is not None:
            src = self._data[idx] if idx != list(range(len(self._band_names))) else self._data
            return slice_lattice(src, off[0], off[1], grid)
        footprint = _source_window(self._grid, grid)
        if footprint is None:
            return empty_read(len(idx), grid)
        ratio = footprint[1]
        # Zoomed out by 4x or more: warp from a pyramid level 2-4x finer than the target, so
        # a map tile over a big array costs about as much as the tile, not the whole array.
        level = int(math.floor(math.log2(ratio / 2))) if ratio >= 4 else 0
        out = np.empty((len(idx), grid.height, grid.width), np.float32)
        mask = np.empty(out.shape, bool)
        groups: dict[Resampling, list[int]] = {}
        for i, r in enumerate(self._resampling_for(bands, resampling)):
            groups.setdefault(r, []).append(i)
        for r, pos in groups.items():
            data = self._level("nearest" if r in (Resampling.nearest, Resampling.mode) else "average", level)
            t = self._transform @ Affine.scale(
                self._grid.width / data.shape[2], self._grid.height / data.shape[1]
            )
            part = warp_array(data[[idx[i] for i in pos]], t, self._crs, grid, [r] * len(pos))
            out[pos] = part.data
            mask[pos] = part.mask
        return np.ma.MaskedArray(out, mask=mask)

    def _level(self, kind: str, level: int) -> np.ndarray:
        """The array reduced `level` times by 2 (NaN-aware mean, or nearest for labels)."""
        if level == 0:
            return self._data
        with self._pyramid_lock:
            return self._level_unlocked(kind, level)

    def _level_unlocked(self, kind: str, level: int) -> np.ndarray:
        if level == 0:
            return self._data
        key = (kind, level)
        if key not in self._pyramid:
            self._pyramid[key] = _halve(self._level_unlocked(kind, level - 1), kind)
        return self._pyramid[key]


def _halve(a: np.ndarray, kind: str) -> np.ndarray:
    """Half-resolution copy of (bands, rows, cols) with NaN = masked; odd edges padded as NaN."""
    n, h, w = a.shape
    if h < 2 and w < 2:
        return a
    if kind == "nearest":
        return np.ascontiguousarray(a[:, ::2, ::2])
    padded = np.full((n, h + h % 2, w + w % 2), np.nan, np.float32)
    padded[:, :h, :w] = a
    blocks = padded.reshape(n, padded.shape[1] // 2, 2, padded.shape[2] // 2, 2)
    valid = ~np.isnan(blocks)
    count = valid.sum(axis=(2, 4))
    total = np.where(valid, blocks, 0).sum(axis=(2, 4), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan).astype(np.float32)


# ---- files (GeoTIFF / COG / anything GDAL reads) ------------------------------------------
def _gdal_message(exc: Exception) -> str:
    return str(exc).strip() or type(exc).__name__


class FileImage(Image):
    """A raster file read lazily through rasterio; see `Image.open`.

    Dataset handles are not thread-safe, so each thread opens its own (kept in a
    `threading.local`); map tiles can then be read concurrently from worker threads.
    """

    def __init__(self, path, band_names=None, categorical=None):
        self.path = os.fspath(path)
        self._local = threading.local()
        ds = self._dataset()
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
        descriptions = [d if d else f"B{i + 1}" for i, d in enumerate(ds.descriptions)]
        default = (
            descriptions if len(set(descriptions)) == ds.count else [f"B{i + 1}" for i in range(ds.count)]
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

    def _dataset(self):
        ds = getattr(self._local, "ds", None)
        if ds is None or ds.closed:
            try:
                ds = rasterio.open(self.path)
            except (RasterioError, OSError) as exc:
                local = "://" not in self.path and not self.path.startswith("/vsi")
                if local and not os.path.exists(self.path):
                    raise ImageReadError(f"No such file: {self.path}. Check the path.") from None
                raise ImageReadError(
                    f"Cannot read {self.path} as a raster (GDAL says: {_gdal_message(exc)}). "
                    "Is it a complete GeoTIFF/COG? Re-download or re-export it."
                ) from None
            self._local.ds = ds
        return ds

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_local", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._local = threading.local()

    @property
    def grid(self) -> Grid:
        return self._grid

    def _read(self, grid: Grid, bands: list[str], resampling) -> np.ma.MaskedArray:
        indexes = [self._band_names.index(b) + 1 for b in bands]
        resamplings = self._resampling_for(bands, resampling)
        try:
            off = lattice_offset(self._grid, grid)
            if off is not None:
                return self._read_lattice(indexes, off, grid)
            return self._read_warped(indexes, resamplings, grid)
        except ImageReadError:
            raise
        except (RasterioError, OSError) as exc:
            raise ImageReadError(
                f"Reading bands {bands} of {self.path} failed (GDAL says: {_gdal_message(exc)}). "
                "The file may be truncated or corrupt: re-download or re-export it."
            ) from None

    def _read_window(
        self, indexes, window: Window, out_shape=None, resampling=Resampling.nearest
    ) -> np.ndarray:
        """float32 (bands, rows, cols) of a source window, NaN where the file's masks say no data."""
        ds = self._dataset()
        kw = {} if out_shape is None else {"out_shape": (len(indexes), *out_shape), "resampling": resampling}
        data = ds.read(indexes, window=window, **kw).astype(np.float32, copy=False)
        if out_shape is not None:
            kw["resampling"] = Resampling.nearest
        masks = ds.read_masks(indexes, window=window, **kw)
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

    def _read_warped(self, indexes, resamplings, grid: Grid) -> np.ma.MaskedArray:
        src = self._grid
        footprint = _source_window(src, grid)
        if footprint is None:
            return empty_read(len(indexes), grid)
        window, ratio = footprint
        factor = ratio / 2 if ratio > _DECIMATE_FROM else 1.0
        out = np.empty((len(indexes), grid.height, grid.width), np.float32)
        mask = np.empty(out.shape, bool)
        groups: dict[Resampling, list[int]] = {}
        for i, r in enumerate(resamplings):
            groups.setdefault(r, []).append(i)
        for r, idx in groups.items():
            win_t = src.transform @ Affine.translation(window.col_off, window.row_off)
            if factor > 1:
                # Decimated read: GDAL picks the best overview (or averages on the fly), so
                # zoomed-out reads cost about as much as the target grid, not the source.
                shape = (max(1, math.ceil(window.height / factor)), max(1, math.ceil(window.width / factor)))
                dec = r if r in (Resampling.nearest, Resampling.mode) else Resampling.average
                data = self._read_window([indexes[i] for i in idx], window, shape, dec)
                win_t = win_t @ Affine.scale(window.width / shape[1], window.height / shape[0])
            else:
                data = self._read_window([indexes[i] for i in idx], window)
            part = warp_array(data, win_t, src.crs, grid, [r] * len(idx))
            out[idx] = part.data
            mask[idx] = part.mask
        return np.ma.MaskedArray(out, mask=mask)


def _source_window(src: Grid, grid: Grid) -> tuple[Window, float] | None:
    """The source window needed for `grid` (padded, clipped) and the target/source pixel ratio.

    None when the target misses the source entirely.
    """
    full = Window(0, 0, src.width, src.height)
    # Target bounds seen from the source CRS. Transforms can fail or blow up far outside a
    # CRS's area of use (a zoom-0 web tile seen from UTM): then fall back to the whole source,
    # which decimation keeps affordable.
    try:
        b = transform_bounds(grid.crs, src.crs, *grid.bounds, densify_pts=21)
        ok = all(math.isfinite(v) for v in b)
    except Exception:  # noqa: BLE001 - PROJ errors come in several types
        ok = False
    if ok:
        inv = ~src.transform
        cols, rows = zip(*(inv @ (x, y) for x, y in ((b[0], b[1]), (b[0], b[3]), (b[2], b[1]), (b[2], b[3]))))
        c0, c1 = math.floor(min(cols)) - _PAD, math.ceil(max(cols)) + _PAD
        r0, r1 = math.floor(min(rows)) - _PAD, math.ceil(max(rows)) + _PAD
        if c1 <= 0 or r1 <= 0 or c0 >= src.width or r0 >= src.height:
            return None
        # Keep the window size sane even if the transform exploded numerically.
        c0, r0 = max(c0, 0), max(r0, 0)
        c1, r1 = min(c1, src.width), min(r1, src.height)
        window = Window(c0, r0, c1 - c0, r1 - r0)
        ratio = min((max(cols) - min(cols)) / grid.width, (max(rows) - min(rows)) / grid.height)
    else:
        window = full
        ratio = _pixel_ratio(src, grid)
    return window, max(ratio, 1e-9)


def _pixel_ratio(src: Grid, grid: Grid) -> float:
    """How many source pixels one target pixel spans, measured where the two overlap."""
    from rasterio.warp import transform as transform_points

    try:
        sb = transform_bounds(src.crs, grid.crs, *src.bounds, densify_pts=21)
        gb = grid.bounds
        cx = (max(sb[0], gb[0]) + min(sb[2], gb[2])) / 2
        cy = (max(sb[1], gb[1]) + min(sb[3], gb[3])) / 2
        col, row = ~grid.transform @ (cx, cy)
        pts = [grid.transform @ (col, row), grid.transform @ (col + 1, row), grid.transform @ (col, row + 1)]
        xs, ys = transform_points(grid.crs, src.crs, [p[0] for p in pts], [p[1] for p in pts])
        inv = ~src.transform
        p = [inv @ (x, y) for x, y in zip(xs, ys)]
        d = max(math.dist(p[0], p[1]), math.dist(p[0], p[2]))
        return d if math.isfinite(d) and d > 0 else 1.0
    except Exception:  # noqa: BLE001
        return 1.0


# ---- xarray ---------------------------------------------------------------------------------
def image_from_xarray(da, band_names=None, categorical=None) -> Image:
    """An `ArrayImage` from a rioxarray-style DataArray (dims (band,) y, x; CRS via .rio or attrs)."""
    dims = tuple(da.dims)
    if len(dims) not in (2, 3):
        raise InputError(f"from_xarray needs dims (band, y, x) or (y, x), got {dims}.")
    crs = transform = nodata = None
    if hasattr(da, "rio"):  # rioxarray installed and registered its accessor
        crs, transform, nodata = da.rio.crs, da.rio.transform(), da.rio.nodata
    if crs is None:
        ref = da.coords["spatial_ref"].attrs if "spatial_ref" in da.coords else {}
        crs = da.attrs.get("crs") or ref.get("crs_wkt") or ref.get("spatial_ref")
    if crs is None:
        raise ProjectionError(
            "This DataArray has no CRS: set one with rioxarray (da.rio.write_crs('EPSG:xxxx')) "
            "or give it a 'crs' attribute."
        )
    ydim, xdim = dims[-2], dims[-1]
    if transform is None:
        x = np.asarray(da.coords[xdim], dtype=float)
        y = np.asarray(da.coords[ydim], dtype=float)
        if len(x) < 2 or len(y) < 2:
            raise InputError(
                "from_xarray needs at least 2x2 pixels to infer the pixel size; install rioxarray."
            )
        dx, dy = (x[-1] - x[0]) / (len(x) - 1), (y[-1] - y[0]) / (len(y) - 1)
        # Coordinates are pixel centres: the transform starts half a pixel before.
        transform = Affine(dx, 0, x[0] - dx / 2, 0, dy, y[0] - dy / 2)
    if nodata is None:
        nodata = da.attrs.get("_FillValue", da.attrs.get("nodata"))
    if band_names is None and len(dims) == 3:
        coord = da.coords.get(dims[0])
        values = [] if coord is None else [str(v) for v in np.asarray(coord).tolist()]
        long_names = da.attrs.get("long_name")
        if isinstance(long_names, (list, tuple)) and len(long_names) == da.shape[0]:
            band_names = [str(v) for v in long_names]
        elif values and not all(v.lstrip("-").isdigit() for v in values):
            band_names = values
    return ArrayImage(
        np.asarray(da.values),
        transform=transform,
        crs=crs,
        band_names=band_names,
        nodata=nodata,
        categorical=categorical,
    )

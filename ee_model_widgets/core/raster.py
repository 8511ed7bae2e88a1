"""Raster-backed images: in-memory arrays (`ArrayImage`) and files GDAL reads (`FileImage`).

Both answer `read(grid)` the same way, and a pixel's value never depends on the window it
is read in (a map tile, a batch of model cells, an export window all agree bit for bit):

- Reads on the source's own pixel lattice are plain slices (exact values, no cost).
- Other reads are cut into fixed `BLOCK` x `BLOCK` blocks of the target lattice, anchored
  at the CRS origin (so web-map tiles are whole blocks). Each block is warped on its own
  from source pixels chosen by the block alone (its footprint, padded for the resampling
  kernel), through a GDAL `WarpedVRT` with a tight transformer error (`TOLERANCE` px) and
  a resampling scale fixed per image and target lattice. The value of an output pixel is
  therefore a function of (image, target lattice, pixel, band, resampling) only.
- Zoomed-out reads warp from a decimated level (a file's overviews, the array's lazily
  built 2x pyramid, or block means of the file) chosen from the target's resolution alone.
- Masked pixels are NaN in the source and GDAL's nodata, so they never leak into
  interpolated values, each band keeps its own mask, and pixels off the source come back
  masked.

Warped blocks are kept in a small LRU (`clear_block_cache()` empties it).
"""

from __future__ import annotations

import functools
import math
import os
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform as transform_points
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from ..errors import ImageReadError, InputError, ProjectionError
from .cache import CellCache
from .grid import Grid, as_crs, lattice_offset
from .image import Image, empty_read

#: Side of the target-lattice blocks that are warped independently (256 = one web-map tile).
BLOCK = 256
#: Largest error (in source pixels) of GDAL's approximate coordinate transformer. GDAL's
#: default is 0.125 px; 1e-3 px costs about the same and makes nearest-neighbour picks
#: and interpolation weights as good as exact (1e-6 and below cost ~3x more per tile).
TOLERANCE = 1e-3
# The lattice phase (where the CRS origin falls inside a pixel) is snapped to this fraction
# of a pixel, so windows of one lattice, whose origins differ by float noise, share one
# canonical frame.
_PHASE_STEP = 2.0**-16
# Source pixels a resampling kernel reaches on each side of a sample, at scale 1 (they grow
# with the downsampling ratio); 2 more are added for rounding.
_KERNEL_RADIUS = {
    Resampling.nearest: 1,
    Resampling.bilinear: 1,
    Resampling.cubic: 2,
    Resampling.cubic_spline: 2,
    Resampling.lanczos: 3,
}
# Resamplings that pick source values (labels): decimate them by picking, not averaging.
_PICKING = (Resampling.nearest, Resampling.mode)
# Pixels (per band) read at once when block-averaging a file without overviews.
_STRIP_PIXELS = 16 * 1024 * 1024
# Files without overviews up to this many values (pixels x bands) keep a decimated level in
# memory once built (one pass over the file); larger ones decimate the pixels under each
# block as it is read.
_SMALL_FILE = 64 * 1024 * 1024

_BLOCKS = CellCache(128 * 1024 * 1024)
# Cached marker for a block with no valid pixel.
_EMPTY = np.zeros(0, np.float32)
_EMPTY.flags.writeable = False


def clear_block_cache() -> None:
    """Forget every warped block (e.g. to measure or to free memory)."""
    _BLOCKS.clear()


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


def _masked(values: np.ndarray) -> np.ma.MaskedArray:
    """float32 NaN-masked array -> masked array with zeros under the mask."""
    mask = np.isnan(values)
    values[mask] = 0
    return np.ma.MaskedArray(values, mask=mask)


def _groups(resamplings: Sequence[Resampling]) -> dict[Resampling, list[int]]:
    groups: dict[Resampling, list[int]] = {}
    for i, r in enumerate(resamplings):
        groups.setdefault(r, []).append(i)
    return groups


def slice_lattice(src: np.ndarray, col: int, row: int, grid: Grid) -> np.ma.MaskedArray:
    """`grid`-shaped cut of `src` (NaN = masked) starting at (col, row); outside is masked."""
    n, h, w = src.shape
    out = np.full((n, grid.height, grid.width), np.nan, np.float32)
    c0, r0 = max(col, 0), max(row, 0)
    c1, r1 = min(col + grid.width, w), min(row + grid.height, h)
    if c1 > c0 and r1 > r0:
        out[:, r0 - row : r1 - row, c0 - col : c1 - col] = src[:, r0:r1, c0:c1]
    return _masked(out)


# ---- window-independent warping ---------------------------------------------------------------
def _frame(grid: Grid) -> tuple[Affine, int, int]:
    """The canonical transform of `grid`'s pixel lattice and the (col, row) of `grid` in it.

    The canonical frame keeps the lattice's pixel size and puts its pixel (0, 0) next to the
    CRS origin. All windows of one lattice get the bit-identical transform (their own
    origins differ by float noise), so GDAL computes identical coordinates for an output
    pixel whichever window it is read in, and blocks line up with web-map tiles.
    """
    t = grid.transform
    u, v = ~t @ (0.0, 0.0)  # where the CRS origin falls, in grid pixels
    fu = round((u - round(u)) / _PHASE_STEP) * _PHASE_STEP + 0.0  # + 0.0: no -0.0
    fv = round((v - round(v)) / _PHASE_STEP) * _PHASE_STEP + 0.0
    t0 = Affine(t.a, t.b, 0.0, t.d, t.e, 0.0) @ Affine.translation(-fu, -fv)
    col, row = ~t0 @ (t.c, t.f)
    return t0, round(col), round(row)


def _block_grid(crs: CRS, t0: Affine, bx: int, by: int) -> Grid:
    return Grid(crs, t0 @ Affine.translation(bx * BLOCK, by * BLOCK), BLOCK, BLOCK)


def _scales_at(
    src_transform: Affine, src_crs: CRS, crs: CRS, lin: tuple[float, float, float, float], x: float, y: float
) -> tuple[float, float] | None:
    """Source (columns, rows) one target pixel spans at source point (x, y), or None.

    `lin` is the target lattice's (a, b, d, e). Measured with a small step (then scaled) so
    that huge zoomed-out pixels do not leave the CRS's valid area.
    """
    a, b, d, e = lin
    inv = ~src_transform
    for step in (1.0, 1 / 64, 1 / 4096):
        try:
            if src_crs == crs:
                px, py = x, y
            else:
                (px,), (py,) = transform_points(src_crs, crs, [x], [y])
            xs = [px, px + a * step, px + b * step]
            ys = [py, py + d * step, py + e * step]
            if src_crs != crs:
                xs, ys = transform_points(crs, src_crs, xs, ys)
        except Exception:  # noqa: BLE001 - PROJ errors come in several types
            continue
        p = [inv @ (u, v) for u, v in zip(xs, ys)]
        dcx, drx = p[1][0] - p[0][0], p[1][1] - p[0][1]
        dcy, dry = p[2][0] - p[0][0], p[2][1] - p[0][1]
        sx, sy = (abs(dcx) + abs(dcy)) / step, (abs(drx) + abs(dry)) / step
        if all(math.isfinite(s) and s > 0 for s in (sx, sy)):
            return sx, sy
    return None


@functools.lru_cache(maxsize=1024)
def _image_scales(src: Grid, crs: CRS, lin: tuple[float, float, float, float]) -> tuple[float, float] | None:
    """`_scales_at` the centre of the image `src`: one figure per image and target lattice."""
    x, y = src.transform @ (src.width / 2, src.height / 2)
    return _scales_at(src.transform, src.crs, crs, lin, x, y)


def _pad(resampling: Resampling, scales: tuple[float, float] | None) -> int:
    """Source pixels to add around a block's footprint so every kernel sees all its neighbours."""
    reach = max(1.0, *scales) if scales else 1.0
    return math.ceil(_KERNEL_RADIUS.get(resampling, 1) * reach) + 2


def _source_window(src: Grid, grid: Grid, pad: int) -> tuple[Window, bool] | None:
    """The window of `src` under `grid`, padded by `pad` pixels and clipped; None if off `src`.

    The flag says whether the padded footprint lies wholly inside `src` (nothing clipped).
    Falls back to the whole of `src` when the footprint cannot be computed (transforms can
    fail or blow up far outside a CRS's area of use, e.g. a zoom-0 web tile seen from UTM).
    """
    try:
        b = (
            grid.bounds
            if grid.crs == src.crs
            else transform_bounds(grid.crs, src.crs, *grid.bounds, densify_pts=21)
        )
        ok = all(math.isfinite(v) for v in b)
    except Exception:  # noqa: BLE001 - PROJ errors come in several types
        ok = False
    if not ok:
        return Window(0, 0, src.width, src.height), False
    inv = ~src.transform
    cols, rows = zip(*(inv @ (x, y) for x, y in ((b[0], b[1]), (b[0], b[3]), (b[2], b[1]), (b[2], b[3]))))
    c0, c1 = math.floor(min(cols)) - pad, math.ceil(max(cols)) + pad
    r0, r1 = math.floor(min(rows)) - pad, math.ceil(max(rows)) + pad
    if c1 <= 0 or r1 <= 0 or c0 >= src.width or r0 >= src.height:
        return None
    inside = c0 >= 0 and r0 >= 0 and c1 <= src.width and r1 <= src.height
    c0, r0 = max(c0, 0), max(r0, 0)
    c1, r1 = min(c1, src.width), min(r1, src.height)
    return Window(c0, r0, c1 - c0, r1 - r0), inside


def _mem_dataset(src: np.ndarray, transform: Affine):
    """A read-only GDAL MEM dataset over float32 `src` (bands, rows, cols), without a copy.

    `src` must stay alive while the dataset is open.
    """
    n, h, w = src.shape
    bs, ls, ps = src.strides
    gt = "/".join(repr(float(v)) for v in transform.to_gdal())
    name = (
        f"MEM:::DATAPOINTER={src.__array_interface__['data'][0]},PIXELS={w},LINES={h},BANDS={n},"
        f"DATATYPE=Float32,BANDOFFSET={bs},LINEOFFSET={ls},PIXELOFFSET={ps},GEOTRANSFORM={gt}"
    )
    with rasterio.Env(GDAL_MEM_ENABLE_OPEN=True):  # GDAL >= 3.10 refuses MEM::: names otherwise
        return rasterio.open(name)


def _warp(
    src: np.ndarray,
    src_transform: Affine,
    src_crs: CRS,
    grid: Grid,
    resampling: Resampling,
    scales: tuple[float, float] | None,
    masked: bool = True,
) -> np.ndarray:
    """GDAL-warp float32 `src` (NaN = masked) onto `grid`: float32 (bands, rows, cols), NaN = masked.

    A WarpedVRT rather than `rasterio.warp.reproject`, which always approximates coordinates
    to 0.125 px. All bands of `src` must share one mask (see `_warp_bands`): GDAL then uses
    it as the unified validity mask, exactly as for a single band. XSCALE/YSCALE fix the
    downsampling kernel's width instead of letting GDAL estimate it per chunk.
    `masked=False` is for a `src` without NaN that every output pixel's kernel lies inside:
    GDAL's plain kernels then give the same values about twice as fast as its nodata-aware
    ones (measured).
    """
    src = np.ascontiguousarray(src, dtype=np.float32)
    nodata = np.nan if masked else None
    extras = {"UNIFIED_SRC_NODATA": "YES"}
    if scales is not None:
        extras["XSCALE"] = repr(1.0 / scales[0])
        extras["YSCALE"] = repr(1.0 / scales[1])
    with _mem_dataset(src, src_transform) as ds:
        with WarpedVRT(
            ds,
            src_crs=src_crs,
            src_transform=src_transform,
            crs=grid.crs,
            transform=grid.transform,
            width=grid.width,
            height=grid.height,
            resampling=resampling,
            tolerance=TOLERANCE,
            src_nodata=nodata,
            nodata=nodata,
            dtype="float32",
            **extras,
        ) as vrt:
            return vrt.read()


def _warp_bands(
    src: np.ndarray,
    src_transform: Affine,
    src_crs: CRS,
    grid: Grid,
    resampling: Resampling,
    scales: tuple[float, float] | None,
    inside: bool,
) -> np.ndarray:
    """`_warp`, one GDAL call per set of bands that share a mask.

    `inside`: `src` holds the padded footprint of `grid` with nothing clipped, so a set of
    bands without masked pixels can take GDAL's plain kernels.

    GDAL decides some output pixels (e.g. whether a bilinear pixel whose centre falls on a
    masked source pixel is masked) from a validity mask shared by the bands it warps
    together, so bands with different masks would change each other's results, and even
    UNIFIED_SRC_NODATA=NO gives a multi-band warp other masks than a single-band one.
    Warped in sets of equal masks, a band reads the same alone or with any others.
    """
    nan = np.isnan(src)
    sets: list[list[int]] = []
    for i in range(src.shape[0]):
        for s in sets:
            if np.array_equal(nan[s[0]], nan[i]):
                s.append(i)
                break
        else:
            sets.append([i])
    if len(sets) == 1:
        masked = not inside or bool(nan[0].any())
        return _warp(src, src_transform, src_crs, grid, resampling, scales, masked)
    out = np.empty((src.shape[0], grid.height, grid.width), np.float32)
    for s in sets:
        masked = not inside or bool(nan[s[0]].any())
        out[s] = _warp(src[s], src_transform, src_crs, grid, resampling, scales, masked)
    return out


def _assemble(
    grid: Grid, t0: Affine, col: int, row: int, out: np.ndarray, pos: list[int], block: Callable
) -> None:
    """Fill `out[pos]` (NaN-initialised) from the canonical blocks `grid` touches.

    `block(bx, by)` returns (len(pos), BLOCK, BLOCK) float32 or None when all masked.
    """
    h, w = grid.height, grid.width
    for by in range(row // BLOCK, (row + h - 1) // BLOCK + 1):
        r0, r1 = max(by * BLOCK, row), min((by + 1) * BLOCK, row + h)
        for bx in range(col // BLOCK, (col + w - 1) // BLOCK + 1):
            c0, c1 = max(bx * BLOCK, col), min((bx + 1) * BLOCK, col + w)
            values = block(bx, by)
            if values is not None:
                out[pos, r0 - row : r1 - row, c0 - col : c1 - col] = values[
                    :, r0 - by * BLOCK : r1 - by * BLOCK, c0 - bx * BLOCK : c1 - bx * BLOCK
                ]


def warp_array(
    src: np.ndarray, src_transform: Affine, src_crs, grid: Grid, resamplings: Sequence[Resampling]
) -> np.ma.MaskedArray:
    """Resample float32 `src` (bands, rows, cols; NaN = masked) onto `grid` with GDAL.

    Warped in the canonical blocks of `grid`'s lattice with a tight transformer error and a
    kernel scale measured per block, so an output pixel's value depends only on the source
    pixels around it, not on `grid`'s window (provided `src` covers the kernel's reach).
    """
    src = np.ascontiguousarray(src, dtype=np.float32)
    src_crs = as_crs(src_crs)
    src_grid = Grid(src_crs, src_transform, src.shape[2], src.shape[1])
    t0, col, row = _frame(grid)
    lin = (t0.a, t0.b, t0.d, t0.e)
    out = np.full((src.shape[0], grid.height, grid.width), np.nan, np.float32)
    for r, pos in _groups(resamplings).items():
        part = src[pos]

        def block(bx: int, by: int, r=r, part=part) -> np.ndarray | None:
            bgrid = _block_grid(grid.crs, t0, bx, by)
            cx, cy = bgrid.transform @ (BLOCK / 2, BLOCK / 2)
            try:
                (sx_,), (sy_,) = (
                    ([cx], [cy]) if grid.crs == src_crs else transform_points(grid.crs, src_crs, [cx], [cy])
                )
                scales = _scales_at(src_transform, src_crs, grid.crs, lin, sx_, sy_)
            except Exception:  # noqa: BLE001 - PROJ errors come in several types
                scales = None
            found = _source_window(src_grid, bgrid, _pad(r, scales))
            if found is None:
                return None
            # Only the pixels under the block: its result must not depend on what else the
            # caller's array holds (e.g. which bands share a mask elsewhere).
            win, inside = found
            c0, r0 = int(win.col_off), int(win.row_off)
            cut = part[:, r0 : r0 + int(win.height), c0 : c0 + int(win.width)]
            if np.isnan(cut).all():
                return None
            cut_t = src_transform @ Affine.translation(c0, r0)
            return _warp_bands(cut, cut_t, src_crs, bgrid, r, scales, inside)

        _assemble(grid, t0, col, row, out, pos, block)
    return _masked(out)


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

    def _pick_level(self, scales: tuple[float, float] | None, resampling: Resampling) -> _Level:
        """The level to warp from when one target pixel spans `scales` full-res pixels."""
        raise NotImplementedError

    def _level_window(self, level: _Level, bands: list[int], window: Window) -> np.ndarray:
        """float32 (len(bands), rows, cols) of `window` of `level`, NaN where masked."""
        raise NotImplementedError

    def _warped_read(self, grid: Grid, bands: list[int], resamplings: list[Resampling]) -> np.ma.MaskedArray:
        t0, col, row = _frame(grid)
        lin = (t0.a, t0.b, t0.d, t0.e)
        frame_key = (grid.crs.to_string(), tuple(t0)[:6])
        scales0 = _image_scales(self._grid, grid.crs, lin)
        out = np.full((len(bands), grid.height, grid.width), np.nan, np.float32)
        for r, pos in _groups(resamplings).items():
            level = self._pick_level(scales0, r)
            scales = None
            if scales0 is not None:
                lt, ft = level.grid.transform, self._grid.transform
                fx = math.hypot(lt.a, lt.d) / math.hypot(ft.a, ft.d)
                fy = math.hypot(lt.b, lt.e) / math.hypot(ft.b, ft.e)
                scales = (scales0[0] / fx, scales0[1] / fy)
            pad = _pad(r, scales)
            picked = [bands[i] for i in pos]

            def block(bx: int, by: int, r=r, level=level, scales=scales, pad=pad, picked=picked):
                keys = [(self._token, level.key, frame_key, bx, by, b, r.value) for b in picked]
                values = [_BLOCKS.get(k) for k in keys]
                missing = [i for i, v in enumerate(values) if v is None]
                if missing:
                    bgrid = _block_grid(grid.crs, t0, bx, by)
                    found = _source_window(level.grid, bgrid, pad)
                    warped = None
                    if found is not None:
                        win, inside = found
                        src = self._level_window(level, [picked[i] for i in missing], win)
                        if not np.isnan(src).all():
                            src_t = level.grid.transform @ Affine.translation(win.col_off, win.row_off)
                            warped = _warp_bands(src, src_t, level.grid.crs, bgrid, r, scales, inside)
                    for j, i in enumerate(missing):
                        v = _EMPTY if warped is None or np.isnan(warped[j]).all() else warped[j]
                        _BLOCKS.put(keys[i], v)
                        values[i] = v
                if all(v.size == 0 for v in values):
                    return None
                nan = np.full((BLOCK, BLOCK), np.nan, np.float32)
                return np.stack([v if v.size else nan for v in values])

            _assemble(grid, t0, col, row, out, pos, block)
        return _masked(out)


def _pyramid_level(scales: tuple[float, float] | None, size: int) -> int:
    """2**k decimation for a target `scales` full-res pixels per pixel: the level stays >= 2x
    finer than the target (k = 0 until the target is 4x coarser), and not below one pixel."""
    if scales is None:
        return 0
    f = min(scales) / 2
    if f < 2:
        return 0
    return max(0, min(int(math.floor(math.log2(f))), int(math.floor(math.log2(max(size, 1))))))


def _decimated_grid(grid: Grid, k: int) -> Grid:
    """The lattice of 2**k x 2**k blocks of `grid` (the last row/column may overhang)."""
    f = 2**k
    return Grid(
        grid.crs, grid.transform @ Affine.scale(f, f), math.ceil(grid.width / f), math.ceil(grid.height / f)
    )


def _decimate(a: np.ndarray, k: int, picking: bool) -> np.ndarray:
    """2**k-decimated copy of (bands, rows, cols) NaN-masked `a` whose origin is on a block corner.

    Labels (`picking`) keep each block's top-left pixel; values become the mean of the
    block's valid pixels (NaN if none; a partial last row/column of blocks averages what it
    has). Strips of whole blocks decimate exactly like the whole array, which lets files be
    decimated window by window with the same result as an array's pyramid.
    """
    f = 2**k
    if f == 1:
        return a
    if picking:
        return np.ascontiguousarray(a[:, ::f, ::f])
    n, h, w = a.shape
    rows, cols = -(-h // f), -(-w // f)
    if (rows * f, cols * f) != (h, w):
        padded = np.full((n, rows * f, cols * f), np.nan, np.float32)
        padded[:, :h, :w] = a
        a = padded
    blocks = a.reshape(n, rows, f, cols, f)
    count = (~np.isnan(blocks)).sum(axis=(2, 4))
    total = np.nansum(blocks, axis=(2, 4), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan).astype(np.float32)


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
        self.band_types = dict.fromkeys(self._band_names, data.dtype)
        self._grid = Grid(self._crs, self._transform, values.shape[2], values.shape[1])
        self._token = uuid.uuid4().hex
        # Lazily built 2x-reduced copies, like a file's overviews: (kind, level) -> array.
        self._pyramid: dict[tuple[str, int], np.ndarray] = {}
        self._pyramid_lock = threading.Lock()

    def _read(self, grid: Grid, bands: list[str], resampling) -> np.ma.MaskedArray:
        idx = [self._band_names.index(b) for b in bands]
        off = lattice_offset(self._grid, grid)
        if off is not None:
            src = self._data[idx] if idx != list(range(len(self._band_names))) else self._data
            return slice_lattice(src, off[0], off[1], grid)
        return self._warped_read(grid, idx, self._resampling_for(bands, resampling))

    def _pick_level(self, scales, resampling: Resampling) -> _Level:
        k = _pyramid_level(scales, max(self._grid.width, self._grid.height))
        if k == 0:
            return _Level(("full",), self._grid)
        kind = "nearest" if resampling in _PICKING else "average"
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
        self.band_types = {n: np.dtype(t) for n, t in zip(self._band_names, ds.dtypes)}

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
            off = lattice_offset(self._grid, grid)
            if off is not None:
                return self._read_lattice(indexes, off, grid)
            return self._warped_read(grid, indexes, self._resampling_for(bands, resampling))
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

    def _pick_level(self, scales, resampling: Resampling) -> _Level:
        # The file's own overviews when it has them (the coarsest one still >= 2x finer than
        # the target), else 2**k block means of the full-res pixels (like ArrayImage's pyramid).
        f = min(scales) / 2 if scales is not None else 1.0
        if f < 2:
            return _Level(("full",), self._grid)
        if self._overview_factors:
            fits = [i for i, o in enumerate(self._overview_factors) if o <= f]
            if not fits:
                return _Level(("full",), self._grid)
            i = max(fits, key=lambda j: self._overview_factors[j])
            grid = self._overview_grids.get(i)
            if grid is None:
                ds = self._dataset(i)
                grid = self._overview_grids[i] = Grid(ds.crs, ds.transform, ds.width, ds.height)
            return _Level(("overview", i), grid)
        k = _pyramid_level(scales, max(self._grid.width, self._grid.height))
        picking = resampling in _PICKING
        return _Level(("decimated", picking, k), _decimated_grid(self._grid, k))

    def _level_window(self, level: _Level, bands: list[int], window: Window) -> np.ndarray:
        if level.key[0] == "full":
            return self._read_window(bands, window)
        if level.key[0] == "overview":
            return self._read_window(bands, window, overview=level.key[1])
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


# ---- xarray ---------------------------------------------------------------------------------
def image_from_xarray(da, band_names=None, categorical=None) -> Image:
    """An image from a rioxarray-style DataArray (dims (band,) y, x; CRS via .rio or attrs) or a
    Dataset (variables as bands): an `ArrayImage` copy of in-memory data, a lazy `XarrayImage`
    of dask-backed or file-backed data (see core/xarray_image.py)."""
    from .xarray_image import XarrayImage, as_dataarray, check_regular, is_lazy, normalise_dims

    da = normalise_dims(as_dataarray(da))
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
    check_regular(da)
    if is_lazy(da):
        return XarrayImage(
            da, transform=transform, crs=crs, band_names=band_names, nodata=nodata, categorical=categorical
        )
    return ArrayImage(
        np.asarray(da.values),
        transform=transform,
        crs=crs,
        band_names=band_names,
        nodata=nodata,
        categorical=categorical,
    )

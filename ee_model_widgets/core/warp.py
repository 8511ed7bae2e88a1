"""The warp engine: window-independent reads of a raster on any target lattice.

Both answer `read(grid)` the same way, and a pixel's value never depends on the window it
is read in (a map tile, a batch of model cells, an export window all agree bit for bit):

- Reads on the source's own pixel lattice are plain slices (exact values, no cost).
- Other reads are cut into fixed blocks of the target lattice, anchored at the CRS origin
  (so web-map tiles are whole blocks). Each block is warped on its own from source pixels
  chosen by the block alone (its footprint, padded for the resampling kernel), through a
  GDAL `WarpedVRT` with a tight transformer error (`TOLERANCE` px) and a resampling scale
  fixed per image and target lattice. The value of an output pixel is therefore a function
  of (image, target lattice, pixel, band, resampling) only. Raster images set GDAL up once
  per larger fixed frame and let GDAL warp that frame's blocks (`core/frame_warp.py`);
  `warp_array` warps `BLOCK` x `BLOCK` blocks one by one.
- Zoomed-out reads warp from a decimated level (a file's overviews, the array's lazily
  built 2x pyramid, or block means of the file) chosen from the target's resolution alone.
- Masked pixels are NaN in the source and GDAL's nodata, so they never leak into
  interpolated values, each band keeps its own mask, and pixels off the source come back
  masked.

`core/raster.py` builds its images on it; `warp_array` serves predictions (`core/predicted.py`).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Hashable, Sequence

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform as transform_points
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from .antimeridian import period
from .grid import Grid, as_crs, pixel_window

#: Side of the target-lattice blocks that are warped independently (256 = one web-map tile).
BLOCK = 256
#: Largest error (in source pixels) of GDAL's approximate coordinate transformer. GDAL's
#: default is 0.125 px; 1e-3 px costs about the same and makes nearest-neighbour picks
#: and interpolation weights as good as exact (1e-6 and below cost ~3x more per tile).
TOLERANCE = 1e-3
# CPLStrtod's spelling of NaN, to initialise warped outputs: rasterio upper-cases warp option
# values, and GDAL reads "NAN" as 0 but "1.#QNAN" as NaN.
NAN_INIT = "1.#QNAN"
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


def _masked(values: np.ndarray) -> np.ma.MaskedArray:
    """float32 NaN-masked array -> masked array with zeros under the mask."""
    mask = np.isnan(values)
    values[mask] = 0
    return np.ma.MaskedArray(values, mask=mask)


def _groups(keys: Sequence[Hashable]) -> dict[Hashable, list[int]]:
    """key -> the positions holding it, in order (bands warped together)."""
    groups: dict[Hashable, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
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


def _source_window(src: Grid, grid: Grid, pad: int) -> list[tuple[Window, bool, float]]:
    """The windows of `src` under `grid`, padded by `pad` pixels and clipped; [] if off `src`.

    Each comes with a flag, whether the padded footprint lies wholly inside `src` (nothing
    clipped), and the x shift to add to `src`'s transform when warping from that window. A
    lon/lat source can meet the footprint in another copy of the world (a scene stored as
    177..185°, or as 0..360°, under a web tile at -180..-175°): GDAL takes longitudes as they
    come, so that part is warped from the source moved by 360° (one window per copy met).
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
        return [(Window(0, 0, src.width, src.height), False, 0.0)]
    west, south, east, north = b
    spans, copies = [(west, east)], (0.0,)
    if src.crs.is_geographic:
        world = period(grid.crs)
        gw, _, ge, _ = grid.bounds
        if grid.crs != src.crs and (west == east or (world is not None and ge - gw >= world * (1 - 1e-9))):
            # A frame a whole world wide (zoomed-out web frames are anchored at the CRS
            # origin, e.g. 0..360°; float noise aside): transform_bounds collapses it to
            # west == east, or to a sliver.
            spans = [(-180.0, 180.0)]
        elif grid.crs != src.crs and west > east:
            # transform_bounds' answer for a footprint across 180° (e.g. a web-map frame whose
            # west edge lies a float ulp past -180°): GDAL sees its longitudes in two spans.
            spans = [(west, 180.0), (-180.0, east)]
        copies = (0.0, -360.0, 360.0)
    found = []
    for (w, e), k in itertools.product(spans, copies):
        c0, r0, c1, r1 = pixel_window(src.transform, (w + k, south, e + k, north), pad=pad, eps=0.0)
        if c1 <= 0 or r1 <= 0 or c0 >= src.width or r0 >= src.height:
            continue
        inside = c0 >= 0 and r0 >= 0 and c1 <= src.width and r1 <= src.height
        c0, r0 = max(c0, 0), max(r0, 0)
        c1, r1 = min(c1, src.width), min(r1, src.height)
        found.append((Window(c0, r0, c1 - c0, r1 - r0), inside, -k))
    return found


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


def warped_vrt(
    ds,
    src_transform: Affine,
    src_crs: CRS,
    grid: Grid,
    resampling: Resampling,
    scales,
    masked: bool,
    sample_grid: bool = False,
) -> WarpedVRT:
    """The `WarpedVRT` of float32 MEM dataset `ds` (`_mem_dataset`) onto `grid`, as block and
    frame warps both set it up: GDAL's transformer error held to `TOLERANCE`, bands masked as
    one, XSCALE/YSCALE fixing the downsampling kernel's width instead of letting GDAL estimate
    it per chunk (plain floats: GDAL reads an np.float64 repr as 0). `masked`: NaN is the
    source's nodata and the output starts as NaN (`NAN_INIT`), with no destination nodata
    (see `_warp`); else the source has no mask and GDAL's plain kernels run. `sample_grid`:
    GDAL finds each chunk's source window from a grid of points, not its edges only (whose
    longitudes jump at 180°, which lost the columns next to it: see `_source_window`)."""
    extras = {"UNIFIED_SRC_NODATA": "YES"}
    if sample_grid:
        extras["SAMPLE_GRID"] = "YES"
    if masked:
        extras["INIT_DEST"] = NAN_INIT
    if scales is not None:
        extras["XSCALE"] = repr(1.0 / float(scales[0]))
        extras["YSCALE"] = repr(1.0 / float(scales[1]))
    return WarpedVRT(
        ds,
        src_crs=src_crs,
        src_transform=src_transform,
        crs=grid.crs,
        transform=grid.transform,
        width=grid.width,
        height=grid.height,
        resampling=resampling,
        tolerance=TOLERANCE,
        src_nodata=np.nan if masked else None,
        nodata=None,
        init_dest_nodata=not masked,
        dtype="float32",
        **extras,
    )


def _warp(
    src: np.ndarray,
    src_transform: Affine,
    src_crs: CRS,
    grid: Grid,
    resampling: Resampling,
    scales: tuple[float, float] | None,
    masked: bool = True,
    sample_grid: bool = False,
) -> np.ndarray:
    """GDAL-warp float32 `src` (NaN = masked) onto `grid`: float32 (bands, rows, cols), NaN = masked.

    A WarpedVRT rather than `rasterio.warp.reproject`, which always approximates coordinates
    to 0.125 px. All bands of `src` must share one mask (see `_warp_bands`): GDAL then uses
    it as the unified validity mask, exactly as for a single band. XSCALE/YSCALE fix the
    downsampling kernel's width instead of letting GDAL estimate it per chunk.
    `masked=False` is for a `src` without NaN that every output pixel's kernel lies inside:
    GDAL's plain kernels then give the same values about twice as fast as its nodata-aware
    ones (measured). Masked warps initialise the output to NaN rather than declare a NaN
    destination nodata: the same values (280 random cases: holes, off-source pixels, every
    resampling), without GDAL's destination-validity bookkeeping.
    """
    src = np.ascontiguousarray(src, dtype=np.float32)
    with _mem_dataset(src, src_transform) as ds:
        with warped_vrt(ds, src_transform, src_crs, grid, resampling, scales, masked, sample_grid) as vrt:
            return vrt.read()


def mask_sets(src: np.ndarray, nan: np.ndarray | None = None) -> list[list[int]]:
    """Bands of float32 `src` grouped by identical NaN masks (`nan`, if already computed), in band order."""
    nan = np.isnan(src) if nan is None else nan
    sets: list[list[int]] = []
    for i in range(src.shape[0]):
        for s in sets:
            if np.array_equal(nan[s[0]], nan[i]):
                s.append(i)
                break
        else:
            sets.append([i])
    return sets


def _warp_bands(
    src: np.ndarray,
    src_transform: Affine,
    src_crs: CRS,
    grid: Grid,
    resampling: Resampling,
    scales: tuple[float, float] | None,
    inside: bool,
    sample_grid: bool = False,
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
    sets = mask_sets(src, nan)
    if len(sets) == 1:
        masked = not inside or bool(nan[0].any())
        return _warp(src, src_transform, src_crs, grid, resampling, scales, masked, sample_grid)
    out = np.empty((src.shape[0], grid.height, grid.width), np.float32)
    for s in sets:
        masked = not inside or bool(nan[s[0]].any())
        out[s] = _warp(src[s], src_transform, src_crs, grid, resampling, scales, masked, sample_grid)
    return out


def _assemble(
    grid: Grid,
    t0: Affine,
    col: int,
    row: int,
    out: np.ndarray,
    pos: list[int],
    block: Callable,
    bw: int = BLOCK,
    bh: int = BLOCK,
) -> None:
    """Fill `out[pos]` (NaN-initialised) from the canonical `bw` x `bh` blocks `grid` touches.

    `block(bx, by)` returns (len(pos), bh, bw) float32, or a list of one (bh, bw) array or
    None (all masked) per band, or None when all masked: cached blocks are copied straight
    into `out`, not stacked (and NaN-filled) first.
    """
    h, w = grid.height, grid.width
    for by in range(row // bh, (row + h - 1) // bh + 1):
        r0, r1 = max(by * bh, row), min((by + 1) * bh, row + h)
        for bx in range(col // bw, (col + w - 1) // bw + 1):
            c0, c1 = max(bx * bw, col), min((bx + 1) * bw, col + w)
            values = block(bx, by)
            if values is None:
                continue
            for k, v in zip(pos, values):
                if v is not None:
                    out[k, r0 - row : r1 - row, c0 - col : c1 - col] = v[
                        r0 - by * bh : r1 - by * bh, c0 - bx * bw : c1 - bx * bw
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
            warped = None
            windows = _source_window(src_grid, bgrid, _pad(r, scales))
            wraps = len(windows) > 1 or any(shift for _, _, shift in windows)
            for win, inside, shift in windows:
                # Only the pixels under the block: its result must not depend on what else the
                # caller's array holds (e.g. which bands share a mask elsewhere).
                c0, r0 = int(win.col_off), int(win.row_off)
                cut = part[:, r0 : r0 + int(win.height), c0 : c0 + int(win.width)]
                if np.isnan(cut).all():
                    continue
                cut_t = Affine.translation(shift, 0) @ src_transform @ Affine.translation(c0, r0)
                got = _warp_bands(cut, cut_t, src_crs, bgrid, r, scales, inside, wraps)
                warped = got if warped is None else np.where(np.isnan(warped), got, warped)
            return warped

        _assemble(grid, t0, col, row, out, pos, block)
    return _masked(out)


def level_limit(scales: tuple[float, float] | None, resampling: Resampling) -> float:
    """The largest decimation (full-res pixels per level pixel) a read may warp from when one
    target pixel spans `scales` full-res pixels. Nearest neighbour takes Earth Engine's level:
    the coarsest at or finer than the target. An interpolating or aggregating kernel takes one
    at least 2x finer, so that it still blends 2x2 of the level's pixels."""
    if scales is None:
        return 1.0
    return min(scales) if resampling is Resampling.nearest else min(scales) / 2


def _pyramid_level(limit: float, size: int) -> int:
    """2**k decimation, the coarsest within `limit` (see `level_limit`), not below one pixel."""
    if limit < 2:
        return 0
    return max(0, min(int(math.floor(math.log2(limit))), int(math.floor(math.log2(max(size, 1))))))


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

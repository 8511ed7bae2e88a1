"""A procedural multispectral scene of any size, computed lazily window by window.

Benchmarks and tests need inputs far larger than the embedded scene (8192 x 8192 and more)
without allocating them: `SyntheticImage` evaluates a smooth land-surface model at the
world coordinates of each requested pixel, so any window costs only its own pixels, and
the same pixel always gets the same value whichever window it is read through.

The surface: lakes (a low-frequency noise field below a threshold), a vegetation fraction
and a soil-brightness field (fractal value noise), mixed with typical reflectance spectra of
water, green vegetation and bare soil. Values are reflectance x 10000 (like Sentinel-2 and
the embedded scene), so the demo models run on it unchanged.

The noise is integer-hashed value noise with polynomial interpolation: only +, *, floor
and integer ops, which numpy computes bit-identically whatever the array's size or layout
(transcendental functions may differ by an ulp between SIMD and scalar loops).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from affine import Affine
from pyproj import Transformer

from ..core.grid import Grid, as_crs, lattice_offset
from ..core.image import Image
from ..errors import InputError

# Reflectance (0..1) of the three surface types per band name (typical published values:
# deep clear water, green broadleaf vegetation, dry mineral soil).
SPECTRA: dict[str, tuple[float, float, float]] = {
    #         water   vegetation  soil
    "blue": (0.040, 0.030, 0.100),
    "green": (0.050, 0.080, 0.140),
    "red": (0.030, 0.040, 0.190),
    "nir": (0.010, 0.420, 0.260),
    "swir1": (0.005, 0.200, 0.330),
    "swir2": (0.003, 0.090, 0.280),
}
SYNTHETIC_BANDS = tuple(SPECTRA)

_U32 = np.uint32


def _hash2(ix: np.ndarray, iy: np.ndarray, salt: int) -> np.ndarray:
    """A uniform [0, 1) value per integer lattice point (integer mixing, wraps mod 2**32)."""
    hx = ix.astype(np.int64).astype(_U32) * _U32(0x8DA6B343)
    hy = iy.astype(np.int64).astype(_U32) * _U32(0xD8163841)
    h = hx ^ hy ^ _U32(salt & 0xFFFFFFFF)
    h ^= h >> _U32(15)
    h *= _U32(0x2C1B3C6D)
    h ^= h >> _U32(12)
    h *= _U32(0x297A2D39)
    h ^= h >> _U32(15)
    return h.astype(np.float64) * (1.0 / 4294967296.0)


def _fade(t: np.ndarray) -> np.ndarray:
    """Quintic smoothstep: continuous first and second derivatives at lattice lines."""
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def _value_noise(x: np.ndarray, y: np.ndarray, cell: float, salt: int) -> np.ndarray:
    """Smooth noise in [0, 1) with features about `cell` metres across; x, y broadcast."""
    gx = x / cell
    gy = y / cell
    x0 = np.floor(gx)
    y0 = np.floor(gy)
    tx = _fade(gx - x0)
    ty = _fade(gy - y0)
    ix = x0.astype(np.int64)
    iy = y0.astype(np.int64)
    if np.ndim(x) == 2 and np.ndim(y) == 2 and np.shape(x)[0] == 1 and np.shape(y)[1] == 1:
        # North-up read: x varies along columns only, y along rows only. Hash the lattice
        # once, interpolate its rows along x, then gather rows: the same arithmetic per
        # pixel as the general path below (bit-identical), at a fraction of the cost.
        cx, cy = ix[0], iy[:, 0]
        lx = np.arange(cx.min(), cx.max() + 2)
        ly = np.arange(cy.min(), cy.max() + 2)
        table = _hash2(lx[np.newaxis, :], ly[:, np.newaxis], salt)
        jx, jy = cx - lx[0], cy - ly[0]
        left = table[:, jx]
        rows = left + (table[:, jx + 1] - left) * tx
        top = rows[jy]
        return top + (rows[jy + 1] - top) * ty
    v00 = _hash2(ix, iy, salt)
    v10 = _hash2(ix + 1, iy, salt)
    v01 = _hash2(ix, iy + 1, salt)
    v11 = _hash2(ix + 1, iy + 1, salt)
    top = v00 + (v10 - v00) * tx
    bottom = v01 + (v11 - v01) * tx
    return top + (bottom - top) * ty


def _fbm(x: np.ndarray, y: np.ndarray, cell: float, octaves: int, salt: int) -> np.ndarray:
    """Fractal sum of value noise: octaves halve in size and amplitude; result in [0, 1)."""
    total = 0.0
    norm = 0.0
    amp = 1.0
    for o in range(octaves):
        total = total + amp * _value_noise(x, y, cell / 2**o, salt * 7919 + o * 104729)
        norm += amp
        amp *= 0.5
    return total / norm


def _smoothstep(lo: float, hi: float, v: np.ndarray) -> np.ndarray:
    t = np.clip((v - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def surface(x: np.ndarray, y: np.ndarray, bands: Sequence[str], seed: int) -> np.ndarray:
    """Reflectance x 10000 of `bands` at scene coordinates (metres from the scene's corner).

    x, y broadcast to the output's (rows, cols); returns float32 (len(bands), rows, cols).
    """
    s = int(seed) * 1000
    # Lakes: a few km across, soft 30-60 m shores.
    lake = _fbm(x, y, 6000.0, 3, s + 1)
    water = 1.0 - _smoothstep(0.30, 0.33, lake)
    # Vegetation fraction: fields and forests from ~2 km down to ~20 m texture.
    veg = _smoothstep(0.35, 0.70, _fbm(x, y, 2500.0, 7, s + 2))
    # Soil brightness varies by +-25 % (moisture, minerals).
    soil = 0.75 + 0.5 * _fbm(x, y, 1500.0, 5, s + 3)
    # Fine texture common to all bands (+-4 %): looks like real imagery at full zoom.
    grain = 0.96 + 0.08 * _value_noise(x, y, 40.0, s + 4)
    shape = np.broadcast_shapes(np.shape(x), np.shape(y))
    out = np.empty((len(bands),) + shape, dtype=np.float32)
    land = 1.0 - water
    for i, name in enumerate(bands):
        rw, rv, rs = SPECTRA[name]
        refl = water * rw + land * grain * (veg * rv + (1.0 - veg) * rs * soil)
        out[i] = refl * 10000.0
    return out


class SyntheticImage(Image):
    """A procedural scene (see module doc) on a north-up grid; reads compute values on demand."""

    def __init__(
        self,
        width: int,
        height: int,
        bands: Sequence[str] = ("red", "nir"),
        seed: int = 0,
        crs="EPSG:32633",
        scale: float = 10,
        origin: tuple[float, float] | None = None,
    ):
        if isinstance(bands, str):
            bands = [bands]
        bands = [str(b) for b in bands]
        unknown = [b for b in bands if b not in SPECTRA]
        if unknown or not bands or len(set(bands)) != len(bands):
            raise InputError(
                f"synthetic_scene bands {bands}: each must be one of {list(SYNTHETIC_BANDS)}, "
                "at least one, no duplicates."
            )
        if int(width) <= 0 or int(height) <= 0:
            raise InputError(f"synthetic_scene needs a positive size, got {width}x{height}.")
        if not scale or float(scale) <= 0:
            raise InputError(
                f"synthetic_scene scale must be a positive pixel size in CRS units, got {scale!r}."
            )
        crs = as_crs(crs)
        if origin is None:
            # Upper-left corner: in a UTM-like projected CRS 500 km east, 5000 km north
            # (45 N, 15 E for the default EPSG:32633); lon/lat 15 E, 45 N for geographic ones.
            origin = (15.0, 45.0) if crs.is_geographic else (500_000.0, 5_000_000.0)
        self._band_names = list(bands)
        self.seed = int(seed)
        self.scale = float(scale)
        self._grid = Grid(
            crs, Affine(self.scale, 0, origin[0], 0, -self.scale, origin[1]), int(width), int(height)
        )

    @property
    def grid(self) -> Grid:
        return self._grid

    def _read(self, grid: Grid, bands: list[str], resampling) -> np.ma.MaskedArray:
        # `resampling` does not apply: the surface is evaluated exactly at each pixel centre.
        g = self._grid
        off = lattice_offset(g.transform, g.crs, grid)
        if off is not None:
            # Same lattice: integer pixel indices -> bit-identical values for every window.
            cols = np.arange(grid.width, dtype=np.int64) + off[0]
            rows = np.arange(grid.height, dtype=np.int64) + off[1]
            u = cols.astype(np.float64)[np.newaxis, :] + 0.5
            v = rows.astype(np.float64)[:, np.newaxis] + 0.5
        else:
            # Any other grid: pixel centres -> scene CRS (pyproj) -> fractional native pixels.
            cc, rr = np.meshgrid(np.arange(grid.width) + 0.5, np.arange(grid.height) + 0.5)
            t = grid.transform
            xs = t.a * cc + t.b * rr + t.c
            ys = t.d * cc + t.e * rr + t.f
            if grid.crs != g.crs:
                tr = Transformer.from_crs(grid.crs, g.crs, always_xy=True)
                xs, ys = tr.transform(xs, ys)
            inv = ~g.transform
            u = inv.a * xs + inv.b * ys + inv.c
            v = inv.d * xs + inv.e * ys + inv.f
        inside = (u >= 0) & (u < g.width) & (v >= 0) & (v < g.height)
        # Metres from the scene's corner, so features have the same size whatever the CRS.
        values = surface(u * self.scale, v * self.scale, bands, self.seed)
        mask = np.broadcast_to(~inside, values.shape).copy()
        values[mask] = 0.0
        return np.ma.MaskedArray(values, mask=mask)


def synthetic_scene(
    width: int,
    height: int,
    bands: Sequence[str] = ("red", "nir"),
    seed: int = 0,
    crs="EPSG:32633",
    scale: float = 10,
) -> Image:
    """A lazy procedural scene `width` x `height` px (reflectance x 10000, any size).

    `bands` from blue, green, red, nir, swir1, swir2; `scale` is the pixel size in CRS units.
    Nothing is allocated up front: an 8192 x 8192 scene costs only the windows you read.
    """
    return SyntheticImage(width, height, bands=bands, seed=seed, crs=crs, scale=scale)


def synthetic_geotiff(
    path: str | os.PathLike,
    width: int,
    height: int,
    bands: Sequence[str] = ("red", "nir"),
    seed: int = 0,
    crs="EPSG:32633",
    scale: float = 10,
    block: int = 512,
) -> str:
    """Write `synthetic_scene(...)` as a tiled, deflate-compressed float32 GeoTIFF.

    Written window by window (memory ~ one `block` x `block` window), to a temporary file
    renamed at the end so a failure never leaves a half-written file. Returns the path.
    """
    import rasterio
    from rasterio.windows import Window

    img = SyntheticImage(width, height, bands=bands, seed=seed, crs=crs, scale=scale)
    g = img.grid
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    profile = dict(
        driver="GTiff",
        width=g.width,
        height=g.height,
        count=len(img.band_names),
        dtype="float32",
        crs=g.crs,
        transform=g.transform,
        compress="deflate",
        predictor=3,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        BIGTIFF="IF_SAFER",
    )
    try:
        with rasterio.open(tmp, "w", **profile) as dst:
            for i, name in enumerate(img.band_names, start=1):
                dst.set_band_description(i, name)
            for row in range(0, g.height, block):
                for col in range(0, g.width, block):
                    w, h = min(block, g.width - col), min(block, g.height - row)
                    data = img.read(g.window(col, row, w, h))
                    dst.write(data.filled(0), window=Window(col, row, w, h))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path

"""A pixel grid: CRS + affine transform + size. The unit every read is expressed in.

Every consumer (map tiles, exports, the inspector, the model's input cells) asks an image
for "these bands on this grid", so the grid is the one currency of the read path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError

from ..errors import ProjectionError

WEB_MERCATOR = CRS.from_epsg(3857)
# Half the width of the EPSG:3857 world square, in metres.
MERCATOR_HALF_WORLD = 20037508.342789244
#: Latitude (degrees) where the web map's square world ends: nothing beyond it is ever shown.
WEB_MERCATOR_MAX_LAT = 85.0511287798066
TILE_SIZE = 256


def as_crs(crs) -> CRS:
    """Turn a user CRS ("EPSG:32719", 4326, WKT, pyproj/rasterio CRS) into a rasterio CRS."""
    if isinstance(crs, CRS):
        return crs
    try:
        if isinstance(crs, int):
            return CRS.from_epsg(crs)
        if hasattr(crs, "to_wkt"):  # pyproj.CRS
            return CRS.from_wkt(crs.to_wkt())
        return CRS.from_user_input(crs)
    except (CRSError, TypeError, ValueError) as exc:
        raise ProjectionError(
            f"Unknown CRS {crs!r}: use an EPSG code such as 'EPSG:4326' or 'EPSG:32719', "
            f"or a WKT/PROJ string ({exc})."
        ) from None


def as_transform(transform, what: str = "transform") -> Affine:
    """A user's pixel lattice (an Affine, or 6 numbers in affine's order) as an Affine, checked:
    finite, not degenerate, and not a GDAL geotransform tuple read in the wrong order."""
    if isinstance(transform, Affine):
        t = transform
    else:
        try:
            t = Affine(*list(transform)[:6])
        except (TypeError, ValueError):
            raise ProjectionError(
                f"{what} {transform!r} is not an affine transform: pass an affine.Affine "
                "(e.g. rasterio.transform.from_origin(west, north, xres, yres))."
            ) from None
        if t.c == 0 and t.e == 0 and t.a != 0 and t.b != 0 and t.d != 0:
            # (x0, xres, 0, y0, 0, yres): GDAL's GetGeoTransform order, which read in affine's
            # order (a, b, c, d, e, f) is a 90-degree-sheared grid placed at the wrong spot.
            raise ProjectionError(
                f"{what} {tuple(transform)!r} looks like a GDAL geotransform (x0, xres, 0, y0, 0, yres); "
                "a plain tuple is read in affine's order (xres, 0, x0, 0, yres, y0). Pass "
                "affine.Affine.from_gdal(*geotransform) or rasterio.transform.from_origin(west, north, xres, yres)."
            )
    if t.is_degenerate or not all(math.isfinite(v) for v in t[:6]):
        raise ProjectionError(
            f"{what} {tuple(t)[:6]} is degenerate or not finite: pixel sizes must be non-zero."
        )
    return t


def crs_key(crs: CRS) -> str:
    """A canonical string for hashing: the EPSG code when exact, else the WKT."""
    epsg = crs.to_epsg(confidence_threshold=100)
    return f"EPSG:{epsg}" if epsg is not None else crs.to_wkt()


@dataclass(frozen=True)
class Grid:
    """`height` x `width` pixels; pixel (row, col) covers `transform @ (col, row)` onwards."""

    crs: CRS
    transform: Affine
    width: int
    height: int

    def __post_init__(self):
        object.__setattr__(self, "crs", as_crs(self.crs))
        if self.width <= 0 or self.height <= 0:
            raise ProjectionError(f"A grid needs a positive size, got {self.width}x{self.height}.")

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols), numpy order."""
        return (self.height, self.width)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in the grid's CRS."""
        xs, ys = zip(
            *(
                self.transform @ (c, r)
                for c, r in ((0, 0), (self.width, 0), (0, self.height), (self.width, self.height))
            )
        )
        return (min(xs), min(ys), max(xs), max(ys))

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size (x, y) as positive numbers, in CRS units."""
        t = self.transform
        return (math.hypot(t.a, t.d), math.hypot(t.b, t.e))

    def window(self, col_off: int, row_off: int, width: int, height: int) -> Grid:
        """A sub- (or super-) grid on the same pixel lattice; offsets may be negative."""
        return Grid(self.crs, self.transform @ Affine.translation(col_off, row_off), width, height)

    def scaled(self, fx: float, fy: float) -> Grid:
        """The same area with pixels `fx` x `fy` times smaller (size multiplied by fx, fy)."""
        return Grid(
            self.crs,
            self.transform @ Affine.scale(1 / fx, 1 / fy),
            round(self.width * fx),
            round(self.height * fy),
        )


def xyz_grid(z: int, x: int, y: int, size: int = TILE_SIZE) -> Grid:
    """The EPSG:3857 grid of slippy-map tile z/x/y (XYZ scheme, y down), `size` px square."""
    n = 2**z
    if z < 0 or not (0 <= x < n and 0 <= y < n):
        raise ProjectionError(f"Tile {z}/{x}/{y} does not exist: at zoom {z}, x and y run from 0 to {n - 1}.")
    span = 2 * MERCATOR_HALF_WORLD / n
    west = -MERCATOR_HALF_WORLD + x * span
    north = MERCATOR_HALF_WORLD - y * span
    res = span / size
    return Grid(WEB_MERCATOR, Affine(res, 0, west, 0, -res, north), size, size)


# How close (in pixels) a coordinate must be to an integer to count as on the lattice.
ALIGN_TOL = 1e-6
# Pixel-coordinate tolerance when snapping a region (1/1000 px): float noise and sub-millimetre
# curvature of a lon/lat box taken back into a projected CRS do not add a row of pixels.
_SNAP_EPS = 1e-3


def pixel_window(
    transform: Affine, bounds: tuple[float, float, float, float], pad: int = 0, eps: float = ALIGN_TOL
) -> tuple[int, int, int, int]:
    """The pixel window (col0, row0, col1, row1), end exclusive, of `transform` covering `bounds`
    (west, south, east, north in the lattice CRS), grown by `pad` pixels on each side.

    Works for any invertible affine (also rotated or south-up lattices): the bounds' corners
    are taken to pixel space and rounded outwards; a bound within `eps` pixels of a pixel edge
    does not add a pixel. At least one pixel each way.
    """
    w, s, e, n = bounds
    return _window_of(transform, ((w, s), (w, n), (e, s), (e, n)), pad, eps)


def grid_window(transform: Affine, grid: Grid, eps: float = ALIGN_TOL) -> tuple[int, int, int, int]:
    """`pixel_window` of `grid`'s four corners (same CRS) rather than of its bounding box: a
    rotated grid on its own lattice is its own pixels, not the larger box around it."""
    w, h = grid.width, grid.height
    return _window_of(transform, [grid.transform @ p for p in ((0, 0), (w, 0), (0, h), (w, h))], 0, eps)


def _window_of(transform: Affine, points, pad: int, eps: float) -> tuple[int, int, int, int]:
    inv = ~transform
    cols, rows = zip(*(inv @ p for p in points))
    c0 = math.floor(min(cols) + eps) - pad
    r0 = math.floor(min(rows) + eps) - pad
    c1 = math.ceil(max(cols) - eps) + pad
    r1 = math.ceil(max(rows) - eps) + pad
    return (c0, r0, max(c1, c0 + 1), max(r1, r0 + 1))


def snap_bounds(crs, transform: Affine, bounds: tuple[float, float, float, float]) -> Grid:
    """The smallest grid on `transform`'s lattice covering `bounds` (in `crs` units)."""
    c0, r0, c1, r1 = pixel_window(transform, bounds, eps=_SNAP_EPS)
    return Grid(crs, transform @ Affine.translation(c0, r0), c1 - c0, r1 - r0)


def snap_grid(transform: Affine, grid: Grid) -> Grid:
    """The smallest grid on `transform`'s lattice (in `grid`'s CRS) covering `grid` (`grid_window`)."""
    c0, r0, c1, r1 = grid_window(transform, grid, eps=_SNAP_EPS)
    return Grid(grid.crs, transform @ Affine.translation(c0, r0), c1 - c0, r1 - r0)


def lattice_offset(transform: Affine, crs, grid: Grid) -> tuple[int, int] | None:
    """(col, row) of `grid`'s origin on the pixel lattice `transform` (in `crs`) if `grid` lies
    on it (same CRS, pixel size and orientation, whole-pixel offset), else None.

    Reads on the same lattice are plain array slices (exact values, no warping), and a request
    on a model's lattice needs no resampling of its cells.
    """
    if as_crs(crs) != grid.crs:
        return None
    g = grid.transform
    size = max(abs(transform.a), abs(transform.b), abs(transform.d), abs(transform.e))
    if any(
        not math.isclose(p, q, rel_tol=1e-9, abs_tol=1e-12 * size)
        for p, q in zip((transform.a, transform.b, transform.d, transform.e), (g.a, g.b, g.d, g.e))
    ):
        return None
    col, row = ~transform @ (g.c, g.f)
    ic, ir = round(col), round(row)
    if abs(col - ic) > ALIGN_TOL or abs(row - ir) > ALIGN_TOL:
        return None
    return int(ic), int(ir)

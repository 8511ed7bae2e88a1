"""`Projection`: a CRS plus a pixel lattice, like Earth Engine's `ee.Projection`.

A projection says *how* pixels are laid out (CRS, pixel size, lattice origin) but not
*where* or *how many*: that is a `Grid`. Models use one as their training grid (`proj`),
and `to_numpy`/`export` use one to choose the output pixels.
"""

from __future__ import annotations

import math

from affine import Affine
from rasterio.crs import CRS

from ..errors import InputError, ProjectionError
from .grid import Grid, as_crs, as_transform, crs_key

#: Metres per degree at the equator, the factor Earth Engine uses for geographic CRSs.
METRES_PER_DEGREE = 111319.49079327357


def _metres_per_unit(crs: CRS) -> float:
    """How many metres one CRS unit is (degrees count at the equator, as in EE)."""
    if crs.is_geographic:
        return METRES_PER_DEGREE
    factor = crs.linear_units_factor[1] if crs.linear_units else 1.0
    return float(factor or 1.0)


class Projection:
    """A CRS and (optionally) an affine pixel lattice; `transform=None` = no scale yet.

    `Projection("EPSG:32719").at_scale(10)` is a 10 m UTM lattice anchored at the CRS
    origin, like `ee.Projection("EPSG:32719").atScale(10)`.
    """

    __slots__ = ("_crs", "_transform", "_key")

    def __init__(self, crs, transform: Affine | tuple | list | None = None):
        if isinstance(crs, Projection):
            transform = crs.transform if transform is None else transform
            crs = crs.crs
        self._crs = as_crs(crs)
        if transform is not None:
            transform = as_transform(transform, "Projection transform")
        self._transform = transform
        self._key = None

    # ---- what it is -------------------------------------------------------------------
    @property
    def crs(self) -> CRS:
        return self._crs

    @property
    def transform(self) -> Affine | None:
        """The pixel lattice (pixel -> CRS coordinates), or None if no scale is set."""
        return self._transform

    @property
    def scale(self) -> float | None:
        """Nominal pixel size in metres (x axis; degrees converted at the equator), or None."""
        if self._transform is None:
            return None
        t = self._transform
        return math.hypot(t.a, t.d) * _metres_per_unit(self._crs)

    @property
    def res(self) -> tuple[float, float] | None:
        """Pixel size (x, y) in CRS units, or None if no scale is set."""
        if self._transform is None:
            return None
        t = self._transform
        return (math.hypot(t.a, t.d), math.hypot(t.b, t.e))

    # ---- deriving projections ---------------------------------------------------------
    def at_scale(self, metres: float) -> Projection:
        """The same CRS with square, north-up pixels of `metres` (EE's `atScale`).

        The lattice origin of an existing transform is kept (so cells stay aligned with it);
        without one the lattice is anchored at the CRS origin, as Earth Engine does.
        """
        try:
            metres = float(metres)
        except (TypeError, ValueError):
            raise InputError(f"at_scale needs a number of metres, got {metres!r}.") from None
        if not (math.isfinite(metres) and metres > 0):
            raise InputError(f"at_scale needs a positive number of metres, got {metres!r}.")
        size = metres / _metres_per_unit(self._crs)
        t = self._transform
        x0, y0 = (t.c, t.f) if t is not None else (0.0, 0.0)
        return Projection(self._crs, Affine(size, 0.0, x0, 0.0, -size, y0))

    atScale = at_scale  # Earth Engine spelling

    def scaled(self, fx: float, fy: float | None = None) -> Projection:
        """Pixels `fx` x `fy` times *larger* (EE's `scale(x, y)`); origin kept."""
        if self._transform is None:
            raise ProjectionError(f"{self!r} has no scale to multiply: call .at_scale(metres) first.")
        fy = fx if fy is None else fy
        return Projection(self._crs, self._transform @ Affine.scale(fx, fy))

    @classmethod
    def from_grid(cls, grid: Grid) -> Projection:
        """The projection (CRS + lattice) of a grid."""
        return cls(grid.crs, grid.transform)

    # ---- identity ----------------------------------------------------------------------
    def _identity(self) -> tuple:
        if self._key is None:
            t = None if self._transform is None else tuple(round(v, 9) for v in self._transform[:6])
            self._key = (crs_key(self._crs), t)
        return self._key

    def __eq__(self, other) -> bool:
        if not isinstance(other, Projection):
            return NotImplemented
        return self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())

    def __repr__(self) -> str:
        crs = self._identity()[0]
        if len(crs) > 40:
            crs = crs[:37] + "..."
        if self._transform is None:
            return f"Projection({crs!r})"
        return f"Projection({crs!r}, transform={tuple(self._transform)[:6]}, scale={self.scale:.6g} m)"

    def to_dict(self) -> dict:
        """A JSON-able description, stable across runs (used in cache keys)."""
        crs, t = self._identity()
        return {"crs": crs, "transform": None if t is None else list(t)}

    def __reduce__(self):
        return (
            Projection,
            (self._crs.to_wkt(), None if self._transform is None else tuple(self._transform)[:6]),
        )

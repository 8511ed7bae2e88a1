"""Extents that cross the antimeridian (180° longitude) in CRSs that are cut there.

A scene in UTM zone 60 or 1 can span 177°E..175°W. Lon/lat and Web Mercator are cut at
180°, so a plain bounds transform of such a scene gives west > east (GDAL) or the whole
world, and a grid built from that holds the complement of the scene: 0 valid pixels.
Here such an extent is *unwrapped* instead: its east edge runs past the cut, e.g.
(177, s, 185, n) in degrees, or x beyond 20037508 m in EPSG:3857. GDAL and PROJ read those
coordinates correctly (185° is -175°), so a grid on it holds the scene on both sides of
180°. A CRS cut at 180° that we cannot unwrap gets a `ProjectionError` naming the
antimeridian, never an empty result.
"""

from __future__ import annotations

import math

import numpy as np
from rasterio.crs import CRS
from rasterio.warp import transform as transform_points

from ..errors import ProjectionError
from .grid import MERCATOR_HALF_WORLD, WEB_MERCATOR

_DENSIFY = 21  # points per edge, as for the bounds transforms in region.py


def _ring(bounds, n: int = _DENSIFY) -> tuple[np.ndarray, np.ndarray]:
    """Points along the edges of `bounds`, in order around it (closed)."""
    w, s, e, n_ = bounds
    t = np.linspace(0.0, 1.0, n)
    xs = np.concatenate([w + (e - w) * t, np.full(n, e), e - (e - w) * t, np.full(n, w)])
    ys = np.concatenate([np.full(n, s), s + (n_ - s) * t, np.full(n, n_), n_ - (n_ - s) * t])
    return xs, ys


def period(crs: CRS) -> float | None:
    """Width of the world in `crs` x units if it is cut at the antimeridian and we can unwrap it."""
    if crs.is_geographic:
        return 360.0
    if crs == WEB_MERCATOR:
        return 2 * MERCATOR_HALF_WORLD
    return None


def unwrapped_bounds(bounds, src: CRS, dst: CRS) -> tuple[float, float, float, float] | None:
    """`bounds` (in `src`) taken into `dst` with east past the cut, if `dst` cuts the extent
    at the antimeridian; None if it does not (use an ordinary bounds transform then).

    Raises ProjectionError when `dst` cuts the extent and cannot be unwrapped.
    """
    xs, ys = _ring(bounds)
    try:
        tx, ty = (np.asarray(v, dtype=float) for v in transform_points(src, dst, xs, ys))
    except Exception:  # noqa: BLE001 - PROJ errors come in several types
        return None
    ok = np.isfinite(tx) & np.isfinite(ty)
    if ok.sum() < 4:
        return None
    tx, ty = tx[ok], ty[ok]
    span = float(np.ptp(tx))
    steps = np.abs(np.diff(np.append(tx, tx[0])))
    # Neighbouring edge points are a few % of the extent apart; a jump over half of it is the cut.
    if span == 0 or steps.max() <= 0.5 * span:
        return None
    world = period(dst)
    if world is None:
        raise ProjectionError(
            f"The area crosses the antimeridian (180° longitude), where {dst.to_string()} is cut in "
            "two: use EPSG:4326, EPSG:3857 or the image's own CRS, or split the region at 180°."
        )
    # Around a pole the edge walks once round the world (winding +-360°): not a crossing.
    wrapped = (np.diff(np.append(tx, tx[0])) + world / 2) % world - world / 2
    if abs(wrapped.sum()) > world / 2:
        return None
    mid = (tx.min() + tx.max()) / 2
    tx = np.where(tx < mid, tx + world, tx)  # the part east of 180° goes past the cut
    return (float(tx.min()), float(ty.min()), float(tx.max()), float(ty.max()))


def crossing_resolution(src_transform, src: CRS, dst: CRS, x: float, y: float) -> float | None:
    """Side of a square `dst` pixel with the area of the `src` pixel at (x, y), or None.

    For scenes cut by the antimeridian, where GDAL's suggested warp resolution is based
    on the whole world's width and comes out far too coarse.
    """
    a, b, d, e = src_transform.a, src_transform.b, src_transform.d, src_transform.e
    try:
        px, py = transform_points(src, dst, [x, x + a, x + b], [y, y + d, y + e])
    except Exception:  # noqa: BLE001
        return None
    w = period(dst) or math.inf
    dx1 = (px[1] - px[0] + w / 2) % w - w / 2 if math.isfinite(w) else px[1] - px[0]
    dx2 = (px[2] - px[0] + w / 2) % w - w / 2 if math.isfinite(w) else px[2] - px[0]
    area = abs(dx1 * (py[2] - py[0]) - dx2 * (py[1] - py[0]))
    return math.sqrt(area) if math.isfinite(area) and area > 0 else None


def footprints(bounds, src: CRS, dst: CRS) -> list[tuple[float, float, float, float]]:
    """The extent `bounds` (in `src`) in `dst`: one box, or for an extent `dst` cuts at the
    antimeridian its unwrapped box and the same box one world west (where requests on the
    far side of 180° fall). Empty if it cannot be expressed in `dst`."""
    if src == dst:
        return [tuple(bounds)]
    unwrapped = unwrapped_bounds(bounds, src, dst)
    if unwrapped is not None:
        w, s, e, n = unwrapped
        world = period(dst)
        return [unwrapped, (w - world, s, e - world, n)]
    from rasterio.warp import transform_bounds

    try:
        b = tuple(float(v) for v in transform_bounds(src, dst, *bounds, densify_pts=_DENSIFY))
    except Exception:  # noqa: BLE001 - PROJ errors come in several types
        return []
    return [b] if all(math.isfinite(v) for v in b) else []

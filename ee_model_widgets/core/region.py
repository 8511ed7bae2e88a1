"""Regions (lon/lat boxes or GeoJSON) and the grids they become on a projection's lattice.

`grid_for(image, region, proj)` is how `to_numpy`, `export` and the CLI turn "this area in
that projection" into the exact pixels to read: the region's bounds, taken into `proj`'s CRS
(edges densified, so curved edges are covered), snapped outwards to whole pixels of `proj`'s
lattice. Only the region's bounding box counts; pixels outside a polygon are not masked.
An extent that crosses the antimeridian is unwrapped, east past 180° (`antimeridian.py`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import calculate_default_transform, transform_bounds
from rasterio.warp import transform as transform_points

from ..errors import ProjectionError, RegionError
from .antimeridian import crossing_resolution, unwrapped_bounds
from .grid import Grid, snap_bounds, snap_grid
from .projection import Projection

if TYPE_CHECKING:
    from .image import Image

WGS84 = CRS.from_epsg(4326)
_DENSIFY = 21
_GEOMETRY_TYPES = {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon"}
_ACCEPTED = (
    "a (west, south, east, north) tuple in lon/lat degrees, a GeoJSON geometry/Feature/"
    "FeatureCollection dict, or an object with __geo_interface__ (e.g. a shapely geometry)"
)


def _fmt(b) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in b) + ")"


# ---- parsing ---------------------------------------------------------------------------------
def _positions(coords) -> list[np.ndarray]:
    """All (lon, lat) positions of a GeoJSON `coordinates` member, as (n, 2) arrays."""
    if isinstance(coords, (list, tuple)) and coords and isinstance(coords[0], (int, float, np.number)):
        if len(coords) < 2:
            raise RegionError(f"GeoJSON position {coords!r} needs at least (lon, lat).")
        return [np.asarray([coords[:2]], dtype=float)]
    if (
        isinstance(coords, (list, tuple))
        and coords
        and all(
            isinstance(p, (list, tuple)) and p and isinstance(p[0], (int, float, np.number)) for p in coords
        )
    ):
        try:
            return [np.asarray([p[:2] for p in coords], dtype=float)]
        except ValueError:
            raise RegionError(
                f"GeoJSON positions must be (lon, lat) numbers, got {coords[:3]!r}..."
            ) from None
    out: list[np.ndarray] = []
    if isinstance(coords, (list, tuple)):
        for c in coords:
            out.extend(_positions(c))
        return out
    raise RegionError(f"GeoJSON coordinates must be nested lists of numbers, got {type(coords).__name__}.")


def _geojson_positions(obj: dict) -> list[np.ndarray]:
    kind = obj.get("type")
    if kind == "FeatureCollection":
        out = []
        for f in obj.get("features") or []:
            out.extend(_geojson_positions(f))
        return out
    if kind == "Feature":
        geom = obj.get("geometry")
        if not geom:
            raise RegionError("This GeoJSON Feature has no geometry: give it one, or pass a bbox tuple.")
        return _geojson_positions(geom)
    if kind == "GeometryCollection":
        out = []
        for g in obj.get("geometries") or []:
            out.extend(_geojson_positions(g))
        return out
    if kind in _GEOMETRY_TYPES:
        return _positions(obj.get("coordinates"))
    raise RegionError(f"Unknown GeoJSON type {kind!r}: a region is {_ACCEPTED}.")


def _split_at_antimeridian(parts: list[np.ndarray]) -> tuple[float, float] | None:
    """(west, east past 180) of a GeoJSON region cut in parts at 180°, else None.

    RFC 7946 (section 3.1.9) asks for geometries that cross the antimeridian to be split
    there, e.g. a MultiPolygon of 177..180 and -180..-175. Its plain bounds would be the
    whole world; it is read as 177..185 instead. Only parts that touch +180 and -180
    separately make a split: one ring spanning -180..180 is the whole world, as written.
    """
    spans = [(float(p[:, 0].min()), float(p[:, 0].max())) for p in parts]
    if any(lo <= -180 and hi >= 180 for lo, hi in spans):
        return None
    if not (any(hi >= 180 for _, hi in spans) and any(lo <= -180 for lo, _ in spans)):
        return None
    # The parts cover the circle but for gaps; the widest gap is the outside of the region.
    merged: list[list[float]] = []
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    gaps = [(merged[i + 1][0] - merged[i][1], i) for i in range(len(merged) - 1)]
    if not gaps:
        return None
    _, i = max(gaps)
    return merged[i + 1][0], merged[i][1] + 360.0


def region_bounds(region) -> tuple[float, float, float, float]:
    """(west, south, east, north) lon/lat of a bbox tuple or GeoJSON-like region, validated."""
    if hasattr(region, "__geo_interface__"):
        region = region.__geo_interface__
    if isinstance(region, dict):
        pts = _geojson_positions(region)
        if not pts:
            raise RegionError("This GeoJSON region has no coordinates: it is empty.")
        xy = np.concatenate(pts)
        if not np.isfinite(xy).all():
            raise RegionError("This GeoJSON region has non-finite (NaN/inf) coordinates.")
        w, e = _split_at_antimeridian(pts) or (float(xy[:, 0].min()), float(xy[:, 0].max()))
        bounds = (w, float(xy[:, 1].min()), e, float(xy[:, 1].max()))
        what = "GeoJSON region"
    elif isinstance(region, (list, tuple)) and len(region) == 4:
        try:
            bounds = tuple(float(v) for v in region)
        except (TypeError, ValueError):
            raise RegionError(f"Region {region!r} must be four numbers (west, south, east, north).") from None
        what = "Region"
        w, s, e, n = bounds
        if not all(math.isfinite(v) for v in bounds):
            raise RegionError(f"{what} {_fmt(bounds)} has non-finite values.")
        if w > e:
            raise RegionError(
                f"{what} {_fmt(bounds)} has west > east: the order is (west, south, east, north). "
                f"A region crossing the antimeridian (180°) goes east past 180: ({w:g}, {s:g}, {e + 360:g}, {n:g})."
            )
        if s > n:
            raise RegionError(
                f"{what} {_fmt(bounds)} has south > north: the order is (west, south, east, north)."
            )
    else:
        raise RegionError(f"Cannot use {region!r} as a region: a region is {_ACCEPTED}.")
    w, s, e, n = bounds
    # East may run past 180 (at most one turn): a region across the antimeridian, unwrapped.
    if not (-180 <= w <= 180 and -180 <= e <= w + 360 and -90 <= s <= 90 and -90 <= n <= 90):
        raise RegionError(
            f"{what} {_fmt(bounds)} is out of lon/lat range (longitude -180..180, latitude -90..90, "
            "east up to west + 360 across the antimeridian): regions are in degrees (EPSG:4326), "
            "in (west, south, east, north) order."
        )
    if w == e or s == n:
        raise RegionError(
            f"{what} {_fmt(bounds)} is empty (zero width or height): give an area, not a point or a line."
        )
    return bounds


# ---- bounds in other CRSs ---------------------------------------------------------------------
def lonlat_bounds(grid: Grid) -> tuple[float, float, float, float]:
    """(west, south, east, north) in lon/lat degrees of a grid's extent (edges densified).

    West < east always: across the antimeridian, east runs past 180 (e.g. 177..185).
    """
    if grid.crs == WGS84:
        return grid.bounds
    unwrapped = unwrapped_bounds(grid.bounds, grid.crs, WGS84)
    if unwrapped is not None:
        return unwrapped
    return tuple(float(v) for v in transform_bounds(grid.crs, WGS84, *grid.bounds, densify_pts=_DENSIFY))


def _to_crs(bounds, src: CRS, dst: CRS) -> tuple[float, float, float, float] | None:
    if src == dst:
        return tuple(bounds)
    unwrapped = unwrapped_bounds(bounds, src, dst)  # raises if dst is cut at 180° for good
    if unwrapped is not None:
        return unwrapped
    try:
        b = transform_bounds(src, dst, *bounds, densify_pts=_DENSIFY)
    except Exception:  # noqa: BLE001 - PROJ failures come as several exception types
        return None
    return tuple(float(v) for v in b) if all(math.isfinite(v) for v in b) else None


def _lonlat_to_crs(bounds, dst: CRS) -> tuple[float, float, float, float] | None:
    """Lon/lat bounds in `dst`; if they overflow it (poles in Web Mercator), clip to its area of use."""
    b = _to_crs(bounds, WGS84, dst)
    if b is not None:
        return b
    try:
        from pyproj import CRS as PyCRS

        area = PyCRS.from_wkt(dst.to_wkt()).area_of_use
    except Exception:  # noqa: BLE001
        area = None
    if area is None:
        return None
    w, s, e, n = bounds
    clipped = (max(w, area.west), max(s, area.south), min(e, area.east), min(n, area.north))
    if clipped[0] >= clipped[2] or clipped[1] >= clipped[3]:
        return None
    return _to_crs(clipped, WGS84, dst)


# ---- projections and grids --------------------------------------------------------------------
def resolve_projection(image: Image, proj=None) -> Projection:
    """`proj` as a Projection with a pixel lattice (None = the image's own).

    A projection without a scale (e.g. `Projection("EPSG:4326")`) gets the resolution GDAL
    would choose to warp the image into that CRS, anchored at the CRS origin.
    """
    if proj is None:
        return image.projection
    if isinstance(proj, Grid):
        return Projection.from_grid(proj)
    if not isinstance(proj, Projection):
        proj = Projection(proj)
    if proj.transform is not None:
        return proj
    g = image.grid
    if unwrapped_bounds(g.bounds, g.crs, proj.crs) is not None:
        # Across the antimeridian GDAL sizes pixels for the whole world: use the image's own.
        x, y = g.transform @ (g.width / 2, g.height / 2)
        res = crossing_resolution(g.transform, g.crs, proj.crs, x, y)
        if res is not None:
            return Projection(proj.crs, Affine(res, 0, 0, 0, -res, 0))
    try:
        t, _, _ = calculate_default_transform(g.crs, proj.crs, g.width, g.height, *g.bounds)
    except Exception as exc:  # noqa: BLE001
        raise ProjectionError(
            f"Cannot work out a pixel size for {proj!r} from the image: give one with .at_scale(metres) ({exc})."
        ) from None
    res = min(abs(t.a), abs(t.e))
    return Projection(proj.crs, Affine(res, 0, 0, 0, -res, 0))


def grid_for(image: Image, region=None, proj=None) -> Grid:
    """The grid on `proj`'s lattice covering `region` (None = the image's full extent).

    Raises RegionError for malformed/empty regions or regions that miss the image.
    """
    p = resolve_projection(image, proj)
    img_grid = image.grid
    if region is None:
        if p.crs == img_grid.crs:  # its corners: a rotated image is not its bounding box
            return snap_grid(p.transform, img_grid)
        bounds = _to_crs(img_grid.bounds, img_grid.crs, p.crs)
        if bounds is None:
            raise ProjectionError(
                f"The image's extent {_fmt(lonlat_bounds(img_grid))} (lon/lat) cannot be expressed in "
                f"{p!r}: pass a region inside that CRS's area of use."
            )
        return snap_bounds(p.crs, p.transform, bounds)

    lonlat = region_bounds(region)
    if img_grid.crs.is_geographic:
        lonlat = _copy_on_image(lonlat, img_grid.bounds)
    img_ll = lonlat_bounds(img_grid)
    in_img = _to_crs(lonlat, WGS84, img_grid.crs)
    ib = img_grid.bounds
    if in_img is not None:
        hits = in_img[0] < ib[2] and in_img[2] > ib[0] and in_img[1] < ib[3] and in_img[3] > ib[1]
    else:
        hits = (
            lonlat[0] < img_ll[2]
            and lonlat[2] > img_ll[0]
            and lonlat[1] < img_ll[3]
            and lonlat[3] > img_ll[1]
        )
    if not hits:
        # (lat, lon) order is the usual slip (it is how places are often written): say so.
        swapped = (lonlat[1], lonlat[0], lonlat[3], lonlat[2])
        flipped = (
            swapped[0] < img_ll[2]
            and swapped[2] > img_ll[0]
            and swapped[1] < img_ll[3]
            and swapped[3] > img_ll[1]
        )
        raise RegionError(
            f"Region {_fmt(lonlat)} (lon/lat) does not intersect the image, which covers "
            f"{_fmt(img_ll)} (lon/lat, west, south, east, north): pick a region inside the image."
            + (
                f" With latitude and longitude swapped it would: a region is (west, south, east, north), "
                f"longitude first, here {_fmt(swapped)}."
                if flipped
                else ""
            )
        )
    bounds = _lonlat_to_crs(lonlat, p.crs)
    if bounds is None:
        raise RegionError(f"Region {_fmt(lonlat)} (lon/lat) cannot be expressed in {p!r}.")
    return snap_bounds(p.crs, p.transform, bounds)


def _copy_on_image(lonlat, image_bounds) -> tuple[float, float, float, float]:
    """`lonlat` moved by whole turns onto a lon/lat image stored east of 180° or west of -180°
    (e.g. a 0..360° grid): a region at -101..-99° reads its 259..261° pixels."""
    w, s, e, n = lonlat
    for k in (0.0, 360.0, -360.0):
        if w + k < image_bounds[2] and e + k > image_bounds[0]:
            return (w + k, s, e + k, n)
    return tuple(lonlat)


def point_grid(image: Image, lon: float, lat: float, proj=None) -> Grid:
    """The 1x1 grid of the `proj` pixel (default: the image's) containing (lon, lat)."""
    try:
        lon, lat = float(lon), float(lat)
    except (TypeError, ValueError):
        raise RegionError(f"A point needs numeric lon/lat, got ({lon!r}, {lat!r}).") from None
    if not (math.isfinite(lon) and -90 <= lat <= 90):
        raise RegionError(f"Point ({lon}, {lat}) is out of range: latitude -90..90, a finite longitude.")
    p = resolve_projection(image, proj)
    if p.crs.is_geographic:  # the same place on the image's side of the antimeridian (a map
        west = image.bounds[0]  # click in another world copy, or 181 for an unwrapped scene)
        lon = west + (lon - west) % 360.0
    xs, ys = transform_points(WGS84, p.crs, [lon], [lat])
    if not (math.isfinite(xs[0]) and math.isfinite(ys[0])):
        raise RegionError(f"Point ({lon}, {lat}) cannot be expressed in {p!r}.")
    col, row = ~p.transform @ (xs[0], ys[0])
    return Grid(p.crs, p.transform @ Affine.translation(math.floor(col), math.floor(row)), 1, 1)


def point_in_image(image: Image, lon: float, lat: float) -> bool:
    """Whether (lon, lat) falls on a pixel of the image's own grid (masked or not)."""
    g, own = point_grid(image, lon, lat), image.grid
    col, row = ~own.transform @ (g.transform.c, g.transform.f)
    return 0 <= round(col) < own.width and 0 <= round(row) < own.height

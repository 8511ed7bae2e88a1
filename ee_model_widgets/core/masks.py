"""Earth Engine's mask operations: `update_mask`, `self_mask`, `unmask`, `clip`.

A mask only grows (`update_mask`, `self_mask`, `clip`) except through `unmask`, which fills
masked pixels and, like Earth Engine's default `sameFootprint=True`, leaves pixels outside
the image's extent masked. Footprints and clip regions are tested on pixel centres with
GDAL's rasterizer, in the grid being read, so the result does not depend on the window.
"""

from __future__ import annotations

import math

import numpy as np

from .derived import DerivedImage
from .grid import Grid
from .image import Image
from .ops import as_image, broadcast_bands, operand


def update_mask(image: Image, mask) -> Image:
    """Mask pixels where `mask` is zero or masked (EE's updateMask; masks only grow)."""
    image, mask = as_image(image, "update_mask"), operand(mask, "update_mask")
    pick = broadcast_bands(image, mask, "update_mask")
    parents = [image] + ([mask] if isinstance(mask, Image) else [])
    const = None if isinstance(mask, Image) else mask

    def kernel(values, masks, _g):
        if const is not None:
            return values[0], masks[0] | (const == 0)
        return values[0], masks[0] | masks[1] | (values[1] == 0)

    outputs = {
        n: ([(0, n)] + ([(1, pick[k])] if const is None else []), kernel)
        for k, n in enumerate(image.band_names)
    }
    return DerivedImage(
        "update_mask",
        parents,
        outputs,
        [const],
        image.categorical_bands,
        finite=True,
        keeps_masks="every",
        zero_masked=const is not None and const != 0,  # then the mask is the image's own
    )


def self_mask(image: Image) -> Image:
    """Mask pixels whose value is zero (EE's selfMask)."""
    image = as_image(image, "self_mask")
    outputs = {n: ([(0, n)], lambda v, m, _g: (v[0], m[0] | (v[0] == 0))) for n in image.band_names}
    # The pixels it masks hold 0 already: a read of it needs no zeroing of masked pixels.
    return DerivedImage(
        "self_mask",
        [image],
        outputs,
        (),
        image.categorical_bands,
        finite=True,
        keeps_masks="every",
        zero_masked=True,
    )


def unmask(image: Image, value=0.0, same_footprint: bool = True) -> Image:
    """Masked pixels take `value` (a number or an image's pixels); EE's unmask.

    With `same_footprint` (EE's default) pixels outside the image's extent stay masked;
    False extends the result to the union of both extents.
    """
    image, value = as_image(image, "unmask"), operand(value, "unmask")
    pick = broadcast_bands(image, value, "unmask")
    parents = [image] + ([value] if isinstance(value, Image) else [])
    const = None if isinstance(value, Image) else value
    footprint = image.grid if same_footprint else None

    def kernel(values, masks, grid):
        if const is not None:
            v, vm = np.float32(const), False
        else:
            v, vm = values[1], masks[1]
        out = np.where(masks[0], v, values[0])
        m = masks[0] & vm
        if footprint is not None:
            m = m | ~grid_footprint(footprint, grid)
        return out, m

    outputs = {
        n: ([(0, n)] + ([(1, pick[k])] if const is None else []), kernel)
        for k, n in enumerate(image.band_names)
    }
    return DerivedImage(
        "unmask", parents, outputs, [const, bool(same_footprint)], image.categorical_bands, finite=True
    )


# ---- footprints and clipping ----------------------------------------------------------------------
def grid_footprint(extent: Grid, grid: Grid) -> np.ndarray:
    """Pixels of `grid` whose centre lies inside `extent` (an image's full grid)."""
    from rasterio.crs import CRS

    poly = _densified(extent.bounds) if extent.transform.b == 0 == extent.transform.d else None
    if poly is None:  # rotated grid: its four corners
        corners = [
            extent.transform @ xy
            for xy in ((0, 0), (extent.width, 0), (extent.width, extent.height), (0, extent.height))
        ]
        poly = {"type": "Polygon", "coordinates": [[list(c) for c in corners] + [list(corners[0])]]}
    return geometry_inside(poly, CRS.from_user_input(extent.crs), grid)


def _densified(bounds, steps: int = 20) -> dict:
    """A bbox as a polygon with points along its edges (curved once reprojected)."""
    w, s, e, n = bounds
    t = np.linspace(0.0, 1.0, steps + 1)[:-1]
    ring = (
        [(w + (e - w) * f, s) for f in t]
        + [(e, s + (n - s) * f) for f in t]
        + [(e - (e - w) * f, n) for f in t]
        + [(w, n - (n - s) * f) for f in t]
    )
    ring.append(ring[0])
    return {"type": "Polygon", "coordinates": [[list(p) for p in ring]]}


def geometry_inside(geometry: dict, crs, grid: Grid) -> np.ndarray:
    """Boolean (rows, cols): pixel centres of `grid` inside `geometry` (given in `crs`)."""
    from rasterio.features import geometry_mask
    from rasterio.warp import transform_geom

    geom = geometry if grid.crs == crs else transform_geom(crs, grid.crs, geometry)
    try:
        return geometry_mask([geom], out_shape=grid.shape, transform=grid.transform, invert=True)
    except ValueError:  # e.g. a geometry that vanished once reprojected
        return np.zeros(grid.shape, bool)


def _region_geometry(region) -> dict:
    """A lon/lat GeoJSON geometry (Polygon/MultiPolygon/...) of a bbox or GeoJSON-like region."""
    from .region import region_bounds

    region_bounds(region)  # validates, with our error messages
    if hasattr(region, "__geo_interface__"):
        region = region.__geo_interface__
    if isinstance(region, dict):
        kind = region.get("type")
        if kind == "Feature":
            return _region_geometry(region["geometry"])
        if kind == "FeatureCollection":
            geoms = [_region_geometry(f) for f in region.get("features") or []]
            return {"type": "GeometryCollection", "geometries": geoms}
        return _densify_geometry(region)
    return _densified(tuple(float(v) for v in region))


def _densify_geometry(geom: dict, max_step: float = 0.05) -> dict:
    """Split lon/lat polygon edges longer than `max_step` degrees so they bend when reprojected."""

    def ring(points):
        out = []
        for p, q in zip(points[:-1], points[1:]):
            n = max(1, math.ceil(max(abs(q[0] - p[0]), abs(q[1] - p[1])) / max_step))
            n = min(n, 64)
            out.extend([p[0] + (q[0] - p[0]) * f, p[1] + (q[1] - p[1]) * f] for f in np.arange(n) / n)
        out.append(list(points[-1][:2]))
        return out

    kind = geom.get("type")
    if kind == "Polygon":
        return {"type": kind, "coordinates": [ring(r) for r in geom["coordinates"]]}
    if kind == "MultiPolygon":
        return {"type": kind, "coordinates": [[ring(r) for r in poly] for poly in geom["coordinates"]]}
    if kind == "GeometryCollection":
        return {"type": kind, "geometries": [_densify_geometry(g) for g in geom.get("geometries") or []]}
    return geom


def clip(image: Image, region) -> Image:
    """Mask pixels whose centre lies outside `region` (EE's clip); the extent shrinks to it."""
    from rasterio.crs import CRS

    from .region import grid_for

    image = as_image(image, "clip")
    geom = _region_geometry(region)
    wgs84 = CRS.from_epsg(4326)
    cut = grid_for(image, region)
    base = image.grid
    # The region's box on the image's lattice, intersected with the image's extent.
    c0, r0 = (round(v) for v in ~base.transform @ (cut.transform.c, cut.transform.f))
    c1, r1 = min(c0 + cut.width, base.width), min(r0 + cut.height, base.height)
    c0, r0 = max(c0, 0), max(r0, 0)
    grid = base.window(c0, r0, max(c1 - c0, 1), max(r1 - r0, 1))

    def kernel(values, masks, g):
        return values[0], masks[0] | ~geometry_inside(geom, wgs84, g)

    outputs = {n: ([(0, n)], kernel) for n in image.band_names}
    return DerivedImage(
        "clip", [image], outputs, geom, image.categorical_bands, grid=grid, finite=True, keeps_masks="every"
    )

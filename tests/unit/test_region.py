"""Regions -> grids: bbox tuples, GeoJSON, outward snapping, and the errors users hit."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from rasterio.warp import transform_bounds

from ee_model_widgets import Image, Projection
from ee_model_widgets.core.grid import Grid
from ee_model_widgets.core.region import grid_for, lonlat_bounds, region_bounds
from ee_model_widgets.errors import RegionError

T = Affine(10, 0, 500000, 0, -10, 7000000)


@pytest.fixture
def img():
    # 300 x 200 px at 10 m in UTM 19S: a 3 km x 2 km scene near (-69, -27.13).
    return Image.from_array(np.zeros((1, 200, 300), np.float32), transform=T, crs="EPSG:32719")


def _inner_bbox(img, shrink=0.25):
    w, s, e, n = img.bounds
    dx, dy = (e - w) * shrink, (n - s) * shrink
    return (w + dx, s + dy, e - dx, n - dy)


def test_no_region_is_the_image_grid(img):
    assert grid_for(img) == img.grid


def test_bbox_grid_is_on_the_image_lattice_and_covers_the_bbox_minimally(img):
    bbox = _inner_bbox(img)
    g = grid_for(img, bbox)
    assert g.crs == img.grid.crs
    col, row = ~T @ (g.transform.c, g.transform.f)
    assert col == pytest.approx(round(col)) and row == pytest.approx(round(row))
    need = transform_bounds("EPSG:4326", "EPSG:32719", *bbox, densify_pts=21)
    have = g.bounds
    assert have[0] <= need[0] and have[1] <= need[1] and have[2] >= need[2] and have[3] >= need[3]
    # one pixel less on any side would not cover it
    assert have[0] + 10 > need[0] and have[2] - 10 < need[2]
    assert have[1] + 10 > need[1] and have[3] - 10 < need[3]


def test_geojson_polygon_feature_collection_and_geo_interface_agree_with_bbox(img):
    w, s, e, n = _inner_bbox(img)
    poly = {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}
    expected = grid_for(img, (w, s, e, n))
    assert grid_for(img, poly) == expected
    feature = {"type": "Feature", "properties": {}, "geometry": poly}
    assert grid_for(img, feature) == expected
    assert grid_for(img, {"type": "FeatureCollection", "features": [feature]}) == expected

    class Shape:
        __geo_interface__ = poly

    assert grid_for(img, Shape()) == expected


def test_multipolygon_bounds_span_all_parts():
    mp = {
        "type": "MultiPolygon",
        "coordinates": [
            [[[0, 0], [1, 0], [1, 1], [0, 0]]],
            [[[5, -2], [6, -2], [6, 3], [5, -2]]],
        ],
    }
    assert region_bounds(mp) == (0, -2, 6, 3)


def test_region_in_another_projection_is_snapped_to_that_lattice(img):
    proj = Projection("EPSG:3857").at_scale(30)
    g = grid_for(img, _inner_bbox(img), proj)
    assert g.crs.to_epsg() == 3857
    assert g.transform.a == pytest.approx(30) and g.transform.c % 30 == pytest.approx(0, abs=1e-6)


def test_no_region_in_another_projection_covers_the_whole_image(img):
    g = grid_for(img, None, Projection("EPSG:4326").at_scale(10))
    have = lonlat_bounds(g)
    w, s, e, n = img.bounds
    assert have[0] <= w and have[1] <= s and have[2] >= e and have[3] >= n


def test_projection_without_scale_gets_a_gdal_suggested_resolution(img):
    g = grid_for(img, None, Projection("EPSG:4326"))
    assert g.crs.to_epsg() == 4326
    # ~10 m in degrees: the resolution GDAL picks for warping the 10 m image
    assert 5e-5 < g.res[0] < 2e-4


def test_lonlat_bounds_of_a_utm_grid_is_close_to_the_utm_origin():
    g = Grid("EPSG:32719", T, 300, 200)
    w, s, e, n = lonlat_bounds(g)
    assert w == pytest.approx(-69.0, abs=1e-6)  # x = 500000 is the zone's central meridian
    assert -27.2 < s < n < -27.1 and e > w


def test_region_outside_image_names_both_extents(img):
    with pytest.raises(RegionError) as exc:
        grid_for(img, (10, 10, 11, 11))
    msg = str(exc.value)
    assert "(10, 10, 11, 11)" in msg and "does not intersect" in msg
    assert "-69" in msg and "-27.1" in msg  # the image's own lon/lat extent


def test_a_region_in_lat_lon_order_is_named_as_swapped(img):
    w, s, e, n = _inner_bbox(img)
    with pytest.raises(RegionError) as exc:
        grid_for(img, (s, w, n, e))  # how places are often written: latitude first
    msg = str(exc.value)
    assert "does not intersect" in msg and "With latitude and longitude swapped it would" in msg
    assert "(west, south, east, north), longitude first, here (-68.99" in msg
    with pytest.raises(RegionError) as exc:  # a region that is simply elsewhere gets no such hint
        grid_for(img, (10, 10, 11, 11))
    assert "swapped" not in str(exc.value)


@pytest.mark.parametrize(
    "region, words",
    [
        ((11, 10, 10, 11), "west > east"),
        ((10, 11, 11, 10), "south > north"),
        ((10, 10, 10, 11), "empty"),
        ((10, 10, 400, 11), "out of lon/lat range"),  # east past 180: at most one turn
        ((200, 10, 210, 11), "out of lon/lat range"),
        ((10, -95, 11, 11), "out of lon/lat range"),
        ((10, float("nan"), 11, 11), "non-finite"),
        ({"type": "Point", "coordinates": [10, 10]}, "empty"),
        ({"type": "Polygon", "coordinates": []}, "no coordinates"),
        ({"type": "Circle", "coordinates": [0, 0]}, "Unknown GeoJSON type"),
        ({"type": "Feature", "geometry": None}, "no geometry"),
        ("somewhere", "Cannot use"),
        ((1, 2, 3), "Cannot use"),
    ],
)
def test_bad_regions_raise_region_error(img, region, words):
    with pytest.raises(RegionError, match=words):
        grid_for(img, region)

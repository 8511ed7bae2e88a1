"""A scene across the antimeridian: right pixels on both sides of 180°, or a clear error.

The scene is a UTM zone 60S (EPSG:32760) raster spanning 177°E..175°W, 1 km pixels, whose
value is its column number // 4. The reference for any output pixel is worked out by hand:
its centre's lon/lat, taken into UTM with pyproj (not through our read path), gives the
scene column, hence the value. Reads use nearest resampling (a categorical band), so the
value is exactly that of the source pixel under the centre; pixels whose centre lies within
1/100 px of a value or image edge are left out (either neighbour would be right).
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image as PILImage
from pyproj import Transformer

import ee_model_widgets as emw
from ee_model_widgets.core.grid import MERCATOR_HALF_WORLD
from ee_model_widgets.core.region import region_bounds
from ee_model_widgets.errors import ProjectionError, RegionError
from ee_model_widgets.widgets.headless import HeadlessView

TO_UTM = Transformer.from_crs("EPSG:4326", "EPSG:32760", always_xy=True)
X0, Y0 = TO_UTM.transform(177.0, -15.0)  # the scene's top-left corner
RES = 1000.0
W, H = 844, 461  # reaches 185° (= 175°W) at 19°S
LATTICE = Affine(0.01, 0, 0, 0, -0.01, 0)  # a 0.01° EPSG:4326 lattice


@pytest.fixture(scope="module")
def scene():
    values = (np.arange(W) // 4).astype("float32")[None, None, :].repeat(H, axis=1)
    return emw.Image.from_array(
        values,
        transform=Affine(RES, 0, X0, 0, -RES, Y0),
        crs="EPSG:32760",
        band_names=["v"],
        categorical=True,
    )


def reference(lon, lat):
    """(value, certain) at lon/lat centres, by hand; value NaN off the scene."""
    lon, lat = np.broadcast_arrays(np.asarray(lon, float), np.asarray(lat, float))
    e, n = TO_UTM.transform(lon, lat)
    col, row = (e - X0) / RES, (Y0 - n) / RES
    inside = (col >= 0) & (col < W) & (row >= 0) & (row < H)
    value = np.where(inside, np.floor(col) // 4, np.nan)
    # Centres next to an edge of the scene or of a run of 4 equal columns: either side is fine.
    certain = (
        (np.abs(col / 4 - np.round(col / 4)) * 4 > 0.01)
        & (np.abs(col - W) > 0.01)
        & (np.abs(row - np.round(row)) > 0.01)
    )
    return value, certain


def check(values, lon, lat, factor=1.0):
    """`values` (masked 2-D) equal the hand reference at every certain centre; returns the
    number of valid pixels checked west and east of 180°."""
    ref, certain = reference(lon, lat)
    ref = ref * factor
    got = np.ma.filled(np.ma.asarray(values, dtype=float), np.nan)
    on = certain & np.isfinite(ref)
    off = certain & ~np.isfinite(ref)
    assert np.array_equal(got[on], ref[on])  # right value where the scene is
    assert np.isnan(got[off]).all()  # no data where it is not
    lon = np.broadcast_to(lon, got.shape)
    return int((on & (lon < 180)).sum()), int((on & (lon > 180)).sum())


def centres(transform, width, height):
    lon = transform.c + (np.arange(width) + 0.5) * transform.a
    lat = transform.f + (np.arange(height) + 0.5) * transform.e
    return lon[None, :], lat[:, None]


def test_bounds_run_east_past_180(scene):
    w, s, e, n = scene.bounds
    assert w == pytest.approx(177.0) and n == pytest.approx(-15.0, abs=0.2)
    assert e == pytest.approx(185.0, abs=0.01)  # 175°W, unwrapped: west < east
    assert s == pytest.approx(-19.0, abs=0.2)


def test_to_numpy_in_lonlat_has_the_pixels_on_both_sides(scene):
    # 178°E .. 178°W, written with east past 180 (the region form for crossing areas).
    arr = scene.to_numpy(region=(178, -18, 182, -16), proj=emw.Projection("EPSG:4326", LATTICE))
    assert arr.shape == (1, 200, 400)
    lon, lat = centres(Affine(0.01, 0, 178, 0, -0.01, -16), 400, 200)
    west, east = check(arr[0], lon, lat)
    assert west > 35_000 and east > 35_000  # of 40,000 each


def test_to_numpy_full_extent_in_lonlat_at_the_suggested_scale(scene):
    # No region, no scale: the whole scene, at about its own 1 km (not the whole world's width).
    arr = scene.to_numpy(proj=emw.Projection("EPSG:4326"))
    _, rows, cols = arr.shape
    assert 800 <= cols <= 1000 and 400 <= rows <= 560
    assert arr.count() > 0.9 * W * H


def test_export_in_lonlat_writes_both_sides(scene, tmp_path):
    path = scene.export(tmp_path / "fiji.tif", proj=emw.Projection("EPSG:4326", LATTICE), progress=False)
    with rasterio.open(path) as ds:  # read back with rasterio alone
        t, data = ds.transform, ds.read(1, masked=True)
        assert ds.crs.to_epsg() == 4326
    assert t.c == pytest.approx(177.0) and t.c + ds.width * t.a >= 184.99
    lon, lat = centres(t, data.shape[1], data.shape[0])
    west, east = check(data, lon, lat)
    assert west > 100_000 and east > 150_000  # 3° and 5° of the 8° scene


def test_a_model_predicts_on_both_sides(scene):
    model = emw.Model.from_callable(
        lambda inputs: inputs["array"] * 2, input_tile_size=[64, 64], output_bands={"p": {"type": "float"}}
    )
    pred = model.predict_image(scene, cache=None)
    arr = pred.to_numpy(region=(179, -17.5, 181, -16.5), proj=emw.Projection("EPSG:4326", LATTICE))
    lon, lat = centres(Affine(0.01, 0, 179, 0, -0.01, -16.5), 200, 100)
    west, east = check(arr[0], lon, lat, factor=2.0)
    assert west > 9_000 and east > 9_000  # of 10,000 each


def mercator_centres(z, x, y):
    """Lon/lat of the pixel centres of tile z/x/y, by the spherical Mercator formulas."""
    span = 2 * MERCATOR_HALF_WORLD / 2**z
    px = -MERCATOR_HALF_WORLD + x * span + (np.arange(256) + 0.5) * span / 256
    py = MERCATOR_HALF_WORLD - y * span - (np.arange(256) + 0.5) * span / 256
    lon = np.degrees(px / 6378137.0)[None, :]
    lat = np.degrees(np.arctan(np.sinh(py / 6378137.0)))[:, None]
    return lon, lat


def identity_model():
    return emw.Model.from_callable(
        lambda inputs: inputs["array"], input_tile_size=[64, 64], output_bands={"p": {"type": "float"}}
    )


@pytest.mark.parametrize("predicted", [False, True], ids=["scene", "prediction"])
def test_the_map_layer_draws_both_sides_of_180(scene, predicted):
    image = identity_model().predict_image(scene, cache=None) if predicted else scene
    layer = emw.PredictionLayer(image, vis_params={"min": 0, "max": 255})  # grey level = value
    try:
        view = HeadlessView(layer)
        s, n = image.bounds[1], image.bounds[3]
        # Leaflet compares bounds with tiles wrapped into -180..180: only latitudes can be
        # limited, and tiles repeat per world copy so the view across 180° is covered.
        assert layer.bounds == [[s, -180.0], [n, 180.0]]
        assert layer.no_wrap is False
        z = 8
        ty = int((1 - math.asinh(math.tan(math.radians(-17.0))) / math.pi) / 2 * 2**z)
        east_edge, west_edge = (z, 2**z - 1, ty), (z, 0, ty)  # 178.6°E..180°, 180°..178.6°W
        counts = []
        for tile, reply in zip([east_edge, west_edge], view.fetch([east_edge, west_edge], timeout=60)):
            assert reply.status == "ok"
            rgba = np.asarray(PILImage.open(io.BytesIO(reply.png)).convert("RGBA"))
            lon, lat = mercator_centres(*tile)
            values = np.ma.masked_array(rgba[..., 0].astype(float), mask=rgba[..., 3] == 0)
            lon = np.where(lon < 0, lon + 360, lon)  # the far side of 180°, unwrapped for `check`
            counts.append(check(values, lon, lat))
        assert counts[0][0] > 10_000 and counts[1][1] > 10_000  # both tiles full of the scene
    finally:
        layer.close()


def test_a_crs_cut_at_180_that_cannot_be_unwrapped_says_so(scene, tmp_path):
    with pytest.raises(ProjectionError, match="antimeridian"):
        scene.to_numpy(proj=emw.Projection("EPSG:8857").at_scale(1000))  # Equal Earth
    with pytest.raises(ProjectionError, match="antimeridian"):
        scene.export(tmp_path / "x.tif", proj=emw.Projection("EPSG:8857").at_scale(1000), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_geojson_region_split_at_180_reads_both_sides(scene):
    # RFC 7946 splits a crossing polygon at the antimeridian: 178..180 and -180..-178.
    split = {
        "type": "MultiPolygon",
        "coordinates": [
            [[[178, -18], [180, -18], [180, -16], [178, -16], [178, -18]]],
            [[[-180, -18], [-178, -18], [-178, -16], [-180, -16], [-180, -18]]],
        ],
    }
    arr = scene.to_numpy(region=split, proj=emw.Projection("EPSG:4326", LATTICE))
    assert arr.shape == (1, 200, 400)  # 4° wide, not the whole world
    lon, lat = centres(Affine(0.01, 0, 178, 0, -0.01, -16), 400, 200)
    west, east = check(arr[0], lon, lat)
    assert west > 35_000 and east > 35_000


def test_a_ring_spanning_the_whole_world_stays_the_whole_world():
    world = {
        "type": "Polygon",
        "coordinates": [[[-180, -60], [180, -60], [180, 60], [-180, 60], [-180, -60]]],
    }
    assert region_bounds(world) == (-180, -60, 180, 60)


def test_a_region_written_west_greater_than_east_explains_the_crossing_form(scene):
    with pytest.raises(RegionError, match=r"antimeridian.*\(178, -18, 182, -16\)"):
        scene.to_numpy(region=(178, -18, -178, -16))


def test_a_scene_around_the_pole_is_not_taken_for_a_crossing():
    # Its edge goes once round the world: every longitude, and the pole, are inside it.
    around = emw.Image.from_array(
        np.ones((1, 100, 100), "float32"),
        transform=Affine(10000, 0, -500000, 0, -10000, 500000),
        crs="EPSG:3031",
    )
    w, s, e, n = around.bounds
    assert (w, s, e) == (-180.0, -90.0, 180.0) and n == pytest.approx(-83.5, abs=0.01)
    # Off the pole but across 180°: unwrapped like the UTM scene.
    across = emw.Image.from_array(
        np.ones((1, 100, 100), "float32"),
        transform=Affine(10000, 0, -500000, 0, -10000, -1000000),
        crs="EPSG:3031",
    )
    w, _, e, _ = across.bounds
    assert w == pytest.approx(153.43, abs=0.01) and e == pytest.approx(206.57, abs=0.01)


def test_the_inspector_samples_either_name_of_a_point_across_180(scene):
    # A click east of 180° on a map centred on the scene reports lon 181.5 (an unwrapped world
    # copy), the same point as -178.5; and a click one world copy further west still works.
    value, _ = reference(181.5, -17.0)
    assert np.isfinite(value)
    for lon in (181.5, -178.5, -538.5):
        assert scene.sample(lon, -17.0) == {"v": float(value)}
    # In lon/lat, the unwrapped scene is found from either name as well.
    for lon in (179.5, 181.5, -178.5):
        assert scene.sample(lon, -17.0, proj=emw.Projection("EPSG:4326", LATTICE))["v"] is not None
    with pytest.raises(RegionError, match="latitude -90..90"):
        scene.sample(float("inf"), -17.0)

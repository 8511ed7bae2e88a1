"""Labels: geometries in, GeoJSON round trip, the pixels they cover, and errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from affine import Affine
from rasterio.warp import transform as warp_transform

import ee_model_widgets as emw
from ee_model_widgets.errors import InputError, RegionError

UTM = "EPSG:32719"
T = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 7000000.0)


def lonlat(col: float, row: float) -> tuple[float, float]:
    """lon/lat of a (fractional) pixel position of the test lattice, computed with rasterio."""
    x, y = T @ (col, row)
    lon, lat = warp_transform(UTM, "EPSG:4326", [x], [y])
    return lon[0], lat[0]


@pytest.fixture
def image():
    # band value = 1000 * row + col, so a sampled value names its pixel
    rows, cols = np.mgrid[0:40, 0:50]
    arr = np.stack([1000.0 * rows + cols, -(1000.0 * rows + cols)]).astype(np.float32)
    return emw.Image.from_array(arr, transform=T, crs=UTM, band_names=["a", "b"])


def test_classes_colors_and_counts():
    labels = emw.Labels(["water", "forest"], colors=["blue", "#00ff00"])
    assert labels.classes == ["water", "forest"]
    assert labels.colors == ["0000ff", "00ff00"]
    labels.add((-69.0, -27.0), "water")
    labels.add((-69.0, -27.0, -68.99, -26.99), "forest")
    labels.add({"type": "Point", "coordinates": [-69.0, -27.0]}, "forest")
    assert len(labels) == 3
    assert labels.counts() == {"water": 1, "forest": 2}
    removed = labels.remove()  # undo
    assert removed["geometry"]["type"] == "Point" and labels.counts() == {"water": 1, "forest": 1}
    labels.clear("water")
    assert labels.counts() == {"water": 0, "forest": 1}
    labels.add_class("bare")
    assert labels.colors[2] not in labels.colors[:2]  # a fresh palette colour


def test_geojson_round_trip_is_exact(tmp_path):
    labels = emw.Labels(["water", "forest", "empty"], colors=["1f77b4", "2ca02c", "ff0000"])
    labels.add((-69.0, -27.0), "water", note="first")
    labels.add((-69.0, -27.0, -68.99, -26.99), "forest")
    poly = {
        "type": "Feature",
        "properties": {"author": "me"},
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[-69, -27], [-68.9, -27], [-68.9, -26.9], [-69, -27]]],
        },
    }
    labels.add(poly, "forest")
    gj = labels.to_geojson()
    assert gj["type"] == "FeatureCollection"
    assert [f["properties"]["class"] for f in gj["features"]] == ["water", "forest", "forest"]
    assert gj["features"][0]["properties"]["note"] == "first"
    assert gj["features"][2]["properties"]["author"] == "me"
    # Through a dict, JSON text, and a file: identical every time.
    assert emw.Labels.from_geojson(gj).to_geojson() == gj
    assert emw.Labels.from_geojson(json.dumps(gj)).to_geojson() == gj
    path = labels.save(tmp_path / "labels.geojson")
    assert emw.Labels.from_geojson(path).to_geojson() == gj
    assert json.loads((tmp_path / "labels.geojson").read_text()) == gj
    # The empty class survives too.
    assert emw.Labels.from_geojson(path).classes == ["water", "forest", "empty"]


def test_numpy_coordinates_are_saved_as_plain_numbers(tmp_path):
    """Coordinates straight from numpy arrays (float32, int64) are stored as Python numbers,
    so the labels still save: JSON cannot write numpy scalars."""
    labels = emw.Labels(["a"])
    labels.add((np.float32(-69.0), np.float32(-27.0)), "a")
    labels.add(np.array([-69.0, -27.0, -68.5, -26.5], np.float32), "a")
    labels.add({"type": "Point", "coordinates": [np.int64(-69), np.int64(-27)]}, "a")
    path = labels.save(tmp_path / "labels.geojson")
    back = emw.Labels.from_geojson(path).to_geojson()
    assert back == labels.to_geojson()
    assert back["features"][0]["geometry"]["coordinates"] == [-69.0, -27.0]
    assert back["features"][2]["geometry"]["coordinates"] == [-69, -27]


def test_plain_feature_collection_gets_classes_in_order_of_appearance():
    fc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"class": "b"},
                "geometry": {"type": "Point", "coordinates": [1, 2]},
            },
            {
                "type": "Feature",
                "properties": {"class": "a"},
                "geometry": {"type": "Point", "coordinates": [3, 4]},
            },
        ],
    }
    labels = emw.Labels.from_geojson(fc)
    assert labels.classes == ["b", "a"] and labels.counts() == {"b": 1, "a": 1}


@pytest.mark.parametrize(
    ("geometry", "message"),
    [
        ((200.0, 10.0), "not lon/lat"),
        ((10.0, "x"), "must be numbers"),
        ((1.0, 2.0, 0.0, 3.0), "west < east"),
        ({"type": "LineString", "coordinates": [[0, 0], [1, 1]]}, "cannot be a label"),
        ({"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}, "at least 3"),
        ((1.0, 2.0, 3.0), "a (lon, lat) point"),
    ],
)
def test_bad_geometries_get_clear_errors(geometry, message):
    labels = emw.Labels(["x"])
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        labels.add(geometry, "x")
    assert len(labels) == 0


def test_bad_classes_and_files(tmp_path):
    with pytest.raises(InputError, match="distinct"):
        emw.Labels(["a", "a"])
    with pytest.raises(InputError, match="one colour per class"):
        emw.Labels(["a", "b"], colors=["red"])
    with pytest.raises(InputError, match="Unknown colour"):
        emw.Labels(["a"], colors=["notacolour"])
    labels = emw.Labels(["a"])
    with pytest.raises(InputError, match="Unknown class 'b'"):
        labels.add((0, 0), "b")
    with pytest.raises(InputError, match="no labels to remove"):
        labels.remove()
    with pytest.raises(InputError, match="No such labels file"):
        emw.Labels.from_geojson(tmp_path / "missing.geojson")
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="Is it a GeoJSON file"):
        emw.Labels.from_geojson(bad)
    with pytest.raises(InputError, match="FeatureCollection"):
        emw.Labels.from_geojson({"type": "Feature"})
    no_class = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [0, 0]}}
        ],
    }
    with pytest.raises(InputError, match="no 'class' property"):
        emw.Labels.from_geojson(no_class, classes=["a"])
    # A class index written as a float (1.0) is an index; one out of range is named as such.
    point = {"type": "Point", "coordinates": [0, 0]}
    by_index = {
        "type": "FeatureCollection",
        "features": [{"type": "Feature", "properties": {"class": 1.0}, "geometry": point}],
    }
    assert emw.Labels.from_geojson(by_index, classes=["a", "b"]).to_geojson()["features"][0][
        "properties"
    ] == {"class": "b"}
    by_index["features"][0]["properties"]["class"] = 5
    with pytest.raises(
        InputError, match=r"has class 5: give a class name, or an index 0\.\.1 into the classes"
    ):
        emw.Labels.from_geojson(by_index, classes=["a", "b"])


def test_sample_points_and_polygons_give_the_pixels_under_them(image):
    labels = emw.Labels(["p", "box"])
    labels.add(lonlat(3.5, 2.5), "p")  # centre of pixel (col 3, row 2)
    labels.add(lonlat(10.2, 20.9), "p")  # inside pixel (col 10, row 20)
    # A box covering pixel centres of cols 30..32 and rows 5..6 (edges between centres).
    w, n = lonlat(30.1, 5.1)
    e, s = lonlat(32.9, 6.9)
    labels.add((w, s, e, n), "box")
    samples = labels.sample(image)
    got = sorted(zip(samples.rows.tolist(), samples.cols.tolist(), samples.y.tolist()))
    # Independent reference: the lon/lat box is slightly curved in UTM, so the pixels whose
    # centres it covers are those whose centres fall inside the box's corners, computed here.
    expected = [(2, 3, 0), (20, 10, 0)] + [(r, c, 1) for r in (5, 6) for c in (30, 31, 32)]
    assert got == sorted(expected)
    # Values are the pixels' own: band a = 1000 * row + col, b = -a.
    np.testing.assert_array_equal(samples.x[:, 0], 1000.0 * samples.rows + samples.cols)
    np.testing.assert_array_equal(samples.x[:, 1], -samples.x[:, 0])
    assert samples.counts() == {"p": 2, "box": 6}
    # Pixel centres back in lon/lat land inside those pixels.
    ll = samples.lonlat()
    for (lon, lat), r, c in zip(ll, samples.rows, samples.cols):
        ref = lonlat(c + 0.5, r + 0.5)
        assert abs(lon - ref[0]) < 1e-9 and abs(lat - ref[1]) < 1e-9


def test_last_label_wins_on_a_pixel_and_masked_pixels_are_dropped():
    rows, cols = np.mgrid[0:10, 0:10]
    data = np.ma.MaskedArray((rows * 10 + cols).astype(np.float32)[None], mask=(cols == 9)[None])
    img = emw.Image.from_array(data, transform=T, crs=UTM, band_names=["v"])
    labels = emw.Labels(["a", "b"])
    labels.add(lonlat(1.5, 1.5), "a")
    labels.add(lonlat(1.5, 1.5), "b")  # a correction on the same pixel
    labels.add(lonlat(9.5, 1.5), "a")  # masked pixel
    with pytest.warns(
        UserWarning, match=r"^Not used: 1 labelled pixel masked .*; 1 labelled pixel was sampled\.$"
    ):
        s = labels.sample(img)
    assert s.y.tolist() == [1] and s.x[:, 0].tolist() == [11.0]
    assert (s.labels_outside, s.masked_pixels) == (0, 1)


def test_patches_are_centred_and_zero_outside(image):
    labels = emw.Labels(["a"])
    labels.add(lonlat(0.5, 0.5), "a")  # the corner pixel: half the patch is outside
    labels.add(lonlat(20.5, 10.5), "a")
    s = labels.sample(image, patch_size=5)
    assert s.patches.shape == (2, 2, 5, 5)
    corner = s.patches[s.rows.tolist().index(0), 0]
    assert (
        corner[2, 2] == 0.0 and corner[3, 3] == 1001.0 and corner[:2].sum() == 0 and corner[:, :2].sum() == 0
    )
    inner = s.patches[s.rows.tolist().index(10), 0]
    expected = np.array([[1000.0 * r + c for c in range(18, 23)] for r in range(8, 13)])
    np.testing.assert_array_equal(inner, expected)


def test_sample_errors(image):
    labels = emw.Labels(["a"])
    with pytest.raises(InputError, match="no labels to sample"):
        labels.sample(image)
    labels.add((10.0, 10.0), "a")  # far from the image
    with pytest.raises(RegionError, match="None of the 1 labels"):
        labels.sample(image)


def test_points_given_as_lat_lon_get_a_hint(image):
    labels = emw.Labels(["a"])
    lon, lat = lonlat(3.5, 2.5)
    labels.add((lat, lon), "a")
    with pytest.raises(RegionError, match=r"read as \(lat, lon\)"):
        labels.sample(image)

"""export_samples writes Earth Engine's table export of neighborhoodToArray patches; dataset()
parses it (and image-patch exports) into what Keras trains on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
from affine import Affine
from rasterio.warp import transform as warp

import ee_model_widgets as emw
from ee_model_widgets.errors import InputError, RegionError, TFRecordError
from ee_model_widgets.tfrecord import dataset, export_image, export_samples

CRS = "EPSG:32719"
T = Affine(10, 0, 500000, 0, -10, 4700000)


@pytest.fixture(scope="module")
def image():
    rows, cols = np.mgrid[0:40, 0:50].astype(np.float32)
    arr = np.stack([rows * 100 + cols, -(rows * 100 + cols)])
    return emw.Image.from_array(arr, transform=T, crs=CRS, band_names=["b1", "b2"]), arr


def lonlat(col, row):
    """lon/lat of the centre of pixel (col, row)."""
    x, y = T @ (col + 0.5, row + 0.5)
    lon, lat = warp(CRS, "EPSG:4326", [x], [y])
    return lon[0], lat[0]


def point(col, row, **props):
    lon, lat = lonlat(col, row)
    return {"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]}, "properties": props}


def test_samples_parse_like_an_earth_engine_table_export(tmp_path, image):
    img, arr = image
    fc = {
        "type": "FeatureCollection",
        "features": [
            point(10, 5, cls=1, name="a"),
            point(30, 20, cls=0, name="b"),
            point(0, 39, cls=2, name="c"),
        ],
    }
    path = export_samples(img, fc, 5, path=tmp_path / "train.tfrecord.gz", default_value=-1)
    assert path == str(tmp_path / "train.tfrecord.gz")
    # As in Earth Engine's guide: FixedLenFeature([5, 5]) per band, [1] float per numeric property.
    spec = {
        "b1": tf.io.FixedLenFeature([5, 5], tf.float32),
        "b2": tf.io.FixedLenFeature([5, 5], tf.float32),
        "cls": tf.io.FixedLenFeature([1], tf.float32),
        "name": tf.io.FixedLenFeature([], tf.string),
    }
    parsed = [tf.io.parse_single_example(r, spec) for r in tf.data.TFRecordDataset(path, "GZIP")]
    assert len(parsed) == 3
    np.testing.assert_array_equal(parsed[0]["b1"].numpy(), arr[0, 3:8, 8:13])  # centred on (row 5, col 10)
    np.testing.assert_array_equal(parsed[1]["b2"].numpy(), arr[1, 18:23, 28:33])
    assert [p["cls"].numpy().tolist() for p in parsed] == [[1.0], [0.0], [2.0]]
    assert [p["name"].numpy() for p in parsed] == [b"a", b"b", b"c"]
    # Bottom-left corner: pixels outside the image get default_value.
    corner = parsed[2]["b1"].numpy()
    assert (corner[3:] == -1).all() and (corner[:, :2] == -1).all()
    np.testing.assert_array_equal(corner[:3, 2:], arr[0, 37:40, 0:3])


def test_even_patch_size_and_tuple_points_and_selected_properties(tmp_path, image):
    img, arr = image
    lon, lat = lonlat(20, 10)
    path = export_samples(
        img,
        [(lon, lat, {"label": 3, "skip": "x"})],
        (4, 2),
        properties=["label"],
        path=tmp_path / "s.tfrecord",
    )
    ex = next(iter(tf.data.TFRecordDataset(path)))
    feats = tf.train.Example.FromString(ex.numpy()).features.feature
    assert sorted(feats) == ["b1", "b2", "label"]
    # (width 4, height 2): the point's pixel sits at index (1, 2) = (h // 2, w // 2).
    np.testing.assert_array_equal(np.reshape(feats["b1"].float_list.value, (2, 4)), arr[0, 9:11, 18:22])


def test_dataset_feeds_keras_training(tmp_path, image):
    import keras

    img, _ = image
    rng = np.random.default_rng(0)
    pts = [
        point(int(c), int(r), label=float(c > 25))
        for c, r in zip(rng.integers(3, 47, 24), rng.integers(3, 37, 24))
    ]
    path = export_samples(
        img, {"type": "FeatureCollection", "features": pts}, 3, path=tmp_path / "t.tfrecord.gz"
    )
    ds = dataset(path, ["b1", "b2"], 3, label="label", batch_size=8)
    x, y = next(iter(ds))
    assert x.shape == (8, 3, 3, 2) and y.shape == (8, 1)
    np.testing.assert_array_equal(y.numpy()[:, 0], [p["properties"]["label"] for p in pts[:8]])

    inp = keras.Input((3, 3, 2))
    out = keras.layers.Dense(1, activation="sigmoid")(
        keras.layers.Flatten()(keras.layers.Rescaling(1e-3)(inp))
    )
    model = keras.Model(inp, out)
    model.compile("adam", "binary_crossentropy")
    history = model.fit(ds, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2 and all(math.isfinite(v) for v in history.history["loss"])


def test_dataset_on_an_image_export_with_a_label_band(tmp_path, image):
    img, arr = image
    files = export_image(img.select(["b1", "b2"]), tmp_path / "p", patch_dimensions=10, kernel_size=2)
    ds = dataset(files[:-1], ["b1"], 12, label="b2")
    x, y = next(iter(ds))
    assert x.shape == (12, 12, 1) and y.shape == (12, 12, 1)
    np.testing.assert_array_equal(x.numpy()[1:, 1:, 0], arr[0, :11, :11])
    np.testing.assert_array_equal(y.numpy()[1:, 1:, 0], arr[1, :11, :11])


def test_sample_and_dataset_errors(tmp_path, image):
    img, _ = image
    with pytest.raises(RegionError, match=r"1 point\(s\) lie outside the image, e\.g\. point 1"):
        export_samples(img, [lonlat(1, 1), (-60.0, -30.0)], 3, path=tmp_path / "x.tfrecord")
    with pytest.raises(InputError, match=r"Point 1 has properties \['b'\] but point 0 has \['a'\]"):
        export_samples(
            img, [(*lonlat(1, 1), {"a": 1}), (*lonlat(2, 2), {"b": 1})], 3, path=tmp_path / "x.tfrecord"
        )
    with pytest.raises(InputError, match=r"Properties \['b1'\] have the same names as bands"):
        export_samples(img, [(*lonlat(1, 1), {"b1": 1})], 3, path=tmp_path / "x.tfrecord")
    with pytest.raises(InputError, match="needs path="):
        export_samples(img, [lonlat(1, 1)], 3)
    with pytest.raises(InputError, match=r"Point 1, property 'v': it is None \(a missing value"):
        export_samples(
            img, [(*lonlat(1, 1), {"v": 1.0}), (*lonlat(2, 2), {"v": None})], 3, path=tmp_path / "n.tfrecord"
        )
    assert list(tmp_path.iterdir()) == []

    path = export_samples(img, [lonlat(5, 5)], 3, path=tmp_path / "ok.tfrecord.gz")
    with pytest.raises(TFRecordError, match=r"has no feature\(s\) \['nir'\]; it has \['b1', 'b2'\]"):
        dataset(path, ["b1", "nir"], 3)
    with pytest.raises(TFRecordError, match=r"band 'b1' has 9 values, not 4x4 = 16"):
        dataset(path, ["b1"], 4)

"""Our readers on files built by hand per Earth Engine's spec (tests/fixtures/tfrecord,
made by make_fixtures.py with plain TensorFlow protos, not with our writer)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from affine import Affine

from ee_model_widgets.errors import TFRecordError
from ee_model_widgets.tfrecord import Mixer, dataset, load_mixer, read_predictions

FIX = os.path.join(os.path.dirname(__file__), "..", "fixtures", "tfrecord")


def fx(*parts):
    return os.path.join(FIX, *parts)


def test_float_and_int64_predictions_in_two_gzip_shards():
    img = read_predictions(fx("float_int", "preds-*.tfrecord.gz"), fx("float_int", "preds-mixer.json"))
    assert img.band_names == ["label", "value"]
    assert img.grid.shape == (6, 12)
    assert img.grid.transform == Affine(10, 0, 300000, 0, -10, 5000000)
    assert img.grid.crs.to_epsg() == 32719
    rows, cols = np.mgrid[0:6, 0:12]
    out = img.to_numpy()
    assert not out.mask.any()
    np.testing.assert_array_equal(out.data[1], rows * 100 + cols + 0.5)
    np.testing.assert_array_equal(out.data[0], (rows + cols) % 3)
    assert "label" in img.categorical_bands and "value" not in img.categorical_bands


def test_shards_listed_out_of_order_are_put_in_shard_order():
    files = [fx("float_int", "preds-00001.tfrecord.gz"), fx("float_int", "preds-00000.tfrecord.gz")]
    with open(fx("float_int", "preds-mixer.json")) as f:
        mixer = json.load(f)  # a dict works as well as a path
    img = read_predictions(files, mixer, bands=["value"])
    rows, cols = np.mgrid[0:6, 0:12]
    np.testing.assert_array_equal(img.to_numpy().data[0], rows * 100 + cols + 0.5)


def test_uint8_bytes_with_kernel_margin_on_a_south_up_grid():
    files, mixer = fx("uint8_margin", "classes.TFRecord"), fx("uint8_margin", "classes-mixer.json")
    # 8x8 records for 4x4 patches: a kernel as large as the patch is only taken when given
    with pytest.raises(TFRecordError, match=r"64 values \(8x8 px if square\).*kernel_size=\[4, 4\]"):
        read_predictions(files, mixer)
    img = read_predictions(files, mixer, kernel_size=4)
    assert img.band_names == ["class"]
    # South-up in the mixer (yScale > 0): returned north-up, same ground positions.
    t = img.grid.transform
    assert (t.a, t.e, t.c) == (0.001, -0.001, -64.5)
    assert abs(t.f - (-31.2 + 8 * 0.001)) < 1e-12
    out = img.to_numpy().data[0]
    rows, cols = np.mgrid[0:8, 0:8]
    # Mosaic row r (counted along the mixer's affine, i.e. from the south) holds r * 10 + col;
    # the 255 margins are cropped away.
    np.testing.assert_array_equal(out, (7 - rows) * 10 + cols)
    # Same place on the ground: the pixel centred at mixer row 0 (southern edge) holds 0..7.
    south_row = img.sample(-64.5 + 0.0005, -31.2 + 0.0005)
    assert south_row == {"class": 0.0}


def test_real_earth_engine_mixer_parses():
    path = fx("ee_mixer", "myExportImageTask-mixer.json")
    assert os.path.getsize(path) == 266
    m = load_mixer(path)
    assert m == Mixer(
        "EPSG:4326",
        Affine(8.983152841195215e-5, 0.0, -111.10489198130018, 0.0, -8.983152841195215e-5, 33.66643139753254),
        256,
        256,
        5,
        15,
    )
    assert m.rows == 3 and m.grid.shape == (768, 1280)
    # Our serialisation carries the same keys and values.
    with open(path) as f:
        assert json.loads(m.to_json()) == json.load(f)


def test_dataset_reads_a_hand_built_table_export_with_float_bytes_and_string_features():
    path = fx("samples", "training.tfrecord.gz")
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in dataset(path, ["B2", "B8"], 3, label="landcover")])
    k = np.arange(9).reshape(3, 3)
    assert len(xs) == 5
    for i, (x, y) in enumerate(zip(xs, ys)):
        assert x.shape == (3, 3, 2) and x.dtype == np.float32
        np.testing.assert_array_equal(x[..., 0], 10 * i + k)
        np.testing.assert_array_equal(x[..., 1], i + k)  # uint8-as-bytes band
        np.testing.assert_array_equal(y, [i % 2])
    names = [y.numpy() for _, y in dataset(path, "B2", 3, label="name")]
    assert names == [f"pt{i}".encode() for i in range(5)]
    batches = list(dataset(path, ["B2"], (3, 3), batch_size=2))
    assert [b.shape[0] for b in batches] == [2, 2, 1]

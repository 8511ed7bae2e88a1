"""Done-when of issue 7: export -> run a model on the records -> write prediction records ->
read_predictions equals `predict_image(...).to_numpy()` for a pixel-wise model."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

import ee_model_widgets as emw
from ee_model_widgets.tfrecord import dataset, export_image, read_predictions, write_predictions

BANDS = ["B4", "B3", "B8"]


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(7)
    rows, cols = np.mgrid[0:48, 0:64].astype(np.float32)
    arr = np.stack([np.sin(rows / 7) + cols / 50, np.cos(cols / 9) * rows / 40, rng.random((48, 64))])
    return emw.Image.from_array(
        arr.astype(np.float32),
        transform=Affine(10, 0, 600000, 0, -10, 6150000),
        crs="EPSG:32720",
        band_names=BANDS,
    )


@pytest.fixture(scope="module")
def keras_model():
    """A real pixel-wise Keras model: a 1x1 convolution (3 bands -> 2 outputs) with tanh."""
    import keras

    inp = keras.Input((None, None, 3), name="array")
    out = keras.layers.Conv2D(2, 1, activation="tanh", name="head")(inp)
    km = keras.Model(inp, out)
    km.get_layer("head").set_weights(
        [np.array([[[[0.5, -1.0], [2.0, 0.3], [-0.7, 1.1]]]], np.float32), np.array([0.1, -0.2], np.float32)]
    )
    return km


def write_sharded(prefix, preds, band_names, shards, compressed):
    """Prediction records split over `shards` files named like Earth Engine's."""
    ext = ".tfrecord.gz" if compressed else ".tfrecord"
    for i, part in enumerate(np.array_split(preds, shards)):
        write_predictions(f"{prefix}-{i:05d}{ext}", part, band_names=band_names, compressed=compressed)
    return f"{prefix}-*{ext}"


@pytest.mark.parametrize(
    "kernel, compressed, crop_before_writing",
    [(0, True, False), (8, False, False), (8, True, True)],
    ids=["no-kernel-gzip", "kernel-8-plain-margin-kept", "kernel-8-gzip-margin-cropped"],
)
def test_round_trip_equals_predict_image(
    tmp_path, image, keras_model, kernel, compressed, crop_before_writing
):
    files = export_image(
        image,
        tmp_path / "in",
        patch_dimensions=(16, 12),
        kernel_size=kernel,
        compressed=compressed,
        max_file_size=8_000,
    )
    shards, mixer = files[:-1], files[-1]
    assert len(shards) >= 3  # the export itself is sharded

    stored = (16 + kernel, 12 + kernel)
    x = np.concatenate([b.numpy() for b in dataset(shards, BANDS, stored, batch_size=5)])
    assert x.shape == (16, 12 + kernel, 16 + kernel, 3)
    y = keras_model.predict(x, verbose=0)
    if crop_before_writing and kernel:
        m = kernel // 2
        y = y[:, m:-m, m:-m, :]

    model = emw.Model.from_keras(keras_model)
    pred = model.predict_image(image)
    pattern = write_sharded(str(tmp_path / "preds"), y, pred.band_names, shards=3, compressed=compressed)
    back = read_predictions(pattern, mixer, bands=pred.band_names)

    assert back.band_names == pred.band_names
    assert back.grid == image.grid  # 64x48 is 4x4 patches of 16x12: the whole image
    expected = pred.to_numpy()
    assert not expected.mask.any()
    np.testing.assert_allclose(back.to_numpy().data, expected.data, atol=1e-5, rtol=0)


def test_round_trip_over_a_region_and_projection(tmp_path, image, keras_model):
    """A lon/lat region on an explicit projection: the patch grid is `grid_for(region, proj)`."""
    w, s, e, n = image.bounds
    region = (w + (e - w) * 0.25, s + (n - s) * 0.1, e - (e - w) * 0.1, n - (n - s) * 0.2)
    # A 10 m lattice anchored at the CRS origin coincides with the image's own pixels, so both
    # routes read identical inputs; on a coarser lattice the two would read through GDAL
    # resampling of differently sized windows.
    proj = emw.Projection("EPSG:32720").at_scale(10)
    with pytest.warns(UserWarning, match="not exported"):
        files = export_image(
            image, tmp_path / "r", region=region, proj=proj, patch_dimensions=8, kernel_size=2
        )
    x = np.concatenate([b.numpy() for b in dataset(files[:-1], BANDS, 10, batch_size=64)])
    y = keras_model.predict(x, verbose=0)
    pred = emw.Model.from_keras(keras_model).predict_image(image)
    write_predictions(tmp_path / "p.tfrecord.gz", y, band_names=pred.band_names)
    back = read_predictions(tmp_path / "p.tfrecord.gz", files[-1])
    assert back.grid.transform.c > image.grid.transform.c and back.grid.width < image.grid.width
    expected = pred.to_numpy(region, proj)
    h, w_ = back.grid.shape
    assert not expected.mask.any()
    np.testing.assert_allclose(back.to_numpy().data, expected.data[:, :h, :w_], atol=1e-5, rtol=0)

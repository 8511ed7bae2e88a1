"""Band math in the tile pipeline: derived images on the map, in exports, fed to models.

Real models (Keras and callables), real PNG tiles through the layer's comm handler (the
browser replaced by a recorder), real GeoTIFFs. References are numpy computations on what
the parents return, or the model run on the numpy result.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image as PILImage

import ee_model_widgets as emw
from ee_model_widgets.widgets.headless import HeadlessView

keras = pytest.importorskip("keras")

T = Affine(10, 0, 500000, 0, -10, 4000000)
CRS = "EPSG:32633"


@pytest.fixture
def scene():
    rng = np.random.default_rng(3)
    arr = (rng.random((3, 300, 360)) * 0.8 + 0.1).astype(np.float32)
    mask = np.zeros(arr.shape, bool)
    mask[:, 40:60, 100:130] = True  # a hole of no data
    return emw.Image.from_array(
        np.ma.MaskedArray(arr, mask), transform=T, crs=CRS, band_names=["red", "green", "nir"]
    )


def first_band_model(**kw):
    """A per-pixel 'probability': the red band (values 0.1 .. 0.9, about half above 0.5)."""
    return emw.Model.from_callable(
        lambda inputs: inputs["array"][..., 0:1],
        input_tile_size=[64, 64],
        output_bands={"p": {"type": "float"}},
        **kw,
    )


def tiles_over(image, z, n=2):
    w, s, e, nn = image.bounds
    x = int(((w + e) / 2 + 180) / 360 * 2**z)
    y = int((1 - math.asinh(math.tan(math.radians((s + nn) / 2))) / math.pi) / 2 * 2**z)
    return [(z, x + dx, y + dy) for dy in range(n) for dx in range(n)]


def decode(png: bytes) -> np.ndarray:
    return np.asarray(PILImage.open(io.BytesIO(png)).convert("RGBA"))


def test_threshold_layer_on_the_map_is_red_where_the_prediction_is_likely_and_costs_no_model_call(scene):
    model = first_band_model()
    pred = model.predict_image(scene)
    m = emw.Map(basemap=None)
    base = m.add_layer(pred, {"min": 0, "max": 1}, "p")
    likely = m.add_layer(pred.gt(0.5).self_mask(), {"palette": ["red"]}, "likely")
    tiles = tiles_over(scene, 15)
    try:
        HeadlessView(base).fetch(tiles)
        calls = model.stats.calls
        assert calls > 0
        replies = HeadlessView(likely).fetch(tiles)
        assert model.stats.calls == calls  # the prediction's cells are reused: no model call
        above = 0
        for (z, x, y), reply in zip(tiles, replies):
            assert reply.status == "ok"
            rgba = decode(reply.png)
            p = pred.tile(z, x, y)  # reference: the prediction's own tile, thresholded in numpy
            want = ~p.mask[0] & (p.data[0] > 0.5)
            np.testing.assert_array_equal(rgba[..., 3] == 255, want)
            np.testing.assert_array_equal(rgba[..., 3][~want], 0)
            assert (rgba[want][:, :3] == [255, 0, 0]).all()
            above += want.sum()
        assert 0.2 < above / (len(tiles) * 256 * 256) < 0.6
    finally:
        base.close()
        likely.close()


def test_exports_and_tiles_of_derived_images_equal_to_numpy(scene, tmp_path):
    pred = first_band_model().predict_image(scene)
    derived = scene.normalized_difference(["nir", "red"]).add_bands(pred.gt(0.5).rename("likely")).unmask(-1)
    path = derived.export(tmp_path / "derived.tif", progress=False, block_size=256)
    with rasterio.open(path) as ds:
        written = ds.read()
        assert [ds.descriptions[i] for i in range(ds.count)] == ["nd", "likely"]
    ref = derived.to_numpy()
    np.testing.assert_array_equal(np.isnan(written), ref.mask)
    np.testing.assert_array_equal(written[~ref.mask], ref.data[~ref.mask])
    # unmask(-1) filled the hole; the likely band is 0/1 elsewhere.
    assert (ref.data[:, 40:60, 100:130] == -1).all() and set(np.unique(ref.data[1])) == {-1.0, 0.0, 1.0}
    # A region on another projection: the export and to_numpy still agree.
    region = emw.Image.bounds.fget(scene)
    w, s, e, n = region
    sub = (w + (e - w) * 0.2, s + (n - s) * 0.3, w + (e - w) * 0.7, s + (n - s) * 0.9)
    proj = emw.Projection("EPSG:3857").at_scale(15)
    path2 = derived.export(tmp_path / "derived_3857.tif", region=sub, proj=proj, progress=False)
    ref2 = derived.to_numpy(region=sub, proj=proj)
    with rasterio.open(path2) as ds:
        written2 = ds.read()
    np.testing.assert_array_equal(np.isnan(written2), ref2.mask)
    np.testing.assert_array_equal(written2[~ref2.mask], ref2.data[~ref2.mask])
    assert (~ref2.mask).sum() > 1000


def test_a_model_applied_to_a_derived_image_equals_the_model_applied_to_its_numpy_result(scene):
    keras.utils.set_random_seed(0)
    x = inp = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="tanh")(x)
    x = keras.layers.Conv2D(1, 3, padding="same")(x)
    km = keras.Model(inp, x)
    model = emw.Model.from_keras(km, input_tile_size=[64, 64], input_overlap_size=[4, 4])
    derived = scene.normalized_difference(["nir", "red"]).add_bands(scene.select(["red", "nir"]))
    assert derived.band_names == ["nd", "red", "nir"]
    on_derived = model.predict_image(derived).to_numpy()
    arr = derived.to_numpy()
    plain = emw.Image.from_array(arr, transform=T, crs=CRS, band_names=derived.band_names)
    on_numpy = model.predict_image(plain).to_numpy()
    np.testing.assert_array_equal(on_derived.mask, on_numpy.mask)
    np.testing.assert_allclose(on_derived.data, on_numpy.data, rtol=1e-6, atol=1e-6)
    assert on_derived.mask[:, 40:60, 100:130].all() and (~on_derived.mask).sum() > 50_000
    # The second model's cache is keyed by the derived image's fingerprint: a rebuilt,
    # identical derivation reuses its cells; a different one does not.
    again = scene.normalized_difference(["nir", "red"]).add_bands(scene.select(["red", "nir"]))
    calls = model.stats.calls
    model.predict_image(again).to_numpy()
    assert model.stats.calls == calls
    model.predict_image(
        scene.normalized_difference(["green", "red"]).add_bands(scene.select(["red", "nir"]))
    ).to_numpy()
    assert model.stats.calls > calls


def test_a_zoomed_out_tile_of_a_derived_fix_input_proj_prediction_says_zoom_in(scene):
    model = first_band_model(fix_input_proj=True)
    pred = model.predict_image(scene)
    layer = emw.PredictionLayer(pred.gt(0.5).self_mask(), vis_params={"palette": ["red"]})
    layer.max_cells_per_tile = 4
    try:
        reply = HeadlessView(layer).fetch(tiles_over(scene, 11, n=1))[0]
        assert reply.status == "ok" and layer.tiles_zoom_in == 1
        assert model.stats.calls == 0
    finally:
        layer.close()


def test_tiles_of_an_operation_on_selected_bands_share_one_model_call(scene):
    model = first_band_model(max_batch_size=None)
    pred = model.predict_image(scene, cache=None)
    derived = pred.select("p").gt(0.5).self_mask()
    grids = [emw.core.grid.xyz_grid(*t) for t in tiles_over(scene, 15)]
    out = derived.read_many(grids)
    assert model.stats.calls == 1  # select() and the operations pass the batch through
    for g, got in zip(grids, out):
        p = pred.read(g)
        want = ~p.mask[0] & (p.data[0] > 0.5)
        np.testing.assert_array_equal(~got.mask[0], want)

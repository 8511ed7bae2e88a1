"""The embedded demo: real scene, demo models (real Keras files), synthetic scenes."""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import rasterio
from affine import Affine

from ee_model_widgets import demo
from ee_model_widgets.core.grid import Grid, xyz_grid
from ee_model_widgets.errors import InputError

SCENE_W, SCENE_H = 300, 200
# 50 x 50 m windows (UTM 19S) identified on the scene: irrigated valley floor with the
# densest vegetation, and a bright bare patch (a dry pan / outcrop) in the south-east.
VEGETATION_UL = (600000 + 46 * 10, 4700020 - 39 * 10)
BARE_UL = (600000 + 225 * 10, 4700020 - 171 * 10)


@pytest.fixture(scope="module")
def scene():
    return demo.scene()


@pytest.fixture(scope="module")
def scene_arrays(scene):
    a = scene.to_numpy()
    return {name: a[i].filled(np.nan).astype(np.float64) for i, name in enumerate(scene.band_names)}


def np_ndvi(red, nir):
    return (nir - red) / (nir + red)


def window(scene, ul, size=5):
    grid = Grid(scene.grid.crs, Affine(10, 0, ul[0], 0, -10, ul[1]), size, size)
    return scene.read(grid, ["red", "nir"])


# ---- the scene ------------------------------------------------------------------------------
def test_import_does_not_load_tensorflow():
    code = "import sys, ee_model_widgets.demo as d; d.scene(); print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_scene_file_is_small_compressed_and_described():
    path = demo.scene_path()
    assert os.path.getsize(path) <= 3 * 1024 * 1024
    with rasterio.open(path) as ds:
        assert ds.descriptions == tuple(demo.SCENE_BANDS)
        assert ds.crs.to_epsg() == 32719
        assert ds.transform == Affine(10, 0, 600000, 0, -10, 4700020)
        assert (ds.width, ds.height, ds.count) == (SCENE_W, SCENE_H, 6)
        assert ds.profile["compress"] == "deflate"
        assert ds.tags()["ATTRIBUTION"].startswith("Contains modified Copernicus Sentinel data")
        assert [ds.tags(i)["SENTINEL2_BAND"] for i in range(1, 7)] == ["B2", "B3", "B4", "B8", "B11", "B12"]


def test_scene_opens_with_documented_bands_crs_and_size(scene):
    assert scene.band_names == demo.SCENE_BANDS == ["blue", "green", "red", "nir", "swir1", "swir2"]
    assert scene.grid.crs.to_epsg() == 32719
    assert scene.grid.shape == (SCENE_H, SCENE_W)
    assert scene.grid.res == (10, 10)
    west, south, east, north = scene.bounds  # lon/lat: Santa Cruz, Argentina
    assert -67.7 < west < east < -67.6 and -47.9 < south < north < -47.8


def test_scene_values_are_plausible_reflectances(scene_arrays):
    for name, band in scene_arrays.items():
        refl = band / 10000
        assert 0.05 < refl.min() and refl.max() < 0.6, name
        assert 0.05 < np.median(refl) < 0.3, name
    # Arid hills: NIR a little above red almost everywhere.
    ndvi = np_ndvi(scene_arrays["red"], scene_arrays["nir"])
    assert np.mean(ndvi > 0) > 0.99
    assert -0.05 < ndvi.min() and ndvi.max() < 0.4


def test_ndvi_of_vegetation_is_higher_than_of_bare_ground(scene):
    veg = window(scene, VEGETATION_UL)
    bare = window(scene, BARE_UL)
    veg_ndvi = np_ndvi(veg[0], veg[1]).mean()
    bare_ndvi = np_ndvi(bare[0], bare[1]).mean()
    assert veg_ndvi > 0.15
    assert 0 < bare_ndvi < 0.1
    # The scene has no open water; water's negative NDVI shows in the synthetic scene.
    syn = demo.synthetic_scene(1024, 1024)
    a = syn.read(syn.grid)
    ndvi = np_ndvi(a[0].astype(np.float64), a[1].astype(np.float64))
    assert ndvi.min() < -0.3 and ndvi.max() > 0.7


# ---- the models as plain Keras files -----------------------------------------------------------
def test_unknown_model_name_lists_the_demo_models():
    with pytest.raises(
        InputError, match=r"Unknown demo model 'unet'.*'downscale', 'fcn', 'landcover', 'ndvi'"
    ):
        demo.model("unet")
    with pytest.raises(InputError, match="demo models are"):
        demo.model_path("unet")


@pytest.mark.parametrize("name", sorted(demo.MODELS))
def test_model_files_load_without_custom_objects(name):
    import keras

    m = keras.models.load_model(demo.model_path(name))
    expected = demo.SCENE_BANDS if name == "landcover" else ["red", "nir"]
    assert sorted(i.name for i in m.inputs) == sorted(expected)
    assert os.path.getsize(demo.model_path(name)) < 100_000


def test_fcn_receptive_field_is_7x7():
    import keras

    m = keras.models.load_model(demo.model_path("fcn"))
    rng = np.random.default_rng(1)
    red = rng.uniform(500, 3000, (1, 32, 32, 1)).astype(np.float32)
    nir = rng.uniform(500, 3000, (1, 32, 32, 1)).astype(np.float32)
    base = m.predict({"red": red, "nir": nir}, verbose=0)[0, ..., 0]
    nir2 = nir.copy()
    nir2[0, 16, 16, 0] += 2000
    changed = np.abs(m.predict({"red": red, "nir": nir2}, verbose=0)[0, ..., 0] - base) > 1e-6
    rows, cols = np.nonzero(changed)
    assert changed.sum() > 9  # several output pixels, so tiles need overlap
    assert rows.min() >= 13 and rows.max() <= 19 and cols.min() >= 13 and cols.max() <= 19


# ---- the models through Model.from_keras / predict_image ----------------------------------------
def test_ndvi_model_matches_numpy(scene, scene_arrays):
    pred = demo.model("ndvi").predict_image(scene)
    assert pred.band_names == ["ndvi"]
    out = pred.to_numpy()
    assert out.shape == (1, SCENE_H, SCENE_W) and not out.mask.any()
    expected = np_ndvi(scene_arrays["red"], scene_arrays["nir"])
    assert np.max(np.abs(out[0] - expected)) < 1e-5


def test_landcover_model_outputs_class_probabilities(scene, scene_arrays):
    pred = demo.model("landcover").predict_image(scene)
    assert pred.band_names == [f"landcover_{i}" for i in range(len(demo.LANDCOVER_CLASSES))]
    p = pred.to_numpy()
    assert p.shape == (4, SCENE_H, SCENE_W) and not p.mask.any()
    assert p.min() >= 0 and p.max() <= 1
    assert np.allclose(p.sum(axis=0), 1, atol=1e-4)
    # The classes follow the documented index rules on most pixels ...
    b = scene_arrays
    brightness = np.mean([b[n] for n in demo.SCENE_BANDS], axis=0) / 10000
    rules = np.ones(brightness.shape, int)
    rules[brightness < 0.135] = 0
    rules[brightness > 0.175] = 2
    rules[np_ndvi(b["red"], b["nir"]) > 0.11] = 3
    cls = p.argmax(axis=0)
    assert np.mean(cls == rules) > 0.95
    # ... and the vegetated valley floor is "vegetation".
    row, col = 41, 48
    assert demo.LANDCOVER_CLASSES[cls[row, col]] == "vegetation"


def test_fcn_predicts_smoothed_ndvi_and_tiles_are_seam_free(scene, scene_arrays):
    import keras

    pred = demo.model("fcn").predict_image(scene)
    assert pred.band_names == ["ndvi_smooth"]
    out = pred.to_numpy()[0]
    # Close to the 5x5 binomial-smoothed NDVI away from the image edges.
    k = np.array([1, 4, 6, 4, 1]) / 16
    ndvi = np_ndvi(scene_arrays["red"], scene_arrays["nir"])
    rows = sum(k[i] * ndvi[i : SCENE_H - 4 + i] for i in range(5))
    smooth = sum(k[i] * rows[:, i : SCENE_W - 4 + i] for i in range(5))
    inner = out[5:-5, 5:-5] - smooth[3:-3, 3:-3]
    assert np.sqrt(np.mean(inner**2)) < 0.03
    # 128 px tiles with 8 px overlap equal one run over the whole scene, edges included.
    m = keras.models.load_model(demo.model_path("fcn"))
    whole = m.predict(
        {n: scene_arrays[n][None, ..., None].astype(np.float32) for n in ("red", "nir")}, verbose=0
    )[0, ..., 0]
    assert np.max(np.abs(out - whole)) < 1e-5
    # Without overlap the tile borders show.
    seams = demo.model("fcn", inputOverlapSize=[0, 0]).predict_image(scene).to_numpy()[0]
    assert np.max(np.abs(seams - whole)) > 1e-3


def test_downscale_model_halves_resolution(scene, scene_arrays):
    pred = demo.model("downscale").predict_image(scene)
    assert pred.band_names == ["ndvi_20m"]
    assert pred.grid.res == (20, 20)
    out = pred.to_numpy()
    assert out.shape == (1, SCENE_H // 2, SCENE_W // 2)
    ndvi = np_ndvi(scene_arrays["red"], scene_arrays["nir"])
    expected = ndvi.reshape(SCENE_H // 2, 2, SCENE_W // 2, 2).mean(axis=(1, 3))
    assert np.max(np.abs(out[0] - expected)) < 1e-5


def test_demo_models_survive_savedmodel_export(tmp_path, scene):
    import keras

    from ee_model_widgets.core.model import Model

    keras.models.load_model(demo.model_path("ndvi")).export(str(tmp_path / "ndvi"), verbose=False)
    served = Model.from_saved_model(str(tmp_path / "ndvi"), **demo.MODEL_PARAMS["ndvi"])
    a = served.predict_image(scene).to_numpy()
    b = demo.model("ndvi").predict_image(scene).to_numpy()
    assert np.array_equal(a, b)


def test_vis_params_render_the_scene_and_the_predictions(scene):
    from ee_model_widgets.core.vis import render

    def distinct_colours(rgba):
        return len(np.unique(rgba.reshape(-1, 4), axis=0))

    a = scene.to_numpy()
    assert distinct_colours(render(a, demo.VIS_PARAMS["scene"], scene.band_names)) > 1000
    assert distinct_colours(render(a, demo.VIS_PARAMS["scene_false_color"], scene.band_names)) > 1000
    lc = demo.model("landcover").predict_image(scene)
    probs = lc.to_numpy()
    classes = render(probs.argmax(axis=0)[None].astype(np.float32), demo.VIS_PARAMS["landcover"])
    assert distinct_colours(classes) == 4
    assert distinct_colours(render(probs, demo.VIS_PARAMS["landcover_probability"], lc.band_names)) > 50
    ndvi = demo.model("ndvi").predict_image(scene).to_numpy()
    assert distinct_colours(render(ndvi, demo.VIS_PARAMS["ndvi"])) > 50


# ---- synthetic scenes ---------------------------------------------------------------------------
def test_synthetic_windows_are_consistent():
    img = demo.synthetic_scene(2048, 1024, bands=demo.SYNTHETIC_BANDS, seed=3)
    big = img.read(img.grid.window(100, 50, 700, 600))
    sub = img.read(img.grid.window(333, 222, 111, 99))
    assert np.array_equal(big.data[:, 172:271, 233:344], sub.data)
    assert not big.mask.any()
    # Another seed is another scene; the same seed is the same scene.
    assert not np.array_equal(
        demo.synthetic_scene(2048, 1024, seed=4).read(img.grid.window(0, 0, 64, 64)).data,
        demo.synthetic_scene(2048, 1024, seed=3).read(img.grid.window(0, 0, 64, 64)).data,
    )
    again = demo.synthetic_scene(2048, 1024, bands=demo.SYNTHETIC_BANDS, seed=3)
    assert np.array_equal(again.read(img.grid.window(333, 222, 111, 99)).data, sub.data)


def test_synthetic_scene_looks_like_a_landscape():
    img = demo.synthetic_scene(1024, 1024, bands=demo.SYNTHETIC_BANDS)
    a = img.read(img.grid).data.astype(np.float64) / 10000
    assert a.min() >= 0 and a.max() < 0.6
    # Smooth: neighbouring pixels differ far less than the scene varies.
    assert np.mean(np.abs(np.diff(a[3], axis=1))) < 0.1 * a[3].std()
    ndvi = np_ndvi(a[2], a[3])
    water, dense = ndvi < 0, ndvi > 0.6
    assert 0.001 < water.mean() < 0.5 and 0.05 < dense.mean() < 0.9


def test_huge_synthetic_scene_reads_a_small_window_without_allocating_it():
    img = demo.synthetic_scene(8192, 8192)
    assert img.grid.shape == (8192, 8192) and img.band_names == ["red", "nir"]
    tracemalloc.start()
    try:
        w = img.read(img.grid.window(5000, 7000, 256, 256))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert w.shape == (2, 256, 256) and not w.mask.any()
    assert peak < 50e6  # one band of the whole scene alone would be 268 MB


def test_synthetic_scene_on_a_map_tile():
    img = demo.synthetic_scene(4096, 4096)
    west, south, east, north = img.bounds
    z = 12
    lon, lat = west, (south + north) / 2
    n = 2**z
    x = int((lon + 180) / 360 * n)
    y = int((1 - np.arcsinh(np.tan(np.radians(lat))) / np.pi) / 2 * n)
    t = img.read(xyz_grid(z, x, y))
    assert t.shape == (2, 256, 256)
    assert t.mask.any() and not t.mask.all()  # the scene's west edge crosses the tile
    vals = t.compressed()
    assert vals.min() >= 0 and vals.max() < 6000


def test_synthetic_bad_arguments():
    with pytest.raises(InputError, match="each must be one of"):
        demo.synthetic_scene(10, 10, bands=("red", "thermal"))
    with pytest.raises(InputError, match="positive size"):
        demo.synthetic_scene(0, 10)


def test_synthetic_geotiff_matches_the_lazy_scene(tmp_path):
    from ee_model_widgets.core.image import Image

    path = demo.synthetic_geotiff(tmp_path / "syn.tif", 700, 300)
    assert path == str(tmp_path / "syn.tif") and not list(tmp_path.glob("*.tmp*"))
    img = Image.open(path)
    assert img.band_names == ["red", "nir"]
    syn = demo.synthetic_scene(700, 300)
    assert img.grid == syn.grid
    assert np.array_equal(img.to_numpy().data, syn.read(syn.grid).data)

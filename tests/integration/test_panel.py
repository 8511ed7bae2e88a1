"""The Model Explorer panel in the kernel, without a browser: each control, set from Python, does what it says.

Widgets are driven by setting their values (what a browser does through the comm) and the
map's events are delivered through ipyleaflet's own handlers. The prediction layer's wire
is replaced by a HeadlessView, so tiles are real PNGs made by the real layer; expected tiles
come from independently built predictions (fresh demo models, no cache).
"""

from __future__ import annotations

import io
import math

import ipyleaflet
import numpy as np
import pytest
import rasterio
from PIL import Image as PILImage
from rasterio.warp import transform as warp_points

import ee_model_widgets as emw
from ee_model_widgets import demo
from ee_model_widgets.core.class_band import ClassBandImage
from ee_model_widgets.core.vis import render
from ee_model_widgets.widgets.data_tab import parse_bbox
from ee_model_widgets.widgets.headless import HeadlessView
from ee_model_widgets.widgets.panel import REGION_BBOX, REGION_DRAWN, REGION_GIVEN, REGION_IMAGE, REGION_VIEW

Z = 15  # zoom of the checked tiles: the 3 x 2 km scene spans a few tiles


def decode(png: bytes) -> np.ndarray:
    return np.asarray(PILImage.open(io.BytesIO(png)).convert("RGBA"))


def tile_at(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    n = 2**z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return z, x, y


@pytest.fixture(scope="module")
def scene():
    return demo.scene()


@pytest.fixture(scope="module")
def center(scene):
    w, s, e, n = scene.bounds
    return (w + e) / 2, (s + n) / 2


@pytest.fixture(scope="module")
def panel():
    p = emw.explore(basemap=None)
    p.view = HeadlessView(p.layer)
    p.wait()
    yield p
    p.close()


def show(panel, **values):
    """Set control values like a user would (one after the other) and wait for the work."""
    for name, value in values.items():
        getattr(panel, name).value = value
    panel.wait()
    assert panel.error == "", panel.error


def shown_tile(panel, tile) -> np.ndarray:
    (reply,) = panel.view.fetch([tile])
    assert reply.status == "ok", panel.layer.last_error
    return decode(reply.png)


def assert_looks_like(got: np.ndarray, expected: np.ndarray, max_bad: float = 0.001) -> None:
    """Same RGBA pixels, allowing float-rounding flips of one 8-bit level (and of rare near-ties)."""
    assert got.shape == expected.shape == (256, 256, 4)
    diff = np.abs(got.astype(int) - expected.astype(int)).max(axis=-1)
    assert (diff > 1).mean() <= max_bad, f"{(diff > 1).mean():.4%} of the pixels differ"


def landcover_class_rgba(pred, tile, vis) -> np.ndarray:
    probs = pred.tile(*tile)
    classes = np.ma.MaskedArray(
        np.argmax(probs.data, axis=0)[None].astype("float32"), mask=probs.mask.any(0)[None]
    )
    return render(classes, vis)


# ---- opening ---------------------------------------------------------------------------------------


def test_explore_opens_on_the_demo_scene_with_demo_predictions(panel, scene, center):
    assert list(panel.model_picker.options) == ["landcover", "fcn", "downscale", "ndvi"]
    assert panel.image_picker.value.startswith("Demo scene")
    assert panel.layer.visible and panel.layer in panel.map.layers
    assert panel.scene_layer.vis_params == demo.VIS_PARAMS["scene"]
    # Landcover shows its argmax class with the demo palette and a class legend.
    assert panel.band.value == "landcover_class"
    assert panel.layer.vis_params["categorical"] is True
    tile = tile_at(*center, Z)
    expected_pred = demo.model("landcover").predict_image(scene, cache=None)
    assert_looks_like(
        shown_tile(panel, tile), landcover_class_rgba(expected_pred, tile, panel.layer.vis_params)
    )
    assert "landcover" in panel.status_text and "failed" in panel.status_text
    assert panel.legend.value[:8] == b"\x89PNG\r\n\x1a\n" and len(panel.legend.value) > 1000
    # No network basemap was asked for: the map has only our layers.
    assert panel.map.basemap_layer is None
    assert all(isinstance(lyr, (emw.PredictionLayer, ipyleaflet.LayerGroup)) for lyr in panel.map.layers)


# ---- model, fixInputProj, tile size, overlap ------------------------------------------------------


def test_switching_the_model_changes_the_tiles(panel, scene, center):
    show(panel, model_picker="landcover", fix_input_proj=False)
    tile = tile_at(*center, Z)
    before = shown_tile(panel, tile)
    show(panel, model_picker="fcn")
    assert (panel.tile_size.value, panel.overlap.value) == (128, 8)  # the model's own parameters
    assert panel.band.value == "ndvi_smooth" and panel.layer.vis_params["palette"] == "YlGn"
    after = shown_tile(panel, tile)
    expected = demo.model("fcn").predict_image(scene, cache=None)
    assert_looks_like(
        after, render(expected.tile(*tile), panel.layer.vis_params, band_names=expected.band_names)
    )
    assert np.abs(after.astype(int) - before.astype(int)).mean() > 20


def test_fix_input_proj_toggle_changes_how_inputs_are_sampled(panel, scene, center):
    show(panel, model_picker="fcn", fix_input_proj=False)
    tile = tile_at(*center, Z)
    off = shown_tile(panel, tile)
    show(panel, fix_input_proj=True)
    assert panel.prediction.params.fix_input_proj is True and "fixInputProj on" in panel.status_text
    on = shown_tile(panel, tile)
    expected = demo.model("fcn", fix_input_proj=True).predict_image(scene, cache=None)
    assert_looks_like(
        on, render(expected.tile(*tile), panel.layer.vis_params, band_names=expected.band_names)
    )
    # At z15 (~4.3 m map pixels) the model sees 10 m native pixels instead of resampled ones.
    assert (np.abs(on.astype(int) - off.astype(int)).max(axis=-1) > 2).mean() > 0.05
    # The choice is kept when another model is picked.
    show(panel, model_picker="ndvi")
    assert panel.prediction.params.fix_input_proj is True
    show(panel, model_picker="fcn", fix_input_proj=False)


def test_resampling_choice_feeds_the_model_earth_engines_resampled_input(panel, scene, center):
    show(panel, model_picker="fcn", fix_input_proj=False)
    tile = tile_at(*center, Z)
    near = shown_tile(panel, tile)
    assert "resampled" not in panel.status_text
    show(panel, resampling="bilinear")
    assert "input resampled bilinear" in panel.status_text
    smooth = shown_tile(panel, tile)
    expected = demo.model("fcn").predict_image(scene.resample("bilinear"), cache=None)
    assert_looks_like(
        smooth, render(expected.tile(*tile), panel.layer.vis_params, band_names=expected.band_names)
    )
    # At z15 (~4.3 m map pixels) the model sees interpolated 10 m pixels instead of picked ones:
    # the nearest tile would fail the check above (> 0.1% of its pixels off by more than a level).
    assert (np.abs(smooth.astype(int) - near.astype(int)).max(axis=-1) > 1).mean() > 0.01
    show(panel, resampling="nearest")
    assert_looks_like(shown_tile(panel, tile), near)


def test_overlap_zero_brings_back_tile_seams(panel, scene):
    show(panel, model_picker="fcn", fix_input_proj=True)
    with8 = panel.prediction.to_numpy()
    show(panel, overlap=0)
    assert panel.prediction.params.overlap == (0, 0)
    with0 = panel.prediction.to_numpy()
    expected = demo.model("fcn", input_overlap_size=[0, 0], fix_input_proj=True).predict_image(
        scene, cache=None
    )
    np.testing.assert_allclose(with0.filled(np.nan), expected.to_numpy().filled(np.nan), atol=1e-6)
    # Differences only near the 128 px cell borders of the native grid (the model's 3 px margin).
    diff = np.abs(with0.filled(0) - with8.filled(0))[0] > 1e-4
    rows, cols = np.nonzero(diff)
    assert rows.size > 0
    # (the native lattice starts at the image's corner, so cell borders are at multiples of 128)
    near = lambda idx: np.minimum(idx % 128, 128 - idx % 128) <= 3  # noqa: E731
    assert (near(rows) | near(cols)).all()
    # A smaller tile keeps working; an overlap as large as the tile is refused, in the status line.
    show(panel, tile_size=64)
    assert panel.prediction.params.input_tile_size == (64, 64)
    panel.overlap.value = 64
    panel.wait()
    assert "Overlap" in panel.error and "smaller than the input tile size" in panel.status_text
    assert not panel.layer.visible
    show(panel, overlap=8, tile_size=128)
    assert panel.layer.visible and panel.error == ""
    show(panel, fix_input_proj=False)


def test_downscale_model_keeps_its_output_ratio_when_the_tile_size_changes(panel):
    show(panel, model_picker="downscale")
    assert panel.prediction.params.output_tile_size == (128, 128)
    show(panel, tile_size=128)
    assert panel.prediction.params.output_tile_size == (64, 64)
    assert panel.prediction.grid.res == (20.0, 20.0)
    panel.tile_size.value = 101  # 101 px in -> 50.5 px out: refused, with the fix
    panel.wait()
    assert "keep that ratio whole" in panel.status_text and "try 102" in panel.status_text
    show(panel, model_picker="fcn")


# ---- display: band, min/max, palette, opacity, legend ------------------------------------------------


def test_palette_and_min_max_rerender_from_cache(panel, scene, center):
    show(panel, model_picker="fcn", fix_input_proj=False)
    tile = tile_at(*center, Z)
    first = shown_tile(panel, tile)
    calls = panel.model.stats.calls
    legend = panel.legend.value
    show(panel, palette="magma")
    magma = shown_tile(panel, tile)
    assert panel.layer.vis_params["palette"] == "magma"
    assert panel.model.stats.calls == calls  # re-rendered from the layer's tile cache
    pred = panel.prediction
    assert_looks_like(magma, render(pred.tile(*tile), panel.layer.vis_params, band_names=pred.band_names))
    assert np.abs(magma.astype(int) - first.astype(int)).mean() > 20
    show(panel, vmin=0.05, vmax=0.1)
    assert panel.layer.vis_params["min"] == 0.05 and panel.layer.vis_params["max"] == 0.1
    assert panel.legend.value != legend
    # min >= max is refused with a message; the layer keeps its last good vis params.
    panel.vmin.value = 0.2
    assert "must be below max" in panel.status_text and panel.layer.vis_params["min"] == 0.05
    show(panel, vmin=0.0, vmax=0.25, palette="YlGn")


def test_auto_stretch_uses_percentiles_of_the_region(panel):
    show(panel, model_picker="fcn")
    show(panel, vmin=-5.0, vmax=5.0)
    panel.auto_stretch()
    panel.wait()
    values = panel.prediction.to_numpy().compressed()
    lo, hi = np.percentile(values, [2, 98])
    # A coarse sample of the region: close to the full-resolution percentiles.
    assert abs(panel.vmin.value - lo) < 0.01 and abs(panel.vmax.value - hi) < 0.01
    assert panel.layer.vis_params["min"] == panel.vmin.value


def test_band_picker_shows_probabilities_or_classes_with_their_legend(panel):
    show(panel, model_picker="landcover")
    assert list(panel.band.options) == [f"landcover_{i}" for i in range(4)] + ["landcover_class"]
    assert panel.vmin.disabled and panel.palette.dropdown.disabled  # classes have fixed colours
    class_legend = panel.legend.value
    show(panel, band="landcover_3")
    assert not panel.vmin.disabled and panel.layer.vis_params["bands"] == ["landcover_3"]
    assert 0 <= panel.vmin.value < panel.vmax.value <= 1.0  # probabilities
    assert "categorical" not in panel.layer.vis_params
    assert panel.legend.value != class_legend
    show(panel, band="landcover_class")
    assert panel.layer.vis_params["categorical"] is True


def test_opacity_slider_sets_the_layer_opacity(panel):
    show(panel, opacity=0.4)
    assert panel.layer.opacity == 0.4
    show(panel, opacity=1.0)


# ---- region -----------------------------------------------------------------------------------------


def test_region_from_bbox_field_drawing_presets_and_map_view(panel, scene):
    show(panel, bbox="-67.65, -47.86, -67.64, -47.85")
    assert panel.region == (-67.65, -47.86, -67.64, -47.85)
    assert panel.region_preset.value == REGION_BBOX
    assert [tuple(c) for c in panel.region_rect.bounds] == [(-47.86, -67.65), (-47.85, -67.64)]
    # A bad bbox is explained in the status line; the region stays.
    panel.bbox.value = "-67.64, -47.85, -67.65"
    assert "four numbers" in panel.status_text and panel.region == (-67.65, -47.86, -67.64, -47.85)
    # Latitude first: explained, and the region stays (before, it became a box off the scene).
    panel.bbox.value = "-47.86, -67.65, -47.85, -67.64"
    assert "With latitude and longitude swapped it would" in panel.error
    assert panel.region == (-67.65, -47.86, -67.64, -47.85)
    # A rectangle drawn on the map (ipyleaflet's own event handler) becomes the region.
    ring = [
        [-67.655, -47.858],
        [-67.655, -47.852],
        [-67.645, -47.852],
        [-67.645, -47.858],
        [-67.655, -47.858],
    ]
    geo = {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}}
    panel.draw_control._handle_leaflet_event(None, {"event": "draw:created", "geo_json": geo}, [])
    assert panel.region == (-67.655, -47.858, -67.645, -47.852)
    assert panel.region_preset.value == REGION_DRAWN and parse_bbox(panel.bbox.value) == panel.region
    assert panel.error == ""
    show(panel, region_preset=REGION_IMAGE)
    assert panel.region is None and parse_bbox(panel.bbox.value) == pytest.approx(scene.bounds, abs=1e-6)
    panel.map.set_state(
        {"south": -47.86, "west": -67.66, "north": -47.85, "east": -67.63}
    )  # as a browser does
    show(panel, region_preset=REGION_VIEW)
    assert panel.region == (-67.66, -47.86, -67.63, -47.85)
    show(panel, region_preset=REGION_DRAWN)
    assert panel.region == (-67.655, -47.858, -67.645, -47.852)
    show(panel, region_preset=REGION_IMAGE)


# ---- inspector ----------------------------------------------------------------------------------------


def test_click_fills_the_inspector_with_to_numpy_values(panel, scene):
    show(panel, model_picker="landcover", fix_input_proj=False)
    lon, lat = -67.6503, -47.8571
    panel.map._handle_leaflet_event(
        None, {"event": "interaction", "type": "click", "coordinates": [lat, lon]}, []
    )
    panel.wait()
    pred = panel.prediction
    grid = pred.grid
    (x,), (y,) = warp_points("EPSG:4326", grid.crs, [lon], [lat])
    col, row = (int(math.floor(v)) for v in ~grid.transform @ (x, y))
    full = pred.to_numpy()
    got = panel.inspector.values[f"Prediction: {panel.model_picker.value}"]
    for i, band in enumerate(pred.band_names):
        assert got[band] == pytest.approx(float(full[i, row, col]), rel=1e-6, abs=1e-7)
        assert f"{got[band]:.7g}" in panel.inspector.html.value
    assert got["landcover_class"] == float(np.argmax(full[:, row, col]))
    # The class name is printed beside its value.
    assert demo.LANDCOVER_CLASSES[int(got["landcover_class"])] in panel.inspector.html.value
    scene_full = scene.to_numpy()
    inputs = panel.inspector.values[f"Input: {panel.image_picker.value}"]
    assert inputs == {b: float(scene_full[i, row, col]) for i, b in enumerate(scene.band_names)}
    assert len(panel.marker_group.layers) == 1 and panel.marker_group.layers[0].location == [lat, lon]


# ---- export -------------------------------------------------------------------------------------------


def test_export_writes_the_region_in_the_background(panel, tmp_path):
    show(panel, model_picker="fcn")
    region = (-67.66, -47.862, -67.63, -47.848)
    show(panel, bbox=", ".join(map(str, region)))
    target = tmp_path / "out.tif"
    panel.exporter.path.value = str(target)
    panel.exporter.button.click()
    panel.wait()
    assert panel.exporter.written == str(target) and target.exists()
    assert str(target) in panel.exporter.result.value
    assert panel.exporter.progress.value == panel.exporter.progress.max >= 1
    expected = panel.prediction.to_numpy(region=region)
    with rasterio.open(target) as ds:
        got = ds.read()
        assert ds.descriptions == ("ndvi_smooth",)
    np.testing.assert_array_equal(np.isnan(got), np.ma.getmaskarray(expected))
    np.testing.assert_array_equal(got[~np.isnan(got)], expected.compressed())
    # A folder that does not exist: the error is shown, nothing is written.
    panel.exporter.path.value = str(tmp_path / "missing" / "x.tif")
    panel.exporter.button.click()
    panel.wait()
    assert "does not exist" in panel.exporter.result.value and "does not exist" in panel.status_text
    show(panel, region_preset=REGION_IMAGE)


# ---- errors -------------------------------------------------------------------------------------------


def test_a_broken_model_shows_its_error_and_the_panel_keeps_working(panel, center):
    def broken(inputs):
        raise RuntimeError("sensor calibration table missing")

    bad = emw.Model.from_callable(
        broken, input_names=["red", "nir"], input_tile_size=[64, 64], output_bands={"x": {"type": "float"}}
    )
    panel.add_model("broken", bad)
    panel.wait()
    assert panel.model_picker.value == "broken"
    tile = tile_at(*center, Z)
    (reply,) = panel.view.fetch([tile])
    assert reply.status == "error"
    assert "sensor calibration table missing" in panel.status_text
    # A model that cannot even be applied to this image (no such band): the error names it.
    panel.add_model(
        "wrong bands",
        emw.Model.from_callable(lambda b: b["B9"], input_names=["red", "B9"], input_tile_size=[64, 64]),
    )
    panel.wait()
    assert "B9" in panel.status_text and not panel.layer.visible
    # Everything else keeps working: palette, region, and a good model again.
    panel.palette.value = "magma"
    show(panel, model_picker="fcn")
    assert (
        panel.layer.visible
        and "sensor calibration" not in panel.status_text
        and "B9" not in panel.status_text
    )
    assert shown_tile(panel, tile).shape == (256, 256, 4)
    show(panel, palette="YlGn")


def test_controls_return_at_once_while_the_work_runs_in_the_background(panel):
    import threading

    gate = threading.Event()

    def slow(inputs):
        gate.wait(30)
        return inputs["array"][..., :1]

    model = emw.Model.from_callable(slow, input_tile_size=[64, 64])  # probes its output: a model call
    panel.add_model("slow", model, select=False)
    panel.model_picker.value = "slow"  # returns although the model is blocked
    assert panel._jobs.busy() and "Predicting with slow" in panel.status_text
    panel.opacity.value = 0.5  # other controls still respond
    assert panel.layer.opacity == 0.5
    gate.set()
    show(panel, opacity=1.0, model_picker="fcn")


# ---- split map -----------------------------------------------------------------------------------------


def test_compare_splits_the_map_between_two_settings(panel, scene, center):
    show(panel, model_picker="fcn", fix_input_proj=False)
    show(panel, compare=True)
    assert panel.split_control in panel.map.controls and panel.layer not in panel.map.layers
    assert (
        panel.split_control.left_layer is panel.layer
        and panel.split_control.right_layer is panel.compare_layer
    )
    # Out of the box: the same model with fixInputProj the other way round.
    assert panel.compare_model.value == "fcn" and panel.compare_prediction.params.fix_input_proj is True
    view = HeadlessView(panel.compare_layer)
    tile = tile_at(*center, Z)
    (reply,) = view.fetch([tile])
    expected = demo.model("fcn", fix_input_proj=True).predict_image(scene, cache=None)
    assert_looks_like(
        decode(reply.png), render(expected.tile(*tile), panel.layer.vis_params, band_names=["ndvi_smooth"])
    )
    # Another model on the right: its band differs, so it gets its own vis params.
    show(panel, compare_model="landcover")
    assert panel.compare_layer.vis_params["bands"] == ["landcover_class"]
    # The inspector reads both sides.
    panel.inspect(*center)
    assert "Compare: landcover" in panel.inspector.values
    show(panel, compare=False)
    assert panel.split_control is None and panel.layer in panel.map.layers
    assert panel.map.layers.index(panel.layer) == panel.map.layers.index(panel.scene_layer) + 1


# ---- adding models and images ---------------------------------------------------------------------------


def test_model_path_field_loads_a_keras_file(panel, tmp_path):
    import keras

    red = keras.Input(shape=(None, None, 1), name="red")
    nir = keras.Input(shape=(None, None, 1), name="nir")
    km = keras.Model([red, nir], keras.layers.Subtract()([nir, red]), name="nir_minus_red")
    path = tmp_path / "diff.keras"
    km.save(path)
    panel.model_path.value = str(path)
    panel.load_model_button.click()
    panel.wait()
    assert panel.model_picker.value == "nir_minus_red" and panel.layer.visible
    sample = panel.inspect(-67.64, -47.85)
    inputs = sample[f"Input: {panel.image_picker.value}"]
    assert sample["Prediction: nir_minus_red"]["output"] == pytest.approx(inputs["nir"] - inputs["red"])
    far = panel.inspect(10.0, 45.0)  # a click off the scene says so, not "masked" in every band
    assert far["Prediction: nir_minus_red"] == {"output": None}
    assert all(v is None for v in far[f"Input: {panel.image_picker.value}"].values())
    assert panel.inspector.html.value.count("outside this image") == 2
    assert "masked" not in panel.inspector.html.value
    panel.model_path.value = str(tmp_path / "nope.keras")
    panel.load_model_button.click()
    panel.wait()
    assert "nope.keras" in panel.status_text
    show(panel, model_picker="fcn")


def test_endpoint_field_connects_to_a_served_model(panel):
    from ee_model_widgets.serving.server import serve

    with serve(demo.model_path("ndvi"), name="ndvi") as handle:
        panel.endpoint.value = handle.url
        panel.connect_button.click()
        panel.wait()
        assert panel.model_picker.value == "ndvi (2)"  # the demo's "ndvi" stays as it is
        assert panel.error == "" and panel.layer.visible
        served = panel.prediction.to_numpy()
        local = demo.model("ndvi").predict_image(demo.scene(), cache=None).to_numpy()
        np.testing.assert_allclose(served.filled(np.nan), local.filled(np.nan), atol=1e-6)
        assert handle.stats["predict_requests"] > 0
    show(panel, model_picker="fcn")


def test_image_path_field_opens_a_geotiff(panel, scene, write_geotiff):
    arr = scene.to_numpy().filled(0)[:, 50:150, 100:250].astype("uint16")
    g = scene.grid
    path = write_geotiff(
        arr,
        name="crop.tif",
        crs=g.crs,
        transform=g.transform @ _translation(100, 50),
        descriptions=scene.band_names,
    )
    show(panel, model_picker="fcn")
    panel.image_path.value = str(path)
    panel.load_image_button.click()
    panel.wait()
    assert panel.image_picker.value == "crop.tif" and panel.scene_layer.image.band_names == scene.band_names
    assert panel.prediction.grid.width == 150 and panel.prediction.grid.height == 100
    assert panel.region is None and parse_bbox(panel.bbox.value) == pytest.approx(
        panel.image.bounds, abs=1e-6
    )
    show(panel, image_picker=panel.image_picker.options[0])
    assert panel.prediction.grid.width == 300


def _translation(c, r):
    from affine import Affine

    return Affine.translation(c, r)


# ---- explore() arguments -------------------------------------------------------------------------------


def test_explore_takes_models_image_and_region(scene, write_geotiff):
    g = scene.grid
    path = write_geotiff(
        scene.to_numpy().filled(0).astype("uint16"),
        name="scene.tif",
        crs=g.crs,
        transform=g.transform,
        descriptions=scene.band_names,
    )
    region = (-67.65, -47.86, -67.64, -47.85)
    p = emw.explore(models={"mine": demo.model("ndvi")}, image=str(path), region=region, basemap=None)
    try:
        p.wait()
        assert list(p.model_picker.options) == ["mine"] and p.image_picker.value == "scene.tif"
        assert p.region == region and p.region_preset.value == REGION_GIVEN
        assert p.error == "" and p.layer.visible and p.band.value == "ndvi"
    finally:
        p.close()
    with pytest.raises(emw.EEModelWidgetsError, match="west > east"):
        emw.explore(region=(-67.6, -47.86, -67.65, -47.85), basemap=None)
    # Latitude first: before, the panel took it and drew it near the South Pole, off the scene.
    with pytest.raises(emw.EEModelWidgetsError, match="With latitude and longitude swapped it would"):
        emw.explore(region=(-47.86, -67.65, -47.85, -67.64), basemap=None)
    with pytest.raises(emw.EEModelWidgetsError, match="takes emw.Models"):
        emw.explore(models=[42], basemap=None)


def test_class_band_image_reads_argmax_through_the_same_path(scene):
    pred = demo.model("landcover").predict_image(scene)
    img = ClassBandImage(pred)
    assert img.band_names[-1] == "landcover_class" and "landcover_class" in img.categorical_bands
    grid = pred.grid
    both = img.read(grid)
    np.testing.assert_array_equal(both[-1].data, np.argmax(pred.read(grid).data, axis=0))
    many = img.read_many([grid, grid], ["landcover_class"])
    np.testing.assert_array_equal(many[0], both[-1:])


def test_legends_are_drawn_from_the_vis_params():
    from ee_model_widgets.widgets.legend import legend_png

    classes = decode(
        legend_png(
            {"min": 0, "palette": ["3b3b5c", "28a028"], "categorical": True}, "cls", ["shadow", "vegetation"]
        )
    )
    colours = {tuple(px) for px in classes[..., :3].reshape(-1, 3)}
    assert (0x3B, 0x3B, 0x5C) in colours and (0x28, 0xA0, 0x28) in colours
    ramp = decode(legend_png({"min": 0, "max": 1, "palette": ["ff0000", "0000ff"]}, "band"))
    reds = (ramp[..., 0] > 240) & (ramp[..., 1] < 15) & (ramp[..., 2] < 15)
    blues = (ramp[..., 2] > 240) & (ramp[..., 0] < 15) & (ramp[..., 1] < 15)
    assert reds.any() and blues.any()
    # The ramp runs from min (left, red) to max (right, blue).
    assert np.nonzero(reds)[1].mean() < np.nonzero(blues)[1].mean()

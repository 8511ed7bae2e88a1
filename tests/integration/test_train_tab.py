"""The panel's Train tab without a browser: classes, clicks and drawings make labels, Train
makes `classifier vN` that streams in the class colours, split map, uncertainty, files.

Map clicks and drawings go through ipyleaflet's own handlers (what the browser's messages
trigger); tiles are real PNGs from the real layer through a HeadlessView. Expected pixels
come from the class colours and from the classifier run independently on the scene.
"""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from PIL import Image as PILImage
from rasterio.warp import transform as warp_transform

import ee_model_widgets as emw
from ee_model_widgets import demo
from ee_model_widgets.core.vis import parse_color
from ee_model_widgets.widgets.headless import HeadlessView


def decode(png: bytes) -> np.ndarray:
    return np.asarray(PILImage.open(io.BytesIO(png)).convert("RGBA"))


def tile_at(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    n = 2**z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return z, x, y


def click(panel, lon: float, lat: float) -> None:
    """What the browser sends for a click on the map."""
    panel.map._handle_leaflet_event(
        None, {"event": "interaction", "type": "click", "coordinates": [lat, lon]}, []
    )


def draw(panel, geometry: dict) -> None:
    """What the browser sends when a shape is drawn with the DrawControl."""
    feature = {"type": "Feature", "properties": {}, "geometry": geometry}
    panel.draw_control._handle_leaflet_event(None, {"event": "draw:created", "geo_json": feature}, [])


@pytest.fixture(scope="module")
def reference():
    """Landcover demo classes over the scene: where to click for 'shadow' and 'vegetation'."""
    scene = demo.scene()
    lc = np.asarray(demo.model("landcover").predict_image(scene).to_numpy()).argmax(axis=0)
    return scene, lc


def centres(scene, rows, cols):
    t = scene.grid.transform
    xs, ys = t @ (np.asarray(cols) + 0.5, np.asarray(rows) + 0.5)
    lon, lat = warp_transform(scene.grid.crs, "EPSG:4326", list(xs), list(ys))
    return list(zip(lon, lat))


@pytest.fixture(scope="module")
def panel():
    p = emw.explore(basemap=None)
    p.view = HeadlessView(p.layer)
    p.wait()
    yield p
    p.close()


def test_train_loop_through_the_tab(panel, reference, tmp_path):
    scene, lc = reference
    tab = panel.train
    assert "Train" in panel.tabs.titles
    assert "TrainTab(" in repr(tab) and "Panel(" in repr(panel)  # what a notebook shows as text/plain
    # Two classes, typed and added like a user does.
    tab.class_name.value, tab.class_color.value = "dark", "#0000ff"
    tab.add_class_button.click()
    tab.class_name.value, tab.class_color.value = "green", "#00ff00"
    tab.add_class_button.click()
    assert tab.labels.classes == ["dark", "green"] and tab.labels.colors == ["0000ff", "00ff00"]
    assert tab.class_picker.value == "green"

    rng = np.random.default_rng(0)
    tab.label_mode.value = True
    for k, cls in ((0, "dark"), (3, "green")):  # landcover: 0 shadow, 3 vegetation
        tab.class_picker.value = cls
        rows, cols = np.nonzero(lc == k)
        pick = rng.choice(rows.size, 15, replace=False)
        for lon, lat in centres(scene, rows[pick], cols[pick]):
            click(panel, lon, lat)
    assert tab.labels.counts() == {"dark": 15, "green": 15}
    # Markers on the map, coloured by class.
    fills = [m.fill_color for m in tab.label_group.layers]
    assert fills.count("#0000ff") == 15 and fills.count("#00ff00") == 15
    # Clicks in label mode do not move the inspector or the region.
    assert panel.marker_group.layers == ()
    # A drawn rectangle labels the pixels under it; undo takes it back.
    w, s, e, n = scene.bounds
    box = {
        "type": "Polygon",
        "coordinates": [[[w, s], [w + 1e-4, s], [w + 1e-4, s + 1e-4], [w, s + 1e-4], [w, s]]],
    }
    draw(panel, box)
    assert len(tab.labels) == 31 and tab.labels[-1]["geometry"]["type"] == "Polygon"
    assert panel.region_preset.value != "Drawn on the map" and panel.draw_control.data == []
    tab.undo_button.click()
    assert len(tab.labels) == 30 and len(tab.label_group.layers) == 30
    tab.label_mode.value = False

    # Train: progress, plot, a new model in the picker, shown at once in the class colours.
    tab.train_button.click()
    panel.wait(300)
    assert panel.error == "", panel.error
    assert tab.progress.value == tab.progress.max > 1 and tab.progress.bar_style == "success"
    assert tab.plot.value[:4] == b"\x89PNG"
    assert "classifier v1" in panel.model_picker.options and panel.model_picker.value == "classifier v1"
    assert panel.band.value == "classification" and panel.layer.visible
    assert "validation accuracy" in tab.summary.value and tab.confusion.value[:4] == b"\x89PNG"
    assert "classifier v1 trained in" in tab.message.value and "Not used" not in tab.message.value
    clf = tab.classifier
    tile = tile_at((w + e) / 2, (s + n) / 2, 15)
    (reply,) = panel.view.fetch([tile])
    assert reply.status == "ok", panel.layer.last_error
    rgba = decode(reply.png)
    # Independent reference: the classifier's class band on this tile, coloured by hand.
    classes = np.asarray(clf.model.predict_image(scene).tile(*tile)[-1])
    opaque = rgba[..., 3] > 0
    blue, green = (np.array(parse_color(c)[:3]) * 255 for c in ("#0000ff", "#00ff00"))
    is_blue = (np.abs(rgba[..., :3] - blue) <= 1).all(-1) & opaque
    is_green = (np.abs(rgba[..., :3] - green) <= 1).all(-1) & opaque
    assert (is_blue | is_green)[opaque].all() and is_blue.any() and is_green.any()
    valid = opaque
    assert np.mean((classes[valid] == 0) == is_blue[valid]) > 0.999
    assert panel.legend.value[:4] == b"\x89PNG" and len(panel.legend.value) > 1000

    # Uncertainty layer on and off.
    tab.uncertainty.value = True
    assert tab.uncertainty_layer in panel.map.layers
    u = tab.uncertainty_layer.image.tile(*tile)
    assert 0 <= float(u.min()) and float(u.max()) <= 1 and float(u.max()) > 0
    tab.uncertainty.value = False
    assert tab.uncertainty_layer not in panel.map.layers

    # Second round with more labels -> v2; the split map compares v2 with v1.
    tab.compare_previous.value = True
    for lon, lat in centres(scene, *np.nonzero(lc == 3))[:10]:
        tab.add_point(lon, lat, "green")
    tab.add_point(e + 0.01, n, "green")  # a click just off the scene: trained without, and said so
    tab.train_button.click()
    panel.wait(300)
    assert panel.error == "", panel.error
    assert panel.model_picker.value == "classifier v2"
    assert "classifier v2 trained in" in tab.message.value
    assert "Not used: 1 label outside the image" in tab.message.value
    assert panel.compare.value and panel.compare_model.value == "classifier v1"
    assert panel.split_control is not None
    assert (
        panel.split_control.left_layer is panel.layer
        and panel.split_control.right_layer is panel.compare_layer
    )
    v1_tile = panel.compare_layer.image.tile(*tile)
    np.testing.assert_array_equal(np.asarray(v1_tile[-1]), classes)

    # Save / load labels, export the model, the prepared model and the samples.
    tab.path.value = str(tmp_path / "labels.geojson")
    tab.save_button.click()
    saved = json.loads((tmp_path / "labels.geojson").read_text())
    assert saved == tab.labels.to_geojson() and len(saved["features"]) == 41
    tab.clear_button.click()
    assert len(tab.labels) == 0 and tab.label_group.layers == ()
    tab.load_button.click()
    assert tab.labels.to_geojson() == saved
    tab.export_dir.value = str(tmp_path / "export")
    tab.export_button.click()
    panel.wait(300)
    assert panel.error == "", panel.error
    names = sorted(p.name for p in (tmp_path / "export").iterdir())
    assert names == ["classifier.keras", "prepared", "samples.tfrecord.gz"]
    assert (tmp_path / "export" / "prepared" / "saved_model.pb").exists()
    # A bad path gets a message in the tab, not a traceback.
    tab.path.value = str(tmp_path / "missing.geojson")
    tab.load_button.click()
    assert "No such labels file" in tab.message.value

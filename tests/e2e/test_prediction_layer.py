"""The prediction layer in a real browser: right pixels, cancellation, errors, recolouring."""

from __future__ import annotations

import json
import time

import numpy as np

from ee_model_widgets import demo

from .harness import (
    NotebookPage,
    kernel_tiles,
    layer_diagnosis,
    wait_prediction_tiles,
    write_notebook,
)

VIS = {"min": 0.0, "max": 0.3, "palette": "viridis"}

SETUP = f"""
import json, time
import ipyleaflet
import ee_model_widgets as emw
from ee_model_widgets import demo

img = demo.scene()
model = demo.model("fcn")
pred = model.predict_image(img)
layer = emw.PredictionLayer(pred, vis_params={VIS!r})
w, s, e, n = img.bounds
m = ipyleaflet.Map(center=((s + n) / 2, (w + e) / 2), zoom=15, layers=(),
                   layout={{"width": "700px", "height": "500px"}})
m.add(layer)
m
"""


def open_layer_notebook(server, page, name, setup=SETUP) -> NotebookPage:
    write_notebook(server.root / name, [setup])
    nb = NotebookPage(page, server, name)
    nb.run_all()
    return nb


def background_rgb(nb: NotebookPage) -> tuple[int, int, int]:
    css = nb.page.evaluate(
        "() => getComputedStyle(document.querySelector('.leaflet-container')).backgroundColor"
    )
    return tuple(int(v) for v in css[css.index("(") + 1 : css.index(")")].split(",")[:3])


def kernel_json(nb: NotebookPage, expr: str):
    return json.loads(nb.run_code(f"print(json.dumps({expr}))").strip().splitlines()[-1])


def by_hand(tile: np.ma.MaskedArray, background) -> np.ndarray:
    """What a 0..0.3 viridis rendering of `tile` looks like over `background`, computed here with
    matplotlib's colormap (not with the package's rendering code): masked pixels show the background."""
    import matplotlib

    v = np.clip((tile[0].filled(0).astype(float) - VIS["min"]) / (VIS["max"] - VIS["min"]), 0, 1)
    rgb = matplotlib.colormaps["viridis"](v)[..., :3] * 255
    rgb[np.ma.getmaskarray(tile[0])] = background
    return rgb


def test_predicted_tiles_show_exactly_the_rendered_prediction(any_server, page):
    nb = open_layer_notebook(any_server, page, f"pred_{any_server.app}.ipynb")
    wait_prediction_tiles(page, 4, timeout=60, cls="ee-model-tile")  # kernel PNGs, not blank, not errors
    page.wait_for_function(  # and at least one of them lies fully inside the map, to be compared whole
        """() => [...document.querySelectorAll('.ee-model-tile .leaflet-tile.leaflet-tile-loaded')].some(img => {
            const m = img.closest('.leaflet-container').getBoundingClientRect(), r = img.getBoundingClientRect();
            return r.left >= m.left && r.top >= m.top && r.right <= m.right && r.bottom <= m.bottom; })""",
        timeout=60_000,
    )
    page.wait_for_timeout(600)  # Leaflet's fade-in
    tiles = nb.loaded_tiles()
    assert tiles, "no predicted tile fully inside the map"
    pred = demo.model("fcn").predict_image(demo.scene())
    bg = background_rgb(nb)
    checked = 0
    for zxy in tiles[:4]:
        z, x, y = map(int, zxy.split("/"))
        tile = pred.tile(z, x, y)
        if tile.count() < 0.2 * tile[0].size:
            continue
        shown = nb.tile_pixels(zxy).astype(float)
        diff = np.abs(shown - by_hand(tile, bg)).max(axis=-1)
        # 256-colour colormap lookup vs the float colour: a step of viridis is <= 6 per channel.
        assert (diff <= 6).mean() > 0.99, (zxy, (diff <= 6).mean())
        checked += 1
    assert checked >= 1
    stats = kernel_json(nb, "dict(done=layer.tiles_done, failed=layer.tiles_failed, err=layer.last_error)")
    assert stats["failed"] == 0 and stats["err"] == "" and stats["done"] >= len(tiles)


def test_rapid_zooms_cancel_stale_tiles_and_the_final_view_loads(lab_server, page):
    # A model slow enough that tiles queue up while the user zooms.
    setup = SETUP.replace(
        'model = demo.model("fcn")',
        'base = demo.model("fcn")\n'
        "def slow(inputs):\n"
        "    time.sleep(0.15)\n"
        "    return base.predict_batch(inputs)\n"
        "model = emw.Model.from_callable(slow, input_names=['red', 'nir'], **demo.MODEL_PARAMS['fcn'])",
    )
    nb = open_layer_notebook(lab_server, page, "zooms.ipynb", setup)
    box = nb.page.locator(".leaflet-container").first.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    for _ in range(3):  # zoom in three levels in quick succession, then back out one
        nb.page.mouse.dblclick(cx, cy)
        nb.page.wait_for_timeout(120)
    nb.page.keyboard.press("-")
    nb.page.wait_for_timeout(3000)
    nb.page.wait_for_function(
        """() => {
            const map = document.querySelector('.leaflet-container').getBoundingClientRect();
            const imgs = [...document.querySelectorAll('.ee-model-tile .leaflet-tile-container .leaflet-tile')].filter(img => {
                const r = img.getBoundingClientRect();
                return r.right > map.left && r.left < map.right && r.bottom > map.top && r.top < map.bottom
                    && getComputedStyle(img.parentElement).visibility !== 'hidden';
            });
            return imgs.length > 0 && imgs.every(img => img.classList.contains('leaflet-tile-loaded'));
        }""",
        timeout=60_000,
    )
    stats = kernel_json(
        nb, "dict(cancelled=layer.tiles_cancelled, failed=layer.tiles_failed, queued=layer.tiles_queued)"
    )
    assert stats["cancelled"] > 0, stats
    assert stats["failed"] == 0, stats


def test_a_failing_model_shows_error_tiles_and_last_error(lab_server, page):
    setup = SETUP.replace(
        'model = demo.model("fcn")',
        "def broken(inputs):\n"
        "    raise RuntimeError('the model file is corrupt')\n"
        "model = emw.Model.from_callable(broken, input_names=['red', 'nir'], **demo.MODEL_PARAMS['fcn'])",
    )
    nb = open_layer_notebook(lab_server, page, "broken.ipynb", setup)
    nb.wait_tiles(2)
    statuses = nb.page.evaluate(
        "() => [...document.querySelectorAll('.ee-model-tile .leaflet-tile.leaflet-tile-loaded')].map(i => i.dataset.status)"
    )
    assert statuses and all(s == "error" for s in statuses), statuses
    assert "the model file is corrupt" in kernel_json(nb, "layer.last_error")


def test_new_palette_recolours_from_cache_without_model_calls(lab_server, page):
    nb = open_layer_notebook(lab_server, page, "palette.ipynb")
    nb.wait_tiles(4)
    (zxy, *_) = nb.loaded_tiles()
    before_pixels = nb.tile_pixels(zxy)
    stats = "dict(calls=model.stats.calls, hits=layer.cache_hits, done=layer.tiles_done)"
    before = kernel_json(nb, stats)
    nb.run_code("layer.vis_params = {'min': 0.0, 'max': 0.3, 'palette': ['000000', 'ff0000']}")
    nb.page.wait_for_timeout(500)
    nb.wait_tiles(4)
    after = kernel_json(nb, stats)
    # Recoloured in the browser from the values its tiles hold: no model call, and no tile was
    # asked for again (not even from the kernel's cache).
    assert after == before, (before, after)
    after_pixels = nb.tile_pixels(zxy)
    assert np.abs(after_pixels.astype(int) - before_pixels.astype(int)).mean() > 10
    # The tiles are black-to-red now: no green or blue left.
    assert after_pixels[..., 1:].max() <= 221


SCENE_LAYER = """
import json, time
import ipyleaflet
import ee_model_widgets as emw
from ee_model_widgets import demo

img = demo.scene()
layer = emw.PredictionLayer(img, vis_params={"bands": ["nir"], "min": 700, "max": 3100, "palette": ["000000", "00ff00"]})
w, s, e, n = img.bounds
m = ipyleaflet.Map(center=((s + n) / 2, (w + e) / 2), zoom=15, layers=(),
                   layout={"width": "700px", "height": "500px"})
m.add(layer)
m
"""

# What a lost comm message does: the kernel's `_style` changes, the browser never hears of it.
# The first answer to the browser's "send the style again" is lost too.
LOSE_STYLE = """
dropped = []
def lossy_send_state(key=None, _send_state=layer.send_state):
    if key == "_style":
        dropped.append(key)
        return
    _send_state(key)
layer.send_state = lossy_send_state
layer.vis_params = {"bands": ["red"], "min": 600, "max": 2700, "palette": ["000000", "ff0000"]}
print(layer._style["version"])
"""


LAYER = "ee-model-tile"  # a PredictionLayer's own class


def test_tiles_waiting_for_a_lost_style_ask_for_it_until_it_comes(lab_server, page):
    nb = open_layer_notebook(lab_server, page, "lost_style.ipynb", SCENE_LAYER)
    before = wait_prediction_tiles(page, 4, timeout=60, cls=LAYER)
    version = int(nb.run_code(LOSE_STYLE).strip().splitlines()[-1])
    # The redraw that follows names the new style, but the style itself does not come (the map
    # shows its cached near-infrared tiles meanwhile): the change and the browser's first
    # "style_sync" answer are both dropped.
    deadline = time.monotonic() + 30
    while kernel_json(nb, "len(dropped)") < 2:
        assert time.monotonic() < deadline, "the style was not asked for again: " + layer_diagnosis(
            page, LAYER
        )
        page.wait_for_timeout(250)
    assert not kernel_tiles(page, LAYER, style=str(version))
    nb.run_code("del layer.send_state")  # the kernel's messages get through again
    deadline = time.monotonic() + 20
    while len(after := kernel_tiles(page, LAYER, style=str(version))) < 4:
        assert time.monotonic() < deadline, "tiles still wait for their style: " + layer_diagnosis(
            page, LAYER
        )
        page.wait_for_timeout(250)
    # Drawn from the red band in black to red now, not the near-infrared in black to green as before.
    assert all(rgba[..., 1].max() > 100 for rgba in before.values())
    for zxy, rgba in after.items():
        drawn = rgba[..., 3] > 0
        assert drawn.mean() > 0.05 and rgba[..., 0][drawn].max() > 100, zxy
        assert rgba[..., 1].max() == 0, zxy

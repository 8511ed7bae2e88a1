"""Tiles shown again come from the browser's cache of tile values, and never outlive their data.

A real JupyterLab in a real Chromium shows a model's prediction of known values (2x2 tiles at
zoom Z). Zooming in and back out makes Leaflet create the zoom-Z tiles again: they must show
exactly `render()` of the values the kernel reads, without a single tile request reaching the
kernel (its scheduler counts every request it gets). After a new model, and after `refresh()`,
the cache must not be used: the tiles are asked for again and show the new prediction, and a
zoom in and out afterwards re-shows the new values, not the old ones.
"""

from __future__ import annotations

import json
import time

import numpy as np

from ee_model_widgets.core.vis import render

from .harness import NotebookPage, kernel_tiles, layer_diagnosis, write_notebook

CLS = "emw-prediction"
Z = 12
ZOOM_Z = [f"{Z}/{2000 + i}/{1500 + j}" for i in (0, 1) for j in (0, 1)]
VIS = {"min": -0.5, "max": 1.5, "palette": "viridis"}
SETUP = f"""
import json, numpy as np, ipyleaflet
import ee_model_widgets as emw
from affine import Affine
from ee_model_widgets.core.grid import MERCATOR_HALF_WORLD, xyz_grid
Z, X0, Y0 = {Z}, 2000, 1500  # the image is exactly tiles X0..X0+1, Y0..Y0+1 of zoom Z
rng = np.random.default_rng(7)
arr = rng.normal(0.5, 0.5, (1, 512, 512)).astype("float32")
span = 2 * MERCATOR_HALF_WORLD / 2**Z
transform = Affine(span / 256, 0, -MERCATOR_HALF_WORLD + X0 * span, 0, -span / 256, MERCATOR_HALF_WORLD - Y0 * span)
img = emw.Image.from_array(arr, transform=transform, crs="EPSG:3857", band_names=["a"])
def model(fn):
    return emw.Model.from_callable(fn, input_tile_size=[256, 256])
layer = emw.PredictionLayer(model(lambda x: x["array"][..., :1]).predict_image(img), vis_params={VIS!r},
                            class_name="ee-model-tile {CLS}")
def requests():  # every tile request the kernel got: answered, failed, cancelled or waiting
    return sum(layer.scheduler.snapshot()[k] for k in ("done", "failed", "cancelled", "queued", "running"))
def save(tag):  # the values the kernel reads for the zoom-Z tiles
    for (x, y) in [(X0 + i, Y0 + j) for i in (0, 1) for j in (0, 1)]:
        a = layer.image.read(xyz_grid(Z, x, y))
        np.save(f"{{tag}}_{{x}}_{{y}}.npy", np.ma.filled(a.astype(np.float32), np.nan))
w, s, e, n = img.bounds
m = ipyleaflet.Map(center=((s + n) / 2, (w + e) / 2), zoom=Z, layers=(), layout={{"width": "500px", "height": "500px"}})
m.add(layer)
m
"""

_SOURCES_JS = """(cls) => Object.fromEntries([...document.querySelectorAll(`.${cls} canvas.leaflet-tile`)]
    .map(t => [t.dataset.zxy, t.dataset.source || '']))"""


def expected_pixels(nb: NotebookPage, tag: str) -> dict[str, np.ndarray]:
    """render() of the values the kernel reads for the zoom-Z tiles of the layer's current image."""
    nb.run_code(f"save({tag!r})")
    out = {}
    for zxy in ZOOM_Z:
        _, x, y = zxy.split("/")
        values = np.load(nb.server.root / f"{tag}_{x}_{y}.npy")
        rgba = render(values, VIS)
        assert (rgba[..., 3] > 0).mean() > 0.9 and rgba[..., :3].std() > 10  # a blank tile fails
        out[zxy] = rgba
    return out


def requests(nb: NotebookPage) -> int:
    return json.loads(nb.run_code("print(json.dumps(requests()))").strip().splitlines()[-1])


def wait_shown(nb: NotebookPage, expected: dict[str, np.ndarray], timeout: float = 60) -> dict[str, str]:
    """Wait until the zoom-Z tiles show exactly `expected` (status 'ok'); return where each came from."""
    end = time.monotonic() + timeout
    while True:
        tiles = kernel_tiles(nb.page, CLS)
        if all(zxy in tiles and np.array_equal(tiles[zxy], rgba) for zxy, rgba in expected.items()):
            sources = nb.page.evaluate(_SOURCES_JS, CLS)
            return {zxy: sources.get(zxy, "") for zxy in expected}
        if time.monotonic() > end:
            state = {
                zxy: "missing" if zxy not in tiles else int((tiles[zxy] != rgba).any(axis=-1).sum())
                for zxy, rgba in expected.items()
            }
            raise AssertionError(
                f"tiles not as expected (differing pixels): {state}; {layer_diagnosis(nb.page, CLS)}"
            )
        nb.page.wait_for_timeout(100)


def zoom(nb: NotebookPage, key: str, level: int) -> None:
    """Press + or - on the map, then wait until only tiles of `level` are left, every one drawn 'ok'."""
    nb.page.focus(".leaflet-container")
    nb.page.keyboard.press(key)
    nb.page.wait_for_function(
        """([cls, level]) => {
            const tiles = [...document.querySelectorAll(`.${cls} canvas.leaflet-tile`)];
            return tiles.length >= 4 && tiles.every(t => t.dataset.zxy.startsWith(`${level}/`)
                && t.classList.contains('leaflet-tile-loaded') && t.dataset.status === 'ok');
        }""",
        arg=[CLS, level],
        timeout=60_000,
    )


def test_tiles_shown_again_come_from_the_browser_cache_until_the_data_change(lab_server, page):
    write_notebook(lab_server.root / "tile_cache.ipynb", [SETUP])
    nb = NotebookPage(page, lab_server, "tile_cache.ipynb")
    nb.run_all()
    first = expected_pixels(nb, "first")
    assert set(wait_shown(nb, first).values()) == {"kernel"}

    # Zoom in (Leaflet unloads the zoom-Z tiles once the new ones are drawn), then back out.
    zoom(nb, "Equal", Z + 1)
    asked = requests(nb)
    zoom(nb, "Minus", Z)
    assert set(wait_shown(nb, first).values()) == {"cache"}  # drawn from the cache, with the right pixels
    nb.page.wait_for_timeout(500)  # a request, had one been sent, would be counted by now
    assert requests(nb) == asked

    # A new model: the tiles are asked for again and show its prediction, not the cached one.
    asked = requests(nb)
    # Inside hold_sync (as when a tile worker publishes its counts at that moment), the view gets
    # the `redraw` before the layer's new traits: the tiles it makes again must not be cached ones.
    nb.run_code(
        'with layer.hold_sync():\n    layer.image = model(lambda x: 1.2 - x["array"][..., :1]).predict_image(img)'
    )
    second = expected_pixels(nb, "second")
    assert all(np.abs(second[k].astype(int) - first[k]).max() > 50 for k in ZOOM_Z)  # visibly new
    assert set(wait_shown(nb, second).values()) == {"kernel"}
    assert requests(nb) >= asked + len(ZOOM_Z)
    # Shown again after a zoom in and out: the new values, from the cache.
    zoom(nb, "Equal", Z + 1)
    asked = requests(nb)
    zoom(nb, "Minus", Z)
    assert set(wait_shown(nb, second).values()) == {"cache"}
    nb.page.wait_for_timeout(500)
    assert requests(nb) == asked

    # refresh() in the kernel (the layer forgets its tile arrays): the browser asks again too.
    nb.run_code("layer.refresh()")
    assert set(wait_shown(nb, second).values()) == {"kernel"}
    assert requests(nb) >= asked + len(ZOOM_Z)

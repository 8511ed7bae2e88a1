"""The Train tab in a real JupyterLab 4 and a real Chromium: add two classes, click labels on
the demo scene, press Train, and the map shows prediction tiles in the two class colours;
a second round gives `classifier v2`, and the split map shows v1 and v2.

Clicks land where the demo land-cover model says "shadow" (whole 5x5 neighbourhoods, so a
pixel of click rounding cannot change the class) or "vegetation". Tiles are counted on the
prediction layer only (`.emw-prediction`, answered `ok`), and their pixels must be the class
colours and match the kernel's own rendering of the classifier, so a blank or error tile fails.
The run also saves the Train tab's screenshot in tests/e2e/artifacts/, and into
docs/train_tab.png (the README's picture) when EMW_UPDATE_DOCS=1.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from .test_panel import (
    expected_tiles,
    kernel,
    kernel_json,
    open_explorer,
    settled,
    shown,
    tab,
    to_view,
    visible_tiles,
)

_ROOT = Path(__file__).resolve().parents[2]
DOCS_SHOT = (
    _ROOT / "docs" / "train_tab.png"
    if os.environ.get("EMW_UPDATE_DOCS") == "1"
    else _ROOT / "tests" / "e2e" / "artifacts" / "train_tab.png"
)
COLOURS = {"shadow": "#3b3b5c", "vegetation": "#28a028"}

PICK = """
import json
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from rasterio.warp import transform as _t
_scene = emw.demo.scene()
_lc = np.asarray(emw.demo.model('landcover').predict_image(_scene).to_numpy()).argmax(0)
_rng = np.random.default_rng({seed})
_out = {{}}
for _k, _name in ((0, 'shadow'), (3, 'vegetation')):
    _win = sliding_window_view(_lc, (5, 5))
    _rows, _cols = np.nonzero((_win == _k).all(axis=(-1, -2)))
    _pick = _rng.choice(_rows.size, {n}, replace=False)
    _g = _scene.grid
    _xs, _ys = _g.transform @ (_cols[_pick] + 2.5, _rows[_pick] + 2.5)
    _lon, _lat = _t(_g.crs, 'EPSG:4326', list(_xs), list(_ys))
    _out[_name] = list(zip(_lon, _lat))
print(json.dumps(_out))
"""


def merc_y(lat: float) -> float:
    return math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))


def click_labels(page, nb, n: int, seed: int) -> None:
    """Click `n` places of each class on the map, with that class picked."""
    places = kernel_json(nb, PICK.format(n=n, seed=seed))
    south, west, north, east = kernel_json(
        nb, "print(json.dumps([panel.map.south, panel.map.west, panel.map.north, panel.map.east]))"
    )
    to_view(page)
    box = page.locator(".emw-map").bounding_box()
    for name, points in places.items():
        page.select_option(".emw-train-class-picker select", name)
        for lon, lat in points:
            x = box["x"] + (lon - west) / (east - west) * box["width"]
            y = box["y"] + (merc_y(north) - merc_y(lat)) / (merc_y(north) - merc_y(south)) * box["height"]
            page.mouse.click(x, y)
            page.wait_for_timeout(150)
    counts = kernel_json(nb, "print(json.dumps(panel.train.labels.counts()))")
    assert set(counts) == set(COLOURS) and min(counts.values()) >= n, counts


def train(page, nb, version: int) -> None:
    page.locator(".emw-train-button").click()
    out = kernel(nb, "panel.wait(300); print(panel.model_picker.value, '|', repr(panel.error))")
    assert out.splitlines()[-1] == f"classifier v{version} | ''", out
    to_view(page)
    settled(page)


def class_colour_tiles(page, nb) -> dict:
    """Prediction tiles fully in view: their pixels are the class colours, as the kernel renders them."""
    zxys = visible_tiles(page)
    assert zxys, "no prediction tile fully in view"
    expected = expected_tiles(nb, zxys)
    to_view(page)
    rgb_colours = [np.array([int(c[i : i + 2], 16) for i in (1, 3, 5)]) for c in COLOURS.values()]
    seen = np.zeros(2, int)
    for zxy in zxys:
        rgb, free = shown(page, zxy)
        opaque = (expected[zxy][..., 3] == 255) & free
        if opaque.mean() < 0.2:
            continue
        diff = np.abs(rgb.astype(int) - expected[zxy][..., :3].astype(int)).max(axis=-1)[opaque]
        # Lossless PNG; only the label markers (small circles) may cover a few pixels.
        assert (diff <= 3).mean() > 0.97, (zxy, (diff <= 3).mean())
        near = [(np.abs(rgb.astype(int) - c).max(axis=-1) <= 3)[opaque] for c in rgb_colours]
        assert (near[0] | near[1]).mean() > 0.97, zxy  # nothing but the two class colours
        seen += [int(m.sum()) for m in near]
    assert (seen > 500).all(), f"pixels of each class colour: {seen}"
    return dict(zip(COLOURS, seen))


@pytest.fixture(scope="module")
def explorer(browser, lab_server):
    yield from open_explorer(
        browser, lab_server, "train_e2e.ipynb", "import json\nimport ee_model_widgets as emw"
    )


def test_label_train_see_retrain_compare(explorer):
    page, nb = explorer
    to_view(page)
    tab(page, "Train")
    for name, colour in COLOURS.items():
        page.locator(".emw-train-class-name input").fill(name)
        page.locator(".emw-train-class-color input[type=color]").fill(colour)
        page.locator(".emw-train-add-class").click()
        page.wait_for_timeout(300)
    state = kernel_json(nb, "print(json.dumps([panel.train.labels.classes, panel.train.labels.colors]))")
    assert state == [list(COLOURS), [c[1:] for c in COLOURS.values()]]
    page.locator(".emw-train-label-mode").click()
    click_labels(page, nb, 12, seed=0)
    # Markers in the class colours are on the map.
    fills = page.evaluate(
        "() => [...document.querySelectorAll('.emw-map path.leaflet-interactive')].map(p => p.getAttribute('fill'))"
    )
    assert (
        sum(f == COLOURS["shadow"] for f in fills) >= 12
        and sum(f == COLOURS["vegetation"] for f in fills) >= 12
    ), fills

    train(page, nb, 1)
    seen = class_colour_tiles(page, nb)
    assert page.locator(".emw-train-summary").inner_text().count("validation accuracy") == 1
    # The README's screenshot: the whole panel (a taller window), without JupyterLab's news toast.
    page.set_viewport_size({"width": 1280, "height": 1300})
    page.evaluate("() => document.querySelectorAll('.Toastify__toast-container').forEach(t => t.remove())")
    to_view(page)
    tab(page, "Train")
    DOCS_SHOT.parent.mkdir(parents=True, exist_ok=True)
    page.locator(".emw-panel").screenshot(path=str(DOCS_SHOT))
    page.set_viewport_size({"width": 1280, "height": 900})

    # Second round: more labels, Train -> v2; the split map compares v2 (left) with v1 (right).
    click_labels(page, nb, 6, seed=1)
    page.locator(".emw-train-compare input").check()
    train(page, nb, 2)
    assert "classifier v1" in kernel(
        nb, "panel.wait(); print(panel.compare_model.value, panel.compare.value)"
    )
    page.wait_for_selector(".leaflet-sbs-divider", timeout=30_000)
    settled(page, "emw-compare")
    compare_ok = page.evaluate(
        "() => [...document.querySelectorAll('.emw-compare .leaflet-tile')].filter(i => i.dataset.status === 'ok').length"
    )
    assert compare_ok >= 1
    left = kernel(
        nb,
        "print(panel.split_control.left_layer is panel.layer, panel.split_control.right_layer is panel.compare_layer)",
    )
    assert left.splitlines()[-1] == "True True"
    assert seen

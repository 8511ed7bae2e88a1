"""The Model Explorer in a real JupyterLab 4 and a real Chromium, driven like a user would.

One notebook runs `emw.explore()`; the tests then use the panel's own controls (dropdowns,
checkbox, map clicks, the rectangle tool, the export button) and compare what the browser
shows with what the kernel computes: tile pixels against kernel-rendered tiles of the
expected prediction, inspector text against `to_numpy`, the exported file against `to_numpy`.
The run also saves the panel's screenshot in tests/e2e/artifacts/, and into docs/panel.png (the
README's picture) when EMW_UPDATE_DOCS=1, so an ordinary test run leaves the work tree clean.
"""

from __future__ import annotations

import io
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image as PILImage

from .harness import NotebookPage, kernel_tiles, write_notebook

_ROOT = Path(__file__).resolve().parents[2]
DOCS_SHOT = (
    _ROOT / "docs" / "panel.png"
    if os.environ.get("EMW_UPDATE_DOCS") == "1"
    else _ROOT / "tests" / "e2e" / "artifacts" / "panel.png"
)
PRED = "emw-prediction"
# Panes and controls drawn over the map's tiles (vector overlays, markers, the split-map handle).
_OVER_TILES = (
    ".emw-map .leaflet-overlay-pane, .emw-map .leaflet-marker-pane, .emw-map .leaflet-shadow-pane,"
    " .emw-map .leaflet-sbs-range"
)


# ---- browser helpers --------------------------------------------------------------------------------


def settled(page, cls: str = PRED, timeout: float = 90) -> None:
    """Wait until every tile of layer `.cls` has an answer (none pending) and some are drawn."""
    page.wait_for_function(
        f"""() => {{
            const imgs = [...document.querySelectorAll('.{cls} .leaflet-tile')];
            return imgs.length > 0 && imgs.every(i => i.dataset.status && i.dataset.status !== 'pending')
                && imgs.some(i => i.classList.contains('leaflet-tile-loaded'));
        }}""",
        timeout=timeout * 1000,
    )
    page.wait_for_timeout(700)  # Leaflet's fade-in


def visible_tiles(page, cls: str = PRED) -> list[str]:
    """z/x/y of loaded tiles of `.cls` lying fully inside the map."""
    return page.evaluate(
        f"""() => {{
            const out = [];
            for (const img of document.querySelectorAll('.{cls} .leaflet-tile.leaflet-tile-loaded')) {{
                if (img.dataset.status !== 'ok') continue;
                const map = img.closest('.leaflet-container').getBoundingClientRect();
                const r = img.getBoundingClientRect();
                if (r.left >= map.left && r.top >= map.top && r.right <= map.right && r.bottom <= map.bottom)
                    out.push(img.dataset.zxy);
            }}
            return out;
        }}"""
    )


def shown(page, zxy: str, cls: str = PRED) -> tuple[np.ndarray, np.ndarray]:
    """(RGB pixels of the tile's box as displayed, mask of pixels not covered by a map control)."""
    box = page.locator(f'.{cls} .leaflet-tile[data-zxy="{zxy}"]').first.bounding_box()
    x0, y0 = round(box["x"]), round(box["y"])
    # What is drawn over the tiles is not the tile: the region outline, the inspected point and the
    # split handle are hidden for the shot (they cross the tiles once a region is drawn mid-map).
    show_over_tiles = "([sel, v]) => document.querySelectorAll(sel).forEach(e => e.style.visibility = v)"
    page.evaluate(show_over_tiles, [_OVER_TILES, "hidden"])
    try:
        png = page.screenshot(clip={"x": x0, "y": y0, "width": 256, "height": 256})
    finally:
        page.evaluate(show_over_tiles, [_OVER_TILES, ""])
    rgb = np.asarray(PILImage.open(io.BytesIO(png)).convert("RGB"))
    free = np.ones((256, 256), bool)
    for r in page.evaluate(
        "() => [...document.querySelectorAll('.emw-map .leaflet-control')].map(e => {"
        " const b = e.getBoundingClientRect(); return [b.left, b.top, b.right, b.bottom]; })"
    ):
        c0, r0 = max(0, math.floor(r[0] - x0) - 2), max(0, math.floor(r[1] - y0) - 2)
        c1, r1 = min(256, math.ceil(r[2] - x0) + 2), min(256, math.ceil(r[3] - y0) + 2)
        if c0 < c1 and r0 < r1:
            free[r0:r1, c0:c1] = False
    return rgb, free


def tab(page, title: str) -> None:
    page.locator(".emw-panel .lm-TabBar-tab", has_text=title).first.click()
    page.wait_for_timeout(200)


def to_view(page) -> None:
    """Scroll the notebook so the whole panel is on screen (running cells scrolls it away)."""
    page.locator(".emw-panel").evaluate("e => e.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(300)


def kernel(nb: NotebookPage, code: str) -> str:
    """Run `code` in the notebook's kernel; its printed output (fails if the code raised)."""
    out = nb.run_code(code + "\nprint('__done__')", timeout=180)
    assert "__done__" in out, f"kernel code failed: {out}"
    return out.replace("__done__", "").strip()


def kernel_sees(nb: NotebookPage, expr: str, want: str, timeout: float = 30) -> None:
    """Wait until `expr` prints `want` in the kernel: a control changed in the browser reaches the
    kernel as a widget message over a kernel subshell, which nothing orders before the next cell."""
    deadline = time.monotonic() + timeout
    while (got := kernel(nb, f"print({expr})").splitlines()[-1]) != want:
        assert time.monotonic() < deadline, f"the kernel still has {expr} == {got!r}, not {want!r}"
        time.sleep(0.5)


def kernel_json(nb: NotebookPage, code: str):
    """Run `code`, which prints one JSON document last, and return it."""
    lines = [line for line in kernel(nb, code).splitlines() if line.startswith(("{", "["))]
    assert lines, "no JSON printed"
    return json.loads(lines[-1])


def expected_tiles(nb: NotebookPage, zxys: list[str], image_expr: str = "panel.layer.image") -> dict:
    """Kernel-rendered RGBA of `image_expr` at these tiles with the layer's vis params."""
    nb.run_code(
        "from ee_model_widgets.core.vis import render as _render, to_png as _to_png\n"
        f"_img = {image_expr}\n"
        "_vis = dict(panel.layer.vis_params)\n"
        f"for _zxy in {zxys!r}:\n"
        "    _z, _x, _y = map(int, _zxy.split('/'))\n"
        "    open(f'exp_{_z}_{_x}_{_y}.png', 'wb').write(_to_png(_render(_img.tile(_z, _x, _y), _vis, band_names=_img.band_names)))\n"
        "print('done')",
        timeout=180,
    )
    out = {}
    for zxy in zxys:
        z, x, y = zxy.split("/")
        path = nb.server.root / f"exp_{z}_{x}_{y}.png"
        out[zxy] = np.asarray(PILImage.open(path).convert("RGBA"))
    return out


def opaque_tiles(page, nb, image_expr="panel.layer.image", min_opaque=0.2) -> dict:
    """{zxy: (shown RGB, comparable mask, expected RGBA)} for visible tiles mostly covered by data."""
    zxys = visible_tiles(page)
    assert zxys, "no prediction tile fully inside the map"
    exp = expected_tiles(nb, zxys, image_expr)
    to_view(page)
    out = {}
    for zxy in zxys:
        rgba = exp[zxy]
        opaque = rgba[..., 3] == 255
        if opaque.mean() < min_opaque:
            continue
        rgb, free = shown(page, zxy)
        out[zxy] = (rgb, opaque & free, rgba)
    assert out, f"no visible tile is {min_opaque:.0%} covered by predictions: {zxys}"
    return out


def assert_shows(tiles: dict) -> None:
    """The browser shows the expected pixels wherever the prediction is opaque and uncovered."""
    for zxy, (rgb, mask, rgba) in tiles.items():
        diff = np.abs(rgb.astype(int) - rgba[..., :3].astype(int)).max(axis=-1)[mask]
        assert diff.size > 5000, zxy
        # Lossless PNG, no scaling, overlays hidden: the tile's own pixels.
        assert (diff <= 3).mean() > 0.97, (zxy, (diff <= 3).mean())


def changed(before: dict, after: dict, min_fraction: float) -> float:
    fractions = []
    for zxy in set(before) & set(after):
        a, mask, _ = after[zxy]
        b, mask_b, _ = before[zxy]
        m = mask & mask_b
        fractions.append((np.abs(a.astype(int) - b.astype(int)).max(axis=-1)[m] > 3).mean())
    assert fractions, "no common tile before and after"
    assert max(fractions) > min_fraction, fractions
    return max(fractions)


# ---- the notebook -----------------------------------------------------------------------------------


def open_explorer(browser, lab_server, name: str, imports: str = "import ee_model_widgets as emw"):
    """A notebook showing `emw.explore()` in JupyterLab, its predictions drawn; yields (page, nb)."""
    write_notebook(lab_server.root / name, [f"{imports}\npanel = emw.explore()\npanel"])
    context = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
    page = context.new_page()
    nb = NotebookPage(page, lab_server, name)
    page.evaluate("() => window.jupyterapp.commands.execute('application:toggle-left-area')")
    nb.run_all()
    out = nb.run_code("panel.wait(180); print(panel.status_text)", timeout=240)
    assert "landcover" in out, out
    to_view(page)
    settled(page)
    yield page, nb
    context.close()


@pytest.fixture(scope="module")
def explorer(browser, lab_server):
    yield from open_explorer(browser, lab_server, "explorer_e2e.ipynb")


def test_explore_shows_the_map_with_demo_predictions(explorer):
    page, nb = explorer
    to_view(page)
    tiles = opaque_tiles(page, nb)
    assert_shows(tiles)
    status = page.locator(".emw-status").inner_text()
    assert "landcover" in status and "failed" in status
    legend = page.locator(".emw-legend").bounding_box()
    assert legend["width"] > 50 and legend["height"] > 40  # the class legend is on the map
    assert "vegetation" not in status  # (names are in the PNG legend, not text)
    DOCS_SHOT.parent.mkdir(parents=True, exist_ok=True)
    page.locator(".emw-panel").screenshot(path=str(DOCS_SHOT))
    assert not [c for c in nb.console if "ee-model-widgets" in c and "error" in c.lower()]


def test_model_fix_input_proj_and_palette_each_change_the_tiles(explorer):
    page, nb = explorer
    to_view(page)
    tab(page, "Model")
    before = opaque_tiles(page, nb)
    page.select_option(".emw-model-picker select", "fcn")
    kernel_sees(nb, "panel.model_picker.value", "fcn")
    assert "fcn" in kernel(nb, "panel.wait(); print(panel.model_picker.value, panel.error)")
    to_view(page)
    settled(page)
    fcn = opaque_tiles(page, nb, "emw.demo.model('fcn').predict_image(emw.demo.scene(), cache=None)")
    assert_shows(fcn)
    changed(before, fcn, 0.5)

    page.locator(".emw-fix-input-proj input").check()
    kernel_sees(nb, "panel.fix_input_proj.value", "True")
    out = kernel(nb, "panel.wait(); print(panel.prediction.params.fix_input_proj)")
    assert out.splitlines()[-1] == "True", out
    to_view(page)
    settled(page)
    fixed = opaque_tiles(
        page, nb, "emw.demo.model('fcn', fix_input_proj=True).predict_image(emw.demo.scene(), cache=None)"
    )
    assert_shows(fixed)
    changed(fcn, fixed, 0.03)  # the model now sees 10 m pixels instead of the map's

    tab(page, "Display")
    page.select_option(".emw-palette select", "magma")
    kernel_sees(nb, "panel.palette.value", "magma")
    assert "magma" in kernel(nb, "panel.wait(); print(panel.layer.vis_params['palette'])")
    to_view(page)
    settled(page)
    magma = opaque_tiles(page, nb)
    assert_shows(magma)
    changed(fixed, magma, 0.5)
    tab(page, "Model")


def test_a_click_fills_the_inspector_with_to_numpy_values(explorer):
    page, nb = explorer
    to_view(page)
    tab(page, "Inspect")
    box = page.locator(".emw-map").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.45)
    page.wait_for_selector(".emw-inspector .emw-value", timeout=60_000)
    kernel(nb, "panel.wait(); print('ok')")
    page.wait_for_timeout(300)
    shown_values = page.evaluate(
        "() => Object.fromEntries([...document.querySelectorAll('.emw-inspector [data-section]')].map(s =>"
        " [s.dataset.section, Object.fromEntries([...s.querySelectorAll('.emw-value')].map(v =>"
        " [v.dataset.band, v.textContent]))]))"
    )
    truth = kernel_json(
        nb,
        "import json, math\n"
        "from rasterio.warp import transform as _t\n"
        "_v = panel.inspector.values\n"
        "def _at(img):\n"
        "    g = img.grid\n"
        "    (x,), (y,) = _t('EPSG:4326', g.crs, [_v['lon']], [_v['lat']])\n"
        "    c, r = (int(math.floor(q)) for q in ~g.transform @ (x, y))\n"
        "    a = img.to_numpy()\n"
        "    return {b: (None if a.mask[i, r, c] else float(a[i, r, c])) for i, b in enumerate(img.band_names)}\n"
        "print(json.dumps({'pred': _at(panel.prediction), 'input': _at(panel.image), 'lon': _v['lon'], 'lat': _v['lat'],"
        " 'title': f'Prediction: {panel.model_picker.value}', 'input_title': f'Input: {panel.image_picker.value}'}))",
    )
    pred_shown = shown_values[truth["title"]]
    assert set(truth["pred"]) <= set(pred_shown)
    for band, value in truth["pred"].items():
        assert float(pred_shown[band].split()[0]) == pytest.approx(value, rel=2e-6), band
    inputs_shown = shown_values[truth["input_title"]]
    assert {b: float(v) for b, v in inputs_shown.items()} == truth["input"]
    # The point is where the click was: the middle-ish of the map.
    south, west, north, east = kernel_json(
        nb, "print(json.dumps([panel.map.south, panel.map.west, panel.map.north, panel.map.east]))"
    )
    assert west < truth["lon"] < east and south < truth["lat"] < north
    assert truth["lon"] == pytest.approx(west + 0.45 * (east - west), abs=3 * (east - west) / box["width"])


def test_drawing_a_rectangle_sets_the_region(explorer):
    page, nb = explorer
    to_view(page)
    tab(page, "Data")
    box = page.locator(".emw-map").bounding_box()
    outline = page.locator(".emw-map path.leaflet-interactive[stroke-dasharray]").first
    outline_before = outline.get_attribute("d")
    page.locator(".leaflet-draw-draw-rectangle").click()
    x0, y0 = box["x"] + box["width"] * 0.35, box["y"] + box["height"] * 0.35
    x1, y1 = x0 + 140, y0 + 90
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=5)
    page.mouse.move(x1, y1, steps=5)
    page.mouse.up()
    page.wait_for_function(
        "() => document.querySelector('.emw-region-preset select').value.startsWith('Drawn')", timeout=30_000
    )
    state = kernel_json(
        nb,
        "import json\n"
        "print(json.dumps({'region': panel.region, 'bounds': [panel.map.south, panel.map.west, panel.map.north, panel.map.east]}))",
    )
    w, s, e, n = state["region"]
    south, west, north, east = state["bounds"]

    def lon(px):
        return west + (px - box["x"]) / box["width"] * (east - west)

    def merc(lat):
        return math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))

    def lat(py):
        t = (py - box["y"]) / box["height"]
        y = merc(north) + t * (merc(south) - merc(north))
        return math.degrees(2 * math.atan(math.exp(y)) - math.pi / 2)

    px_deg = (east - west) / box["width"]
    assert (w, e) == pytest.approx((lon(x0), lon(x1)), abs=3 * px_deg)
    assert (n, s) == pytest.approx((lat(y0), lat(y1)), abs=3 * px_deg)
    field = page.locator(".emw-bbox input").input_value()
    assert [float(v) for v in field.split(",")] == pytest.approx([w, s, e, n], abs=1e-6)
    # The orange region outline moved to the drawn rectangle (its SVG path spans the drawn pixels).
    page.wait_for_function(
        "(before) => { const p = document.querySelector('.emw-map path.leaflet-interactive[stroke-dasharray]');"
        " return p && p.getAttribute('d') !== before; }",
        arg=outline_before,
        timeout=10_000,
    )
    # Running the kernel cells above scrolled the notebook: compare in the map's own pixels.
    to_view(page)
    r, now = outline.bounding_box(), page.locator(".emw-map").bounding_box()
    dx, dy = now["x"] - box["x"], now["y"] - box["y"]
    assert (r["x"] - dx, r["y"] - dy, r["x"] + r["width"] - dx, r["y"] + r["height"] - dy) == pytest.approx(
        (x0, y0, x1, y1), abs=4
    )


def test_export_writes_the_region_as_to_numpy_has_it(explorer, lab_server):
    page, nb = explorer
    to_view(page)
    tab(page, "Export")
    target = lab_server.root / "e2e_export.tif"
    page.locator(".emw-export-path input").fill(str(target))
    page.locator(".emw-export-path input").press("Enter")
    page.wait_for_timeout(300)
    page.locator(".emw-export-button").click()
    page.wait_for_selector(".emw-export-file", timeout=120_000)
    assert page.locator(".emw-export-file").inner_text() == str(target)
    kernel(
        nb,
        "import numpy as np\n"
        "_a = panel.prediction.to_numpy(region=panel.region)\n"
        "np.save('e2e_expected.npy', _a.filled(np.nan))\n"
        "print(panel.region)",
    )
    expected = np.load(lab_server.root / "e2e_expected.npy")
    with rasterio.open(target) as ds:
        got = ds.read()
    assert got.shape == expected.shape and got.shape[1] > 10 and got.shape[2] > 10
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_array_equal(got[~np.isnan(got)], expected[~np.isnan(expected)])


def test_a_broken_model_shows_its_error_while_the_rest_keeps_working(explorer):
    page, nb = explorer
    kernel(
        nb,
        "def _broken(inputs):\n"
        "    raise RuntimeError('sensor calibration table missing')\n"
        "panel.add_model('broken', emw.Model.from_callable(_broken, input_names=['red', 'nir'],"
        " input_tile_size=[64, 64], output_bands={'x': {'type': 'float'}}), select=False)\n"
        "print('added')",
    )
    to_view(page)
    tab(page, "Model")
    page.select_option(".emw-model-picker select", "broken")
    page.wait_for_function(
        "() => document.querySelector('.emw-status').innerText.includes('sensor calibration table missing')",
        timeout=60_000,
    )
    # The rest of the panel keeps working: the palette, and back to a working model.
    tab(page, "Display")
    page.select_option(".emw-palette select", "viridis")
    kernel_sees(nb, "panel.palette.value", "viridis")
    out = kernel(nb, "panel.wait(); print(panel.layer.vis_params['palette'], 'sensor' in panel.status_text)")
    assert out.splitlines()[-1] == "viridis True", out
    to_view(page)
    tab(page, "Model")
    page.select_option(".emw-model-picker select", "fcn")
    kernel_sees(nb, "panel.model_picker.value", "fcn")
    out = kernel(nb, "panel.wait(); print(repr(panel.error), panel.layer.visible, panel.model_picker.value)")
    assert out.splitlines()[-1] == "'' True fcn", out
    to_view(page)
    settled(page)
    assert_shows(opaque_tiles(page, nb))
    assert "sensor calibration" not in page.locator(".emw-status").inner_text()


def test_compare_splits_the_map(explorer):
    page, nb = explorer
    to_view(page)
    tab(page, "Compare")
    page.locator(".emw-compare input").check()
    kernel_sees(nb, "panel.compare.value", "True")
    kernel(nb, "panel.wait(); print(panel.split_control)")
    page.wait_for_selector(".leaflet-sbs-divider", timeout=30_000)
    to_view(page)
    settled(page, "emw-compare")
    settled(page, PRED)
    to_view(page)
    # Left of the divider the map shows the prediction layer's tiles, right of it the compare
    # layer's: checked pixel by pixel on the screen, where each tile is opaque and nothing covers it.
    divider = page.locator(".leaflet-sbs-divider").first.bounding_box()
    split_x = divider["x"] + divider["width"] / 2
    pngs = {"left": kernel_tiles(page, PRED), "right": kernel_tiles(page, "emw-compare")}
    checked = {"left": 0, "right": 0}
    differs = []
    for zxy in visible_tiles(page):
        if zxy not in pngs["left"] or zxy not in pngs["right"]:
            continue
        rgb, free = shown(page, zxy)
        x0 = round(page.locator(f'.{PRED} .leaflet-tile[data-zxy="{zxy}"]').first.bounding_box()["x"])
        cols = x0 + np.arange(256)
        sides = {"left": cols < split_x - 4, "right": cols > split_x + 4}
        rgbas = {k: v[zxy] for k, v in pngs.items()}
        for side, rgba in rgbas.items():
            mask = (rgba[..., 3] == 255) & free & sides[side][None, :]
            if mask.sum() < 2000:
                continue
            diff = np.abs(rgb.astype(int) - rgba[..., :3].astype(int)).max(axis=-1)[mask]
            assert (diff <= 3).mean() > 0.97, (zxy, side, (diff <= 3).mean())
            checked[side] += 1
        both = (rgbas["left"][..., 3] == 255) & (rgbas["right"][..., 3] == 255)
        differs.append(
            (np.abs(rgbas["left"][..., :3].astype(int) - rgbas["right"][..., :3]).max(-1) > 3)[both].mean()
        )
    assert checked["left"] >= 1 and checked["right"] >= 1, checked
    assert max(differs) > 0.01, differs  # the two sides show different predictions, so the check has teeth
    page.locator(".emw-compare input").uncheck()
    kernel_sees(nb, "panel.compare.value", "False")
    kernel(nb, "panel.wait(); print(panel.split_control)")
    page.wait_for_selector(".leaflet-sbs-divider", state="detached", timeout=30_000)

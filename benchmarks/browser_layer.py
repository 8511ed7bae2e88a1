"""Browser-true map layer figures: a real JupyterLab in a real Chromium (the e2e harness).

What a user waits for, measured in the page (`performance.now()`, polled every 10 ms), for
one band of a GeoTIFF (2048x2048, with overviews) shown with the same stretch and colormap by

  ours             `PredictionLayer` of an identity model (tiles over the widget comm);
  lts-process      localtileserver's HTTP tile server in its own process (`python -m
                   localtileserver FILE`), fetched by the browser directly over HTTP;
  lts-comm-bridge  localtileserver's TileClient in the kernel with its jupyter-loopback comm
                   bridge forced on (tile URLs on 127.0.0.1:PORT, which the bridge's shim
                   reroutes over the kernel's websocket; JupyterLab would otherwise use the
                   server-side HTTP proxy); checked: the tiles' src are not http: URLs.

Each map is 768x512 px, no basemap, no inertia, alone in its page; the same script of actions:
(1) cold zoom-in: from the keypress to every tile of the new view drawn (decoded, `load`);
(2) cached zoom-out: back to the first view, whose tiles Leaflet has unloaded (ours: served
    from the browser's tile cache, the values the page already received coloured again, no
    request to the kernel, which is checked; localtileserver: Chromium's image cache). A view
    whose tiles are ready early still completes only when Leaflet's 250 ms zoom animation ends
    (tiles count once they sit at their final size), so both caches measure about that;
(3) restyle: a new colormap set from the kernel (`layer.vis_params = ...` / `layer.url = ...`,
    run through the kernel like any cell) until every tile in view is redrawn with it; five
    colormaps, p50 and max. Ours recolours the values its canvas tiles hold, in the browser
    (no tile request); the time its colouring took there, from the `_style` change to the last
    tile drawn, is printed too;
(4) pan: six 256-px mouse drags 200 ms apart at the zoomed-in level, tiles drawn per second
    from the first drag to the last tile of the final view.
Only the layer's tiles are counted (ours: `.ee-model-tile` canvases, drawn with status "ok",
never an error tile; theirs: images that decoded). The first views are screenshotted and compared:
the difference is printed and recorded (`same_pixels`), and so is the centre tile's as each side
makes it (both read
with nearest neighbour, Earth Engine's default and rio-tiler's; the colormap lookup differs:
ours a 4097-entry ramp, rio-tiler 256 entries; with `resample("bilinear")` ours differs more).

Run: .venv/bin/python benchmarks/browser_layer.py (needs the `bench` extra: `make bench`).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from _figures import record
from PIL import Image as PILImage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.e2e.harness import NotebookPage, free_port, launch_browser, start_server, write_notebook  # noqa: E402

MAP_W, MAP_H = 768, 512
PALETTES = ["magma", "plasma", "inferno", "cividis", "viridis"]

COMMON = """
import json, ipyleaflet
from traitlets import Tuple, Union
VMIN, VMAX, CENTER, ZOOM = {vmin!r}, {vmax!r}, {center!r}, {zoom!r}
def show(layer):
    m = ipyleaflet.Map(center=CENTER, zoom=ZOOM, layers=(), inertia=False, scroll_wheel_zoom=False,
                       layout={{"width": "{w}px", "height": "{h}px"}})
    m.add(layer)
    return m
"""

OURS = """
import ee_model_widgets as emw
img = emw.Image.open({path!r}).select(["red"])
identity = emw.Model.from_callable(lambda x: x["array"][..., :1], input_tile_size=[256, 256])
layer = emw.PredictionLayer(identity.predict_image(img), vis_params={{"min": VMIN, "max": VMAX, "palette": "viridis"}})
def restyle(cmap):
    layer.vis_params = {{"min": VMIN, "max": VMAX, "palette": cmap}}
show(layer)
"""

LTS_PROCESS = """
from urllib.parse import quote
class BoundTileLayer(ipyleaflet.TileLayer):  # as localtileserver's own layer: no tile outside the image
    bounds = Union((Tuple(),), default_value=None, allow_none=True).tag(sync=True, o=True)
def url(cmap):
    return ("http://127.0.0.1:{port}/api/tiles/{{z}}/{{x}}/{{y}}.png?filename=" + quote({path!r})
            + f"&indexes=1&colormap={{cmap}}&vmin={{VMIN}}&vmax={{VMAX}}")
layer = BoundTileLayer(url=url("viridis"), max_zoom=30, max_native_zoom=30, bounds={bounds!r})
def restyle(cmap):
    layer.url = url(cmap)
show(layer)
"""

LTS_COMM = """
import socket
from localtileserver import TileClient, get_leaflet_tile_layer
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
client = TileClient({path!r}, port=port, client_host="127.0.0.1", client_port=port)
layer = get_leaflet_tile_layer(client, indexes=1, colormap="viridis", vmin=VMIN, vmax=VMAX)
client.enable_jupyter_loopback()
def restyle(cmap):
    layer.url = client.get_tile_url(indexes=1, colormap=cmap, vmin=VMIN, vmax=VMAX, client=True)
show(layer)
"""

# In-page probes. A tile counts when it is in the layer's current zoom level (the tile
# container Leaflet puts on top), intersects the map, has loaded, and is good: ours with the
# status the layer gives a drawn kernel tile ("ok"), theirs an image that decoded.
PROBE = """
window.__emw = (() => {
  const S = {t0: 0, loads: 0, counting: false, seen: new WeakSet()};
  const ours = () => !!document.querySelector('.ee-model-tile');
  // Ours are canvases (coloured in the browser, or a decoded PNG), theirs images.
  const good = (img) => img.classList.contains('leaflet-tile-loaded') && (ours()
      ? img.dataset.status === 'ok'
      : img.complete && img.naturalWidth > 0 && !String(img.src).startsWith('data:'));
  // What a tile shows: its image's URL, or the style version our canvas is coloured with.
  const shows = (img) => img.tagName === 'CANVAS' ? `style ${img.dataset.style}` : img.src;
  const TILES = 'img, canvas';
  const level = () => {
    let best = null, bz = -1e9;
    for (const c of document.querySelectorAll('.leaflet-tile-container')) {
      const z = Number(c.style.zIndex || 0);
      if (c.querySelector(TILES) && z > bz) { best = c; bz = z; }
    }
    return best;
  };
  const visible = () => {
    const m = document.querySelector('.leaflet-container').getBoundingClientRect();
    const lv = level();
    if (!lv) return [];
    return [...lv.querySelectorAll(TILES)].filter(img => {
      const r = img.getBoundingClientRect();
      return r.right > m.left + 0.5 && r.left < m.right - 0.5 && r.bottom > m.top + 0.5 && r.top < m.bottom - 0.5;
    });
  };
  document.addEventListener('keydown', () => { S.t0 = performance.now(); }, true);
  document.addEventListener('mousedown', () => { if (S.counting && !S.t0) S.t0 = performance.now(); }, true);
  const count = (img) => {
    if (!S.counting || !img.closest('.leaflet-tile-container')) return;
    setTimeout(() => { if (good(img) && !S.seen.has(img)) { S.seen.add(img); S.loads++; } }, 0);
  };
  document.addEventListener('load', (e) => { if (e.target.tagName === 'IMG') count(e.target); }, true);
  // A canvas fires no load event: it counts when Leaflet marks it loaded.
  new MutationObserver((records) => {
    for (const r of records) if (r.target.tagName === 'CANVAS') count(r.target);
  }).observe(document.body, {subtree: true, attributes: true, attributeFilter: ['class']});
  return {
    S,
    // Before a zoom: the view is complete only once its tiles are in a new level container
    // (right after the keypress the old level is still the top one, and complete).
    arm(zoom) { S.level0 = zoom ? level() : null; },
    mark() { for (const img of document.querySelectorAll('.leaflet-tile-container .leaflet-tile')) img.dataset.benchOld = shows(img); },
    // Every tile of the view drawn, at least `expected` of them, none of them showing what it
    // showed at mark() (ours redraws with new tiles; jupyter-leaflet's TileLayer swaps each
    // tile's src in place once the new image has loaded).
    done(expected) {
      if (S.level0 && level() === S.level0) return null;
      const v = visible();
      const ok = v.filter(img => good(img) && img.dataset.benchOld !== shows(img));
      return v.length >= expected && ok.length === v.length ? performance.now() - S.t0 : null;
    },
    state() {
      const v = visible();
      return {visible: v.length, good: v.filter(good).length, old: v.filter(i => i.dataset.benchOld === shows(i)).length,
              schemes: [...new Set(v.map(i => i.tagName === 'CANVAS' ? 'canvas' : String(i.src).split(':')[0]))]};
    },
    // Run `code` in the kernel without a notebook cell (a cell would take the keyboard focus from
    // the map); resolves with what it printed.
    kernelPrint(code) {
      const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
      return new Promise((resolve) => {
        let out = '';
        const f = kernel.requestExecute({code, silent: false, store_history: false});
        f.onIOPub = (msg) => { if (msg.header.msg_type === 'stream') out += msg.content.text; };
        f.done.then(() => resolve(out));
      });
    },
    // Our layer's own time to recolour every tile it holds at the last `_style` change (ms).
    colourMs() { const c = document.querySelector('.ee-model-tile'); return c ? Number(c.dataset.restyleMs) : null; },
    restyle(cmap) {
      S.t0 = performance.now();
      const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
      kernel.requestExecute({code: `restyle(${JSON.stringify(cmap)})`, silent: true, store_history: false});
    },
  };
})();
"""


def merc(lon: float, lat: float) -> tuple[float, float]:
    """Web Mercator of (lon, lat) in 0..1 (x east, y south): world pixels / (256 * 2**z)."""
    return (lon + 180) / 360, (1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2


def expected_tiles(center, z: int, bounds, dx: float = 0.0) -> int:
    """How many tiles Leaflet shows for a 768x512 view at `center` (lat, lon) moved `dx` px east,
    limited to the layer's bounds (Leaflet asks for no tile outside them)."""
    cx, cy = merc(center[1], center[0])
    n = 256 * 2**z
    px, py = cx * n + dx, cy * n
    x0, x1 = math.floor((px - MAP_W / 2) / 256), math.ceil((px + MAP_W / 2) / 256) - 1
    y0, y1 = math.floor((py - MAP_H / 2) / 256), math.ceil((py + MAP_H / 2) / 256) - 1
    (s, w), (nn, e) = bounds
    bx0, by0 = (math.floor(v * 2**z) for v in merc(w, nn))
    bx1, by1 = (math.floor(v * 2**z) for v in merc(e, s))
    nx = max(0, min(x1, bx1) - max(x0, bx0) + 1)
    ny = max(0, min(y1, by1) - max(y0, by0) + 1)
    return nx * ny


def wait_done(nb: NotebookPage, expected: int, timeout: float = 120) -> float:
    """Milliseconds from the action to every tile of the view drawn (at least `expected` tiles)."""
    try:
        handle = nb.page.wait_for_function(
            f"() => window.__emw.done({expected})", polling="raf", timeout=timeout * 1000
        )
    except Exception as exc:
        state = nb.page.evaluate("window.__emw.state()")
        raise RuntimeError(
            f"{nb.name}: the view never completed ({expected} tiles expected): {state}\n{nb.outputs_text()[-2000:]}"
        ) from exc
    return float(handle.json_value())


def screenshot_map(nb: NotebookPage) -> np.ndarray:
    """RGB pixels of the map's tiles as shown (scrolled into view if needed), without the zoom
    buttons and the attribution box, which differ between the layers, and without JupyterLab's
    notifications (its first-run "Jupyter news?" toast sits over the map's corner).

    The map sits at a fractional page offset that differs between notebooks (457.56 px here,
    458.13 px there), and an element screenshot clips from the offset rounded down: the same
    map came out one row apart. The tiles are drawn on whole device pixels, so the clip starts
    at the offset rounded to the nearest pixel instead: the map's own pixels on both sides."""
    hide = ".leaflet-control-container, .Toastify"
    nb.page.evaluate(f"document.querySelectorAll('{hide}').forEach(e => e.style.visibility = 'hidden')")
    container = nb.page.locator(".leaflet-container").first
    container.scroll_into_view_if_needed()
    box = container.bounding_box()
    clip = {"x": round(box["x"]), "y": round(box["y"]), "width": MAP_W, "height": MAP_H}
    png = nb.page.screenshot(clip=clip)
    nb.page.evaluate(f"document.querySelectorAll('{hide}').forEach(e => e.style.visibility = '')")
    return np.asarray(PILImage.open(io.BytesIO(png)).convert("RGB")).astype(int)


def tile_differences(path: str, port: int, vmin: float, vmax: float, center, zooms) -> list[str]:
    """The centre tile as each side makes it (ours rendered in Python, theirs fetched from the
    server): |difference| in levels of 255, with our default read (nearest, like rio-tiler's)
    and with `resample("bilinear")`, to show what the difference is made of."""
    import ee_model_widgets as emw
    from ee_model_widgets.core.grid import xyz_grid
    from ee_model_widgets.core.vis import render

    img = emw.Image.open(path).select(["red"])
    identity = emw.Model.from_callable(lambda x: x["array"][..., :1], input_tile_size=[256, 256])
    pred = identity.predict_image(img)
    vis = {"min": vmin, "max": vmax, "palette": "viridis"}
    lines = []
    for z in zooms:
        x, y = (int(v * 2**z) for v in merc(center[1], center[0]))
        url = (f"http://127.0.0.1:{port}/api/tiles/{z}/{x}/{y}.png?filename={path}"
               f"&indexes=1&colormap=viridis&vmin={vmin}&vmax={vmax}")  # fmt: skip
        with urllib.request.urlopen(url, timeout=60) as r:
            theirs = np.asarray(PILImage.open(io.BytesIO(r.read())).convert("RGBA")).astype(int)
        for label, ours in (
            ("ours", render(pred.tile(z, x, y), vis)),
            ("ours resample('bilinear')", render(img.resample("bilinear").read(xyz_grid(z, x, y)), vis)),
        ):
            d = np.abs(ours.astype(int) - theirs).max(axis=-1)
            lines.append(
                f"  tile {z}/{x}/{y}, {label} vs localtileserver: mean |diff| {d.mean():.2f} levels, "
                f"within 2 levels {100 * (d <= 2).mean():.1f}%, max {d.max()}"
            )
    return lines


def kernel_stats(nb: NotebookPage) -> dict:
    """Our layer's counters in the kernel: tiles answered and failed, cache hits, model calls."""
    code = (
        "print(json.dumps(dict(failed=layer.tiles_failed, err=layer.last_error, "
        "done=layer.tiles_done, hits=layer.cache_hits, calls=identity.stats.calls)))"
    )
    return json.loads(nb.page.evaluate("(c) => window.__emw.kernelPrint(c)", code).strip().splitlines()[-1])


def run_side(browser, server, name: str, cells: list[str], ctx: dict) -> dict:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        write_notebook(server.root / f"{name}.ipynb", cells)
        nb = NotebookPage(page, server, f"{name}.ipynb")
        nb.page.evaluate(PROBE)
        nb.run_all(timeout=180)
        z0, center, bounds = ctx["zoom"], ctx["center"], ctx["bounds"]
        wait_done(nb, expected_tiles(center, z0, bounds))
        nb.page.wait_for_timeout(700)  # Leaflet's fade-in
        shot = screenshot_map(nb)
        schemes = nb.page.evaluate("window.__emw.state()")["schemes"]
        nb.page.focus(".leaflet-container")
        out: dict = {"schemes": schemes}
        # (1) cold zoom-in, (2) cached zoom-out.
        nb.page.evaluate("window.__emw.arm(true)")
        nb.page.keyboard.press("Equal")
        out["cold_ms"] = wait_done(nb, expected_tiles(center, z0 + 1, bounds))
        nb.page.wait_for_timeout(500)
        zoomed = kernel_stats(nb) if name == "ours" else None
        nb.page.evaluate("window.__emw.arm(true)")
        nb.page.keyboard.press("Minus")
        out["cached_ms"] = wait_done(nb, expected_tiles(center, z0, bounds))
        nb.page.wait_for_timeout(500)
        if zoomed is not None:  # tiles the kernel answered for the zoom-out (the browser's cache: none)
            back = kernel_stats(nb)
            out["cached_kernel"] = sum(back[k] - zoomed[k] for k in ("done", "failed"))
        # (3) restyle from the kernel, five colormaps.
        restyles, colouring = [], []
        before = kernel_stats(nb) if name == "ours" else None
        nb.page.evaluate("window.__emw.arm(false)")
        for cmap in PALETTES:
            nb.page.evaluate("window.__emw.mark()")
            nb.page.evaluate(f"window.__emw.restyle({json.dumps(cmap)})")
            restyles.append(wait_done(nb, expected_tiles(center, z0, bounds)))
            colouring.append(nb.page.evaluate("window.__emw.colourMs()"))
            nb.page.wait_for_timeout(300)
        out["restyle_ms"] = restyles
        out["colour_ms"] = colouring if name == "ours" else None
        if before is not None:  # what the restyles cost the kernel: tiles answered, model calls
            after = kernel_stats(nb)
            out["restyle_kernel"] = {k: after[k] - before[k] for k in ("done", "calls")}
        # (4) pan at z0 + 1: six drags of 256 px (the view moves east), 200 ms apart.
        nb.page.evaluate("window.__emw.arm(true)")
        nb.page.keyboard.press("Equal")
        wait_done(nb, expected_tiles(center, z0 + 1, bounds))
        nb.page.evaluate("window.__emw.arm(false)")
        nb.page.wait_for_timeout(500)
        box = nb.page.locator(".leaflet-container").first.bounding_box()
        cx, cy = box["x"] + MAP_W / 2, box["y"] + MAP_H / 2
        nb.page.evaluate("window.__emw.S.counting = true; window.__emw.S.t0 = 0; window.__emw.S.loads = 0")
        drags = 6
        for _ in range(drags):
            nb.page.mouse.move(cx, cy)
            nb.page.mouse.down()
            nb.page.mouse.move(cx - 256, cy, steps=4)
            nb.page.mouse.up()
            nb.page.wait_for_timeout(200)
        pan_ms = wait_done(nb, expected_tiles(center, z0 + 1, bounds, dx=256 * drags))
        loads = nb.page.evaluate("window.__emw.S.loads")
        out["pan_tiles"], out["pan_s"] = loads, pan_ms / 1e3
        if name == "ours":
            out["kernel"] = kernel_stats(nb)
        out["shot"] = shot
        return out
    finally:
        page.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sides", default="ours,lts-process,lts-comm-bridge")
    ap.add_argument("--shots", type=Path, help="save each side's first-view screenshot here, as <side>.png")
    args = ap.parse_args()
    sides = args.sides.split(",")
    theirs = any(side.startswith("lts") for side in sides)  # `--sides ours` runs without localtileserver
    if theirs:
        import localtileserver
    import rasterio
    from playwright.sync_api import sync_playwright

    import ee_model_widgets as emw
    from ee_model_widgets import demo

    with tempfile.TemporaryDirectory() as tmp:
        path = demo.synthetic_geotiff(Path(tmp) / "synthetic.tif", 2048, 2048, bands=("red", "nir"))
        with rasterio.open(path, "r+") as ds:
            from rasterio.enums import Resampling

            ds.build_overviews([2, 4, 8, 16], Resampling.average)
        with rasterio.open(path) as ds:
            sample = ds.read(1, out_shape=(256, 256))
        vmin, vmax = (round(float(v), 4) for v in np.percentile(sample[np.isfinite(sample)], [2, 98]))
        w, s, e, n = emw.Image.open(path).bounds
        center = ((s + n) / 2, (w + e) / 2)
        zoom = next(z for z in range(8, 20) if (merc(e, s)[0] - merc(w, n)[0]) * 256 * 2**z >= 2 * MAP_W)
        bounds = ((s, w), (n, e))
        ctx = dict(zoom=zoom, center=center, bounds=bounds)
        common = COMMON.format(vmin=vmin, vmax=vmax, center=center, zoom=zoom, w=MAP_W, h=MAP_H)
        port = free_port()
        lts = subprocess.Popen(
            [sys.executable, "-m", "localtileserver", path, "-p", str(port), "-b", "False"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ) if theirs else None  # fmt: skip
        server = start_server("lab", Path(tmp) / "root")
        results = {}
        tiles: list[str] = []
        try:
            deadline = time.monotonic() + 60
            while lts is not None:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or lts.poll() is not None:
                        raise RuntimeError("localtileserver did not start") from None
                    time.sleep(0.3)
            cells = {
                "ours": [common, OURS.format(path=path)],
                "lts-process": [common, LTS_PROCESS.format(path=path, port=port, bounds=bounds)],
                "lts-comm-bridge": [common, LTS_COMM.format(path=path)],
            }
            if theirs:
                tiles = tile_differences(path, port, vmin, vmax, center, (zoom, zoom + 1))
            with sync_playwright() as p:
                browser = launch_browser(p)
                for side in sides:
                    results[side] = run_side(browser, server, side, cells[side], ctx)
                browser.close()
        finally:
            server.stop()
            if lts is not None:
                lts.terminate()
                lts.wait(10)

    load = os.getloadavg()[0]
    print(
        f"Browser-true map layer figures (JupyterLab + Chromium, 768x512 map, zoom {zoom}/{zoom + 1}, "
        f"load average {load:.1f})" + (f"; localtileserver {localtileserver.__version__}" if theirs else "")
    )
    for side, r in results.items():
        rs = r["restyle_ms"]
        print(
            f"  {side:16s} cold zoom-in {r['cold_ms']:6.0f} ms | cached zoom-out {r['cached_ms']:6.0f} ms | "
            f"restyle p50 {statistics.median(rs):5.0f} ms (max {max(rs):.0f}) | pan {r['pan_tiles']} tiles "
            f"in {r['pan_s']:.2f} s = {r['pan_tiles'] / r['pan_s']:.1f} tiles/s | tile src {r['schemes']}"
        )
    if args.shots:
        args.shots.mkdir(parents=True, exist_ok=True)
        for side, r in results.items():
            PILImage.fromarray(r["shot"].astype(np.uint8)).save(args.shots / f"{side}.png")
    if "ours" in results:
        k = results["ours"]["kernel"]
        print(
            f"  ours, kernel side: {k['done']} tiles answered, {k['failed']} failed, {k['hits']} cache hits; "
            f"the cached zoom-out cost it {results['ours']['cached_kernel']} tile answers"
        )
        o = results["ours"]
        print(
            f"  ours, restyle: recoloured in the browser in p50 {statistics.median(o['colour_ms']):.1f} ms "
            f"(from the _style change to every tile drawn); the {len(PALETTES)} restyles cost the kernel "
            f"{o['restyle_kernel']['done']} tile answers and {o['restyle_kernel']['calls']} model calls"
        )
        ref = results["ours"]["shot"]
        assert ref.std() > 5, "our map screenshot is blank"
        same = {}  # side -> (share of pixels within 2 levels of ours, largest difference)
        for side, r in results.items():
            if side == "ours":
                continue
            d = np.abs(r["shot"] - ref).max(axis=-1)
            same[side] = (100 * (d <= 2).mean(), int(d.max()))
            print(
                f"  first view, {side} vs ours: mean |diff| {d.mean():.2f} levels, pixels within 2 levels "
                f"{100 * (d <= 2).mean():.1f}%, within 16 {100 * (d <= 16).mean():.1f}%, max {d.max()}"
            )
    print("\n".join(tiles))
    if "ours" in results:
        o = results["ours"]
        record(
            "browser_layer.ours",
            "Map layer in Chromium (ours): cold zoom-in; cached zoom-out; restyle p50 (from the kernel; "
            "of which colouring in the browser); tiles/s while panning",
            f"{o['cold_ms']:.0f} ms; {o['cached_ms']:.0f} ms; {statistics.median(o['restyle_ms']):.0f} ms "
            f"({statistics.median(o['colour_ms']):.1f} ms); {o['pan_tiles'] / o['pan_s']:.1f} tiles/s",
            "restyle <= 50 ms",
        )
        for side in ("lts-process", "lts-comm-bridge"):
            if side in results:
                t = results[side]
                record(
                    f"browser_layer.{side}",
                    f"Same in Chromium, localtileserver {localtileserver.__version__} ({side}): ours / theirs time "
                    "for cold zoom-in; cached zoom-out; restyle p50; tiles/s panning theirs / ours",
                    f"{o['cold_ms'] / t['cold_ms']:.2f}; {o['cached_ms'] / t['cached_ms']:.2f}; "
                    f"{statistics.median(o['restyle_ms']) / statistics.median(t['restyle_ms']):.2f}; "
                    f"{(t['pan_tiles'] / t['pan_s']) / (o['pan_tiles'] / o['pan_s']):.2f}",
                    "<= 1.0",
                )
        if same:
            record(
                "browser_layer.same_pixels",
                "Same in Chromium: the first views as shown, theirs against ours (screenshots of the map, "
                f"{' / '.join(same)}): pixels within 2 levels of 255; largest difference",
                " / ".join(f"{p:.1f}%" for p, _ in same.values())
                + "; "
                + " / ".join(str(m) for _, m in same.values()),
            )


if __name__ == "__main__":
    main()

"""Real-browser harness: a real JupyterLab 4 / Notebook 7 server and a real Chromium.

Reusable by every end-to-end test: start a server on 127.0.0.1 with a token in a temporary
root, open a notebook in headless Chromium (playwright-python driving the system's
chromium; no browser download), run its cells, wait for kernel-made tiles, screenshot.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import nbformat
import numpy as np
from PIL import Image as PILImage

#: A kernel tile the browser has drawn (every tile of our layers is a <canvas>, see js/tile_layer.ts).
TILE_SELECTOR = ".ee-model-tile .leaflet-tile.leaflet-tile-loaded"


def find_chromium() -> str:
    """The system Chromium; a clear failure (never a skip) when there is none."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError(
        "No Chromium found on PATH. The browser tests need one: on Debian/Ubuntu run "
        "`sudo apt-get install -y chromium` (or `make test`, which does it as root); elsewhere install "
        "Chromium or Chrome and put it on PATH."
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class JupyterServer:
    app: str  # "lab" or "notebook"
    root: Path
    port: int
    token: str
    process: subprocess.Popen
    log_path: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def notebook_url(self, name: str) -> str:
        if self.app == "lab":
            # A fresh workspace per page: JupyterLab would otherwise reopen earlier tests' notebooks.
            return f"{self.base}/lab/workspaces/{uuid.uuid4().hex[:12]}/tree/{name}?token={self.token}"
        return f"{self.base}/notebooks/{name}?token={self.token}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_server(app: str, root: Path, timeout: float = 90) -> JupyterServer:
    """Start `jupyter lab` or `jupyter notebook` from this Python on a free loopback port."""
    root.mkdir(parents=True, exist_ok=True)
    port, token = free_port(), uuid.uuid4().hex
    runtime = root / ".runtime"
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(runtime), JUPYTER_CONFIG_DIR=str(root / ".config"))
    app_class = "LabApp" if app == "lab" else "JupyterNotebookApp"
    cmd = [
        sys.executable, "-m", "jupyter", app, "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        f"--{app_class}.expose_app_in_browser=True",
        f"--LabApp.workspaces_dir={root / '.workspaces'}" if app == "lab" else "--ServerApp.open_browser=False",
    ]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log_path = root / f".{app}-server.log"
    proc = subprocess.Popen(cmd, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, env=env)
    return wait_for_server(JupyterServer(app, root, port, token, proc, log_path), timeout)


def wait_for_server(server: JupyterServer, timeout: float) -> JupyterServer:
    """Return `server` once its REST API answers; stop it and raise with its log otherwise."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if server.process.poll() is not None:
            raise RuntimeError(f"jupyter {server.app} exited early:\n{server.log()}")
        try:
            with urllib.request.urlopen(f"{server.base}/api/status?token={server.token}", timeout=2) as r:
                if r.status == 200:
                    return server
        except OSError:
            time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"jupyter {server.app} did not start within {timeout} s:\n{server.log()}")


def write_notebook(path: Path, cells: list[str]) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def launch_browser(playwright):
    return playwright.chromium.launch(
        executable_path=find_chromium(),
        headless=True,
        args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
        ],
    )  # fmt: skip


class NotebookPage:
    """A notebook open in the browser, with the few actions the tests need."""

    def __init__(self, page, server: JupyterServer, name: str):
        self.page, self.server, self.name = page, server, name
        self.console: list[str] = []
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.goto(server.notebook_url(name))
        page.wait_for_selector(".jp-Notebook", timeout=60_000)
        page.wait_for_function(
            "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
            " return !!(w && w.sessionContext && w.sessionContext.session"
            " && w.sessionContext.session.kernel); }",
            timeout=60_000,
        )

    def run_all(self, timeout: float = 120) -> None:
        """Run every cell and wait until no prompt shows `[*]`. Not the kernel status: widget messages
        handled on kernel subshells make it go idle while cells still run."""
        self.page.evaluate(
            "() => setTimeout(() => window.jupyterapp.commands.execute('notebook:run-all-cells'))"
        )
        self.wait_cells_done(timeout)

    def run_cell(self, index: int, timeout: float = 120) -> None:
        self.page.evaluate(
            """(i) => setTimeout(() => {
                const w = window.jupyterapp.shell.currentWidget;
                w.content.activeCellIndex = i;
                window.jupyterapp.commands.execute('notebook:run-cell');
            })""",
            index,
        )
        self.wait_cells_done(timeout)

    def run_code(self, code: str, timeout: float = 120) -> str:
        """Append a code cell, run it, and return its text output (stdout + results).

        How tests read kernel state (e.g. `print(json.dumps(layer.tiles_cancelled))`).
        """
        n = self.page.evaluate(
            """(code) => {
                const nb = window.jupyterapp.shell.currentWidget.content;
                const n = nb.model.cells.length;
                nb.model.sharedModel.insertCell(n, {cell_type: 'code', source: code});
                nb.activeCellIndex = n;
                setTimeout(() => window.jupyterapp.commands.execute('notebook:run-cell'));
                return n;
            }""",
            code,
        )
        self.page.wait_for_function(
            """(n) => {
                const nb = window.jupyterapp.shell.currentWidget.content;
                const cell = nb.model.cells.get(n);
                return cell && cell.executionCount !== null && !nb.widgets[n].promptNode.textContent.includes('*');
            }""",
            arg=n,
            timeout=timeout * 1000,
        )
        return self.page.evaluate(
            """(n) => {
                const outs = window.jupyterapp.shell.currentWidget.content.model.cells.get(n).outputs.toJSON();
                return outs.map(o => o.text !== undefined ? [].concat(o.text).join('')
                    : o.data ? [].concat(o.data['text/plain'] || '').join('')
                    : o.ename ? `${o.ename}: ${o.evalue}` : '').join('');
            }""",
            n,
        )

    def wait_cells_done(self, timeout: float) -> None:
        time.sleep(0.5)
        self.page.wait_for_function(
            """() => {
                const prompts = [...document.querySelectorAll('.jp-InputArea-prompt')];
                return prompts.length > 0 && prompts.every(p => !p.textContent.includes('*'));
            }""",
            timeout=timeout * 1000,
        )

    def outputs_text(self) -> str:
        return self.page.evaluate(
            "() => [...document.querySelectorAll('.jp-OutputArea-output')].map(o => o.innerText).join('\\n')"
        )

    def wait_tiles(self, n: int, timeout: float = 60) -> None:
        try:
            self.page.wait_for_function(
                f"() => document.querySelectorAll('{TILE_SELECTOR}').length >= {n}", timeout=timeout * 1000
            )
            # Leaflet fades new tiles in (opacity transition, 0.2 s): let it finish before pixels count.
            self.page.wait_for_timeout(600)
        except Exception as exc:
            raise AssertionError(
                f"fewer than {n} kernel tiles loaded.\nOutputs:\n{self.outputs_text()}\n"
                f"Console:\n" + "\n".join(self.console[-30:])
            ) from exc

    def loaded_tiles(self) -> list[str]:
        """z/x/y of the kernel tiles that are loaded and fully inside the map's visible area."""
        return self.page.evaluate(
            """() => {
                const out = [];
                for (const img of document.querySelectorAll('.ee-model-tile .leaflet-tile.leaflet-tile-loaded')) {
                    const map = img.closest('.leaflet-container').getBoundingClientRect();
                    const r = img.getBoundingClientRect();
                    if (r.left >= map.left && r.top >= map.top && r.right <= map.right && r.bottom <= map.bottom)
                        out.push(img.dataset.zxy);
                }
                return out;
            }"""
        )

    def tile_pixels(self, zxy: str) -> np.ndarray:
        """RGB pixels of tile z/x/y as the browser shows them (a screenshot of its 256x256 box)."""
        box = self.page.locator(f'.ee-model-tile .leaflet-tile[data-zxy="{zxy}"]').first.bounding_box()
        # The map may sit at a fractional page offset; tiles are snapped to device pixels.
        clip = {"x": round(box["x"]), "y": round(box["y"]), "width": 256, "height": 256}
        png = self.page.screenshot(clip=clip)
        return np.asarray(PILImage.open(io.BytesIO(png)).convert("RGB"))


def png_rgb(png: bytes, background=(255, 255, 255)) -> np.ndarray:
    """What a PNG looks like composited over `background` (RGB uint8)."""
    rgba = np.asarray(PILImage.open(io.BytesIO(png)).convert("RGBA")).astype(np.float64)
    alpha = rgba[..., 3:4] / 255.0
    rgb = rgba[..., :3] * alpha + np.asarray(background, np.float64) * (1 - alpha)
    return np.round(rgb).astype(np.uint8)


# ---- prediction tiles ---------------------------------------------------------------------------------

#: CSS class of the layer that shows a model's prediction (the panel's input-scene layer has another).
PREDICTION = "emw-prediction"

_KERNEL_TILES_JS = """([cls, skipMarked]) => {
    const out = {};
    for (const tile of document.querySelectorAll(`.${cls} canvas.leaflet-tile-loaded`)) {
        // 'ok' is the kernel's own verdict; error tiles (the kernel's or the browser's) say 'error'.
        if (tile.dataset.status !== 'ok') continue;
        if (skipMarked && tile.dataset.emwOld) continue;
        const b = tile.getContext('2d').getImageData(0, 0, tile.width, tile.height).data;
        let s = '';
        for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode.apply(null, b.subarray(i, i + 0x8000));
        out[tile.dataset.zxy] = [tile.width, tile.height, tile.dataset.style || '', btoa(s)];
    }
    return out;
}"""


def kernel_tiles(
    page, cls: str = PREDICTION, skip_marked: bool = False, style: str | None = None
) -> dict[str, np.ndarray]:
    """The RGBA pixels of each loaded kernel tile of layer `.cls` as its canvas holds them, by z/x/y.

    With `style`, only data tiles coloured with that style version (`_style['version']`)."""
    import base64

    found = page.evaluate(_KERNEL_TILES_JS, [cls, skip_marked])
    return {
        zxy: np.frombuffer(base64.b64decode(b64), np.uint8).reshape(h, w, 4)
        for zxy, (w, h, version, b64) in found.items()
        if style is None or version == str(style)
    }


def mark_tiles_old(page) -> None:
    """Flag every tile now on the page, so that `wait_prediction_tiles(skip_marked=True)` ignores them."""
    page.evaluate(
        "() => document.querySelectorAll('.leaflet-tile').forEach(t => { t.dataset.emwOld = '1'; })"
    )


def drawn_fraction(rgba: np.ndarray) -> float:
    """Fraction of a tile's pixels that are drawn (not transparent); 0 for a blank tile."""
    return float((rgba[..., 3] > 0).mean())


def layer_diagnosis(page, cls: str = PREDICTION) -> str:
    """What the page shows about layer `.cls`: tile statuses, the layer's own notice, the panel's status line."""
    return page.evaluate(
        """(cls) => {
            const st = {}, detail = {};
            for (const i of document.querySelectorAll(`.${cls} .leaflet-tile`)) {
                st[i.dataset.status] = (st[i.dataset.status] || 0) + 1;
                // status/source/style version/loaded: e.g. 'ok/kernel/3/waiting' is a data tile
                // that came but waits to be coloured
                const key = [i.dataset.status, i.dataset.source || '-', i.dataset.style || '-',
                             i.classList.contains('leaflet-tile-loaded') ? 'loaded' : 'waiting'].join('/');
                detail[key] = (detail[key] || 0) + 1;
            }
            const notice = [...document.querySelectorAll('.emw-tile-notice')].map(n => n.innerText).join(' | ');
            const status = [...document.querySelectorAll('.emw-status')].map(n => n.innerText).join(' | ');
            return `tiles by status ${JSON.stringify(st)} (${JSON.stringify(detail)}); `
                + `layer notice: ${notice || '-'}; status line: ${status || '-'}`;
        }""",
        cls,
    )


def wait_prediction_tiles(
    page, n: int, timeout: float = 20, cls: str = PREDICTION, skip_marked: bool = False
) -> dict[str, np.ndarray]:
    """Wait until `n` tiles of the prediction layer show drawn kernel pixels; return them all (RGBA).

    Counts only tiles of layer `.cls` (not the input image's layer), answered by the kernel
    with status 'ok' (not an error tile), whose canvas is not blank.
    """
    end = time.monotonic() + timeout
    while True:
        tiles = kernel_tiles(page, cls, skip_marked)
        good = {zxy: rgba for zxy, rgba in tiles.items() if drawn_fraction(rgba) >= 0.05}
        if len(good) >= n:
            return good
        if time.monotonic() > end:
            raise AssertionError(
                f"{len(good)} of {n} prediction tiles within {timeout:.0f} s ({len(tiles)} answered 'ok'); "
                + layer_diagnosis(page, cls)
            )
        page.wait_for_timeout(250)

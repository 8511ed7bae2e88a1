"""The quickstart in the classic Notebook 6 interface (nbclassic), from our AMD nbextension.

No JupyterLab code runs on an nbclassic page: the widget manager is ipywidgets' classic one
and modules come through require.js from `share/jupyter/nbextensions/<module>/`. This is the
path VS Code also takes when it loads widget modules from the kernel's environment. The test
records every script the page requests to prove where our module came from, then compares
the prediction tiles shown with PNGs the kernel renders independently from the prediction.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import nbformat
import numpy as np
import pytest
from PIL import Image as PILImage

from .harness import JupyterServer, free_port, wait_for_server
from .test_panel import shown

QUICKSTART = Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"
PRED = "emw-prediction"
CELL_DONE = "__emw_cell_done__"  # printed last by every cell `run_code` runs


def start_nbclassic(root: Path, timeout: float = 90) -> JupyterServer:
    """`jupyter nbclassic` on a free loopback port (its pages live under /nbclassic/)."""
    root.mkdir(parents=True, exist_ok=True)
    port, token = free_port(), uuid.uuid4().hex
    env = dict(
        os.environ, JUPYTER_RUNTIME_DIR=str(root / ".runtime"), JUPYTER_CONFIG_DIR=str(root / ".config")
    )
    cmd = [
        sys.executable, "-m", "jupyter", "nbclassic", "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
    ]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log_path = root / ".nbclassic-server.log"
    proc = subprocess.Popen(cmd, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, env=env)
    return wait_for_server(JupyterServer("nbclassic", root, port, token, proc, log_path), timeout)


@pytest.fixture(scope="module")
def classic_server(tmp_path_factory):
    server = start_nbclassic(tmp_path_factory.mktemp("e2e-nbclassic"))
    yield server
    server.stop()


class ClassicNotebook:
    """A notebook open in nbclassic, driven through its `Jupyter.notebook` API."""

    def __init__(self, page, server: JupyterServer, name: str):
        self.page, self.server = page, server
        self.console: list[str] = []
        self.scripts: list[str] = []
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.on("request", lambda r: self.scripts.append(r.url) if r.resource_type == "script" else None)
        page.goto(f"{server.base}/nbclassic/notebooks/{name}?token={server.token}")
        page.wait_for_function(
            "() => window.Jupyter && Jupyter.notebook && Jupyter.notebook.kernel"
            " && Jupyter.notebook.kernel.is_connected() && Jupyter.notebook.kernel.widget_manager",
            timeout=60_000,
        )
        # ipywidgets' classic manager asks the kernel for its widgets when it connects and then
        # re-renders every widget output; a cell run before that answer (the kernel is busy) gets
        # its fresh widget view cleared and hidden (an ipywidgets race, not ours). A user waits for
        # the notebook to load; we wait until two kernel round trips queued after that request are back.
        for _ in range(2):
            page.evaluate(
                "() => new Promise(ok => Jupyter.notebook.kernel.comm_info('', () => setTimeout(ok, 300)))"
            )

    def wait_idle(self, timeout: float) -> None:
        # Cell prompts, not kernel status (comm messages may run on subshells).
        self.page.wait_for_timeout(500)
        self.page.wait_for_function(
            "() => Jupyter.notebook.get_cells().every(c => c.cell_type !== 'code' || c.input_prompt_number !== '*')",
            timeout=timeout * 1000,
        )

    def run_all(self, timeout: float = 180) -> None:
        self.page.evaluate("() => Jupyter.notebook.execute_all_cells()")
        self.wait_idle(timeout)

    def run_code(self, code: str, timeout: float = 180) -> str:
        """Append a code cell, run it, return its text output.

        The cell's prompt number comes with the kernel's execute_reply (shell channel), its
        output on the iopub channel: on a loaded machine the reply can arrive first. So the cell
        prints a marker last, and its output is read once the marker (or an error) is there.
        """
        n = self.page.evaluate(
            """(code) => {
                const n = Jupyter.notebook.ncells();
                const cell = Jupyter.notebook.insert_cell_at_index('code', n);
                cell.set_text(code);
                Jupyter.notebook.select(n);
                cell.execute();
                return n;
            }""",
            f"{code}\nprint({CELL_DONE!r})",
        )
        self.wait_idle(timeout)
        self.page.wait_for_function(
            """([n, mark]) => Jupyter.notebook.get_cell(n).output_area.outputs.some(o =>
                o.ename !== undefined || [].concat(o.text || '').join('').includes(mark))""",
            arg=[n, CELL_DONE],
            timeout=timeout * 1000,
        )
        text = self.page.evaluate(
            """(n) => Jupyter.notebook.get_cell(n).output_area.outputs.map(o =>
                o.text !== undefined ? [].concat(o.text).join('')
                : o.data ? [].concat(o.data['text/plain'] || '').join('')
                : o.ename ? `${o.ename}: ${o.evalue}` : '').join('')""",
            n,
        )
        return text.replace(CELL_DONE + "\n", "")


def kernel_pngs(nb: ClassicNotebook, zxys: list[str]) -> dict[str, np.ndarray]:
    """RGBA of the panel's prediction at these tiles, rendered in the kernel from `image.tile()`."""
    out = nb.run_code(
        "from ee_model_widgets.core.vis import render as _render, to_png as _to_png\n"
        "_img, _vis = panel.layer.image, dict(panel.layer.vis_params)\n"
        f"for _zxy in {zxys!r}:\n"
        "    _z, _x, _y = map(int, _zxy.split('/'))\n"
        "    _png = _to_png(_render(_img.tile(_z, _x, _y), _vis, band_names=_img.band_names))\n"
        "    open(f'exp_{_z}_{_x}_{_y}.png', 'wb').write(_png)\n"
        "print('written')"
    )
    assert "written" in out, out
    return {
        zxy: np.asarray(PILImage.open(nb.server.root / f"exp_{zxy.replace('/', '_')}.png").convert("RGBA"))
        for zxy in zxys
    }


def settled(page, timeout: float = 120) -> None:
    page.wait_for_function(
        f"""() => {{
            const imgs = [...document.querySelectorAll('.{PRED} .leaflet-tile')];
            return imgs.length > 0 && imgs.every(i => i.dataset.status && i.dataset.status !== 'pending')
                && imgs.filter(i => i.classList.contains('leaflet-tile-loaded') && i.dataset.status === 'ok').length >= 2;
        }}""",
        timeout=timeout * 1000,
    )
    page.wait_for_timeout(700)  # Leaflet's fade-in


def test_quickstart_shows_predictions_from_the_nbextension_in_classic_notebook(classic_server, browser):
    nb_json = nbformat.read(QUICKSTART, as_version=4)
    nbformat.write(nb_json, classic_server.root / "quickstart.ipynb")
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, device_scale_factor=1)
    page = context.new_page()
    try:
        nb = ClassicNotebook(page, classic_server, "quickstart.ipynb")
        # The page is the classic Notebook, not a JupyterLab-based one.
        assert page.evaluate("() => typeof window.jupyterapp === 'undefined' && !!window.Jupyter.version")
        nb.run_all()
        out = nb.run_code("panel = _\npanel.wait(180)\nprint(type(panel).__name__, panel.status_text)")
        assert "Panel" in out or "landcover" in out, out
        page.locator(".emw-panel").evaluate("e => e.scrollIntoView({block: 'start'})")
        settled(page)

        # Our module came from the wheel's nbextension through require.js; nothing of JupyterLab's.
        ours = [u for u in nb.scripts if "ee-model-widgets" in u]
        assert any(u.split("?")[0].endswith("/nbextensions/ee-model-widgets/index.js") for u in ours), ours
        assert any(u.split("?")[0].endswith("/nbextensions/ee-model-widgets/extension.js") for u in ours), (
            ours
        )
        assert not [u for u in nb.scripts if "labextensions" in u or "/lab/extensions/" in u], nb.scripts
        assert page.evaluate("() => require.defined('nbextensions/ee-model-widgets/index')")
        # One Leaflet on the page: our GridLayer and jupyter-leaflet's map are instances of the same `L`.
        layer_id = nb.run_code("print(panel.layer.model_id)").strip().splitlines()[-1]
        assert page.evaluate(
            """async (id) => {
                const model = await Jupyter.notebook.kernel.widget_manager.get_model(id);
                const views = await Promise.all(Object.values(model.views));
                return views.length > 0 && views.every(v => v.obj instanceof window.L.GridLayer
                    && v.obj._map instanceof window.L.Map);
            }""",
            layer_id,
        )

        # The tiles shown are the prediction, rendered by the kernel independently of the layer.
        zxys = page.evaluate(
            f"""() => {{
                const out = [];
                for (const img of document.querySelectorAll('.{PRED} .leaflet-tile.leaflet-tile-loaded')) {{
                    if (img.dataset.status !== 'ok') continue;
                    const map = img.closest('.leaflet-container').getBoundingClientRect();
                    const r = img.getBoundingClientRect();
                    if (r.left >= map.left && r.top >= map.top && r.right <= map.right && r.bottom <= map.bottom)
                        out.push(img.dataset.zxy);
                }}
                return out;
            }}"""
        )
        assert zxys, "no prediction tile fully inside the map"
        expected = kernel_pngs(nb, zxys)
        page.locator(".emw-panel").evaluate("e => e.scrollIntoView({block: 'start'})")
        page.wait_for_timeout(300)
        checked = 0
        for zxy in zxys:
            rgba = expected[zxy]
            opaque = rgba[..., 3] == 255
            if opaque.mean() < 0.2:
                continue
            rgb, free = shown(page, zxy, PRED)
            mask = opaque & free
            diff = np.abs(rgb.astype(int) - rgba[..., :3].astype(int)).max(axis=-1)[mask]
            assert diff.size > 5000, zxy
            assert (diff <= 3).mean() > 0.97, (zxy, (diff <= 3).mean())
            checked += 1
        assert checked >= 1, f"no visible tile is mostly covered by predictions: {zxys}"

        stats = json.loads(
            nb.run_code(
                "import json\nprint(json.dumps(dict(done=panel.layer.tiles_done, failed=panel.layer.tiles_failed,"
                " err=panel.layer.last_error)))"
            )
            .strip()
            .splitlines()[-1]
        )
        assert stats["done"] >= checked and stats["failed"] == 0 and stats["err"] == "", stats
        assert not [c for c in nb.console if "ee-model-widgets" in c and "error" in c.lower()], nb.console
    finally:
        context.close()


# A layer slow enough (0.4 s a tile) that requests pile up while the user zooms.
SLOW_LAYER = """
import time
import ipyleaflet
import ee_model_widgets as emw
from ee_model_widgets.widgets.tile_layer import coordinate_tile

def slow_tile(z, x, y):
    time.sleep(0.4)
    return coordinate_tile(z, x, y)

layer = emw.KernelTileLayer(slow_tile)
m = ipyleaflet.Map(center=(-50.0, -69.0), zoom=6, layers=(), layout={"width": "700px", "height": "500px"})
m.add(layer)
m
"""

# Records every widget-comm message the page sends and receives, at the classic kernel
# connection (Kernel.send_shell_message / _handle_iopub_message), before the layer exists.
SPY = """() => {
    const log = window.__emwLog = [];
    const k = Jupyter.notebook.kernel;
    const send = k.send_shell_message.bind(k);
    k.send_shell_message = (type, content, ...rest) => {
        const c = type === 'comm_msg' && content.data && content.data.method === 'custom' && content.data.content;
        if (c && c.type) log.push(['out', content.comm_id, c.type, c.id]);
        return send(type, content, ...rest);
    };
    const handle = k._handle_iopub_message.bind(k);
    k._handle_iopub_message = (msg) => {
        const d = msg.header.msg_type === 'comm_msg' && msg.content.data;
        if (d && d.method === 'custom' && d.content && d.content.type) {
            log.push(['in', msg.content.comm_id, d.content.type, d.content.id]);
        }
        return handle(msg);
    };
}"""


def test_classic_comm_gives_one_answer_per_tile_and_cancels_stale_ones(classic_server, browser):
    path = classic_server.root / "zooms_classic.ipynb"
    nb_json = nbformat.v4.new_notebook()
    nb_json.cells = [nbformat.v4.new_code_cell(SLOW_LAYER)]
    nb_json.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb_json, path)
    context = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
    page = context.new_page()
    try:
        nb = ClassicNotebook(page, classic_server, path.name)
        page.evaluate(SPY)
        nb.run_all()
        page.wait_for_selector(".ee-model-tile .leaflet-tile.leaflet-tile-loaded", timeout=60_000)
        comm_id = nb.run_code("print(layer.model_id)").strip().splitlines()[-1]

        box = page.locator(".leaflet-container").first.bounding_box()
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        for _ in range(3):  # three zoom levels in quick succession, then back out one
            page.mouse.dblclick(cx, cy)
            page.wait_for_timeout(120)
        page.keyboard.press("-")
        page.wait_for_timeout(3000)
        # Every tile of the final view is drawn, from the kernel's answers.
        page.wait_for_function(
            """() => {
                const map = document.querySelector('.leaflet-container').getBoundingClientRect();
                const imgs = [...document.querySelectorAll('.ee-model-tile .leaflet-tile-container .leaflet-tile')].filter(img => {
                    const r = img.getBoundingClientRect();
                    return r.right > map.left && r.left < map.right && r.bottom > map.top && r.top < map.bottom
                        && getComputedStyle(img.parentElement).visibility !== 'hidden';
                });
                return imgs.length > 0 && imgs.every(img => img.classList.contains('leaflet-tile-loaded')
                    && img.dataset.status === 'ok');
            }""",
            timeout=90_000,
        )
        nb.run_code(
            "import time\nend = time.time() + 30\nwhile layer.tiles_queued + layer.tiles_running and time.time() < end:\n    time.sleep(0.1)"
        )
        page.wait_for_timeout(500)  # the last replies reach the browser
        log = [m for m in page.evaluate("() => window.__emwLog") if m[1] == comm_id]
        requests = [m[3] for m in log if m[0] == "out" and m[2] == "tile_request"]
        cancels = {m[3] for m in log if m[0] == "out" and m[2] == "tile_cancel"}
        responses = Counter(m[3] for m in log if m[0] == "in" and m[2] == "tile_response")
        assert len(requests) > 10 and len(set(requests)) == len(requests), requests
        assert cancels, "rapid zooms cancelled no stale tile"
        assert max(responses.values()) == 1, {
            k: v for k, v in responses.items() if v > 1
        }  # never two answers
        unanswered = [r for r in requests if r not in cancels and r not in responses]
        assert not unanswered, unanswered  # every tile still wanted got its answer
        assert set(responses) <= set(requests)
        stats = json.loads(
            nb.run_code(
                "import json\nprint(json.dumps(dict(cancelled=layer.tiles_cancelled, failed=layer.tiles_failed,"
                " done=layer.tiles_done)))"
            )
            .strip()
            .splitlines()[-1]
        )
        # The kernel answered each tile it rendered once, and skipped the stale ones it had not started.
        assert stats["failed"] == 0 and stats["done"] == sum(responses.values()), (stats, len(responses))
        assert stats["cancelled"] > 0 and stats["done"] < len(requests), (stats, len(requests))
    finally:
        context.close()

"""The wheel carries the prebuilt labextension and the classic/VS Code nbextension: users never need node."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_installs_an_enabled_labextension_without_node(tmp_path):
    # Build the wheel exactly as `pip wheel .` does (this runs npm through hatch-jupyter-builder).
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(ROOT)],
        check=True,
    )
    (wheel,) = (tmp_path / "dist").glob("ee_model_widgets-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    prefix = "ee_model_widgets-0.1.0.data/data/share/jupyter/labextensions/ee-model-widgets/"
    assert prefix + "package.json" in names
    assert any(n.startswith(prefix + "static/remoteEntry.") for n in names)
    check_nbextension(zipfile.ZipFile(wheel), tmp_path)

    # A clean venv with JupyterLab and our wheel, and no node anywhere on PATH.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    vpy = venv / "bin" / "python"
    subprocess.run([str(vpy), "-m", "pip", "install", "-q", "jupyterlab>=4.4,<5"], check=True)
    subprocess.run([str(vpy), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True)
    env = {"PATH": str(venv / "bin"), "HOME": str(tmp_path), "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg")}
    assert subprocess.run(["/bin/sh", "-c", "command -v node"], env=env, capture_output=True).returncode != 0
    out = subprocess.run(
        [str(venv / "bin" / "jupyter"), "labextension", "list"], env=env, capture_output=True, text=True
    )
    listing = out.stdout + out.stderr
    line = next((ln for ln in listing.splitlines() if "ee-model-widgets" in ln), "")
    assert "v0.1.0" in line and "enabled" in line, listing
    assert os.path.isdir(venv / "share" / "jupyter" / "labextensions" / "ee-model-widgets")
    # ... and the classic Notebook finds (and loads) our nbextension from the same install.
    assert (venv / "share" / "jupyter" / "nbextensions" / "ee-model-widgets" / "index.js").is_file()
    assert (venv / "etc" / "jupyter" / "nbconfig" / "notebook.d" / "ee-model-widgets.json").is_file()


# Evaluates the AMD module the way require.js would, with stand-ins for its dependencies: proves
# what it asks require.js for, what it exports, and that it extends jupyter-leaflet's classes and
# the page's Leaflet (window.L) instead of copies of its own.
AMD_PROBE = """
const src = require('fs').readFileSync(process.argv[1], 'utf8');
class LeafletRasterLayerModel { defaults() { return {_model_module: 'jupyter-leaflet'}; } }
class LeafletRasterLayerView {}
const jupyterLeaflet = {LeafletRasterLayerModel, LeafletRasterLayerView};
global.window = {L: {GridLayer: function GridLayer() {}, marker: 'the page Leaflet'}};
let deps, mod;
global.define = (d, factory) => { deps = d; mod = factory(...d.map(n => n === 'jupyter-leaflet' ? jupyterLeaflet : undefined)); };
global.define.amd = true;
new Function(src)();
const defaults = mod.EEKernelTileLayerModel.prototype.defaults.call(Object.create(mod.EEKernelTileLayerModel.prototype));
console.log(JSON.stringify({
  deps,
  exports: Object.keys(mod).sort(),
  extendsModel: Object.getPrototypeOf(mod.EEKernelTileLayerModel) === LeafletRasterLayerModel,
  extendsView: Object.getPrototypeOf(mod.EEKernelTileLayerView) === LeafletRasterLayerView,
  module: defaults._model_module, viewModule: defaults._view_module, version: defaults._model_module_version,
}));
"""


def check_nbextension(whl: zipfile.ZipFile, tmp_path: Path) -> None:
    """The classic Notebook / VS Code bundle: where it must be, what it requires, what it defines."""
    data = "ee_model_widgets-0.1.0.data/data/"
    nbext = data + "share/jupyter/nbextensions/ee-model-widgets/"
    names = whl.namelist()
    assert {nbext + "extension.js", nbext + "index.js"} <= set(names), [n for n in names if "nbext" in n]
    config = json.loads(whl.read(data + "etc/jupyter/nbconfig/notebook.d/ee-model-widgets.json"))
    assert config == {"load_extensions": {"ee-model-widgets/extension": True}}

    # extension.js tells require.js where the module `ee-model-widgets` lives.
    extension = whl.read(nbext + "extension.js").decode()
    assert re.search(r'"ee-model-widgets":\s*"nbextensions/ee-model-widgets/index"', extension), extension

    index = whl.read(nbext + "index.js")
    # Leaflet is not inside: Leaflet 1.9 alone is ~140 kB minified, and these are its own class names.
    assert len(index) < 30_000, len(index)
    for leaflet_source in (b"leaflet-tile-container", b"leaflet-control-zoom", b"leaflet-pane"):
        assert leaflet_source not in index
    # The npm package's CDN entry (dist/index.js, built by the same `npm run build:prod`) is the same module.
    assert (ROOT / "dist" / "index.js").read_bytes() == index

    node = shutil.which("node")
    assert node, "node is needed to build the wheel, so it is on PATH here"
    (tmp_path / "index.js").write_bytes(index)
    out = subprocess.run(
        [node, "-e", AMD_PROBE, str(tmp_path / "index.js")], capture_output=True, text=True, check=True
    )
    probe = json.loads(out.stdout)
    assert probe["deps"] == ["jupyter-leaflet"], probe  # require.js hands us jupyter-leaflet; no 'leaflet'
    assert probe["exports"] == ["EEKernelTileLayerModel", "EEKernelTileLayerView"], probe
    assert probe["extendsModel"] and probe["extendsView"], probe
    assert probe["module"] == probe["viewModule"] == "ee-model-widgets" and probe["version"] == "0.1.0", probe

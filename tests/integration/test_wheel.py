"""The wheel carries the prebuilt labextension: users never need node."""

from __future__ import annotations

import os
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

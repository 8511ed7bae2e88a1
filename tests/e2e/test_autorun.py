"""`make demo`: the trusted quickstart runs by itself and shows predictions; untrusted notebooks never do."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

from .harness import NotebookPage, wait_prediction_tiles

QUICKSTART = Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"


def test_trusted_quickstart_shows_predictions_without_a_click(lab_server, page):
    shutil.copy(QUICKSTART, lab_server.root / "quickstart.ipynb")
    subprocess.run(
        [sys.executable, "-m", "jupyter", "trust", str(lab_server.root / "quickstart.ipynb")], check=True
    )
    NotebookPage(page, lab_server, "quickstart.ipynb")
    # No cell is run by the test: the extension runs the notebook because it is trusted and asks to.
    # Only the prediction layer's tiles count (the input image has its own layer), drawn from kernel PNGs.
    tiles = wait_prediction_tiles(page, 4, timeout=120)
    assert len(tiles) >= 4


def test_an_untrusted_notebook_asking_to_autorun_does_not_run(lab_server, page):
    # Same metadata, but content nobody signed (trust is by content hash, so it must differ).
    nb_json = nbformat.read(QUICKSTART, as_version=4)
    nb_json.cells[-1].source += "  # a copy from somewhere else"
    nbformat.write(nb_json, lab_server.root / "untrusted.ipynb")
    NotebookPage(page, lab_server, "untrusted.ipynb")  # opens it and waits for its kernel
    page.wait_for_timeout(5000)
    counts = page.evaluate(
        "() => { const nb = window.jupyterapp.shell.currentWidget.content;"
        " return nb.widgets.filter(c => c.model.type === 'code').map(c => c.model.executionCount); }"
    )
    assert counts and all(c is None for c in counts), counts
    assert page.locator(".leaflet-container").count() == 0

"""`make demo`: the trusted quickstart runs by itself and shows predictions; untrusted notebooks never do."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

from .harness import NotebookPage, wait_prediction_tiles, write_notebook

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


def test_the_quickstart_runs_only_once_it_is_the_tab_in_view(lab_server, page):
    shutil.copy(QUICKSTART, lab_server.root / "background.ipynb")
    subprocess.run(
        [sys.executable, "-m", "jupyter", "trust", str(lab_server.root / "background.ipynb")], check=True
    )
    write_notebook(lab_server.root / "front.ipynb", ["1 + 1"])
    NotebookPage(page, lab_server, "front.ipynb")
    # Opened behind the current tab, as a workspace restores it: it must not run yet.
    page.evaluate(
        "() => window.jupyterapp.commands.execute('docmanager:open',"
        " {path: 'background.ipynb', options: {activate: false, mode: 'tab-after'}})"
    )
    page.wait_for_timeout(8000)
    counts = page.evaluate(
        """() => [...window.jupyterapp.shell.widgets('main')].filter(w => w.context && w.context.path === 'background.ipynb')
             .map(w => w.content.widgets.filter(c => c.model.type === 'code').map(c => c.model.executionCount))"""
    )
    assert counts and all(c is None for c in counts[0]), counts
    assert window_title(page) == "front.ipynb"
    # The user brings it to the front: now it runs and shows predictions.
    page.evaluate(
        """() => { const w = [...window.jupyterapp.shell.widgets('main')].find(w => w.context && w.context.path === 'background.ipynb');
                   window.jupyterapp.shell.activateById(w.id); }"""
    )
    assert len(wait_prediction_tiles(page, 4, timeout=120)) >= 4


def window_title(page) -> str:
    return page.evaluate("() => window.jupyterapp.shell.currentWidget.context.path")


HIDDEN_TAB = """
Object.defineProperty(document, 'visibilityState', {get: () => (window.__emwShown ? 'visible' : 'hidden')});
window.__emwShow = () => { window.__emwShown = true; document.dispatchEvent(new Event('visibilitychange')); };
"""


def test_the_quickstart_does_not_run_in_a_browser_tab_in_the_background(lab_server, browser):
    shutil.copy(QUICKSTART, lab_server.root / "hidden.ipynb")
    subprocess.run(
        [sys.executable, "-m", "jupyter", "trust", str(lab_server.root / "hidden.ipynb")], check=True
    )
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.add_init_script(
            HIDDEN_TAB
        )  # the browser reports this tab as not shown (document.visibilityState)
        NotebookPage(page, lab_server, "hidden.ipynb")
        page.wait_for_timeout(8000)
        counts = page.evaluate(
            "() => window.jupyterapp.shell.currentWidget.content.widgets"
            ".filter(c => c.model.type === 'code').map(c => c.model.executionCount)"
        )
        assert counts and all(c is None for c in counts), counts
        page.evaluate("() => window.__emwShow()")  # the user switches to the tab
        assert len(wait_prediction_tiles(page, 4, timeout=120)) >= 4
    finally:
        context.close()

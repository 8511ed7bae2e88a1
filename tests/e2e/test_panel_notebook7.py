"""The panel in Notebook 7 too (the issue's browser tests run in JupyterLab 4; this is the smoke test)."""

from __future__ import annotations

from .harness import NotebookPage, wait_prediction_tiles, write_notebook


def test_explore_streams_predictions_in_notebook_7(notebook_server, page):
    write_notebook(
        notebook_server.root / "explore_nb7.ipynb",
        ["import ee_model_widgets as emw\npanel = emw.explore()\npanel"],
    )
    nb = NotebookPage(page, notebook_server, "explore_nb7.ipynb")
    nb.run_all()
    # Prediction tiles only (not the input image's layer): kernel PNGs with drawn pixels, no error tiles.
    assert len(wait_prediction_tiles(page, 4, timeout=120)) >= 4
    # The prediction layer itself (not only the input image's layer) served tiles without errors.
    code = (
        "import time\nend = time.time() + 90\n"
        "while panel.layer.tiles_done == 0 and time.time() < end:\n    time.sleep(0.2)\n"
        "print(panel.layer.tiles_done, panel.layer.tiles_failed)"
    )
    done, failed = map(int, nb.run_code(code).split())
    assert done >= 1 and failed == 0
    # The panel's controls are there beside the map.
    assert page.get_by_text("fixInputProj").first.is_visible()

"""Tile requests lost on the way to the kernel are noticed within seconds, said on the map and in the
panel's status line, and asked for again until the tiles arrive.

The loss is real: the prediction layer's comm is routed the way ipykernel routed it before
comm_routing.py, to a subshell that does not exist, so the kernel drops every message of the
layer with "Unknown subshell_id" (its `_reply_subshell_for` hook is the kernel's own routing).
"""

from __future__ import annotations

import time

from .harness import NotebookPage, layer_diagnosis, wait_prediction_tiles, write_notebook

CELL = """
import ee_model_widgets as emw
panel = emw.explore()
comm = panel.layer.comm
working_route = comm._reply_subshell_for
comm._reply_subshell_for = lambda data, addressed: "a-subshell-that-was-deleted"
panel
"""


def test_lost_tile_requests_are_noticed_said_and_sent_again(lab_server, page):
    write_notebook(lab_server.root / "lost.ipynb", [CELL])
    nb = NotebookPage(page, lab_server, "lost.ipynb")
    nb.run_all()
    # Nothing reaches the kernel: within seconds of the first requests the map says so.
    notice = page.locator(".emw-tile-notice[data-layer*='emw-prediction'][data-state='waiting']")
    notice.wait_for(timeout=90_000)
    assert "Waiting for the kernel" in notice.inner_text() and "no answer for" in notice.inner_text()
    # The loss was real: the kernel logged the drops. (The notice only says that the browser has
    # had no answer for seconds; on a loaded machine the kernel may log them a little later.)
    deadline = time.monotonic() + 30
    while "Unknown subshell_id" not in lab_server.log() and time.monotonic() < deadline:
        page.wait_for_timeout(500)
    assert lab_server.log().count("Unknown subshell_id") > 0
    assert not page.locator(".emw-prediction .leaflet-tile.leaflet-tile-loaded[data-status='ok']").count()

    # The kernel can hear the layer again: the layer finds out which requests were lost and resends them.
    # (30 s: well before the 60 s request_timeout, so the tiles came from the resends.)
    nb.run_code("comm._reply_subshell_for = working_route")
    assert len(wait_prediction_tiles(page, 4, timeout=30)) >= 4
    resent_notice = page.locator(".emw-tile-notice[data-layer*='emw-prediction'][data-state='resent']")
    resent_notice.wait_for(timeout=10_000)
    assert "sent again" in resent_notice.inner_text()
    # The status line says it too (the kernel only knows because the browser reported it).
    page.wait_for_function(
        "() => document.querySelector('.emw-status').innerText.includes('lost on the way and asked again')",
        timeout=10_000,
    )
    resent = int(nb.run_code("print(panel.layer.tiles_resent)").strip())
    assert resent >= 4, (resent, layer_diagnosis(page))

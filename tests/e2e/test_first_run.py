"""What a newcomer sees, ten times in a row: `make demo`, the URL it prints, then closing the page,
reopening it, the workspace bringing the notebook back and a kernel restart.

Each visit must show real prediction tiles (the prediction layer's, drawn from kernel PNGs, not
error tiles, not the input image) within 20 s: a lost tile request used to leave the map without
predictions for good while the status line said "0 failed" (ipykernel routed the requests to a
deleted subshell, see ee_model_widgets/widgets/comm_routing.py).
"""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
from jupyter_client import BlockingKernelClient

from .demo_server import start_demo
from .harness import mark_tiles_old, wait_prediction_tiles

SECONDS = 20
UNKNOWN_SUBSHELL = "Unknown subshell_id"
# Panels still open in the kernel, and live widget models: each visit re-runs the quickstart's
# cell, which must replace the panel it made before, not add one (widgets/lifetime.py).
OPEN_PANELS = """
import gc, json, ipywidgets
from ee_model_widgets.widgets.panel import Panel
print(json.dumps([sum(isinstance(o, Panel) and o.comm is not None for o in gc.get_objects()),
                  len(ipywidgets.widgets.widget._instances)]))
"""


@pytest.fixture
def context_factory(browser):
    contexts = []

    def new_page():
        ctx = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
        contexts.append(ctx)
        return ctx, ctx.new_page()

    yield new_page
    for ctx in contexts:
        ctx.close()


def restart_kernel_and_run_all(page) -> None:
    """Kernel > Restart Kernel and Run All Cells..., confirmed, as a user does it."""
    page.locator(".lm-MenuBar-itemLabel", has_text="Kernel").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Restart Kernel and Run All Cells").first.click()
    page.locator(".jp-Dialog button.jp-mod-accept").first.click()


def run_cycles(server, new_page, plan: list[str]) -> list[str]:
    """Visit the notebook as `plan` says; return one line per visit (how long the tiles took, or why not)."""
    outcomes, ctx, page = [], None, None
    for step, how in enumerate(plan):
        started = time.monotonic()
        skip_old = False
        if how == "restart":
            mark_tiles_old(page)
            restart_kernel_and_run_all(page)
            skip_old = True
        else:
            if ctx is not None:
                ctx.close()  # the user closes the page (its websocket and its kernel subshells go)
            ctx, page = new_page()
            url = {"printed": server.printed_url, "workspace": server.url("/lab")}.get(how, server.url(how))
            page.goto(url)
        try:
            tiles = wait_prediction_tiles(
                page, 4, timeout=SECONDS - (time.monotonic() - started), skip_marked=skip_old
            )
            outcomes.append(f"{step} {how}: {len(tiles)} tiles in {time.monotonic() - started:.1f} s")
        except AssertionError as exc:
            outcomes.append(f"{step} {how}: FAILED {exc}")
    return outcomes


def check(outcomes: list[str], server) -> None:
    print("\n".join(outcomes))  # shown with -s, and with the failure
    failed = [o for o in outcomes if "FAILED" in o]
    log = server.log()
    assert not failed and UNKNOWN_SUBSHELL not in log, (
        "\n".join(outcomes) + f"\n{log.count(UNKNOWN_SUBSHELL)} '{UNKNOWN_SUBSHELL}' lines in the server log"
    )
    # Since the last kernel restart the quickstart ran twice (the restart, then a visit):
    # one panel is open in the kernel, the one on the page.
    panels, live_widgets = kernel_state(server)
    assert panels == 1, f"{panels} panels open in the kernel ({live_widgets} widget models)"


def kernel_state(server) -> list[int]:
    """OPEN_PANELS run in the notebook's kernel, through its connection file (a second client,
    like `jupyter console --existing`; it sends no cell id, so it closes nothing)."""
    with urllib.request.urlopen(server.url("/api/kernels")) as r:
        (kernel,) = json.load(r)
    runtime = server.home / ".local" / "share" / "jupyter" / "runtime"
    kc = BlockingKernelClient(connection_file=str(runtime / f"kernel-{kernel['id']}.json"))
    kc.load_connection_file()
    kc.start_channels()
    try:
        out: list[str] = []
        reply = kc.execute_interactive(
            OPEN_PANELS, timeout=60, output_hook=lambda m: out.append(m["content"].get("text", ""))
        )
        assert reply["content"]["status"] == "ok", reply["content"]
        return json.loads("".join(out).strip().splitlines()[-1])
    finally:
        kc.stop_channels()


def test_make_demo_shows_predictions_ten_times_in_a_row_in_jupyterlab(tmp_path, context_factory):
    server = start_demo(tmp_path, "lab")
    try:
        # The printed URL opens the quickstart itself (not the Launcher).
        assert "/lab/tree/quickstart.ipynb?token=" in server.printed_url, server.printed_url
        plan = ["printed", "workspace", "printed", "restart", "workspace"] * 2
        check(run_cycles(server, context_factory, plan), server)
    finally:
        server.stop()


def test_the_quickstart_shows_predictions_every_time_in_notebook_7(tmp_path, context_factory):
    server = start_demo(tmp_path, "notebook")
    try:
        plan = ["/notebooks/quickstart.ipynb", "restart", "/notebooks/quickstart.ipynb"] * 2
        check(run_cycles(server, context_factory, plan), server)
    finally:
        server.stop()

"""A panel lives as long as the cell that made it shows it: once that cell has run again (by hand,
or a reopened quickstart re-running itself), the old panel is closed with its ~270 widget models
and its threads, unless a notebook variable still holds it. Without this, every re-run left one
more panel in the kernel, and JupyterLab fetches the state of every live widget each time a page
opens.

A real IPython kernel, sent execute requests with the cell id in their metadata as JupyterLab
and Notebook 7 send them; the kernel's own counts are read back by a probe without a cell id.
"""

from __future__ import annotations

import json
import time

import pytest
from jupyter_client.manager import start_new_kernel

MAKE_ONE = "import ee_model_widgets as emw\np = emw.explore()\np.wait(180)"
MAKE_TWO = (
    "import ee_model_widgets as emw\np1 = emw.explore()\np2 = emw.explore()\np1.wait(180)\np2.wait(180)"
)
PROBE = """
import gc, json, threading, ipywidgets
from ee_model_widgets.widgets.panel import Panel
_live = [o for o in gc.get_objects() if isinstance(o, Panel) and o.comm is not None]
print(json.dumps({"panels": len(_live), "widgets": len(ipywidgets.widgets.widget._instances),
                  "threads": threading.active_count()}))
del _live
"""


def run(kc, code: str, cell_id: str | None = None, timeout: float = 240) -> str:
    """Execute `code` as a notebook front end does (with `cell_id` in the metadata); its stdout."""
    content = dict(
        code=code,
        silent=False,
        store_history=True,
        user_expressions={},
        allow_stdin=False,
        stop_on_error=True,
    )
    msg = kc.session.msg("execute_request", content, metadata={"cellId": cell_id} if cell_id else {})
    kc.shell_channel.send(msg)
    out, deadline = [], time.monotonic() + timeout
    while True:
        m = kc.get_iopub_msg(timeout=max(1.0, deadline - time.monotonic()))
        if m["parent_header"].get("msg_id") != msg["header"]["msg_id"]:
            continue
        kind, c = m["msg_type"], m["content"]
        if kind == "stream" and c["name"] == "stdout":
            out.append(c["text"])
        elif kind == "error":
            raise AssertionError(f"{c['ename']}: {c['evalue']}\n" + "\n".join(c["traceback"]))
        elif kind == "status" and c["execution_state"] == "idle":
            return "".join(out)


def probe(kc, threads_at_most: int | None = None) -> dict:
    """The kernel's counts; with `threads_at_most`, polled until closed panels' threads have ended."""
    deadline = time.monotonic() + 20
    while True:
        state = json.loads(run(kc, PROBE).strip().splitlines()[-1])
        if threads_at_most is None or state["threads"] <= threads_at_most or time.monotonic() > deadline:
            return state
        time.sleep(0.5)


@pytest.fixture(scope="module")
def kc():
    km, client = start_new_kernel(kernel_name="python3")
    try:
        yield client
    finally:
        client.stop_channels()
        km.shutdown_kernel(now=True)


def test_running_a_cell_again_closes_the_panel_it_made_and_nothing_else(kc):
    run(kc, MAKE_ONE, cell_id="cell-a")
    one = probe(kc)
    assert one["panels"] == 1, one

    # The same cell again (an edit and Shift+Enter, or a reopened quickstart): one panel, not two.
    # An open panel cannot be garbage-collected (ipywidgets holds every open widget), so equal
    # widget counts mean the old panel's ~270 widgets were all closed.
    run(kc, MAKE_ONE, cell_id="cell-a")
    again = probe(kc, threads_at_most=one["threads"])
    assert again["panels"] == 1, again
    assert again["widgets"] == one["widgets"], (one, again)
    assert again["threads"] <= one["threads"], (one, again)  # and its worker threads ended

    # Another cell's panels are its own: two made in one cell both stay, and re-running cell-a
    # replaces only cell-a's.
    run(kc, MAKE_TWO, cell_id="cell-b")
    assert probe(kc)["panels"] == 3
    run(kc, MAKE_ONE, cell_id="cell-a")
    assert probe(kc)["panels"] == 3

    # A panel a variable still holds is kept, and closed at a later re-run once it is dropped.
    run(kc, "q = p", cell_id="cell-q")
    run(kc, MAKE_ONE, cell_id="cell-a")
    assert probe(kc)["panels"] == 4
    run(kc, "del q", cell_id="cell-del")
    run(kc, MAKE_ONE, cell_id="cell-a")
    assert probe(kc)["panels"] == 3

    # "Make it once" code re-run keeps its one panel open.
    once = 'panel = globals().get("panel") or emw.explore()\nprint(panel.comm is not None, id(panel))'
    first = run(kc, once, cell_id="cell-once")
    second = run(kc, once, cell_id="cell-once")
    assert first == second and first.startswith("True"), (first, second)
    assert probe(kc)["panels"] == 4

    # Code run without a cell id (a script, the classic Notebook, nbclient) closes nothing.
    run(kc, MAKE_ONE)
    run(kc, MAKE_ONE)
    assert probe(kc)["panels"] == 6

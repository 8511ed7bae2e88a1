"""The quickstart as a Voila app: `voila notebooks/quickstart.ipynb`, as a user starts it.

Voila runs every cell itself and hides the code, so the page must show the panel with real
prediction tiles (the prediction layer's, coloured from the kernel's data, not error tiles,
not the input image) within 20 s, and again after each reload (every visit gets a new kernel). With
`make install`'s editable install the labextension is a `jupyter labextension develop`
symlink, which Voila refused to serve (403 "is not in root static directory"): the widgets
never rendered. See the Makefile's `copy_voila_labextension`. The kernels of pages left
(reloaded or closed) are shut down by the culling flags the README gives for workshops.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from .demo_server import fresh_user, launch, stop_group
from .harness import wait_prediction_tiles

SECONDS = 20
VISITS = 3
URL_RE = re.compile(r"http://127\.0\.0\.1:\d+/\S*")


def start_voila(tmp: Path, *flags: str, timeout: float = 90) -> tuple[subprocess.Popen, str, Path]:
    """`voila notebooks/quickstart.ipynb` from a scratch copy, fresh HOME; returns (process, printed URL, log)."""
    _home, work, env = fresh_user(tmp)
    venv = Path(sys.prefix)
    # The user's command, minus the browser it would open; loopback only (Voila's default port,
    # moving on to a free one when another server holds it).
    cmd = [
        str(venv / "bin" / "voila"),
        "--no-browser",
        "--Voila.ip=127.0.0.1",
        *flags,
        "notebooks/quickstart.ipynb",
    ]
    proc, m, log_path = launch(cmd, work, env, tmp / "voila.log", URL_RE, "voila", timeout)
    return proc, m.group(0), log_path


def test_voila_shows_the_quickstart_predictions_on_every_visit(tmp_path, browser):
    proc, url, log_path = start_voila(tmp_path)
    context = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
    # Files the page failed to load (the labextension above all). Not the kernel shutdown Voila's page
    # POSTs on unload: Voila 0.5.13 sends it without an XSRF token and jupyter_server refuses it.
    refused: list[str] = []
    context.on(
        "response",
        lambda r: r.status >= 400 and r.request.method == "GET" and refused.append(f"{r.status} {r.url}"),
    )
    try:
        page = context.new_page()
        outcomes = []
        for visit in range(VISITS):
            started = time.monotonic()
            page.goto(url) if visit == 0 else page.reload()
            try:
                tiles = wait_prediction_tiles(page, 4, timeout=SECONDS)
                outcomes.append(f"visit {visit}: {len(tiles)} tiles in {time.monotonic() - started:.1f} s")
            except AssertionError as exc:
                outcomes.append(f"visit {visit}: FAILED {exc}")
        print("\n".join(outcomes))  # shown with -s, and with the failure
        log = log_path.read_text(errors="replace")
        assert not [o for o in outcomes if "FAILED" in o], (
            "\n".join(outcomes)
            + "\nrefused requests:\n"
            + "\n".join(refused)
            + f"\nvoila log (tail):\n{log[-3000:]}"
        )
        assert not refused, "\n".join(refused)
        assert "is not in root static directory" not in log
        # Voila hides the code: a keyboard shortcut to run a cell would mean nothing here.
        assert "Shift" not in page.inner_text("body")
    finally:
        context.close()
        stop_group(proc)


def kernels_of(proc: subprocess.Popen) -> int:
    """Kernel processes Voila started (its children; jupyter_client gives each a session of
    its own), read from /proc."""
    n = 0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == proc.pid and b"ipykernel" in (d / "cmdline").read_bytes():
                n += 1
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return n


def test_the_kernels_of_reloaded_pages_are_shut_down_with_the_workshop_flags(tmp_path, browser):
    # Voila 0.5's page asks for its kernel's shutdown on unload without an XSRF token, and
    # jupyter_server refuses it: without culling, every reload leaves a kernel (with its model)
    # running. The README's workshop command culls kernels no page is connected to.
    flags = ("--MappingKernelManager.cull_idle_timeout=30", "--MappingKernelManager.cull_interval=2")
    proc, url, log_path = start_voila(tmp_path, *flags)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        for visit in range(3):
            page.goto(url) if visit == 0 else page.reload()
            wait_prediction_tiles(page, 4, timeout=SECONDS)
        assert kernels_of(proc) >= 2, (
            "the page of visit 2 left a kernel: culling comes 30 s after, not before"
        )
        deadline = time.monotonic() + 120
        while kernels_of(proc) > 1 and time.monotonic() < deadline:
            time.sleep(1)
        log = log_path.read_text(errors="replace")
        assert kernels_of(proc) == 1, f"{kernels_of(proc)} kernels left for one open page\n{log[-3000:]}"
        # the open page's kernel was spared: zoomed in, it answers the new tiles
        before = set(wait_prediction_tiles(page, 4, timeout=SECONDS))
        page.click(".leaflet-control-zoom-in")
        deadline = time.monotonic() + SECONDS
        while not set(wait_prediction_tiles(page, 1, timeout=SECONDS)) - before:
            assert time.monotonic() < deadline, "no new prediction tile after zooming in"
            page.wait_for_timeout(250)
    finally:
        context.close()
        stop_group(proc)

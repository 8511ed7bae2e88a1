"""How our widgets end: a whole widget tree closed at once, and what a notebook cell made
closed once that cell has run again.

A panel is ~270 widget models (map, layers, controls, their layouts and styles) and ~10
worker threads. Closing only its outer box would leave the rest alive in the kernel, and
JupyterLab fetches the state of every live widget model each time a page is (re)opened, so
`close_tree` closes everything the widget reaches through its synced traits.

Re-running a cell clears its output, so the panel it showed can no longer be seen, but the
kernel keeps it. A trusted quickstart re-runs its cells each time its page is reopened, and
a user re-runs a cell after every edit: panels would pile up, each with its threads. So a
widget that asks (`close_on_rerun`) is closed after the cell that made it has run again,
unless a variable of the notebook still holds it (directly, or in a list, tuple, set or dict):
`p = emw.explore()` run twice closes the first panel, while "make it once" code such as
`panel = globals().get("panel") or emw.explore()` keeps its panel. Names starting with `_`
(IPython's output history among them) do not count.
JupyterLab and Notebook 7 send the cell's id with each execution (IPython passes it to
`pre_run_cell`/`post_run_cell` as `info.cell_id`); code run without one (a script, the
classic Notebook, nbclient, a comm message) closes nothing.
"""

from __future__ import annotations

import logging
import threading
import weakref

import ipywidgets as widgets

from .widget_tree import descendants

log = logging.getLogger(__name__)
_lock = threading.Lock()
#: cell id -> the widgets its runs made (weak: a widget closed or dropped by the user is not
#: kept alive for this).
_made_by_cell: dict[str, weakref.WeakSet] = {}
#: cell id -> the widgets its earlier runs made, while it runs again.
_earlier: dict[str, list[widgets.Widget]] = {}
_hooked: set[int] = set()


def close_tree(root: widgets.Widget) -> None:
    """Close every widget `root` holds (`widget_tree.descendants`: children, map layers and
    controls, layouts), each by its own `close()`. Not `root` itself: a subclass's `close`
    calls this, then `super().close()`."""
    for w in descendants(root):
        w.close()


def _current_cell() -> str | None:
    """The id of the notebook cell whose execution is running on this thread, if any."""
    try:
        from IPython import get_ipython

        ip = get_ipython()
        parent = ip.kernel.get_parent("shell")  # per thread/context: a comm handler has its own
    except Exception:  # noqa: BLE001 - no IPython kernel (a script, a test): no cell
        return None
    if not parent or parent.get("header", {}).get("msg_type") != "execute_request":
        return None
    cell = parent.get("metadata", {}).get("cellId")
    return cell if isinstance(cell, str) and cell else None


def _on_pre_run_cell(info) -> None:
    cell = getattr(info, "cell_id", None)
    if cell:
        with _lock:
            made = _made_by_cell.pop(cell, None)
            if made:  # added to, not replaced: a run cut short may have skipped its post_run_cell
                _earlier.setdefault(cell, []).extend(made)


#: Containers larger than this are not looked into (a variable holding a million numbers).
_MAX_SCAN = 10_000


def _held(user_ns: dict) -> set[int]:
    """ids of the objects the notebook's public variables hold, directly or in a container."""
    held: set[int] = set()
    for name, value in list(user_ns.items()):
        if name.startswith("_") or name in ("In", "Out"):
            continue
        held.add(id(value))
        if isinstance(value, (list, tuple, set, frozenset, dict)) and len(value) <= _MAX_SCAN:
            held.update(id(v) for v in (value.values() if isinstance(value, dict) else value))
    return held


def _on_post_run_cell(result) -> None:
    cell = getattr(getattr(result, "info", None), "cell_id", None)
    if not cell:
        return
    with _lock:
        earlier = _earlier.pop(cell, [])
    if not earlier:
        return
    from IPython import get_ipython

    held = _held(get_ipython().user_ns)
    for w in earlier:
        if id(w) in held:  # still in use by the notebook: closed at a later re-run, if dropped
            with _lock:
                _made_by_cell.setdefault(cell, weakref.WeakSet()).add(w)
            continue
        try:
            w.close()
        except Exception:  # noqa: BLE001 - the user's cell has run; a stale panel must not fail it
            log.warning("closing a widget made by an earlier run of this cell failed", exc_info=True)


def close_on_rerun(widget: widgets.Widget) -> None:
    """Close `widget` (its own `close()`) once the notebook cell running now has run again,
    unless a notebook variable still holds it then (see the module docstring)."""
    cell = _current_cell()
    if cell is None:
        return
    from IPython import get_ipython

    ip = get_ipython()
    with _lock:
        if id(ip) not in _hooked:
            ip.events.register("pre_run_cell", _on_pre_run_cell)
            ip.events.register("post_run_cell", _on_post_run_cell)
            _hooked.add(id(ip))
        _made_by_cell.setdefault(cell, weakref.WeakSet()).add(widget)

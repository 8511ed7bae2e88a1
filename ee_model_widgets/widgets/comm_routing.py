"""Deliver a widget's browser messages to a kernel subshell that exists.

JupyterLab >= 4.4 sends widget comm messages over kernel subshells (one per comm target and
browser page, created and deleted by the page). ipykernel >= 7.3 does not always deliver a
`comm_msg` to the subshell the browser addressed: it remembers, per comm, the subshell of the
parent message of the comm's last kernel->browser message (`Comm._reply_subshell_for`, so that
code waiting in a subshell gets its reply there) and routes the next browser messages to it.

For a layer whose tiles are sent from worker threads that parent is whatever message the kernel
handled last on any thread — typically the `request_states` message that the widget manager of a
freshly (re)opened page sends on its `jupyter.widget.control` comm, over that comm's own
subshell. The page deletes that subshell as soon as it closes the control comm, and from then
on the kernel routes every tile request of the layer to a subshell that is gone: it logs
`Cannot handle comm_msg ...: Unknown subshell_id '...'` and drops the request. No tile arrives,
and the layer often stays deaf for later pages too: only a kernel->browser message on the comm
changes the remembered id, and none comes while no request gets through. Panel controls, whose updates are also sent from
worker threads, go deaf the same way.

The remembered id also sends messages to the main shell when the comm's last message was sent
from a cell (the layer's creation, a `redraw()`), where they wait until the running cell ends:
the subshell JupyterLab created so that tiles flow beside a long cell is not used.

`route_to_live_subshells` makes the kernel deliver a widget's browser messages where the browser
addressed them when that subshell exists, else on the main shell: a message may then wait
behind a running cell, but it is never dropped. None of our widgets waits in a subshell for a
browser reply, which is all that ipykernel's routing is for.
"""

from __future__ import annotations

import logging

from .widget_tree import descendants

log = logging.getLogger(__name__)

_ROUTED = "_emw_routed"


def _live_subshells(comm) -> set[str] | None:
    """The kernel's current subshell ids, or None when it cannot tell (no subshell support)."""
    kernel = getattr(comm, "kernel", None)
    manager = getattr(getattr(kernel, "shell_channel_thread", None), "manager", None)
    if manager is None:
        return None
    try:
        return set(manager.list_subshell())
    except Exception:  # noqa: BLE001 - a kernel internals change must not break message delivery
        return None


def _live_route(comm):
    """ipykernel's per-comm routing hook: the addressed subshell if it exists, else the main shell."""

    def route(_data, addressed):
        if addressed is None:
            return None
        live = _live_subshells(comm)
        if live is None or addressed in live:
            return addressed
        log.info("comm %s: subshell %r is gone; delivering on the main shell", comm.comm_id, addressed)
        return None

    return route


def route_comm(comm) -> None:
    """Make the kernel deliver `comm`'s browser messages to a live subshell (or the main shell)."""
    if comm is None or not hasattr(comm, "_reply_subshell_for") or getattr(comm, _ROUTED, False):
        return  # ipykernel < 7.3 has no such routing: messages go where the browser addressed them
    comm._reply_subshell_for = _live_route(comm)
    setattr(comm, _ROUTED, True)


def route_to_live_subshells(root) -> None:
    """Apply `route_comm` to `root` and every widget it holds (`widget_tree.descendants`)."""
    for w in (root, *descendants(root)):
        route_comm(getattr(w, "comm", None))

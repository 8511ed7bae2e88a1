"""The widgets a widget holds: Box children, map layers and controls, layouts and styles."""

from __future__ import annotations

from collections.abc import Iterator

from ipywidgets import Widget


def children(widget: Widget) -> Iterator[Widget]:
    """The widgets `widget` holds directly in its synced traits."""
    for name in widget.keys:
        try:
            value = getattr(widget, name)
        except Exception:  # noqa: BLE001 - a trait that fails to read holds nothing we can use
            continue
        if isinstance(value, Widget):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from (v for v in value if isinstance(v, Widget))


def descendants(root: Widget) -> list[Widget]:
    """Every widget `root` reaches through synced traits, each once, `root` excluded."""
    seen, found, todo = {id(root)}, [], [root]
    while todo:
        for child in children(todo.pop()):
            if id(child) not in seen:
                seen.add(id(child))
                found.append(child)
                todo.append(child)
    return found

"""What a panel tab may use of the panel that hosts it (`TabHost`).

Tabs live in their own modules and the panel imports them; a tab that imported the panel
back would close an import cycle, so it names this protocol instead.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any, Protocol

import ipyleaflet
import ipywidgets as widgets

from ..core.image import Image


class TabHost(Protocol):
    """The panel as its tabs see it: the map, its draw control, the current image, new models,
    and background lanes."""

    map: Any  # widgets.map.Map (an ipyleaflet.Map)
    draw_control: ipyleaflet.DrawControl

    @property
    def image(self) -> Image | None:
        """The image the panel currently shows."""

    def add_model(self, name: str, model: Any, **kwargs: Any) -> Any:
        """Offer `model` in the panel under `name` (and select it)."""

    def _submit(
        self, lane: str, message: str, fn: Callable[..., Any], *args: Any, latest_only: bool = False
    ) -> None:
        """Run `fn(*args)` in the background lane `lane`, showing `message` meanwhile."""


HELP_STYLE = "font-size:11px;line-height:1.35;color:#444"


def help_html(text: str) -> widgets.HTML:
    """A tab's small help text."""
    return widgets.HTML(f"<div style='{HELP_STYLE}'>{html.escape(text)}</div>")

"""`PalettePicker`: a colormap dropdown with matplotlib previews (the Display tab's palette)."""

from __future__ import annotations

import base64
import threading
from collections.abc import Sequence

import ipywidgets as widgets
import traitlets

from ..core.vis import colormap_preview

#: Colormaps offered by the palette picker (all matplotlib names; any other name works in code).
PALETTES = [
    "viridis",
    "magma",
    "inferno",
    "cividis",
    "turbo",
    "YlGn",
    "Greens",
    "RdYlGn",
    "BrBG",
    "Spectral",
    "coolwarm",
    "Blues",
    "terrain",
    "gray",
]

_previews: dict[str, bytes] = {}
_previews_lock = threading.Lock()


def palette_preview(name: str, width: int = 160, height: int = 12) -> bytes:
    """PNG strip of a palette (cached)."""
    key = f"{name}:{width}x{height}"
    with _previews_lock:
        png = _previews.get(key)
    if png is None:
        png = colormap_preview(name, width, height)
        with _previews_lock:
            _previews[key] = png
    return png


class PalettePicker(widgets.VBox):
    """A colormap dropdown, a preview of the chosen one, and a gallery of all previews."""

    value = traitlets.Unicode("viridis")

    def __init__(self, value: str = "viridis", options: Sequence[str] = PALETTES, **kwargs):
        options = list(options)
        if value not in options:
            options.insert(0, value)
        self.dropdown = widgets.Dropdown(
            options=options, value=value, description="Palette", layout={"width": "220px"}
        )
        self.dropdown.add_class("emw-palette")
        self.preview = widgets.Image(
            value=palette_preview(value), format="png", layout={"width": "160px", "height": "12px"}
        )
        rows = "".join(
            f'<div style="display:flex;align-items:center;gap:6px;line-height:14px">'
            f'<img src="data:image/png;base64,{base64.b64encode(palette_preview(n, 120, 10)).decode()}" '
            f'style="width:120px;height:10px"/><span style="font-size:11px">{n}</span></div>'
            for n in options
        )
        self.gallery = widgets.Accordion(
            children=[widgets.HTML(rows)], titles=("All palettes",), selected_index=None
        )
        super().__init__(
            [widgets.HBox([self.dropdown, self.preview], layout={"align_items": "center"}), self.gallery],
            **kwargs,
        )
        self.value = value
        traitlets.link((self.dropdown, "value"), (self, "value"))
        self.observe(self._show, "value")

    def _show(self, change) -> None:
        self.preview.value = palette_preview(change["new"])

"""The inspector: click the map, read every output band and every input band at that point.

Values come from `Image.sample(lon, lat)`, i.e. a 1-pixel read at each image's native scale
through the same read path as the map and exports, so they equal `to_numpy()` at that pixel.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import ipywidgets as widgets

from ..core.image import Image
from ..core.region import point_in_image


def fmt(value: float | None) -> str:
    """How the inspector prints a value: 7 significant digits, 'masked' for no data."""
    return "masked" if value is None else f"{value:.7g}"


class Inspector(widgets.VBox):
    """Shows the values at the last clicked point; `inspect(lon, lat, sections)` fills it."""

    def __init__(self, **kwargs):
        self.html = widgets.HTML("<i>Click the map to see every output and input band at that point.</i>")
        self.html.add_class("emw-inspector")
        #: The last result: {"lon", "lat", section title -> {band: value or None}}.
        self.values: dict = {}
        super().__init__([self.html], **kwargs)

    def show_pending(self, lon: float, lat: float) -> None:
        self.html.value = f"<b>Point</b> {lon:.6f}, {lat:.6f}<br><i>reading…</i>"

    def inspect(
        self,
        lon: float,
        lat: float,
        sections: Sequence[tuple[str, Image]],
        labels: dict[str, dict[int, str]] | None = None,
    ) -> dict:
        """Sample each (title, image) at (lon, lat); show and return the values.

        `labels`: band -> {class value: name}, printed beside class values.
        """
        result: dict = {"lon": float(lon), "lat": float(lat)}
        rows = [f"<b>Point</b> {lon:.6f}, {lat:.6f}"]
        for title, image in sections:
            try:
                if not point_in_image(image, lon, lat):  # say so, rather than "masked" in every band
                    result[title] = dict.fromkeys(image.band_names)
                    rows.append(
                        f'<div style="margin-top:4px" data-section="{html.escape(title)}"><b>{html.escape(title)}</b>'
                        f'<br><span class="emw-outside">outside this image</span></div>'
                    )
                    continue
                values = image.sample(lon, lat)
            except Exception as exc:  # noqa: BLE001 - a failing model must not break the inspector
                result[title] = {"error": f"{type(exc).__name__}: {exc}"}
                rows.append(
                    f'<div style="margin-top:4px"><b>{html.escape(title)}</b><br>'
                    f'<span style="color:#b00">{html.escape(str(exc))}</span></div>'
                )
                continue
            result[title] = values
            cells = []
            for band, v in values.items():
                text = fmt(v)
                names = (labels or {}).get(band)
                if names and v is not None and int(round(v)) in names:
                    text += f" ({html.escape(names[int(round(v))])})"
                cells.append(
                    f'<tr><td style="padding:0 8px 0 0">{html.escape(band)}</td>'
                    f'<td class="emw-value" data-band="{html.escape(band)}" style="text-align:right;padding:0">{text}</td></tr>'
                )
            rows.append(
                f'<div style="margin-top:4px" data-section="{html.escape(title)}"><b>{html.escape(title)}</b>'
                f'<table style="font-size:12px;line-height:1.25">{"".join(cells)}</table></div>'
            )
        self.values = result
        self.html.value = "".join(rows)
        return result

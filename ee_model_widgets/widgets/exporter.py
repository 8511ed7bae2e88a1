"""The export control: write the prediction over the panel's region to a GeoTIFF in the background.

The file is written by `core.export.export_geotiff` (streamed windows, temp file + rename),
so it holds exactly what `prediction.to_numpy(region)` returns. Progress is counted in the
windows read: the image handed to the exporter is a thin view that reports each read.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Callable

import ipywidgets as widgets

from ..core.image import Image

#: Window size of panel exports (small windows: a smooth progress bar, little memory).
EXPORT_BLOCK = 256


class _CountingImage(Image):
    """Reads through `inner` and calls `on_read()` after each read (one per export window)."""

    def __init__(self, inner: Image, on_read: Callable[[], None]):
        self._inner = inner
        self._on_read = on_read
        self._band_names = list(inner.band_names)
        self.categorical_bands = inner.categorical_bands

    @property
    def grid(self):
        return self._inner.grid

    @property
    def projection(self):
        return self._inner.projection

    def _read(self, grid, bands, resampling):
        out = self._inner.read(grid, bands, resampling)
        self._on_read()
        return out


def export_with_progress(
    image: Image, path: str, region=None, on_progress: Callable[[int, int], None] | None = None
) -> str:
    """Export `image` over `region` to `path` (GeoTIFF), calling `on_progress(done, total)` per window."""
    from ..core.export import export_geotiff
    from ..core.region import grid_for

    grid = grid_for(image, region)
    total = math.ceil(grid.width / EXPORT_BLOCK) * math.ceil(grid.height / EXPORT_BLOCK)
    done = [0]

    def tick() -> None:
        done[0] += 1
        if on_progress is not None:
            on_progress(done[0], total)

    if on_progress is not None:
        on_progress(0, total)
    # Exports read through a streaming view: they reuse cached cells without flushing the map's.
    streaming = getattr(image, "streaming", None)
    source = streaming() if callable(streaming) else image
    return export_geotiff(
        _CountingImage(source, tick), path, region=region, block_size=EXPORT_BLOCK, progress=False
    )


class Exporter(widgets.VBox):
    """Path field, Export button, progress bar and the path of the written file."""

    def __init__(self, default_path: str = "prediction.tif", **kwargs):
        self.path = widgets.Text(value=default_path, description="File", layout={"width": "330px"})
        self.path.add_class("emw-export-path")
        self.button = widgets.Button(
            description="Export region to GeoTIFF", icon="download", button_style="primary"
        )
        self.button.add_class("emw-export-button")
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="", layout={"width": "330px"})
        self.result = widgets.HTML("")
        self.result.add_class("emw-export-result")
        #: Path of the last file written (None before the first export).
        self.written: str | None = None
        super().__init__([self.path, self.button, self.progress, self.result], **kwargs)

    def target(self) -> str:
        """The absolute path the next export writes."""
        path = os.path.expanduser(self.path.value.strip() or "prediction.tif")
        if not path.lower().endswith((".tif", ".tiff")):
            path += ".tif"
        return os.path.abspath(path)

    def started(self, path: str) -> None:
        self.button.disabled = True
        self.progress.bar_style = ""
        self.progress.value = 0
        self.result.value = f"Writing {html.escape(path)}…"

    def on_progress(self, done: int, total: int) -> None:
        self.progress.max = max(total, 1)
        self.progress.value = done

    def finished(self, path: str) -> None:
        self.written = path
        self.button.disabled = False
        self.progress.value = self.progress.max
        self.progress.bar_style = "success"
        self.result.value = f'Wrote <code class="emw-export-file">{html.escape(path)}</code>'

    def failed(self, message: str) -> None:
        self.button.disabled = False
        self.progress.bar_style = "danger"
        self.result.value = f'<span style="color:#b00">Export failed: {html.escape(message)}</span>'

"""The export control: write the prediction over the panel's region to a Cloud-Optimized GeoTIFF
in the background, in this kernel or on a dask.distributed cluster.

The file is written by the one export path (`core.export_tasks`: chunks of whole model cells,
temp file + rename), so it holds exactly what `prediction.to_numpy(region)` returns. Progress
is counted in written chunks (tasks done/total). "Run on the cluster" appears when a
`distributed.Client` exists in the kernel (or was given to `explore(client=...)`); Cancel
cancels the pending tasks and leaves no file.
"""

from __future__ import annotations

import html
import os
import sys
import threading
from collections.abc import Callable

import ipywidgets as widgets

from ..core.image import Image

#: Chunk side of panel exports: whole cells of the usual 64/128/256 px tiles, and a progress
#: bar that moves for the regions one draws on a map.
EXPORT_BLOCK = 512


def find_client(explicit=None):
    """The `distributed.Client` to offer: `explicit`, else the kernel's default client, else None.

    dask is never imported here: without `distributed` already imported there is no client.
    """
    if explicit is not None:
        return explicit
    if "distributed" not in sys.modules:
        return None
    try:
        return sys.modules["distributed"].default_client()
    except (ValueError, AttributeError):  # no client created in this kernel
        return None


def export_with_progress(
    image: Image,
    path: str,
    region=None,
    on_progress: Callable[[int, int], None] | None = None,
    *,
    client=None,
    cancel: threading.Event | None = None,
) -> str:
    """Export `image` over `region` to `path` (COG), calling `on_progress(done, total)` per chunk;
    on `client`'s cluster when one is given; `cancel.set()` stops it."""
    from ..core.export import export_geotiff

    return export_geotiff(
        image,
        path,
        region=region,
        block_size=EXPORT_BLOCK,
        progress=False,
        client=client,
        on_progress=on_progress,
        cancel=cancel,
    )


class Exporter(widgets.VBox):
    """Path field, cluster choice, Export and Cancel buttons, progress bar, tasks done/total."""

    def __init__(self, default_path: str = "prediction.tif", client=None, **kwargs):
        self.path = widgets.Text(value=default_path, description="File", layout={"width": "330px"})
        self.path.add_class("emw-export-path")
        self.button = widgets.Button(
            description="Export region to GeoTIFF", icon="download", button_style="primary"
        )
        self.button.add_class("emw-export-button")
        self.cancel_button = widgets.Button(description="Cancel", icon="stop", disabled=True)
        self.cancel_button.add_class("emw-export-cancel")
        self.cancel_button.on_click(lambda _b: self.cancel())
        self.on_cluster = widgets.Checkbox(value=True, description="Run on the cluster", indent=False)
        self.on_cluster.add_class("emw-export-cluster")
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="", layout={"width": "330px"})
        self.tasks = widgets.HTML("")
        self.tasks.add_class("emw-export-tasks")
        self.result = widgets.HTML("")
        self.result.add_class("emw-export-result")
        #: Path of the last file written (None before the first export).
        self.written: str | None = None
        #: A `distributed.Client` given by `explore(client=...)` (else the kernel's default one).
        self.client = client
        self._cancel = threading.Event()
        super().__init__(
            [
                self.path,
                self.on_cluster,
                widgets.HBox([self.button, self.cancel_button]),
                self.progress,
                self.tasks,
                self.result,
            ],
            **kwargs,
        )
        self.refresh_cluster()

    def refresh_cluster(self):
        """Show "Run on the cluster" only when a client exists; returns that client (or None)."""
        client = find_client(self.client)
        self.on_cluster.layout.display = None if client is not None else "none"
        return client

    def run_options(self) -> dict:
        """Keyword arguments of `export_with_progress` for the next run: client and cancel flag."""
        client = self.refresh_cluster()
        self._cancel = threading.Event()
        return {
            "client": client if client is not None and self.on_cluster.value else None,
            "cancel": self._cancel,
        }

    def cancel(self) -> None:
        """Stop the running export (its pending tasks are cancelled, no file is left)."""
        self._cancel.set()
        self.cancel_button.disabled = True

    def target(self) -> str:
        """The absolute path the next export writes."""
        path = os.path.expanduser(self.path.value.strip() or "prediction.tif")
        if not path.lower().endswith((".tif", ".tiff")):
            path += ".tif"
        return os.path.abspath(path)

    def started(self, path: str, client=None) -> None:
        self.button.disabled = True
        self.cancel_button.disabled = False
        self.progress.bar_style = ""
        self.progress.value = 0
        self.tasks.value = ""
        where = ""
        link = getattr(client, "dashboard_link", None) if client is not None else None
        if link:
            safe = html.escape(link, quote=True)
            where = (
                f' on the cluster (<a href="{safe}" target="_blank" class="emw-dashboard">dask dashboard</a>)'
            )
        self.result.value = f"Writing {html.escape(path)}{where}…"

    def on_progress(self, done: int, total: int) -> None:
        self.progress.max = max(total, 1)
        self.progress.value = done
        self.tasks.value = f"tasks {done}/{total}"

    def finished(self, path: str) -> None:
        self.written = path
        self.button.disabled = False
        self.cancel_button.disabled = True
        self.progress.value = self.progress.max
        self.progress.bar_style = "success"
        self.result.value = f'Wrote <code class="emw-export-file">{html.escape(path)}</code>'

    def failed(self, message: str) -> None:
        self.button.disabled = False
        self.cancel_button.disabled = True
        self.progress.bar_style = "danger" if not self._cancel.is_set() else "warning"
        prefix = "Export cancelled, nothing written" if self._cancel.is_set() else "Export failed"
        self.result.value = f'<span style="color:#b00">{prefix}: {html.escape(message)}</span>'

"""The Model Explorer: pick a model, an image, a region and fixInputProj; watch predictions stream.

    import ee_model_widgets as emw
    emw.explore()            # the embedded Sentinel-2 scene and the four demo models

`explore()` returns a `Panel`, an ipywidgets box holding an `emw.Map` and tabs of controls.
Every control takes effect at once, without re-running a cell; anything slow (loading a
model, the first model call, statistics, inspector reads, exports) runs on background
threads (`jobs.Jobs`), so the panel and the kernel stay responsive. All pixels go through
the core read path: the map, the inspector and the export agree with `pred.to_numpy()`.

For scripting and tests every control is an attribute (`panel.model_picker`,
`panel.fix_input_proj`, `panel.palette`, ...): setting its `.value` in Python has the same
effect as using it in the browser. `panel.wait()` blocks until background work is done.
"""

from __future__ import annotations

import html
import logging
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import ipyleaflet
import ipywidgets as widgets

from ..core.class_band import ClassBandImage, vector_outputs
from ..core.image import Image
from ..core.region import grid_for
from ..errors import EEModelWidgetsError, InputError
from .comm_routing import route_to_live_subshells
from .compare_tab import CompareTab
from .data_tab import (  # noqa: F401 - the region presets are public (tests, scripts)
    REGION_BBOX,
    REGION_DRAWN,
    REGION_GIVEN,
    REGION_IMAGE,
    REGION_PRESETS,
    REGION_VIEW,
    DataTab,
    region_bounds_checked,
)
from .display_tab import DisplayTab, image_vis
from .exporter import Exporter, export_with_progress
from .inspector import Inspector
from .jobs import Jobs
from .lifetime import close_on_rerun, close_tree
from .map import Map, zoom_for_bounds
from .model_tab import DEMO_ORDER, ModelEntry, ModelTab, _normalise_models, load_model, with_params  # noqa: F401
from .prediction_layer import PredictionLayer
from .threshold import class_palette
from .train_tab import TrainTab

log = logging.getLogger(__name__)

DEMO_IMAGE = "Demo scene: Sentinel-2, Santa Cruz (AR)"
# A 1x1 transparent PNG: the legend before there is one (an empty Image shows a broken icon).
_BLANK_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)
#: Size assumed for the map when choosing the first zoom (the tabs take ~420 px beside it).
_MAP_PX = (620, 460)


class Panel(ModelTab, DataTab, DisplayTab, CompareTab, widgets.VBox):
    """The Model Explorer panel; build it with `explore()`. See the module docstring."""

    def __init__(
        self,
        models: Sequence[ModelEntry],
        images: Mapping[str, Image],
        region=None,
        *,
        image_vis_params: Mapping[str, dict] | None = None,
        basemap="auto",
        client=None,
    ):
        if not models:
            raise InputError("explore() needs at least one model.")
        self._lock = threading.RLock()
        self._tls = threading.local()
        self._status_lock = threading.Lock()
        self._models: dict[str, ModelEntry] = {}
        for e in models:
            self._models[e.name] = e
        self._images: dict[str, Image] = dict(images)
        self._image_vis: dict[str, dict] = dict(image_vis_params or {})
        self._gen = 0
        self._applied: dict[str, Any] = {}
        self._busy: dict[str, str] = {}
        self.error = ""
        self.notice = ""
        #: The current prediction (model output bands only) and what the map shows (plus class bands).
        self.prediction = None
        self.display_image: Image | None = None
        self.model = None
        self.compare_prediction = None
        self.compare_display: Image | None = None
        self._categorical = False
        self._class_names: dict[str, dict[int, str]] = {}
        self._drawn = None
        self._compare_touched = False
        self._given_region = None
        self._jobs = Jobs(on_error=self._job_failed)

        first_image_name = next(iter(self._images))
        image = self._images[first_image_name]
        self.image = image
        w, s, e, n = image.bounds

        # ---- map and layers -----------------------------------------------------------
        self.map = Map(
            basemap=basemap,
            center=[(s + n) / 2, (w + e) / 2],
            zoom=zoom_for_bounds((w, s, e, n), _MAP_PX),
            layout={"width": "100%", "height": f"{_MAP_PX[1] + 20}px"},
        )
        self.map.add_class("emw-map")
        scene_vis = self._image_vis.get(first_image_name)
        if scene_vis is None:
            scene_vis = self._image_vis[first_image_name] = image_vis(image)
        self.scene_layer = PredictionLayer(
            image, vis_params=scene_vis, name="Input image", class_name="ee-model-tile emw-scene"
        )
        # The prediction layer exists from the start (so the map never has to be rebuilt); it
        # shows nothing until the first model is ready.
        self.layer = PredictionLayer(
            image,
            vis_params={"bands": [image.band_names[0]]},
            name="Prediction",
            class_name="ee-model-tile emw-prediction",
        )
        self.layer.visible = False
        self.compare_layer: PredictionLayer | None = None
        self.split_control: ipyleaflet.SplitMapControl | None = None
        self.region_rect = ipyleaflet.Rectangle(
            bounds=((s, w), (n, e)), color="#ff7800", weight=2, fill=False, dash_array="6,4", name="region"
        )
        self.region_group = ipyleaflet.LayerGroup(layers=(self.region_rect,), name="Region")
        self.marker_group = ipyleaflet.LayerGroup(layers=(), name="Inspected point")
        for lyr in (self.scene_layer, self.layer, self.region_group, self.marker_group):
            self.map.add(lyr)
        self.draw_control = ipyleaflet.DrawControl(
            rectangle={"shapeOptions": {"color": "#ff7800", "weight": 2, "fillOpacity": 0.05}},
            polygon={},
            polyline={},
            circlemarker={},
            circle={},
            marker={},
            edit=False,
            remove=False,
            position="topleft",
        )
        self.draw_control.on_draw(self._on_draw)
        self.map.add(self.draw_control)
        self.legend = widgets.Image(value=_BLANK_PNG, format="png", layout={"max_width": "300px"})
        self.legend.add_class("emw-legend")
        self.legend_control = ipyleaflet.WidgetControl(widget=self.legend, position="bottomright")
        self.map.add(self.legend_control)
        self.map.on_interaction(self._on_map_event)

        # ---- tabs (each in its own module; `tab_host.TabHost` is what they see of the panel) ----
        names = list(self._models)
        model_tab = self._build_model_tab(names)
        data_tab = self._build_data_tab(first_image_name, image)
        display_tab = self._build_display_tab(image)
        compare_tab = self._build_compare_tab(names)
        self.inspector = Inspector()
        self.exporter = Exporter(default_path=os.path.join(os.getcwd(), "prediction.tif"), client=client)

        self.tabs = widgets.Tab(
            children=[model_tab, data_tab, display_tab, self.inspector, compare_tab, self.exporter],
            titles=("Model", "Data", "Display", "Inspect", "Compare", "Export"),
            layout={"width": "430px", "flex": "0 0 430px"},
        )
        self.train = TrainTab(self)  # its own module: labels, training, versions (widgets/train_tab.py)
        self.tabs.children = (*self.tabs.children, self.train)
        self.tabs.set_title(len(self.tabs.children) - 1, "Train")
        self.status = widgets.HTML("")
        self.status.add_class("emw-status")
        title = widgets.HTML("<b style='font-size:14px'>Model Explorer</b> · ee_model_widgets")
        body = widgets.HBox(
            [widgets.Box([self.map], layout={"flex": "1 1 auto", "min_width": "0"}), self.tabs],
            layout={"width": "100%"},
        )
        super().__init__([title, body, self.status], layout={"width": "100%"})
        self.add_class("emw-panel")

        # ---- wiring ---------------------------------------------------------------------
        self.model_picker.observe(self._on_model_picked, "value")
        self.image_picker.observe(self._on_image_picked, "value")
        for w in (self.fix_input_proj, self.resampling, self.tile_size, self.overlap):
            w.observe(self._on_params, "value")
        self.load_model_button.on_click(lambda _b: self._load_from_field(self.model_path.value, "path"))
        self.connect_button.on_click(lambda _b: self._load_from_field(self.endpoint.value, "endpoint"))
        self.load_image_button.on_click(lambda _b: self._open_image_field())
        self.region_preset.observe(self._on_region_preset, "value")
        self.bbox.observe(self._on_bbox, "value")
        self.zoom_button.on_click(lambda _b: self.zoom_to_region())
        self.band.observe(self._on_band, "value")
        for w in (self.vmin, self.vmax):
            w.observe(self._on_vis, "value")
        self.palette.observe(self._on_vis, "value")
        self.opacity.observe(self._on_opacity, "value")
        self.stretch_button.on_click(lambda _b: self.auto_stretch())
        for w in (self.compare, self.compare_fix, self.compare_overlap):
            w.observe(self._on_compare, "value")
        self.compare_model.observe(self._on_compare_model, "value")
        self.exporter.button.on_click(lambda _b: self._export_clicked())
        for trait in (
            "tiles_queued",
            "tiles_done",
            "tiles_failed",
            "tiles_per_second",
            "tiles_resent",
            "tiles_lost",
            "last_error",
            "status",
            "notice",
        ):
            self.layer.observe(self._on_layer_progress, trait)

        self.region = None
        if region is not None:
            self._given_region = tuple(region_bounds_checked(region))
            grid_for(image, self._given_region)  # off the image (often lat/lon swapped): say so now
            with self._quietly():
                self.region_preset.options = [REGION_GIVEN, *REGION_PRESETS]
                self.region_preset.value = REGION_GIVEN
            self.set_region(self._given_region, REGION_GIVEN)
        route_to_live_subshells(self)  # no control may go deaf after a page reload (comm_routing.py)
        close_on_rerun(self)  # a re-run cell (or reopened quickstart) replaces the panel (lifetime.py)
        self._request_apply()

    # ---- public API ----------------------------------------------------------------------
    @property
    def models(self) -> dict[str, ModelEntry]:
        return dict(self._models)

    @property
    def images(self) -> dict[str, Image]:
        return dict(self._images)

    @property
    def vis_params(self) -> dict:
        """The vis params of the prediction layer."""
        return dict(self.layer.vis_params)

    @property
    def status_text(self) -> str:
        """The status line as plain text."""
        import re

        return html.unescape(re.sub(r"<[^>]+>", " ", self.status.value)).strip()

    def wait(self, timeout: float | None = 120) -> Panel:
        """Block until the panel's background work (loading, statistics, inspector, export) is done."""
        if not self._jobs.wait(timeout):
            raise TimeoutError(
                f"The panel was still busy after {timeout} s: {self._busy_text() or 'working'}."
            )
        return self

    def inspect(self, lon: float, lat: float) -> dict:
        """Values of every output band (and every input band) at (lon, lat); also shown in the Inspect tab."""
        sections: list[tuple[str, Image]] = []
        if self.display_image is not None:
            sections.append((f"Prediction: {self._applied.get('model', '')}", self.display_image))
        if self.compare_display is not None and self.compare.value:
            sections.append((f"Compare: {self.compare_model.value}", self.compare_display))
        sections.append((f"Input: {self.image_picker.value}", self.image))
        return self.inspector.inspect(lon, lat, sections, labels=self._class_names)

    def export(self, path: str | None = None) -> str:
        """Write the prediction over the region to a GeoTIFF (blocking); returns the path."""
        if path is not None:
            self.exporter.path.value = str(path)
        target = self.exporter.target()
        self._export_job(target)
        if self.exporter.written != target:
            raise EEModelWidgetsError(self.error or f"Export to {target} failed.")
        return target

    def close(self) -> None:
        """Stop the panel's threads and close all its widgets: map, layers (shown or not), controls."""
        self._jobs.close()
        for layer in (self.scene_layer, self.layer, self.compare_layer, self.threshold.layer):
            if layer is not None:
                layer.close()
        close_tree(self)
        super().close()

    # ---- small helpers -----------------------------------------------------------------------
    @contextmanager
    def _quietly(self):
        """Set widget values without triggering our own observers (this thread only)."""
        prev = getattr(self._tls, "quiet", False)
        self._tls.quiet = True
        try:
            yield
        finally:
            self._tls.quiet = prev

    def _loud(self) -> bool:
        return not getattr(self._tls, "quiet", False)

    def _submit(self, lane: str, message: str, fn, *args, latest_only: bool = False) -> None:
        with self._lock:
            self._busy[lane] = message
        self._refresh_status()

        def run():
            try:
                fn(*args)
            finally:
                with self._lock:
                    if self._busy.get(lane) == message:
                        self._busy.pop(lane, None)
                self._refresh_status()

        self._jobs.submit(lane, run, latest_only=latest_only)

    def _busy_text(self) -> str:
        with self._lock:
            return " · ".join(f"{m}…" for m in self._busy.values())

    def _job_failed(self, lane: str, exc: BaseException) -> None:
        self._set_error(exc, lane)

    def _set_error(self, exc: BaseException | str | None, where: str = "") -> None:
        if exc is None or exc == "":
            self.error = ""
        elif isinstance(exc, str):
            self.error = exc
        else:
            if not isinstance(exc, EEModelWidgetsError):
                log.warning("panel %s failed", where, exc_info=exc)
            self.error = f"{type(exc).__name__}: {exc}"
        self._refresh_status()

    # ---- status line ---------------------------------------------------------------------------
    def _on_layer_progress(self, _change) -> None:
        self._refresh_status()

    def _refresh_status(self) -> None:
        lay = self.layer
        model = self._applied.get("model")
        parts = []
        if model:
            fix = "on" if self._applied.get("fix") else "off"
            parts.append(f"<b>{html.escape(model)}</b> · fixInputProj {fix}")
            if self._applied.get("resampling", "nearest") != "nearest":
                parts.append(f"input resampled {self._applied['resampling']}")
        parts.append(
            f"tiles: {lay.tiles_done} done, {lay.tiles_queued} queued, {lay.tiles_failed} failed"
            f" · {lay.tiles_per_second:.1f} tiles/s"
        )
        if lay.tiles_resent or lay.tiles_lost:  # counted by the browser: the kernel never saw them
            parts.append(
                f"{lay.tiles_resent} lost on the way and asked again, {lay.tiles_lost} never answered"
            )
        lines = [" · ".join(parts)]
        busy = self._busy_text()
        if busy:
            lines.append(f'<span class="emw-busy" style="color:#555">Working: {html.escape(busy)}</span>')
        if lay.status:
            lines.append(f'<span style="color:#555">{html.escape(lay.status)}</span>')
        if lay.notice:
            lines.append(f'<span class="emw-notice" style="color:#b00">{html.escape(lay.notice)}</span>')
        if self.error:
            lines.append(
                f'<span class="emw-error" style="color:#b00">Error: {html.escape(self.error)}</span>'
            )
        if lay.last_error and lay.visible:
            lines.append(
                f'<span class="emw-tile-error" style="color:#b00">Last tile error: {html.escape(lay.last_error)}</span>'
            )
        text = "<div style='font-size:12px;line-height:1.5'>" + "<br>".join(lines) + "</div>"
        with self._status_lock:
            if self.status.value != text:
                self.status.value = text

    # ---- model / image / params: the apply job -------------------------------------------------
    def _on_model_picked(self, change) -> None:
        if self._loud():
            self._request_apply()

    def _on_image_picked(self, change) -> None:
        if self._loud():
            self._request_apply()

    def _on_params(self, change) -> None:
        if self._loud():
            self._request_apply()

    def _request_apply(self) -> None:
        with self._lock:
            self._gen += 1
            gen = self._gen
        name = self.model_picker.value
        entry = self._models.get(name)
        first = entry is not None and entry.model is None and entry.loader is not None
        msg = f"Loading model {name}" + (" (the first model also loads TensorFlow)" if first else "")
        self._submit("apply", msg if first else f"Predicting with {name}", self._apply, gen, latest_only=True)

    def _predict(self, base, image: Image, *, fix_input_proj: bool, overlap: int, tile: int | None = None):
        """The one apply chain (the map's model and the Compare tab's): `base` with these
        settings, its prediction of `image` (resampled as the Model tab says), and what the map
        shows of it (a class band added per vector output). Returns (model, prediction, display)."""
        model = with_params(base, fix_input_proj=fix_input_proj, tile=tile, overlap=overlap)
        # Always a resample() view, so "nearest" holds for an image the user resample()d too.
        pred = model.predict_image(image.resample(self.resampling.value))
        groups = vector_outputs(pred.band_names)
        return model, pred, (ClassBandImage(pred, groups) if groups else pred)

    def _apply(self, gen: int) -> None:
        name = self.model_picker.value
        image_name = self.image_picker.value
        entry = self._models[name]
        image = self._images[image_name]
        image_changed = image_name != self._applied.get("image")
        # The first image is already on the map (and the user may have panned meanwhile).
        new_image = image_changed and "image" in self._applied
        model_changed = name != self._applied.get("model") or entry.model is not self._applied.get("base")
        try:
            base = entry.get()
            if model_changed:
                # New model: its own tile size and overlap; the user's fixInputProj choice stays.
                tile = base.params.input_tile_size
                with self._quietly():
                    self.tile_size.value = int(tile[0]) if tile else 256
                    self.overlap.value = int(base.params.overlap[0])
            model, pred, display = self._predict(
                base,
                image,
                fix_input_proj=self.fix_input_proj.value,
                tile=self.tile_size.value,
                overlap=self.overlap.value,
            )
            stats_error = None
            try:
                band, vis, categorical = self._default_band_vis(entry, display, model_changed, image_changed)
            except Exception as exc:  # noqa: BLE001 - e.g. the model raises: show it, tiles will too
                stats_error = exc
                band = self._pick_band(entry, display)
                vis, categorical = (
                    {"bands": [band], "min": 0.0, "max": 1.0, "palette": self.palette.value},
                    False,
                )
        except Exception as exc:  # noqa: BLE001 - any failure is shown; the panel keeps working
            with self._lock:
                if gen != self._gen:
                    return
                self._applied.update(
                    model=name, image=image_name, base=entry.model, fix=self.fix_input_proj.value
                )
                self.prediction = self.display_image = self.model = None
            self.layer.visible = False
            self._update_model_info(entry, None)
            self._set_error(exc, "apply")
            if new_image:
                self._show_image(image_name, image)
            return
        with self._lock:
            if gen != self._gen:
                return  # a newer request supersedes this one
            self._applied.update(
                model=name,
                image=image_name,
                base=base,
                fix=model.params.fix_input_proj,
                resampling=self.resampling.value,
            )
            self.model, self.prediction, self.display_image, self.image = model, pred, display, image
            self._categorical = categorical
            self._class_names = self._class_labels(entry, display)
        if new_image:
            self._show_image(image_name, image)
        with self._quietly():
            self.band.options = display.band_names
            self.band.value = band
            self._show_vis_controls(vis, categorical)
        self.error = "" if stats_error is None else f"{type(stats_error).__name__}: {stats_error}"
        self.layer.last_error = ""
        self.layer.image = display
        self.layer.vis_params = vis
        self.layer.visible = True
        self.threshold.set_source(display, band, class_palette(entry.vis_params))
        self._update_model_info(entry, model)
        self._update_legend()
        self._refresh_status()
        if self.compare.value:
            self._request_compare()

    # ---- inspector -------------------------------------------------------------------------------
    def _on_map_event(self, **event) -> None:
        if event.get("type") != "click" or self.train.labelling:  # a label, handled by the Train tab
            return
        lat, lon = event.get("coordinates", (None, None))
        if lat is None:
            return
        marker = ipyleaflet.CircleMarker(
            location=(lat, lon), radius=5, color="#d00", fill_opacity=0.8, weight=2
        )
        self.marker_group.layers = (marker,)
        self.inspector.show_pending(lon, lat)
        self._submit("inspect", "Reading the clicked point", self.inspect, lon, lat, latest_only=True)

    # ---- export ----------------------------------------------------------------------------------
    def _export_clicked(self) -> None:
        target = self.exporter.target()
        self._submit("export", f"Exporting to {os.path.basename(target)}", self._export_job, target)

    def _export_job(self, target: str) -> None:
        pred = self.prediction
        if pred is None:
            self.exporter.failed("no prediction to export: pick a model that works first.")
            return
        options = self.exporter.run_options()  # the cluster's client when chosen, the cancel flag
        self.exporter.started(target, options["client"])
        try:
            path = export_with_progress(pred, target, self.region, self.exporter.on_progress, **options)
        except Exception as exc:  # noqa: BLE001
            self.exporter.failed(f"{type(exc).__name__}: {exc}")
            self._set_error(exc, "export")
            return
        self.exporter.finished(path)


def explore(models=None, image=None, region=None, *, basemap="auto", client=None) -> Panel:
    """Open the Model Explorer panel (map + controls); with no arguments, on the embedded demo.

    `models`: None (the demo models), an `emw.Model`, a path/URL, or a list/dict of them.
    `image`: None (the demo Sentinel-2 scene), an `emw.Image` or a GeoTIFF path.
    `region`: None (the image extent), a (west, south, east, north) lon/lat tuple or GeoJSON;
    used by the export and the automatic stretch. `basemap`: see `emw.Map`. `client`: a
    `distributed.Client` the Export tab can run on (default: the kernel's, if any).
    """
    from .. import demo

    if "tensorflow" not in sys.modules:
        # TensorFlow's C++ start-up chatter (oneDNN, CUDA probing) goes to the kernel's stderr
        # and would land under the panel as a red box; a user's own setting wins.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if region is not None:
        region = region_bounds_checked(region)  # fail before anything is built
    entries = _normalise_models(models)
    vis: dict[str, dict] = {}
    if image is None:
        images = {DEMO_IMAGE: demo.scene()}
        vis[DEMO_IMAGE] = dict(demo.VIS_PARAMS["scene"])
    else:
        if isinstance(image, (str, os.PathLike)):
            img = Image.open(image)
            name = os.path.basename(os.fspath(image))
        elif isinstance(image, Image):
            img, name = image, "Image"
        else:
            raise InputError(
                f"explore(image=...) takes an emw.Image or a GeoTIFF path, got {type(image).__name__}."
            )
        images = {name: img}
    return Panel(entries, images, region, image_vis_params=vis, basemap=basemap, client=client)

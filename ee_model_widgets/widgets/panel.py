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
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import ipyleaflet
import ipywidgets as widgets

from ..core.image import Image
from ..errors import EEModelWidgetsError, InputError, RegionError
from .comm_routing import route_to_live_subshells
from .controls import (
    ClassBandImage,
    PalettePicker,
    format_bbox,
    parse_bbox,
    sample_classes,
    sample_stretch,
    vector_outputs,
    with_params,
)
from .exporter import Exporter, export_with_progress
from .inspector import Inspector
from .jobs import Jobs
from .legend import legend_png
from .map import Map, zoom_for_bounds
from .prediction_layer import PredictionLayer
from .threshold import ThresholdControl, class_palette
from .train_tab import TrainTab

log = logging.getLogger(__name__)

DEMO_IMAGE = "Demo scene: Sentinel-2, Santa Cruz (AR)"
#: Order of the demo models in the picker (the first is shown when the panel opens).
DEMO_ORDER = ["landcover", "fcn", "downscale", "ndvi"]
#: Region presets.
REGION_IMAGE = "Image extent"
REGION_VIEW = "Current map view"
REGION_DRAWN = "Drawn rectangle"
REGION_BBOX = "Bounding box (typed)"
REGION_GIVEN = "Region given to explore()"
#: Class colours for integer outputs without a palette of their own (matplotlib tab20).
_CLASS_CMAP = "tab20"
# A 1x1 transparent PNG: the legend before there is one (an empty Image shows a broken icon).
_BLANK_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)
#: Size assumed for the map when choosing the first zoom (the tabs take ~420 px beside it).
_MAP_PX = (620, 460)


@dataclass
class ModelEntry:
    """A model in the picker: loaded (`model`) or loaded on first use (`loader`)."""

    name: str
    model: Any = None
    loader: Callable[[], Any] | None = None
    vis_params: dict | None = None  # default vis for one band (its "bands" entry, else the first band)
    class_names: Sequence[str] | None = None  # names of class values 0..n-1 of class bands
    description: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def get(self):
        """The loaded model (loading it now if needed; thread-safe, loads once)."""
        with self.lock:
            if self.model is None:
                if self.loader is None:
                    raise InputError(f"Model {self.name!r} has neither a model nor a loader.")
                self.model = self.loader()
            return self.model


def load_model(spec: str, **ee_params: Any):
    """A model from a string: an http(s) endpoint / Vertex name, a SavedModel directory, or a .keras/.h5 file."""
    from ..core.model import Model

    s = str(spec).strip()
    if not s:
        raise InputError("Type a model path (.keras/.h5 file or SavedModel folder) or an endpoint URL first.")
    if s.startswith(("http://", "https://")) or s.startswith("projects/"):
        return Model.from_vertex_ai(s, **ee_params)
    path = os.path.expanduser(s)
    if os.path.isdir(path):
        return Model.from_saved_model(path, **ee_params)
    return Model.from_keras(path, **ee_params)


def _demo_entries() -> list[ModelEntry]:
    from .. import demo

    entries = []
    for name in DEMO_ORDER:
        vis = dict(demo.VIS_PARAMS[name])
        out = next(iter(demo.MODEL_PARAMS[name]["output_bands"]))
        class_names = None
        if name == "landcover":
            # The demo's suggested landcover palette colours the argmax class band.
            vis = {"bands": [f"{out}_class"], "min": 0, "palette": vis["palette"], "categorical": True}
            class_names = list(demo.LANDCOVER_CLASSES)
        else:
            vis["bands"] = [out]
        entries.append(
            ModelEntry(
                name,
                loader=(lambda n=name: demo.model(n)),
                vis_params=vis,
                class_names=class_names,
                description=demo.MODELS[name],
            )
        )
    return entries


def _rgb_bands(image: Image) -> list[str]:
    names = image.band_names
    lower = {n.lower(): n for n in names}
    if all(c in lower for c in ("red", "green", "blue")):
        return [lower["red"], lower["green"], lower["blue"]]
    return names[:3] if len(names) >= 3 else names[:1]


def image_vis(image: Image, region=None) -> dict:
    """Vis params to show an input image: RGB-ish bands, 2-98 % stretch of a sampled read."""
    bands = _rgb_bands(image)
    lows, highs = [], []
    for b in bands:
        try:
            lo, hi = sample_stretch(image, b, region)
        except EEModelWidgetsError:
            lo, hi = 0.0, 1.0
        lows.append(lo)
        highs.append(hi)
    return {"bands": bands, "min": lows, "max": highs}


class Panel(widgets.VBox):
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

        # ---- Model tab ----------------------------------------------------------------
        names = list(self._models)
        self.model_picker = widgets.Dropdown(options=names, value=names[0], description="Model")
        self.model_picker.add_class("emw-model-picker")
        self.model_info = widgets.HTML("")
        self.fix_input_proj = widgets.Checkbox(value=False, description="fixInputProj", indent=False)
        self.fix_input_proj.add_class("emw-fix-input-proj")
        self.tile_size = widgets.BoundedIntText(value=256, min=1, max=4096, description="Tile size")
        self.tile_size.add_class("emw-tile-size")
        self.overlap = widgets.BoundedIntText(value=0, min=0, max=1024, description="Overlap")
        self.overlap.add_class("emw-overlap")
        params_help = _help(
            "fixInputProj: feed the model pixels in its own grid (native scale) at every zoom, "
            "instead of the map's pixels. Tile size: core pixels per model call (x = y). Overlap: "
            "extra pixels read on each edge and cropped from each result, so tiles join without seams."
        )
        self.model_path = widgets.Text(placeholder=".keras/.h5 file or SavedModel folder", description="Path")
        self.model_path.add_class("emw-model-path")
        self.load_model_button = widgets.Button(
            description="Load", icon="folder-open", layout={"width": "90px"}
        )
        self.load_model_button.add_class("emw-load-model")
        self.endpoint = widgets.Text(
            placeholder="http://127.0.0.1:8501/v1/models/NAME", description="Endpoint"
        )
        self.endpoint.add_class("emw-endpoint")
        self.connect_button = widgets.Button(description="Connect", icon="plug", layout={"width": "90px"})
        self.connect_button.add_class("emw-connect")
        model_tab = widgets.VBox(
            [
                self.model_picker,
                self.model_info,
                self.fix_input_proj,
                self.tile_size,
                self.overlap,
                params_help,
                widgets.HTML("<b>Add a model</b>"),
                widgets.HBox([self.model_path, self.load_model_button]),
                widgets.HBox([self.endpoint, self.connect_button]),
            ]
        )

        # ---- Data tab (image + region) ------------------------------------------------
        self.image_picker = widgets.Dropdown(
            options=list(self._images), value=first_image_name, description="Image"
        )
        self.image_picker.add_class("emw-image-picker")
        self.image_path = widgets.Text(placeholder="path/to/image.tif", description="GeoTIFF")
        self.image_path.add_class("emw-image-path")
        self.load_image_button = widgets.Button(
            description="Open", icon="folder-open", layout={"width": "90px"}
        )
        self.load_image_button.add_class("emw-load-image")
        presets = [REGION_IMAGE, REGION_VIEW, REGION_DRAWN, REGION_BBOX]
        self.region_preset = widgets.Dropdown(options=presets, value=REGION_IMAGE, description="Region")
        self.region_preset.add_class("emw-region-preset")
        self.bbox = widgets.Text(
            value=format_bbox(image.bounds),
            description="W, S, E, N",
            continuous_update=False,
            layout={"width": "380px"},
        )
        self.bbox.add_class("emw-bbox")
        self.zoom_button = widgets.Button(description="Zoom to region", icon="search")
        self.zoom_button.add_class("emw-zoom-region")
        data_tab = widgets.VBox(
            [
                self.image_picker,
                widgets.HBox([self.image_path, self.load_image_button]),
                widgets.HTML("<b>Region</b> (used by the export and the automatic stretch)"),
                self.region_preset,
                self.bbox,
                _help("Or draw one with the rectangle tool at the top left of the map."),
                self.zoom_button,
            ]
        )

        # ---- Display tab --------------------------------------------------------------
        self.band = widgets.Dropdown(options=[], description="Band")
        self.band.add_class("emw-band")
        self.vmin = widgets.FloatText(value=0.0, description="Min", layout={"width": "180px"})
        self.vmin.add_class("emw-min")
        self.vmax = widgets.FloatText(value=1.0, description="Max", layout={"width": "180px"})
        self.vmax.add_class("emw-max")
        self.stretch_button = widgets.Button(
            description="Auto stretch", icon="magic", tooltip="2-98 % of the region"
        )
        self.stretch_button.add_class("emw-auto-stretch")
        self.palette = PalettePicker("viridis")
        self.opacity = widgets.FloatSlider(value=1.0, min=0.0, max=1.0, step=0.05, description="Opacity")
        self.opacity.add_class("emw-opacity")
        self.threshold = ThresholdControl(self.map, image)
        display_tab = widgets.VBox(
            [self.band, widgets.HBox([self.vmin, self.vmax]), self.stretch_button, self.palette, self.opacity]
            + [self.threshold]
        )

        # ---- Inspect, Compare, Export tabs ----------------------------------------------
        self.inspector = Inspector()
        self.compare = widgets.Checkbox(value=False, description="Split map: compare with", indent=False)
        self.compare.add_class("emw-compare")
        self.compare_model = widgets.Dropdown(options=names, value=names[0], description="Model")
        self.compare_model.add_class("emw-compare-model")
        self.compare_fix = widgets.Checkbox(value=True, description="fixInputProj", indent=False)
        self.compare_fix.add_class("emw-compare-fix")
        self.compare_overlap = widgets.BoundedIntText(value=0, min=0, max=1024, description="Overlap")
        self.compare_overlap.add_class("emw-compare-overlap")
        self.compare_info = _help("Left of the divider: the settings of the Model tab. Right: these.")
        compare_tab = widgets.VBox(
            [self.compare, self.compare_model, self.compare_fix, self.compare_overlap, self.compare_info]
        )
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
        for w in (self.fix_input_proj, self.tile_size, self.overlap):
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
        ):
            self.layer.observe(self._on_layer_progress, trait)

        self.region = None
        if region is not None:
            self._given_region = tuple(region_bounds_checked(region))
            with self._quietly():
                self.region_preset.options = [REGION_GIVEN, *presets]
                self.region_preset.value = REGION_GIVEN
            self.set_region(self._given_region, REGION_GIVEN)
        route_to_live_subshells(self)  # no control may go deaf after a page reload (comm_routing.py)
        self._request_apply()

    # ---- public API ----------------------------------------------------------------------
    def add_model(
        self,
        name: str,
        model,
        *,
        vis_params: dict | None = None,
        class_names: Sequence[str] | None = None,
        select: bool = True,
    ) -> Panel:
        """Add a model to the picker (an `emw.Model`, or a path/URL string loaded on first use).

        `vis_params`: how to show one of its bands by default (its `bands` entry, else the
        first band). `class_names`: names of class values 0..n-1 for class bands.
        """
        name = str(name)
        if isinstance(model, str):
            spec = model
            entry = ModelEntry(
                name, loader=lambda: load_model(spec), vis_params=vis_params, class_names=class_names
            )
        else:
            if not hasattr(model, "predict_image"):
                raise InputError(
                    f"add_model({name!r}, ...) needs an emw.Model or a path/URL, got {type(model).__name__}."
                )
            entry = ModelEntry(name, model=model, vis_params=vis_params, class_names=class_names)
        with self._lock:
            self._models[name] = entry
            options = list(self._models)
        with self._quietly():
            self.model_picker.options = options
            self.compare_model.options = options
        if select:
            self.model_picker.value = name  # observer applies it
            if self.model_picker.value == name and self._applied.get("model") == name:
                self._request_apply()  # re-added under the same name: show the new one
        return self

    def add_image(self, name: str, image, *, vis_params: dict | None = None, select: bool = True) -> Panel:
        """Add an image to the picker (an `emw.Image` or a GeoTIFF path)."""
        if isinstance(image, (str, os.PathLike)):
            image = Image.open(image)
        if not isinstance(image, Image):
            raise InputError(
                f"add_image({name!r}, ...) needs an emw.Image or a GeoTIFF path, got {type(image).__name__}."
            )
        with self._lock:
            self._images[str(name)] = image
            if vis_params is not None:
                self._image_vis[str(name)] = dict(vis_params)
        with self._quietly():
            self.image_picker.options = list(self._images)
        if select:
            self.image_picker.value = str(name)
        return self

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

    def set_region(self, region, source: str = REGION_BBOX) -> None:
        """Set the region (lon/lat bbox or GeoJSON; None = the image extent)."""
        bounds = None if region is None else tuple(region_bounds_checked(region))
        with self._lock:
            self.region = bounds
        shown = bounds if bounds is not None else tuple(self.image.bounds)
        w, s, e, n = shown
        with self._quietly():
            self.bbox.value = format_bbox(shown)
            if source in self.region_preset.options and self.region_preset.value != source:
                self.region_preset.value = source
        self.region_rect.bounds = ((s, w), (n, e))
        # jupyter-leaflet's Rectangle view only follows `locations` (its Polygon base), not `bounds`.
        self.region_rect.locations = [(s, w), (n, w), (n, e), (s, e)]

    def zoom_to_region(self) -> None:
        bounds = self.region if self.region is not None else tuple(self.image.bounds)
        self.map.center_object(bounds)

    def auto_stretch(self) -> None:
        """Set min/max to the 2-98 % range of the shown band over the region (in the background)."""
        self._submit("stretch", "Computing statistics", self._stretch_job, latest_only=True)

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
        self._jobs.close()
        for layer in (self.scene_layer, self.layer, self.compare_layer, self.threshold.layer):
            if layer is not None:
                layer.close()
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
            model = with_params(
                base,
                fix_input_proj=self.fix_input_proj.value,
                tile=self.tile_size.value,
                overlap=self.overlap.value,
            )
            pred = model.predict_image(image)
            groups = vector_outputs(pred.band_names)
            display = ClassBandImage(pred, groups) if groups else pred
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
            self._applied.update(model=name, image=image_name, base=base, fix=model.params.fix_input_proj)
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

    def _show_image(self, image_name: str, image: Image) -> None:
        """Put a newly picked image on the map (its own layer, region reset, view fitted)."""
        vis = self._image_vis.get(image_name)
        if vis is None:
            vis = self._image_vis[image_name] = image_vis(image)
        self.image = image
        self.scene_layer.image = image
        self.scene_layer.vis_params = vis
        # The region follows the new image's extent, unless it is the one given to explore().
        if self._given_region is None or self.region != self._given_region:
            self.set_region(None, REGION_IMAGE)
        self.map.center_object(image)

    def _class_labels(self, entry: ModelEntry, display: Image) -> dict[str, dict[int, str]]:
        labels: dict[str, dict[int, str]] = {}
        if entry.class_names:
            for b in display.band_names:
                if b in display.categorical_bands:
                    labels[b] = dict(enumerate(entry.class_names))
        return labels

    def _default_band_vis(self, entry: ModelEntry, display: Image, model_changed: bool, image_changed: bool):
        """(band, vis params, categorical) for a new prediction: keep the user's choice when it still applies."""
        bands = display.band_names
        current = self.band.value
        if not model_changed and current in bands:
            vis = dict(self.layer.vis_params)
            if image_changed and not self._categorical:
                lo, hi = sample_stretch(display, current, self.region)
                vis.update(min=lo, max=hi)
            return current, vis, bool(vis.get("categorical"))
        band = self._pick_band(entry, display)
        return (band, *self._vis_for(entry, display, band))

    @staticmethod
    def _pick_band(entry: ModelEntry, display: Image) -> str:
        """The band a model is shown with first: its vis params' band, else a class band, else the first."""
        bands = display.band_names
        preferred = None
        if entry.vis_params:
            vb = entry.vis_params.get("bands")
            preferred = vb[0] if vb else bands[0]
        class_bands = [b for b in bands if b in getattr(display, "class_bands", {})]
        return next(b for b in (preferred, *class_bands, bands[0]) if b in bands)

    def _vis_for(self, entry: ModelEntry, display: Image, band: str) -> tuple[dict, bool]:
        """Vis params for `band`: the model's defaults if they are for this band, else from statistics."""
        if entry.vis_params:
            vb = entry.vis_params.get("bands")
            if (vb[0] if vb else display.band_names[0]) == band:
                vis = dict(entry.vis_params)
                vis["bands"] = [band]
                return vis, bool(vis.get("categorical"))
        if band in display.categorical_bands:
            lo, hi = sample_classes(display, band, self.region)
            lo = min(lo, 0) if lo >= 0 else lo
            n = max(1, min(hi - lo + 1, 20))
            import matplotlib
            from matplotlib.colors import to_hex

            colours = [to_hex(c) for c in matplotlib.colormaps[_CLASS_CMAP].colors[:n]]
            return {"bands": [band], "min": lo, "palette": colours, "categorical": True}, True
        lo, hi = sample_stretch(display, band, self.region)
        palette = self.palette.value if not self._categorical else "viridis"
        return {"bands": [band], "min": lo, "max": hi, "palette": palette}, False

    def _show_vis_controls(self, vis: dict, categorical: bool) -> None:
        self.vmin.disabled = self.vmax.disabled = self.stretch_button.disabled = categorical
        self.palette.dropdown.disabled = categorical
        if categorical:
            return
        self.vmin.value = float(vis.get("min", 0.0))
        self.vmax.value = float(vis.get("max", 1.0))
        palette = vis.get("palette")
        if isinstance(palette, str) and "," not in palette:
            if palette not in self.palette.dropdown.options:
                self.palette.dropdown.options = [palette, *self.palette.dropdown.options]
            self.palette.value = palette

    def _update_model_info(self, entry: ModelEntry, model) -> None:
        lines = [html.escape(entry.description)] if entry.description else []
        if model is not None:
            p = model.params
            ins = ", ".join(s.name for s in model.inputs) if model.inputs is not None else "one per band"
            lines.append(
                f"inputs: {html.escape(ins)} · tile {list(p.input_tile_size)} + overlap {list(p.overlap)} "
                f"→ output tile {list(p.output_tile_size)}"
            )
            if self.prediction is not None:
                lines.append(f"outputs: {html.escape(', '.join(self.prediction.band_names))}")
        self.model_info.value = f"<div style='{_HELP_STYLE}'>" + "<br>".join(lines) + "</div>"

    # ---- adding models and images from the fields ----------------------------------------------
    def _load_from_field(self, text: str, kind: str) -> None:
        spec = str(text).strip()

        def job():
            try:
                model = load_model(spec)
            except Exception as exc:  # noqa: BLE001
                self._set_error(exc, f"loading {spec}")
                return
            name = getattr(model, "name", None) or os.path.basename(spec.rstrip("/")) or spec
            self.add_model(self._unique_name(name), model)

        self._submit("load", f"Loading {spec}", job)

    def _open_image_field(self) -> None:
        path = os.path.expanduser(self.image_path.value.strip())

        def job():
            try:
                image = Image.open(path)
            except Exception as exc:  # noqa: BLE001
                self._set_error(exc, f"opening {path}")
                return
            self.add_image(self._unique_name(os.path.basename(path), self._images), image)

        self._submit("load", f"Opening {path}", job)

    def _unique_name(self, name: str, taken=None) -> str:
        taken = self._models if taken is None else taken
        out, k = name, 2
        while out in taken:
            out = f"{name} ({k})"
            k += 1
        return out

    # ---- region ----------------------------------------------------------------------------------
    def _on_region_preset(self, change) -> None:
        if not self._loud():
            return
        preset = change["new"]
        try:
            if preset == REGION_IMAGE:
                self.set_region(None, REGION_IMAGE)
            elif preset == REGION_GIVEN:
                self.set_region(self._given_region, REGION_GIVEN)
            elif preset == REGION_VIEW:
                b = self.map.bounds
                if not b:
                    raise RegionError("The map has not reported its view yet: display the panel first.")
                (s, w), (n, e) = b
                self.set_region((w, s, e, n), REGION_VIEW)
            elif preset == REGION_DRAWN:
                if self._drawn is None:
                    self._set_error(
                        "No rectangle drawn yet: use the rectangle tool at the top left of the map."
                    )
                    return
                self.set_region(self._drawn, REGION_DRAWN)
            else:
                self.set_region(parse_bbox(self.bbox.value), REGION_BBOX)
            self._set_error(None)
        except EEModelWidgetsError as exc:
            self._set_error(exc)

    def _on_bbox(self, change) -> None:
        if not self._loud():
            return
        try:
            self.set_region(parse_bbox(change["new"]), REGION_BBOX)
            self._set_error(None)
        except EEModelWidgetsError as exc:
            self._set_error(exc)

    def _on_draw(self, _control, action: str, geo_json: dict) -> None:
        if action != "created" or self.train.labelling:  # a label, handled by the Train tab
            return
        try:
            from ..core.region import region_bounds

            bounds = region_bounds(geo_json)
            self._drawn = bounds
            self.set_region(bounds, REGION_DRAWN)
            self._set_error(None)
        except EEModelWidgetsError as exc:
            self._set_error(exc)
        finally:
            # The region outline shows it; the drawn shape itself would hide later clicks.
            self.draw_control.clear()

    # ---- display ---------------------------------------------------------------------------------
    def _on_band(self, change) -> None:
        if not self._loud() or self.display_image is None or not change["new"]:
            return
        band = change["new"]
        entry = self._models[self._applied["model"]]
        display = self.display_image

        def job():
            vis, categorical = self._vis_for(entry, display, band)
            if self.display_image is not display or self.band.value != band:
                return
            self._categorical = categorical
            with self._quietly():
                self._show_vis_controls(vis, categorical)
            self.layer.vis_params = vis
            self.threshold.set_source(display, band, class_palette(entry.vis_params))
            self._update_legend()
            self._sync_compare_vis()

        self._submit("stretch", f"Statistics of {band}", job, latest_only=True)

    def _current_vis(self) -> dict | None:
        band = self.band.value
        if not band:
            return None
        if self._categorical:
            vis = dict(self.layer.vis_params)
            vis["bands"] = [band]
            return vis
        lo, hi = float(self.vmin.value), float(self.vmax.value)
        if not lo < hi:
            self._set_error(f"Min {lo:g} must be below max {hi:g}: change one of them.")
            return None
        return {"bands": [band], "min": lo, "max": hi, "palette": self.palette.value}

    def _on_vis(self, change) -> None:
        if not self._loud():
            return
        vis = self._current_vis()
        if vis is None:
            return
        if self.error.startswith("Min "):
            self._set_error(None)
        self.layer.vis_params = vis
        self._sync_compare_vis()
        self._update_legend()

    def _on_opacity(self, change) -> None:
        self.layer.opacity = float(change["new"])
        if self.compare_layer is not None:
            self.compare_layer.opacity = float(change["new"])

    def _stretch_job(self) -> None:
        display, band = self.display_image, self.band.value
        if display is None or not band or self._categorical:
            return
        lo, hi = sample_stretch(display, band, self.region)
        with self._quietly():
            self.vmin.value, self.vmax.value = lo, hi
        vis = self._current_vis()
        if vis is not None:
            self.layer.vis_params = vis
            self._sync_compare_vis()
            self._update_legend()

    def _update_legend(self) -> None:
        vis = dict(self.layer.vis_params)
        band = (vis.get("bands") or [""])[0]
        names = None
        labels = self._class_names.get(band)
        if labels:
            names = [labels.get(i, f"class {i}") for i in range(max(labels) + 1)]

        def job():
            png = legend_png(vis, label=band, class_names=names)
            if dict(self.layer.vis_params) == vis:
                self.legend.value = png

        self._jobs.submit("legend", job, latest_only=True)

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

    # ---- compare (split map) ---------------------------------------------------------------------
    def _on_compare_model(self, change) -> None:
        if not self._loud():
            return
        self._compare_touched = True
        entry = self._models.get(change["new"])
        if entry is not None and entry.model is not None:
            with self._quietly():
                self.compare_overlap.value = int(entry.model.params.overlap[0])
        if self.compare.value:
            self._request_compare(reset_overlap=entry is None or entry.model is None)

    def _on_compare(self, change) -> None:
        if not self._loud():
            return
        if change["owner"] is not self.compare:
            self._compare_touched = True
        if self.compare.value:
            if not self._compare_touched and self._applied.get("model") in self._models:
                # Out of the box, compare the current model with fixInputProj the other way round.
                entry = self._models[self._applied["model"]]
                with self._quietly():
                    self.compare_model.value = entry.name
                    self.compare_fix.value = not self.fix_input_proj.value
                    self.compare_overlap.value = self.overlap.value
            self._request_compare()
        else:
            self._split_off()

    def _request_compare(self, reset_overlap: bool = False) -> None:
        self._submit(
            "compare",
            f"Comparing with {self.compare_model.value}",
            self._compare_job,
            reset_overlap,
            latest_only=True,
        )

    def _compare_job(self, reset_overlap: bool) -> None:
        entry = self._models[self.compare_model.value]
        try:
            base = entry.get()
            if reset_overlap:
                with self._quietly():
                    self.compare_overlap.value = int(base.params.overlap[0])
            model = with_params(
                base, fix_input_proj=self.compare_fix.value, overlap=self.compare_overlap.value
            )
            pred = model.predict_image(self.image)
            groups = vector_outputs(pred.band_names)
            display = ClassBandImage(pred, groups) if groups else pred
            vis = self._compare_vis_for(entry, display)
        except Exception as exc:  # noqa: BLE001
            self._set_error(exc, "compare")
            return
        self.compare_prediction, self.compare_display = pred, display
        if self.compare_layer is None:
            self.compare_layer = PredictionLayer(
                display, vis_params=vis, name="Compare", class_name="ee-model-tile emw-compare"
            )
            self.compare_layer.opacity = self.opacity.value
        else:
            self.compare_layer.last_error = ""
            self.compare_layer.image = display
            self.compare_layer.vis_params = vis
        self.compare_info.value = (
            f"<small>Left: <b>{html.escape(self._applied.get('model') or '')}</b> (fixInputProj "
            f"{'on' if self.fix_input_proj.value else 'off'}, overlap {self.overlap.value}) · Right: "
            f"<b>{html.escape(entry.name)}</b> (fixInputProj {'on' if self.compare_fix.value else 'off'}, "
            f"overlap {self.compare_overlap.value})</small>"
        )
        if self.compare.value:
            self._split_on()

    def _compare_vis_for(self, entry: ModelEntry, display: Image) -> dict:
        band = self.band.value
        if band in display.band_names:
            vis = dict(self.layer.vis_params)
            vis["bands"] = [band]
            return vis
        _b, vis, _c = self._default_band_vis(entry, display, True, False)
        return vis

    def _sync_compare_vis(self) -> None:
        if self.compare_layer is not None and self.compare_display is not None:
            band = self.band.value
            if band in self.compare_display.band_names:
                vis = dict(self.layer.vis_params)
                self.compare_layer.vis_params = vis

    def _split_on(self) -> None:
        with self._lock:
            if self.split_control is not None or self.compare_layer is None:
                return
            # A layer must not be both on the map and in the split control (two views of it).
            if self.layer in self.map.layers:
                self.map.remove(self.layer)
            self.split_control = ipyleaflet.SplitMapControl(
                left_layer=self.layer, right_layer=self.compare_layer
            )
            self.map.add(self.split_control)

    def _split_off(self) -> None:
        with self._lock:
            if self.split_control is None:
                return
            self.map.remove(self.split_control)
            self.split_control = None
            layers = list(self.map.layers)
            index = layers.index(self.scene_layer) + 1 if self.scene_layer in layers else len(layers)
            self.map.add(self.layer, index=index)

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


_HELP_STYLE = "font-size:11px;line-height:1.35;color:#444"


def _help(text: str) -> widgets.HTML:
    return widgets.HTML(f"<div style='{_HELP_STYLE}'>{html.escape(text)}</div>")


def region_bounds_checked(region) -> tuple[float, float, float, float]:
    from ..core.region import region_bounds

    return region_bounds(region)


def _normalise_models(models) -> list[ModelEntry]:
    if models is None:
        return _demo_entries()
    if isinstance(models, ModelEntry):
        return [models]
    if isinstance(models, Mapping):
        items = list(models.items())
    elif isinstance(models, (str, os.PathLike)) or hasattr(models, "predict_image"):
        items = [(None, models)]
    else:
        items = [(None, m) for m in models]
    entries = []
    seen: set[str] = set()
    for name, m in items:
        if isinstance(m, ModelEntry):
            entry = m
        elif isinstance(m, (str, os.PathLike)):
            spec = os.fspath(m)
            entry = ModelEntry(
                str(name or os.path.basename(spec.rstrip("/")) or spec), loader=lambda s=spec: load_model(s)
            )
        elif hasattr(m, "predict_image"):
            entry = ModelEntry(str(name or getattr(m, "name", None) or f"model {len(entries) + 1}"), model=m)
        else:
            raise InputError(
                f"explore(models=...) takes emw.Models or model paths/URLs (alone, in a list or a dict "
                f"name -> model), got {type(m).__name__}."
            )
        base, k = entry.name, 2
        while entry.name in seen:
            entry.name = f"{base} ({k})"
            k += 1
        seen.add(entry.name)
        entries.append(entry)
    if not entries:
        raise InputError("explore(models=...) got no model: pass at least one, or None for the demo models.")
    return entries


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

"""The panel's Train tab: label classes on the map, train a classifier, watch it predict, compare.

A thin layer over `core.labels` and `core.classifier`: the tab edits an `emw.Labels`
(`tab.labels`), trains with `emw.train_classifier` on the panel's image in a background
lane, and hands each result to the panel as model `classifier vN` (so it streams at once,
in the class colours, with a legend of the class names). Every control is an attribute, so
scripts and tests drive it as a user would (`tab.class_name.value = "water"`,
`tab.add_class_button.click()`, `tab.add_point(lon, lat)`, `tab.train_button.click()`).
"""

from __future__ import annotations

import html
import io
import os
import threading
import time
from typing import TYPE_CHECKING

import ipyleaflet
import ipywidgets as widgets

from ..core.labels import Labels
from ..errors import EEModelWidgetsError, InputError
from .prediction_layer import PredictionLayer
from .tab_host import TabHost

if TYPE_CHECKING:
    from ..core.classifier import TrainedClassifier

#: Seconds between two redraws of the live training plot (drawing costs 50 ms, more on a busy
#: machine, and holds the GIL the training loop needs).
PLOT_EVERY = 1.0
UNCERTAINTY_VIS = {"bands": ["uncertainty"], "min": 0, "max": 1, "palette": "magma"}


def history_png(history: dict[str, list[float]], epochs: int | None = None) -> bytes:
    """Loss and accuracy per epoch (training and validation) as a small PNG."""
    from matplotlib.figure import Figure  # no pyplot: the user's notebook backend stays as it is

    fig = Figure(figsize=(4.4, 1.6))
    ax, ax2 = fig.subplots(1, 2)
    for key, style in (("loss", "-"), ("val_loss", "--")):
        if history.get(key):
            ax.plot(range(1, len(history[key]) + 1), history[key], style, label=key.replace("_", " "))
    for key, style in (("accuracy", "-"), ("val_accuracy", "--")):
        if history.get(key):
            ax2.plot(range(1, len(history[key]) + 1), history[key], style, label=key.replace("_", " "))
    for a, title in ((ax, "loss"), (ax2, "accuracy")):
        a.set_title(title, fontsize=8)
        a.tick_params(labelsize=7)
        a.set_xlabel("epoch", fontsize=7)
        if epochs:
            a.set_xlim(1, max(epochs, 2))
    ax2.set_ylim(0, 1.02)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    return buf.getvalue()


def _marker(lat: float, lon: float, colour: str) -> ipyleaflet.CircleMarker:
    # A white ring: the dot stays visible over a map drawn in the class's own colour.
    return ipyleaflet.CircleMarker(
        location=(lat, lon), radius=5, color="white", weight=2, fill_color=colour, fill_opacity=1.0
    )


class TrainTab(widgets.VBox):
    """Label, train, compare and export classifiers on the panel's map and image."""

    def __init__(self, panel: TabHost):
        self.panel = panel
        self.labels = Labels([])
        self.classifiers: list[TrainedClassifier] = []
        self.evaluation = None
        self._lock = threading.RLock()
        self._uncertainty_layer: PredictionLayer | None = None

        # ---- classes ---------------------------------------------------------------------
        self.class_name = widgets.Text(placeholder="class name, e.g. water", layout={"width": "170px"})
        self.class_name.add_class("emw-train-class-name")
        self.class_color = widgets.ColorPicker(value="#1f77b4", concise=True, layout={"width": "40px"})
        self.class_color.add_class("emw-train-class-color")
        self.add_class_button = widgets.Button(description="Add class", layout={"width": "90px"})
        self.add_class_button.add_class("emw-train-add-class")
        self.class_picker = widgets.Dropdown(options=[], description="Label as")
        self.class_picker.add_class("emw-train-class-picker")
        self.class_list = widgets.HTML("")
        # ---- labelling -------------------------------------------------------------------
        self.label_mode = widgets.ToggleButton(value=False, description="Label on map", icon="map-marker")
        self.label_mode.add_class("emw-train-label-mode")
        self.undo_button = widgets.Button(description="Undo", layout={"width": "70px"})
        self.undo_button.add_class("emw-train-undo")
        self.clear_button = widgets.Button(description="Clear", layout={"width": "70px"})
        self.clear_button.add_class("emw-train-clear")
        # ---- training --------------------------------------------------------------------
        self.kind = widgets.Dropdown(options=["pixel", "patch"], value="pixel", description="Kind")
        self.train_button = widgets.Button(description="Train", button_style="primary", icon="play")
        self.train_button.add_class("emw-train-button")
        self.progress = widgets.IntProgress(value=0, min=0, max=1, layout={"width": "95%"})
        self.progress.add_class("emw-train-progress")
        self.plot = widgets.Image(format="png", layout={"max_width": "400px"})
        self.plot.add_class("emw-train-plot")
        self.summary = widgets.HTML("", layout={"width": "220px"})
        self.summary.add_class("emw-train-summary")
        self.confusion = widgets.Image(format="png", layout={"max_width": "190px"})
        self.uncertainty = widgets.Checkbox(
            value=False, description="Show uncertainty (where to label next)", indent=False
        )
        self.uncertainty.add_class("emw-train-uncertainty")
        self.compare_previous = widgets.Checkbox(
            value=False, description="Split map: vN vs vN-1", indent=False
        )
        self.compare_previous.add_class("emw-train-compare")
        # ---- files -----------------------------------------------------------------------
        self.path = widgets.Text(value=os.path.join(os.getcwd(), "labels.geojson"), description="Labels")
        self.save_button = widgets.Button(description="Save labels", layout={"width": "110px"})
        self.load_button = widgets.Button(description="Load labels", layout={"width": "110px"})
        self.export_dir = widgets.Text(value=os.path.join(os.getcwd(), "classifier"), description="Export to")
        self.export_button = widgets.Button(description="Export model + samples", layout={"width": "200px"})
        self.export_button.add_class("emw-train-export")
        self.message = widgets.HTML("")
        self.message.add_class("emw-train-message")

        self.label_group = ipyleaflet.LayerGroup(layers=(), name="Labels")
        panel.map.add(self.label_group)
        # Labels may be polygons or rectangles too (the Data tab's region uses rectangles).
        panel.draw_control.polygon = {"shapeOptions": {"color": "#333", "weight": 2, "fillOpacity": 0.2}}
        panel.draw_control.on_draw(self._on_draw)
        panel.map.on_interaction(self._on_map_event)

        super().__init__(
            [
                widgets.HBox([self.class_name, self.class_color, self.add_class_button]),
                self.class_picker,
                self.class_list,
                widgets.HBox([self.label_mode, self.undo_button, self.clear_button]),
                widgets.HBox([self.kind, self.train_button]),
                self.progress,
                self.plot,
                widgets.HBox([self.summary, self.confusion]),
                self.uncertainty,
                self.compare_previous,
                self.path,
                widgets.HBox([self.save_button, self.load_button]),
                self.export_dir,
                self.export_button,
                self.message,
            ]
        )
        self.add_class("emw-train-tab")
        self.add_class_button.on_click(
            lambda _b: self.add_label_class(self.class_name.value, self.class_color.value)
        )
        self.undo_button.on_click(lambda _b: self.undo())
        self.clear_button.on_click(lambda _b: self.clear())
        self.train_button.on_click(lambda _b: self.train())
        self.uncertainty.observe(lambda _c: self._show_uncertainty(), "value")
        self.compare_previous.observe(lambda _c: self._compare_versions(), "value")
        self.save_button.on_click(lambda _b: self._guard(self.save_labels, self.path.value))
        self.load_button.on_click(lambda _b: self._guard(self.load_labels, self.path.value))
        self.export_button.on_click(
            lambda _b: self._submit("Exporting the classifier", self.export, self.export_dir.value)
        )
        self._refresh()

    # ---- state shown -----------------------------------------------------------------------
    @property
    def labelling(self) -> bool:
        """True while clicks and drawings on the map make labels (not inspections or regions)."""
        return bool(self.label_mode.value)

    @property
    def classifier(self) -> TrainedClassifier | None:
        return self.classifiers[-1] if self.classifiers else None

    def _say(self, text: str, error: bool = False) -> None:
        colour = "#b00" if error else "#555"
        self.message.value = f"<small style='color:{colour}'>{html.escape(text)}</small>"

    def _guard(self, fn, *args) -> None:
        try:
            fn(*args)
        except EEModelWidgetsError as exc:
            self._say(f"{type(exc).__name__}: {exc}", error=True)

    def _refresh(self, markers: bool = True) -> None:
        """Class list (swatch, name, labels), picker options and (all) the markers on the map."""
        with self._lock:
            classes, colors, counts = self.labels.classes, self.labels.colors, self.labels.counts()
            rows = "".join(
                f"<div><span style='display:inline-block;width:12px;height:12px;background:#{c};"
                f"border:1px solid #333;margin-right:6px'></span>{html.escape(n)} · {counts[n]} label(s)</div>"
                for n, c in zip(classes, colors)
            )
            self.class_list.value = (
                rows or "<small>Add a class, pick it, turn on “Label on map”, then click or draw.</small>"
            )
            if list(self.class_picker.options) != classes:
                keep = self.class_picker.value
                self.class_picker.options = classes
                if keep in classes:
                    self.class_picker.value = keep
            if markers:
                self.label_group.layers = tuple(m for f in self.labels for m in self._markers(f))

    def _markers(self, feature: dict) -> list:
        """Map layers showing one label, in its class's colour."""
        colour = "#" + self.labels.colors[self.labels.classes.index(feature["properties"]["class"])]
        g = feature["geometry"]
        if g["type"] in ("Polygon", "MultiPolygon"):
            polys = [g["coordinates"]] if g["type"] == "Polygon" else g["coordinates"]
            return [
                ipyleaflet.Polygon(
                    locations=[[(lat, lon) for lon, lat, *_ in ring] for ring in poly],
                    color=colour,
                    weight=2,
                    fill_color=colour,
                    fill_opacity=0.3,
                )
                for poly in polys
            ]
        points = [g["coordinates"]] if g["type"] == "Point" else g["coordinates"]
        return [_marker(p[1], p[0], colour) for p in points]

    # ---- classes and labels ------------------------------------------------------------------
    def add_label_class(self, name: str, color: str | None = None) -> None:
        """Add a class (and pick it for labelling)."""
        try:
            taken = color is not None and color.lstrip("#").lower() in self.labels.colors
            self.labels.add_class(name.strip() if isinstance(name, str) else name, None if taken else color)
        except EEModelWidgetsError as exc:
            self._say(str(exc), error=True)
            return
        self._refresh()
        self.class_picker.value = self.labels.classes[-1]
        self.class_name.value = ""
        from ..core.labels import PALETTE

        free = [c for c in PALETTE if c not in self.labels.colors]
        self.class_color.value = "#" + (free[0] if free else PALETTE[0])
        self._say(f"Class {name!r} added.")

    def add_label(self, geometry, cls: str | None = None) -> None:
        """Label `geometry` (point, box or GeoJSON) with `cls` (default: the picked class)."""
        cls = cls or self.class_picker.value
        if not cls:
            raise InputError("Add a class first (type a name, then 'Add class').")
        with self._lock:
            i = self.labels.add(geometry, cls)
            # One more marker, not all of them again: labelling stays quick with hundreds of labels.
            self.label_group.layers = (*self.label_group.layers, *self._markers(self.labels[i]))
        self._refresh(markers=False)

    def add_point(self, lon: float, lat: float, cls: str | None = None) -> None:
        """What a click in label mode does."""
        self.add_label((lon, lat), cls)

    def undo(self) -> None:
        with self._lock:
            if len(self.labels):
                self.labels.remove()
        self._refresh()

    def clear(self) -> None:
        with self._lock:
            self.labels.clear()
        self._refresh()

    def save_labels(self, path: str) -> str:
        out = self.labels.save(os.path.expanduser(path))
        self._say(f"Saved {len(self.labels)} labels to {out}.")
        return out

    def load_labels(self, path: str) -> None:
        labels = Labels.from_geojson(os.path.expanduser(path))
        with self._lock:
            self.labels = labels
        self._refresh()
        self._say(f"Loaded {len(labels)} labels of {len(labels.classes)} classes from {path}.")

    def _on_map_event(self, **event) -> None:
        if not self.labelling or event.get("type") != "click":
            return
        lat, lon = event.get("coordinates", (None, None))
        if lat is not None:
            self._guard(self.add_point, lon, lat)

    def _on_draw(self, _control, action: str, geo_json: dict) -> None:
        if not self.labelling or action != "created":
            return
        self._guard(self.add_label, geo_json)
        self.panel.draw_control.clear()  # our own coloured outline shows it

    # ---- training ----------------------------------------------------------------------------
    def _submit(self, message: str, fn, *args) -> None:
        def run(*a):
            try:
                fn(*a)
            except EEModelWidgetsError as exc:
                self._say(f"{type(exc).__name__}: {exc}", error=True)

        self.panel._submit("train", message, run, *args)

    def train(self) -> None:
        """Train a new version on the current labels, in the background (see `panel.wait()`)."""
        self._submit("Training a classifier", self._train_job, self.labels.copy(), self.kind.value)

    def _train_job(self, labels: Labels, kind: str) -> None:
        from ..core.classifier import train_classifier

        self.train_button.disabled = True
        self.progress.value, self.progress.bar_style = 0, "info"
        history: dict[str, list[float]] = {}
        last = [0.0]

        def on_progress(info: dict) -> None:
            self.progress.max = info["epochs"]
            self.progress.value = info["epoch"]
            for k, v in info.items():
                if k not in ("epoch", "epochs"):
                    history.setdefault(k, []).append(v)
            now = time.monotonic()
            if now - last[0] >= PLOT_EVERY:
                last[0] = now
                self.plot.value = history_png(history, info["epochs"])

        self._say(f"Training on {sum(labels.counts().values())} labels…")
        try:
            clf = train_classifier(self.panel.image, labels, kind=kind, on_progress=on_progress)
        except BaseException:
            self.progress.bar_style = "danger"
            raise
        finally:
            self.train_button.disabled = False
        self.progress.bar_style = "success"
        with self._lock:
            self.classifiers.append(clf)
            version = len(self.classifiers)
        name = f"classifier v{version}"
        self.evaluation = clf.validation
        # The map first (the user is waiting for it), then the plots.
        self.panel.add_model(name, clf.model, vis_params=clf.vis_params, class_names=clf.classes)
        self._say(f"{name} trained in {clf.seconds:.1f} s and shown on the map. {clf.unused}".rstrip())
        self.plot.value = history_png(clf.history, len(clf.history.get("loss", [])))
        self._show_validation(name, clf)
        if self.uncertainty.value:
            self._show_uncertainty()
        if self.compare_previous.value:
            self._compare_versions()

    def _show_validation(self, name: str, clf: TrainedClassifier) -> None:
        ev = clf.validation
        if ev is None or ev.n == 0:
            self.summary.value = (
                f"<small><b>{html.escape(name)}</b>: no pixels held out for validation (a class keeps "
                "one aside once it has 3 labelled pixels; labels on one pixel count once).</small>"
            )
            self.confusion.value = b""
            return
        rows = "".join(
            f"<tr><td>{html.escape(c)}</td><td>{p:.2f}</td><td>{r:.2f}</td><td>{f:.2f}</td></tr>"
            for c, p, r, f in zip(ev.classes, ev.precision, ev.recall, ev.f1)
        )
        self.summary.value = (
            f"<small><b>{html.escape(name)}</b>: validation accuracy <b>{ev.accuracy:.3f}</b> on {ev.n} held-out "
            f"pixels<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th></tr>{rows}</table></small>"
        )
        from matplotlib.figure import Figure

        fig = Figure(figsize=(2.8, 2.6))
        ev.plot(fig.subplots(), colors=clf.colors)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
        self.confusion.value = buf.getvalue()

    # ---- uncertainty and comparison ------------------------------------------------------------
    def _show_uncertainty(self) -> None:
        clf = self.classifier
        with self._lock:
            if not self.uncertainty.value or clf is None:
                if self._uncertainty_layer is not None and self._uncertainty_layer in self.panel.map.layers:
                    self.panel.map.remove(self._uncertainty_layer)
                return
            image = clf.uncertainty(self.panel.image)
            if self._uncertainty_layer is None:
                self._uncertainty_layer = PredictionLayer(
                    image,
                    vis_params=UNCERTAINTY_VIS,
                    name="Uncertainty",
                    class_name="ee-model-tile emw-uncertainty",
                )
            else:
                self._uncertainty_layer.image = image
            if self._uncertainty_layer not in self.panel.map.layers:
                self.panel.map.add(self._uncertainty_layer)

    @property
    def uncertainty_layer(self) -> PredictionLayer | None:
        return self._uncertainty_layer

    def _compare_versions(self) -> None:
        """Split map: the newest version (left, the Model tab's) against the one before (right)."""
        p = self.panel
        n = len(self.classifiers)
        if not self.compare_previous.value:
            if p.compare.value:
                p.compare.value = False
            return
        if n < 2:
            self._say("Train twice to compare two versions on a split map.")
            return
        p.compare_model.value = f"classifier v{n - 1}"
        p.compare_fix.value = p.fix_input_proj.value
        if p.compare.value:
            p._request_compare()
        else:
            p.compare.value = True

    # ---- export ------------------------------------------------------------------------------
    def export(self, directory: str) -> dict[str, str]:
        """Write `classifier.keras`, `prepared/` (ee-model prepare) and `samples.tfrecord.gz`."""
        from ..serving.handoff import export_classifier

        clf = self.classifier
        if clf is None:
            raise InputError("Train a classifier first: there is nothing to export yet.")
        out = export_classifier(clf, self.panel.image, self.labels, os.path.expanduser(directory))
        self._say("Exported: " + ", ".join(os.path.basename(v) for v in out.values()) + f" in {directory}.")
        return out

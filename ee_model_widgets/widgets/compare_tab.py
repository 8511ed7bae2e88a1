"""The panel's Compare tab: a split map with a second model (or the same model with other
settings) right of the divider.
"""

from __future__ import annotations

import html

import ipyleaflet
import ipywidgets as widgets

from ..core.image import Image
from .model_tab import ModelEntry
from .prediction_layer import PredictionLayer
from .tab_host import help_html


class CompareTab:
    """The Compare tab of `Panel` (a mixin: its widgets and handlers, on the panel's state)."""

    def _build_compare_tab(self, names: list[str]) -> widgets.VBox:
        self.compare = widgets.Checkbox(value=False, description="Split map: compare with", indent=False)
        self.compare.add_class("emw-compare")
        self.compare_model = widgets.Dropdown(options=names, value=names[0], description="Model")
        self.compare_model.add_class("emw-compare-model")
        self.compare_fix = widgets.Checkbox(value=True, description="fixInputProj", indent=False)
        self.compare_fix.add_class("emw-compare-fix")
        self.compare_overlap = widgets.BoundedIntText(value=0, min=0, max=1024, description="Overlap")
        self.compare_overlap.add_class("emw-compare-overlap")
        self.compare_info = help_html("Left of the divider: the settings of the Model tab. Right: these.")
        return widgets.VBox(
            [self.compare, self.compare_model, self.compare_fix, self.compare_overlap, self.compare_info]
        )

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
            _model, pred, display = self._predict(
                base, self.image, fix_input_proj=self.compare_fix.value, overlap=self.compare_overlap.value
            )
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

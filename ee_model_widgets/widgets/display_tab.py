"""The panel's Display tab: band, min/max, palette, opacity, threshold, the automatic stretch and
the legend; and how a prediction is first shown (default band and vis params).
"""

from __future__ import annotations

import math

import ipywidgets as widgets
import numpy as np

from ..core.image import Image
from ..core.region import grid_for
from ..core.vis import stretch
from ..errors import EEModelWidgetsError, InputError
from .data_tab import REGION_IMAGE
from .legend import legend_png
from .model_tab import ModelEntry
from .palette_picker import PalettePicker
from .threshold import ThresholdControl, class_palette

#: Class colours for integer outputs without a palette of their own (matplotlib tab20).
_CLASS_CMAP = "tab20"


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


class DisplayTab:
    """The Display tab of `Panel` (a mixin: its widgets and handlers, on the panel's state)."""

    def _build_display_tab(self, image: Image) -> widgets.VBox:
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
        return widgets.VBox(
            [self.band, widgets.HBox([self.vmin, self.vmax]), self.stretch_button, self.palette, self.opacity]
            + [self.threshold]
        )

    def auto_stretch(self) -> None:
        """Set min/max to the 2-98 % range of the shown band over the region (in the background)."""
        self._submit("stretch", "Computing statistics", self._stretch_job, latest_only=True)

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


# ---- the automatic stretch: a sampled read ----------------------------------------------------
#: Longest side, in pixels, of the read used for automatic min/max.
STRETCH_SAMPLE_PX = 256


def sample_grid(image: Image, region=None, max_px: int = STRETCH_SAMPLE_PX):
    """The image's grid over `region`, coarsened so its longer side has at most `max_px` pixels."""
    grid = grid_for(image, region)
    f = min(1.0, max_px / max(grid.width, grid.height))
    return grid if f >= 1.0 else grid.scaled(f, f)


def sample_stretch(image: Image, band: str, region=None, percent=(2, 98)) -> tuple[float, float]:
    """(min, max) of `band` at the given percentiles of a sampled read over `region`."""
    data = image.read(sample_grid(image, region), [band])
    if np.ma.getmaskarray(data).all():
        raise InputError(
            f"Band {band!r} has no valid pixel in the region: pick another region or band for the stretch."
        )
    lo, hi = stretch(data, percent)
    return _nice(lo[0]), _nice(hi[0])


def sample_classes(image: Image, band: str, region=None) -> tuple[int, int]:
    """Smallest and largest class value of an integer band in a sampled read (for a class legend)."""
    data = image.read(sample_grid(image, region), [band], resampling="nearest")
    valid = np.ma.compressed(data)
    if valid.size == 0:
        return 0, 0
    return int(np.floor(valid.min())), int(np.ceil(valid.max()))


def _nice(v: float) -> float:
    """Round a stretch bound to 3 significant digits (readable in the min/max fields)."""
    if v == 0 or not math.isfinite(v):
        return float(v)
    digits = 3 - int(math.floor(math.log10(abs(v)))) - 1
    return float(round(v, digits))

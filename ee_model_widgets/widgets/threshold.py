"""The Display tab's threshold: "band >= x" drawn in one colour, the rest transparent.

Built on band math (`image.select(band).gte(x).self_mask()`), shown in its own map layer
above the prediction, so the prediction's cached cells are reused: moving the slider costs
no model call, and changing the colour only re-renders.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import ipywidgets as widgets

from ..core.image import Image
from .prediction_layer import PredictionLayer

_CLASS_INDEX = re.compile(r"_(\d+)$")


def class_colour(band: str, class_colours: Sequence[str] | None, default: str = "#ff0000") -> str:
    """The colour of class k for a probability band named `<prefix>_k`, else `default`."""
    m = _CLASS_INDEX.search(band or "")
    if m and class_colours and int(m[1]) < len(class_colours):
        c = str(class_colours[int(m[1])])
        return c if c.startswith("#") else f"#{c}"
    return default


def class_palette(vis_params: dict | None) -> list[str] | None:
    """The class colours of a model's categorical vis params (None if it has none)."""
    if vis_params and vis_params.get("categorical") and isinstance(vis_params.get("palette"), (list, tuple)):
        return [str(c) for c in vis_params["palette"]]
    return None


def threshold_image(image: Image, band: str, value: float) -> Image:
    """`band >= value` as 1, masked elsewhere (EE: `image.select(band).gte(value).selfMask()`)."""
    return image.select(band).gte(float(value)).self_mask()


class ThresholdControl(widgets.VBox):
    """A checkbox, a slider and a colour; owns the "Threshold" layer it adds to `map`."""

    def __init__(self, map_, image: Image, value: float = 0.5, **kwargs):
        """`image`: what the (hidden) layer holds until `set_source` gives it a band to threshold."""
        self.enabled = widgets.Checkbox(value=False, description="Threshold: show band ≥", indent=False)
        self.enabled.add_class("emw-threshold")
        self.value = widgets.FloatSlider(
            value=value, min=0.0, max=1.0, step=0.01, continuous_update=False, readout_format=".2f"
        )
        self.value.add_class("emw-threshold-value")
        self.colour = widgets.ColorPicker(value="#ff0000", concise=True, layout={"width": "40px"})
        self.colour.add_class("emw-threshold-colour")
        self.layer = PredictionLayer(
            image, vis_params={}, name="Threshold", class_name="ee-model-tile emw-threshold-layer"
        )
        self.layer.visible = False
        self._source: tuple[Image, str] | None = None
        self._colour_touched = False
        map_.add(self.layer)
        super().__init__(
            [widgets.HBox([self.enabled, self.colour]), self.value],
            **kwargs,
        )
        self.enabled.observe(lambda _c: self._show(), "value")
        self.value.observe(lambda _c: self._show(), "value")
        self.colour.observe(self._on_colour, "value")

    def set_source(self, image: Image, band: str, class_colours: Sequence[str] | None = None) -> None:
        """Threshold `band` of `image` from now on (e.g. a new prediction or band choice)."""
        self._source = (image, band)
        if not self._colour_touched:
            with self.hold_trait_notifications():
                self.colour.unobserve(self._on_colour, "value")
                self.colour.value = class_colour(band, class_colours, self.colour.value)
                self.colour.observe(self._on_colour, "value")
        self._show()

    @property
    def image(self) -> Image | None:
        """What the threshold layer shows (None when off or without a source)."""
        if not self.enabled.value or self._source is None:
            return None
        image, band = self._source
        return threshold_image(image, band, self.value.value)

    def _on_colour(self, _change) -> None:
        self._colour_touched = True
        self.layer.vis_params = self._vis()

    def _vis(self) -> dict:
        return {"min": 0, "max": 1, "palette": [self.colour.value]}

    def _show(self) -> None:
        image = self.image
        if image is None:
            self.layer.visible = False
            return
        self.layer.vis_params = self._vis()
        self.layer.image = image
        self.layer.visible = True

    def close(self) -> None:
        self.layer.close()
        super().close()

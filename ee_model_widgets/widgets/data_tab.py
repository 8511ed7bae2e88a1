"""The panel's Data tab: the image picker, images opened from a path, and the region (presets,
typed bounding box, drawn rectangle).
"""

from __future__ import annotations

import os
import re
from typing import TypeVar

import ipywidgets as widgets

from ..core.image import Image
from ..core.region import grid_for, region_bounds
from ..errors import EEModelWidgetsError, InputError, RegionError
from .tab_host import help_html

_Self = TypeVar("_Self")


#: Region presets.
REGION_IMAGE = "Image extent"
REGION_VIEW = "Current map view"
REGION_DRAWN = "Drawn rectangle"
REGION_BBOX = "Bounding box (typed)"
REGION_GIVEN = "Region given to explore()"
REGION_PRESETS = [REGION_IMAGE, REGION_VIEW, REGION_DRAWN, REGION_BBOX]


def region_bounds_checked(region) -> tuple[float, float, float, float]:
    return region_bounds(region)


class DataTab:
    """The Data tab of `Panel` (a mixin: its widgets and handlers, on the panel's state)."""

    def _build_data_tab(self, first_image_name: str, image: Image) -> widgets.VBox:
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
        self.region_preset = widgets.Dropdown(
            options=REGION_PRESETS, value=REGION_IMAGE, description="Region"
        )
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
        return widgets.VBox(
            [
                self.image_picker,
                widgets.HBox([self.image_path, self.load_image_button]),
                widgets.HTML("<b>Region</b> (used by the export and the automatic stretch)"),
                self.region_preset,
                self.bbox,
                help_html("Or draw one with the rectangle tool at the top left of the map."),
                self.zoom_button,
            ]
        )

    def add_image(
        self: _Self, name: str, image, *, vis_params: dict | None = None, select: bool = True
    ) -> _Self:
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
            bounds = parse_bbox(change["new"])
            grid_for(self.image, bounds)  # off the image (often lat/lon swapped): say so as it is typed
            self.set_region(bounds, REGION_BBOX)
            self._set_error(None)
        except EEModelWidgetsError as exc:
            self._set_error(exc)

    def _on_draw(self, _control, action: str, geo_json: dict) -> None:
        if action != "created" or self.train.labelling:  # a label, handled by the Train tab
            return
        try:
            bounds = region_bounds(geo_json)
            self._drawn = bounds
            self.set_region(bounds, REGION_DRAWN)
            self._set_error(None)
        except EEModelWidgetsError as exc:
            self._set_error(exc)
        finally:
            # The region outline shows it; the drawn shape itself would hide later clicks.
            self.draw_control.clear()


# ---- the bounding-box text field ----------------------------------------------------------------
def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """'west, south, east, north' (commas and/or spaces) -> a validated lon/lat bbox."""
    parts = [p for p in re.split(r"[,\s;]+", str(text).strip().strip("()[]")) if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise RegionError(
            f"Cannot read {text!r} as a bbox: type four numbers 'west, south, east, north' in lon/lat degrees."
        ) from None
    if len(values) != 4:
        raise RegionError(
            f"A bbox needs four numbers 'west, south, east, north' (lon/lat degrees), got {len(values)} in {text!r}."
        )
    return region_bounds(tuple(values))


def format_bbox(bounds) -> str:
    return ", ".join(f"{v:.6f}" for v in bounds)

"""`emw.Map`: an ipyleaflet map that takes `emw.Image`s the Earth Engine way (`addLayer`).

    m = emw.Map()
    m.add_layer(demo.scene(), {"bands": ["red", "green", "blue"], "min": 600, "max": 2600}, "scene")
    m.addLayer(pred, {"min": 0, "max": 0.3, "palette": "YlGn"}, "prediction")   # EE spelling
    m.center_object(pred)
    m

Basemap policy (the map must work offline, without error spam): `basemap="auto"` (the
default) adds OpenStreetMap only if the *kernel* can open a connection to its tile server
within a second (checked once per process, in a helper thread, cached); otherwise the map has
no network basemap at all and shows our layers on a plain background. `basemap=None`/`"none"`
never uses the network, `"osm"` always adds OpenStreetMap, and any ipyleaflet layer or
`ipyleaflet.basemaps` entry is used as given. The environment variable
`EE_MODEL_WIDGETS_BASEMAP` (auto / none / osm) sets the default, e.g. for workshops behind a
proxy. The check runs in the kernel: a browser that is online while the kernel is not (or
the reverse) gets the kernel's answer; pass `basemap=` explicitly then.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time

import ipyleaflet

from ..core.grid import WEB_MERCATOR_MAX_LAT
from ..errors import InputError
from .comm_routing import route_to_live_subshells
from .prediction_layer import PredictionLayer

OSM_HOST = "tile.openstreetmap.org"
#: How long the reachability check may take before we call the kernel offline (seconds).
REACHABILITY_TIMEOUT = 1.0
#: How long a reachability answer is trusted (seconds).
REACHABILITY_TTL = 600.0

_reach_lock = threading.Lock()
_reach_cache: dict[str, tuple[float, bool]] = {}

#: Map size assumed when choosing a zoom before the browser has reported the real one.
DEFAULT_VIEW_PX = (700, 480)


def osm_reachable(host: str = OSM_HOST, timeout: float = REACHABILITY_TIMEOUT, port: int = 443) -> bool:
    """True if the kernel can open a TCP connection to `host`:`port` within `timeout` seconds.

    The answer is cached for `REACHABILITY_TTL` seconds. DNS lookups cannot be given a
    timeout, so the attempt runs in a daemon thread and a slow answer counts as offline.
    """
    now = time.monotonic()
    with _reach_lock:
        hit = _reach_cache.get(f"{host}:{port}")
        if hit is not None and now - hit[0] < REACHABILITY_TTL:
            return hit[1]
    result: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=attempt, name="emw-basemap-check", daemon=True)
    t.start()
    t.join(timeout + 0.2)
    ok = bool(result and result[0])
    with _reach_lock:
        _reach_cache[f"{host}:{port}"] = (time.monotonic(), ok)
    return ok


def resolve_basemap(basemap="auto") -> ipyleaflet.Layer | None:
    """The basemap layer for `basemap` ("auto", "osm", None/"none", a Layer or a basemaps entry)."""
    if basemap == "auto":
        basemap = os.environ.get("EE_MODEL_WIDGETS_BASEMAP", "auto").strip().lower() or "auto"
        if basemap == "auto":
            basemap = "osm" if osm_reachable() else None
    if basemap is None or (isinstance(basemap, str) and basemap.lower() == "none"):
        return None
    if isinstance(basemap, str):
        if basemap.lower() in ("osm", "openstreetmap"):
            layer = ipyleaflet.basemap_to_tiles(ipyleaflet.basemaps.OpenStreetMap.Mapnik)
            layer.base = True
            layer.name = "OpenStreetMap"
            return layer
        raise InputError(
            f"Unknown basemap {basemap!r}: use 'auto' (OpenStreetMap when reachable), 'osm', None "
            "(no network basemap), an ipyleaflet layer or an ipyleaflet.basemaps entry."
        )
    if isinstance(basemap, ipyleaflet.Layer):
        return basemap
    if isinstance(basemap, dict):
        layer = ipyleaflet.basemap_to_tiles(basemap)
        layer.base = True
        return layer
    raise InputError(
        f"basemap must be 'auto', 'osm', None or an ipyleaflet layer, got {type(basemap).__name__}."
    )


def zoom_for_bounds(bounds, size_px: tuple[int, int] = DEFAULT_VIEW_PX, max_zoom: int = 20) -> int:
    """The largest web-map zoom at which lon/lat `bounds` (w, s, e, n) fit in `size_px` (w, h)."""
    west, south, east, north = bounds

    def merc_y(lat: float) -> float:
        lat = max(min(lat, WEB_MERCATOR_MAX_LAT), -WEB_MERCATOR_MAX_LAT)
        return math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))

    fx = max(east - west, 1e-9) / 360.0
    fy = max(merc_y(north) - merc_y(south), 1e-12) / (2 * math.pi)
    zx = math.log2(size_px[0] / (256 * fx))
    zy = math.log2(size_px[1] / (256 * fy))
    return int(max(0, min(max_zoom, math.floor(min(zx, zy)))))


def _lonlat_bounds(obj) -> tuple[float, float, float, float]:
    """(w, s, e, n) of an emw.Image, a PredictionLayer, a bbox tuple or a GeoJSON-like region."""
    from ..core.image import Image
    from ..core.region import region_bounds

    if isinstance(obj, PredictionLayer):
        obj = obj.image
    if isinstance(obj, Image):
        return tuple(obj.bounds)
    return region_bounds(obj)


class Map(ipyleaflet.Map):
    """An `ipyleaflet.Map` with `add_layer(image, vis_params, name)` (EE: `addLayer`), a layer
    control, and no network basemap unless one is reachable (see the module docstring)."""

    def __init__(self, basemap="auto", layers_control: bool = True, **kwargs):
        kwargs.setdefault("scroll_wheel_zoom", True)
        kwargs.setdefault("layout", {"width": "100%", "height": f"{DEFAULT_VIEW_PX[1]}px"})
        base = resolve_basemap(basemap)
        kwargs["layers"] = (
            tuple(kwargs.get("layers", ())) if base is None else (base, *kwargs.get("layers", ()))
        )
        super().__init__(**kwargs)
        self.basemap_layer = base
        self._counter = 0
        self.layers_control = None
        if layers_control:
            self.layers_control = ipyleaflet.LayersControl(position="topright")
            self.add(self.layers_control)
        route_to_live_subshells(self)  # map events must never go to a deleted kernel subshell

    # ---- Earth Engine style layers ------------------------------------------------------
    def add_layer(
        self,
        image,
        vis_params: dict | None = None,
        name: str | None = None,
        shown: bool = True,
        opacity: float = 1.0,
    ) -> ipyleaflet.Layer:
        """Show `image` (any `emw.Image`, e.g. a model's prediction) with EE `vis_params`; returns the layer.

        `vis_params` follows `Map.addLayer` (bands, min, max, palette, gamma, opacity,
        categorical); None means Earth Engine's defaults (min 0, max 1; one band grey, else
        the first three bands as RGB). An ipyleaflet layer is simply added.
        """
        from ..core.image import Image

        if isinstance(image, ipyleaflet.Layer):
            self.add(image)
            return image
        if not isinstance(image, Image):
            raise InputError(
                f"add_layer takes an emw.Image (e.g. model.predict_image(img)) or an ipyleaflet layer, "
                f"got {type(image).__name__}."
            )
        self._counter += 1
        layer = PredictionLayer(
            image, vis_params=dict(vis_params or {}), name=name or f"Layer {self._counter}"
        )
        layer.opacity = float(opacity)
        layer.visible = bool(shown)
        self.add(layer)
        return layer

    def addLayer(self, eeObject, visParams=None, name=None, shown=True, opacity=1.0):  # noqa: N802, N803
        """Earth Engine spelling of `add_layer`."""
        return self.add_layer(eeObject, visParams, name, shown, opacity)

    def remove_layer(self, layer) -> None:
        """Remove a layer (what `add_layer` returned)."""
        self.remove(layer)

    # ---- view ----------------------------------------------------------------------------
    def center_object(self, obj, zoom: int | None = None) -> None:
        """Center on an image, layer, bbox or GeoJSON region; `zoom` None fits it in the view."""
        w, s, e, n = _lonlat_bounds(obj)
        self.center = [(s + n) / 2, (w + e) / 2]
        self.zoom = zoom if zoom is not None else zoom_for_bounds((w, s, e, n), self._view_px())

    def centerObject(self, object, zoom=None):  # noqa: N802, A002
        """Earth Engine spelling of `center_object`."""
        self.center_object(object, zoom)

    def set_center(self, lon: float, lat: float, zoom: int | None = None) -> None:
        """Center the map on (lon, lat), optionally at `zoom` (EE's argument order)."""
        self.center = [float(lat), float(lon)]
        if zoom is not None:
            self.zoom = zoom

    def setCenter(self, lon, lat, zoom=None):  # noqa: N802
        """Earth Engine spelling of `set_center`."""
        self.set_center(lon, lat, zoom)

    def _view_px(self) -> tuple[int, int]:
        """The map's size in pixels if the layout says it in px, else the default."""
        size = []
        for value, default in (
            (self.layout.width, DEFAULT_VIEW_PX[0]),
            (self.layout.height, DEFAULT_VIEW_PX[1]),
        ):
            v = str(value or "")
            size.append(int(float(v[:-2])) if v.endswith("px") else default)
        return size[0], size[1]

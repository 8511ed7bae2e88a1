"""`PredictionLayer`: any `Image` (usually a model's prediction) streamed onto an ipyleaflet map.

Built on `KernelTileLayer`: the scheduler hands over the tile requests that arrived together
and this layer plans them once (`Image.plan`) and reads that plan (`Image.read_plan`), so a
viewport costs a few batched model calls. Tiles go to the browser as data (float32 values of
the shown bands, `TileData`) with the vis params compiled once per style (`_style`): the
browser colours them (js/colour.ts), so a new palette or min/max recolours the loaded tiles
with no kernel work at all, and keeps their values (js/tile_cache.ts) until the layer's data
generation moves on. Only the shown bands are read, and their tile arrays are cached here; a
new band choice is read again from the prediction's cached cells, without a model call. With
`fix_input_proj=True`, a tile whose plan needs more than
`max_cells_per_tile` native model cells is refused (`TooManyCells`) and answered with a "zoom
in" tile instead of a flood of work (Earth Engine's zoom-out trap).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence

import numpy as np
from traitlets import Bool, Dict, Int, List, Unicode, observe

from ..core.cache import CellCache
from ..core.grid import WEB_MERCATOR_MAX_LAT, xyz_grid
from ..core.vis import VisStyle, message_tile, vis_style
from ..errors import InputError, TooManyCells
from .scheduler import CANCELLED, TileRequest
from .tile_layer import KernelTileLayer
from .tile_payload import TileData, nan_filled

# Predicted tile arrays kept per layer: 256 MiB is ~1000 single-band float32 tiles.
TILE_CACHE_BYTES = 256 * 1024 * 1024


class PredictionLayer(KernelTileLayer):
    """Show `image` on a map with Earth Engine `vis_params` (bands, min, max, palette, gamma, opacity)."""

    vis_params = Dict()
    #: The vis params compiled for the image (`VisStyle.browser_style`, plus a `version`): what
    #: the browser colours tiles with. Empty while the vis params are invalid (error tiles).
    _style = Dict().tag(sync=True)
    #: Which tile arrays the layer serves, bumped whenever it forgets them (`refresh`, a new
    #: `image`). Data tiles carry the generation they were read under; the browser keeps their
    #: values under it (js/tile_cache.ts) and never shows those of an older one again.
    _generation = Int(0).tag(sync=True)
    cache_hits = Int(0).tag(sync=True)
    tiles_zoom_in = Int(0).tag(sync=True)
    #: A one-line human status, e.g. why some tiles say "zoom in".
    status = Unicode("").tag(sync=True)
    #: Why the layer's tiles are all empty, said on the map (a notice in its corner) and in the
    #: panel: the image lies beyond the web map's latitudes, or the model has returned no finite
    #: value so far. "" when there is nothing to say.
    notice = Unicode("").tag(sync=True)
    #: With fix_input_proj, a map tile needing more native cells than this gets a "zoom in" tile
    #: (the tile's cell budget, passed to `Image.plan`; the image's own `max_cells` still applies).
    max_cells_per_tile = Int(64)
    # [[south, west], [north, east]]: Leaflet asks for no tile outside the image.
    bounds = List().tag(sync=True, o=True)
    # Tiles repeat in every world copy, as the base map's do: an image across the antimeridian
    # then shows on both sides of 180° (Leaflet asks for the wrapped tile x).
    no_wrap = Bool(False).tag(sync=True, o=True)
    # Why no tile of the image can show on a web map ("" when some can).
    _off_map = ""

    def __init__(self, image, vis_params: dict | None = None, *, name: str = "", **kwargs):
        self._tile_cache = CellCache(kwargs.pop("tile_cache_bytes", TILE_CACHE_BYTES))
        self._counts_lock = threading.Lock()  # worker threads update the counter traits
        self._image = image
        # (compiled vis params or why they are invalid, style version): one tuple, read atomically
        self._styled: tuple[VisStyle | Exception, int] = (InputError("no vis params yet"), 0)
        super().__init__(name=name or getattr(image, "name", "") or "prediction", **kwargs)
        self.vis_params = dict(vis_params or {})
        if not self._styled[1]:  # empty vis params: no change event, compile EE's defaults
            self._compile_style()
        self._set_bounds()

    # ---- what is shown ---------------------------------------------------------------
    @property
    def image(self):
        return self._image

    @image.setter
    def image(self, image) -> None:
        """Swap the image (or model) in place; the map redraws without being rebuilt.

        Batches of the old image still running (a slow or hung model) are abandoned, so the
        new image's tiles do not wait for them."""
        self._image = image
        self.scheduler.restart()
        self._set_bounds()
        self._compile_style()
        self.refresh()

    def _set_bounds(self) -> None:
        west, south, east, north = self._image.bounds
        if east > 180:
            # Across the antimeridian (east unwrapped past 180): Leaflet compares bounds with
            # tiles wrapped into -180..180, so only the latitudes can be limited.
            west, east = -180.0, 180.0
        self.bounds = [[south, west], [north, east]]
        self._off_map = ""
        if south >= WEB_MERCATOR_MAX_LAT or north <= -WEB_MERCATOR_MAX_LAT:
            # Every tile would be empty: say why, as a warning now and as the layer's notice.
            self._off_map = (
                f"This image lies between latitudes {south:.2f} and {north:.2f}, beyond the "
                f"{WEB_MERCATOR_MAX_LAT:.2f} degrees that a web map (EPSG:3857) can show: its tiles stay "
                "empty. Look at it in its own projection with to_numpy() or export()."
            )
            warnings.warn(self._off_map, stacklevel=3)
        self._update_notice()

    def _update_notice(self) -> None:
        notice = self._off_map
        silent = getattr(self._image, "cells_without_values", 0)
        if not notice and silent:
            notice = (
                f"The model has returned no finite value (only NaN or inf) for any of the {silent} "
                "cells computed so far, so the tiles are empty: check the input bands and their "
                "scaling, or the model."
            )
        if notice != self.notice:
            self.notice = notice

    @observe("vis_params")
    def _vis_changed(self, change) -> None:
        if change["old"] == change["new"]:
            return
        old = self._styled[0]
        new = self._compile_style()
        if not (isinstance(old, VisStyle) and isinstance(new, VisStyle) and old.bands == new.bands):
            # Other bands (or error tiles to replace, or to show): the tiles' data change, so
            # they are asked for again, answered from the cached predictions.
            self.redraw()
        # Otherwise the browser recolours the tiles it holds from the new _style: no request.

    def _compile_style(self) -> VisStyle | Exception:
        """Compile the vis params for the image and publish them to the browser."""
        image = self._image
        try:
            style: VisStyle | Exception = vis_style(self.vis_params, len(image.band_names), image.band_names)
        except InputError as exc:  # every tile says so (an error tile), as a bad render did
            style = exc
        version = self._styled[1] + 1
        browser = style.browser_style() if isinstance(style, VisStyle) else {}
        # Published before workers can use it, so no tile arrives ahead of its style (the
        # browser also waits for a newer style a tile names, in case a hold_sync delays it).
        self._style = {**browser, "version": version} if browser else {}
        self._styled = (style, version)
        return style

    def refresh(self) -> None:
        """Forget the cached tile arrays of this layer and draw every tile again."""
        self._tile_cache = CellCache(self._tile_cache.max_bytes)
        # After the new cache (and image): a tile stamped with the new generation holds new values.
        self._generation += 1
        self.status = ""
        self.redraw()

    def redraw(self) -> None:
        """Ask every view to drop its tiles and request them again, under the current generation."""
        # In the message, not only in the trait: a trait update can reach the view after this
        # message (held by a `hold_sync`, e.g. a worker publishing its counts, and applied
        # asynchronously by ipywidgets), and the redrawn tiles must not come from an older generation.
        # The style version too: if its `_style` update is lost, the view knows to ask for it
        # (0 while the vis params are invalid: `_style` is empty, the tiles say why).
        style = self._style.get("version", 0)
        self.send({"type": "redraw", "generation": self._generation, "style": style})

    # ---- rendering ---------------------------------------------------------------------
    def _render_many(self, requests: Sequence[TileRequest]) -> list[bytes | TileData | BaseException]:
        # The generation first: the image and cache read next are at least as new as it says.
        generation = self._generation
        image, cache = self._image, self._tile_cache
        style, version = self._styled
        if isinstance(style, Exception):  # bad vis params: every tile says so, no model work
            return [style for _ in requests]
        # Only the bands the style shows are read (a prediction's cells hold all its bands, so
        # other bands later cost an assembly from the cell cache, never a model call).
        shown = sorted(set(style.bands))
        names = [image.band_names[i] for i in shown]
        order = None if list(style.bands) == shown else [shown.index(i) for i in style.bands]
        results: dict[str, bytes | TileData | BaseException] = {}
        values: dict[str, np.ndarray] = {}  # float32 (bands, rows, cols), NaN where masked
        todo: list[TileRequest] = []
        for r in requests:
            cached = cache.get((r.z, r.x, r.y, tuple(shown)))
            if cached is not None:
                values[r.id] = cached
            else:
                todo.append(r)
        if values:
            with self._counts_lock:
                self.cache_hits += len(values)

        grids = {}
        for r in todo:
            try:
                grids[r.id] = xyz_grid(r.z, r.x, r.y)
            except Exception as exc:  # noqa: BLE001 - one bad request fails alone, not its batch
                results[r.id] = exc
        for r in todo:
            if (
                r.id in grids and r.cancelled
            ):  # unloaded after the scheduler handed it over: skip the model call
                results[r.id] = CANCELLED
        todo = [r for r in todo if r.id in grids and not r.cancelled]
        if todo:
            for rid, arr in self._read(image, todo, grids, names, results).items():
                values[rid] = nan_filled(arr)
            for r in todo:
                if r.id in values:
                    cache.put((r.z, r.x, r.y, tuple(shown)), values[r.id])
            self._update_notice()  # e.g. the model has given nothing but NaN so far

        for rid, v in values.items():
            # The browser colours these bands (NaN where masked) with the style `version`.
            results[rid] = TileData(v if order is None else v[order], version, style.bands, generation)
        return [results[r.id] for r in requests]

    def _read(self, image, todo, grids, bands, results) -> dict[str, np.ma.MaskedArray]:
        """One plan and one batched read for all tiles; if that fails, tile by tile so good tiles still come."""
        try:
            return self._read_planned(image, todo, grids, bands, results)
        except Exception as exc:  # noqa: BLE001 - isolate the failing tiles below
            if len(todo) == 1:
                results[todo[0].id] = exc
                return {}
        out = {}
        for r in todo:
            if r.id in results:  # refused ("zoom in") by the batch's plan already
                continue
            try:
                out.update(self._read_planned(image, [r], grids, bands, results))
            except Exception as exc:  # noqa: BLE001 - shown as this tile's error tile
                results[r.id] = exc
        return out

    def _read_planned(self, image, todo, grids, bands, results) -> dict[str, np.ma.MaskedArray]:
        """Plan the tiles once: refused ones (`TooManyCells`) get a "zoom in" tile, the others
        are read with that same plan."""
        plan = image.plan([grids[r.id] for r in todo], bands, max_cells=self.max_cells_per_tile)
        keep = [i for i, refusal in enumerate(plan.refusals) if refusal is None]
        refused = [(todo[i], plan.refusals[i]) for i in range(len(todo)) if plan.refusals[i] is not None]
        for r, refusal in refused:
            results[r.id] = self._zoom_in_tile(refusal)
        if refused:
            with self._counts_lock:
                self.tiles_zoom_in += len(refused)
            self.status = (
                f"Some tiles need more than {refused[0][1].limit} native model cells "
                "(fixInputProj): zoom in to see predictions there."
            )
        if not keep:
            return {}
        if len(keep) < len(todo):
            plan = plan.subset(keep)
        return dict(zip([todo[i].id for i in keep], image.read_plan(plan)))

    @staticmethod
    def _zoom_in_tile(refusal: TooManyCells) -> bytes:
        return message_tile(
            f"Zoom in to see predictions.\nThis tile needs {refusal.cells} model cells at the model's "
            f"native scale (limit {refusal.limit})."
        )

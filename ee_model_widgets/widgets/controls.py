"""Building blocks of the panel that are not widgets of their own concept.

- `with_params(model, ...)`: the same model with other EE parameters (fixInputProj, tile
  size, overlap) without loading it again;
- `ClassBandImage`: a prediction plus an argmax "class" band for models that output class
  probabilities as a vector (EE's `arrayArgmax`), so they can be shown with a class legend;
- `sample_stretch(image, band, region)`: min/max from percentiles of a sampled read;
- `PalettePicker`: a colormap dropdown with matplotlib previews;
- `parse_bbox` / `format_bbox`: the region text field.
"""

from __future__ import annotations

import base64
import math
import re
import threading
from collections.abc import Sequence

import ipywidgets as widgets
import numpy as np
import traitlets

from ..core.image import Image
from ..core.plan import plan_of_parents
from ..errors import InputError, RegionError

# ---- model parameters ---------------------------------------------------------------------------


def with_params(
    model, *, fix_input_proj: bool | None = None, tile: int | None = None, overlap: int | None = None
):
    """`model` with other EE parameters; shares the loaded model (and its call lock and stats).

    `tile`/`overlap` are square sizes in pixels (per-edge overlap, EE's API reading). When
    the model's output tile differs from its input tile (e.g. 256 -> 128), the ratio is kept.
    The model's own checks run again (e.g. a fixed input shape), so a bad size raises here.
    """
    p = model.params
    changes: dict = {}
    if fix_input_proj is not None and bool(fix_input_proj) != p.fix_input_proj:
        changes["fix_input_proj"] = bool(fix_input_proj)
    cur_tile = p.input_tile_size
    new_tile = cur_tile
    if tile is not None and (cur_tile is None or (int(tile), int(tile)) != tuple(cur_tile)):
        t = int(tile)
        if t < 1:
            raise InputError(f"Input tile size must be a positive number of pixels, got {tile}.")
        new_tile = (t, t)
        changes["input_tile_size"] = new_tile
        if cur_tile is not None and p.output_tile_size is not None:
            rx = p.output_tile_size[0] / cur_tile[0]
            ry = p.output_tile_size[1] / cur_tile[1]
            ox, oy = t * rx, t * ry
            if not (float(ox).is_integer() and float(oy).is_integer()):
                raise InputError(
                    f"Model {model.name!r} turns {list(cur_tile)} px input tiles into {list(p.output_tile_size)} px "
                    f"outputs: the input tile size must keep that ratio whole, {t} px does not "
                    f"(try {int(math.ceil(t * rx) / rx)})."
                )
            changes["output_tile_size"] = (int(ox), int(oy))
    if overlap is not None and (int(overlap), int(overlap)) != tuple(p.overlap):
        o = int(overlap)
        if o < 0:
            raise InputError(f"Overlap must be 0 or more pixels per edge, got {overlap}.")
        changes["overlap"] = (o, o)
        changes["overlap_as_given"] = (o, o)
        changes["overlap_mode"] = "per_edge"
    if not changes:
        return model
    new_params = p.replace(**changes)
    tile_now = new_params.input_tile_size
    if tile_now is not None and (
        new_params.overlap[0] >= tile_now[0] or new_params.overlap[1] >= tile_now[1]
    ):
        raise InputError(
            f"Overlap {list(new_params.overlap)} px per edge must be smaller than the input tile size "
            f"{list(tile_now)}: lower the overlap or raise the tile size."
        )
    return model.replace(**changes)


# ---- class (argmax) band --------------------------------------------------------------------------

_INDEXED = re.compile(r"^(.*)_(\d+)$")


def vector_outputs(band_names: Sequence[str]) -> dict[str, list[str]]:
    """Outputs flattened from a per-pixel vector (EE arrayFlatten): prefix -> bands `prefix_0..K-1`, K >= 2."""
    groups: dict[str, dict[int, str]] = {}
    for b in band_names:
        m = _INDEXED.match(b)
        if m:
            groups.setdefault(m[1], {})[int(m[2])] = b
    out = {}
    for prefix, idx in groups.items():
        if len(idx) >= 2 and sorted(idx) == list(range(len(idx))):
            out[prefix] = [idx[i] for i in range(len(idx))]
    return out


class ClassBandImage(Image):
    """`image` plus one band per vector output: the index of its largest value (the class).

    Reads of the added band read the probability bands through the same path (so the map,
    the inspector and the cache agree); plans (`plan`/`read_plan`) and `model` pass through so
    the prediction layer still batches tiles and guards zoomed-out reads.
    """

    def __init__(self, image: Image, groups: dict[str, list[str]] | None = None):
        self._parent = image
        self.groups = dict(groups if groups is not None else vector_outputs(image.band_names))
        self.class_bands = {f"{prefix}_class": bands for prefix, bands in self.groups.items()}
        self._band_names = list(image.band_names) + list(self.class_bands)
        self.categorical_bands = frozenset(image.categorical_bands) | frozenset(self.class_bands)
        self.model = getattr(image, "model", None)

    @property
    def parent(self) -> Image:
        return self._parent

    @property
    def grid(self):
        return self._parent.grid

    @property
    def projection(self):
        return self._parent.projection

    @property
    def bounds(self):
        return self._parent.bounds

    def _parent_bands(self, bands: list[str]) -> list[str]:
        need: list[str] = []
        for b in bands:
            for src in self.class_bands.get(b, [b]):
                if src not in need:
                    need.append(src)
        return need

    def _combine(self, data: np.ma.MaskedArray, need: list[str], bands: list[str]) -> np.ma.MaskedArray:
        out = np.zeros((len(bands),) + data.shape[1:], np.float32)
        mask = np.zeros(out.shape, bool)
        dmask = np.ma.getmaskarray(data)
        values = np.ma.getdata(data)
        for k, b in enumerate(bands):
            if b in self.class_bands:
                idx = [need.index(s) for s in self.class_bands[b]]
                out[k] = np.argmax(values[idx], axis=0)
                mask[k] = dmask[idx].any(axis=0)
            else:
                i = need.index(b)
                out[k] = values[i]
                mask[k] = dmask[i]
        return np.ma.MaskedArray(out, mask=mask)

    def _read(self, grid, bands: list[str], resampling) -> np.ma.MaskedArray:
        need = self._parent_bands(bands)
        return self._combine(self._parent.read(grid, need, resampling), need, bands)

    def _plan(self, grids, bands: list[str], resampling, max_cells):
        parent = self._parent.plan(grids, self._parent_bands(bands), resampling, max_cells)
        return plan_of_parents(grids, bands, resampling, [parent])

    def _read_plan(self, plan) -> list[np.ma.MaskedArray]:
        need = self._parent_bands(list(plan.bands))
        return [self._combine(p, need, list(plan.bands)) for p in self._parent.read_plan(plan.parents[0])]

    def fingerprint(self) -> str:
        from ..core.predicted import image_fingerprint

        return f"classes({image_fingerprint(self._parent)})"


# ---- statistics ----------------------------------------------------------------------------------

#: Longest side, in pixels, of the read used for automatic min/max.
STRETCH_SAMPLE_PX = 256


def sample_grid(image: Image, region=None, max_px: int = STRETCH_SAMPLE_PX):
    """The image's grid over `region`, coarsened so its longer side has at most `max_px` pixels."""
    from ..core.region import grid_for

    grid = grid_for(image, region)
    f = min(1.0, max_px / max(grid.width, grid.height))
    return grid if f >= 1.0 else grid.scaled(f, f)


def sample_stretch(image: Image, band: str, region=None, percent=(2, 98)) -> tuple[float, float]:
    """(min, max) of `band` at the given percentiles of a sampled read over `region`."""
    from ..core.vis import stretch

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


# ---- region text ---------------------------------------------------------------------------------


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """'west, south, east, north' (commas and/or spaces) -> a validated lon/lat bbox."""
    from ..core.region import region_bounds

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


# ---- palette picker ------------------------------------------------------------------------------

#: Colormaps offered by the palette picker (all matplotlib names; any other name works in code).
PALETTES = [
    "viridis",
    "magma",
    "inferno",
    "cividis",
    "turbo",
    "YlGn",
    "Greens",
    "RdYlGn",
    "BrBG",
    "Spectral",
    "coolwarm",
    "Blues",
    "terrain",
    "gray",
]

_previews: dict[str, bytes] = {}
_previews_lock = threading.Lock()


def palette_preview(name: str, width: int = 160, height: int = 12) -> bytes:
    """PNG strip of a palette (cached)."""
    from ..core.vis import colormap_preview

    key = f"{name}:{width}x{height}"
    with _previews_lock:
        png = _previews.get(key)
    if png is None:
        png = colormap_preview(name, width, height)
        with _previews_lock:
            _previews[key] = png
    return png


class PalettePicker(widgets.VBox):
    """A colormap dropdown, a preview of the chosen one, and a gallery of all previews."""

    value = traitlets.Unicode("viridis")

    def __init__(self, value: str = "viridis", options: Sequence[str] = PALETTES, **kwargs):
        options = list(options)
        if value not in options:
            options.insert(0, value)
        self.dropdown = widgets.Dropdown(
            options=options, value=value, description="Palette", layout={"width": "220px"}
        )
        self.dropdown.add_class("emw-palette")
        self.preview = widgets.Image(
            value=palette_preview(value), format="png", layout={"width": "160px", "height": "12px"}
        )
        rows = "".join(
            f'<div style="display:flex;align-items:center;gap:6px;line-height:14px">'
            f'<img src="data:image/png;base64,{base64.b64encode(palette_preview(n, 120, 10)).decode()}" '
            f'style="width:120px;height:10px"/><span style="font-size:11px">{n}</span></div>'
            for n in options
        )
        self.gallery = widgets.Accordion(
            children=[widgets.HTML(rows)], titles=("All palettes",), selected_index=None
        )
        super().__init__(
            [widgets.HBox([self.dropdown, self.preview], layout={"align_items": "center"}), self.gallery],
            **kwargs,
        )
        self.value = value
        traitlets.link((self.dropdown, "value"), (self, "value"))
        self.observe(self._show, "value")

    def _show(self, change) -> None:
        self.preview.value = palette_preview(change["new"])

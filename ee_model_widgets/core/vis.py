"""Earth Engine visualisation parameters -> RGBA pixels -> PNG.

`render(masked, vis_params)` follows `Map.addLayer`'s visParams: `bands` (1 or 3), `min`,
`max` (scalar or per band), `palette` (colours or a matplotlib colormap name), `gamma`,
`opacity`, plus `categorical: True` to map class values to palette entries exactly.
Masked pixels are transparent. Colour parsing and colormaps come from matplotlib, PNG
encoding from Pillow.
"""

from __future__ import annotations

import io
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from ..errors import InputError

_HEX = re.compile(r"^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})$")
_KNOWN_KEYS = {"bands", "min", "max", "palette", "gamma", "opacity", "categorical"}


# ---- colours --------------------------------------------------------------------------------
def parse_color(color) -> tuple[float, float, float, float]:
    """A colour as RGBA floats in 0..1: "ff0000", "#ff0000", "f00", "red", (r, g, b[, a])."""
    from matplotlib.colors import to_rgba

    if isinstance(color, str):
        c = color.strip()
        m = _HEX.match(c)
        if m:
            h = m.group(1)
            if len(h) == 3:
                h = "".join(ch * 2 for ch in h)
            c = "#" + h
        try:
            return tuple(float(v) for v in to_rgba(c))
        except ValueError:
            pass
    elif isinstance(color, (list, tuple)) and len(color) in (3, 4):
        vals = [float(v) for v in color]
        if max(vals) > 1:  # 0..255 integers, as people often write them
            vals = [v / 255 for v in vals]
        if all(0 <= v <= 1 for v in vals):
            return tuple(vals + [1.0] * (4 - len(vals)))
    raise InputError(
        f"Unknown colour {color!r}: use hex like 'ff0000' or '#ff0000', a CSS colour name like 'red', "
        "or an (r, g, b) tuple."
    )


def _colormap(name: str):
    import matplotlib

    try:
        return matplotlib.colormaps[name]
    except KeyError:
        close = [n for n in matplotlib.colormaps if n.lower() == name.lower()]
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise InputError(
            f"Unknown palette {name!r}: give a list of colours (['ff0000', '00ff00']) or a matplotlib "
            f"colormap name such as 'viridis', 'magma', 'RdYlGn', 'gray'.{hint}"
        ) from None


@lru_cache(maxsize=64)
def _colormap_table(name: str, n: int = 256) -> np.ndarray:
    return np.asarray(_colormap(name)(np.linspace(0, 1, n)), dtype=np.float64)


def parse_palette(palette) -> np.ndarray:
    """(n, 4) RGBA floats from a colour list, a comma-separated string or a colormap name."""
    if isinstance(palette, str):
        p = palette.strip()
        if "," in p:
            palette = [c for c in (s.strip() for s in p.split(",")) if c]
        elif _HEX.match(p) and not _is_colormap(p):
            palette = [p]
        else:
            return _colormap_table(p)
    if isinstance(palette, np.ndarray):
        palette = palette.tolist()
    if not isinstance(palette, (list, tuple)) or not palette:
        raise InputError(f"palette {palette!r} must be a non-empty list of colours or a colormap name.")
    return np.asarray([parse_color(c) for c in palette], dtype=np.float64)


def _is_colormap(name: str) -> bool:
    import matplotlib

    return name in matplotlib.colormaps


# ---- parameters -------------------------------------------------------------------------------
def _per_band(value, n: int, what: str, default: float) -> np.ndarray:
    """A scalar or per-band vis param as `n` floats ("0,0,0" strings too, as EE accepts)."""
    if value is None:
        return np.full(n, default, dtype=np.float64)
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    try:
        vals = np.atleast_1d(np.asarray(value, dtype=np.float64)).ravel()
    except (TypeError, ValueError):
        raise InputError(
            f"vis param {what!r} must be a number or one number per band, got {value!r}."
        ) from None
    if vals.size == 1:
        vals = np.full(n, vals[0])
    if vals.size != n:
        raise InputError(
            f"vis param {what!r} has {vals.size} values for {n} displayed band(s): give 1 or {n}."
        )
    if not np.isfinite(vals).all():
        raise InputError(f"vis param {what!r} must be finite numbers, got {value!r}.")
    return vals


def _band_indices(n: int, vis: dict, band_names: Sequence[str] | None) -> list[int]:
    """Which of the `n` bands the vis params show (1 or 3 of them), by position."""
    bands = vis.get("bands")
    if isinstance(bands, str):
        bands = [b.strip() for b in bands.split(",")]
    has_palette = vis.get("palette") is not None or vis.get("categorical")
    if bands is not None:
        bands = list(bands)
        if len(bands) not in (1, 3):
            raise InputError(f"vis param 'bands' must name 1 or 3 bands (grey/palette or RGB), got {bands}.")
        if band_names is not None:
            names = list(band_names)
            unknown = [b for b in bands if b not in names]
            if unknown:
                raise InputError(f"vis param 'bands' names unknown band(s) {unknown}: the bands are {names}.")
            return [names.index(b) for b in bands]
        if n != len(bands):
            raise InputError(
                f"vis param 'bands' is {bands} but the array has {n} bands and no band_names: "
                "pass band_names= to render()."
            )
        return list(range(n))
    if has_palette:
        if n != 1:
            raise InputError(
                f"A palette colours a single band, but there are {n} bands"
                f"{' ' + str(list(band_names)) if band_names is not None else ''}: add 'bands': [name]."
            )
        return [0]
    # Earth Engine's default: one band as grey, else the first three as RGB.
    return [0] if n < 3 else [0, 1, 2]


def _validate(vis: dict) -> None:
    if not isinstance(vis, dict):
        raise InputError(
            f"vis_params must be a dict like {{'min': 0, 'max': 1, 'palette': 'viridis'}}, got {vis!r}."
        )
    unknown = set(vis) - _KNOWN_KEYS
    if unknown:
        raise InputError(f"Unknown vis param(s) {sorted(unknown)}: the known ones are {sorted(_KNOWN_KEYS)}.")


# ---- rendering ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class VisStyle:
    """Vis params compiled for an image's bands: everything needed to colour its values.

    The browser colours tiles from the same numbers (`browser_style`, js/colour.ts), so a
    restyle needs no kernel work and the map stays pixel-identical to `render`.
    """

    bands: tuple[int, ...]  # positions of the shown bands (1 or 3)
    kind: str  # "palette" (LUT ramp), "grey", "rgb" or "categorical"
    lo: tuple[float, ...] = ()
    hi: tuple[float, ...] = ()
    gamma: tuple[float, ...] = ()
    alpha: int = 255  # grey/rgb: opacity as a level of 255
    #: palette: (LUT_STEPS + 1, 4) uint8 ramp; categorical: (classes, 4) uint8 colours
    table: np.ndarray | None = field(default=None, compare=False)
    class_min: float = 0.0  # categorical list: the class value of the first colour
    class_values: tuple[float, ...] | None = None  # categorical dict: the class of each table row

    def colour(self, values: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """uint8 RGBA (rows, cols, 4) of the shown bands' float `values` (bands, rows, cols)."""
        if self.kind == "categorical":
            return self._colour_classes(values[0], mask)
        n = values.shape[0]
        lo, hi, gamma = (np.asarray(t, dtype=np.float64) for t in (self.lo, self.hi, self.gamma))
        # Stretch to 0..1, clip, then gamma: out = v ** (1 / gamma), as Earth Engine does. In the
        # values' own float type (float32 for predictions): float64 doubled the cost of a map tile.
        v = values.astype(values.dtype, copy=True)
        v -= lo.astype(v.dtype)[:, None, None]
        v *= (1.0 / (hi - lo)).astype(v.dtype)[:, None, None]
        v[:, mask] = 0.0  # masked/NaN pixels end transparent; 0 keeps the lookups below in range
        np.clip(v, 0.0, 1.0, out=v)
        for b in range(n):
            if gamma[b] != 1.0:
                # The power in float64, rounded back: what the browser's Math.pow does too.
                v[b] = (v[b].astype(np.float64) ** (1.0 / gamma[b])).astype(v.dtype)
        if self.kind == "palette":
            rgba = self.table[_lut_index(v[0])]
        else:
            grey = (np.rint(v * 255)).astype(np.uint8)
            rgb = np.moveaxis(grey if n == 3 else np.repeat(grey[:1], 3, axis=0), 0, -1)
            alpha = np.full(rgb.shape[:2] + (1,), self.alpha, np.uint8)
            rgba = np.concatenate([rgb, alpha], axis=-1)
        rgba[mask] = 0
        return rgba

    def _colour_classes(self, values: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Class value k -> its colour exactly; classes without a colour are transparent."""
        out = np.zeros(values.shape + (4,), dtype=np.uint8)
        classes = np.rint(np.nan_to_num(values, nan=-1e30))
        if self.class_values is not None:  # {class value: colour}
            for row, k in enumerate(self.class_values):
                out[classes == k] = self.table[row]
        else:
            idx = classes - self.class_min
            ok = (idx >= 0) & (idx < len(self.table))
            out[ok] = self.table[idx[ok].astype(np.int64)]
        out[mask] = 0
        return out

    def browser_style(self) -> dict:
        """The style as the browser's colouring (js/colour.ts) takes it; tables as raw bytes."""
        style = {
            "kind": self.kind,
            "bands": list(self.bands),
            "lo": list(self.lo),
            "hi": list(self.hi),
            "gamma": list(self.gamma),
            "alpha": self.alpha,
            "class_min": self.class_min,
            "class_values": None if self.class_values is None else list(self.class_values),
        }
        if self.table is not None:
            style["table"] = np.ascontiguousarray(self.table, dtype=np.uint8).tobytes()
        return style

    @classmethod
    def from_browser_style(cls, style: dict) -> VisStyle:
        """Back from `browser_style()` (a table as bytes or a buffer), e.g. for a headless view."""
        table = style.get("table")
        values = style.get("class_values")
        return cls(
            bands=tuple(style["bands"]),
            kind=style["kind"],
            lo=tuple(style["lo"]),
            hi=tuple(style["hi"]),
            gamma=tuple(style["gamma"]),
            alpha=int(style["alpha"]),
            table=None if table is None else np.frombuffer(bytes(table), dtype=np.uint8).reshape(-1, 4),
            class_min=float(style["class_min"]),
            class_values=None if values is None else tuple(float(v) for v in values),
        )


def vis_style(vis_params: dict | None, n_bands: int, band_names: Sequence[str] | None = None) -> VisStyle:
    """Compile EE vis params for an image of `n_bands` bands; raises InputError if they are invalid."""
    vis = dict(vis_params or {})
    _validate(vis)
    bands = tuple(_band_indices(n_bands, vis, band_names))
    n = len(bands)
    opacity = float(vis.get("opacity", 1.0))
    if not 0 <= opacity <= 1:
        raise InputError(f"vis param 'opacity' must be between 0 and 1, got {opacity}.")
    if vis.get("categorical"):
        return _categorical_style(bands, vis, opacity)
    lo = _per_band(vis.get("min"), n, "min", 0.0)
    hi = _per_band(vis.get("max"), n, "max", 1.0)
    if np.any(lo >= hi):
        raise InputError(f"vis param 'min' {lo.tolist()} must be below 'max' {hi.tolist()} for every band.")
    gamma = _per_band(vis.get("gamma"), n, "gamma", 1.0)
    if np.any(gamma <= 0):
        raise InputError(f"vis param 'gamma' must be positive, got {gamma.tolist()}.")
    palette = vis.get("palette")
    if palette is not None and n != 1:
        raise InputError(f"A palette colours a single band, got {n}: set 'bands' to one band.")
    common = dict(bands=bands, lo=tuple(lo.tolist()), hi=tuple(hi.tolist()), gamma=tuple(gamma.tolist()))
    if palette is not None:
        return VisStyle(kind="palette", table=_palette_lut(_palette_key(palette), opacity), **common)
    return VisStyle(kind="rgb" if n == 3 else "grey", alpha=round(255 * opacity), **common)


def _categorical_style(bands: tuple[int, ...], vis: dict, opacity: float) -> VisStyle:
    palette = vis.get("palette")
    if palette is None:
        raise InputError("categorical vis params need a 'palette' with one colour per class.")
    if isinstance(palette, dict):  # {class value: colour}; a later equal key wins, as assignment does
        by_value = {float(k): parse_color(c) for k, c in palette.items()}
        values, colours = (
            tuple(by_value),
            np.asarray(list(by_value.values()), dtype=np.float64).reshape(-1, 4),
        )
    else:
        values, colours = None, parse_palette(palette).copy()
    colours[:, 3] *= opacity
    table = np.rint(colours * 255).astype(np.uint8)
    return VisStyle(
        bands=bands,
        kind="categorical",
        table=table,
        class_min=float(vis.get("min", 0) or 0),
        class_values=values,
    )


def render(masked, vis_params: dict | None = None, band_names: Sequence[str] | None = None) -> np.ndarray:
    """uint8 RGBA (rows, cols, 4) of a (bands, rows, cols) (masked) array with EE visParams."""
    vis = dict(vis_params or {})
    _validate(vis)
    data = np.ma.asarray(masked)
    if data.dtype not in (np.float32, np.float64):
        data = data.astype(np.float64)
    data = np.ma.masked_invalid(data, copy=False)
    if data.ndim == 2:
        data = data[np.newaxis]
    if data.ndim != 3:
        raise InputError(f"render needs a (bands, rows, cols) or (rows, cols) array, got shape {data.shape}.")
    style = vis_style(vis, data.shape[0], band_names)
    data = data[list(style.bands)]
    return style.colour(np.ma.getdata(data), np.ma.getmaskarray(data).any(axis=0))


# A palette ramp is looked up in a table of LUT_STEPS + 1 colours instead of interpolated per
# pixel (4x faster per map tile). A power of two keeps 0, 1/2, 1/4... exact; elsewhere a colour
# may differ from exact interpolation by at most one level of 255 (tests/unit/test_vis.py).
LUT_STEPS = 4096


def _lut_index(v: np.ndarray) -> np.ndarray:
    """Nearest LUT entry for values in 0..1."""
    idx = v * v.dtype.type(LUT_STEPS)
    idx += v.dtype.type(0.5)
    return idx.astype(np.intp)


def _palette_key(palette):
    """A hashable form of a palette for the LUT cache: a name as is, colours as RGBA tuples."""
    if isinstance(palette, str):
        return palette
    return tuple(map(tuple, parse_palette(palette).tolist()))  # raises InputError if invalid


@lru_cache(maxsize=64)
def _palette_lut(palette_key, opacity: float) -> np.ndarray:
    """(LUT_STEPS + 1, 4) uint8 RGBA: the palette ramp sampled evenly over 0..1, alpha x opacity."""
    ramp = _ramp(np.linspace(0.0, 1.0, LUT_STEPS + 1), parse_palette(palette_key))
    ramp[:, 3] *= opacity
    lut = np.rint(ramp * 255).astype(np.uint8)
    lut.flags.writeable = False  # shared by every style that uses it
    return lut


def _ramp(v: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Colours evenly spaced over 0..1, linearly interpolated (EE's palette ramp)."""
    pos = v * (len(palette) - 1)
    xp = np.arange(len(palette))
    return np.stack([np.interp(pos, xp, palette[:, c]) for c in range(4)], axis=-1)


def stretch(masked, percent: tuple[float, float] = (2, 98)) -> tuple[list[float], list[float]]:
    """Per-band (mins, maxs) at the given percentiles of valid pixels: `{"min": mins, "max": maxs}`."""
    data = np.ma.masked_invalid(np.ma.asarray(masked, dtype=np.float64))
    if data.ndim == 2:
        data = data[np.newaxis]
    lo_p, hi_p = percent
    if not 0 <= lo_p < hi_p <= 100:
        raise InputError(f"stretch percent {percent} must be two increasing numbers in 0..100.")
    mins, maxs = [], []
    for band in data:
        valid = band.compressed()
        if valid.size == 0:
            mins.append(0.0)
            maxs.append(1.0)
            continue
        lo, hi = (float(v) for v in np.percentile(valid, [lo_p, hi_p]))
        if hi <= lo:  # a constant band still needs min < max
            hi = lo + 1.0
        mins.append(lo)
        maxs.append(hi)
    return mins, maxs


# ---- PNG ------------------------------------------------------------------------------------
def to_png(rgba: np.ndarray) -> bytes:
    """PNG bytes of a uint8 (rows, cols, 4) RGBA array."""
    from PIL import Image as PILImage

    rgba = np.asarray(rgba)
    if rgba.ndim != 3 or rgba.shape[2] != 4 or rgba.dtype != np.uint8:
        raise InputError(f"to_png needs uint8 (rows, cols, 4) RGBA, got {rgba.dtype} {rgba.shape}.")
    buf = io.BytesIO()
    PILImage.fromarray(np.ascontiguousarray(rgba), mode="RGBA").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _text_tile(text: str, title: str, fill, border, ink, size: int = 256) -> bytes:
    from PIL import Image as PILImage
    from PIL import ImageDraw, ImageFont

    img = PILImage.new("RGBA", (size, size), fill)
    draw = ImageDraw.Draw(img)
    draw.rectangle([1, 1, size - 2, size - 2], outline=border, width=3)
    try:
        font = ImageFont.load_default(size=14)
        title_font = ImageFont.load_default(size=16)
    except TypeError:  # Pillow without FreeType sizes
        font = title_font = ImageFont.load_default()
    y = 12
    if title:
        draw.text((12, y), title, fill=ink, font=title_font)
        y += 24
    lines: list[str] = []
    for para in str(text).splitlines() or [""]:
        lines.extend(textwrap.wrap(para, width=30, break_long_words=True) or [""])
    max_lines = (size - y - 10) // 17
    if len(lines) > max_lines:
        lines = lines[: max_lines - 1] + [lines[max_lines - 1][:27] + "..."]
    for line in lines:
        draw.text((12, y), line, fill=ink, font=font)
        y += 17
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def error_tile(text: str) -> bytes:
    """A 256x256 PNG tile that shows an error message (red frame, wrapped text)."""
    return _text_tile(text, "Error", (255, 235, 235, 230), (200, 30, 30, 255), (140, 0, 0, 255))


def message_tile(text: str) -> bytes:
    """A 256x256 PNG tile that shows a notice such as "zoom in" (grey frame, wrapped text)."""
    return _text_tile(text, "", (245, 245, 245, 210), (120, 120, 120, 255), (40, 40, 40, 255))


def colormap_preview(name, width: int = 256, height: int = 16) -> bytes:
    """PNG of a horizontal strip of a palette (colormap name or colour list), for legends."""
    ramp = _ramp(np.linspace(0, 1, width)[None, :].repeat(height, 0), parse_palette(name))
    return to_png(np.rint(ramp * 255).astype(np.uint8))

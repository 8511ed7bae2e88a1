"""Legends as PNGs drawn by matplotlib: a colorbar for continuous bands, swatches for classes.

Drawn with matplotlib's object API on an Agg canvas (no pyplot, no global figure state), so
legends can be made from any thread. The panel shows them on the map in a WidgetControl.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

from ..core.vis import parse_palette


def _figure(width_in: float, height_in: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=100)
    FigureCanvasAgg(fig)
    fig.patch.set_facecolor((1, 1, 1, 0.85))
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor=fig.get_facecolor(), bbox_inches="tight", pad_inches=0.04)
    return buf.getvalue()


def colorbar_png(vmin: float, vmax: float, palette, label: str = "", width_px: int = 280) -> bytes:
    """A horizontal colorbar from `vmin` to `vmax` in `palette` (colour list or colormap name)."""
    from matplotlib.colorbar import Colorbar
    from matplotlib.colors import ListedColormap, Normalize

    colours = parse_palette(palette if palette is not None else ["000000", "ffffff"])
    # EE's palette ramp interpolates linearly between the given colours: sample it finely.
    pos = np.linspace(0, len(colours) - 1, 256)
    ramp = np.stack([np.interp(pos, np.arange(len(colours)), colours[:, c]) for c in range(4)], axis=-1)
    fig = _figure(width_px / 100, 0.62 if label else 0.5)
    ax = fig.add_axes((0.05, 0.55 if label else 0.45, 0.9, 0.3))
    cb = Colorbar(ax, cmap=ListedColormap(ramp), norm=Normalize(vmin, vmax), orientation="horizontal")
    cb.ax.tick_params(labelsize=8, length=2, pad=1)
    cb.outline.set_linewidth(0.5)
    if label:
        ax.set_title(label, fontsize=8, pad=2)
    return _png(fig)


def class_legend_png(colours: Sequence, names: Sequence[str], title: str = "") -> bytes:
    """Colour swatches with class names, one row per class."""
    from matplotlib.patches import Patch

    rgba = parse_palette([tuple(float(v) for v in c) if not isinstance(c, str) else c for c in colours])
    n = len(names)
    fig = _figure(1.9, 0.22 * n + (0.3 if title else 0.1))
    handles = [Patch(facecolor=tuple(rgba[i]), edgecolor="0.3", linewidth=0.5) for i in range(n)]
    fig.legend(
        handles,
        [str(x) for x in names],
        loc="center left",
        frameon=False,
        fontsize=8,
        title=title or None,
        title_fontsize=8,
        handlelength=1.2,
        handleheight=0.9,
        borderaxespad=0.2,
        labelspacing=0.3,
    )
    return _png(fig)


def legend_png(vis_params: dict, label: str = "", class_names: Sequence[str] | None = None) -> bytes:
    """The legend that matches `vis_params`: classes if `categorical`, else a colorbar.

    Three-band (RGB) vis params have no single ramp: returns a colorbar-less title strip.
    """
    vis = dict(vis_params or {})
    if vis.get("categorical"):
        palette = vis.get("palette") or []
        if isinstance(palette, dict):
            keys = sorted(palette, key=float)
            colours = [tuple(parse_palette([palette[k]])[0]) for k in keys]
            values = [int(float(k)) for k in keys]
        else:
            colours = [tuple(c) for c in parse_palette(palette)]
            lo = int(vis.get("min", 0) or 0)
            values = list(range(lo, lo + len(colours)))
        names = [
            (class_names[v] if class_names is not None and 0 <= v < len(class_names) else f"class {v}")
            for v in values
        ]
        return class_legend_png(colours, names, title=label)
    bands = vis.get("bands")
    if bands is not None and not isinstance(bands, str) and len(bands) == 3:
        fig = _figure(2.8, 0.3)
        fig.text(0.5, 0.5, f"RGB: {', '.join(map(str, bands))}", ha="center", va="center", fontsize=8)
        return _png(fig)
    lo, hi = vis.get("min", 0.0), vis.get("max", 1.0)
    lo = float(lo[0] if isinstance(lo, (list, tuple)) else lo)
    hi = float(hi[0] if isinstance(hi, (list, tuple)) else hi)
    if not hi > lo:
        hi = lo + 1.0
    return colorbar_png(lo, hi, vis.get("palette"), label=label)

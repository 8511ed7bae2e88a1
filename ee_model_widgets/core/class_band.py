"""`ClassBandImage`: a prediction plus an argmax "class" band per vector output (EE's `arrayArgmax`).

Models that output class probabilities as a vector (EE's `arrayFlatten` names the bands
`prefix_0..K-1`) can then be shown with a class legend.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from .fingerprint import image_fingerprint
from .image import Image
from .plan import ReadPlan, plan_of_parents

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

    def _plan(self, grids, bands: list[str], resampling, max_cells) -> ReadPlan:
        parent = self._parent.plan(grids, self._parent_bands(bands), resampling, max_cells)
        return plan_of_parents(grids, bands, resampling, [parent])

    def _read_plan(self, plan: ReadPlan) -> list[np.ma.MaskedArray]:
        need = self._parent_bands(list(plan.bands))
        return [self._combine(p, need, list(plan.bands)) for p in self._parent.read_plan(plan.parents[0])]

    def fingerprint(self) -> str:
        return f"classes({image_fingerprint(self._parent)})"

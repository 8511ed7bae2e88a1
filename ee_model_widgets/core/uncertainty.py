"""`UncertaintyImage`: how unsure a classifier is, per pixel, from its class probabilities.

The place to label next (active learning) is where the model hesitates. Two measures, both
scaled to 0 (sure) .. 1 (no idea):
- "entropy": -sum(p log p) / log(classes), 1 when every class is equally likely;
- "margin": 1 - (p_best - p_second), 1 when the two likeliest classes tie.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InputError
from .fingerprint import image_fingerprint
from .grid import Grid
from .image import Image

METHODS = ("entropy", "margin")


def uncertainty(probs: np.ndarray, method: str = "entropy") -> np.ndarray:
    """(classes, ...) probabilities -> (...) uncertainty in 0..1."""
    p = np.clip(np.asarray(probs, np.float64), 0.0, 1.0)
    k = p.shape[0]
    if k < 2:
        return np.zeros(p.shape[1:], np.float32)
    if method == "entropy":
        with np.errstate(divide="ignore", invalid="ignore"):
            h = -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=0)
        return np.clip(h / np.log(k), 0.0, 1.0).astype(np.float32)
    if method == "margin":
        top = np.sort(p, axis=0)
        return np.clip(1.0 - (top[-1] - top[-2]), 0.0, 1.0).astype(np.float32)
    raise InputError(f"Unknown uncertainty method {method!r}: use one of {METHODS}.")


class UncertaintyImage(Image):
    """One band, "uncertainty", computed from `probabilities`' class bands on every read."""

    def __init__(self, probabilities: Image, class_bands: Sequence[str], method: str = "entropy"):
        if method not in METHODS:
            raise InputError(f"Unknown uncertainty method {method!r}: use one of {METHODS}.")
        missing = [b for b in class_bands if b not in probabilities.band_names]
        if missing:
            raise InputError(
                f"The image has no probability band(s) {missing}; it has {probabilities.band_names}."
            )
        self._parent = probabilities
        self._class_bands = list(class_bands)
        self.method = method
        self._band_names = ["uncertainty"]

    @property
    def grid(self) -> Grid:
        return self._parent.grid

    @property
    def projection(self):
        return self._parent.projection

    def fingerprint(self) -> str:
        """The probabilities' fingerprint, the bands and the method (for cache keys)."""
        return f"uncertainty:{self.method}({image_fingerprint(self._parent)})[{','.join(self._class_bands)}]"

    def _read(self, grid: Grid, bands: list[str], resampling) -> np.ma.MaskedArray:
        p = self._parent.read(grid, self._class_bands, resampling)
        mask = np.ma.getmaskarray(p).any(axis=0)
        u = uncertainty(np.ma.filled(p, 0.0), self.method)
        return np.ma.MaskedArray(u[np.newaxis], mask=mask[np.newaxis])

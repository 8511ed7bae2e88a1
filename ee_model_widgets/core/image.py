"""`Image`: a lazy, georeferenced stack of named bands with one read path.

Every image, whether a GeoTIFF, an in-memory array or a model's prediction, answers one
question: "give me these bands on this grid, masked" (`read`). Everything else
(`to_numpy`, `tile`, `export`, the map, the inspector) is built on that, so what the map
shows is exactly what an export writes.

CONTRACT (other modules rely on it; keep it stable):
- `read(grid, bands=None, resampling=None)` returns a `numpy.ma.MaskedArray` of shape
  (len(bands), grid.height, grid.width), dtype float32, with a full boolean mask
  (True = no data). Pixels outside the image are masked.
- `resampling` is None (each band's default: nearest for categorical bands, bilinear
  otherwise) or a `rasterio.enums.Resampling` (or its name) applied to every band.
- Subclasses implement `_read(grid, bands, resampling)`; `bands` is then a validated list.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InputError
from .grid import Grid, xyz_grid


class Image:
    """Base class of all images. Subclasses set `_band_names` and implement the hooks."""

    _band_names: list[str]
    #: Bands read with nearest-neighbour resampling by default (class labels, masks).
    categorical_bands: frozenset[str] = frozenset()

    # ---- what every image is ---------------------------------------------------------
    @property
    def band_names(self) -> list[str]:
        return list(self._band_names)

    @property
    def grid(self) -> Grid:
        """The image's native grid: its CRS, transform and full extent."""
        raise NotImplementedError

    @property
    def projection(self):
        """The native `Projection` (CRS + native pixel transform), like EE's `projection()`."""
        from .projection import Projection

        return Projection(self.grid.crs, self.grid.transform)

    # ---- the one read path ------------------------------------------------------------
    def read(self, grid: Grid, bands: Sequence[str] | None = None, resampling=None) -> np.ma.MaskedArray:
        """These bands on this grid: masked float32 (bands, rows, cols)."""
        names = self._check_bands(bands)
        out = self._read(grid, names, resampling)
        assert out.shape == (len(names), grid.height, grid.width), (out.shape, grid)
        return out

    def _read(self, grid: Grid, bands: list[str], resampling) -> np.ma.MaskedArray:
        raise NotImplementedError

    def _check_bands(self, bands: Sequence[str] | None) -> list[str]:
        if bands is None:
            return self.band_names
        if isinstance(bands, str):
            bands = [bands]
        unknown = [b for b in bands if b not in self._band_names]
        if unknown:
            raise InputError(f"Unknown band(s) {unknown}: this image has bands {self.band_names}.")
        return list(bands)

    # ---- conveniences built on read ---------------------------------------------------
    def tile(self, z: int, x: int, y: int) -> np.ma.MaskedArray:
        """Masked (bands, 256, 256) for slippy-map tile z/x/y in EPSG:3857."""
        return self.read(xyz_grid(z, x, y))

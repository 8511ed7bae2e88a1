"""`Image`: a lazy, georeferenced stack of named bands with one read path.

Every image, whether a GeoTIFF, an in-memory array or a model's prediction, answers one
question: "give me these bands on this grid, masked" (`read`). Everything else
(`to_numpy`, `tile`, `export`, the map, the inspector) is built on that, so what the map
shows is exactly what an export writes.

CONTRACT (other modules rely on it; keep it stable):
- `read(grid, bands=None, resampling=None)` returns a `numpy.ma.MaskedArray` of shape
  (len(bands), grid.height, grid.width), dtype float32, with a full boolean mask
  (True = no data). Pixels outside the image are masked.
- `resampling` is None (nearest neighbour, Earth Engine's default, unless the image is a
  `resample(...)` view) or a `rasterio.enums.Resampling` (or its name) applied to every band.
- Subclasses implement `_read(grid, bands, resampling)`; `bands` is then a validated list
  and `resampling` is None or a `Resampling` (names are resolved by `read`);
  `resolve_resampling(resampling)` gives the effective Resampling.
- Images are lazy and immutable; `select`/`rename`/`resample` return views that read
  through their parent. Reads may come from several threads at once.
- Window independence: a pixel's value and mask depend on the image, the grid's pixel
  lattice (CRS, pixel size, phase), the pixel, the band and the resampling, never on the
  window it is read in. A big read and any sub-window of it agree bit for bit, so map
  tiles read one by one or in batches, `to_numpy` and exports show the same pixels.
  Raster images get this by warping fixed blocks of the target lattice
  (`core/raster.py`); every subclass must keep it.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from types import MappingProxyType

import numpy as np
from rasterio.enums import Resampling

from ..errors import InputError, RegionError
from .fingerprint import image_fingerprint
from .grid import Grid, xyz_grid
from .plan import ReadPlan, plan_of_parents
from .projection import Projection
from .region import grid_for, lonlat_bounds, point_grid, point_in_image
from .resampling import resolve_resampling

#: Largest grid `to_numpy` returns by default (pixels per band); exports stream instead.
MAX_PIXELS = 100_000_000


def empty_read(nbands: int, grid: Grid) -> np.ma.MaskedArray:
    """An all-masked read result (for reads that miss the image entirely)."""
    shape = (nbands, grid.height, grid.width)
    return np.ma.MaskedArray(np.zeros(shape, np.float32), mask=np.ones(shape, bool))


class Image:
    """Base class of all images. Subclasses set `_band_names` and implement the hooks.

    Written elsewhere, added to this class by `@extends(Image)` when `ee_model_widgets.core` is
    imported: the constructors and outputs (`open`, `from_array`, `from_xarray`, `export`,
    `to_xarray`: core/image_io.py) and Earth Engine's band math (`add`, `gt`, `update_mask`,
    `expression`, operators...: core/band_math.py).
    """

    _band_names: list[str]
    #: Class labels and masks: their zoomed-out levels pick pixels instead of averaging them
    #: (Earth Engine's SAMPLE pyramiding policy; other bands get MEAN, EE's default).
    categorical_bands: frozenset[str] = frozenset()
    #: Storage dtype of the bands whose source has one (files, arrays); reads are float32
    #: whatever it is. Exports use it (e.g. uint8 bands go to TFRecord as bytes, as in EE).
    band_types: Mapping[str, np.dtype] = MappingProxyType({})

    # ---- what every image is ---------------------------------------------------------
    @property
    def band_names(self) -> list[str]:
        return list(self._band_names)

    @property
    def grid(self) -> Grid:
        """The image's native grid: its CRS, transform and full extent."""
        raise NotImplementedError

    @property
    def projection(self) -> Projection:
        """The native `Projection` (CRS + native pixel transform), like EE's `projection()`."""
        return Projection(self.grid.crs, self.grid.transform)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) of the full extent, in lon/lat degrees."""
        return lonlat_bounds(self.grid)

    def __repr__(self) -> str:
        g = self.grid
        return f"<{type(self).__name__} bands={self.band_names} {g.width}x{g.height} px {g.crs.to_string()}>"

    # ---- the one read path ------------------------------------------------------------
    def read(self, grid: Grid, bands: Sequence[str] | None = None, resampling=None) -> np.ma.MaskedArray:
        """These bands on this grid: masked float32 (bands, rows, cols)."""
        names = self._check_bands(bands)
        if resampling is not None:
            resampling = resolve_resampling(resampling)
        out = self._read(grid, names, resampling)
        assert out.shape == (len(names), grid.height, grid.width), (out.shape, grid)
        return out

    def _read(self, grid: Grid, bands: list[str], resampling) -> np.ma.MaskedArray:
        raise NotImplementedError

    # ---- planned reads: a batch of grids, planned once -----------------------------------
    def plan(
        self,
        grids: Sequence[Grid],
        bands: Sequence[str] | None = None,
        resampling=None,
        max_cells: int | None = None,
    ) -> ReadPlan:
        """What reading `bands` of `grids` needs (model cells, refusals), without I/O; read it
        with `read_plan`. `max_cells`: a tighter cell budget per grid where zooming out multiplies
        the work (a map tile of a fixInputProj model); see `PredictedImage`."""
        names = self._check_bands(bands)
        if resampling is not None:
            resampling = resolve_resampling(resampling)
        return self._plan(list(grids), names, resampling, max_cells)

    def _plan(self, grids: list[Grid], bands: list[str], resampling, max_cells: int | None) -> ReadPlan:
        n = len(grids)
        return ReadPlan(tuple(grids), tuple(bands), resampling, (0,) * n, (None,) * n)

    def read_plan(self, plan: ReadPlan) -> list[np.ma.MaskedArray]:
        """Read a plan made by `plan`: one array per grid (raises its `TooManyCells` if it has one)."""
        plan.check()
        out = self._read_plan(plan)
        for g, a in zip(plan.grids, out):
            assert a.shape == (len(plan.bands), g.height, g.width), (a.shape, g)
        return out

    def _read_plan(self, plan: ReadPlan) -> list[np.ma.MaskedArray]:
        return [self._read(g, list(plan.bands), plan.resampling) for g in plan.grids]

    def read_many(self, grids: Sequence[Grid], bands=None, resampling=None) -> list[np.ma.MaskedArray]:
        """Several grids in one planned pass (a prediction: one batched model call for all of them)."""
        return self.read_plan(self.plan(grids, bands, resampling))

    def cell_count(self, grid: Grid) -> int:
        """How many model cells reading `grid` needs (cached or not); no I/O."""
        return self.plan([grid]).cells[0]

    def _check_bands(self, bands: Sequence[str] | None) -> list[str]:
        if bands is None:
            return self.band_names
        if isinstance(bands, str):
            bands = [bands]
        unknown = [b for b in bands if b not in self._band_names]
        if unknown:
            raise InputError(f"Unknown band(s) {unknown}: this image has bands {self.band_names}.")
        return list(bands)

    # ---- band algebra (lazy views) -----------------------------------------------------
    def select(self, *selectors) -> Image:
        """A lazy image with some bands, like EE's `select`: names, regular expressions
        (matching whole names) or 0-based indices, as arguments or a list; a second list
        renames them: `img.select(["B4", "B8"], ["red", "nir"])`, `img.select("B.*")`."""
        new_names = None
        if len(selectors) == 2 and all(isinstance(s, (list, tuple)) for s in selectors):
            selectors, new_names = selectors
        elif len(selectors) == 1 and not isinstance(selectors[0], (str, int, np.integer)):
            selectors = selectors[0]
        return _select_bands(self, list(selectors), new_names)

    def rename(self, names: Sequence[str], *more: str) -> Image:
        """The same bands under new names (one per band, unique): a list, or names as arguments."""
        if isinstance(names, str):
            names = [names, *more]
        names = [str(n) for n in names]
        if len(names) != len(self._band_names):
            raise InputError(
                f"rename() got {len(names)} names {names} for {len(self._band_names)} bands {self.band_names}."
            )
        if len(set(names)) != len(names):
            raise InputError(f"rename() got duplicate band names {names}: band names must be unique.")
        return _BandView(self, names, self.band_names)

    def resample(self, mode: str = "bilinear") -> Image:
        """This image, read with `mode` wherever it is reprojected or zoomed in, instead of
        nearest neighbour: Earth Engine's `ee.Image.resample` ("bilinear" or "bicubic"; any
        GDAL warp resampling name is accepted too). Call it on the input, before band math
        or a model, as in Earth Engine; a read that names a resampling still uses that one."""
        resampling = resolve_resampling(_EE_RESAMPLE_MODES.get(mode, mode))
        return _ResampledView(self, resampling)

    # ---- conveniences built on read ---------------------------------------------------
    def tile(self, z: int, x: int, y: int) -> np.ma.MaskedArray:
        """Masked (bands, 256, 256) for slippy-map tile z/x/y in EPSG:3857."""
        return self.read(xyz_grid(z, x, y))

    def to_numpy(
        self, region=None, proj=None, resampling=None, max_pixels: int | None = MAX_PIXELS
    ) -> np.ma.MaskedArray:
        """Masked float32 (bands, rows, cols) covering `region` on `proj`'s lattice.

        `region`: None (full extent), a (west, south, east, north) lon/lat tuple or GeoJSON;
        `proj`: None (native grid) or a `Projection`. Use `export` for very large outputs.
        """
        grid = grid_for(self, region, proj)
        if max_pixels is not None and grid.width * grid.height > max_pixels:
            raise InputError(
                f"to_numpy would return {grid.width}x{grid.height} = {grid.width * grid.height:,} pixels "
                f"per band (limit max_pixels={max_pixels:,}): pass a smaller region, a coarser "
                "proj (Projection(...).at_scale(metres)), raise max_pixels, or use export() which streams."
            )
        return self.read(grid, resampling=resampling)

    def sample(self, lon: float, lat: float, proj=None) -> dict[str, float | None]:
        """Band values of the pixel containing (lon, lat) at native scale (None if masked).

        A point off the image reads None in every band too, and says so in a warning.
        """
        grid = point_grid(self, lon, lat, proj)
        values = self.read(grid, resampling=Resampling.nearest)
        out = {
            name: (None if values.mask[i, 0, 0] else float(values.data[i, 0, 0]))
            for i, name in enumerate(self._band_names)
        }
        if all(v is None for v in out.values()) and not point_in_image(self, lon, lat):
            try:
                swapped = point_in_image(self, lat, lon)
            except RegionError:  # lon is no latitude
                swapped = False
            hint = " It is inside read as (lat, lon): give (lon, lat), lon first." if swapped else ""
            warnings.warn(
                f"Point ({lon}, {lat}) is outside the image, which covers {self.bounds} (lon/lat): "
                f"every band reads None.{hint}",
                stacklevel=2,
            )
        return out


class ParentView(Image):
    """An image computed pixel by pixel from one parent image (`_parent`), on the parent's grid
    and projection: band views, class bands, uncertainty."""

    _parent: Image

    @property
    def grid(self) -> Grid:
        return self._parent.grid

    @property
    def projection(self):
        return self._parent.projection


class _BandView(ParentView):
    """Another image's bands, picked and/or renamed: band `names[i]` reads parent band
    `parent_names[i]` (`select` passes the same list twice, `rename` the new names)."""

    def __init__(self, parent: Image, names: list[str], parent_names: list[str]):
        self._parent = parent
        self._band_names = list(names)
        self._to_parent = dict(zip(names, parent_names))
        self.categorical_bands = frozenset(
            n for n, p in self._to_parent.items() if p in parent.categorical_bands
        )
        self.band_types = {
            n: parent.band_types[p] for n, p in self._to_parent.items() if p in parent.band_types
        }

    def fingerprint(self) -> str:
        """The parent's fingerprint and the band mapping (for cell-cache keys)."""
        pairs = ",".join(f"{n}<-{self._to_parent[n]}" for n in self._band_names)
        return f"bands({image_fingerprint(self._parent)})[{pairs}]|{sorted(self.categorical_bands)}"

    def _read(self, grid: Grid, bands: list[str], resampling) -> np.ma.MaskedArray:
        return self._parent.read(grid, [self._to_parent[b] for b in bands], resampling)

    def _plan(self, grids: list[Grid], bands: list[str], resampling, max_cells: int | None) -> ReadPlan:
        parent = self._parent.plan(grids, [self._to_parent[b] for b in bands], resampling, max_cells)
        return plan_of_parents(grids, bands, resampling, [parent])

    def _read_plan(self, plan: ReadPlan) -> list[np.ma.MaskedArray]:
        """One planned pass of the parent (a prediction: one batched model call for all the grids,
        e.g. a map viewport of `pred.select(...)`)."""
        return self._parent.read_plan(plan.parents[0])


#: `ee.Image.resample`'s mode names that GDAL spells differently.
_EE_RESAMPLE_MODES = {"bicubic": "cubic"}


class _ResampledView(ParentView):
    """The parent image with another default resampling (`Image.resample`)."""

    def __init__(self, parent: Image, resampling: Resampling):
        self._parent = parent
        self._resampling = resampling
        self._band_names = parent.band_names
        self.categorical_bands = parent.categorical_bands
        self.band_types = parent.band_types

    def fingerprint(self) -> str:
        """The parent's fingerprint and the resampling (cells of a model reading it differ)."""
        return f"resample:{self._resampling.name}({image_fingerprint(self._parent)})"

    def _read(self, grid: Grid, bands: list[str], resampling) -> np.ma.MaskedArray:
        return self._parent.read(grid, bands, self._resampling if resampling is None else resampling)

    def _plan(self, grids: list[Grid], bands: list[str], resampling, max_cells: int | None) -> ReadPlan:
        parent = self._parent.plan(
            grids, bands, self._resampling if resampling is None else resampling, max_cells
        )
        return plan_of_parents(grids, bands, resampling, [parent])

    def _read_plan(self, plan: ReadPlan) -> list[np.ma.MaskedArray]:
        return self._parent.read_plan(plan.parents[0])


def extends(target: type):
    """Class decorator: add the decorated class's methods to `target` (here always `Image`).

    `Image`'s band math and its constructors and outputs build subclasses of `Image` or use
    modules that sit above it (files, exports, xarray). They are written in those modules as
    `@extends(Image) class ...:` and added when `ee_model_widgets.core` is imported (its
    `__init__` imports them), so every module imports only modules below it.
    """

    def add(cls: type) -> type:
        for name, value in vars(cls).items():
            if not (callable(value) or isinstance(value, (classmethod, staticmethod, property))):
                continue  # class bookkeeping (__module__, __doc__, __dict__...)
            if name in vars(target):
                raise TypeError(f"{cls.__name__}.{name} would replace {target.__name__}.{name}.")
            setattr(target, name, value)
        return cls

    return add


def _select_bands(image: Image, selectors: Sequence, new_names: Sequence[str] | None = None) -> Image:
    """Bands picked by names, regular expressions (whole-name match) or 0-based indices, in
    selector order (EE's select); `new_names` renames them."""
    have = image.band_names
    picked: list[str] = []
    for s in selectors:
        if isinstance(s, (int, np.integer)) and not isinstance(s, bool):
            if not -len(have) <= s < len(have):
                raise InputError(f"Band index {s} is out of range: this image has {len(have)} bands {have}.")
            found = [have[s]]
        elif isinstance(s, str):
            if s in have:
                found = [s]
            else:
                try:
                    rx = re.compile(s)
                except re.error:
                    rx = None
                found = [b for b in have if rx is not None and rx.fullmatch(b)]
            if not found:
                raise InputError(
                    f"Unknown band(s) [{s!r}]: no band is named or matches it; this image has bands {have}."
                )
        else:
            raise InputError(f"select takes band names, regular expressions or indices, got {s!r}.")
        picked.extend(found)
    if not picked:
        raise InputError(f"select() needs at least one band; this image has bands {have}.")
    if len(set(picked)) != len(picked):
        raise InputError(f"select() picked band(s) twice: {picked}; each band can be selected once.")
    names = picked if new_names is None else [str(n) for n in new_names]
    if len(names) != len(picked):
        raise InputError(f"select() got {len(names)} new names {names} for the {len(picked)} bands {picked}.")
    if len(set(names)) != len(names):
        raise InputError(f"select() got duplicate band names {names}: band names must be unique.")
    return _BandView(image, names, picked)

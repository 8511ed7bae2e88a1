"""`Image.from_xarray`: DataArrays as images; lazy (dask-backed or file-backed) ones are read window by window.

A lazy DataArray is never computed whole: a read asks xarray for the window it needs
(`isel` + `.values`), so dask computes only the chunks under it. Reads that warp use the
same window-independent block warping as files (`core/raster.py`); zoomed-out reads
decimate the full-resolution pixels under each block strip by strip, like a file without
overviews. What cannot be windowed lazily is refused up front with the way out:
extra dimensions (time, ...), coordinates that are not a regular grid, unknown chunk sizes.
"""

from __future__ import annotations

import uuid

import numpy as np
from affine import Affine
from rasterio.windows import Window

from ..errors import InputError, ProjectionError
from .grid import Grid, as_crs, as_transform, lattice_offset
from .image import Image, empty_read
from .raster import (
    _STRIP_PIXELS,
    ArrayImage,
    _band_names,
    _categorical,
    _Level,
    _RasterImage,
)
from .warp import _decimate, _decimated_grid, _pyramid_level, slice_lattice

# Names xarray data commonly uses for the horizontal axes.
_Y = ("y", "lat", "latitude", "northing", "rows")
_X = ("x", "lon", "longitude", "easting", "cols")


def is_lazy(da) -> bool:
    """True if reading `da.values` would compute or load it (dask, or a lazily indexed file)."""
    if getattr(da, "chunks", None) is not None:
        return True
    variable = getattr(da, "variable", None)
    return variable is not None and not getattr(variable, "_in_memory", True)


def as_dataarray(obj):
    """A DataArray from a DataArray or a Dataset (its data variables become bands), lazily."""
    import xarray as xr

    if isinstance(obj, xr.Dataset):
        names = list(obj.data_vars)
        if not names:
            raise InputError("from_xarray got a Dataset without data variables.")
        dims = {tuple(obj[n].dims) for n in names}
        if len(dims) != 1:
            raise InputError(
                f"from_xarray: the Dataset's variables have different dimensions {sorted(dims)}; pick one "
                "variable (ds['name']) or variables sharing (y, x): ds[['a', 'b']]."
            )
        da = obj.to_dataarray(dim="band") if hasattr(obj, "to_dataarray") else obj.to_array(dim="band")
        da.attrs.update(obj.attrs)
        return da.assign_coords(band=names)
    if not isinstance(obj, xr.DataArray):
        raise InputError(f"from_xarray takes an xarray DataArray or Dataset, got {type(obj).__name__}.")
    return obj


def normalise_dims(da):
    """(band, y, x) or (y, x) order, lazily transposed; extra dimensions are refused."""
    dims = list(da.dims)
    ydim = next((d for d in dims if str(d).lower() in _Y), None)
    xdim = next((d for d in dims if str(d).lower() in _X), None)
    if ydim is None or xdim is None:
        if len(dims) not in (2, 3):
            raise InputError(f"from_xarray needs dims (band, y, x) or (y, x), got {tuple(dims)}.")
        ydim, xdim = dims[-2], dims[-1]
    rest = [d for d in dims if d not in (ydim, xdim)]
    if len(rest) > 1:
        extra = {d: int(da.sizes[d]) for d in rest}
        raise InputError(
            f"from_xarray: this DataArray has dimensions {extra} besides ({ydim}, {xdim}); an image has one band "
            f"axis. Pick a slice first (e.g. da.isel({rest[0]}=0)) or reduce one (da.mean('{rest[0]}'))."
        )
    for d in (ydim, xdim):
        coord = da.coords.get(d)
        if coord is not None and coord.ndim != 1:
            raise InputError(
                f"from_xarray: coordinate {d!r} is {coord.ndim}-D (a curvilinear grid), which has no affine "
                "transform: reproject it onto a regular grid first (e.g. with rioxarray's reproject)."
            )
    return da.transpose(*rest, ydim, xdim)


def check_regular(da) -> None:
    """Refuse coordinates that are not evenly spaced (no affine transform describes them)."""
    for dim in (da.dims[-1], da.dims[-2]):
        if dim not in da.coords:
            continue
        c = np.asarray(da.coords[dim].values, dtype=float)
        if len(c) < 3:
            continue
        step = np.diff(c)
        if not np.allclose(step, step[0], rtol=1e-6, atol=abs(step[0]) * 1e-6):
            raise InputError(
                f"from_xarray: the {dim!r} coordinates are not evenly spaced (steps from {step.min():g} "
                f"to {step.max():g}), so no pixel grid describes them: resample onto a regular grid first "
                "(da.interp or rioxarray's reproject)."
            )


class XarrayImage(_RasterImage):
    """A lazy (band, y, x) DataArray as an image; reads compute only the windows they need."""

    def __init__(self, da, transform, crs, band_names=None, nodata=None, categorical=None):
        if da.ndim == 2:
            da = da.expand_dims("band")
        if any(not isinstance(s, int) or s <= 0 for s in da.shape):
            raise InputError(
                f"from_xarray: the array's shape {da.shape} is unknown or empty; with dask, call "
                "da.compute_chunk_sizes() / give the chunks explicitly first."
            )
        if not (np.issubdtype(da.dtype, np.number) or da.dtype == bool) or np.issubdtype(
            da.dtype, np.complexfloating
        ):
            raise InputError(f"from_xarray needs real numbers, got dtype {da.dtype}.")
        n, h, w = (int(s) for s in da.shape)
        self._da = da
        self._nodata = nodata
        self._grid = Grid(as_crs(crs), as_transform(transform), w, h)
        self._token = uuid.uuid4().hex
        self._band_names = _band_names(band_names, n, [f"B{i + 1}" for i in range(n)], "The DataArray")
        self.categorical_bands = _categorical(categorical, self._band_names)
        self.band_types = dict.fromkeys(self._band_names, np.dtype(da.dtype))

    def __repr__(self) -> str:
        g = self._grid
        return f"<XarrayImage (lazy) bands={self.band_names} {g.width}x{g.height} px {g.crs.to_string()}>"

    def _window(self, bands: list[int], r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """float32 (bands, rows, cols), NaN where no data: only this window is computed."""
        part = self._da.isel(
            {self._da.dims[0]: bands, self._da.dims[1]: slice(r0, r1), self._da.dims[2]: slice(c0, c1)}
        )
        raw = np.asarray(part.values)
        values = raw.astype(np.float32, copy=True)
        bad = ~np.isfinite(values)
        if self._nodata is not None and not (isinstance(self._nodata, float) and np.isnan(self._nodata)):
            bad |= raw == self._nodata
        values[bad] = np.nan
        return values

    def _read(self, grid: Grid, bands: list[str], resampling) -> np.ma.MaskedArray:
        idx = [self._band_names.index(b) for b in bands]
        off = lattice_offset(self._grid.transform, self._grid.crs, grid)
        if off is not None:
            col, row = off
            c0, r0 = max(col, 0), max(row, 0)
            c1, r1 = min(col + grid.width, self._grid.width), min(row + grid.height, self._grid.height)
            if c1 <= c0 or r1 <= r0:
                return empty_read(len(idx), grid)
            return slice_lattice(self._window(idx, r0, r1, c0, c1), col - c0, row - r0, grid)
        return self._warped_read(grid, idx, bands, resampling)

    def _pick_level(self, limit: float, picking: bool) -> _Level:
        k = _pyramid_level(limit, max(self._grid.width, self._grid.height))
        if k == 0:
            return _Level(("full",), self._grid)
        return _Level(("decimated", picking, k), _decimated_grid(self._grid, k))

    def _level_window(self, level: _Level, bands: list[int], window: Window) -> np.ndarray:
        c0, r0 = int(window.col_off), int(window.row_off)
        c1, r1 = c0 + int(window.width), r0 + int(window.height)
        if level.key == ("full",):
            return self._window(bands, r0, r1, c0, c1)
        _, picking, k = level.key
        f, g = 2**k, self._grid
        # The full-resolution pixels under the window, read in strips of whole 2**k blocks so
        # memory stays bounded; each strip decimates exactly as the whole would.
        fc0, fc1 = c0 * f, min(c1 * f, g.width)
        fr0, fr1 = r0 * f, min(r1 * f, g.height)
        step = max(f, _STRIP_PIXELS // max(fc1 - fc0, 1) // f * f)
        strips = [
            _decimate(self._window(bands, r, min(r + step, fr1), fc0, fc1), k, picking)
            for r in range(fr0, fr1, step)
        ]
        return np.concatenate(strips, axis=1)


# ---- the constructor ---------------------------------------------------------------------------------
def _has_written_transform(da) -> bool:
    """Whether the DataArray carries an explicit transform (rioxarray's `write_transform`)."""
    ref = da.coords["spatial_ref"].attrs if "spatial_ref" in da.coords else {}
    return bool(ref.get("GeoTransform"))


def image_from_xarray(da, band_names=None, categorical=None) -> Image:
    """An image from a rioxarray-style DataArray (dims (band,) y, x; CRS via .rio or attrs) or a
    Dataset (variables as bands): an `ArrayImage` copy of in-memory data, a lazy `XarrayImage`
    of dask-backed or file-backed data."""
    da = normalise_dims(as_dataarray(da))
    dims = tuple(da.dims)
    if len(dims) not in (2, 3):
        raise InputError(f"from_xarray needs dims (band, y, x) or (y, x), got {dims}.")
    crs = transform = nodata = None
    if hasattr(da, "rio"):  # rioxarray installed and registered its accessor
        crs, transform, nodata = da.rio.crs, da.rio.transform(), da.rio.nodata
        if transform == Affine.identity() and not _has_written_transform(da):
            # rioxarray's answer when it cannot tell (spatial dims it does not know, such as
            # lat/lon, no coordinates, a single row or column): not a georeferencing.
            transform = None
    if crs is None:
        ref = da.coords["spatial_ref"].attrs if "spatial_ref" in da.coords else {}
        crs = da.attrs.get("crs") or ref.get("crs_wkt") or ref.get("spatial_ref")
    if crs is None:
        raise ProjectionError(
            "This DataArray has no CRS: set one with rioxarray (da.rio.write_crs('EPSG:xxxx')) "
            "or give it a 'crs' attribute."
        )
    ydim, xdim = dims[-2], dims[-1]
    if transform is None:
        missing = [d for d in (xdim, ydim) if d not in da.coords]
        if missing:
            raise InputError(
                f"from_xarray: the DataArray has no {' or '.join(repr(d) for d in missing)} coordinates, so "
                "where its pixels are is unknown: assign the pixel-centre coordinates "
                "(da.assign_coords(x=..., y=...)) or write a transform (da.rio.write_transform(affine))."
            )
        x = np.asarray(da.coords[xdim], dtype=float)
        y = np.asarray(da.coords[ydim], dtype=float)
        if len(x) < 2 or len(y) < 2:
            raise InputError(
                f"from_xarray: a {len(y)}x{len(x)} px DataArray's coordinates do not give the pixel size: "
                "write its transform with rioxarray (da.rio.write_transform(affine)) or select at least "
                "2 pixels along each axis."
            )
        dx, dy = (x[-1] - x[0]) / (len(x) - 1), (y[-1] - y[0]) / (len(y) - 1)
        # Coordinates are pixel centres: the transform starts half a pixel before.
        transform = Affine(dx, 0, x[0] - dx / 2, 0, dy, y[0] - dy / 2)
    if nodata is None:
        nodata = da.attrs.get("_FillValue", da.attrs.get("nodata"))
    if band_names is None and len(dims) == 3:
        coord = da.coords.get(dims[0])
        values = [] if coord is None else [str(v) for v in np.asarray(coord).tolist()]
        long_names = da.attrs.get("long_name")
        if isinstance(long_names, (list, tuple)) and len(long_names) == da.shape[0]:
            band_names = [str(v) for v in long_names]
        elif values and not all(v.lstrip("-").isdigit() for v in values):
            band_names = values
    check_regular(da)
    if is_lazy(da):
        return XarrayImage(
            da, transform=transform, crs=crs, band_names=band_names, nodata=nodata, categorical=categorical
        )
    return ArrayImage(
        np.asarray(da.values),
        transform=transform,
        crs=crs,
        band_names=band_names,
        nodata=nodata,
        categorical=categorical,
    )

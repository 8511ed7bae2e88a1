"""`to_xarray`: any `Image` as a lazy, dask-backed `xarray.DataArray` (band, y, x).

Nothing is read until a chunk is computed; computing a chunk reads that window through the
image's one read path, so for a prediction it runs the model once on the cells under the
chunk (chunks default to whole cells, see `core/chunks.py`). The array works with any dask
scheduler: on a `distributed.Client` the image travels to each worker once (`portable`).

The georeferencing is written the CF / rioxarray way (a `spatial_ref` coordinate with
`crs_wkt` and `GeoTransform`), so `da.rio.crs` and `da.rio.transform()` read it without
rioxarray being needed here; a rotated lattice gets 2-D "xc"/"yc" pixel centres instead of
1-D x/y, as rioxarray reads a rotated file. Masked pixels are NaN (float32).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .chunks import chunk_edges
from .grid import Grid


def read_chunk(portable, grid: Grid, col: int, row: int, width: int, height: int, resampling) -> np.ndarray:
    """One chunk as float32 (bands, rows, cols), NaN where masked (a task of arrays and exports)."""
    image = portable.obj if hasattr(portable, "obj") else portable
    view = isolated(image)
    block = view.read(grid.window(col, row, width, height), resampling=resampling)
    return block.filled(np.nan).astype(np.float32, copy=False)


def isolated(image):
    """A view of `image` whose new cells live and die with one chunk (no shared cache).

    A chunk then computes exactly its own cells in one batch whatever ran before it, so its
    values do not depend on which process or thread ran which chunk first.
    """
    streaming = getattr(image, "streaming", None)
    if not callable(streaming):
        return image
    view = streaming()
    view.cache = None
    return view


def _dask():
    try:
        import dask.array as da
        import xarray as xr
    except ImportError:
        raise InputError(
            "to_xarray needs xarray and dask: pip install 'ee_model_widgets[cluster]' "
            "(or pip install xarray 'dask[array]')."
        ) from None
    return da, xr


def to_xarray(image, region=None, proj=None, chunks=None, resampling=None, name: str | None = None):
    """`image` over `region` on `proj`'s lattice as a lazy `xarray.DataArray` (band, y, x)."""
    da, xr = _dask()
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    from .fingerprint import image_fingerprint
    from .portable import Portable
    from .region import grid_for
    from .resampling import resolve_resampling

    if resampling is not None:
        resampling = resolve_resampling(resampling)
    grid = grid_for(image, region, proj)
    cols, rows = chunk_edges(image, grid, chunks)
    bands = image.band_names
    portable = Portable(image)
    # Named by the image's identity (cheap), not its pickle: nothing is serialised until a
    # distributed scheduler needs it.
    ident = image_fingerprint(image)
    token = tokenize(
        ident, grid.crs.to_wkt(), tuple(grid.transform), grid.width, grid.height, cols, rows, resampling
    )
    label = f"emw-read-{token}"
    source_key = f"emw-image-{token}"
    # The image is one key of the graph: each worker fetches it once, not once per chunk.
    layer: dict = {source_key: portable}
    for j, (r0, r1) in enumerate(zip(rows, rows[1:])):
        for i, (c0, c1) in enumerate(zip(cols, cols[1:])):
            layer[(label, 0, j, i)] = (read_chunk, source_key, grid, c0, r0, c1 - c0, r1 - r0, resampling)
    graph = HighLevelGraph.from_collections(label, layer, dependencies=())
    chunk_sizes = ((len(bands),), tuple(np.diff(rows)), tuple(np.diff(cols)))
    data = da.Array(graph, label, chunk_sizes, dtype=np.float32)
    t = grid.transform
    if t.b == 0 and t.d == 0:
        x = t.c + t.a * (np.arange(grid.width) + 0.5)
        y = t.f + t.e * (np.arange(grid.height) + 0.5)
        xy = {"y": y, "x": x}
    else:
        # A rotated lattice: 1-D x/y would place every pixel wrongly. Pixel centres as 2-D
        # (lazy) "xc"/"yc", as rioxarray gives a rotated file; the transform is in spatial_ref.
        cc = da.arange(grid.width, chunks=(tuple(np.diff(cols)),))[None, :] + 0.5
        rc = da.arange(grid.height, chunks=(tuple(np.diff(rows)),))[:, None] + 0.5
        xy = {"xc": (("y", "x"), t.c + t.a * cc + t.b * rc), "yc": (("y", "x"), t.f + t.d * cc + t.e * rc)}
    spatial_ref = xr.DataArray(
        0,
        attrs={
            "crs_wkt": grid.crs.to_wkt(),
            "spatial_ref": grid.crs.to_wkt(),
            "GeoTransform": " ".join(str(v) for v in (t.c, t.a, t.b, t.f, t.d, t.e)),
        },
    )
    return xr.DataArray(
        data,
        dims=("band", "y", "x"),
        coords={"band": bands, **xy, "spatial_ref": spatial_ref},
        attrs={"_FillValue": np.float32(np.nan), "long_name": tuple(bands)},
        name=name or getattr(getattr(image, "model", None), "name", None),
    )

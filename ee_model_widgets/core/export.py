"""Streamed GeoTIFF export: any `Image`, window by window, with bounded memory.

The output is a tiled (256x256), compressed float32 GeoTIFF whose band descriptions are the
band names. Masked pixels are written as NaN and the file's nodata is NaN, so every GIS tool
(and `Image.open`) reads them back as no data, with a separate mask per band. The file is
written to `<path>.tmp-XXXX` beside the target and renamed at the end, so a failed or
interrupted export never leaves a half-written file at `path`.
"""

from __future__ import annotations

import math
import os
import tempfile
from typing import TYPE_CHECKING

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from ..errors import EEModelWidgetsError, ExportError, InputError
from .region import grid_for

if TYPE_CHECKING:
    from .image import Image

_BLOCK = 256  # internal TIFF tile size, the COG convention


def export_geotiff(
    image: Image,
    path: str | os.PathLike,
    region=None,
    proj=None,
    block_size: int = 512,
    compress: str = "deflate",
    progress: bool = True,
    resampling=None,
    overviews: bool = False,
) -> str:
    """Write `image` over `region` on `proj`'s lattice to a GeoTIFF at `path`; returns the path.

    Reads `block_size` x `block_size` windows one at a time (memory stays bounded whatever
    the image size). `overviews=True` also builds internal averaged overviews for fast
    zoomed-out display.
    """
    from tqdm.auto import tqdm

    path = os.fspath(path)
    if not isinstance(block_size, int) or block_size < _BLOCK or block_size % _BLOCK:
        raise InputError(f"block_size must be a positive multiple of {_BLOCK}, got {block_size!r}.")
    grid = grid_for(image, region, proj)
    bands = image.band_names
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ExportError(f"Cannot export to {path}: the folder {directory} does not exist. Create it first.")
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".tmp-", dir=directory)
    os.close(fd)

    profile = {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": len(bands),
        "dtype": "float32",
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": float("nan"),
        "tiled": True,
        "blockxsize": _BLOCK,
        "blockysize": _BLOCK,
        "BIGTIFF": "IF_SAFER",
    }
    if compress and str(compress).lower() != "none":
        profile["compress"] = compress
        if str(compress).lower() in ("deflate", "lzw", "zstd"):
            profile["predictor"] = 3  # floating-point predictor: much smaller float32 files

    windows = [
        (col, row, min(block_size, grid.width - col), min(block_size, grid.height - row))
        for row in range(0, grid.height, block_size)
        for col in range(0, grid.width, block_size)
    ]
    bar = tqdm(
        total=len(windows),
        disable=not progress,
        desc=f"export {os.path.basename(path)}",
        unit="window",
    )
    try:
        with rasterio.open(tmp, "w", **profile) as dst:
            for i, name in enumerate(bands):
                dst.set_band_description(i + 1, name)
            for col, row, w, h in windows:
                block = image.read(grid.window(col, row, w, h), resampling=resampling)
                dst.write(block.filled(np.nan).astype(np.float32, copy=False), window=Window(col, row, w, h))
                bar.update(1)
            if overviews:
                factors = [2**k for k in range(1, 1 + int(math.log2(max(grid.width, grid.height) / _BLOCK)))]
                if factors:
                    dst.build_overviews(factors, Resampling.average)
        os.replace(tmp, path)
    except BaseException as exc:
        _remove(tmp)
        if isinstance(exc, (EEModelWidgetsError, KeyboardInterrupt, SystemExit, MemoryError)):
            raise
        raise ExportError(
            f"Export to {path} failed and nothing was written: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        bar.close()
    return path


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
    for side in (path + ".aux.xml", path + ".ovr"):
        if os.path.exists(side):
            os.remove(side)

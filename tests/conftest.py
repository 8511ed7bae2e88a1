"""Shared fixtures: small real GeoTIFFs written with rasterio."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

#: A 10 m UTM 19S lattice (northern Chile), the default georeferencing of test rasters.
UTM19S = "EPSG:32719"
UTM_TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 7000000.0)


@pytest.fixture
def write_geotiff(tmp_path: Path) -> Callable[..., Path]:
    """Factory: write_geotiff(data, name="img.tif", crs=, transform=, nodata=, descriptions=, mask=).

    `data` is (bands, rows, cols) or (rows, cols); `mask` (rows, cols, True = no data) is
    stored as a GDAL internal mask band (a per-dataset mask).
    """

    def write(
        data: np.ndarray,
        name: str = "img.tif",
        crs=UTM19S,
        transform: Affine = UTM_TRANSFORM,
        nodata: float | None = None,
        descriptions: Sequence[str] | None = None,
        mask: np.ndarray | None = None,
        **profile,
    ) -> Path:
        data = np.asarray(data)
        if data.ndim == 2:
            data = data[np.newaxis]
        path = tmp_path / name
        kw = dict(
            driver="GTiff",
            width=data.shape[2],
            height=data.shape[1],
            count=data.shape[0],
            dtype=data.dtype,
            crs=crs,
            transform=transform,
            nodata=nodata,
        )
        kw.update(profile)
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
            with rasterio.open(path, "w", **kw) as ds:
                ds.write(data)
                for i, d in enumerate(descriptions or []):
                    ds.set_band_description(i + 1, d)
                if mask is not None:
                    ds.write_mask(np.where(mask, 0, 255).astype(np.uint8))
        return path

    return write

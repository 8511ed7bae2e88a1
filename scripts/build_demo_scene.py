"""Build the embedded demo scene `ee_model_widgets/demo/data/sentinel2_patagonia.tif`.

One-off script (not run by the package or the tests): it turns the real Sentinel-2 bands that
PyPI's `xarray-spatial==0.5.3` wheel ships as netCDF into one small, compressed, fully
described GeoTIFF. The output is deterministic: running it twice gives identical bytes.

    .venv/bin/python scripts/build_demo_scene.py            # downloads the wheel with pip
    .venv/bin/python scripts/build_demo_scene.py --wheel /tmp/xs/xarray_spatial-0.5.3-py3-none-any.whl

What is in the wheel (checked, see DATA_LICENSE.md): six single-band netCDF files, float64
values that are all integers (Sentinel-2 reflectance x 10000, no nodata), CRS only as the
attribute `crs = "+init=epsg:32719"` (WGS 84 / UTM 19S), upper-left corner (600000, 4700020),
i.e. the corner of a Sentinel-2 tile in Santa Cruz province, Argentina (47.85 S, 67.64 W):
- blue (B2), green (B3), red (B4), nir (B8, 842 nm; the file's `Band` attribute says "07" but
  its `Nominal Wavelength` 0.842 um and 115 nm bandwidth are those of B8): 300 x 200 px at 10 m;
- swir1 (B11), swir2 (B12): 300 x 200 px at 20 m, i.e. a 6 x 4 km area with the same corner.
We keep the 3 x 2 km area of the 10 m bands and resample the two SWIR bands onto it (bilinear,
GDAL via rasterio.warp.reproject). The acquisition date is not recorded in the files.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.warp import reproject

WHEEL = "xarray_spatial-0.5.3-py3-none-any.whl"
WHEEL_SHA256 = "84f5a3e07a1ac3212bcfff3c4677daa3c529a533f1493eb555f8e498b7d9746e"
CRS = "EPSG:32719"
OUT = Path(__file__).resolve().parents[1] / "ee_model_widgets" / "demo" / "data" / "sentinel2_patagonia.tif"

# Output band order and metadata: (our name, netCDF file, Sentinel-2 band, wavelength um, native res m)
BANDS = [
    ("blue", "blue_band.nc", "B2", 0.490, 10),
    ("green", "green_band.nc", "B3", 0.560, 10),
    ("red", "red_band.nc", "B4", 0.665, 10),
    ("nir", "nir_band.nc", "B8", 0.842, 10),
    ("swir1", "swir1_band.nc", "B11", 1.610, 20),
    ("swir2", "swir2_band.nc", "B12", 2.190, 20),
]
ATTRIBUTION = "Contains modified Copernicus Sentinel data (acquisition date not recorded in the source)"


def fetch_wheel(dest: Path) -> Path:
    """Download the pinned wheel with pip (PyPI only) into `dest`."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "xarray-spatial==0.5.3", "--no-deps", "-d", str(dest)],
        check=True,
    )
    return dest / WHEEL


def read_band(path: Path) -> tuple[np.ndarray, rasterio.Affine, dict]:
    """One netCDF band as float64 with its transform (from the coordinate variables) and tags."""
    with rasterio.open(path) as ds:
        tags = ds.tags(1)
        crs_attr = tags.get("crs", "")
        if crs_attr.replace("+init=", "").upper() != CRS:
            raise SystemExit(f"{path.name}: expected CRS attribute '+init=epsg:32719', found {crs_attr!r}")
        return ds.read(1), ds.transform, tags


def build(wheel: Path, out: Path) -> None:
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise SystemExit(f"{wheel} has sha256 {digest}, expected {WHEEL_SHA256}: not the pinned wheel.")
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(wheel) as zf:
            for _, fname, *_ in BANDS:
                zf.extract(f"xrspatial/datasets/sentinel-2/{fname}", tmp)
        src_dir = Path(tmp) / "xrspatial" / "datasets" / "sentinel-2"

        ref, ref_transform, _ = read_band(src_dir / "red_band.nc")
        height, width = ref.shape
        stack = np.zeros((len(BANDS), height, width), dtype=np.uint16)
        for i, (name, fname, s2band, _wl, res) in enumerate(BANDS):
            data, transform, tags = read_band(src_dir / fname)
            if not np.all(np.isfinite(data)) or not np.array_equal(data, np.round(data)):
                raise SystemExit(f"{fname}: expected finite integer reflectances x 10000")
            if abs(transform.a - res) > 1e-9:
                raise SystemExit(f"{fname}: expected {res} m pixels, found {transform.a}")
            if res == 10:
                if transform != ref_transform or data.shape != ref.shape:
                    raise SystemExit(f"{fname}: 10 m band not on the red band's grid")
                band = data
            else:
                # The 20 m bands cover a larger area with the same corner: resample onto the
                # 10 m grid (GDAL bilinear), as Sentinel-2 users usually do before indices.
                band = np.zeros((height, width), dtype=np.float64)
                reproject(
                    data,
                    band,
                    src_transform=transform,
                    src_crs=CRS,
                    dst_transform=ref_transform,
                    dst_crs=CRS,
                    resampling=Resampling.bilinear,
                )
            stack[i] = np.clip(np.round(band), 1, 65535).astype(np.uint16)
            print(
                f"{name:6s} {s2band:4s} from {fname}: min {band.min():.0f} max {band.max():.0f} ({tags.get('Name')})"
            )

    out.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(
        driver="GTiff",
        width=width,
        height=height,
        count=len(BANDS),
        dtype="uint16",
        crs=CRS,
        transform=ref_transform,
        nodata=0,  # Sentinel-2's own no-data value; no pixel of this scene is 0
        compress="deflate",
        predictor=2,
        zlevel=9,
        tiled=True,
        blockxsize=128,
        blockysize=128,
        interleave="pixel",
    )
    tmp_out = out.with_suffix(".tmp.tif")
    with rasterio.open(tmp_out, "w", **profile) as dst:
        dst.write(stack)
        dst.update_tags(
            TIFFTAG_IMAGEDESCRIPTION="Sentinel-2 reflectance x 10000 (processing level not recorded), Santa Cruz, Argentina",
            ATTRIBUTION=ATTRIBUTION,
            SOURCE=f"PyPI xarray-spatial==0.5.3 ({WHEEL}, sha256 {WHEEL_SHA256}), xrspatial/datasets/sentinel-2/",
            UNITS="reflectance x 10000",
            BUILD_SCRIPT="scripts/build_demo_scene.py",
        )
        for i, (name, _fname, s2band, wl, res) in enumerate(BANDS, start=1):
            dst.set_band_description(i, name)
            dst.update_tags(
                i,
                SENTINEL2_BAND=s2band,
                WAVELENGTH_UM=f"{wl:.3f}",
                NATIVE_RESOLUTION_M=str(res),
                RESAMPLED="bilinear from 20 m" if res != 10 else "no",
            )
    tmp_out.replace(out)
    size = out.stat().st_size
    print(f"wrote {out} ({width}x{height}, {len(BANDS)} bands, {size / 1e6:.2f} MB)")
    print("sha256", hashlib.sha256(out.read_bytes()).hexdigest())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, help=f"path to {WHEEL} (downloaded with pip if omitted)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.wheel:
        build(args.wheel, args.out)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            build(fetch_wheel(Path(tmp)), args.out)


if __name__ == "__main__":
    main()

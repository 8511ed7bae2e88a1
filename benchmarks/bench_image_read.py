"""Map-tile reads from a 2000x2000 UTM array and GeoTIFF, against plain `rasterio.warp.reproject`.

Prints, per zoom, the time of one 256x256 EPSG:3857 tile read (`Image.read` of an image
`resample("bilinear")`d: the interpolating path, the costlier of the two) for
an in-memory array and a tiled GeoTIFF without overviews, and its ratio to a bare
`reproject` of the same source pixels under the tile (cut out beforehand) onto the same tile:
GDAL's own cost, with no masks and no window independence.

Like for like: zoomed out, our reader warps from a 2**k-decimated level of the source
(built once, outside the timing, like a file's overviews), so the bare call is given that
same level as its source; the level is printed. The data has no nodata value, so neither
side is asked for GDAL's slower nodata kernels (`src_nodata` is left unset). All readers are timed
round-robin on the same tiles in one run; each figure is the sum over tiles of the best of
`REPEAT` reads, which is robust to a busy machine. Warped-block caches are cleared before
every read, so each read pays for its warps.

    .venv/bin/python benchmarks/bench_image_read.py
    # before/after: also time another version of core/raster.py in the same run
    git show <commit>:ee_model_widgets/core/raster.py > /tmp/raster_before.py
    .venv/bin/python benchmarks/bench_image_read.py --before /tmp/raster_before.py
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS as RasterioCRS
from rasterio.enums import Resampling
from rasterio.warp import reproject, transform_bounds

import ee_model_widgets as emw
from ee_model_widgets.core import raster
from ee_model_widgets.core.grid import MERCATOR_HALF_WORLD, xyz_grid

sys.path.insert(0, str(Path(__file__).parent))
from _figures import record  # noqa: E402

CRS = "EPSG:32633"
TRANSFORM = Affine(10, 0, 500000, 0, -10, 4000000)
SIZE = 2000
BANDS = 3
REPEAT = 5
_SRC_CRS = RasterioCRS.from_user_input(CRS)  # parsed once: a CRS string costs ms per call
ZOOMS = (14, 13, 12, 10)


def _tiles(z: int, limit: int = 12) -> list[tuple[int, int, int]]:
    """Tiles of zoom z whose whole extent lies inside the image (so every read does full work)."""
    w, s, e, n = transform_bounds(CRS, "EPSG:3857", 500000, 4000000 - 10 * SIZE, 500000 + 10 * SIZE, 4000000)
    span = 2 * MERCATOR_HALF_WORLD / 2**z
    x0, x1 = math.ceil((w + MERCATOR_HALF_WORLD) / span), math.floor((e + MERCATOR_HALF_WORLD) / span)
    y0, y1 = math.ceil((MERCATOR_HALF_WORLD - n) / span), math.floor((MERCATOR_HALF_WORLD - s) / span)
    tiles = [(z, x, y) for y in range(y0, y1) for x in range(x0, x1)]
    if not tiles:  # zoomed out: the tile under the image centre
        cx, cy = (w + e) / 2, (s + n) / 2
        tiles = [(z, int((cx + MERCATOR_HALF_WORLD) // span), int((MERCATOR_HALF_WORLD - cy) // span))]
    return tiles[:limit]


def _level(z: int) -> int:
    """The decimation level 2**k our reader picks for tiles of zoom z (same rule, same scales)."""
    g = xyz_grid(z, 0, 0)
    lin = (g.transform.a, g.transform.b, g.transform.d, g.transform.e)
    src = emw.Image.from_array(np.zeros((1, SIZE, SIZE), np.float32), transform=TRANSFORM, crs=CRS).grid
    scales = raster._image_scales(src, g.crs, lin)
    return raster._pyramid_level(raster.level_limit(scales, Resampling.bilinear), SIZE)


def _cut(levels: dict[int, np.ndarray], k: int, z: int, x: int, y: int) -> tuple[np.ndarray, Affine]:
    """The level-k source pixels under tile z/x/y (+4 px), cut out before timing: GDAL's input."""
    data, transform = levels[k], TRANSFORM @ Affine.scale(2**k, 2**k)
    g = xyz_grid(z, x, y)
    b = transform_bounds(g.crs, CRS, *g.bounds, densify_pts=21)
    inv = ~transform
    (c0, r1), (c1, r0) = inv @ (b[0], b[1]), inv @ (b[2], b[3])
    h, w = data.shape[1:]
    c0, r0 = max(math.floor(c0) - 4, 0), max(math.floor(r0) - 4, 0)
    c1, r1 = min(math.ceil(c1) + 4, w), min(math.ceil(r1) + 4, h)
    return np.ascontiguousarray(data[:, r0:r1, c0:c1]), transform @ Affine.translation(c0, r0)


def _bare(cut: tuple[np.ndarray, Affine], z: int, x: int, y: int) -> None:
    g = xyz_grid(z, x, y)
    src, src_transform = cut
    dst = np.empty((src.shape[0], 256, 256), np.float32)
    reproject(
        src,
        dst,
        src_transform=src_transform,
        src_crs=_SRC_CRS,
        dst_transform=g.transform,
        dst_crs=g.crs,
        dst_nodata=np.nan,
        resampling=Resampling.bilinear,
    )


def _load_raster(path: str):
    """Another version of core/raster.py, as a module of this package (its relative imports work)."""
    spec = importlib.util.spec_from_file_location("ee_model_widgets.core._raster_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", help="another core/raster.py to time in the same run")
    args = parser.parse_args()
    data = np.random.default_rng(0).random((BANDS, SIZE, SIZE)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scene.tif"
        profile = dict(driver="GTiff", width=SIZE, height=SIZE, count=BANDS, dtype="float32")
        with rasterio.open(path, "w", crs=CRS, transform=TRANSFORM, tiled=True, **profile) as ds:
            ds.write(data)
        readers = {
            "array": emw.Image.from_array(data, transform=TRANSFORM, crs=CRS).resample("bilinear").tile,
            "file": emw.Image.open(path).resample("bilinear").tile,
        }
        modules = [raster]
        if args.before:
            before = _load_raster(args.before)
            modules.append(before)
            readers["array-before"] = (
                before.ArrayImage(data, transform=TRANSFORM, crs=CRS).resample("bilinear").tile
            )
            readers["file-before"] = before.FileImage(path).resample("bilinear").tile

        def clear() -> None:
            for m in modules:
                if hasattr(m, "clear_block_cache"):
                    m.clear_block_cache()

        names = list(readers)
        print(f"{SIZE}x{SIZE}x{BANDS} float32 UTM 33N -> 256x256 EPSG:3857 tiles, bilinear, best of {REPEAT}")
        print(
            f"{'zoom':>4} {'level':>5} {'tiles':>5} {'bare ms':>8} "
            + " ".join(f"{n + ' ms':>16} {'/bare':>6}" for n in names)
        )
        ratios = {}
        for z in ZOOMS:
            tiles = _tiles(z)
            k = _level(z)
            levels = {k: raster._decimate(data, k, picking=False)}
            cuts = {t: _cut(levels, k, *t) for t in tiles}
            for t in tiles[:2]:  # warm-up: pyramid levels, file handles, PROJ pipelines
                for read in readers.values():
                    read(*t)
            best = {n: {t: math.inf for t in tiles} for n in ["bare", *names]}
            for _ in range(REPEAT):
                for t in tiles:
                    for n in ["bare", *names]:
                        clear()
                        t0 = time.perf_counter()
                        _bare(cuts[t], *t) if n == "bare" else readers[n](*t)
                        best[n][t] = min(best[n][t], time.perf_counter() - t0)
            total = {n: sum(v.values()) / len(tiles) for n, v in best.items()}
            cells = " ".join(f"{total[n] * 1e3:>16.2f} {total[n] / total['bare']:>6.2f}" for n in names)
            print(f"{z:>4} {2**k:>4}x {len(tiles):>5} {total['bare'] * 1e3:>8.2f} {cells}")
            ratios[z] = total["file"] / total["bare"]
        record(
            "bench_image_read.a",
            "One 256x256 EPSG:3857 tile read from a GeoTIFF / bare `rasterio.warp.reproject` of the same "
            "source pixels (same decimation level), per zoom",
            ", ".join(f"z{z}: {r:.2f}" for z, r in ratios.items()),
        )


if __name__ == "__main__":
    main()

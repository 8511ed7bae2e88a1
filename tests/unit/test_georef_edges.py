"""Input imagery with unusual georeferencing, through the user's API: right pixels or a clear error.

Real GeoTIFFs written with rasterio in a temporary folder. References are worked out in the
test: a target pixel's centre taken into the file's CRS with pyproj and looked up in the
file's array (nearest neighbour), never through our read path.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer

import ee_model_widgets as emw
from ee_model_widgets.core.grid import MERCATOR_HALF_WORLD, xyz_grid


def nearest_reference(path, grid) -> np.ndarray:
    """Band 1 of the file at `grid`'s pixel centres (nearest source pixel), NaN off it or masked."""
    with rasterio.open(path) as ds:
        src = ds.read(1).astype(np.float64)
        src[ds.read_masks(1) == 0] = np.nan
        cols, rows = np.meshgrid(np.arange(grid.width) + 0.5, np.arange(grid.height) + 0.5)
        x, y = grid.transform @ (cols, rows)
        sx, sy = Transformer.from_crs(grid.crs, ds.crs, always_xy=True).transform(x, y)
        sc, sr = ~ds.transform @ (sx, sy)
        sc, sr = np.floor(sc), np.floor(sr)
        on = np.isfinite(sc) & np.isfinite(sr) & (sc >= 0) & (sr >= 0) & (sc < ds.width) & (sr < ds.height)
        out = np.full(grid.shape, np.nan)
        out[on] = src[sr[on].astype(int), sc[on].astype(int)]
        return out


def identity_model(**kw):
    return emw.Model.from_callable(lambda inputs: inputs["array"], input_tile_size=[16, 16], **kw)


@pytest.fixture
def arctic(write_geotiff):
    """Lon/lat degrees, 15°W..15°E x 70°N..90°N, 0.5° pixels of distinct values (1..2400)."""
    values = np.arange(1, 40 * 60 + 1, dtype=np.uint16).reshape(40, 60)
    return str(
        write_geotiff(values, "arctic.tif", crs="EPSG:4326", transform=Affine(0.5, 0, -15, 0, -0.5, 90))
    )


@pytest.mark.parametrize("tile", [(5, 15, 0), (4, 7, 0)])
def test_a_prediction_tile_near_the_pole_is_not_cut_at_the_frame_past_180(arctic, tile):
    # On the request's lattice (fixInputProj false) the model's cells of these tiles are read
    # in a frame whose west edge lies a float ulp past -180°: its lon/lat footprint came back
    # as 180..0 (west > east), which read only the source east of ~1.5°W: the tile was blank
    # but for its last 34 columns.
    image = emw.Image.open(arctic)
    pred = identity_model().predict_image(image, cache=None)
    ref = nearest_reference(arctic, xyz_grid(*tile))
    assert np.isfinite(ref).sum() > 40_000  # the tile lies on the scene
    for got in (image.tile(*tile), pred.tile(*tile)):
        values = np.ma.filled(got[0].astype(float), np.nan)
        assert np.array_equal(np.isnan(values), np.isnan(ref))
        assert np.array_equal(values[~np.isnan(ref)], ref[~np.isnan(ref)])


def test_a_gcp_only_file_is_refused_naming_the_gcps_and_the_warp(tmp_path):
    # It used to be told it had "no coordinate reference system" and to add one with
    # gdal_edit -a_srs, which cannot help: its GCPs carry a CRS, it lacks a geotransform.
    from rasterio.control import GroundControlPoint

    path = tmp_path / "gcps.tif"
    with rasterio.open(path, "w", driver="GTiff", width=6, height=4, count=1, dtype="uint8") as ds:
        ds.write(np.ones((1, 4, 6), np.uint8))
        corners = [(0, 0, 10, 50), (4, 0, 10, 49.6), (0, 6, 10.6, 50), (4, 6, 10.6, 49.6)]
        ds.gcps = (
            [GroundControlPoint(r, c, x, y) for r, c, x, y in corners],
            rasterio.crs.CRS.from_epsg(4326),
        )
    with pytest.raises(emw.errors.ImageReadError, match=r"ground control points only.*gdalwarp -t_srs"):
        emw.Image.open(path)


def test_a_complex_band_is_refused_not_read_as_its_real_part(write_geotiff):
    # Reads are float32: the imaginary part was dropped with only numpy's ComplexWarning.
    values = (np.arange(24).reshape(4, 6) + 1j * np.ones((4, 6))).astype(np.complex64)
    path = str(
        write_geotiff(values, "slc.tif", crs="EPSG:32633", transform=Affine(30, 0, 500000, 0, -30, 4000000))
    )
    with pytest.raises(emw.errors.ImageReadError, match=r"\['B1'\] hold complex numbers.*abs"):
        emw.Image.open(path)


def test_scale_offset_metadata_is_named_in_a_warning_and_values_stay_as_stored(write_geotiff):
    raw = np.arange(24, dtype=np.uint16).reshape(4, 6) * 100
    path = str(
        write_geotiff(
            np.stack([raw, raw]), "sr.tif", crs="EPSG:4326", transform=Affine(0.01, 0, 10, 0, -0.01, 50)
        )
    )
    with rasterio.open(path, "r+") as ds:
        ds.scales, ds.offsets = (0.0001, 0.0001), (-0.1, -0.1)
    with pytest.warns(UserWarning, match=r"scale 0.0001, offset -0.1.*img.multiply\(0.0001\).add\(-0.1\)"):
        image = emw.Image.open(path)
    assert np.array_equal(image.to_numpy()[0], raw)  # the stored values, as the file holds them
    scaled = image.multiply(0.0001).add(-0.1).to_numpy()
    np.testing.assert_allclose(scaled[1], raw * 0.0001 - 0.1, rtol=1e-6, atol=1e-7)


def sparse_cog(path, size, overviews):
    """A `size` px square uint16 GeoTIFF that holds one 512 px block of 500s at its centre, the
    rest unwritten (nodata 0, sparse: a few kB on disk); with 2x..256x overviews if asked (or
    those of a list of factors)."""
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=size,
        height=size,
        count=1,
        dtype="uint16",
        crs="EPSG:3857",
        transform=Affine(10, 0, 0, 0, -10, size * 10),
        tiled=True,
        blockxsize=512,
        blockysize=512,
        compress="deflate",
        nodata=0,
        SPARSE_OK=True,
    ) as ds:
        ds.write(
            np.full((1, 512, 512), 500, np.uint16),
            window=rasterio.windows.Window(size // 2, size // 2, 512, 512),
        )
        if overviews:
            factors = overviews if isinstance(overviews, list) else [2**k for k in range(1, 9)]
            ds.build_overviews(factors, rasterio.enums.Resampling.average)
    return str(path)


def test_a_zoomed_out_tile_of_a_huge_file_without_overviews_says_build_them_instead_of_stalling(tmp_path):
    # A zoom-5 tile of a 24,000 px square file without overviews read all 5.8e8 of its pixels
    # (block means of the full-res pixels): seconds per tile with the map's workers blocked, and
    # 4x more for every doubling of the side (a 50,000 px file: ~30 s).
    from ee_model_widgets.widgets.headless import HeadlessView

    size = 24_000
    tile = (5, 16, 15)  # holds the whole file (0..2.2°E, 0..2.2°N)
    bare = emw.Image.open(sparse_cog(tmp_path / "bare.tif", size, overviews=False))
    with pytest.raises(emw.errors.ImageReadError, match=r"has no overviews.*gdaladdo -r average"):
        bare.tile(*tile)
    layer = emw.PredictionLayer(bare, vis_params={"min": 0, "max": 500})
    try:
        (reply,) = HeadlessView(layer).fetch([tile], timeout=60)
        assert reply.status == "error" and "gdaladdo" in layer.last_error  # an error tile, named
    finally:
        layer.close()
    # With overviews the same tile reads, and shows the block where it is.
    built = emw.Image.open(sparse_cog(tmp_path / "ov.tif", size, overviews=True))
    values = built.tile(*tile)
    assert values.count() > 0 and values.max() == 500
    # A zoom that needs few enough pixels still reads the file without overviews.
    span = 2 * MERCATOR_HALF_WORLD / 2**9
    x, y = 10 * (size // 2 + 256), 10 * (size // 2 - 256)  # the block's centre
    near = (9, int((x + MERCATOR_HALF_WORLD) // span), int((MERCATOR_HALF_WORLD - y) // span))
    assert bare.tile(*near).max() == 500


@pytest.fixture
def fiji_lonlat(write_geotiff):
    """A lon/lat scene across 180° as gdalwarp writes one: 178..184°E (= 176°W), 16..20°S,
    0.1° pixels of distinct values."""
    values = np.arange(1, 40 * 60 + 1, dtype=np.float32).reshape(40, 60)
    return str(
        write_geotiff(values, "fiji.tif", crs="EPSG:4326", transform=Affine(0.1, 0, 178, 0, -0.1, -16))
    )


def lonlat_reference(path, grid) -> np.ndarray:
    """`nearest_reference` for a lon/lat file stored east of 180°: centres west of its west
    edge are looked up one world east (-179° is 181°)."""
    with rasterio.open(path) as ds:
        src = ds.read(1).astype(np.float64)
        src[ds.read_masks(1) == 0] = np.nan
        cols, rows = np.meshgrid(np.arange(grid.width) + 0.5, np.arange(grid.height) + 0.5)
        x, y = grid.transform @ (cols, rows)
        lon, lat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform(x, y)
        lon = np.where(lon < ds.bounds.left, lon + 360, lon)
        sc, sr = np.floor(~ds.transform @ (lon, lat))
        on = (sc >= 0) & (sr >= 0) & (sc < ds.width) & (sr < ds.height)
        out = np.full(grid.shape, np.nan)
        out[on] = src[sr[on].astype(int), sc[on].astype(int)]
        return out


@pytest.mark.parametrize("fix_input_proj", [False, True])
def test_a_lonlat_scene_stored_past_180_shows_on_both_sides_of_it(fiji_lonlat, fix_input_proj):
    # GDAL warps longitudes as they come: a web tile at -180..-174° found no source pixel in
    # a scene written as 178..184°, so everything east of 180° was a blank map (the image, its
    # predictions and the layer), while to_numpy and exports had it.
    from ee_model_widgets.widgets.headless import HeadlessView

    image = emw.Image.open(fiji_lonlat)
    kw = {"fix_input_proj": True, "proj": image.projection} if fix_input_proj else {}
    pred = identity_model(**kw).predict_image(image, cache=None)
    east, west = (6, 0, 35), (6, 63, 35)  # 180..174.4°W and 174.4°E..180
    layer = emw.PredictionLayer(pred, vis_params={"min": 0, "max": 2400})
    try:
        replies = HeadlessView(layer).fetch([east, west], timeout=60)
    finally:
        layer.close()
    for tile, reply, least in zip([east, west], replies, [25_000, 12_000]):
        ref = lonlat_reference(fiji_lonlat, xyz_grid(*tile))
        assert np.isfinite(ref).sum() > least  # the tile lies on the scene
        for values in (image.tile(*tile)[0], pred.tile(*tile)[0], reply.values[0]):
            got = np.ma.filled(np.ma.asarray(values, dtype=float), np.nan)
            assert np.array_equal(np.isnan(got), np.isnan(ref))
            assert np.array_equal(got[~np.isnan(ref)], ref[~np.isnan(ref)])


def test_a_global_grid_stored_as_0_to_360_draws_the_western_hemisphere(write_geotiff):
    values = (np.arange(360)[None, :] + 1000 * np.arange(180)[:, None]).astype(np.float32)
    path = str(write_geotiff(values, "global360.tif", crs="EPSG:4326", transform=Affine(1, 0, 0, 0, -1, 90)))
    image = emw.Image.open(path)
    tile = (3, 1, 2)  # 135°W..90°W, 0..41°N
    ref = lonlat_reference(path, xyz_grid(*tile))
    assert np.isfinite(ref).all()
    got = image.tile(*tile)[0]
    assert got.count() == ref.size and np.array_equal(got.data, ref)


def test_a_region_across_180_of_a_lonlat_scene_reads_every_pixel_and_matches_the_tiles(fiji_lonlat):
    # On the web map's lattice (EPSG:3857, unwrapped east of 180°) a read of the whole scene
    # lost what lies east of 180° (and, once that was found, a 0.5° strip next to it: GDAL
    # looked for each chunk's source along its edges, whose longitudes jump at 180°).
    from ee_model_widgets.core.region import grid_for

    image = emw.Image.open(fiji_lonlat)
    z = 6
    res = 2 * MERCATOR_HALF_WORLD / 2**z / 256
    web = emw.Projection("EPSG:3857", Affine(res, 0, -MERCATOR_HALF_WORLD, 0, -res, MERCATOR_HALF_WORLD))
    region = (178.05, -19.9, 183.9, -16.1)  # inside the scene, across 180°
    for source in (image, identity_model().predict_image(image, cache=None)):
        got = source.to_numpy(region=region, proj=web)[0]
        grid = grid_for(source, region, web)
        ref = lonlat_reference(fiji_lonlat, grid)
        assert np.isfinite(ref).all() and got.count() == ref.size
        assert np.array_equal(got.data, ref)
        # The same pixels in the map's tiles (world copies wrapped as Leaflet asks for them).
        col0, row0 = (round(v) for v in ~web.transform @ (grid.transform.c, grid.transform.f))
        for r in range(0, grid.height, 9):
            for c in range(0, grid.width, 7):
                col, row = col0 + c, row0 + r
                tile = source.tile(z, (col // 256) % 2**z, row // 256)
                assert tile[0, row % 256, col % 256] == got[r, c]


def test_a_region_west_of_0_reads_from_a_0_to_360_grid(tmp_path, write_geotiff):
    # It was refused: "Region (-101, 40, -99, 42) does not intersect the image".
    from ee_model_widgets.core.region import grid_for

    values = (np.arange(360)[None, :] + 1000 * np.arange(180)[:, None]).astype(np.float32)
    path = str(write_geotiff(values, "global360.tif", crs="EPSG:4326", transform=Affine(1, 0, 0, 0, -1, 90)))
    image = emw.Image.open(path)
    region = (-101, 40, -99, 42)
    got = image.to_numpy(region=region)  # the file's own lattice: rows 48..49, columns 259..260
    assert got.count() == 4 and np.array_equal(got.data[0], values[48:50, 259:261])
    web = emw.Projection("EPSG:3857").at_scale(20_000)
    pred = identity_model().predict_image(image, cache=None)
    out = pred.export(str(tmp_path / "west.tif"), region=region, proj=web, progress=False)
    with rasterio.open(out) as ds:
        written = ds.read(1, masked=True)
    ref = lonlat_reference(path, grid_for(pred, region, web))
    assert np.isfinite(ref).all() and written.count() == ref.size
    assert np.array_equal(written.data, ref)


@pytest.fixture
def rotated(write_geotiff):
    """A north-up-less GeoTIFF: pixel axes turned ~37° (aerial imagery keeps such transforms)."""
    values = np.arange(1, 40 * 60 + 1, dtype=np.uint16).reshape(40, 60)
    return str(
        write_geotiff(values, "rotated.tif", crs="EPSG:32633", transform=Affine(8, 6, 500000, 6, -8, 4000000))
    )


def test_to_xarray_of_a_rotated_lattice_places_every_pixel_where_the_file_has_it(rotated):
    # The 1-D x/y coordinates ignored the rotation: da.sel(x=, y=) and any plot put each pixel
    # up to hundreds of metres away from where it is.
    pytest.importorskip("dask")
    image = emw.Image.open(rotated)
    da = image.to_xarray()
    assert "x" not in da.coords and "y" not in da.coords  # no 1-D coordinates that would be wrong
    assert (
        tuple(float(v) for v in da.spatial_ref.attrs["GeoTransform"].split())
        == image.grid.transform.to_gdal()
    )
    values, xc, yc = da.values[0], da.xc.values, da.yc.values
    with rasterio.open(rotated) as ds:
        stored = ds.read(1)
        rows, cols = rasterio.transform.rowcol(ds.transform, xc.ravel(), yc.ravel())
    rows, cols = np.reshape(rows, xc.shape), np.reshape(cols, xc.shape)
    on = (rows >= 0) & (rows < 40) & (cols >= 0) & (cols < 60)
    assert on.sum() == 40 * 60  # every pixel of the file is in the array once
    assert np.array_equal(values[on], stored[rows[on], cols[on]])
    assert np.isnan(values[~on]).all()


def test_a_rotated_image_exports_on_its_own_grid(rotated, tmp_path):
    # The full extent of a rotated image was the lattice window around its bounding box:
    # to_numpy() gave 98x100 pixels for a 40x60 file, and its prediction's export 194x196,
    # all but 6% of them NaN (the model's footprint was that box too).
    image = emw.Image.open(rotated)
    assert image.to_numpy().shape == (1, 40, 60)
    out = identity_model().predict_image(image).export(str(tmp_path / "pred.tif"), progress=False)
    with rasterio.open(out) as written, rasterio.open(rotated) as source:
        assert written.transform == source.transform and written.shape == source.shape
        assert np.array_equal(written.read(1), source.read(1))


def test_an_rpc_only_scene_is_refused_naming_the_orthorectification(tmp_path):
    # Like GCPs: it was told to add a CRS with gdal_edit -a_srs, which cannot place its pixels.
    from rasterio.rpc import RPC

    path = tmp_path / "l1.tif"
    unit = dict(line_den_coeff=[1] + [0] * 19, samp_den_coeff=[1] + [0] * 19)
    rpc = RPC(
        height_off=100, height_scale=500, lat_off=40, lat_scale=0.1, long_off=10, long_scale=0.1,
        line_off=50, line_scale=50, samp_off=50, samp_scale=50,
        line_num_coeff=[0, 0, -1] + [0] * 17, samp_num_coeff=[0, 1] + [0] * 18, **unit,
    )  # fmt: skip
    with rasterio.open(path, "w", driver="GTiff", width=100, height=100, count=1, dtype="uint8") as ds:
        ds.write(np.ones((1, 100, 100), np.uint8))
        ds.rpcs = rpc
    with pytest.raises(emw.errors.ImageReadError, match=r"RPCs only.*gdalwarp -rpc -t_srs"):
        emw.Image.open(path)


@pytest.fixture
def global_lonlat(write_geotiff):
    """The whole world in lon/lat, 1° pixels of distinct values (column + 1000 * row)."""
    values = (np.arange(360)[None, :] + 1000 * np.arange(180)[:, None]).astype(np.float32)
    return str(write_geotiff(values, "world.tif", crs="EPSG:4326", transform=Affine(1, 0, -180, 0, -1, 90)))


@pytest.mark.parametrize("tile", [(0, 0, 0), (1, 1, 0), (2, 0, 1), (3, 7, 3)])
def test_a_global_lonlat_grid_fills_the_zoomed_out_map(global_lonlat, tile):
    # Zoomed-out web frames are anchored at the CRS origin and a whole world wide (z3: 0..360°):
    # their lon/lat footprint collapsed to a sliver at 0°, so a global grid's tiles at zoom 0-3
    # were blank (z3, z2 of its predictions) or half blank (z0).
    image = emw.Image.open(global_lonlat)
    ref = nearest_reference(global_lonlat, xyz_grid(*tile))
    assert np.isfinite(ref).all()
    preds = [
        identity_model().predict_image(image, cache=None),
        identity_model(fix_input_proj=True, proj=image.projection).predict_image(image, cache=None),
    ]
    for source in (image, *preds):
        got = source.tile(*tile)[0]
        assert got.count() == ref.size and np.array_equal(got.data, ref)


def test_a_zoomed_out_tile_of_a_huge_file_with_only_fine_overviews_says_add_coarser_ones(tmp_path):
    # With only a 2x overview, a zoom-5 tile of a 34,000 px square file read all 2.9e8 pixels of it.
    path = sparse_cog(tmp_path / "ov2.tif", 34_000, overviews=[2])
    with pytest.raises(
        emw.errors.ImageReadError, match=r"coarsest overview is 1/2.*gdaladdo -r average .* 4 8 16 32"
    ):
        emw.Image.open(path).tile(5, 16, 15)

"""The tile plan: lattices, cell windows, alignment, block cutting and the mask rule."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

from ee_model_widgets.core.grid import Grid, lattice_offset, pixel_window, xyz_grid
from ee_model_widgets.core.predicted import _rectangles
from ee_model_widgets.core.tiling import (
    Lattice,
    cell_ranges,
    extract_cells,
    lattice_for_proj,
    lattice_for_request,
    mask_to_output,
)
from tests.conftest import UTM19S, UTM_TRANSFORM


def test_cell_input_window_includes_overlap_on_every_edge():
    lat = lattice_for_proj(UTM19S, UTM_TRANSFORM, (16, 8), (3, 2), (16, 8))
    g = lat.input_grid(2, 1)
    assert (g.width, g.height) == (22, 12)
    # cell (2, 1) core starts at input pixel (32, 8); the window starts 3 / 2 pixels earlier
    assert g.transform.c == 500000 + (32 - 3) * 10
    assert g.transform.f == 7000000 - (8 - 2) * 10
    block = lat.input_block_grid(0, 0, 3, 2)
    assert (block.width, block.height) == (3 * 16 + 6, 2 * 8 + 4)


def test_output_lattice_scale_change():
    lat = lattice_for_proj(UTM19S, UTM_TRANSFORM, (16, 16), (4, 4), (4, 8))
    assert lat.scale == (4.0, 2.0)
    assert lat.out_transform.a == 40 and lat.out_transform.e == -20
    og = lat.output_grid(1, 2)
    assert (og.width, og.height) == (4, 8)
    # the output cell covers exactly the same ground as the input core
    assert og.bounds == pytest.approx(lat.input_block_grid(1, 2, 2, 3).window(4, 4, 16, 16).bounds)


def test_cells_for_windows_round_outwards_including_negative_indices():
    lat = lattice_for_proj(UTM19S, UTM_TRANSFORM, (16, 16), (0, 0), (8, 8))
    assert lat.cells_for_output_window(0, 0, 8, 8) == (0, 0, 1, 1)
    assert lat.cells_for_output_window(-1, 7, 9, 9) == (-1, 0, 2, 2)
    assert lat.cells_for_input_window(15, 0, 17, 1) == (0, 0, 2, 1)


def test_xyz_tiles_of_one_zoom_share_one_lattice_anchored_at_the_origin():
    keys = set()
    for x, y in ((300, 600), (301, 600), (300, 601)):
        lat, off = lattice_for_request(xyz_grid(10, x, y), (64, 64), (8, 8), (64, 64))
        keys.add(lat.key)
        assert lat.base.c == 0 and lat.base.f == 0
        # the tile sits a whole number of cells from the origin: 4 cells per tile
        assert off[0] % 64 == 0 and off[1] % 64 == 0
        i0, j0, i1, j1 = lat.cells_for_output_window(off[0], off[1], off[0] + 256, off[1] + 256)
        assert (i1 - i0, j1 - j0) == (4, 4)
    assert len(keys) == 1
    other_zoom, _ = lattice_for_request(xyz_grid(11, 600, 1200), (64, 64), (8, 8), (64, 64))
    assert other_zoom.key not in keys


def test_request_lattice_keeps_sub_pixel_phase_and_scale_change():
    g = Grid(UTM19S, Affine(10, 0, 5.0, 0, -10, 7000000), 40, 30)
    lat, off = lattice_for_request(g, (16, 16), (0, 0), (8, 8))
    # request pixels are output pixels; inputs are sampled 2x finer
    assert lat.out_transform.a == pytest.approx(10) and lat.base.a == pytest.approx(5)
    assert lattice_offset(lat.out_transform, lat.crs, g) == off
    assert lat.out_transform.c == pytest.approx(5.0)


def test_lattice_offset_of_a_model_lattice():
    g = Grid(UTM19S, UTM_TRANSFORM, 10, 10).window(7, -3, 5, 5)
    assert lattice_offset(UTM_TRANSFORM, UTM19S, g) == (7, -3)
    assert (
        lattice_offset(UTM_TRANSFORM, UTM19S, Grid(UTM19S, UTM_TRANSFORM @ Affine.translation(0.5, 0), 5, 5))
        is None
    )
    assert lattice_offset(UTM_TRANSFORM, UTM19S, Grid(UTM19S, UTM_TRANSFORM @ Affine.scale(2), 5, 5)) is None
    assert lattice_offset(UTM_TRANSFORM, "EPSG:32718", Grid(UTM19S, UTM_TRANSFORM, 5, 5)) is None


def test_pixel_window_rounds_outwards_and_pads():
    assert pixel_window(UTM_TRANSFORM, (500000, 7000000 - 100, 500100, 7000000)) == (0, 0, 10, 10)
    assert pixel_window(UTM_TRANSFORM, (500001, 6999901, 500099, 6999999)) == (0, 0, 10, 10)
    assert pixel_window(UTM_TRANSFORM, (500000, 6999900, 500100, 7000000), pad=2) == (-2, -2, 12, 12)


def test_extract_cells_matches_per_cell_slicing():
    rng = np.random.default_rng(1)
    tile, ov = (5, 4), (2, 1)
    block = rng.random((3, 3 * 4 + 2, 4 * 5 + 4)).astype(np.float32)  # 4 cols x 3 rows of cells
    cells = extract_cells(block, 4, 3, tile, ov)
    assert cells.shape == (12, 6, 9, 3)
    k = 0
    for j in range(3):
        for i in range(4):
            expect = block[:, j * 4 : j * 4 + 6, i * 5 : i * 5 + 9].transpose(1, 2, 0)
            np.testing.assert_array_equal(cells[k], expect)
            k += 1


def test_cell_ranges_cover_partial_pixels():
    s, e = cell_ranges(8, 4)
    assert s.tolist() == [0, 2, 4, 6] and e.tolist() == [2, 4, 6, 8]
    s, e = cell_ranges(3, 2)  # 1.5 input pixels per output pixel
    assert s.tolist() == [0, 1] and e.tolist() == [2, 3]
    s, e = cell_ranges(2, 4)  # upsampling: each output pixel lies in one input pixel
    assert s.tolist() == [0, 0, 1, 1] and e.tolist() == [1, 1, 2, 2]


def test_mask_rule_output_valid_only_if_all_covered_inputs_valid():
    valid = np.ones((1, 4, 4), bool)
    valid[0, 1, 2] = False
    out = mask_to_output(valid, (2, 2))
    assert out[0].tolist() == [[True, False], [True, True]]
    # same size: identity
    np.testing.assert_array_equal(mask_to_output(valid, (4, 4)), valid)
    # upsampling 2x: the invalid input pixel invalidates its 2x2 output block only
    up = mask_to_output(valid, (8, 8))
    assert (~up[0]).sum() == 4 and not up[0, 2:4, 4:6].any()
    # everything covered by one output pixel
    assert mask_to_output(valid, (1, 1))[0].tolist() == [[False]]


def test_rectangles_group_cells_exactly():
    cells = [(0, 0), (1, 0), (0, 1), (1, 1), (3, 1), (5, 5)]
    rects = _rectangles(cells)
    covered = sorted((i, j) for i0, j0, i1, j1 in rects for j in range(j0, j1) for i in range(i0, i1))
    assert covered == sorted(cells)
    assert (0, 0, 2, 2) in rects  # the 2x2 block is one read


def test_lattice_key_ignores_float_noise():
    a = Lattice(UTM19S, Affine(10.000000000000002, 0, 0, 0, -10, 0), (8, 8), (0, 0), (8, 8))
    b = Lattice(UTM19S, Affine(10, 0, 0, 0, -10, 0), (8, 8), (0, 0), (8, 8))
    assert a.key == b.key

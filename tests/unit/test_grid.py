"""Grid math: XYZ tiles, outward snapping to a lattice, lattice offsets."""

from __future__ import annotations

import pytest
from affine import Affine

from ee_model_widgets.core.grid import MERCATOR_HALF_WORLD, Grid, lattice_offset, snap_bounds, xyz_grid
from ee_model_widgets.errors import ProjectionError

T = Affine(10, 0, 500000, 0, -10, 7000000)


def test_xyz_zoom0_covers_the_web_mercator_world():
    g = xyz_grid(0, 0, 0)
    assert g.shape == (256, 256)
    assert g.bounds == pytest.approx(
        (-MERCATOR_HALF_WORLD, -MERCATOR_HALF_WORLD, MERCATOR_HALF_WORLD, MERCATOR_HALF_WORLD)
    )


def test_xyz_tiles_count_y_downwards():
    nw = xyz_grid(1, 0, 0)
    se = xyz_grid(1, 1, 1)
    assert nw.bounds == pytest.approx((-MERCATOR_HALF_WORLD, 0, 0, MERCATOR_HALF_WORLD))
    assert se.bounds == pytest.approx((0, -MERCATOR_HALF_WORLD, MERCATOR_HALF_WORLD, 0))


def test_xyz_rejects_tiles_that_do_not_exist():
    with pytest.raises(ProjectionError, match="0 to 3"):
        xyz_grid(2, 4, 0)


def test_grid_needs_a_positive_size():
    with pytest.raises(ProjectionError, match="positive size"):
        Grid("EPSG:32719", T, 0, 3)


def test_snap_bounds_rounds_outwards_to_whole_pixels():
    g = snap_bounds("EPSG:32719", T, (500015, 6999955, 500031, 6999981))
    # x 15..31 -> cols 1..4 (10 m pixels), y -45..-19 -> rows 1..5
    assert g.transform == T @ Affine.translation(1, 1)
    assert (g.width, g.height) == (3, 4)


def test_snap_bounds_on_exact_edges_adds_nothing():
    g = snap_bounds("EPSG:32719", T, (500010, 6999960, 500030, 6999990))
    assert g.transform == T @ Affine.translation(1, 1)
    assert (g.width, g.height) == (2, 3)


def test_lattice_offset_recognises_shifted_windows_only():
    base = Grid("EPSG:32719", T, 100, 100)
    assert lattice_offset(base.transform, base.crs, base.window(-3, 7, 5, 5)) == (-3, 7)
    half = Grid("EPSG:32719", T @ Affine.translation(0.5, 0), 5, 5)
    assert lattice_offset(base.transform, base.crs, half) is None
    assert lattice_offset(base.transform, base.crs, base.scaled(2, 2)) is None
    assert lattice_offset(base.transform, base.crs, Grid("EPSG:32720", T, 5, 5)) is None


def test_window_and_scaled():
    base = Grid("EPSG:32719", T, 100, 50)
    w = base.window(10, 20, 30, 40)
    assert w.bounds == (500100, 7000000 - 600, 500400, 7000000 - 200)
    s = base.scaled(2, 2)
    assert s.shape == (100, 200) and s.res == (5.0, 5.0) and s.bounds == base.bounds

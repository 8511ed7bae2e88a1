"""Projection: EE-style atScale, nominal scale, identity (eq/hash), cache keys."""

from __future__ import annotations

import json
import math
import pickle

import pytest
from affine import Affine

from ee_model_widgets import Projection
from ee_model_widgets.core.grid import Grid
from ee_model_widgets.errors import InputError, ProjectionError


def test_at_scale_utm_gives_square_north_up_pixels_at_crs_origin():
    p = Projection("EPSG:32719").at_scale(10)
    assert p.crs.to_epsg() == 32719
    assert tuple(p.transform)[:6] == (10.0, 0.0, 0.0, 0.0, -10.0, 0.0)
    assert p.scale == pytest.approx(10.0)
    assert p.res == (10.0, 10.0)


def test_at_scale_geographic_converts_metres_to_degrees_at_the_equator():
    p = Projection("EPSG:4326").atScale(111319.49)
    assert p.transform.a == pytest.approx(1.0, rel=1e-6)
    assert p.transform.e == pytest.approx(-1.0, rel=1e-6)
    assert p.scale == pytest.approx(111319.49)
    assert Projection("EPSG:4326").at_scale(30).scale == pytest.approx(30.0)


def test_at_scale_keeps_the_origin_of_an_existing_lattice():
    p = Projection("EPSG:32719", Affine(10, 0, 500005, 0, -10, 7000005)).at_scale(20)
    assert (p.transform.c, p.transform.f) == (500005, 7000005)
    assert p.transform.a == 20 and p.transform.e == -20


def test_projection_without_transform_has_no_scale():
    p = Projection("EPSG:3857")
    assert p.transform is None and p.scale is None
    assert p.to_dict() == {"crs": "EPSG:3857", "transform": None}


def test_equality_and_hash_ignore_how_the_crs_was_spelled():
    a = Projection("EPSG:4326").at_scale(30)
    b = Projection(4326).at_scale(30)
    c = Projection("epsg:4326", tuple(a.transform))
    assert a == b == c
    assert len({a, b, c}) == 1
    assert a != Projection("EPSG:4326").at_scale(31)
    assert a != Projection("EPSG:3857").at_scale(30)
    assert Projection("EPSG:4326") != a


def test_to_dict_is_json_and_stable():
    p = Projection("EPSG:32719").at_scale(10)
    d = p.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d == {"crs": "EPSG:32719", "transform": [10.0, 0.0, 0.0, 0.0, -10.0, 0.0]}


def test_repr_names_crs_and_scale():
    r = repr(Projection("EPSG:32719").at_scale(10))
    assert "EPSG:32719" in r and "scale=10 m" in r


def test_pickle_round_trip():
    p = Projection("EPSG:32719").at_scale(10)
    assert pickle.loads(pickle.dumps(p)) == p


def test_from_grid_and_scaled():
    g = Grid("EPSG:32719", Affine(10, 0, 500000, 0, -10, 7000000), 4, 3)
    p = Projection.from_grid(g)
    assert p.transform == g.transform
    assert p.scaled(2).res == (20.0, 20.0)
    with pytest.raises(ProjectionError, match="at_scale"):
        Projection("EPSG:4326").scaled(2)


def test_unknown_crs_raises_projection_error_naming_it():
    with pytest.raises(ProjectionError, match="EPSG:999999"):
        Projection("EPSG:999999")
    with pytest.raises(ProjectionError, match="not-a-crs"):
        Projection("not-a-crs")


@pytest.mark.parametrize("bad", [0, -10, math.nan, math.inf, "ten"])
def test_at_scale_rejects_non_positive_or_non_numeric_scales(bad):
    with pytest.raises(InputError, match="at_scale"):
        Projection("EPSG:32719").at_scale(bad)


def test_a_gdal_order_geotransform_tuple_is_refused_with_the_fix():
    # GDAL's (x0, xres, 0, y0, 0, yres) read in affine's order is a sheared grid far away.
    with pytest.raises(
        ProjectionError, match=r"Projection transform .* looks like a GDAL geotransform.*from_gdal"
    ):
        Projection("EPSG:32719", (500000, 10, 0, 4000000, 0, -10))
    assert Projection("EPSG:32719", (10, 0, 500000, 0, -10, 4000000)).transform == Affine(
        10, 0, 500000, 0, -10, 4000000
    )


def test_degenerate_transform_is_rejected():
    with pytest.raises(ProjectionError, match="degenerate"):
        Projection("EPSG:32719", Affine(0, 0, 0, 0, -10, 0))

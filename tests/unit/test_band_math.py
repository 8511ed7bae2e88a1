"""Band math with Earth Engine's names: every operation against numpy on random masked images.

The reference is numpy on the arrays the images were made from (masks OR-ed, EE's band
pairing written out by hand), never the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

import ee_model_widgets as emw
from ee_model_widgets.core.grid import Grid, xyz_grid
from ee_model_widgets.core.region import lonlat_bounds
from ee_model_widgets.errors import InputError

T = Affine(10, 0, 500000, 0, -10, 4000000)
CRS = "EPSG:32633"


def masked(bands=3, seed=0, frac=0.2, shape=(24, 32), low=-2.0, high=2.0):
    rng = np.random.default_rng(seed)
    data = rng.uniform(low, high, size=(bands, *shape)).astype(np.float32)
    return np.ma.MaskedArray(data, mask=rng.random(data.shape) < frac)


def image(arr, names=None):
    return emw.Image.from_array(arr, transform=T, crs=CRS, band_names=names)


def assert_matches(img, values, mask):
    """`img` read on its own grid equals numpy's `values` where unmasked, with exactly `mask`."""
    got = img.to_numpy()
    values, mask = np.broadcast_arrays(np.asarray(values, np.float64), np.asarray(mask, bool))
    assert got.shape == values.shape
    np.testing.assert_array_equal(np.ma.getmaskarray(got), mask)
    np.testing.assert_allclose(
        np.ma.getdata(got)[~mask], values[~mask].astype(np.float32), rtol=1e-6, atol=1e-7
    )
    assert not mask.all()  # a check on an all-masked result would prove nothing


BINARY = {
    "add": np.add,
    "subtract": np.subtract,
    "multiply": np.multiply,
    "min": np.minimum,
    "max": np.maximum,
    "gt": np.greater,
    "gte": np.greater_equal,
    "lt": np.less,
    "lte": np.less_equal,
    "eq": np.equal,
    "neq": np.not_equal,
    "And": lambda a, b: (a != 0) & (b != 0),
    "Or": lambda a, b: (a != 0) | (b != 0),
}


@pytest.mark.parametrize("op", sorted(BINARY))
@pytest.mark.parametrize("counts", [(3, 3), (1, 3), (3, 1)])
def test_binary_operations_pair_bands_like_earth_engine(op, counts):
    a, b = masked(counts[0], seed=1), masked(counts[1], seed=2)
    if op in ("eq", "neq"):  # make some pixels equal
        b.data[..., ::3] = a.data[:1, :, ::3] if counts[0] == 1 else a.data[: counts[1], :, ::3]
    ia, ib = image(a, [f"a{i}" for i in range(counts[0])]), image(b, [f"b{i}" for i in range(counts[1])])
    out = getattr(ia, op)(ib)
    # Names: the operand with more bands, or the first one when the counts are equal.
    assert out.band_names == (ia.band_names if counts[0] >= counts[1] else ib.band_names)
    assert_matches(out, BINARY[op](a.data, b.data), a.mask | b.mask)


@pytest.mark.parametrize("op", sorted(BINARY))
def test_binary_operations_with_numbers(op):
    a = masked(2, seed=3)
    a.data[0, :, :5] = 0.5
    ia = image(a, ["p", "q"])
    out = getattr(ia, op)(0.5)
    assert out.band_names == ["p", "q"]
    assert_matches(out, BINARY[op](a.data, np.float32(0.5)), a.mask)


def test_different_band_counts_other_than_one_are_refused_with_the_rule():
    with pytest.raises(InputError, match=r"same number of bands or one of them one band"):
        image(masked(3)).add(image(masked(2)))


def test_divide_by_zero_gives_zero_as_earth_engine_documents():
    a, b = masked(2, seed=4), masked(2, seed=5)
    b.data[:, ::2, :] = 0.0  # half the rows divide by zero, including 0 / 0 where a is 0
    a.data[:, ::4, ::2] = 0.0
    out = image(a).divide(image(b))
    expected = np.where(b.data == 0, 0.0, a.data / np.where(b.data == 0, 1, b.data))
    assert_matches(out, expected, a.mask | b.mask)
    got = out.to_numpy()
    assert np.all(got.data[:, ::2, :][~got.mask[:, ::2, :]] == 0)
    assert_matches(image(a) / 0, np.zeros_like(a.data), a.mask)
    assert_matches(image(a).mod(0), np.zeros_like(a.data), a.mask)


def test_pow_and_non_finite_results_are_masked():
    a = masked(1, seed=6)
    out = image(a).pow(0.5)  # negative ** 0.5 is NaN: masked, like every NaN in this package
    with np.errstate(invalid="ignore"):
        expected = np.power(a.data, 0.5)
    assert_matches(out, expected, a.mask | np.isnan(expected))
    with np.errstate(invalid="ignore"):
        self_pow = np.power(a.data, a.data)
    assert_matches(image(a).pow(image(a)), self_pow, a.mask | ~np.isfinite(self_pow))


@pytest.mark.parametrize(
    "method, fn",
    [
        ("abs", np.abs),
        ("sqrt", np.sqrt),
        ("exp", np.exp),
        ("log", np.log),
        ("log10", np.log10),
        ("floor", np.floor),
        ("ceil", np.ceil),
        ("round", lambda v: np.floor(v + 0.5)),
        ("Not", lambda v: (v == 0).astype(np.float32)),
    ],
)
def test_unary_operations(method, fn):
    a = masked(2, seed=7)
    a.data[0, 0, :4] = [0.5, -0.5, 1.5, 0.0]  # halves round up, as in Earth Engine
    with np.errstate(all="ignore"):
        expected = fn(a.data)
    out = getattr(image(a), method)()
    assert_matches(out, expected, a.mask | ~np.isfinite(expected))


def test_python_operators_are_the_earth_engine_methods():
    a, b = masked(2, seed=8), masked(2, seed=9)
    ia, ib = image(a), image(b)
    both, one = a.mask | b.mask, a.mask
    with np.errstate(all="ignore"):
        cases = [
            (ia + ib, a.data + b.data, both),
            (ia - 1, a.data - 1, one),
            (1 - ia, 1 - a.data, one),
            (ia * ib, a.data * b.data, both),
            (2 * ia, 2 * a.data, one),
            (ia / ib, a.data / b.data, both),
            (ia**2, a.data**2, one),
            (-ia, -a.data, one),
            (abs(ia), np.abs(a.data), one),
            (ia > ib, a.data > b.data, both),
            (ia >= 0, a.data >= 0, one),
            (ia < ib, a.data < b.data, both),
            (ia <= 0, a.data <= 0, one),
            (ia == ib, a.data == b.data, both),
            (ia != ib, a.data != b.data, both),
            ((ia > 0) & (ib > 0), (a.data > 0) & (b.data > 0), both),
            ((ia > 0) | (ib > 0), (a.data > 0) | (b.data > 0), both),
            ((ia > 0) ^ (ib > 0), (a.data > 0) ^ (b.data > 0), both),
            (~(ia > 0), ~(a.data > 0), one),
        ]
    for out, expected, mask in cases:
        assert isinstance(out, emw.Image)
        assert_matches(out, expected, mask)


def test_equality_builds_an_image_truthiness_raises_and_hashing_stays_by_identity():
    ia = image(masked(1))
    same = ia == 0.5
    assert isinstance(same, emw.Image)
    with pytest.raises(TypeError, match="truth value of an emw.Image is ambiguous"):
        bool(ia == ia)
    with pytest.raises(TypeError):
        if ia:  # noqa: SIM102
            pass
    # Hashable by identity: dicts and sets of images keep working, None compares False.
    d = {ia: 1, same: 2}
    assert d[ia] == 1 and d[same] == 2 and len({ia, ia, same}) == 2
    assert (ia == None) is False and (ia != None) is True  # noqa: E711
    assert ia in [None, "x", ia]
    with pytest.raises(TypeError):
        ia + "text"


def test_where_takes_value_where_test_is_nonzero_and_keeps_input_where_test_or_value_is_masked():
    a, t, v = masked(3, seed=10), masked(1, seed=11), masked(3, seed=12)
    out = image(a).where(image(t).gt(0), image(v))
    use = (t.data > 0) & ~t.mask & ~v.mask
    assert_matches(out, np.where(use, v.data, a.data), a.mask)
    out2 = image(a).where(image(a).lt(0), 0)
    assert_matches(out2, np.where(a.data < 0, 0, a.data), a.mask)


def test_update_mask_self_mask_unmask():
    a, m = masked(3, seed=13), masked(1, seed=14, low=0, high=1)
    m.data[0, :, ::2] = 0.0
    assert_matches(image(a).update_mask(image(m)), a.data, a.mask | m.mask | (m.data == 0))
    assert_matches(image(a).updateMask(image(m)), a.data, a.mask | m.mask | (m.data == 0))
    b = masked(2, seed=15)
    b.data[:, :, ::3] = 0.0
    assert_matches(image(b).self_mask(), b.data, b.mask | (b.data == 0))
    assert_matches(image(b).selfMask(), b.data, b.mask | (b.data == 0))
    assert_matches(image(a).unmask(-9), np.where(a.mask, -9, a.data), np.zeros(a.shape, bool))
    fill = masked(1, seed=16)
    assert_matches(image(a).unmask(image(fill)), np.where(a.mask, fill.data, a.data), a.mask & fill.mask)


def test_unmask_keeps_the_footprint_unless_told_otherwise():
    a = masked(1, seed=17)
    img = image(a)
    g = img.grid
    bigger = g.window(-4, -4, g.width + 8, g.height + 8)
    inside = np.zeros((bigger.height, bigger.width), bool)
    inside[4:-4, 4:-4] = True
    got = img.unmask(0).read(bigger)
    assert (got.mask[0] == ~inside).all()
    assert (got.data[0][4:-4, 4:-4] == np.where(a.mask[0], 0, a.data[0])).all()
    wide = img.unmask(0, same_footprint=False).read(bigger)
    assert not wide.mask.any() and (wide.data[0][~inside] == 0).all()


def test_clip_masks_pixels_whose_centre_is_outside_the_region():
    a = masked(2, seed=18, frac=0.0)
    img = image(a)
    g = img.grid
    # A polygon in lon/lat covering a UTM rectangle of pixel columns 5..19, rows 3..15.
    from rasterio.warp import transform as tr

    x0, y0 = g.transform @ (5, 3)
    x1, y1 = g.transform @ (20, 16)
    lons, lats = tr(CRS, "EPSG:4326", [x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0])
    geom = {"type": "Polygon", "coordinates": [list(zip(lons, lats))]}
    clipped = img.clip(geom)
    # The extent shrinks to the region's box on the image's lattice.
    cg = clipped.grid
    assert cg.width <= 17 and cg.height <= 15
    full = clipped.read(g)
    # Reference: pixel centres tested against the polygon with an independent point-in-polygon.
    from matplotlib.path import Path

    cols, rows = np.meshgrid(np.arange(g.width) + 0.5, np.arange(g.height) + 0.5)
    xs, ys = g.transform @ (cols.ravel(), rows.ravel())
    plon, plat = tr(CRS, "EPSG:4326", list(xs), list(ys))
    inside = (
        Path(np.column_stack([lons, lats])).contains_points(np.column_stack([plon, plat])).reshape(g.shape)
    )
    assert inside.sum() > 100
    edge = np.zeros_like(inside)
    edge[[2, 3, 15, 16], :] = True
    edge[:, [4, 5, 19, 20]] = True  # centres within float noise of the edges may go either way
    assert (full.mask[0] == ~inside)[~edge].all()
    assert np.array_equal(full.data[:, inside & ~edge], a.data[:, inside & ~edge])
    with pytest.raises(emw.EEModelWidgetsError, match="does not intersect"):
        img.clip((0, 0, 1, 1))


def test_normalized_difference_name_masks_and_zero_sum():
    a = masked(3, seed=19, low=0, high=1)
    a.data[1, :2, :] = -0.1  # negative input: masked, as Earth Engine documents
    a.data[0, 5, :] = a.data[2, 5, :] = 0.0  # zero sum -> 0
    img = image(a, ["red", "green", "nir"])
    nd = img.normalized_difference(["nir", "red"])
    assert nd.band_names == ["nd"]
    n, r = a.data[2], a.data[0]
    expected = np.where(n + r == 0, 0, (n - r) / np.where(n + r == 0, 1, n + r))
    assert_matches(nd, expected[None], (a.mask[2] | a.mask[0] | (n < 0) | (r < 0))[None])
    first_two = img.normalizedDifference()
    g = a.data[1]
    assert_matches(first_two, ((r - g) / (r + g))[None], (a.mask[0] | a.mask[1] | (r < 0) | (g < 0))[None])


def test_expression_with_band_names_constants_variables_and_assignment():
    a = masked(3, seed=20, low=0.01, high=1)
    img = image(a, ["red", "green", "nir"])
    n, r, g = a.data[2], a.data[0], a.data[1]
    m = a.mask[2] | a.mask[0]
    e = img.expression("(b('nir') - b('red')) / (b('nir') + b('red'))")
    assert e.band_names == ["nir"]  # EE: the first operand names the result
    assert_matches(e, ((n - r) / (n + r))[None], m[None])
    evi = img.expression(
        "evi = 2.5 * (N - R) / (N + 6 * R - 7.5 * B + 1)",
        {"N": img.select("nir"), "R": img.select("red"), "B": img.select("green")},
    )
    assert evi.band_names == ["evi"]
    assert_matches(evi, (2.5 * (n - r) / (n + 6 * r - 7.5 * g + 1))[None], (m | a.mask[1])[None])
    k = img.expression("2.5 * b(2)")
    assert k.band_names == ["constant"]  # a number on the left names it, as in Earth Engine
    v = img.expression("i.nir * gain + i[0] - b('green') ** 2", {"i": img, "gain": 3})
    assert_matches(v, (n * 3 + r - g**2)[None], (a.mask[2] | a.mask[0] | a.mask[1])[None])
    t = img.expression("b('nir') > 0.5 && !(b('red') > 0.5) ? 1 : b('green') % 0.25")
    cond = (n > 0.5) & ~(r > 0.5)
    assert_matches(
        t, np.where(cond, 1, np.fmod(g, 0.25))[None], (a.mask[2] | a.mask[0] | (~cond & a.mask[1]))[None]
    )
    f = img.expression("sqrt(abs(b('red') - b('nir'))) + max(b('red'), 0.5) - -1")
    assert_matches(f, (np.sqrt(np.abs(r - n)) + np.maximum(r, 0.5) + 1)[None], m[None])
    assert img.expression("b()").band_names == img.band_names
    assert img.expression("b(0, 'nir')").band_names == ["red", "nir"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("__import__('os').system('touch /tmp/emw_pwned')", "unknown function '__import__'"),
        ("b('red').__class__", "unknown name|band"),
        ("().__class__.__bases__[0].__subclasses__()", "expected a number"),
        ("open('/etc/passwd')", "unknown function 'open'"),
        ("eval('1')", "unknown function 'eval'"),
        ("lambda: 1", "unknown name 'lambda'|expected"),
        ("b('red'); import os", "unexpected character ';'"),
        ("x", "unknown name 'x'"),
        ("b('nope')", "Unknown band"),
        ("(" * 500 + "1" + ")" * 500, "nested more than"),
        ("1 + " * 6000 + "1", "characters long"),
        (" + ".join(["b(0)"] * 600), "operations deep"),
        ("2 + 3", "uses no band"),
        ("b('red') +", "expected a number"),
    ],
)
def test_malicious_or_broken_expressions_are_refused_with_a_clear_error(text, message, tmp_path):
    img = image(masked(3), ["red", "green", "nir"])
    with pytest.raises(InputError, match=message):
        img.expression(text)
    import os

    assert not os.path.exists("/tmp/emw_pwned")


def test_add_bands_select_regex_rename_argmax():
    a, b = masked(3, seed=21), masked(2, seed=22)
    ia, ib = image(a, ["B1", "B2", "B10"]), image(b, ["p0", "p1"])
    both = ia.add_bands(ib)
    assert both.band_names == ["B1", "B2", "B10", "p0", "p1"]
    assert_matches(both, np.concatenate([a.data, b.data]), np.concatenate([a.mask, b.mask]))
    with pytest.raises(InputError, match="overwrite=True"):
        ia.addBands(ia.select("B1"))
    over = ia.add_bands(ib.rename("B2", "new"), overwrite=True)
    assert over.band_names == ["B1", "B2", "B10", "new"]
    assert_matches(over.select("B2"), b.data[:1], b.mask[:1])
    assert ia.add_bands(ib, names=["p1"]).band_names == ["B1", "B2", "B10", "p1"]
    # Regular expressions match whole names, in selector order; a second list renames.
    assert ia.select("B.").band_names == ["B1", "B2"]
    assert ia.select("B.*").band_names == ["B1", "B2", "B10"]
    assert ia.select("B10", 0).band_names == ["B10", "B1"]
    assert ia.select(["B1", "B10"], ["x", "y"]).band_names == ["x", "y"]
    assert_matches(ia.select(["B1", "B10"], ["x", "y"]), a.data[[0, 2]], a.mask[[0, 2]])
    with pytest.raises(InputError, match="no band is named or matches"):
        ia.select("C.*")
    am = ia.argmax()
    assert am.band_names == ["argmax"] and "argmax" in am.categorical_bands
    assert_matches(am, np.argmax(a.data, axis=0)[None], a.mask.any(axis=0)[None])


def test_derived_images_fingerprint_deterministically():
    ia = image(masked(1))
    one, two = ia.gt(0.5).self_mask(), ia.gt(0.5).self_mask()
    assert one is not two and one.fingerprint() == two.fingerprint()
    assert ia.gt(0.5).fingerprint() != ia.gt(0.6).fingerprint()
    assert ia.gt(0.5).fingerprint() != ia.gte(0.5).fingerprint()
    assert ia.gt(0.5).fingerprint() != image(masked(1)).gt(0.5).fingerprint()
    e1 = ia.expression("b(0) * 2 + 1")
    assert e1.fingerprint() == ia.expression("b(0) * 2 + 1").fingerprint()
    assert e1.fingerprint() != ia.expression("b(0) * 2 + 1.5").fingerprint()


def test_reads_on_other_grids_and_tiles_are_the_operation_on_the_parents_reads():
    a, b = masked(2, seed=23, frac=0.1), masked(1, seed=24, frac=0.1)
    ia, ib = image(a), image(b)
    derived = ia.subtract(ib).divide(ia.add(ib)).update_mask(ib.gt(-1))
    w, s, e, n = lonlat_bounds(ia.grid)
    import math

    z = 16
    x = int((w + e) / 2 / 360 * 2**z + 2**z / 2)
    lat = math.radians((s + n) / 2)
    y = int((1 - math.asinh(math.tan(lat)) / math.pi) / 2 * 2**z)
    for grid in (xyz_grid(z, x, y), Grid(ia.grid.crs, ia.grid.transform @ Affine.scale(0.7), 30, 30)):
        pa, pb = ia.read(grid), ib.read(grid)
        num, den = pa.data - pb.data, pa.data + pb.data
        expected = np.where(den == 0, 0, num / np.where(den == 0, 1, den))
        mask = pa.mask | pb.mask | (pb.data <= -1)
        got = derived.read(grid)
        np.testing.assert_array_equal(got.mask, mask)
        np.testing.assert_allclose(got.data[~mask], expected[~mask], rtol=1e-5)
        assert (~mask).sum() > 50


class _Recorder(emw.Image):
    """An image that records the grids it is asked for (to see what a derived read reads)."""

    def __init__(self, inner):
        self.inner, self._band_names, self.grids = inner, inner.band_names, []

    @property
    def grid(self):
        return self.inner.grid

    def _read(self, grid, bands, resampling):
        self.grids.append((grid, tuple(bands)))
        return self.inner.read(grid, bands, resampling)


def test_a_window_of_a_derived_image_reads_only_that_window_and_the_bands_it_needs():
    src = _Recorder(image(masked(3, seed=25), ["red", "green", "nir"]))
    nd = src.normalized_difference(["nir", "red"]).gt(0).self_mask()
    window = src.grid.window(4, 5, 8, 6)
    out = nd.read(window)
    assert out.shape == (1, 6, 8)
    assert src.grids == [(window, ("nir", "red"))]  # one read, that window, two bands


def _tiles_over(img, z):
    import math

    w, s, e, n = lonlat_bounds(img.grid)

    def row(lat):
        return int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * 2**z)

    cols = range(int((w + 180) / 360 * 2**z), int((e + 180) / 360 * 2**z) + 1)
    return [xyz_grid(z, x, y) for y in range(row(n), row(s) + 1) for x in cols]


def test_map_tiles_of_derived_images_of_a_cached_prediction_read_its_window_once_and_fuse_the_chain(
    monkeypatch,
):
    src = image(masked(3, seed=31, shape=(96, 128), frac=0.1, low=0.0, high=1.0), ["red", "green", "nir"])
    model = emw.Model.from_callable(
        lambda b: {"p": b["array"][..., 0:1], "q": b["array"][..., 2:3]}, input_tile_size=16
    )
    pred = model.predict_image(src)
    grids = _tiles_over(src, 16)
    assert len(grids) >= 4
    ref = pred.read_many(grids)  # the map showed `pred`: its cells are cached
    calls = model.stats.calls
    assert calls > 0

    reads, assembled = [], []
    read_plan, assemble = pred.read_plan, pred._assemble
    monkeypatch.setattr(pred, "read_plan", lambda plan: reads.append(list(plan.bands)) or read_plan(plan))
    monkeypatch.setattr(pred, "_assemble", lambda *a: assembled.append(1) or assemble(*a))
    above = pred.gt(0.5)

    def intermediate_read(*_a, **_k):
        raise AssertionError("the intermediate image gt(0.5) was planned or read as an image of its own")

    for name in ("read", "_read", "read_many", "plan", "_plan", "read_plan", "_read_plan"):
        monkeypatch.setattr(above, name, intermediate_read)
    likely = above.self_mask()
    got = likely.read_many(grids)
    # One batched read of the prediction (both bands), one assembly of cached cells per tile,
    # no model call, and the chain gt -> self_mask computed without reading gt as an image.
    assert reads == [["p", "q"]]
    assert len(assembled) == len(grids)
    assert model.stats.calls == calls
    for g, p in zip(got, ref):
        want = ~p.mask & (p.data > 0.5)
        np.testing.assert_array_equal(~g.mask, want)
        np.testing.assert_array_equal(g.data, np.where(want, 1.0, 0.0))
    assert sum(int((~g.mask).sum()) for g in got) > 100

    # An expression's b('p') and b('q') are two select() views of the prediction: still one read.
    reads.clear(), assembled.clear()
    both = pred.expression("b('p') > 0.5 && b('q') < 0.5")
    got = both.read_many(grids)
    assert len(reads) == 1 and sorted(reads[0]) == ["p", "q"]
    assert len(assembled) == len(grids)
    for g, p in zip(got, ref):
        mask = p.mask[0] | p.mask[1]
        np.testing.assert_array_equal(g.mask[0], mask)
        np.testing.assert_array_equal(g.data[0][~mask], ((p.data[0] > 0.5) & (p.data[1] < 0.5))[~mask])
    assert model.stats.calls == calls


# ---- the read contract on the fast paths (a band masked everywhere, masks that need no zeroing) ----
def _chains(src, other):
    """Derived images covering the read's shortcuts: kernels that keep masks, that fill them
    (unmask), one and several output bands, results used in place or copied."""
    return {
        "gt.self_mask": (
            src.gt(0.5).self_mask(),
            lambda a, b: (np.where(a > 0.5, 1, 0), a.mask | ~(a > 0.5)),
        ),
        "multiply(2)": (src.multiply(2), lambda a, b: (a * 2, a.mask)),
        "add(1)": (src.add(1), lambda a, b: (a + 1, a.mask)),
        "self_mask": (src.self_mask(), lambda a, b: (a, a.mask | (a == 0))),
        "gt.unmask(7)": (
            src.gt(0.5).unmask(7, same_footprint=False),
            lambda a, b: (np.where(a.mask, 7, a > 0.5), np.zeros(a.shape, bool)),
        ),
        "and": (src.gt(0.2).And(other.lt(0.6)), lambda a, b: ((a > 0.2) & (b < 0.6), a.mask | b.mask)),
        "add_bands": (
            src.gt(0.5).add_bands(other.rename("o")),
            lambda a, b: (np.concatenate([a > 0.5, b]), np.concatenate([a.mask, b.mask])),
        ),
    }


def test_derived_reads_hold_zero_at_masked_pixels_and_shortcut_windows_beyond_the_source():
    a = masked(1, seed=40, frac=0.3, low=0.0, high=1.0)
    a.data[0, :, :5] = 0.0  # zeros for self_mask
    b = masked(1, seed=41, frac=0.3, low=0.0, high=1.0)
    src, other = image(a), image(b)
    g = src.grid
    # A window half beyond the source's edge, one wholly beyond it (every source band masked
    # everywhere: the shortcut), and the source's own grid.
    windows = {"half out": g.window(-16, -4, 32, 24), "all out": g.window(-60, -60, 32, 24), "own": g}
    for name, (img, ref) in _chains(src, other).items():
        for where, window in windows.items():
            pa, pb = src.read(window), other.read(window)
            want, want_mask = ref(pa, pb)
            want = np.broadcast_to(np.asarray(want, np.float32), want_mask.shape)
            if name == "gt.unmask(7)":  # same_footprint=False: beyond the extent is filled too
                want_mask = np.zeros(want_mask.shape, bool)
            got = img.read(window)
            assert got.dtype == np.float32 and got.shape == want_mask.shape, name
            np.testing.assert_array_equal(np.ma.getmaskarray(got), want_mask, err_msg=f"{name} {where}")
            np.testing.assert_allclose(got.data[~want_mask], want[~want_mask], rtol=1e-6, err_msg=name)
            # Masked pixels hold 0 (the Image.read contract), whatever the shortcut taken.
            assert (got.data[want_mask] == 0).all(), f"{name} {where}: masked pixels are not 0"
        assert img.read(windows["all out"]).mask.all() or name == "gt.unmask(7)"


class _Kept(emw.Image):
    """An image that hands out the same arrays on every read of a grid (as a caching source might)."""

    def __init__(self, inner):
        self.inner, self._band_names, self.kept = inner, inner.band_names, {}

    @property
    def grid(self):
        return self.inner.grid

    def _read(self, grid, bands, resampling):
        key = (grid, tuple(bands))
        if key not in self.kept:
            self.kept[key] = self.inner.read(grid, bands, resampling)
        return self.kept[key]


def test_derived_reads_copy_source_bands_they_pass_through():
    # A kernel's own result becomes the read's result as is; a band passed through from a
    # source (self_mask, add_bands) is copied, so writing into the result leaves the source alone.
    a = masked(2, seed=42, frac=0.2, low=0.0, high=1.0)
    src = _Kept(image(a))
    passed = (src.select(0).self_mask(), src.select(0).multiply(2))  # values, then the mask passed through
    for img in (*passed, src.gt(0.5).self_mask(), src.add_bands(src.gt(0.5).rename("x", "y"))):
        first = img.read(src.grid)
        keep = first.copy()
        first.data[...] = 123.0
        first.mask[...] = False
        again = img.read(src.grid)
        np.testing.assert_array_equal(again.data, keep.data)
        np.testing.assert_array_equal(again.mask, keep.mask)
        assert (~keep.mask).any() and keep.mask.any()


def test_operands_masked_everywhere_in_a_window_follow_earth_engines_mask_rules():
    # `small` covers the left half of `big`'s grid: on the right half every pixel of it is
    # masked, which a read may shortcut only where the operation keeps that operand's mask.
    b = masked(1, seed=43, frac=0.2, low=0.0, high=1.0)
    s = masked(1, seed=44, frac=0.2, low=0.0, high=1.0, shape=(24, 16))
    big, small = image(b), emw.Image.from_array(s, transform=T, crs=CRS)
    right = big.grid.window(16, 0, 16, 24)  # small is masked everywhere here
    bb = big.read(right)
    none, every = np.zeros(bb.shape, bool), np.ones(bb.shape, bool)
    cases = {
        # where(): the input's mask only; a masked test or value keeps the input.
        "big.where(small > 0.5, 9)": (big.where(small.gt(0.5), 9), bb.data, bb.mask),
        "small.where(big > 0.5, 9)": (small.where(big.gt(0.5), 9), None, every),
        # A pixel masked in either operand is masked in the result.
        "big + small": (big.add(small), None, every),
        "big.update_mask(small)": (big.update_mask(small), None, every),
        # unmask fills: small's masked pixels take big's values (beyond small's extent too,
        # with same_footprint=False), or 3.
        "small.unmask(big)": (small.unmask(big, same_footprint=False), bb.data, bb.mask),
        "small.gt(0).unmask(3)": (small.gt(0).unmask(3, same_footprint=False), np.full(bb.shape, 3.0), none),
        # The expression's ternary: masked where the test is.
        "small > 0.5 ? 1 : big": (big.expression("s > 0.5 ? 1 : b(0)", {"s": small}), None, every),
    }
    for name, (img, want, want_mask) in cases.items():
        got = img.read(right)
        np.testing.assert_array_equal(np.ma.getmaskarray(got), want_mask, err_msg=name)
        if want is not None:
            np.testing.assert_allclose(got.data[~want_mask], np.asarray(want)[~want_mask], err_msg=name)
        assert (got.data[want_mask] == 0).all(), name
        assert (~want_mask).any() or want is None, name

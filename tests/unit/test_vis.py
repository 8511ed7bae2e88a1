"""Earth Engine visParams -> RGBA: exact colours, masks, categorical classes, PNG round trips."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image as PILImage

from ee_model_widgets.core.vis import (
    colormap_preview,
    error_tile,
    message_tile,
    parse_color,
    render,
    stretch,
    to_png,
)
from ee_model_widgets.errors import InputError


def _one_band(values, mask=None):
    a = np.asarray(values, dtype=np.float32)[np.newaxis, np.newaxis, :]
    return np.ma.MaskedArray(a, mask=np.zeros_like(a, bool) if mask is None else [[mask]])


def test_palette_endpoints_and_midpoint_are_exact():
    rgba = render(_one_band([10, 20, 15, 0, 99]), {"min": 10, "max": 20, "palette": ["ff0000", "#0000ff"]})
    assert rgba.shape == (1, 5, 4) and rgba.dtype == np.uint8
    assert rgba[0, 0].tolist() == [255, 0, 0, 255]  # min -> first colour
    assert rgba[0, 1].tolist() == [0, 0, 255, 255]  # max -> last colour
    assert rgba[0, 2].tolist() == [128, 0, 128, 255]  # halfway: linear blend
    assert rgba[0, 3].tolist() == [255, 0, 0, 255]  # below min clamps
    assert rgba[0, 4].tolist() == [0, 0, 255, 255]  # above max clamps


def test_palette_as_colormap_name_css_names_and_comma_string():
    vir = render(_one_band([0, 1]), {"palette": "viridis"})
    assert vir[0, 0].tolist() == [68, 1, 84, 255] and vir[0, 1].tolist() == [253, 231, 37, 255]
    css = render(_one_band([0, 1]), {"palette": ["red", "lime"]})
    assert css[0, :, :3].tolist() == [[255, 0, 0], [0, 255, 0]]
    comma = render(_one_band([0, 0.5, 1]), {"palette": "000000,ffffff,f00"})
    assert comma[0, :, :3].tolist() == [[0, 0, 0], [255, 255, 255], [255, 0, 0]]


def test_masked_and_nan_pixels_are_transparent():
    rgba = render(_one_band([0.2, 0.4, np.nan], mask=[False, True, False]), {"palette": "viridis"})
    assert rgba[0, 0, 3] == 255
    assert rgba[0, 1].tolist() == [0, 0, 0, 0] and rgba[0, 2].tolist() == [0, 0, 0, 0]


def test_categorical_maps_class_values_to_palette_entries_exactly():
    classes = _one_band([0, 1, 2, 3, 7])
    vis = {"categorical": True, "palette": ["419bdf", "397d49", "dfc35a"], "min": 0}
    rgba = render(classes, vis)
    assert rgba[0, 0].tolist() == [0x41, 0x9B, 0xDF, 255]
    assert rgba[0, 1].tolist() == [0x39, 0x7D, 0x49, 255]
    assert rgba[0, 2].tolist() == [0xDF, 0xC3, 0x5A, 255]
    assert rgba[0, 3, 3] == 0 and rgba[0, 4, 3] == 0  # no colour for those classes
    shifted = render(_one_band([1, 3]), {"categorical": True, "palette": ["red", "blue", "lime"], "min": 1})
    assert shifted[0, :, :3].tolist() == [[255, 0, 0], [0, 255, 0]]
    as_dict = render(_one_band([5, 9]), {"categorical": True, "palette": {5: "red", 9: "blue"}})
    assert as_dict[0, :, :3].tolist() == [[255, 0, 0], [0, 0, 255]]


def test_gamma_brightens_grey_like_earth_engine():
    rgba = render(_one_band([0.25]), {"gamma": 2})
    assert rgba[0, 0, 0] == round(255 * 0.25**0.5)  # v ** (1 / gamma)
    assert rgba[0, 0, :3].tolist() == [128, 128, 128]


def test_rgb_with_per_band_min_max_and_band_selection():
    data = np.ma.MaskedArray(np.array([[[5.0]], [[100.0]], [[0.5]], [[1.0]]], dtype=np.float32))
    vis = {"bands": ["nir", "red", "green"], "min": [0, 0, 0], "max": [200, 10, 1]}
    rgba = render(data, vis, band_names=["red", "nir", "green", "blue"])
    assert rgba[0, 0].tolist() == [128, 128, 128, 255]


def test_default_is_first_band_grey_or_first_three_rgb():
    grey = render(np.full((1, 1, 1), 1.0), {})
    assert grey[0, 0].tolist() == [255, 255, 255, 255]
    rgb = render(np.array([[[1.0]], [[0.0]], [[1.0]], [[0.0]]]), {})
    assert rgb[0, 0].tolist() == [255, 0, 255, 255]


def test_opacity_scales_alpha():
    rgba = render(_one_band([0.5]), {"opacity": 0.5})
    assert rgba[0, 0, 3] == 128


@pytest.mark.parametrize(
    "vis, words",
    [
        ({"palette": "not_a_colormap"}, "Unknown palette"),
        ({"palette": ["ff0000", "nope"]}, "Unknown colour 'nope'"),
        ({"bands": ["a", "b"]}, "1 or 3 bands"),
        ({"min": 1, "max": 1}, "below 'max'"),
        ({"min": [0, 0], "max": 1}, "2 values for 1"),
        ({"gamma": 0}, "positive"),
        ({"opacity": 2}, "between 0 and 1"),
        ({"pallete": "viridis"}, "Unknown vis param"),
        ({"categorical": True}, "palette"),
        ({"bands": ["x"]}, "unknown band"),
    ],
)
def test_bad_vis_params_say_what_to_change(vis, words):
    with pytest.raises(InputError, match=words):
        render(np.zeros((1, 2, 2)), vis, band_names=["a"])


def test_palette_on_several_bands_asks_for_bands():
    with pytest.raises(InputError, match="'bands'"):
        render(np.zeros((3, 2, 2)), {"palette": "viridis"})


def test_parse_color_forms():
    assert parse_color("#00FF00") == (0.0, 1.0, 0.0, 1.0)
    assert parse_color("0f0") == (0.0, 1.0, 0.0, 1.0)
    assert parse_color((255, 0, 0)) == (1.0, 0.0, 0.0, 1.0)


def test_to_png_decodes_back_to_the_same_pixels():
    rgba = np.random.default_rng(0).integers(0, 256, (7, 9, 4), dtype=np.uint8)
    png = to_png(rgba)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    back = np.asarray(PILImage.open(io.BytesIO(png)).convert("RGBA"))
    np.testing.assert_array_equal(back, rgba)
    with pytest.raises(InputError, match="RGBA"):
        to_png(rgba[..., :3])


@pytest.mark.parametrize("make", [error_tile, message_tile])
def test_text_tiles_are_256_square_pngs_with_visible_text(make):
    png = make("Model 'fcn' raised ValueError: input has 3 bands, expected 4. " * 3)
    img = np.asarray(PILImage.open(io.BytesIO(png)).convert("RGBA"))
    assert img.shape == (256, 256, 4)
    inner = img[20:200, 10:246, :3].reshape(-1, 3)
    assert len(np.unique(inner, axis=0)) > 5  # antialiased glyphs, not a blank tile
    assert img[128, 128, 3] > 0  # opaque enough to be seen on a map
    assert make("short") != png


def test_error_tile_is_red_framed():
    img = np.asarray(PILImage.open(io.BytesIO(error_tile("boom"))).convert("RGB"))
    r, g, b = img[2, 128]
    assert r > 150 and g < 80 and b < 80


def test_colormap_preview_is_a_strip_of_the_colormap():
    img = np.asarray(PILImage.open(io.BytesIO(colormap_preview("viridis"))).convert("RGB"))
    assert img.shape == (16, 256, 3)
    assert img[0, 0].tolist() == [68, 1, 84] and img[0, -1].tolist() == [253, 231, 37]
    with pytest.raises(InputError, match="Unknown palette"):
        colormap_preview("nope_cmap")


def test_stretch_is_percentiles_of_valid_pixels_per_band():
    a = np.ma.MaskedArray(np.stack([np.arange(101.0), np.full(101, 7.0)]))
    a.mask = np.zeros(a.shape, bool)
    a.mask[0, 90:] = True
    mins, maxs = stretch(a[:, np.newaxis, :], percent=(10, 90))
    assert mins[0] == pytest.approx(8.9) and maxs[0] == pytest.approx(80.1)
    assert mins[1] == 7.0 and maxs[1] == 8.0  # constant band still gets min < max
    assert render(a[:1, np.newaxis, :], {"min": mins[0], "max": maxs[0]}).shape == (1, 101, 4)


@pytest.mark.parametrize("palette", ["viridis", "YlGn", ["ff0000", "0000ff"], "000000,ffffff,f00", "magma"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_palette_colours_are_within_one_level_of_exact_interpolation(palette, dtype):
    # The ramp is a lookup table (speed); its colours may differ from exact linear
    # interpolation between the palette's colours by at most one level of 255, never more.
    from matplotlib import colormaps
    from matplotlib.colors import to_rgba

    rng = np.random.default_rng(1)
    values = np.concatenate([rng.uniform(-0.1, 1.1, 20_000), np.linspace(0, 1, 1001)]).astype(dtype)
    rgba = render(_one_band(values).astype(dtype), {"min": 0, "max": 1, "palette": palette})
    if isinstance(palette, str) and "," not in palette:
        colours = np.asarray(colormaps[palette](np.linspace(0, 1, 256)))
    else:
        names = palette.split(",") if isinstance(palette, str) else palette
        colours = np.asarray([to_rgba("#" + c) for c in names])
    pos = np.clip(values.astype(np.float64), 0, 1) * (len(colours) - 1)
    exact = np.stack([np.interp(pos, np.arange(len(colours)), colours[:, c]) for c in range(4)], -1)
    diff = np.abs(rgba[0].astype(int) - np.rint(exact * 255).astype(int))
    assert diff.max() <= 1, diff.max()
    assert (diff == 0).mean() > 0.95  # off by one only at rounding boundaries


@pytest.mark.parametrize("palette", [{"a": 1}, [], ["not-a-colour"]])
def test_an_invalid_palette_is_an_input_error_not_a_cache_type_error(palette):
    with pytest.raises(InputError, match="(?i)palette|colour"):
        render(np.zeros((1, 2, 2)), {"palette": palette})


@pytest.mark.parametrize(
    "vis",
    [
        {"bands": ["b"], "min": -1, "max": 2, "palette": "viridis", "gamma": 1.5},
        {"bands": ["c", "a", "b"], "min": [0, -1, 0], "max": [1, 1, 3], "opacity": 0.5},
        {"bands": ["a"], "categorical": True, "min": 1, "palette": ["red", "00ff00", "#00f"]},
        {"bands": ["a"], "categorical": True, "palette": {0: "red", 2: "blue", 3: "lime"}},
    ],
)
def test_the_style_sent_to_the_browser_colours_as_render_does(vis):
    # What the layer syncs to the browser (tables as bytes) comes back as the same colouring.
    from ee_model_widgets.core.vis import VisStyle, vis_style

    rng = np.random.default_rng(1)
    data = rng.normal(1, 1, (3, 40, 50)).astype(np.float32)
    data[0] = np.rint(data[0])  # class values in band "a"
    data[:, :5] = np.nan
    names = ["a", "b", "c"]
    style = vis_style(vis, 3, names)
    back = VisStyle.from_browser_style(style.browser_style())
    shown = data[list(back.bands)]
    rgba = back.colour(shown, ~np.isfinite(shown).all(axis=0))
    expected = render(data, vis, band_names=names)
    assert np.array_equal(rgba, expected)
    assert expected[5:, :, 3].any() and not expected[:5].any()  # drawn, masked rows transparent

"""EE parameters: normalisation, aliases, validation messages, fingerprints."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

from ee_model_widgets.core.params import EEParams, parse_dtype
from ee_model_widgets.core.projection import Projection
from ee_model_widgets.errors import InputError


def test_sizes_accept_int_or_xy_list_and_output_defaults_to_input():
    p = EEParams.from_kwargs(input_tile_size=64, input_overlap_size=[4, 2])
    assert p.input_tile_size == (64, 64)
    assert p.overlap == (4, 2)
    assert p.output_tile_size == (64, 64)
    assert p.model_input_size == (72, 68)
    assert p.scale_factor == (1.0, 1.0)


def test_camel_case_names_mean_the_same_as_snake_case():
    snake = EEParams.from_kwargs(
        input_tile_size=[32, 16],
        input_overlap_size=[4, 4],
        output_tile_size=[16, 8],
        fix_input_proj=True,
        output_bands={"probs": {"type": "float", "dimensions": 1}},
        input_properties=["year"],
        output_multiplier=2,
    )
    camel = EEParams.from_kwargs(
        inputTileSize=[32, 16],
        inputOverlapSize=[4, 4],
        outputTileSize=[16, 8],
        fixInputProj=True,
        outputBands={"probs": {"type": "float", "dimensions": 1}},
        inputProperties=["year"],
        outputMultiplier=2,
    )
    assert snake == camel
    assert snake.fingerprint() == camel.fingerprint()
    assert camel.scale_factor == (2.0, 2.0)
    assert camel.output_overlap == (2.0, 2.0)


def test_total_overlap_mode_halves_the_overlap_per_edge():
    total = EEParams.from_kwargs(input_tile_size=192, input_overlap_size=64, overlap_mode="total")
    per_edge = EEParams.from_kwargs(input_tile_size=192, input_overlap_size=32)
    assert total.overlap == (32, 32)
    assert total.model_input_size == (256, 256) == per_edge.model_input_size
    # same pixels, same predictions: the cache may share them
    assert total.fingerprint() == per_edge.fingerprint()


def test_total_overlap_must_be_even():
    with pytest.raises(InputError, match=r"must be even.*\[4, 4\]"):
        EEParams.from_kwargs(input_tile_size=16, input_overlap_size=3, overlap_mode="total")


def test_unknown_overlap_mode():
    with pytest.raises(InputError, match="overlap_mode must be 'per_edge'.*'total'"):
        EEParams.from_kwargs(overlap_mode="both")


@pytest.mark.parametrize("overlap", [16, [8, 16], [20, 2]])
def test_overlap_at_least_the_tile_is_refused(overlap):
    with pytest.raises(
        InputError, match=r"input_overlap_size .* must be smaller than input_tile_size \[16, 16\]"
    ):
        EEParams.from_kwargs(input_tile_size=16, input_overlap_size=overlap)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"input_tile_size": 0}, r"input_tile_size must be positive, got \[0, 0\]"),
        ({"input_tile_size": [16, -2]}, r"input_tile_size must be positive, got \[16, -2\]"),
        ({"input_tile_size": [16, 16, 3]}, r"input_tile_size must be an int or a list \[x, y\]"),
        ({"input_tile_size": "16"}, r"input_tile_size must be an int or a list \[x, y\]"),
        ({"input_tile_size": 16, "output_tile_size": [0, 4]}, r"output_tile_size must be positive"),
        ({"input_overlap_size": -1, "input_tile_size": 8}, r"input_overlap_size must be non-negative"),
        ({"output_multiplier": 0.5}, r"output_multiplier must be a number >= 1.*0.5"),
        ({"output_multiplier": float("nan")}, r"output_multiplier must be a number >= 1"),
        ({"fix_input_proj": "yes"}, r"fix_input_proj must be True or False"),
        ({"output_tile_size": 8}, r"output_tile_size needs input_tile_size"),
        ({"output_bands": {}}, r"output_bands must be a non-empty dict"),
        ({"output_bands": {"x": {"type": "float", "dimensions": 3}}}, r"'dimensions' must be 0 .* got 3"),
        ({"output_bands": {"x": {"type": "complex"}}}, r"unknown type 'complex'"),
        ({"output_bands": {"x": {"typ": "float"}}}, r"unknown key\(s\) \['typ'\]"),
        (
            {"output_bands": {"x": {"type": "float", "dimensions": 1, "shape": [2, 2]}}},
            r"'shape' \[2, 2\] has 2 axes",
        ),
        ({"input_shapes": {"array": "4"}}, r"input_shapes\['array'\] must be a list"),
        ({"input_shapes": {"array": [0]}}, r"input_shapes\['array'\] must hold positive integers"),
        ({"input_type_override": {"B1": "text"}}, r"input_type_override\['B1'\]: unknown type 'text'"),
        ({"input_properties": [3]}, r"input_properties must be a list of names"),
        ({"proj": "EPSG:4326"}, r"proj must be an emw.Projection"),
    ],
)
def test_bad_values_say_what_to_change(kwargs, pattern):
    with pytest.raises(InputError, match=pattern):
        EEParams.from_kwargs(**kwargs)


def test_proj_without_scale_is_refused_with_a_fix():
    with pytest.raises(InputError, match=r"has no pixel size.*at_scale"):
        EEParams.from_kwargs(proj=Projection("EPSG:32719"))


def test_unknown_keyword_suggests_the_right_one():
    with pytest.raises(
        InputError, match=r"Unknown model parameter 'input_tile'\. Did you mean 'input_tile_size'\?"
    ):
        EEParams.from_kwargs(input_tile=16)
    with pytest.raises(InputError, match=r"'fixInputProjection'\. Did you mean 'fixInputProj'\?"):
        EEParams.from_kwargs(fixInputProjection=True)


def test_snake_and_camel_for_the_same_parameter_is_refused():
    with pytest.raises(
        InputError, match=r"given twice: 'input_tile_size' and 'inputTileSize'.*keep only one"
    ):
        EEParams.from_kwargs(input_tile_size=16, inputTileSize=16)


def test_output_bands_types_and_dimensions():
    p = EEParams.from_kwargs(
        output_bands={
            "cls": {"type": "uint8"},
            "probs": {"type": "float", "dimensions": 1, "shape": [3]},
            "ndvi": "double",
            "t": {"type": np.int16},
            "pt": {"type": "PixelType", "precision": "int", "min": 0, "max": 9},
        }
    )
    by = {b.name: b for b in p.output_bands}
    assert by["cls"].dtype == np.uint8 and by["cls"].dimensions == 0 and by["cls"].is_integer
    assert by["probs"].dimensions == 1 and by["probs"].shape == (3,)
    assert by["ndvi"].dtype == np.float64 and not by["ndvi"].is_integer
    assert by["t"].dtype == np.int16
    assert by["pt"].dtype == np.uint8


def test_parse_dtype_forms():
    assert parse_dtype("float", "x") == np.float32
    assert parse_dtype("int8", "x") == np.int8
    assert parse_dtype(np.dtype("uint16"), "x") == np.uint16
    assert parse_dtype({"type": "PixelType", "precision": "double"}, "x") == np.float64
    assert parse_dtype({"precision": "int", "min": -100, "max": 100}, "x") == np.int8
    with pytest.raises(InputError, match="not numeric"):
        parse_dtype(np.dtype("U3"), "x")


def test_fingerprint_changes_with_anything_that_changes_predictions():
    base = dict(input_tile_size=16, input_overlap_size=2, output_bands={"o": {"type": "float"}})
    fp = EEParams.from_kwargs(**base).fingerprint()
    assert fp == EEParams.from_kwargs(**base).fingerprint()  # stable
    variants = [
        dict(base, input_tile_size=32),
        dict(base, input_overlap_size=3),
        dict(base, output_tile_size=8),
        dict(base, output_bands={"o": {"type": "int8"}}),
        dict(base, fix_input_proj=True),
        dict(base, proj=Projection("EPSG:32719", Affine(10, 0, 0, 0, -10, 0))),
        dict(base, input_type_override={"B1": "int32"}),
    ]
    fps = {EEParams.from_kwargs(**v).fingerprint() for v in variants}
    assert fp not in fps and len(fps) == len(variants)


def test_params_are_frozen():
    p = EEParams.from_kwargs(input_tile_size=16)
    with pytest.raises(AttributeError):
        p.input_tile_size = (8, 8)


def test_accepted_output_sizes_padded_and_core():
    p = EEParams.from_kwargs(input_tile_size=8, input_overlap_size=2, output_tile_size=4)
    assert p.accepted_output_sizes() == [(6, 6), (4, 4)]
    # an overlap that is not a whole number of output pixels: only the core size fits
    q = EEParams.from_kwargs(input_tile_size=8, input_overlap_size=1, output_tile_size=2)
    assert q.accepted_output_sizes() == [(2, 2)]

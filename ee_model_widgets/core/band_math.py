"""Earth Engine's band-math methods on every `emw.Image` (snake_case, plus EE's camelCase).

Thin: each method builds a lazy `core.ops.DerivedImage`; see core/ops.py and core/masks.py for the rules
(band pairing, masks, division by zero) and core/expression.py for `expression`.

Python operators follow numpy and xarray, not the Earth Engine client library (which has
none): `+ - * / ** %` and `< <= > >= == !=` build lazy images, as do `& | ^ ~` (logical
and/or/xor/not of non-zero pixels). So `img == 1` is `img.eq(1)`, an image, not a bool;
`bool(img)` raises, as `bool(numpy_array)` does, so `if img == other:` cannot pass
silently. Images stay hashable by identity (caches and dicts keyed by images keep
working); use `a is b` to ask whether two images are the same object.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from . import masks, ops
from .expression import evaluate
from .image import Image, extends


@extends(Image)
class BandMath:
    """Added to `Image`: per-pixel operations with Earth Engine's names."""

    # ---- arithmetic --------------------------------------------------------------------------
    def add(self, other):
        """Pixelwise sum (EE `add`); `other` is an image or a number."""
        return ops.apply_binary(self, other, "add")

    def subtract(self, other):
        """Pixelwise difference (EE `subtract`)."""
        return ops.apply_binary(self, other, "subtract")

    def multiply(self, other):
        """Pixelwise product (EE `multiply`)."""
        return ops.apply_binary(self, other, "multiply")

    def divide(self, other):
        """Pixelwise quotient; division by zero gives 0, as Earth Engine's `divide` does."""
        return ops.apply_binary(self, other, "divide")

    def mod(self, other):
        """Remainder with the sign of the dividend (EE `mod`); modulo zero gives 0."""
        return ops.apply_binary(self, other, "mod")

    def pow(self, other):
        """`self` raised to `other` (EE `pow`); non-finite results are masked."""
        return ops.apply_binary(self, other, "pow")

    def min(self, other):
        """Pixelwise minimum of two operands (EE `min`)."""
        return ops.apply_binary(self, other, "min")

    def max(self, other):
        """Pixelwise maximum of two operands (EE `max`)."""
        return ops.apply_binary(self, other, "max")

    # ---- comparisons and logic (0/1 results) ---------------------------------------------------
    def gt(self, other):
        """1 where `self > other`, else 0 (EE `gt`)."""
        return ops.apply_binary(self, other, "gt")

    def gte(self, other):
        """1 where `self >= other` (EE `gte`)."""
        return ops.apply_binary(self, other, "gte")

    def lt(self, other):
        """1 where `self < other` (EE `lt`)."""
        return ops.apply_binary(self, other, "lt")

    def lte(self, other):
        """1 where `self <= other` (EE `lte`)."""
        return ops.apply_binary(self, other, "lte")

    def eq(self, other):
        """1 where `self == other` (EE `eq`)."""
        return ops.apply_binary(self, other, "eq")

    def neq(self, other):
        """1 where `self != other` (EE `neq`)."""
        return ops.apply_binary(self, other, "neq")

    def And(self, other):  # noqa: N802 - Earth Engine's Python name (`and` is a keyword)
        """1 where both are non-zero (EE `And`)."""
        return ops.apply_binary(self, other, "and")

    def Or(self, other):  # noqa: N802
        """1 where either is non-zero (EE `Or`)."""
        return ops.apply_binary(self, other, "or")

    def Not(self):  # noqa: N802
        """1 where the pixel is zero, else 0 (EE `Not`)."""
        return ops.apply_unary(self, "not")

    # ---- math functions -----------------------------------------------------------------------------
    def abs(self):
        """Absolute value (EE `abs`)."""
        return ops.apply_unary(self, "abs")

    def sqrt(self):
        """Square root; negative pixels are masked."""
        return ops.apply_unary(self, "sqrt")

    def exp(self):
        """e to the pixel value."""
        return ops.apply_unary(self, "exp")

    def log(self):
        """Natural logarithm; pixels <= 0 are masked."""
        return ops.apply_unary(self, "log")

    def log10(self):
        """Base-10 logarithm; pixels <= 0 are masked."""
        return ops.apply_unary(self, "log10")

    def floor(self):
        """Largest integer <= the value."""
        return ops.apply_unary(self, "floor")

    def ceil(self):
        """Smallest integer >= the value."""
        return ops.apply_unary(self, "ceil")

    def round(self):
        """Nearest integer, halves rounded up (EE `round`)."""
        return ops.apply_unary(self, "round")

    # ---- masks ------------------------------------------------------------------------------------------
    def update_mask(self, mask):
        """Also mask pixels where `mask` (an image, one band or one per band, or a number) is 0 or masked."""
        return masks.update_mask(self, mask)

    def self_mask(self):
        """Mask the pixels whose value is 0 (EE `selfMask`): `pred.gt(0.5).self_mask()`."""
        return masks.self_mask(self)

    def unmask(self, value=0, same_footprint: bool = True, sameFootprint: bool | None = None):  # noqa: N803
        """Fill masked pixels with `value` (a number or an image); outside the extent stays masked
        unless `same_footprint=False` (EE's `sameFootprint`)."""
        return masks.unmask(self, value, same_footprint if sameFootprint is None else sameFootprint)

    def where(self, test, value):
        """Take `value` where `test` is non-zero (EE `where`): `img.where(img.lt(0), 0)`."""
        return ops.where(self, test, value)

    def clip(self, region):
        """Mask pixels outside `region` (lon/lat bbox or GeoJSON/shapely geometry); EE `clip`."""
        return masks.clip(self, region)

    # ---- bands ---------------------------------------------------------------------------------------------
    def normalized_difference(self, band_names: Sequence[str] | None = None):
        """(a - b) / (a + b) of two bands as band "nd" (EE `normalizedDifference`)."""
        return ops.normalized_difference(self, band_names)

    def expression(self, expression: str, map: Mapping | None = None):  # noqa: A002 - EE's name
        """Evaluate an Earth Engine expression, e.g. "(b('nir') - b('red')) / (b('nir') + b('red'))".

        `map` names further images (or numbers) used as variables. Parsed by a small safe
        evaluator (core/expression.py), never by Python's eval.
        """
        return evaluate(self, expression, map)

    def add_bands(self, src_img, names=None, overwrite: bool = False):
        """This image's bands followed by `src_img`'s (or those `names` selects); EE `addBands`."""
        return ops.add_bands(self, src_img, names, overwrite)

    def argmax(self, name: str = "argmax"):
        """One band: the index of the largest band at each pixel (the class of a probability stack)."""
        return ops.argmax(self, name)

    # ---- Earth Engine's camelCase spellings -----------------------------------------------------
    def updateMask(self, mask):  # noqa: N802
        """Earth Engine spelling of `update_mask`."""
        return self.update_mask(mask)

    def selfMask(self):  # noqa: N802
        """Earth Engine spelling of `self_mask`."""
        return self.self_mask()

    def normalizedDifference(self, bandNames=None):  # noqa: N802, N803
        """Earth Engine spelling of `normalized_difference`."""
        return self.normalized_difference(bandNames)

    def addBands(self, srcImg, names=None, overwrite=False):  # noqa: N802, N803
        """Earth Engine spelling of `add_bands`."""
        return self.add_bands(srcImg, names, overwrite)

    # ---- Python operators (numpy/xarray semantics; see the module docstring) --------------------
    # Operands other than images and numbers give NotImplemented, so Python answers as usual
    # (`img == None` is False, `img + "a"` a TypeError).
    def __add__(self, other):
        return _op(self, other, "add")

    def __sub__(self, other):
        return _op(self, other, "subtract")

    def __mul__(self, other):
        return _op(self, other, "multiply")

    def __truediv__(self, other):
        return _op(self, other, "divide")

    def __mod__(self, other):
        return _op(self, other, "mod")

    def __pow__(self, other):
        return _op(self, other, "pow")

    def __gt__(self, other):
        return _op(self, other, "gt")

    def __ge__(self, other):
        return _op(self, other, "gte")

    def __lt__(self, other):
        return _op(self, other, "lt")

    def __le__(self, other):
        return _op(self, other, "lte")

    def __eq__(self, other):  # type: ignore[override]
        return _op(self, other, "eq")

    def __ne__(self, other):  # type: ignore[override]
        return _op(self, other, "neq")

    # Identity hashing stays (defining __eq__ would otherwise remove it).
    __hash__ = object.__hash__

    def __and__(self, other):
        return _op(self, other, "and")

    def __or__(self, other):
        return _op(self, other, "or")

    def __xor__(self, other):
        return _op(self, other, "xor")

    def __radd__(self, other):
        return _op(other, self, "add")

    def __rsub__(self, other):
        return _op(other, self, "subtract")

    def __rmul__(self, other):
        return _op(other, self, "multiply")

    def __rtruediv__(self, other):
        return _op(other, self, "divide")

    def __rmod__(self, other):
        return _op(other, self, "mod")

    def __rpow__(self, other):
        return _op(other, self, "pow")

    def __rand__(self, other):
        return _op(other, self, "and")

    def __ror__(self, other):
        return _op(other, self, "or")

    def __rxor__(self, other):
        return _op(other, self, "xor")

    def __invert__(self):
        return self.Not()

    def __neg__(self):
        return ops.apply_binary(self, -1.0, "multiply")

    def __abs__(self):
        return self.abs()

    def __bool__(self):
        raise TypeError(
            "The truth value of an emw.Image is ambiguous: comparisons build lazy images "
            "(img == 1 is img.eq(1)). Use `a is b` to compare images, `img is not None` to test one."
        )


def _op(a, b, name: str):
    """`a <name> b` for the Python operators, or NotImplemented for foreign operands."""
    for x in (a, b):
        if not isinstance(x, Image) and not ops.is_scalar(x):
            return NotImplemented
    return ops.apply_binary(a, b, name)

"""Lazy per-pixel operations on images (Earth Engine's band math), read window by window.

Each operation returns a `DerivedImage` (core/derived.py): computed from its parents'
pixels for the window being read, never from whole-image arrays. Masking operations live in
core/masks.py.

Earth Engine's rules (ee.Image.add and friends):
- Operands are images or numbers (a number is a one-band constant without masked pixels).
- Bands pair up in order; a one-band operand is used against every band of the other;
  otherwise the band counts must match. Output bands are named after the operand with
  more bands, or after the first operand when the counts are equal.
- A pixel masked in any operand is masked in the result (`unmask` fills, `where` keeps
  its input where the test or the value is masked).
- `divide` (and `mod`) by zero give 0, not infinity.

Where we differ, on purpose: pixel values are float32 throughout (the `Image.read`
contract), so there is no integer arithmetic (EE truncates int/int divisions), and a
result that is not a finite number (e.g. `log` of a negative) is masked instead of
being kept as NaN/inf (NaN means "no data" everywhere in this package).

The output image has the grid (projection and extent) of its first image operand; reads
on any other grid read the parents on that grid (each parent band with its own default
resampling), then compute, like Earth Engine computes band math in the requested
projection.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from ..errors import InputError
from .derived import DerivedImage, Kernel
from .image import Image

Number = (int, float, np.integer, np.floating)


# ---- operands ------------------------------------------------------------------------------------
def _is_number(v) -> bool:
    return isinstance(v, Number) and not isinstance(v, bool)


def is_scalar(v) -> bool:
    """A number (or bool) usable as a constant operand."""
    return isinstance(v, (*Number, bool, np.bool_))


def operand(v, op: str):
    """An Image, or a number as float (booleans count as 0/1, like Earth Engine)."""
    if isinstance(v, Image):
        return v
    if isinstance(v, (bool, np.bool_)):
        return float(v)
    if _is_number(v):
        f = float(v)
        if not math.isfinite(f):
            raise InputError(f"{op}: the number {v!r} is not finite; use a finite constant.")
        return f
    raise InputError(
        f"{op} takes an emw.Image or a number, got {type(v).__name__}: wrap arrays with "
        "emw.Image.from_array(arr, transform=, crs=)."
    )


def _pairing(a, b, op: str) -> tuple[list[str], list, list]:
    """Earth Engine's band pairing: (output names, per-output input of a, of b).

    An input is (parent index, band) for images (parents are the image operands in order),
    None for numbers.
    """
    na = len(a.band_names) if isinstance(a, Image) else 1
    nb = len(b.band_names) if isinstance(b, Image) else 1
    if na != nb and na != 1 and nb != 1:
        raise InputError(
            f"{op}: the images have {na} bands {a.band_names} and {nb} bands {b.band_names}; "
            "Earth Engine pairs bands in order, so they need the same number of bands or one of them "
            "one band. select() the bands to combine."
        )
    n = max(na, nb)
    names = a.band_names if isinstance(a, Image) and na == n else b.band_names
    ia = 0 if isinstance(a, Image) else None
    ib = (1 if ia == 0 else 0) if isinstance(b, Image) else None

    def inputs(x, idx, k):
        if idx is None:
            return None
        bands = x.band_names
        return (idx, bands[0] if len(bands) == 1 else bands[k])

    return names, [inputs(a, ia, k) for k in range(n)], [inputs(b, ib, k) for k in range(n)]


def binary(a, b, op: str, fn: Callable, categorical: bool = False) -> Image:
    """`fn(a_values, b_values)` band by band with Earth Engine's pairing; masks are OR-ed."""
    a, b = operand(a, op), operand(b, op)
    if not isinstance(a, Image) and not isinstance(b, Image):
        raise InputError(f"{op} needs at least one image operand.")
    parents = [x for x in (a, b) if isinstance(x, Image)]
    names, ins_a, ins_b = _pairing(a, b, op)
    outputs = {}
    for k, name in enumerate(names):
        ia, ib = ins_a[k], ins_b[k]
        inputs = [x for x in (ia, ib) if x is not None]
        outputs[name] = (
            inputs,
            _binary_kernel(fn, None if ia is not None else a, None if ib is not None else b),
        )
    params = [a if not isinstance(a, Image) else "img", b if not isinstance(b, Image) else "img"]
    # With a number, masked pixels (0 in a read) stay 0 when fn(0, number) is 0, e.g. `gt(0.5)`.
    zero = False
    if len(parents) == 1:
        zero = _is_zero(fn, 0.0, b) if isinstance(a, Image) else _is_zero(fn, a, 0.0)
    cat = names if categorical else ()
    return DerivedImage(
        op, parents, outputs, params, cat, finite=categorical, keeps_masks="every", zero_masked=zero
    )


def _is_zero(fn: Callable, *args: float) -> bool:
    """Whether `fn` gives exactly 0 for these float32 scalars (a kernel's value at masked pixels)."""
    with np.errstate(all="ignore"):
        return bool(np.asarray(fn(*(np.float32(x) for x in args))) == 0)


def _binary_kernel(fn: Callable, const_a, const_b) -> Kernel:
    if const_a is not None or const_b is not None:  # image and number: the image's mask
        const = np.float32(const_a if const_a is not None else const_b)

        def with_number(values, masks, _grid):
            v = values[0]
            return (fn(const, v) if const_a is not None else fn(v, const)), masks[0]

        return with_number

    def kernel(values, masks, _grid):
        return fn(values[0], values[1]), np.logical_or(masks[0], masks[1])

    return kernel


def unary(image: Image, op: str, fn: Callable, categorical: bool | None = None) -> Image:
    """`fn(values)` on every band; the mask is kept. `categorical` None keeps the input's flags."""
    image = as_image(image, op)
    names = image.band_names
    outputs = {n: ([(0, n)], lambda v, m, _g: (fn(v[0]), m[0])) for n in names}
    cat = image.categorical_bands if categorical is None else (names if categorical else ())
    finite = op in ("not", "abs", "floor", "ceil", "round")
    return DerivedImage(
        op, [image], outputs, (), cat, finite=finite, keeps_masks="every", zero_masked=_is_zero(fn, 0.0)
    )


def as_image(x, op: str) -> Image:
    if not isinstance(x, Image):
        raise InputError(f"{op} needs an emw.Image, got {type(x).__name__}.")
    return x


# ---- the arithmetic and logic of Earth Engine ------------------------------------------------------
# Divide everywhere, then put 0 where the divisor is 0: a tenth of the time of selecting the
# divisor first with np.where (called under np.errstate(all="ignore") by reads).
def _divide(a, b):
    q = np.asarray(np.divide(a, b))
    np.copyto(q, 0, where=np.equal(b, 0))
    return q


def _mod(a, b):
    r = np.asarray(np.fmod(a, b))
    np.copyto(r, 0, where=np.equal(b, 0))
    return r


BINARY: dict[str, tuple[Callable, bool]] = {
    "add": (np.add, False),
    "subtract": (np.subtract, False),
    "multiply": (np.multiply, False),
    "divide": (_divide, False),
    "mod": (_mod, False),
    "pow": (np.power, False),
    "min": (np.minimum, False),
    "max": (np.maximum, False),
    "gt": (np.greater, True),
    "gte": (np.greater_equal, True),
    "lt": (np.less, True),
    "lte": (np.less_equal, True),
    "eq": (np.equal, True),
    "neq": (np.not_equal, True),
    "and": (lambda a, b: (a != 0) & (b != 0), True),
    "or": (lambda a, b: (a != 0) | (b != 0), True),
    "xor": (lambda a, b: (a != 0) ^ (b != 0), True),
}

#: Per-pixel math functions with Earth Engine's names (ee.Image.abs, .sqrt, ...).
UNARY: dict[str, Callable] = {
    "abs": np.abs,
    "sqrt": np.sqrt,
    "exp": np.exp,
    "log": np.log,
    "log10": np.log10,
    "floor": np.floor,
    "ceil": np.ceil,
    "round": lambda v: np.floor(v + np.float32(0.5)),  # EE/Java rounds halves up, numpy to even
    "sin": np.sin,
    "cos": np.cos,
    "tan": np.tan,
    "asin": np.arcsin,
    "acos": np.arccos,
    "atan": np.arctan,
    "signum": np.sign,
    "not": lambda v: v == 0,
}


def apply_binary(a, b, op: str) -> Image:
    fn, cat = BINARY[op]
    return binary(a, b, op, fn, cat)


def apply_unary(image, op: str) -> Image:
    return unary(image, op, UNARY[op], categorical=True if op == "not" else None)


# ---- one band against many -----------------------------------------------------------------------------------------
def broadcast_bands(image: Image, other: Image | float, op: str) -> list:
    """Inputs of `other` for each band of `image` (one band is used for all, else same count)."""
    if not isinstance(other, Image):
        return [None] * len(image.band_names)
    n, m = len(image.band_names), len(other.band_names)
    if m == 1:
        return [other.band_names[0]] * n
    if m != n:
        raise InputError(
            f"{op}: the second image has {m} bands {other.band_names}; it needs one band or as many as "
            f"the image ({n}: {image.band_names}). select() one band."
        )
    return list(other.band_names)


def where(image: Image, test, value) -> Image:
    """Where `test` is non-zero, take `value`; elsewhere (or where test/value are masked) keep
    `image`. Masked input pixels stay masked (EE's where)."""
    image = as_image(image, "where")
    test, value = operand(test, "where"), operand(value, "where")
    pick_t, pick_v = broadcast_bands(image, test, "where"), broadcast_bands(image, value, "where")
    parents = [image] + [x for x in (test, value) if isinstance(x, Image)]
    ti = 1 if isinstance(test, Image) else None
    vi = (2 if ti else 1) if isinstance(value, Image) else None

    def kernel(values, masks, _g):
        it = iter(zip(values[1:], masks[1:]))
        tv, tm = next(it) if ti else (np.float32(test), False)
        vv, vm = next(it) if vi else (np.float32(value), False)
        use = (tv != 0) & ~tm & ~vm
        return np.where(use, vv, values[0]), masks[0]

    outputs = {}
    for k, n in enumerate(image.band_names):
        inputs = [(0, n)]
        if ti:
            inputs.append((ti, pick_t[k]))
        if vi:
            inputs.append((vi, pick_v[k]))
        outputs[n] = (inputs, kernel)
    params = [None if ti else test, None if vi else value]
    return DerivedImage(
        "where", parents, outputs, params, image.categorical_bands, finite=True, keeps_masks="first"
    )


def conditional(test, a, b) -> Image:
    """`test ? a : b` per pixel (the expression language's ternary); masked where the test,
    or the chosen value, is masked."""
    test, a, b = (operand(x, "?:") for x in (test, a, b))
    if not isinstance(test, Image):
        return a if test != 0 else b
    names = _pairing(a, b, "?:")[0] if (isinstance(a, Image) or isinstance(b, Image)) else test.band_names
    parents = [test] + [x for x in (a, b) if isinstance(x, Image)]
    ai = 1 if isinstance(a, Image) else None
    bi = (2 if ai else 1) if isinstance(b, Image) else None

    def pick(x, k):
        return x.band_names[0] if len(x.band_names) == 1 else x.band_names[k]

    if len(test.band_names) not in (1, len(names)):
        raise InputError(f"?: the test has {len(test.band_names)} bands; it needs one or {len(names)}.")

    def kernel(values, masks, _g):
        it = iter(zip(values[1:], masks[1:]))
        av, am = next(it) if ai else (np.float32(a), False)
        bv, bm = next(it) if bi else (np.float32(b), False)
        c = values[0] != 0
        return np.where(c, av, bv), masks[0] | np.where(c, am, bm)

    outputs = {}
    for k, n in enumerate(names):
        inputs = [(0, pick(test, k))]
        if ai:
            inputs.append((ai, pick(a, k)))
        if bi:
            inputs.append((bi, pick(b, k)))
        outputs[n] = (inputs, kernel)
    params = [None if ai else a, None if bi else b]
    return DerivedImage("conditional", parents, outputs, params, finite=True, keeps_masks="first")


# ---- band-combining operations ------------------------------------------------------------------
def normalized_difference(image: Image, band_names: Sequence | None = None) -> Image:
    """(first - second) / (first + second) as band "nd"; masked where either input is negative
    (as Earth Engine documents), 0 where the sum is 0."""
    image = as_image(image, "normalized_difference")
    if band_names is None:
        if len(image.band_names) < 2:
            raise InputError(
                f"normalized_difference needs two bands; this image has {image.band_names}: pass band_names=[a, b]."
            )
        pair = image.band_names[:2]
    else:
        if isinstance(band_names, str) or len(band_names) != 2:
            raise InputError(f"normalized_difference takes a list of two band names, got {band_names!r}.")
        pair = [image.select(b).band_names[0] for b in band_names]

    def kernel(values, masks, _g):
        a, b = values
        return _divide(a - b, a + b), masks[0] | masks[1] | (a < 0) | (b < 0)

    outputs = {"nd": ([(0, pair[0]), (0, pair[1])], kernel)}
    return DerivedImage("normalized_difference", [image], outputs, keeps_masks="every")


def argmax(image: Image, name: str = "argmax") -> Image:
    """The 0-based index of the band with the largest value (the first on ties): a class band.
    Masked where any band is masked."""
    image = as_image(image, "argmax")
    names = image.band_names

    def kernel(values, masks, _g):
        return np.argmax(np.stack(values), axis=0).astype(np.float32), np.logical_or.reduce(masks)

    return DerivedImage(
        "argmax",
        [image],
        {str(name): ([(0, n) for n in names], kernel)},
        (),
        [str(name)],
        finite=True,
        keeps_masks="every",
    )


def _identity(values, masks, _g):
    return values[0], masks[0]


def add_bands(image: Image, other: Image, names=None, overwrite: bool = False) -> Image:
    """`image`'s bands then `other`'s (or those `names` selects); EE's addBands.

    A band name already in `image` is an error unless `overwrite=True`, which replaces it
    in place. The result keeps `image`'s grid (extent and projection).
    """
    image, other = as_image(image, "add_bands"), as_image(other, "add_bands")
    if names is not None:
        other = other.select(names if isinstance(names, str) else list(names))
    outputs: dict[str, tuple[list[tuple[int, str]], Kernel]] = {
        n: ([(0, n)], _identity) for n in image.band_names
    }
    clash = [n for n in other.band_names if n in outputs]
    if clash and not overwrite:
        raise InputError(
            f"add_bands: band(s) {clash} are in both images; rename() one of them or pass overwrite=True."
        )
    for n in other.band_names:
        outputs[n] = ([(1, n)], _identity)
    cat = {n for n in image.band_names if n in image.categorical_bands and n not in other.band_names}
    cat |= set(other.categorical_bands)
    return DerivedImage(
        "add_bands",
        [image, other],
        outputs,
        [bool(overwrite)],
        sorted(cat),
        finite=True,
        keeps_masks="every",
        zero_masked=True,
    )

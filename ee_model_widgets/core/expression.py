"""`Image.expression`: Earth Engine's expression language, parsed and evaluated safely.

    img.expression("(b('nir') - b('red')) / (b('nir') + b('red'))")
    img.expression("ndvi = (NIR - RED) / (NIR + RED)", {"NIR": img.select("B8"), "RED": img.select("B4")})
    img.expression("2.5 * (n - r) / (n + 6 * r - 7.5 * bl + 1)", {"n": nir, "r": red, "bl": blue})

The grammar is Earth Engine's (C/JavaScript-like): numbers, 'strings', `+ - * / % **`,
`== != < <= > >=`, `&& || ! ^` (logical), `c ? a : b`, parentheses, `b(...)` for bands of
the image the method is called on (by index or name, several at once, none = all),
variables from `map` (images or numbers) with `var.band` / `var[0]` / `var['band']`, the
math functions `abs sqrt exp log log10 floor ceil round sin cos tan asin acos atan min max
pow`, and one leading `name = ...` to name a one-band result.

A hand-written tokenizer and recursive-descent parser build a small tree of tuples, and the
evaluator maps each node to a lazy band-math operation (core/ops.py). Nothing is ever
handed to Python's `eval`/`exec`/`compile`: an identifier is a map variable, `b` or a
whitelisted function, and anything else is refused with an error naming it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from ..errors import InputError
from . import ops
from .image import Image

#: Longest expression accepted, and deepest nesting (bounded recursion, bounded work).
MAX_LENGTH = 10_000
MAX_DEPTH = 100

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<str>'[^'\\]*'|"[^"\\]*")
    | (?P<name>[A-Za-z_][A-Za-z_0-9]*)
    | (?P<op>\*\*|==|!=|<=|>=|&&|\|\||[-+*/%<>!^?:()\[\],.=])
    )""",
    re.VERBOSE,
)

# Binary operators: precedence (higher binds tighter) and the band-math operation.
_BINARY = {
    "||": (1, "or"),
    "&&": (2, "and"),
    "^": (3, "xor"),
    "==": (4, "eq"),
    "!=": (4, "neq"),
    "<": (5, "lt"),
    "<=": (5, "lte"),
    ">": (5, "gt"),
    ">=": (5, "gte"),
    "+": (6, "add"),
    "-": (6, "subtract"),
    "*": (7, "multiply"),
    "/": (7, "divide"),
    "%": (7, "mod"),
    "**": (9, "pow"),  # right-associative, binds tighter than unary minus on its left
}
_UNARY_PRECEDENCE = 8
_FUNCTIONS_1 = {
    "abs",
    "sqrt",
    "exp",
    "log",
    "log10",
    "floor",
    "ceil",
    "round",
    "sin",
    "cos",
    "tan",
    "asin",
    "acos",
    "atan",
}
_FUNCTIONS_2 = {"min": "min", "max": "max", "pow": "pow"}


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            bad = text[pos:].lstrip()[:1]
            raise InputError(
                f"expression: unexpected character {bad!r} at position {len(text) - len(text[pos:].lstrip())}; "
                "the language has numbers, 'strings', band names, + - * / % ** == != < <= > >= && || ! ^ ?: ( )."
            )
        kind = m.lastgroup
        out.append((kind, m.group(kind), m.start(kind)))
        pos = m.end()
    out.append(("end", "", len(text)))
    return out


class _Parser:
    """Recursive descent over the token list; nodes are tuples ("kind", ...)."""

    def __init__(self, text: str):
        self.text = text
        self.toks = _tokens(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> tuple[str, str, int]:
        return self.toks[self.i]

    def take(self, value: str | None = None) -> tuple[str, str, int]:
        tok = self.toks[self.i]
        if value is not None and tok[1] != value:
            self.fail(f"expected {value!r}", tok)
        self.i += 1
        return tok

    def fail(self, what: str, tok) -> None:
        found = "the end" if tok[0] == "end" else repr(tok[1])
        raise InputError(f"expression: {what} at position {tok[2]}, found {found}, in {self.text!r}.")

    def program(self):
        name = None
        if self.toks[0][0] == "name" and self.toks[1][1] == "=":
            name = self.take()[1]
            self.take("=")
        node = self.expr(0)
        if self.peek()[0] != "end":
            self.fail("expected an operator or the end", self.peek())
        return name, node

    def expr(self, min_prec: int):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise InputError(f"expression: nested more than {MAX_DEPTH} levels deep; simplify it.")
        left = self.unary()
        while True:
            tok = self.peek()
            if tok[1] == "?" and min_prec == 0:
                self.take()
                a = self.expr(0)
                self.take(":")
                b = self.expr(0)
                left = ("cond", left, a, b)
                continue
            if tok[0] != "op" or tok[1] not in _BINARY:
                break
            prec, name = _BINARY[tok[1]]
            if prec < max(min_prec, 1):
                break
            self.take()
            right = self.expr(prec if tok[1] == "**" else prec + 1)
            left = ("bin", name, left, right)
        self.depth -= 1
        return left

    def unary(self):
        tok = self.peek()
        if tok[1] in ("-", "+", "!"):
            self.take()
            operand = self.expr(_UNARY_PRECEDENCE)
            return {"-": ("neg", operand), "+": operand, "!": ("not", operand)}[tok[1]]
        return self.postfix(self.primary())

    def primary(self):
        tok = self.take()
        kind, value = tok[0], tok[1]
        if kind == "num":
            return ("num", float(value))
        if kind == "str":
            return ("str", value[1:-1])
        if value == "(":
            node = self.expr(0)
            self.take(")")
            return node
        if kind == "name":
            if self.peek()[1] == "(":
                if value != "b" and value not in _FUNCTIONS_1 and value not in _FUNCTIONS_2:
                    known = ", ".join(sorted({"b", *_FUNCTIONS_1, *_FUNCTIONS_2}))
                    raise InputError(
                        f"expression: unknown function {value!r} at position {tok[2]}; the functions are {known}."
                    )
                self.take("(")
                args = []
                if self.peek()[1] != ")":
                    args.append(self.expr(0))
                    while self.peek()[1] == ",":
                        self.take()
                        args.append(self.expr(0))
                self.take(")")
                return ("call", value, args, tok[2])
            return ("var", value, tok[2])
        self.fail("expected a number, a band, a variable or '('", tok)

    def postfix(self, node):
        while True:
            tok = self.peek()
            if tok[1] == ".":
                self.take()
                name = self.take()
                if name[0] != "name":
                    self.fail("expected a band name after '.'", name)
                node = ("bands", node, [("str", name[1])])
            elif tok[1] == "[":
                self.take()
                args = [self.expr(0)]
                while self.peek()[1] == ",":
                    self.take()
                    args.append(self.expr(0))
                self.take("]")
                node = ("bands", node, args)
            else:
                return node


def evaluate(image: Image, text: str, variables: Mapping[str, Any] | None = None) -> Image:
    """The lazy image `text` computes from `image` (bands via `b()`) and `variables`."""
    if not isinstance(text, str):
        raise InputError(f"expression must be a string, got {type(text).__name__}.")
    if len(text) > MAX_LENGTH:
        raise InputError(f"expression is {len(text):,} characters long (limit {MAX_LENGTH:,}); simplify it.")
    env: dict[str, Any] = {}
    for k, v in dict(variables or {}).items():
        if not isinstance(k, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z_0-9]*", k):
            raise InputError(f"expression: map key {k!r} is not a valid variable name (letters, digits, _).")
        if not isinstance(v, Image) and not ops.is_scalar(v):
            raise InputError(
                f"expression: variable {k!r} must be an emw.Image or a number, got {type(v).__name__}."
            )
        env[k] = v if isinstance(v, Image) else float(v)
    name, tree = _Parser(text).program()
    depth = _depth(tree)
    if depth > MAX_DEPTH:  # long chains like a + b + c + ... nest to the left without parentheses
        raise InputError(
            f"expression: {depth} operations deep (limit {MAX_DEPTH}); split it into several expressions."
        )
    result = _Evaluator(image, env, text).eval(tree)
    if not isinstance(result, Image):
        raise InputError(
            f"expression {text!r} uses no band, so it is a constant ({result:g}): use b(...) or a variable."
        )
    if name is not None:
        if len(result.band_names) != 1:
            raise InputError(
                f"expression: '{name} = ...' names a one-band result, but this one has bands {result.band_names}."
            )
        result = result.rename([name])
    return result


def _depth(tree) -> int:
    """Depth of the parse tree, without recursion (a 10,000-character chain is 2,000 deep)."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        for child in node[1:]:
            if isinstance(child, tuple):
                stack.append((child, d + 1))
            elif isinstance(child, list):
                stack.extend((c, d + 1) for c in child if isinstance(c, tuple))
    return deepest


class _Evaluator:
    def __init__(self, image: Image, env: dict[str, Any], text: str):
        self.image, self.env, self.text = image, env, text

    def eval(self, node):
        kind = node[0]
        if kind == "num":
            return node[1]
        if kind == "str":
            raise InputError(
                f"expression: the string {node[1]!r} can only name a band, as in b('{node[1]}')."
            )
        if kind == "var":
            if node[1] not in self.env:
                self._unknown(node[1], node[2])
            return self.env[node[1]]
        if kind == "bands":
            target = self.eval(node[1])
            if not isinstance(target, Image):
                raise InputError("expression: only images have bands ('.band' or '[...]' on a number).")
            return self._select(target, node[2])
        if kind == "call":
            return self._call(node[1], node[2], node[3])
        if kind == "neg":
            v = self.eval(node[1])
            return -v if not isinstance(v, Image) else ops.apply_binary(v, -1.0, "multiply")
        if kind == "not":
            v = self.eval(node[1])
            return float(v == 0) if not isinstance(v, Image) else ops.apply_unary(v, "not")
        if kind == "cond":
            return ops.conditional(self.eval(node[1]), self.eval(node[2]), self.eval(node[3]))
        if kind == "bin":
            return self._binary(node[1], self.eval(node[2]), self.eval(node[3]))
        raise AssertionError(node)  # pragma: no cover - the parser makes no other node

    def _binary(self, op: str, a, b):
        if not isinstance(a, Image) and not isinstance(b, Image):
            return _constant(op, a, b)
        out = ops.apply_binary(a, b, op)
        # Earth Engine turns a number into a one-band image named "constant"; between two one-
        # band operands the first one names the result.
        if not isinstance(a, Image) and len(b.band_names) == 1:
            out = out.rename(["constant"])
        return out

    def _select(self, image: Image, args) -> Image:
        picks = []
        for a in args:
            if a[0] == "str":
                picks.append(a[1])
            else:
                v = self.eval(a)
                if isinstance(v, Image) or v != int(v):
                    raise InputError("expression: bands are picked by name ('nir') or integer index (0).")
                picks.append(int(v))
        return image.select(picks) if picks else image

    def _call(self, name: str, args, pos: int):
        if name == "b":
            return self._select(self.image, args)
        if name in _FUNCTIONS_1:
            if len(args) != 1:
                raise InputError(f"expression: {name}() takes one argument, got {len(args)}.")
            v = self.eval(args[0])
            if not isinstance(v, Image):
                return _constant_fn(name, v)
            return ops.apply_unary(v, name)
        if name in _FUNCTIONS_2:
            if len(args) != 2:
                raise InputError(f"expression: {name}() takes two arguments, got {len(args)}.")
            return self._binary(_FUNCTIONS_2[name], self.eval(args[0]), self.eval(args[1]))
        self._unknown(name, pos, call=True)

    def _unknown(self, name: str, pos: int, call: bool = False):
        if call:
            known = ", ".join(sorted({"b", *_FUNCTIONS_1, *_FUNCTIONS_2}))
            raise InputError(
                f"expression: unknown function {name!r} at position {pos}; the functions are {known}."
            )
        have = ", ".join(sorted(self.env)) or "none (pass them in the map argument)"
        raise InputError(
            f"expression: unknown name {name!r} at position {pos}: variables are {have}; "
            f"bands of the image are b('name') or b(index)."
        )


def _constant(op: str, a: float, b: float) -> float:
    """A binary operation on two numbers, with the image operations' rules (x/0 = 0)."""
    if op in ("divide", "mod") and b == 0:
        return 0.0
    fn, _cat = ops.BINARY[op]
    try:
        return float(fn(a, b))
    except (OverflowError, ValueError, ZeroDivisionError):
        return math.nan


def _constant_fn(name: str, v: float) -> float:
    try:
        return float(ops.UNARY[name](v))
    except (OverflowError, ValueError):
        return math.nan

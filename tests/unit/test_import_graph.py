"""The package's house rules, read from its source (AST): no import cycles, core below widgets, small modules.

Every import that runs counts, including those inside functions (a function-local import hides
a cycle, it does not remove it). Only imports under `if TYPE_CHECKING:` are left out: Python never
runs them, they name types for annotations.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "ee_model_widgets"
MAX_LINES = 600


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py") if "labextension" not in p.parts}


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the nodes inside `if TYPE_CHECKING:` blocks (imports for annotations only)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in {"TYPE_CHECKING", "typing.TYPE_CHECKING"}:
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Package modules that module `name` imports when it runs, anywhere in its body."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_only(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            # the deepest known module the import names (a name imported from a module is the module)
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    graph = {m: _imports(m, p, known) for m, p in mods.items()}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _without_package_inits(graph):
    """Edges into a package's __init__ from inside that package are re-export plumbing, not layering."""
    return {
        m: {t for t in deps if not (m.startswith(t + ".") and t.count(".") < m.count("."))}
        for m, deps in graph.items()
    }


def test_no_import_cycles():
    cycles = _cycles(_without_package_inits(_graph()))
    assert not cycles, "import cycles (function-local imports included): " + "; ".join(
        " <-> ".join(c) for c in cycles
    )


def test_core_never_imports_widgets_serving_tfrecord_or_the_web_stack():
    graph = _graph()
    bad = {
        m: sorted(
            d
            for d in deps
            if d.startswith(
                ("ee_model_widgets.widgets", "ee_model_widgets.serving", "ee_model_widgets.tfrecord")
            )
        )
        for m, deps in graph.items()
        if m.startswith("ee_model_widgets.core")
    }
    assert not {m: d for m, d in bad.items() if d}
    for path in (PACKAGE / "core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for n in names:
                assert n.split(".")[0] not in {"ipywidgets", "ipyleaflet", "traitlets"}, (
                    f"{path.name} imports {n}"
                )


def test_modules_stay_small():
    big = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in _modules().values()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def test_the_rules_see_a_cycle():
    """The cycle finder itself: a two-module loop through a function-local import is found."""
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


def test_function_local_imports_count_and_type_checking_imports_do_not(tmp_path):
    pkg = tmp_path / "ee_model_widgets" / "core"
    pkg.mkdir(parents=True)
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from .b import B\n"
        "def f():\n    from .c import C\n    return C\n"
    )
    known = {"ee_model_widgets.core.a", "ee_model_widgets.core.b", "ee_model_widgets.core.c"}
    assert _imports("ee_model_widgets.core.a", pkg / "a.py", known) == {"ee_model_widgets.core.c"}

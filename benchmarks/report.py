"""Render `benchmarks/figures.json` as the README's performance table.

.venv/bin/python benchmarks/report.py          # print the table
.venv/bin/python benchmarks/report.py --write  # replace the table in README.md
.venv/bin/python benchmarks/report.py --check  # exit 1 if README.md differs (a unit test does this)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "benchmarks" / "figures.json"
README = ROOT / "README.md"
START, END = "<!-- figures:start (benchmarks/report.py --write) -->", "<!-- figures:end -->"


def render(figures: dict) -> str:
    """The markdown table, one row per recorded figure, in key order."""
    rows = ["| what (script, item) | measured | target | run |", "| --- | --- | --- | --- |"]
    for key, f in sorted(figures.items()):
        script, _, item = key.partition(".")
        cell = lambda s: str(s).replace("|", "\\|")  # noqa: E731
        rows.append(
            f"| {cell(f['what'])} (`{script}.py` {item}) | {cell(f['measured'])} | {cell(f['target'])} "
            f"| {f['date']}, {f['machine']} |"
        )
    return "\n".join(rows)


def block(text: str) -> str:
    return f"{START}\n{text}\n{END}"


def readme_block(readme: str) -> str:
    """The table currently in the README (between the markers)."""
    i, j = readme.find(START), readme.find(END)
    if i < 0 or j < 0:
        raise SystemExit(f"README.md has no {START} ... {END} block")
    return readme[i : j + len(END)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    table = block(render(json.loads(FIGURES.read_text())))
    readme = README.read_text()
    if args.write:
        README.write_text(readme.replace(readme_block(readme), table))
    elif args.check:
        if readme_block(readme) != table:
            sys.exit(
                "README.md's performance table differs from benchmarks/figures.json: run benchmarks/report.py --write"
            )
    else:
        print(table)


if __name__ == "__main__":
    main()

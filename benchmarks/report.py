"""Render `benchmarks/figures.json` as the README's performance table.

.venv/bin/python benchmarks/report.py          # print the table
.venv/bin/python benchmarks/report.py --write  # replace the table in README.md
.venv/bin/python benchmarks/report.py --check  # exit 1 if README.md differs (a unit test does this)
.venv/bin/python benchmarks/report.py --compare BEFORE.json
    # did the figures just measured land in the range of the runs in BEFORE.json (`make bench`
    # keeps a copy of figures.json from before its run)?

The table states each figure as last measured and the range of its recorded runs (see
`_figures.py`): every number of the figure, from its lowest to its highest value over those runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _figures import NUMBER, shape

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "benchmarks" / "figures.json"
README = ROOT / "README.md"
START, END = "<!-- figures:start (benchmarks/report.py --write) -->", "<!-- figures:end -->"


def _numbers(measured: str) -> list[tuple[float, str]]:
    """The numbers of a figure as printed: (value, the text that printed it)."""
    return [(float(m), m) for m in NUMBER.findall(measured)]


def spread(runs: list[dict]) -> list[tuple[tuple[float, str], tuple[float, str]]]:
    """(lowest, highest) of each number of a figure over `runs` (which all read alike)."""
    columns = zip(*(_numbers(r["measured"]) for r in runs))
    return [(min(c), max(c)) for c in columns]


def range_text(runs: list[dict]) -> str:
    """The figure printed with each number as its range over `runs`: "1.75–2.09 (0.19–0.23 s ...)"."""
    parts = NUMBER.split(runs[-1]["measured"])
    out = [parts[0]]
    for (lo, hi), text in zip(spread(runs), parts[1:]):
        out.append(lo[1] if lo[1] == hi[1] else f"{lo[1]}–{hi[1]}")
        out.append(text)
    return "".join(out)


def lands_within(measured: str, runs: list[dict]) -> bool:
    """Whether every number of `measured` lies within its range over `runs`."""
    return all(lo[0] <= v <= hi[0] for (v, _), (lo, hi) in zip(_numbers(measured), spread(runs)))


def reproduced(runs: list[dict]) -> tuple[int, int]:
    """(landed, tried): of the recorded runs that had at least two runs before them (a range of
    one value is no range), how many landed within the range of the runs before them."""
    tried = [lands_within(r["measured"], runs[:i]) for i, r in enumerate(runs) if i >= 2]
    return sum(tried), len(tried)


def render(figures: dict) -> str:
    """The markdown table, one row per recorded figure, in key order."""
    rows = [
        "| what (script, item) | measured (last run) | range over the recorded runs "
        "| runs within the range of the 2+ runs before them | target | last run |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for key, f in sorted(figures.items()):
        script, _, item = key.partition(".")
        cell = lambda s: str(s).replace("|", "\\|")  # noqa: E731
        runs = f.get("runs") or [f]
        dates = sorted({r["date"] for r in runs})
        when = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}"
        landed, tried = reproduced(runs)
        rows.append(
            f"| {cell(f['what'])} (`{script}.py` {item}) | {cell(f['measured'])} "
            f"| {cell(range_text(runs))} ({len(runs)} run{'s' * (len(runs) > 1)}, {when}) "
            f"| {f'{landed} of {tried}' if tried else '—'} "
            f"| {cell(f['target'])} | {f['date']}, {f['machine']} |"
        )
    tried = [reproduced(f.get("runs") or [f]) for f in figures.values()]
    if any(t for _, t in tried):
        rows.append("")
        rows.append(
            f"Of the recorded runs that had at least two runs of their figure before them, "
            f"{sum(w for w, _ in tried)} of {sum(t for _, t in tried)} landed within the range of those runs."
        )
    return "\n".join(rows)


def compare(before: dict, after: dict) -> tuple[list[str], int, int]:
    """Lines saying, for each figure of `after` measured anew, whether each of its numbers lies
    within that number's range over the runs recorded in `before`; and (within, compared)."""
    lines, within, compared = [], 0, 0
    for key, f in sorted(after.items()):
        old = before.get(key)
        if old is not None and (old.get("runs") or [old])[-1] == (f.get("runs") or [f])[-1]:
            continue  # not run this time
        if old is None or any(shape(old.get(k, "")) != shape(f.get(k, "")) for k in ("what", "measured")):
            lines.append(f"{key}: {f['measured']}  (new, or reads differently now: nothing to compare with)")
            continue
        runs = old.get("runs") or [old]
        outside = []
        for (value, text), ((lo, lo_text), (hi, hi_text)) in zip(_numbers(f["measured"]), spread(runs)):
            if not lo <= value <= hi:
                edge = hi if value > hi else lo
                off = f" ({100 * (value - edge) / edge:+.0f}%)" if edge else ""
                outside.append(
                    f"{text} outside {lo_text}–{hi_text}{off}" if lo != hi else f"{text} vs {lo_text}{off}"
                )
        compared += 1
        within += not outside
        verdict = "within the recorded range" if not outside else "; ".join(outside)
        lines.append(
            f"{key}: {f['measured']}  [{len(runs)} recorded run(s): {range_text(runs)}] -> {verdict}"
        )
    return lines, within, compared


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
    ap.add_argument("--compare", metavar="BEFORE.json", type=Path)
    args = ap.parse_args()
    if args.compare:
        lines, within, compared = compare(
            json.loads(args.compare.read_text()), json.loads(FIGURES.read_text())
        )
        print("\n".join(lines))
        print(f"{within} of {compared} figures measured again landed within the range of their recorded runs")
        return
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

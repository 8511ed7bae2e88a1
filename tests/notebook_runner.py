"""Run a notebook in a real kernel (nbclient) and read back what it showed.

Shared by the integration tests of the workshop notebooks, which all run a notebook top to
bottom with its working directory in `tmp_path` and then check its printed claims.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import nbclient
import nbformat

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute(nb: nbformat.NotebookNode | Path, cwd: Path, timeout: int = 300) -> nbformat.NotebookNode:
    """Run `nb` (a notebook or its path) top to bottom in a python3 kernel started in `cwd`.

    Returns the notebook with its outputs filled in; a cell that raises stops the run
    (nbclient's CellExecutionError) so a broken notebook fails the test loudly.
    """
    if isinstance(nb, Path):
        nb = nbformat.read(nb, as_version=4)
    nbclient.NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    ).execute()
    return nb


def code_outputs(nb: nbformat.NotebookNode) -> Iterator[dict]:
    """Every output of every code cell, in order."""
    for c in nb.cells:
        if c.cell_type == "code":
            yield from c.get("outputs", [])


def stream_text(nb: nbformat.NotebookNode, name: str | None = None) -> str:
    """Printed text: stdout and stderr together, or only the stream called `name`."""
    return "".join(
        "".join(o.get("text", ""))
        for o in code_outputs(nb)
        if o.get("output_type") == "stream" and (name is None or o.get("name") == name)
    )


def errors(nb: nbformat.NotebookNode) -> list[str]:
    """'EName: value' of each error output (empty when every cell ran cleanly)."""
    return [
        f"{o.get('ename')}: {o.get('evalue')}" for o in code_outputs(nb) if o.get("output_type") == "error"
    ]


def outputs_with(nb: nbformat.NotebookNode, mime: str) -> list[dict]:
    """The rich outputs that carry `mime` (e.g. 'image/png', a widget view)."""
    return [o for o in code_outputs(nb) if mime in o.get("data", {})]


WIDGET = "application/vnd.jupyter.widget-view+json"

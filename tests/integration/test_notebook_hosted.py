"""notebooks/02_hosted_models.ipynb runs top to bottom, offline, shows what it claims, and stops its server."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import nbclient
import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "02_hosted_models.ipynb"


def stdout_of(nb) -> str:
    return "".join(
        o.get("text", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "stream" and o.get("name") == "stdout"
    )


@pytest.mark.slow
def test_hosted_models_notebook_executes(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    text = stdout_of(nb)

    assert "signature 'serving_default' (EE wire format)" in text
    url = re.search(r"model URL: (http://127\.0\.0\.1:\d+/v1/models/fcn)", text).group(1)
    assert "'state': 'AVAILABLE'" in text
    diff = float(re.search(r"max \|hosted - local\| = (\S+)", text).group(1))
    assert diff < 1e-5
    m = re.search(r"requests sent: (\d+) \| largest request: (\d+) bytes \| same result: (\w+)", text)
    assert int(m.group(1)) >= 4 and int(m.group(2)) <= 300_000 and m.group(3) == "True"
    assert "stopped: True" in text
    assert (tmp_path / "hosted_out" / "fcn_ee" / "saved_model.pb").exists()
    # the kernel is gone and the server with it; nothing listens on that port any more
    with pytest.raises(httpx.TransportError):
        httpx.get(url, timeout=5)
    # the comparison figure was drawn
    assert any(
        "image/png" in o.get("data", {})
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )

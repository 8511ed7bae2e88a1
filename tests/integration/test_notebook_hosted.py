"""notebooks/02_hosted_models.ipynb runs top to bottom, offline, shows what it claims, and stops its server."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.notebook_runner import NOTEBOOKS, execute, outputs_with, stream_text

NOTEBOOK = NOTEBOOKS / "02_hosted_models.ipynb"


@pytest.mark.slow
def test_hosted_models_notebook_executes(tmp_path):
    nb = execute(NOTEBOOK, tmp_path)
    text = stream_text(nb, "stdout")

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
    assert outputs_with(nb, "image/png")

"""The npm package and the Python package stay in step (the widget manager matches versions)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import ee_model_widgets
from ee_model_widgets._version import EXTENSION_VERSION

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = json.loads((ROOT / "package.json").read_text())


def test_npm_version_matches_the_python_package_and_the_js_module():
    assert PACKAGE["name"] == "ee-model-widgets"
    assert PACKAGE["version"] == ee_model_widgets.__version__
    ts = (ROOT / "js" / "version.ts").read_text()
    assert re.search(r"MODULE_NAME = '([^']+)'", ts).group(1) == PACKAGE["name"]
    assert re.search(r"MODULE_VERSION = '([^']+)'", ts).group(1) == PACKAGE["version"]
    # The range our Python widgets ask for is satisfied by the version we publish (^X.Y.Z).
    assert EXTENSION_VERSION == "^" + PACKAGE["version"]


def test_npm_package_ships_what_cdn_loaders_and_bundlers_request():
    # CDN loaders (Colab, VS Code, @jupyter-widgets/html-manager) request <name>@<range>/dist/index.js.
    assert "dist/*.js" in PACKAGE["files"]
    assert PACKAGE["main"] == "lib/index.js" and "lib/**/*.js" in PACKAGE["files"]
    assert "prepack" in PACKAGE["scripts"]  # `npm publish` builds lib/ and dist/ first

"""Versions in one place: the Python package and the JS module it talks to."""

__version__ = "0.1.0"
# The semver range our Python widgets ask the JS widget registry for (see js/version.ts).
EXTENSION_VERSION = "^0.1.0"

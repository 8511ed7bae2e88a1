"""Keep TensorFlow's C++ start-up lines out of notebook outputs.

Importing TensorFlow writes lines such as "All log messages before absl::InitializeLog() is called
are written to STDERR", "oneDNN custom operations are on" and "Could not find cuda drivers" straight
to file descriptor 2, before `TF_CPP_MIN_LOG_LEVEL` applies; ipykernel forwards that descriptor
into the notebook, where a workshop sees a red box before anything else. The first
`import tensorflow` after `import ee_model_widgets` therefore runs with descriptor 2 pointed at a
temporary file: its content goes to this module's logger (DEBUG), or back to stderr if the import
fails. `TF_CPP_MIN_LOG_LEVEL` defaults to 3, which silences the later "failed call to cuInit" line
of a machine without a GPU; a value the user set wins. Python warnings are not affected.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import tempfile
from contextlib import contextmanager

log = logging.getLogger(__name__)


@contextmanager
def _fd2_to_log():
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 (some embedded interpreters): nothing to hide
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        ok = False
        try:
            yield
            ok = True
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read()
            if text and ok:
                log.debug("TensorFlow start-up output:\n%s", text.decode(errors="replace"))
            elif text:
                os.write(2, text)  # the import failed: every line may matter


class _QuietLoader:
    """Runs the real loader's `exec_module` with descriptor 2 captured, then steps aside."""

    def __init__(self, real):
        self.real = real

    def __getattr__(self, name):
        return getattr(self.real, name)

    def create_module(self, spec):
        return self.real.create_module(spec)

    def exec_module(self, module) -> None:
        try:
            with _fd2_to_log():
                self.real.exec_module(module)
        finally:
            module.__loader__ = self.real
            if module.__spec__ is not None:
                module.__spec__.loader = self.real


class _QuietFinder:
    """A one-shot meta path finder for the top-level `tensorflow` package."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow":
            return None
        uninstall()
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _QuietLoader(spec.loader)
        return spec


_finder = _QuietFinder()


def install() -> None:
    """Quiet the next first import of TensorFlow (no-op if it is already imported)."""
    if "tensorflow" in sys.modules or _finder in sys.meta_path:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.meta_path.insert(0, _finder)


def uninstall() -> None:
    if _finder in sys.meta_path:
        sys.meta_path.remove(_finder)

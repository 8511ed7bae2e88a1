"""TensorFlow's C++ start-up lines stay out of notebook outputs once ee_model_widgets is imported."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

NOISE = ("absl::InitializeLog", "oneDNN custom operations", "cuda drivers", "cuInit")
CODE = "import tensorflow as tf; print(int(tf.constant(1) + 1))"


def run(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_importing_tensorflow_after_the_package_writes_nothing_to_stderr():
    bare = run(CODE)
    quiet = run("import ee_model_widgets; import keras; " + CODE)
    assert bare.returncode == quiet.returncode == 0, (bare.stderr, quiet.stderr)
    assert bare.stdout.strip() == quiet.stdout.strip() == "2"
    # The same import on its own does print the start-up lines (what a notebook shows in red) ...
    assert any(n in bare.stderr for n in NOISE), bare.stderr
    # ... and none of them once ee_model_widgets is imported first.
    assert not any(n in quiet.stderr for n in NOISE), quiet.stderr


def test_a_failing_tensorflow_import_still_shows_its_output():
    code = (
        "import os, sys, ee_model_widgets\n"
        "sys.modules.pop('tensorflow', None)\n"
        "sys.path.insert(0, os.environ['FAKE'])\n"
        "import tensorflow\n"
    )
    with tempfile.TemporaryDirectory() as d:
        os.makedirs(os.path.join(d, "tensorflow"))
        with open(os.path.join(d, "tensorflow", "__init__.py"), "w") as f:
            f.write(
                "import os\nos.write(2, b'native loader says why\\n')\nraise ImportError('broken install')\n"
            )
        env = dict(os.environ, FAKE=d)
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
        )
    assert out.returncode != 0
    assert "native loader says why" in out.stderr and "broken install" in out.stderr

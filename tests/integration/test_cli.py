"""The `ee-model` command in subprocesses: prepare, describe, serve (with a token), shutdown, errors."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from ee_model_widgets import demo
from ee_model_widgets.serving import codec
from ee_model_widgets.serving.server import bind_socket

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ee_model_widgets.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
    )


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("cli") / "fcn_ee"
    r = cli(
        "prepare",
        "--source_dir",
        demo.model_path("fcn"),
        "--dest_dir",
        str(dest),
        "--input",
        "red:0,nir:0",
        "--output",
        '{"ndvi_smooth": "ndvi_smooth"}',
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"Success: model at '{dest}' is ready to be hosted" in r.stdout
    return dest


def test_prepare_then_describe(prepared, capsys):
    from ee_model_widgets.cli import main

    assert (prepared / "saved_model.pb").exists()
    assert main(["describe", str(prepared)]) == 0  # in-process: one TensorFlow start less
    out = capsys.readouterr().out
    assert "signature 'serving_default' (EE wire format)" in out
    assert re.search(r"input\s+red: string \(\?\)", out)  # ':0' stripped, like the EE CLI
    assert re.search(r"output ndvi_smooth: string \(\?\)", out)


def test_prepare_errors_exit_1_with_a_message(tmp_path, prepared):
    r = cli(
        "prepare", "--source_dir", demo.model_path("fcn"), "--dest_dir", str(tmp_path / "x"), "--input", "red"
    )
    assert r.returncode == 1 and "error: Flag --output must be set." in r.stderr
    r = cli(
        "prepare",
        "--source_dir",
        demo.model_path("fcn"),
        "--dest_dir",
        str(prepared),
        "--input",
        "red",
        "--output",
        "x",
    )
    assert r.returncode == 1 and "already exists and is not empty" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "argv, says",
    [
        # paths given as positionals, the way `cp SRC DST` takes them
        (["prepare", "fcn.keras", "fcn_ee"], "prepare takes flags only, as `earthengine model prepare` does"),
        # a space after the comma splits the list into two arguments
        (
            ["prepare", "--source_dir", "m.keras", "--input", "red,", "nir"],
            "A list is one argument without spaces",
        ),
        (["prepare", "--input=red", "nir"], "A list is one argument without spaces"),
        (["serve", "fcn_ee", "--prot", "9"], "did you mean --port?"),
        (
            ["tfrecord", "export", "s.tif", "p", "--bands", "red,", "nir"],
            "A list is one argument without spaces",
        ),
    ],
)
def test_stray_arguments_name_the_command_and_the_slip(argv, says, capsys):
    from ee_model_widgets.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    command = " ".join(a for a in argv[:2] if a in ("prepare", "serve", "tfrecord", "export"))
    # the command's own usage and name, not `ee-model: error: unrecognized arguments`
    assert f"usage: ee-model {command}" in err and f"ee-model {command}: error: unexpected argument(s)" in err
    assert says in err and f"See `ee-model {command} --help`." in err


def test_prepare_into_a_folder_that_cannot_be_made_is_a_message(tmp_path, capsys):
    from ee_model_widgets.cli import main

    a_file = tmp_path / "scene.tif"
    a_file.write_bytes(b"not a folder")
    args = ["--input", "red,nir", "--output", "ndvi_smooth", "--source_dir", str(demo.model_path("fcn"))]
    assert main(["prepare", *args, "--dest_dir", str(a_file / "fcn_ee")]) == 1
    assert f"{a_file} is a file, not a folder; choose another --dest_dir." in capsys.readouterr().err
    if sys.platform == "linux":
        # /proc takes no new folders, even for root: the failure comes from the file system itself
        assert main(["prepare", *args, "--dest_dir", "/proc/fcn_ee"]) == 1
        err = capsys.readouterr().err
        assert "--dest_dir /proc/fcn_ee: cannot create it in /proc" in err and "choose a folder" in err
    assert sorted(os.listdir(tmp_path)) == ["scene.tif"]


class Served:
    """`ee-model serve` running in a subprocess; reads its stdout in a thread."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ee_model_widgets.cli", "serve", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float = 120) -> re.Match:
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            seen.append(line)
            m = re.search(pattern, line)
            if m:
                return m
        self.proc.kill()
        raise AssertionError(
            f"no {pattern!r} in output: {''.join(seen)} stderr: {self.proc.stderr.read()[-2000:]}"
        )


def test_serve_with_token_then_sigint_shuts_down_cleanly(prepared):
    s = Served(str(prepared), "--name", "fcn", "--port", "0", "--token", "abc", "--log-level", "warning")
    try:
        url = s.wait_for(r"model URL : (http://127\.0\.0\.1:\d+/v1/models/fcn)")[1]
        s.wait_for("Press Ctrl-C to stop")
        red = np.random.default_rng(0).random((2, 16, 16, 1), dtype=np.float32)
        nir = red + 0.5
        body = {
            "instances": [
                {"red": codec.encode_tensor(a), "nir": codec.encode_tensor(b)} for a, b in zip(red, nir)
            ]
        }
        r = httpx.post(url + ":predict", json=body, timeout=60)
        assert r.status_code == 401 and "Authorization" in r.json()["error"]
        r = httpx.post(url + ":predict", json=body, headers={"Authorization": "Bearer abc"}, timeout=60)
        assert r.status_code == 200, r.text
        got = codec.decode_batch(r.json()["predictions"])
        km = demo.model("fcn")
        expected = km.predict_batch({"red": red, "nir": nir})["ndvi_smooth"]
        np.testing.assert_allclose(got, expected, atol=1e-6)
        s.proc.send_signal(signal.SIGINT)  # Ctrl-C: graceful shutdown, exit 0
        s.wait_for("Server stopped.", timeout=60)
        assert s.proc.wait(60) == 0
    finally:
        if s.proc.poll() is None:
            s.proc.kill()


def test_serve_keras_file_and_port_in_use():
    busy = bind_socket("127.0.0.1", 0)
    try:
        port = busy.getsockname()[1]
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "ee_model_widgets.cli",
                "serve",
                demo.model_path("ndvi"),
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=180,
            env=ENV,
        )
        assert r.returncode == 1
        assert f"error: Cannot listen on 127.0.0.1:{port}" in r.stderr
    finally:
        busy.close()
    r = cli("serve", demo.model_path("ndvi"), "--port", "70000")
    assert r.returncode == 2 and "a port is an integer from 0 to 65535" in r.stderr


def test_help_lists_the_subcommands_and_the_entry_point_works():
    r = cli("--help")
    assert r.returncode == 0
    for name in ("prepare", "serve", "describe"):
        assert name in r.stdout
    try:
        import ee_model_widgets.tfrecord.cli  # noqa: F401
    except ImportError:
        pass
    else:
        assert "tfrecord" in r.stdout  # registered by its own module
    exe = Path(sys.executable).parent / "ee-model"
    if not exe.exists():
        pytest.skip("the ee-model console script is not installed in this environment")
    r = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("ee-model ")

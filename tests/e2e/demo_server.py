"""Start Jupyter the way a newcomer does: `make demo`'s own command line, a fresh HOME.

JupyterLab runs through the Makefile's `serve-demo` target (what `make demo` runs once installed),
so the test sees the same command line, the same trust step and the same printed URL. It runs in
a scratch copy of the notebooks, so the repository's notebook is never autosaved with outputs.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
URL_RE = re.compile(r"(http://127\.0\.0\.1:(\d+))(/\S*)\?token=(\w+)")


@dataclass
class DemoServer:
    app: str
    printed_url: str  # the 127.0.0.1 URL the server printed, token included
    base: str
    token: str
    home: Path
    process: subprocess.Popen
    log_path: Path

    def url(self, path: str) -> str:
        return f"{self.base}{path}?token={self.token}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Stop the server and everything it started (its own process group)."""
        stop_group(self.process)


def stop_group(process: subprocess.Popen) -> None:
    """Stop a process started with `start_new_session=True` and everything it started."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    except ProcessLookupError:
        pass


def fresh_user(tmp: Path) -> tuple[Path, Path, dict]:
    """A newcomer's first run: a fresh HOME under `tmp`, a scratch copy of the quickstart, and an
    environment in which Jupyter's directories default to that HOME (nothing set by the test
    runner). Returns (home, work directory, environment)."""
    home, work = tmp / "home", tmp / "work"
    (work / "notebooks").mkdir(parents=True)
    home.mkdir()
    shutil.copy(REPO / "notebooks" / "quickstart.ipynb", work / "notebooks" / "quickstart.ipynb")
    venv = Path(sys.prefix)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
    env.update(HOME=str(home), PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    return home, work, env


def start_demo(tmp: Path, app: str = "lab", timeout: float = 120) -> DemoServer:
    """`make serve-demo` (JupyterLab) or the same command for Notebook 7, with HOME=`tmp`/home."""
    home, work, env = fresh_user(tmp)
    venv = Path(sys.prefix)
    if app == "lab":
        cmd = [
            "make",
            "-s",
            "-f",
            str(REPO / "Makefile"),
            "serve-demo",
            f"VENV={venv}",
            "LAB_ARGS=--no-browser",
        ]
    else:
        nb = "notebooks/quickstart.ipynb"
        subprocess.run([str(venv / "bin" / "jupyter"), "trust", nb], cwd=work, env=env, check=True)
        cmd = [str(venv / "bin" / "jupyter"), "notebook", "--no-browser", nb]
        if os.geteuid() == 0:
            cmd.insert(2, "--allow-root")
    proc, m, log_path = launch(
        cmd, work, env, tmp / f"{app}-server.log", URL_RE, f"the {app} server", timeout
    )
    return DemoServer(app, m.group(0), m.group(1), m.group(4), home, proc, log_path)


def launch(cmd, cwd: Path, env: dict, log_path: Path, url_re, what: str, timeout: float):
    """Start `cmd` in a session of its own, logging to `log_path`, and wait for it to print a
    URL matching `url_re`; returns (process, match, log path). Stops it and raises otherwise."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, start_new_session=True
    )
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        text = log_path.read_text(errors="replace")
        m = url_re.search(text)
        if m:
            return proc, m, log_path
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited early:\n{text}")
        time.sleep(0.3)
    stop_group(proc)
    raise RuntimeError(f"{what} printed no URL within {timeout} s:\n{log_path.read_text(errors='replace')}")

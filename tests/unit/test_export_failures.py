"""Exports that cannot be written say so before the work, and leave nothing behind.

Faults are caused for real where the machine allows it: a folder without write permission
(chmod, for non-root users), a read-only or tiny tmpfs mounted in a private mount namespace
(`unshare -rm`, no privileges needed where user namespaces are enabled), a process killed
with SIGKILL in the middle of an export. Only the free-space figure is mocked, in one test,
so the check runs on machines where no tmpfs can be mounted.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import rasterio
from affine import Affine

from ee_model_widgets import Image
from ee_model_widgets.core import output_file
from ee_model_widgets.errors import ExportError

TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 7000000.0)

# Run in a child process: export a 1024 x 1024 random (incompressible) float32 band to
# sys.argv[1]/out.tif with the given compression (a COG, or a plain GeoTIFF when sys.argv[3]
# is "plain"), and report the outcome as JSON.
CHILD = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    from affine import Affine
    import ee_model_widgets as emw

    folder, compress = sys.argv[1], (sys.argv[2] if sys.argv[2] != "none" else None)
    cog = sys.argv[3] != "plain"
    arr = np.random.default_rng(0).random((1, 1024, 1024)).astype("float32")
    img = emw.Image.from_array(arr, transform=Affine(10, 0, 500000, 0, -10, 7000000), crs="EPSG:32719")
    reads = []
    inner = img.read
    img.read = lambda *a, **k: (reads.append(1), inner(*a, **k))[1]
    out = {"error": None}
    try:
        img.export(os.path.join(folder, "out.tif"), compress=compress, cog=cog, progress=False)
    except Exception as exc:
        out = {"error": type(exc).__name__, "message": str(exc)}
    out.update(reads=len(reads), files=sorted(os.listdir(folder)))
    print("RESULT " + json.dumps(out))
    """
)


def in_tmpfs(folder, options: str, compress: str, layout: str = "cog") -> dict:
    """Run CHILD with a fresh tmpfs (mount `options`) over `folder`, in a private mount namespace."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs unshare(1) to mount a private tmpfs")
    script = 'mount -t tmpfs -o "$3" tmpfs "$0" && exec "$1" -c "$2" "$0" "$4" "$5"'
    proc = subprocess.run(
        [unshare, "-rm", "sh", "-c", script, str(folder), sys.executable, CHILD, options, compress, layout],
        capture_output=True,
        text=True,
        timeout=120,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    pytest.skip(f"cannot run an export in a private tmpfs here: {proc.stderr.strip()[-300:]}")


@pytest.fixture
def counting_image():
    """A small image that counts its reads (the 'work' of an export)."""
    arr = np.arange(300 * 400, dtype="float32").reshape(1, 300, 400)
    img = Image.from_array(arr, transform=TRANSFORM, crs="EPSG:32719", band_names=["v"])
    img.reads = 0
    inner = img.read

    def read(*args, **kwargs):
        img.reads += 1
        return inner(*args, **kwargs)

    img.read = read
    return img, arr


# ---- permissions ------------------------------------------------------------------------------
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_the_file_gets_the_permissions_of_any_new_file(counting_image, tmp_path, umask, mode):
    img, _ = counting_image
    old = os.umask(umask)
    try:
        path = img.export(tmp_path / "out.tif", progress=False)
        with open(tmp_path / "plain.txt", "w") as f:  # what a normal new file gets
            f.write("x")
    finally:
        os.umask(old)
    assert oct(os.stat(path).st_mode & 0o777) == oct(mode)
    assert os.stat(path).st_mode & 0o777 == os.stat(tmp_path / "plain.txt").st_mode & 0o777


def test_replacing_a_file_keeps_its_permissions(counting_image, tmp_path):
    img, arr = counting_image
    target = tmp_path / "out.tif"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)
    img.export(target, progress=False)
    assert os.stat(target).st_mode & 0o777 == 0o640
    with rasterio.open(target) as ds:
        assert np.array_equal(ds.read(1), arr[0])


# ---- refused before the work ------------------------------------------------------------------
def test_a_folder_as_target_is_refused_before_the_work(counting_image, tmp_path):
    img, _ = counting_image
    (tmp_path / "results").mkdir()
    with pytest.raises(ExportError, match="is a folder.*prediction.tif"):
        img.export(tmp_path / "results", progress=False)
    assert img.reads == 0
    assert os.listdir(tmp_path / "results") == []


def test_a_symbolic_link_as_target_is_refused_and_left_alone(counting_image, tmp_path):
    # The final rename would replace the link, and the file it points to would never be written.
    img, _ = counting_image
    (tmp_path / "real").mkdir()
    link = tmp_path / "out.tif"
    link.symlink_to(tmp_path / "real" / "out.tif")
    with pytest.raises(ExportError, match="symbolic link.*real/out.tif"):
        img.export(link, progress=False)
    assert img.reads == 0
    assert link.is_symlink()


def test_a_fifo_as_target_is_refused_and_left_alone(counting_image, tmp_path):
    # e.g. /dev/null: run as root, the rename replaced the device by a plain file.
    img, _ = counting_image
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ExportError, match="not a regular file"):
        img.export(fifo, progress=False)
    assert img.reads == 0
    assert not fifo.is_file() and fifo.exists()


def test_a_folder_without_write_permission_is_refused_before_the_work(counting_image, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root ignores permission bits (the read-only mount test covers root)")
    img, _ = counting_image
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o555)
    try:
        with pytest.raises(ExportError, match="no permission to create files in"):
            img.export(locked / "out.tif", progress=False)
    finally:
        os.chmod(locked, 0o755)
    assert img.reads == 0 and os.listdir(locked) == []


def test_a_read_only_file_system_is_refused_before_the_work(tmp_path):
    out = in_tmpfs(tmp_path, "ro,size=1m", "deflate")
    assert out["error"] == "ExportError"
    assert "read-only file system" in out["message"] and "out.tif" in out["message"]
    assert out["reads"] == 0 and out["files"] == []


def test_too_little_space_for_an_uncompressed_file_is_refused_before_the_work(tmp_path):
    out = in_tmpfs(tmp_path, "size=512k", "none", "plain")  # a 4 MiB file on a 512 KiB disk
    assert out["error"] == "ExportError"
    assert "needs 4.0 MiB and only 0.5 MiB are free" in out["message"]
    assert out["reads"] == 0 and out["files"] == []
    # A COG: the 4 MiB uncompressed temporary, then the 5.3 MiB COG (with overviews) beside it.
    out = in_tmpfs(tmp_path, "size=512k", "none")
    assert "needs 9.3 MiB and only 0.5 MiB are free" in out["message"]
    assert out["reads"] == 0 and out["files"] == []


def test_a_compressed_cog_checks_the_space_of_its_uncompressed_temporary_first(tmp_path):
    out = in_tmpfs(tmp_path, "size=512k", "deflate")  # chunks land in an uncompressed temporary
    assert out["error"] == "ExportError" and "needs 4.0 MiB and only 0.5 MiB are free" in out["message"]
    assert out["reads"] == 0 and out["files"] == []


def test_a_disk_that_fills_up_during_the_export_says_so_and_keeps_nothing(tmp_path):
    out = in_tmpfs(tmp_path, "size=512k", "deflate", "plain")  # compressed: the size is not known in advance
    assert out["error"] == "ExportError"
    assert "no space left on the disk" in out["message"] and "nothing was written" in out["message"]
    assert out["reads"] > 0  # it did fail during the work
    assert out["files"] == []  # the partial file is gone, so the disk is free again


def test_free_space_check_without_a_tmpfs(counting_image, tmp_path, monkeypatch):
    # The same check as above, with the free-space figure mocked (the only mock here).
    img, _ = counting_image
    usage = shutil.disk_usage(tmp_path)._replace(free=100_000)
    monkeypatch.setattr(output_file.shutil, "disk_usage", lambda _: usage)
    with pytest.raises(ExportError, match=r"needs 0.5 MiB and only 0.1 MiB are free"):
        img.export(tmp_path / "out.tif", compress=None, cog=False, progress=False)
    assert img.reads == 0 and os.listdir(tmp_path) == []


# ---- a killed export --------------------------------------------------------------------------
SLOW_CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from affine import Affine
    import ee_model_widgets as emw

    arr = np.ones((1, 2048, 2048), "float32")
    img = emw.Image.from_array(arr, transform=Affine(10, 0, 500000, 0, -10, 7000000), crs="EPSG:32719")
    inner = img.read
    img.read = lambda *a, **k: (time.sleep(0.5), inner(*a, **k))[1]  # a slow model
    img.export(sys.argv[1], block_size=256, progress=False)
    """
)


def temporaries(folder):
    return sorted(n for n in os.listdir(folder) if n.startswith(".out.tif.") and n.endswith(".tmp"))


def test_a_killed_export_leaves_a_temporary_that_the_next_export_removes(counting_image, tmp_path):
    target = tmp_path / "out.tif"
    child = subprocess.Popen([sys.executable, "-c", SLOW_CHILD, str(target)])
    try:
        deadline = time.monotonic() + 60
        while not temporaries(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # a few windows written
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    left = temporaries(tmp_path)
    assert len(left) == 1 and not target.exists()  # SIGKILL: no chance to clean up

    # Temporaries of a live process, or of another machine (a shared folder), are not ours to remove.
    host = socket.gethostname()
    sleeper = subprocess.Popen(["sleep", "60"])
    live = f".out.tif.{sleeper.pid}.0000abcd.{host}.tmp"
    foreign = f".out.tif.{child.pid}.0000abcd.another-host.tmp"
    for name in (live, foreign):
        (tmp_path / name).write_bytes(b"partial")
    try:
        img, arr = counting_image
        img.export(target, progress=False)
        assert temporaries(tmp_path) == sorted([live, foreign])  # the killed export's is gone
    finally:
        sleeper.kill()
        sleeper.wait()
    with rasterio.open(target) as ds:
        assert np.array_equal(ds.read(1), arr[0])
    assert sorted(os.listdir(tmp_path)) == sorted(["out.tif", live, foreign])


def test_an_interrupted_export_removes_its_temporary(tmp_path):
    arr = np.ones((1, 600, 600), "float32")
    img = Image.from_array(arr, transform=TRANSFORM, crs="EPSG:32719")
    inner, reads = img.read, []

    def read(*args, **kwargs):
        reads.append(1)
        if len(reads) == 2:
            raise KeyboardInterrupt  # the user pressed stop
        return inner(*args, **kwargs)

    img.read = read
    with pytest.raises(KeyboardInterrupt):
        img.export(tmp_path / "out.tif", block_size=256, progress=False)
    assert os.listdir(tmp_path) == []


def test_a_resumed_export_interrupted_at_once_keeps_its_windows_and_no_orphan(tmp_path):
    arr = np.random.default_rng(0).random((1, 600, 600)).astype("float32")
    img = Image.from_array(arr, transform=TRANSFORM, crs="EPSG:32719")
    target = tmp_path / "out.tif"

    def stop_at(n):
        def on_progress(done, total):
            if done == n:
                raise KeyboardInterrupt

        return on_progress

    for n in (2, 2):  # the second run resumes at 2 windows and is stopped by its first callback
        with pytest.raises(KeyboardInterrupt):
            img.export(target, block_size=256, progress=False, resume=True, on_progress=stop_at(n))
        assert len([f for f in os.listdir(tmp_path) if f.endswith(".tmp")]) == 1
    seen = []
    img.export(target, block_size=256, progress=False, resume=True, on_progress=lambda d, t: seen.append(d))
    assert seen[0] == 2  # the windows of the first run were kept
    assert os.listdir(tmp_path) == ["out.tif"]
    with rasterio.open(target) as ds:
        assert np.array_equal(ds.read(1), arr[0])


@pytest.mark.parametrize("cog", [True, False])
def test_a_folder_removed_during_the_export_is_named_in_the_error(tmp_path, cog):
    # Real removal of the output folder after two windows were written (GDAL keeps writing
    # the unlinked temporary; the final copy or rename then fails).
    folder = tmp_path / "out"
    folder.mkdir()
    arr = np.random.default_rng(0).random((1, 512, 512)).astype("float32")
    img = Image.from_array(arr, transform=TRANSFORM, crs="EPSG:32719")

    def remove_folder(done, total):
        if done == 2 and folder.is_dir():
            shutil.rmtree(folder)

    with pytest.raises(ExportError, match="was removed or renamed during the export") as info:
        img.export(
            str(folder / "out.tif"), cog=cog, block_size=256, progress=False, on_progress=remove_folder
        )
    assert str(folder) in str(info.value)
    assert "Create it again" in str(info.value)
    assert not folder.exists()  # nothing recreated it

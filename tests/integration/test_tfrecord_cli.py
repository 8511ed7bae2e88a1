"""`ee-model tfrecord export|import` on real GeoTIFFs, through argparse like the console script."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import rasterio
from affine import Affine

from ee_model_widgets.cli import main


@pytest.fixture
def scene(tmp_path):
    path = tmp_path / "scene.tif"
    rows, cols = np.mgrid[0:40, 0:48].astype(np.float32)
    data = np.stack([rows * 100 + cols, rows - cols])
    profile = dict(
        driver="GTiff",
        width=48,
        height=40,
        count=2,
        dtype="float32",
        crs="EPSG:32719",
        transform=Affine(10, 0, 400000, 0, -10, 6100000),
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        dst.set_band_description(1, "red")
        dst.set_band_description(2, "nir")
    return path, data


def test_export_then_import_round_trips_to_a_geotiff(scene, tmp_path, capsys):
    path, data = scene
    prefix = str(tmp_path / "out" / "scene")
    os.mkdir(tmp_path / "out")
    code = main(
        [
            "tfrecord",
            "export",
            str(path),
            prefix,
            "--patch",
            "16",
            "--kernel",
            "4",
            "--no-compress",
            "--max-file-size",
            "5k",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out.split()
    assert printed[-1] == prefix + "-mixer.json"
    assert printed[0] == prefix + "-00000.tfrecord" and len(printed) > 2  # several shards
    mixer = json.load(open(prefix + "-mixer.json"))
    assert (mixer["patchDimensions"], mixer["patchesPerRow"], mixer["totalPatches"]) == ([16, 16], 3, 6)

    out = tmp_path / "pred.tif"
    # The exported patches (20x20 with the margin) read back as "predictions": margins cropped.
    code = main(
        [
            "tfrecord",
            "import",
            prefix + "-*.tfrecord",
            "--mixer",
            prefix + "-mixer.json",
            "--output",
            str(out),
            "--bands",
            "nir,red",
        ]
    )
    assert code == 0
    assert capsys.readouterr().out.strip() == str(out)
    with rasterio.open(out) as src:
        assert src.count == 2 and src.crs.to_epsg() == 32719
        assert src.transform == Affine(10, 0, 400000, 0, -10, 6100000)
        assert (src.width, src.height) == (48, 32)
        assert list(src.descriptions) == ["nir", "red"]
        np.testing.assert_array_equal(src.read(1), data[1, :32])
        np.testing.assert_array_equal(src.read(2), data[0, :32])


def test_region_and_band_selection(scene, tmp_path, capsys):
    path, data = scene
    prefix = str(tmp_path / "r")
    import ee_model_widgets as emw

    img = emw.Image.open(path)
    w, s, e, n = img.bounds
    region = f"{w},{s + (n - s) / 2},{e},{n}"  # northern half: 20 rows
    assert (
        main(
            # `--region=...`: a negative west longitude would otherwise look like an option.
            [
                "tfrecord",
                "export",
                str(path),
                prefix,
                f"--region={region}",
                "--patch",
                "8,10",
                "--bands",
                "nir",
            ]
        )
        == 0
    )
    mixer = json.load(open(prefix + "-mixer.json"))
    assert (mixer["patchDimensions"], mixer["patchesPerRow"], mixer["totalPatches"]) == ([8, 10], 6, 12)
    assert os.path.exists(prefix + "-00000.tfrecord.gz")

    # Written the usual way, with a space: before, argparse took the negative west longitude for
    # a flag ("argument --region: expected one argument").
    spaced = str(tmp_path / "spaced")
    argv = ["tfrecord", "export", str(path), spaced, "--region", region, "--patch", "8,10", "--bands", "nir"]
    assert region.startswith("-") and main(argv) == 0
    assert json.load(open(spaced + "-mixer.json")) == mixer


def test_errors_are_reported_with_exit_code_1_and_nothing_is_written(scene, tmp_path, capsys):
    path, _ = scene
    assert main(["tfrecord", "export", str(path), str(tmp_path / "x"), "--patch", "64"]) == 1
    err = capsys.readouterr().err
    assert "smaller than one 64x64 patch" in err and "Traceback" not in err
    out = str(tmp_path / "o.tif")
    assert main(["tfrecord", "import", str(tmp_path / "none-*"), "--mixer", "m.json", "--output", out]) == 1
    assert "No prediction files match" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["tfrecord", "export", str(path), "p", "--patch", "a,b"])
    assert "expected N or X,Y" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["scene.tif"]

    # A truncated shard: a clear message naming it, and no GeoTIFF.
    prefix = str(tmp_path / "e")
    assert main(["tfrecord", "export", str(path), prefix, "--patch", "8", "--max-file-size", "1"]) == 0
    capsys.readouterr()
    shard = prefix + "-00003.tfrecord.gz"
    data = open(shard, "rb").read()
    open(shard, "wb").write(data[:-20])
    assert (
        main(
            [
                "tfrecord",
                "import",
                prefix + "-*.tfrecord.gz",
                "--mixer",
                prefix + "-mixer.json",
                "--output",
                out,
            ]
        )
        == 1
    )
    assert "e-00003.tfrecord.gz is corrupt" in capsys.readouterr().err
    assert not os.path.exists(out)


@pytest.mark.parametrize("as_given", ["out/", "out/.", "."])
def test_a_folder_as_prefix_is_refused_and_deletes_nothing(scene, tmp_path, capsys, monkeypatch, as_given):
    # A newcomer passes the folder the files should go to. Before, 'out/' wrote 'out/-00000...'
    # and its clean-up of an earlier export removed the user's 'out-00000.tfrecord.gz' beside
    # the folder ('.' reached into the parent folder the same way).
    path, _ = scene
    work = tmp_path / "work"
    (work / "out").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert main(["tfrecord", "export", str(path), "work", "--patch", "8"]) == 0  # reached through '.'
    monkeypatch.chdir(work)
    assert main(["tfrecord", "export", str(path), "out", "--patch", "8"]) == 0
    capsys.readouterr()
    before = {p: os.path.getsize(p) for p in map(str, tmp_path.rglob("*"))}
    assert main(["tfrecord", "export", str(path), as_given, "--patch", "8"]) == 1
    err = capsys.readouterr().err
    assert "is a folder" in err and "add a name, e.g." in err and "Traceback" not in err
    assert {p: os.path.getsize(p) for p in map(str, tmp_path.rglob("*"))} == before


def test_console_script_lists_the_tfrecord_commands():
    import subprocess
    import sys

    exe = os.path.join(os.path.dirname(sys.executable), "ee-model")
    out = subprocess.run([exe, "tfrecord", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "export" in out.stdout and "import" in out.stdout
    out = subprocess.run(
        [exe, "tfrecord", "import", "x.tfrecord"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2 and "--mixer" in out.stderr

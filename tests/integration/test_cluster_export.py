"""Exports and lazy arrays on a real dask.distributed LocalCluster (2 worker processes).

What a user sees: the exported Cloud-Optimized GeoTIFF holds the same numbers, bit for bit,
whether it ran locally, on the cluster, with a worker killed mid-way, or resumed after an
interruption; a cancelled export leaves nothing behind; `to_xarray()` computes the same
pixels as `to_numpy()`.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time

import numpy as np
import pytest
import rasterio
from affine import Affine

from ee_model_widgets import Image, Model, demo
from ee_model_widgets.core.export_tasks import ExportCancelled, sidecar_path
from ee_model_widgets.errors import ExportError, InputError
from tests.conftest import UTM_TRANSFORM

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", host="127.0.0.1"
    )
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


class CountingNDVI:
    """A slow-ish NDVI model that appends the size of every batch it gets to a file (in any
    process), so tests count real model calls on the workers."""

    def __init__(self, log: str, delay: float = 0.0):
        self.log = log
        self.delay = delay

    def __call__(self, batch):
        x = batch["array"]
        with open(self.log, "a") as fh:
            fh.write(f"{x.shape[0]}\n")
        if self.delay:
            time.sleep(self.delay)
        red, nir = x[..., 0:1], x[..., 1:2]
        return (nir - red) / (nir + red)


def cells_computed(log) -> int:
    if not os.path.exists(log):
        return 0
    with open(log) as fh:
        return sum(int(line) for line in fh if line.strip())


#: A 10 m grid whose corner is a corner of the model's 64 px cells (cells tile the CRS from its origin).
ALIGNED = Affine(10.0, 0.0, 499_200.0, 0.0, -10.0, 7_000_320.0)


def array_scene(size: int = 1024, transform=ALIGNED) -> tuple[np.ndarray, Image]:
    rng = np.random.default_rng(7)
    arr = rng.uniform(100, 5000, (2, size, size)).astype(np.float32)
    mask = np.zeros(arr.shape, bool)
    mask[:, 100:140, 300:700] = True  # masked pixels must come back as NaN / no data
    img = Image.from_array(
        np.ma.MaskedArray(arr, mask=mask),
        transform=transform,
        crs="EPSG:32719",
        band_names=["red", "nir"],
    )
    return arr, img


def counting_prediction(tmp_path, delay=0.0, name="calls.log"):
    log = str(tmp_path / name)
    model = Model.from_callable(
        CountingNDVI(log, delay),
        fingerprint="counting-ndvi",
        input_tile_size=64,
        output_bands={"ndvi": {"type": "float"}},
    )
    return log, model


def settled(client, log) -> int:
    """Cells computed once a cancelled export's tasks are gone: those already running finish
    their chunk (a thread cannot be stopped), the others are cancelled, so the scheduler soon
    has nothing left. Idle must last, not be seen once: a worker can still start a task it had
    queued before the cancel reached it (seen: nothing executing, then a cancelled task
    executing 4 ms later)."""

    def busy() -> bool:
        # the scheduler forgets cancelled tasks at once; the workers know what still runs
        running = client.run(lambda dask_worker: len(dask_worker.state.executing))
        return any(client.processing().values()) or any(running.values())

    deadline = time.monotonic() + 30
    idle_since = None
    while time.monotonic() < deadline:
        if busy():
            idle_since = None
        elif idle_since is None:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since >= 1.0:
            return cells_computed(log)
        time.sleep(0.05)
    raise AssertionError("tasks still running 30 s after the cancel")


def digest(path) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def read(path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


def assert_cog(path) -> None:
    with rasterio.open(path) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.overviews(1), "a COG of this size has overviews"
        assert ds.block_shapes[0] == (256, 256)


def test_cluster_export_of_a_keras_model_equals_the_local_export_bit_for_bit(client, tmp_path):
    scene = demo.synthetic_scene(1024, 768, bands=("red", "nir"))
    pred = demo.model("fcn").predict_image(scene)  # a real Keras model, loaded from its .keras file
    # chunks of 4 x 4 cells of 128 px: several tasks for each worker
    local = pred.export(tmp_path / "local.tif", progress=False, block_size=512)
    remote = pred.export(tmp_path / "cluster.tif", client=client, progress=False, block_size=512)
    assert digest(local) == digest(remote)
    assert_cog(remote)
    with rasterio.open(remote) as ds:
        assert ds.descriptions == ("ndvi_smooth",)
        assert ds.crs == pred.grid.crs and ds.transform == pred.grid.transform
        got = ds.read(1)
    # The same pixels as one to_numpy read (its cells batched differently), bit for bit.
    np.testing.assert_array_equal(got, pred.to_numpy().filled(np.nan)[0])
    assert np.isfinite(got).all() and got.std() > 0.01  # a real prediction, not a blank
    # Each worker loaded the model once, from its spec (a path), whatever the number of tasks.
    loaded = client.run(
        lambda: [
            m.fingerprint for m in __import__("ee_model_widgets.core.portable").core.portable._MODELS.values()
        ]
    )
    assert all(v == [pred.model.fingerprint] for v in loaded.values()), loaded
    assert sorted(os.listdir(tmp_path)) == ["cluster.tif", "local.tif"]


def test_in_memory_keras_model_and_array_travel_to_the_workers(client, tmp_path):
    import keras

    inp = keras.Input((None, None, 2))
    out = keras.layers.Conv2D(1, 3, padding="same", kernel_initializer=keras.initializers.Constant(0.1))(inp)
    km = keras.Model(inp, out)
    arr, img = array_scene(512)
    pred = Model.from_keras(km, input_tile_size=64, input_overlap_size=4).predict_image(img, cache=None)
    local = pred.export(tmp_path / "a.tif", progress=False, block_size=256)
    remote = pred.export(tmp_path / "b.tif", progress=False, block_size=256, client=client)
    assert digest(local) == digest(remote)
    got = read(remote)[0]
    assert np.isnan(got[110, 400]) and np.isfinite(got[300, 300])


def test_to_xarray_is_lazy_georeferenced_and_computes_to_numpy(client, tmp_path):
    rioxarray = pytest.importorskip("rioxarray")  # noqa: F841 - registers the .rio accessor
    arr, img = array_scene(1000, UTM_TRANSFORM)  # cells do not start at the image's corner
    log, model = counting_prediction(tmp_path)
    pred = model.predict_image(img, cache=None)
    da = pred.to_xarray()
    assert cells_computed(log) == 0  # nothing ran yet: lazy
    assert da.dims == ("band", "y", "x") and list(da.band.values) == ["ndvi"]
    assert da.rio.crs == pred.grid.crs and da.rio.transform() == pred.grid.transform
    # Chunk edges are cell edges: cells tile the CRS from its origin (x = 500 km is pixel 50000,
    # y = 7000 km is row -700000), 64 px each.
    col_edges, row_edges = np.cumsum(da.chunks[2])[:-1], np.cumsum(da.chunks[1])[:-1]
    assert len(col_edges) and all((e + 50000) % 64 == 0 for e in col_edges)
    assert len(row_edges) and all((e - 700000) % 64 == 0 for e in row_edges)
    expected = pred.to_numpy().filled(np.nan)
    calls_before = cells_computed(log)
    np.testing.assert_array_equal(da.compute().values, expected)  # threads, in this process
    one_chunk = da.isel(x=slice(0, 10), y=slice(0, 10)).compute()
    np.testing.assert_array_equal(one_chunk.values, expected[:, :10, :10])
    on_cluster = client.compute(da).result()
    np.testing.assert_array_equal(on_cluster.values, expected)
    ref = (arr[1] - arr[0]) / (arr[1] + arr[0])  # independent: NDVI by hand
    ok = np.isfinite(expected[0])
    np.testing.assert_allclose(expected[0][ok], ref[ok], rtol=1e-6)
    assert np.isnan(expected[0, 110, 400])
    assert cells_computed(log) > calls_before


def test_a_worker_killed_mid_export_leaves_an_identical_file(client, tmp_path):
    _, img = array_scene(1024)
    log, model = counting_prediction(tmp_path, delay=0.15)
    pred = model.predict_image(img, cache=None)
    reference = pred.export(tmp_path / "ref.tif", progress=False, block_size=256)
    pids = client.run(os.getpid)
    killed = []

    def kill_one(done, total):
        if done == 2 and not killed:
            busy = [w for w, tasks in client.processing().items() if tasks] or list(pids)
            os.kill(pids[busy[0]], signal.SIGKILL)
            killed.append(busy[0])

    out = pred.export(
        tmp_path / "out.tif", progress=False, block_size=256, client=client, on_progress=kill_one
    )
    assert killed, "the export finished before a worker could be killed"
    assert digest(out) == digest(reference)
    client.wait_for_workers(2, timeout=60)  # the nanny restarts it; later tests get 2 workers again
    assert sorted(os.listdir(tmp_path)) == ["calls.log", "out.tif", "ref.tif"]


@pytest.mark.parametrize("how", ["cancel", "ctrl-c"])
def test_cancel_stops_the_tasks_and_leaves_no_file(client, tmp_path, how):
    _, img = array_scene(1024)
    log, model = counting_prediction(tmp_path, delay=0.15)
    pred = model.predict_image(img, cache=None)
    cancel = threading.Event()

    def stop(done, total):
        if done == 2:
            if how == "cancel":
                cancel.set()  # what the panel's cancel button does
            else:
                raise KeyboardInterrupt

    error = ExportCancelled if how == "cancel" else KeyboardInterrupt
    with pytest.raises(error):
        pred.export(
            tmp_path / "out.tif",
            progress=False,
            block_size=256,
            client=client,
            on_progress=stop,
            cancel=cancel,
        )
    assert os.listdir(tmp_path) == ["calls.log"]  # no file, no temporary, no sidecar
    after = settled(client, log)
    time.sleep(1.0)
    assert cells_computed(log) == after, "tasks kept running after the cancel"
    assert after < 1024 * 1024 // (64 * 64)  # far from every cell


def test_resume_skips_finished_windows_and_gives_an_identical_file(client, tmp_path):
    _, img = array_scene(1024)
    log, model = counting_prediction(tmp_path)
    pred = model.predict_image(img, cache=None)
    probe = cells_computed(log)  # predict_image's one-cell probe of the output shape
    fresh = pred.export(tmp_path / "fresh.tif", progress=False, block_size=256, client=client)
    fresh_cells = cells_computed(log) - probe
    assert fresh_cells == 256
    target = tmp_path / "out.tif"

    def interrupt(done, total):
        if done == 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pred.export(target, progress=False, block_size=256, client=client, resume=True, on_progress=interrupt)
    assert not target.exists() and os.path.exists(sidecar_path(str(target)))
    before = settled(client, log)
    out = pred.export(target, progress=False, block_size=256, client=client, resume=True)
    resumed_cells = cells_computed(log) - before
    assert digest(out) == digest(fresh)
    assert resumed_cells <= fresh_cells - 8 * 16  # the 8 windows written before (16 cells each) were skipped
    assert sorted(os.listdir(tmp_path)) == ["calls.log", "fresh.tif", "out.tif"]  # sidecar and temp removed


def test_a_keras_cell_has_the_same_bits_alone_or_in_a_batch():
    # oneDNN runs a batch of one through other kernels; exports and to_numpy batch cells
    # differently, so a lone cell must give the bits it gives inside a batch.
    model = demo.model("fcn")
    x = np.random.default_rng(3).uniform(100, 5000, (5, 144, 144, 1)).astype(np.float32)
    y = np.random.default_rng(4).uniform(100, 5000, (5, 144, 144, 1)).astype(np.float32)
    batch = model.predict_batch({"red": x, "nir": y})
    for k in (0, 4):
        alone = model.predict_batch({"red": x[k : k + 1], "nir": y[k : k + 1]})
        for name in batch:
            np.testing.assert_array_equal(alone[name][0], batch[name][k])


def test_export_tab_runs_on_the_cluster_shows_tasks_and_cancels(client, tmp_path):
    from ee_model_widgets import explore
    from ee_model_widgets.widgets.headless import HeadlessView

    _, img = array_scene(1024)
    log, model = counting_prediction(tmp_path, delay=0.1)
    panel = explore(models={"counting": model}, image=img, basemap=None, client=client)
    panel.view = HeadlessView(panel.layer)
    panel.wait()
    try:
        tab = panel.exporter
        assert tab.on_cluster.layout.display != "none" and tab.on_cluster.value
        target = tmp_path / "tab.tif"
        tab.path.value = str(target)
        with distributed.get_task_stream(client) as stream:
            tab.button.click()
            panel.wait()
        assert tab.written == str(target), tab.result.value
        assert tab.tasks.value == "tasks 4/4"  # 1024 px in chunks of 512
        assert any(t["key"].startswith("emw-export") for t in stream.data)  # it ran on the workers
        assert_cog(target)
        local = panel.prediction.export(
            tmp_path / "local.tif", region=panel.region, block_size=512, progress=False
        )
        assert digest(local) == digest(target)

        # Cancel after the first chunk: no file, no temporary, an explanation in the tab.
        cancelled = tmp_path / "cancelled.tif"
        tab.path.value = str(cancelled)
        shown = tab.on_progress

        def cancel_after_one(done, total):
            shown(done, total)
            if done == 1:
                tab.cancel()

        tab.on_progress = cancel_after_one
        tab.button.click()
        panel.wait()
        assert "cancelled" in tab.result.value and not cancelled.exists()
        assert sorted(os.listdir(tmp_path)) == ["calls.log", "local.tif", "tab.tif"]
    finally:
        panel.close()


@pytest.fixture(scope="module")
def solo_cluster():
    """One worker: faults that would end the shared client, or that only one worker shows."""
    cluster = distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0", host="127.0.0.1"
    )
    yield cluster
    cluster.close()


class DiesOnce:
    """Kills its own worker process (SIGKILL, as the OOM killer does) on the first call of the
    cluster's life (a marker file), then computes NDVI."""

    def __init__(self, marker: str, always: bool = False):
        self.marker, self.always = marker, always

    def __call__(self, batch):
        if self.always or not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        x = batch["array"]
        return (x[..., 1:2] - x[..., 0:1]) / (x[..., 1:2] + x[..., 0:1])


def test_the_only_worker_killed_mid_export_leaves_an_identical_file(solo_cluster, tmp_path):
    # The image travels once per worker; lost with the only worker holding it, it must come back
    # (scattered data did not: every pending chunk was cancelled, "already forgotten").
    _, img = array_scene(512)
    params = dict(input_tile_size=64, output_bands={"ndvi": {"type": "float"}})
    pred = Model.from_callable(DiesOnce(str(tmp_path / "died")), **params).predict_image(img, cache=None)
    with distributed.Client(solo_cluster) as own:
        pred.export(tmp_path / "out.tif", client=own, block_size=256, progress=False)
        own.wait_for_workers(1, timeout=60)
    assert os.path.exists(tmp_path / "died"), "the worker was not killed"
    reference = np.ma.filled(pred.to_numpy().astype(np.float32), np.nan)  # computed here, in this process
    np.testing.assert_array_equal(read(tmp_path / "out.tif"), reference)
    assert sorted(os.listdir(tmp_path)) == ["died", "out.tif"]


def test_a_model_that_kills_every_worker_names_the_cause_and_the_fix(solo_cluster, tmp_path):
    _, img = array_scene(256)
    model = Model.from_callable(
        DiesOnce(str(tmp_path / "died"), always=True),
        input_tile_size=64,
        output_bands={"ndvi": {"type": "float"}},
    )
    out = tmp_path / "out"
    out.mkdir()
    with distributed.Client(solo_cluster) as own:
        with pytest.raises(ExportError, match=r"died\. The model crashed the worker.*memory.*block_size"):
            model.predict_image(img, cache=None).export(out / "o.tif", client=own, progress=False)
        own.wait_for_workers(1, timeout=60)
    assert os.listdir(out) == []


def test_a_client_closed_mid_export_says_so_and_leaves_nothing(solo_cluster, tmp_path):
    # Its own client: closing the shared one would end the other tests.
    own = distributed.Client(solo_cluster)
    try:
        _, img = array_scene(512)
        log, model = counting_prediction(tmp_path, delay=0.2)
        pred = model.predict_image(img)
        out = tmp_path / "out"
        out.mkdir()

        def close_after_the_first_window(done, total):
            if done == 1:
                own.close()  # what a user does from another cell, or a notebook restart of the client

        with pytest.raises(ExportError, match="client was closed while the export ran") as info:
            pred.export(
                str(out / "c.tif"),
                client=own,
                block_size=256,
                progress=False,
                on_progress=close_after_the_first_window,
            )
        assert "Keep the client open" in str(info.value)
        assert os.listdir(out) == []  # neither the file nor a temporary
        with pytest.raises(ExportError, match="it is closed"):
            pred.export(str(out / "c.tif"), client=own, progress=False)
        assert os.listdir(out) == []
    finally:
        own.close()


def test_a_cluster_given_as_client_is_refused_with_the_fix(solo_cluster, tmp_path):
    # The usual slip: client=cluster (LocalCluster, KubeCluster...) instead of Client(cluster).
    _, img = array_scene(256)
    with pytest.raises(InputError, match=r"got LocalCluster.*pass distributed\.Client\(cluster\)"):
        img.export(tmp_path / "o.tif", client=solo_cluster, progress=False)
    assert os.listdir(tmp_path) == []

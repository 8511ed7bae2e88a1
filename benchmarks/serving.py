"""The local predict server: REST round trip vs in-process, and throughput under concurrency.

Models: fully-convolutional nets on 256x256x4 float32 tiles (three 3x3 convolutions), saved as
.keras and served by `ee-model serve` in its own process (as in a workshop: one machine serves,
clients elsewhere), EE wire format (SERIALIZED_TF_TENSORS). Two widths: 16 filters (~5 ms per
tile in-process: almost all of the round trip is transport, the worst case) and 64 filters
(~10x the compute per tile, still less than a typical segmentation U-Net).

(a) 16 tiles through `RestPredictor` (the client behind `Model.from_vertex_ai`: encode, split
    under max_payload_bytes=1.5 MB -> one tile per request, 8 concurrent requests, server-side
    batching, decode) / the same 16 tiles in one in-process Keras call. Target <= 1.5x.
    Measured twice: server in its own process (`ee-model serve`) and in a background thread of
    the benchmark process (`serving.serve`, as in a notebook). Also the CPU time one REST call
    costs the client and the server process (Linux): with client and server on the same two
    cores, (client + server CPU) / 2 close to the wall time means the run is CPU-bound.
(b) server throughput (tiles/s) with 1, 4 and 16 concurrent clients, each sending one-tile
    requests, and the speed-up over one client (16-filter model).
Ratios are measured in one run; absolute times are noisy on shared machines.

Run: .venv/bin/python benchmarks/serving.py [--repeat 3] [--requests 48]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from _figures import record  # noqa: E402
from _timing import best  # noqa: E402


def build_model(path: Path, filters: int = 16):
    import keras

    keras.utils.set_random_seed(0)
    x = inp = keras.Input((None, None, 4), name="array")
    x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(2, 3, padding="same", activation="softmax")(x)
    model = keras.Model(inp, x)
    model.save(path)
    return model


def start_server(model_path: Path):
    """`ee-model serve` in a subprocess on a free port; returns (process, model URL)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ee_model_widgets.cli",
            "serve",
            str(model_path),
            "--name",
            "bench",
            "--port",
            "0",
            "--log-level",
            "warning",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    for line in proc.stdout:
        m = re.search(r"model URL : (\S+)", line)
        if m:
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
            return proc, m[1]
    raise RuntimeError("ee-model serve did not start")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def round_trip(model_path: Path, tiles: np.ndarray, repeat: int) -> dict:
    """In-process Keras vs REST (CLI server, then a server thread) on the same 16 tiles."""
    import keras

    from ee_model_widgets.serving import serve
    from ee_model_widgets.serving.client import RestPredictor

    km = keras.saving.load_model(model_path)
    expected = np.asarray(km.predict_on_batch(tiles))
    out = {"local": best(lambda: km.predict_on_batch(tiles), repeat)}
    proc, url = start_server(model_path)
    try:
        predictor = RestPredictor(url)
        got = predictor({"array": tiles})  # warm-up (traces the server's function) + check
        assert np.abs(got - expected).max() < 1e-5, "REST answer differs from the local model"
        out["rest"] = best(lambda: predictor({"array": tiles}), repeat)
        calls = 3
        c0, s0 = cpu_seconds(os.getpid()), cpu_seconds(proc.pid)
        for _ in range(calls):
            predictor({"array": tiles})
        c1, s1 = cpu_seconds(os.getpid()), cpu_seconds(proc.pid)
        if None not in (c0, c1, s0, s1):
            out["cpu"] = ((c1 - c0) / calls, (s1 - s0) / calls)
        predictor.close()
    finally:
        proc.terminate()
        proc.wait(30)
    # the notebook setup: `serving.serve(...)` in a background thread of this process
    with serve(model_path, name="bench") as handle:
        in_thread = RestPredictor(handle.url)
        in_thread({"array": tiles})
        out["thread"] = best(lambda: in_thread({"array": tiles}), repeat)
        in_thread.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--requests", type=int, default=48, help="one-tile requests per throughput measurement")
    args = ap.parse_args()

    from ee_model_widgets.serving.client import RestPredictor

    rng = np.random.default_rng(0)
    tiles = rng.random((16, 256, 256, 4), dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        print(
            "(a) 16 tiles 256x256x4 float32, SERIALIZED_TF_TENSORS, max_payload_bytes=1.5 MB (1 tile/request), "
            "8 concurrent requests"
        )
        for filters in (16, 64):
            path = Path(tmp) / f"fcn{filters}.keras"
            build_model(path, filters)
            r = round_trip(path, tiles, args.repeat)
            local = r["local"]
            print(
                f"  FCN, {filters} filters: in-process Keras call {local * 1e3:7.1f} ms ({local / 16 * 1e3:.1f} ms/tile)"
            )
            print(
                f"    REST, server in its own process (CLI)   : {r['rest'] * 1e3:8.1f} ms   ratio {r['rest'] / local:5.2f}x"
            )
            print(
                f"    REST, server in a thread here (notebook): {r['thread'] * 1e3:8.1f} ms   ratio {r['thread'] / local:5.2f}x"
            )
            record(
                f"serving.a{filters}",
                f"REST round trip, 16 tiles 256x256x4 through `ee-model serve` / in-process, FCN of {filters} "
                f"filters ({local / 16 * 1e3:.0f} ms per tile); server in a notebook thread in brackets",
                f"{r['rest'] / local:.2f}x ({r['thread'] / local:.2f}x)",
                "<= 1.5x",
            )
            if "cpu" in r:
                client, server = r["cpu"]
                print(
                    f"    CPU per REST call: client {client * 1e3:.0f} ms + server {server * 1e3:.0f} ms "
                    f"= {(client + server) / 2 * 1e3:.0f} ms of wall time on 2 cores"
                )
        print("    (target <= 1.5x)")

        path = Path(tmp) / "fcn16.keras"
        proc, url = start_server(path)
        try:
            print(f"(b) throughput, FCN 16 filters, {args.requests} one-tile requests per run")
            base = None
            rates = {}
            for clients in (1, 4, 16):
                # each client has its own connection, as separate users would
                preds = [RestPredictor(url, max_concurrency=1) for _ in range(clients)]
                for p in preds:
                    p({"array": tiles[:1]})

                def run_clients(preds=preds):
                    def one(i):
                        return preds[i % len(preds)]({"array": tiles[i % 16 : i % 16 + 1]})

                    with ThreadPoolExecutor(len(preds)) as pool:
                        list(pool.map(one, range(args.requests)))

                t = best(run_clients, args.repeat)
                rate = args.requests / t
                base = base or rate
                print(f"    {clients:2d} client(s): {rate:7.1f} tiles/s   x{rate / base:4.2f} vs 1 client")
                rates[clients] = rate / base
                for p in preds:
                    p.close()
            record(
                "serving.b",
                "Server throughput, 4 and 16 concurrent clients / 1 client",
                f"{rates[4]:.2f}x, {rates[16]:.2f}x",
            )
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()

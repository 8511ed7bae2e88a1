"""The local predict server: REST round trip vs in-process, and throughput under concurrency.

Model: a fully-convolutional net on 256x256x4 float32 tiles (three 3x3 convolutions, 16
filters), saved as .keras and served by `ee-model serve` in its own process (as in a workshop:
one machine serves, clients elsewhere), EE wire format (SERIALIZED_TF_TENSORS).

(a) 16 tiles through `RestPredictor` (the client behind `Model.from_vertex_ai`: encode, split
    under max_payload_bytes=1.5 MB -> one tile per request, 4 concurrent requests, server-side
    batching, decode) / the same 16 tiles in one in-process Keras call. Target <= 1.5x.
    Measured twice: server in its own process (`ee-model serve`) and in a background thread of
    the benchmark process (`serving.serve`, as in a notebook).
(b) server throughput (tiles/s) with 1, 4 and 16 concurrent clients, each sending one-tile
    requests, and the speed-up over one client.
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
from _timing import best  # noqa: E402


def build_model(path: Path):
    import keras

    keras.utils.set_random_seed(0)
    x = inp = keras.Input((None, None, 4), name="array")
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--requests", type=int, default=48, help="one-tile requests per throughput measurement")
    args = ap.parse_args()

    from ee_model_widgets.serving import serve
    from ee_model_widgets.serving.client import RestPredictor

    rng = np.random.default_rng(0)
    tiles = rng.random((16, 256, 256, 4), dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        km = build_model(Path(tmp) / "fcn.keras")
        proc, url = start_server(Path(tmp) / "fcn.keras")
        try:
            predictor = RestPredictor(url)
            expected = np.asarray(km.predict_on_batch(tiles))
            got = predictor({"array": tiles})  # warm-up (traces the server's function) + check
            assert np.abs(got - expected).max() < 1e-5, "REST answer differs from the local model"

            local = best(lambda: km.predict_on_batch(tiles), args.repeat)
            rest = best(lambda: predictor({"array": tiles}), args.repeat)
            # the notebook setup: `serving.serve(...)` in a background thread of this process
            with serve(Path(tmp) / "fcn.keras", name="bench") as handle:
                in_thread = RestPredictor(handle.url)
                in_thread({"array": tiles})
                rest_thread = best(lambda: in_thread({"array": tiles}), args.repeat)
            print(
                "(a) 16 tiles 256x256x4 float32, SERIALIZED_TF_TENSORS, max_payload_bytes=1.5 MB (1 tile/request)"
            )
            print(f"    in-process Keras call                   : {local * 1e3:8.1f} ms")
            print(
                f"    REST, server in its own process (CLI)   : {rest * 1e3:8.1f} ms   ratio {rest / local:5.2f}x"
            )
            print(
                f"    REST, server in a thread here (notebook): {rest_thread * 1e3:8.1f} ms   ratio {rest_thread / local:5.2f}x"
            )
            print("    (target <= 1.5x)")

            print(f"(b) throughput, {args.requests} one-tile requests per run")
            base = None
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
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()

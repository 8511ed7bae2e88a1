"""Build and train the four demo models in `ee_model_widgets/demo/models/` (CPU, ~1 minute).

    .venv/bin/python scripts/train_demo_models.py [--out DIR] [--epochs-scale 1.0]

Deterministic: fixed seeds, TensorFlow op determinism, and the `.keras` archives are
rewritten with fixed timestamps, so on one machine two runs give byte-identical files.
Every model takes its bands as separate named inputs of shape (H, W, 1) (Earth Engine's
one-tensor-per-band convention) and concatenates them itself; only built-in Keras layers
and `keras.ops` are used, so `keras.models.load_model(path)` needs no custom objects.

- ndvi:      (nir - red) / (nir + red), no weights.
- downscale: the same NDVI averaged over 2x2 pixels (AveragePooling2D): output tile = input / 2.
- fcn:       ZeroPadding2D(3) + three 3x3 'valid' convolutions (receptive field 7x7), trained
             to predict NDVI smoothed by a 5x5 binomial filter. Zero-padding the *input* (not
             each layer) means running it on tiles with >= 3 px overlap, where pixels outside
             the image arrive as 0 like Earth Engine's masked pixels, equals running it on the
             whole image at once, also at the image edges.
- landcover: per-pixel MLP as 1x1 convolutions on the six bands plus NDVI and mean
             reflectance computed in the model, softmax over 4 classes
             (shadow, bare, bright, vegetation) labelled on the embedded scene by index rules.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "ee_model_widgets" / "demo" / "models"
SCENE = ROOT / "ee_model_widgets" / "demo" / "data" / "sentinel2_patagonia.tif"
SCALE = 1e-4  # reflectance x 10000 -> reflectance
FCN_RADIUS = 3  # receptive-field radius of the fcn (three 3x3 convolutions)
# Landcover label rules (reflectance units) on the scene; see LANDCOVER_CLASSES in demo/__init__.py.
SHADOW_BELOW, BRIGHT_ABOVE, VEGETATION_NDVI = 0.135, 0.175, 0.11
BANDS6 = ["blue", "green", "red", "nir", "swir1", "swir2"]


# ---- data ------------------------------------------------------------------------------------
def load_scene() -> dict[str, np.ndarray]:
    import rasterio

    with rasterio.open(SCENE) as ds:
        return {name: ds.read(i + 1).astype(np.float32) for i, name in enumerate(ds.descriptions)}


def ndvi(red: np.ndarray, nir: np.ndarray) -> np.ndarray:
    return ((nir - red) / (nir + red)).astype(np.float32)


def binomial5(a: np.ndarray) -> np.ndarray:
    """5x5 binomial smoothing ([1 4 6 4 1]/16 per axis) of the last two axes, 'valid' part."""
    k = np.array([1, 4, 6, 4, 1], np.float32) / 16
    rows = sum(k[i] * a[..., i : a.shape[-2] - 4 + i, :] for i in range(5))
    return sum(k[i] * rows[..., :, i : a.shape[-1] - 4 + i] for i in range(5))


def landcover_labels(b: dict[str, np.ndarray]) -> np.ndarray:
    """Class per pixel from index rules: 0 shadow, 1 bare, 2 bright, 3 vegetation."""
    brightness = np.mean([b[n] for n in BANDS6], axis=0) * SCALE
    labels = np.ones(brightness.shape, np.int64)
    labels[brightness < SHADOW_BELOW] = 0
    labels[brightness > BRIGHT_ABOVE] = 2
    labels[ndvi(b["red"], b["nir"]) > VEGETATION_NDVI] = 3
    return labels


def fcn_patches(rng: np.random.Generator, n: int, size: int = 32):
    """(inputs dict, targets) of n random patches from the scene and synthetic scenes.

    Inputs are size + 2*(radius + 2) px so the 5x5-smoothed target is defined on the
    central size + 2*radius... cropped to `size` after the model's own crop (see train_fcn).
    """
    from ee_model_widgets.demo.synthetic import SyntheticImage

    pad = FCN_RADIUS + 2  # model context + smoothing context
    full = size + 2 * pad
    scene = load_scene()
    # The real scene's NDVI spans -0.01..0.31 only (arid hills): add synthetic scenes with
    # lakes and dense vegetation so the model is right on the whole NDVI range.
    sources = [np.stack([scene["red"], scene["nir"]])]
    for seed in range(3):
        img = SyntheticImage(384, 384, bands=("red", "nir"), seed=100 + seed)
        sources.append(img.read(img.grid).data)
    red = np.empty((n, full, full), np.float32)
    nir = np.empty((n, full, full), np.float32)
    for i in range(n):
        src = sources[0] if i % 2 == 0 else sources[1 + (i // 2) % (len(sources) - 1)]
        r0 = rng.integers(0, src.shape[1] - full + 1)
        c0 = rng.integers(0, src.shape[2] - full + 1)
        red[i], nir[i] = src[:, r0 : r0 + full, c0 : c0 + full]
    target = binomial5(ndvi(red, nir))  # (n, full - 4, full - 4)
    crop = pad - 2  # target pixels farther than radius from the patch edge
    target = target[:, crop : target.shape[1] - crop, crop : target.shape[2] - crop]
    return {"red": red[..., None], "nir": nir[..., None]}, target[..., None]


# ---- models ---------------------------------------------------------------------------------
def band_inputs(keras, names):
    return {n: keras.Input(shape=(None, None, 1), name=n) for n in names}


def build_ndvi(keras):
    inp = band_inputs(keras, ["red", "nir"])
    ops = keras.ops
    out = ops.divide_no_nan(ops.subtract(inp["nir"], inp["red"]), ops.add(inp["nir"], inp["red"]))
    return keras.Model(inp, out, name="ndvi")


def build_downscale(keras):
    inp = band_inputs(keras, ["red", "nir"])
    ops = keras.ops
    v = ops.divide_no_nan(ops.subtract(inp["nir"], inp["red"]), ops.add(inp["nir"], inp["red"]))
    out = keras.layers.AveragePooling2D(pool_size=2, name="mean_2x2")(v)
    return keras.Model(inp, out, name="downscale")


def build_fcn(keras):
    inp = band_inputs(keras, ["red", "nir"])
    L = keras.layers
    x = L.Concatenate(axis=-1)([inp["red"], inp["nir"]])
    x = L.Rescaling(SCALE)(x)  # keeps 0 at 0, so masked pixels stay "zero padding"
    x = L.ZeroPadding2D(FCN_RADIUS)(x)
    x = L.Conv2D(16, 3, padding="valid", activation="relu")(x)
    x = L.Conv2D(16, 3, padding="valid", activation="relu")(x)
    out = L.Conv2D(1, 3, padding="valid", name="ndvi_smooth")(x)
    return keras.Model(inp, out, name="fcn")


def build_landcover(keras, n_classes=4):
    inp = band_inputs(keras, BANDS6)
    L, ops = keras.layers, keras.ops
    bands = L.Rescaling(SCALE)(L.Concatenate(axis=-1)([inp[n] for n in BANDS6]))
    # Spectral indices as extra features (keras.ops serialise without custom objects).
    red, nir = inp["red"], inp["nir"]
    index = ops.divide_no_nan(ops.subtract(nir, red), ops.add(nir, red))
    brightness = ops.mean(bands, axis=-1, keepdims=True)
    x = L.Concatenate(axis=-1)([bands, index, brightness])
    x = L.Conv2D(32, 1, activation="relu")(x)
    x = L.Conv2D(32, 1, activation="relu")(x)
    out = L.Conv2D(n_classes, 1, activation="softmax", name="landcover")(x)
    return keras.Model(inp, out, name="landcover")


# ---- training -------------------------------------------------------------------------------
def train_fcn(keras, rng, epochs: int):
    model = build_fcn(keras)
    inputs, target = fcn_patches(rng, 1536)
    # Train on the part of each output that only sees real pixels (away from the padding).
    crop = FCN_RADIUS + 2
    head = keras.layers.Cropping2D(crop)(model.outputs[0])
    trainer = keras.Model(model.inputs, head)
    trainer.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
    trainer.fit(inputs, target, batch_size=32, epochs=epochs, shuffle=True, verbose=0)
    mse = float(trainer.evaluate(inputs, target, verbose=0))
    print(f"fcn: training RMSE {mse**0.5:.4f} (NDVI units)")
    return model


def train_landcover(keras, rng, epochs: int):
    model = build_landcover(keras)
    b = load_scene()
    labels = landcover_labels(b).ravel()
    x = {n: b[n].reshape(-1, 1, 1, 1) for n in BANDS6}
    # Balance the classes: vegetation and bright ground are rare.
    counts = np.bincount(labels, minlength=4)
    weights = (labels.size / (4 * counts))[labels].astype(np.float32)
    y = labels.reshape(-1, 1, 1)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, y, sample_weight=weights, batch_size=256, epochs=epochs, shuffle=True, verbose=0)
    pred = model.predict(x, batch_size=4096, verbose=0).reshape(-1, 4).argmax(-1)
    acc = float(np.mean(pred == labels))
    print(f"landcover: class counts {counts.tolist()}, agreement with the index rules {acc:.3f}")
    return model


# ---- deterministic .keras files ---------------------------------------------------------------
def _renumber_shared_ids(node, ids: dict) -> None:
    """Keras writes `shared_object_id = id(obj)` (a memory address): number them 1, 2, ..."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "shared_object_id":
                node[key] = ids.setdefault(value, len(ids) + 1)
            else:
                _renumber_shared_ids(value, ids)
    elif isinstance(node, list):
        for value in node:
            _renumber_shared_ids(value, ids)


def save_deterministic(model, path: Path) -> None:
    """model.save(), then rewrite the zip with fixed timestamps, no save date, stable ids."""
    tmp = path.with_suffix(".tmp.keras")
    model.save(tmp)
    buf = io.BytesIO()
    with zipfile.ZipFile(tmp) as src, zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as dst:
        for name in sorted(src.namelist()):
            data = src.read(name)
            if name == "metadata.json":
                meta = json.loads(data)
                meta["date_saved"] = "1980-01-01@00:00:00"
                data = json.dumps(meta, sort_keys=True).encode()
            elif name == "config.json":
                config = json.loads(data)
                _renumber_shared_ids(config, {})
                data = json.dumps(config).encode()
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(info, data)
    tmp.unlink()
    path.write_bytes(buf.getvalue())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--epochs-scale", type=float, default=1.0, help="multiply the epoch counts")
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    tf.config.experimental.enable_op_determinism()
    rng = np.random.default_rng(0)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    models = {
        "ndvi": build_ndvi(keras),
        "downscale": build_downscale(keras),
        "fcn": train_fcn(keras, rng, max(1, round(40 * args.epochs_scale))),
        "landcover": train_landcover(keras, rng, max(1, round(8 * args.epochs_scale))),
    }
    for name, m in models.items():
        path = args.out / f"{name}.keras"
        save_deterministic(m, path)
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB, {m.count_params()} parameters)")
    print(f"done in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

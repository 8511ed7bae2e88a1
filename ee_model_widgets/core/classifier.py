"""Train a classifier on labelled pixels in the kernel: `train_classifier` -> `TrainedClassifier`.

    labels = Labels(["water", "forest"]); labels.add((lon, lat), "water"); ...
    clf = train_classifier(image, labels, kind="pixel", seed=0)
    clf.model.predict_image(image)     # one probability band per class + "classification"
    clf.evaluate(image, truth)         # accuracy, precision/recall/F1, confusion matrix

The trained network is a plain Keras model built from built-in layers only: one input per
band (Earth Engine's one-tensor-per-band convention), a `Normalization` layer holding the
image's band statistics (so the saved `.keras` is self-contained), 1x1 convolutions
(`kind="pixel"`) or two 3x3 convolutions (`kind="patch"`, run with a 2-pixel overlap so
tiles join without seams), a softmax, then one output per class and the argmax. It works
wherever an `emw.Model` does: the map, exports, `ee-model prepare` and `serve`.
Training is deterministic for a seed (seeded initialisers and shuffling).
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import threading
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError, ModelError
from .evaluation import Evaluation
from .labels import Labels, Samples

if TYPE_CHECKING:
    from .image import Image
    from .model import Model

#: Name of the class-index band (Earth Engine's `classify()` names it so too).
CLASS_BAND = "classification"
KINDS = ("pixel", "patch")
#: Receptive-field radius of the patch network (two 3x3 convolutions) = its tile overlap.
PATCH_RADIUS = 2
TILE_SIZE = 256
HIDDEN = 32
# Gradient steps a default training aims at (epochs follow from the number of samples).
_TARGET_STEPS = 300
# Band statistics are computed on at most this many pixels (a coarser read of big images).
_STATS_PIXELS = 1_000_000
# One training at a time: two would only share the same CPU cores and take twice as long each.
_TRAIN_LOCK = threading.Lock()


# Names of the network's own layers: an output band may not take them.
_LAYER_NAMES = ("stack", "normalise", "hidden_0", "hidden_1", "probabilities", "centre")


def class_band_names(classes: Sequence[str], input_bands: Sequence[str] = ()) -> list[str]:
    """Probability band names for class names: ASCII letters, digits and '_' kept (model
    output names must be ASCII), anything else -> '_'; a name with no ASCII letter or digit
    ("水", "лес") becomes "class_<its index>"; a name taken by an input band or by the network
    ("green" on an image with a "green" band) gets the suffix "_probability"."""
    names = [re.sub(r"[^A-Za-z0-9_]", "_", c) for c in classes]
    names = [n if re.search(r"[A-Za-z0-9]", n) else str(i) for i, n in enumerate(names)]
    names = [n if not n[0].isdigit() else f"class_{n}" for n in names]
    taken = {*input_bands, *_LAYER_NAMES, CLASS_BAND}
    names = [f"{n}_probability" if n in taken else n for n in names]
    if len(set(names)) != len(names):
        raise InputError(
            f"Class names {list(classes)} give the band names {names}, which collide: rename the classes."
        )
    return names


def band_statistics(image: Image, bands: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and variance of the image's valid pixels (on a coarser grid for big images)."""
    from .region import grid_for

    g = image.grid
    k = max(1, math.ceil(math.sqrt(g.width * g.height / _STATS_PIXELS)))
    grid = grid_for(image, None, image.projection.scaled(k) if k > 1 else None)
    data = image.read(grid, list(bands))
    mean, var = np.empty(len(bands)), np.empty(len(bands))
    for i, b in enumerate(bands):
        v = data[i].compressed().astype(np.float64)
        if v.size == 0:
            raise InputError(f"Band {b!r} of the image has no valid pixels: cannot normalise it.")
        mean[i], var[i] = v.mean(), v.var()
    var[var <= 0] = 1.0  # a constant band: leave it unscaled rather than divide by zero
    return mean.astype(np.float32), var.astype(np.float32)


def _build(keras, bands: Sequence[str], outputs: Sequence[str], mean, var, kind: str, seed: int):
    """The inference network (tile in, one band per class + class index out) and the
    training network (sample in, centre-pixel probabilities out) sharing its layers."""
    layers = keras.layers
    inputs = [keras.Input((None, None, 1), name=b) for b in bands]
    x = layers.Concatenate(name="stack")(inputs) if len(inputs) > 1 else inputs[0]
    x = layers.Normalization(mean=mean.tolist(), variance=var.tolist(), name="normalise")(x)
    size = 3 if kind == "patch" else 1
    for i in range(2):
        init = keras.initializers.GlorotUniform(seed=seed * 16 + i)
        x = layers.Conv2D(
            HIDDEN, size, padding="same", activation="relu", kernel_initializer=init, name=f"hidden_{i}"
        )(x)
    init = keras.initializers.GlorotUniform(seed=seed * 16 + 2)
    probs = layers.Conv2D(
        len(outputs), 1, activation="softmax", kernel_initializer=init, name="probabilities"
    )(x)
    per_class = [layers.Identity(name=n)(probs[..., i : i + 1]) for i, n in enumerate(outputs)]
    index = keras.ops.cast(keras.ops.expand_dims(keras.ops.argmax(probs, axis=-1), -1), "int32")
    out = per_class + [layers.Identity(name=CLASS_BAND)(index)]
    model = keras.Model(inputs, out, name="classifier")
    train_out = layers.Cropping2D(PATCH_RADIUS, name="centre")(probs) if kind == "patch" else probs
    return model, keras.Model(inputs, train_out, name="classifier_training")


def _split(y: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train, validation) indices; a class with one sample stays in training."""
    train, val = [], []
    for k in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == k))
        n_val = int(round(idx.size * fraction)) if idx.size > 1 else 0
        n_val = min(n_val, idx.size - 1)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def train_classifier(
    image: Image,
    labels: Labels,
    bands: Sequence[str] | None = None,
    kind: str = "pixel",
    epochs: int | None = None,
    validation_split: float = 0.2,
    seed: int = 0,
    on_progress: Callable[[dict], Any] | None = None,
) -> TrainedClassifier:
    """Train a classifier of `labels.classes` on the image pixels under `labels`.

    `kind`: "pixel" (a per-pixel network on the bands) or "patch" (a small fully
    convolutional network seeing a 5x5 neighbourhood). `epochs` None picks enough for
    ~300 gradient steps. `validation_split` of each class's pixels is held out for the
    validation figures. `on_progress(info)` gets a dict per epoch (epoch, epochs, loss,
    accuracy, val_loss, val_accuracy); returning False from it stops training early.
    """
    from .image import Image as _Image

    if not isinstance(image, _Image):
        raise InputError(
            f"image must be an emw.Image (emw.Image.open(path) or emw.Image.from_array(...)), "
            f"got {type(image).__name__}."
        )
    if not isinstance(labels, Labels):
        raise InputError(f"labels must be an emw.Labels, got {type(labels).__name__}.")
    if kind not in KINDS:
        raise InputError(f"kind must be one of {KINDS}, got {kind!r}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}.")
    if not (isinstance(validation_split, (int, float)) and 0 <= validation_split < 1):
        raise InputError(f"validation_split must be a fraction in [0, 1), got {validation_split!r}.")
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise InputError(f"epochs must be a positive integer or None, got {epochs!r}.")
    bands = list(image.band_names if bands is None else ([bands] if isinstance(bands, str) else bands))
    image = image.select(bands)
    outputs = class_band_names(labels.classes, bands)
    patch = 2 * PATCH_RADIUS + 1 if kind == "patch" else None
    samples = labels.sample(image, patch_size=patch)
    present = np.unique(samples.y)
    if present.size < 2:
        raise InputError(
            f"Training needs labelled pixels of at least two classes; the labels cover {samples.counts()} "
            f"pixels per class.{_why_no_pixels(image, labels, samples) or ' Label some pixels of another class.'}"
        )
    start = time.perf_counter()
    mean, var = band_statistics(image, bands)

    import keras

    with _TRAIN_LOCK:
        km, history, validation = _fit(
            keras, samples, bands, outputs, mean, var, kind, int(seed), epochs, validation_split, on_progress
        )
    clf = TrainedClassifier(
        km,
        classes=labels.classes,
        colors=labels.colors,
        bands=bands,
        kind=kind,
        history=history,
        samples=samples.counts(),
    )
    clf.validation = Evaluation.from_classes(labels.classes, *validation)
    clf.seconds = time.perf_counter() - start
    clf.unused = samples.unused()
    return clf


# The entry of a saved classifier's .keras archive that holds its class names and colours.
_LEGEND_FILE = "ee_model_widgets_legend.json"


def _saved_legend(path: str) -> dict:
    """The class names and colours `TrainedClassifier.save` wrote into `path` ({} if none)."""
    try:
        with zipfile.ZipFile(path) as z:
            return json.loads(z.read(_LEGEND_FILE))
    except (KeyError, OSError, ValueError, zipfile.BadZipFile):  # saved before, or by Keras alone
        return {}


def _why_no_pixels(image: Image, labels: Labels, samples: Samples) -> str:
    """Why classes that have labels got no training pixel: outside the image, or masked."""
    from .region import grid_for

    counts = samples.counts()
    empty = [c for c, n in labels.counts().items() if n and not counts[c]]
    if not empty:
        return ""
    inside = set(labels._pixels(grid_for(image, None, None))[2].tolist())
    outside = [c for c in empty if labels.classes.index(c) not in inside]
    masked = [c for c in empty if c not in outside]
    out = ""
    if outside:
        out += (
            f" The labels of {outside} lie outside the image, which covers {image.bounds} (lon/lat): "
            "are the points (lon, lat), lon first?"
        )
    if masked:
        out += (
            f" The labels of {masked} are all on masked pixels (nodata or NaN in one of the bands "
            f"{list(image.band_names)}): label valid pixels, or train on fewer bands."
        )
    return out


def _split_bands(x, bands):
    return {b: x[..., i : i + 1] for i, b in enumerate(bands)}


def _train_epoch(trainer, optimizer, loss_fn, bands, batch, x, y, w):
    """One epoch over `x` (already shuffled) in mini-batches, inside one graph call: a Python
    loop of small steps would spend more time dispatching than computing."""
    import tensorflow as tf

    n = tf.shape(y)[0]
    variables = trainer.trainable_variables
    for start in tf.range(0, n, batch):
        xb, yb, wb = x[start : start + batch], y[start : start + batch], w[start : start + batch]
        with tf.GradientTape() as tape:
            p = tf.reshape(trainer(_split_bands(xb, bands), training=True), (tf.shape(yb)[0], -1))
            loss = loss_fn(yb, p, sample_weight=wb)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))


def _scores(trainer, loss_fn, bands, x, y, w):
    """(weighted loss, accuracy, predicted classes) of the centre pixels of `x`."""
    import tensorflow as tf

    p = tf.reshape(trainer(_split_bands(x, bands), training=False), (tf.shape(y)[0], -1))
    predicted = tf.argmax(p, -1, output_type=tf.int32)
    return (
        loss_fn(y, p, sample_weight=w),
        tf.reduce_mean(tf.cast(tf.equal(predicted, y), tf.float32)),
        predicted,
    )


def _fit(
    keras, samples: Samples, bands, outputs, mean, var, kind, seed, epochs, validation_split, on_progress
):
    """Build and train; returns (inference model, history, (held-out truth, held-out prediction)).

    A small training loop of our own rather than `Model.fit`: its per-epoch set-up costs more
    than an epoch of a few hundred pixels, and our own shuffling (a numpy generator seeded
    with `seed`) plus seeded initialisers make runs identical without touching any global
    random state.
    """
    import tensorflow as tf

    km, trainer = _build(keras, bands, outputs, mean, var, kind, seed)
    rng = np.random.default_rng(seed)
    tr, va = _split(samples.y, validation_split, rng)
    if kind == "patch":
        x_all = samples.patches.transpose(0, 2, 3, 1)  # (N, P, P, bands)
    else:
        x_all = samples.x.reshape(-1, 1, 1, len(bands))
    x_all = np.ascontiguousarray(x_all, dtype=np.float32)
    y_all = samples.y.astype(np.int32)
    # Balance the classes: users label unevenly, and a rare class must still count.
    counts = np.bincount(y_all[tr], minlength=len(outputs)).astype(np.float64)
    weight_of = np.where(counts > 0, tr.size / (np.count_nonzero(counts) * np.maximum(counts, 1)), 0.0)
    w_all = weight_of[y_all].astype(np.float32)
    batch = 64 if tr.size <= 4096 else 256
    steps = math.ceil(tr.size / batch)
    if epochs is None:
        epochs = int(min(200, max(5, math.ceil(_TARGET_STEPS / steps))))

    optimizer = keras.optimizers.Adam(1e-2)
    optimizer.build(trainer.trainable_variables)  # its slots now, not while tracing the epoch
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    # Fixed signatures: one trace per training, whatever the batch size; partials of module
    # functions, so TensorFlow does not count the traces of every training as retracing.
    spec = (
        tf.TensorSpec((None, *x_all.shape[1:]), tf.float32),
        tf.TensorSpec((None,), tf.int32),
        tf.TensorSpec((None,), tf.float32),
    )
    train_epoch = tf.function(
        functools.partial(_train_epoch, trainer, optimizer, loss_fn, tuple(bands), batch),
        input_signature=spec,
    )
    scores = tf.function(functools.partial(_scores, trainer, loss_fn, tuple(bands)), input_signature=spec)

    history: dict[str, list[float]] = {"loss": [], "accuracy": []}
    if va.size:
        history.update(val_loss=[], val_accuracy=[])
    for epoch in range(epochs):
        order = tr[rng.permutation(tr.size)]
        train_epoch(x_all[order], y_all[order], w_all[order])
        # Figures over the whole training / validation sets with the epoch's final weights.
        loss, acc, _ = scores(x_all[tr], y_all[tr], w_all[tr])
        info = {"loss": float(loss), "accuracy": float(acc)}
        if va.size:
            vloss, vacc, _ = scores(x_all[va], y_all[va], w_all[va])
            info.update(val_loss=float(vloss), val_accuracy=float(vacc))
        for key, v in info.items():
            history[key].append(v)
        if on_progress is not None and on_progress({"epoch": epoch + 1, "epochs": epochs, **info}) is False:
            break
    held = scores(x_all[va], y_all[va], w_all[va])[2].numpy() if va.size else va
    return km, history, (samples.y[va], held)


class TrainedClassifier:
    """A trained classifier: `.model` (an `emw.Model`), `.history`, `.evaluate`, `.save`."""

    def __init__(
        self,
        keras_model,
        classes: Sequence[str],
        colors: Sequence[str] | None = None,
        bands: Sequence[str] | None = None,
        kind: str = "pixel",
        history: Mapping[str, list[float]] | None = None,
        samples: Mapping[str, int] | None = None,
        name: str = "classifier",
    ):
        """Low-level: use `train_classifier` (or `TrainedClassifier.load`)."""
        from .labels import PALETTE
        from .model import Model

        self.keras_model = keras_model
        self.classes = list(classes)
        self.colors = (
            list(colors) if colors is not None else [PALETTE[i % len(PALETTE)] for i in range(len(classes))]
        )
        self.band_names = [n for n in keras_model.output_names if n != CLASS_BAND]
        self.bands = list(bands) if bands is not None else [t.name for t in keras_model.inputs]
        self.kind = kind
        self.history = {k: list(v) for k, v in (history or {}).items()}
        self.samples = dict(samples or {})
        #: `Evaluation` on the pixels held out of training (set by `train_classifier`).
        self.validation: Evaluation | None = None
        #: Seconds `train_classifier` spent on band statistics and fitting (sampling the labels excluded).
        self.seconds = float("nan")
        #: What of the labels training could not use (`Samples.unused()`; "" when it used them all).
        self.unused = ""
        self.model: Model = Model.from_keras(keras_model, name=name, **self.ee_params)

    def __repr__(self) -> str:
        acc = self.history.get("val_accuracy") or self.history.get("accuracy") or [float("nan")]
        return (
            f"<TrainedClassifier {self.kind} classes={self.classes} bands={self.bands} "
            f"epochs={len(self.history.get('loss', []))} last accuracy {acc[-1]:.3f}>"
        )

    @property
    def ee_params(self) -> dict:
        """The Earth Engine parameters of the model (tiles, overlap, output bands): pass them
        to `Model.from_vertex_ai(url, **clf.ee_params)` for the hosted copy, as to ee.Model."""
        overlap = PATCH_RADIUS if self.kind == "patch" else 0
        out_bands = {n: {"type": "float"} for n in self.band_names}
        out_bands[CLASS_BAND] = {"type": "int8" if len(self.classes) <= 127 else "int16"}
        return {
            "input_tile_size": [TILE_SIZE, TILE_SIZE],
            "input_overlap_size": [overlap, overlap],
            "output_bands": out_bands,
        }

    @property
    def vis_params(self) -> dict:
        """Earth Engine vis params colouring the class band with the class colours."""
        return {
            "bands": [CLASS_BAND],
            "min": 0,
            "max": len(self.classes) - 1,
            "palette": list(self.colors),
            "categorical": True,
        }

    def predict_image(self, image: Image):
        """`self.model.predict_image(image)`: probability bands, then the class band."""
        return self.model.predict_image(image)

    def uncertainty(self, image: Image, method: str = "entropy") -> Image:
        """Band "uncertainty" in 0..1 (0: sure, 1: all classes equally likely): where to label next."""
        from .uncertainty import UncertaintyImage

        return UncertaintyImage(self.predict_image(image), self.band_names, method)

    def evaluate(self, image: Image, reference, region=None) -> Evaluation:
        """Compare the predicted classes with `reference`: `Labels` (their pixels) or an image
        whose first band holds class indices in `classes` order (negative/masked: skipped)."""
        pred = self.predict_image(image)
        if isinstance(reference, Labels):
            unknown = [c for c in reference.classes if c not in self.classes]
            if unknown:
                raise InputError(
                    f"Reference classes {unknown} are not classes of this classifier ({self.classes})."
                )
            s = reference.sample(pred, bands=[CLASS_BAND])
            remap = np.array([self.classes.index(c) for c in reference.classes], np.int64)
            return Evaluation.from_classes(self.classes, remap[s.y], s.x[:, 0].astype(np.int64))
        from rasterio.enums import Resampling

        from .image import Image as _Image
        from .region import grid_for

        if not isinstance(reference, _Image):
            raise InputError(
                f"reference must be emw.Labels or an emw.Image of class indices, got {type(reference).__name__}."
            )
        grid = grid_for(image, region, None)
        truth = reference.read(grid, reference.band_names[:1], resampling=Resampling.nearest)[0]
        got = pred.read(grid, [CLASS_BAND])[0]
        ok = ~(np.ma.getmaskarray(truth) | np.ma.getmaskarray(got))
        t = np.asarray(truth.data)[ok]
        ok_t = np.isfinite(t) & (t >= 0)
        t = t[ok_t]
        if t.size and (t.max() >= len(self.classes) or np.any(t != np.rint(t))):
            raise InputError(
                f"The reference image holds values {np.unique(t)[:10].tolist()}...: expected class indices "
                f"0..{len(self.classes) - 1} in the order {self.classes}."
            )
        p = np.asarray(got.data)[ok][ok_t]
        if not t.size:
            from ..errors import RegionError

            raise RegionError(
                f"The reference image has no valid class pixel where the prediction has one (image "
                f"bounds {image.bounds}, reference bounds {reference.bounds}, lon/lat): nothing to "
                "compare. Give a reference that overlaps the image."
            )
        return Evaluation.from_classes(self.classes, t.astype(np.int64), p.astype(np.int64))

    def save(self, path: str | os.PathLike) -> str:
        """Write the Keras model to `path` (`.keras`), via a temporary file renamed into place."""
        path = os.fspath(path)
        if not path.endswith(".keras"):
            raise InputError(f"Save the classifier to a .keras file, got {path!r}.")
        from .output_file import check_target

        check_target(path)  # a missing or read-only folder, a folder, a link: said before Keras tries
        tmp = f"{path[: -len('.keras')]}.tmp-{os.getpid()}.keras"
        try:
            self.keras_model.save(tmp)
            # Class names and colours beside Keras's own files (a .keras is a zip; Keras reads only
            # its own entries), so `load` gives back the same legend: band names lose both.
            with zipfile.ZipFile(tmp, "a") as z:
                z.writestr(_LEGEND_FILE, json.dumps({"classes": self.classes, "colors": self.colors}))
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        return path

    @classmethod
    def load(
        cls, path: str | os.PathLike, classes: Sequence[str] | None = None, colors=None
    ) -> TrainedClassifier:
        """A classifier saved with `save`, with the class names and colours it was saved with (a
        file saved otherwise: its output band names and the default colours)."""
        import keras

        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ModelError(f"No such classifier file: {path}.")
        try:
            km = keras.models.load_model(path, compile=False)
        except Exception as exc:  # noqa: BLE001 - keras raises many types
            hint = ""
            if path.endswith(".keras") and not zipfile.is_zipfile(path):
                hint = " The file is not a .keras (zip) archive: is it truncated or corrupt? Save it again."
            raise ModelError(f"Cannot load {path} as a saved classifier: {exc}{hint}") from None
        names = [n for n in km.output_names if n != CLASS_BAND]
        layers = {layer.name for layer in km.layers}
        if CLASS_BAND not in km.output_names or "hidden_0" not in layers:
            raise ModelError(
                f"{path} is not a classifier saved by TrainedClassifier.save (no {CLASS_BAND!r} output "
                "or no 'hidden_0' layer); load other models with emw.Model.from_keras."
            )
        saved = _saved_legend(path)  # the names and colours `save` wrote, unless given here
        if classes is None and len(saved.get("classes") or ()) == len(names) > 0:
            classes = saved["classes"]
        if colors is None and len(saved.get("colors") or ()) == len(names) > 0:
            colors = saved["colors"]
        if classes is not None and len(classes) != len(names):
            raise InputError(
                f"{path} classifies {len(names)} classes (bands {names}), but {len(classes)} class "
                f"names were given: {list(classes)}. Give one name per class, in band order."
            )
        if colors is not None and (isinstance(colors, str) or len(colors) != len(names)):
            raise InputError(f"colors must give one colour per class ({len(names)}), got {colors!r}.")
        kind = "patch" if km.get_layer("hidden_0").kernel_size[0] > 1 else "pixel"
        return cls(km, classes=list(classes) if classes is not None else names, colors=colors, kind=kind)

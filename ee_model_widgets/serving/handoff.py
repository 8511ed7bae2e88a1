"""Hand a classifier trained on the map over to Earth Engine or a server.

`export_classifier` writes what each side takes: the `.keras` file, the model as
`ee-model prepare` writes it (for `ee-model serve` or Vertex AI), and the labelled pixels as
Earth Engine's TFRecord table export. It sits here, above the core, because it uses the
serving side's `prepare_model` and the TFRecord writer.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from ..core.classifier import CLASS_BAND, PATCH_RADIUS, TrainedClassifier
from ..core.image import Image
from ..core.labels import Labels
from ..errors import InputError
from ..tfrecord.samples import export_samples
from .prepare import prepare_model


def export_classifier(
    clf: TrainedClassifier, image: Image, labels: Labels, directory: str | os.PathLike
) -> dict[str, str]:
    """Hand-off files in `directory` (new or empty): `classifier.keras`, `prepared/` (the
    model as `ee-model prepare` writes it, for `ee-model serve` or Vertex AI) and
    `samples.tfrecord.gz` (the labelled pixels as Earth Engine's table export of
    `neighborhoodToArray` samples, property `class` = class index). Written to a temporary
    sibling directory and renamed, so a failure leaves nothing half-written."""
    dest = os.path.abspath(os.fspath(directory))
    if os.path.exists(dest) and (not os.path.isdir(dest) or os.listdir(dest)):
        raise InputError(f"{dest} exists and is not an empty directory: choose a new one.")
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(dest)}.", dir=parent)
    try:
        keras_path = clf.save(os.path.join(tmp, "classifier.keras"))
        prepare_model(
            keras_path,
            os.path.join(tmp, "prepared"),
            {b: b for b in clf.bands},
            {n: n for n in clf.band_names + [CLASS_BAND]},
        )
        s = labels.sample(image.select(clf.bands))
        points = [(lon, lat, {"class": int(k)}) for (lon, lat), k in zip(s.lonlat(), s.y)]
        patch = 2 * PATCH_RADIUS + 1 if clf.kind == "patch" else 1
        export_samples(
            image.select(clf.bands),
            points,
            patch,
            properties=["class"],
            path=os.path.join(tmp, "samples.tfrecord.gz"),
        )
        if os.path.isdir(dest):
            os.rmdir(dest)  # empty, checked above
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {
        "keras": os.path.join(dest, "classifier.keras"),
        "prepared": os.path.join(dest, "prepared"),
        "samples": os.path.join(dest, "samples.tfrecord.gz"),
    }

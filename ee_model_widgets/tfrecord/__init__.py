"""TFRecord exchange in Earth Engine's format.

- `export_image`: image patches + `<prefix>-mixer.json`, like `Export.image` with
  `fileFormat: 'TFRecord'`;
- `read_predictions`: prediction records + mixer -> a georeferenced `Image`, like
  `earthengine upload image`;
- `export_samples` / `dataset`: training patches around points (the table export of
  `neighborhoodToArray`) and a parsing `tf.data.Dataset` for Keras;
- `write_predictions`: model outputs -> prediction records.

TensorFlow is imported only when records are actually read or written.
"""

from __future__ import annotations

from .mixer import Mixer, load_mixer
from .patches import export_image, read_predictions, write_predictions
from .samples import dataset, export_samples

__all__ = [
    "Mixer",
    "dataset",
    "export_image",
    "export_samples",
    "load_mixer",
    "read_predictions",
    "write_predictions",
]

"""How an exported image patch becomes TFRecord features, as Earth Engine's image export lays them out.

- every scalar band is one feature named after it, the patch flattened row-major;
- an array band (`tensor_depths={"probs": 4}`) is one feature of `depth` channels in CHW order
  (channel, then rows, then columns), truncated or padded with `default_value` to `depth`.
  Our images have scalar bands only; an array band is the run of bands `<name>_0, <name>_1, ...`,
  the names a model output with `dimensions: 1` gets (Earth Engine's `arrayFlatten` names);
- uint8 bands are written as a single bytes_list entry of raw pixel bytes (what Earth Engine
  writes in practice, whatever its guide says), other types as float_list;
- `collapse_bands`: all features as one CHW tensor named after the first, bytes only if every band
  is uint8, float otherwise;
- `sequence_data`: one `tf.train.SequenceExample` per pixel, row-major within the patch: scalar
  bands go to the context (one value each), array bands to feature lists of `depth` one-value
  features (with `collapse_bands`, every band becomes one time series named after the first).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from . import records


@dataclass(frozen=True)
class FeatureSpec:
    """One exported feature: its key, the image bands it is made of (channel order), its depth
    (None for a scalar band) and whether it goes out as raw uint8 bytes."""

    name: str
    bands: tuple[str, ...]
    depth: int | None
    as_bytes: bool

    @property
    def channels(self) -> int:
        return 1 if self.depth is None else self.depth


def plan_features(
    band_names: Sequence[str], band_types: Mapping[str, np.dtype], tensor_depths: Mapping[str, int] | None
) -> list[FeatureSpec]:
    """The features of an export of `band_names`, in band order; array bands per `tensor_depths`."""
    depths = dict(tensor_depths or {})
    if not isinstance(tensor_depths, (Mapping, type(None))):
        raise InputError(
            f"tensor_depths must be a dict array band -> depth (e.g. {{'probs': 4}}), got {tensor_depths!r}."
        )
    members: dict[str, tuple[str, ...]] = {}
    for name, depth in depths.items():
        if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 1:
            raise InputError(f"tensor_depths[{name!r}] must be a positive integer depth, got {depth!r}.")
        parts = []
        while f"{name}_{len(parts)}" in band_names:
            parts.append(f"{name}_{len(parts)}")
        if not parts:
            what = (
                f"{name!r} is a scalar band"
                if name in band_names
                else f"the image has no array band {name!r}"
            )
            raise InputError(
                f"tensor_depths names {name!r}, but {what}: an array band is the bands {name}_0, {name}_1, "
                f"... (as a model output with 'dimensions': 1 is named). The image has bands {list(band_names)}."
            )
        members[name] = tuple(parts)
    taken = {b: name for name, parts in members.items() for b in parts}
    specs, seen = [], set()
    for band in band_names:
        owner = taken.get(band)
        if owner is None:
            specs.append(FeatureSpec(band, (band,), None, _is_u8(band_types, [band])))
        elif owner not in seen:
            seen.add(owner)
            parts = members[owner]
            specs.append(FeatureSpec(owner, parts, int(depths[owner]), _is_u8(band_types, parts)))
    names = [s.name for s in specs]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise InputError(f"Feature name(s) {clash} would appear twice: rename the bands or the array band.")
    return specs


def _is_u8(band_types: Mapping[str, np.dtype], bands: Sequence[str]) -> bool:
    return all(np.dtype(band_types.get(b, np.float32)) == np.uint8 for b in bands)


def _channels(spec: FeatureSpec, patch: np.ma.MaskedArray, index: Mapping[str, int], default: float):
    """(channels, h, w) float32 of one feature, masked pixels -> default, depth padded/truncated."""
    rows = [index[b] for b in spec.bands[: spec.channels]]
    out = np.ma.filled(patch[rows], np.float32(default)).astype(np.float32, copy=False)
    if spec.depth is not None and spec.depth > len(rows):
        pad = np.full((spec.depth - len(rows), *out.shape[1:]), default, np.float32)
        out = np.concatenate([out, pad])
    return out


def _as_u8(values: np.ndarray) -> np.ndarray:
    # EE: the fraction of an integer band's value is dropped and the value clamped to the type
    return np.clip(np.trunc(values), 0, 255).astype(np.uint8)


def _feature(values: np.ndarray, as_bytes: bool):
    if as_bytes:
        return records.bytes_feature(_as_u8(values).tobytes())
    return records.float_feature(values)


def patch_example(
    specs: Sequence[FeatureSpec],
    bands: Sequence[str],
    patch: np.ma.MaskedArray,
    default: float,
    collapse: bool,
) -> bytes:
    """One patch (bands, h, w) as a serialized `tf.train.Example`."""
    index = {b: i for i, b in enumerate(bands)}
    chans = [_channels(s, patch, index, default) for s in specs]
    if collapse:
        stacked = np.concatenate(chans)
        return records.example_bytes({specs[0].name: _feature(stacked, all(s.as_bytes for s in specs))})
    return records.example_bytes(
        {s.name: _feature(c if s.depth is not None else c[0], s.as_bytes) for s, c in zip(specs, chans)}
    )


def pixel_sequence_examples(
    specs: Sequence[FeatureSpec],
    bands: Sequence[str],
    patch: np.ma.MaskedArray,
    default: float,
    collapse: bool,
) -> Iterator[bytes]:
    """One serialized `tf.train.SequenceExample` per pixel of the patch, row-major."""
    t = records.tf()
    index = {b: i for i, b in enumerate(bands)}
    chans = [_channels(s, patch, index, default) for s in specs]
    if collapse:
        specs = [FeatureSpec(specs[0].name, (), len(np.concatenate(chans)), all(s.as_bytes for s in specs))]
        chans = [np.concatenate(chans)]
    flat = [c.reshape(c.shape[0], -1) for c in chans]  # (channels, pixels)
    for p in range(flat[0].shape[1] if flat else 0):
        ex = t.train.SequenceExample()
        for s, c in zip(specs, flat):
            if s.depth is None and not collapse:
                ex.context.feature[s.name].CopyFrom(_feature(c[:, p], s.as_bytes))
            else:
                fl = ex.feature_lists.feature_list[s.name]
                for v in c[:, p]:
                    fl.feature.add().CopyFrom(_feature(np.asarray([v]), s.as_bytes))
        yield ex.SerializeToString()

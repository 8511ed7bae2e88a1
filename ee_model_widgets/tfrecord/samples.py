"""Training data: Earth Engine's table export of `neighborhoodToArray` patches, and a
`tf.data` reader for it (and for image-patch exports) ready for Keras.

`export_samples` writes what `image.neighborhoodToArray(kernel).sampleRegions(points)`
exported with `Export.table.toDrive(fileFormat='TFRecord')` gives: one Example per point,
each band a (patch, patch) float_list centred on the point's pixel, plus the point's
properties (numbers as float_list, strings as bytes_list, as Earth Engine writes them).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import InputError, RegionError, TFRecordError
from . import records
from .patches import _pair, _write_single


def _points(points) -> list[tuple[float, float, dict]]:
    """GeoJSON FeatureCollection / list of Features / list of (lon, lat[, props]) -> tuples."""
    if isinstance(points, Mapping):
        if points.get("type") == "FeatureCollection":
            points = points.get("features", [])
        elif points.get("type") == "Feature":
            points = [points]
        else:
            raise InputError(
                f"points must be a GeoJSON FeatureCollection of Points or a list of (lon, lat, properties), "
                f"got a dict of type {points.get('type')!r}."
            )
    out = []
    for i, p in enumerate(points):
        if isinstance(p, Mapping):
            geom = p.get("geometry") or {}
            if geom.get("type") != "Point":
                raise InputError(
                    f"Point {i}: geometry type {geom.get('type')!r}; export_samples needs Point features."
                )
            lon, lat = geom["coordinates"][:2]
            props = dict(p.get("properties") or {})
        else:
            try:
                lon, lat, *rest = p
            except (TypeError, ValueError):
                raise InputError(
                    f"Point {i}: expected (lon, lat) or (lon, lat, properties), got {p!r}."
                ) from None
            if len(rest) > 1 or (rest and not isinstance(rest[0], Mapping)):
                raise InputError(f"Point {i}: the third item must be a dict of properties, got {rest!r}.")
            props = dict(rest[0]) if rest else {}
        try:
            lon, lat = float(lon), float(lat)
        except (TypeError, ValueError):
            raise InputError(
                f"Point {i}: coordinates must be numbers (lon, lat), got {(lon, lat)!r}."
            ) from None
        if not (np.isfinite(lon) and np.isfinite(lat) and -180 <= lon <= 360 and -90 <= lat <= 90):
            raise InputError(f"Point {i}: ({lon}, {lat}) is not a lon/lat position (degrees, lon first).")
        out.append((lon, lat, props))
    if not out:
        raise InputError("points is empty: pass at least one point.")
    return out


def export_samples(
    image,
    points,
    patch_size,
    properties: Sequence[str] | None = None,
    path: str | os.PathLike | None = None,
    *,
    proj=None,
    default_value: float = 0,
    compressed: bool | None = None,
) -> str:
    """Write one Example per point: a (patch, patch) float array per band, centred on the
    point's pixel (index patch // 2), plus the point's `properties` (None: all of them).

    Sampled on `proj`'s lattice (None: the image's own grid); pixels outside the image or
    masked get `default_value`, as `neighborhoodToArray` does. `compressed` None: gzip when
    `path` ends in `.gz` (Earth Engine's table exports are always gzip). Returns `path`.
    """
    from rasterio.warp import transform as warp_transform

    from ..core.region import grid_for

    if path is None:
        raise InputError("export_samples needs path=, e.g. path='training.tfrecord.gz'.")
    path = os.fspath(path)
    pw, ph = _pair(patch_size, "patch_size", 1)
    pts = _points(points)
    bands = image.band_names
    if properties is None:
        keys = list(pts[0][2])
        for i, (_, _, props) in enumerate(pts):
            if set(props) != set(keys):
                raise InputError(
                    f"Point {i} has properties {sorted(props)} but point 0 has {sorted(keys)}: every Example "
                    "needs the same features. Pass properties=[...] to choose the ones to keep."
                )
    else:
        keys = [properties] if isinstance(properties, str) else list(properties)
        for i, (_, _, props) in enumerate(pts):
            missing = [k for k in keys if k not in props]
            if missing:
                raise InputError(f"Point {i} has no propert(y/ies) {missing}; it has {sorted(props)}.")
    clash = sorted(set(keys) & set(bands))
    if clash:
        raise InputError(f"Properties {clash} have the same names as bands: rename them (or the bands).")

    grid = grid_for(image, None, proj)
    xs, ys = warp_transform("EPSG:4326", grid.crs, [p[0] for p in pts], [p[1] for p in pts])
    inv = ~grid.transform
    xs, ys = np.asarray(xs), np.asarray(ys)
    cols = np.floor(inv.a * xs + inv.b * ys + inv.c).astype(np.int64)
    rows = np.floor(inv.d * xs + inv.e * ys + inv.f).astype(np.int64)
    outside = np.flatnonzero((cols < 0) | (rows < 0) | (cols >= grid.width) | (rows >= grid.height))
    if outside.size:
        i = int(outside[0])
        raise RegionError(
            f"{outside.size} point(s) lie outside the image, e.g. point {i} at ({pts[i][0]}, {pts[i][1]}) "
            f"(image bounds {image.bounds} lon/lat): drop them or use an image that covers them."
        )
    if compressed is None:
        compressed = path.lower().endswith(".gz")
    records.ensure_parent(path)

    def examples():
        for n, ((_, _, props), col, row) in enumerate(zip(pts, cols, rows)):
            window = grid.window(int(col) - pw // 2, int(row) - ph // 2, pw, ph)
            patch = np.ma.filled(image.read(window, bands), np.float32(default_value))
            feats = {b: records.float_feature(patch[i]) for i, b in enumerate(bands)}
            for k in keys:
                try:
                    feats[k] = records.scalar_feature(props[k])
                except TypeError as exc:
                    raise InputError(
                        f"Point {n}, property {k!r}: {exc}. Every property needs a number, string or "
                        "array: fill or drop such points (or leave the property out with properties=[...])."
                    ) from None
            yield records.example_bytes(feats)

    return _write_single(path, compressed, examples())


def dataset(
    files,
    bands: Sequence[str] | str,
    patch_size,
    label: str | None = None,
    batch_size: int | None = None,
    compressed: bool | None = None,
):
    """A `tf.data.Dataset` parsing Earth Engine patch records for Keras, in file order.

    Yields `inputs` (H, W, len(bands)) float32 — or `(inputs, label)` when `label` names a
    feature: a band-like patch gives (H, W, 1), a scalar property shape (1,). `patch_size` is
    the stored size, (width, height) or an int (with a kernel margin: patch + kernel). Float,
    int64 and uint8-as-bytes features are read; the first record is checked up front so a
    wrong band name or size fails here with a clear message, not deep inside training.
    `compressed` None: detected from the files.
    """
    t = records.tf()
    pw, ph = _pair(patch_size, "patch_size", 1)
    bands = [bands] if isinstance(bands, str) else list(bands)
    if not bands:
        raise InputError("dataset() needs at least one band name.")
    paths = records.resolve_files(files)
    if compressed is None:
        kinds = {records.is_gzip(p) for p in paths}
        if len(kinds) > 1:
            raise TFRecordError(
                f"Some of {paths} are gzip and some are not: pass files of one kind (one export) at a time."
            )
        compressed = kinds.pop()

    first = next(iter(t.data.TFRecordDataset(paths[0], "GZIP" if compressed else "").take(1)), None)
    if first is None:
        raise TFRecordError(f"{paths[0]} holds no records: export some patches first.")
    feats = records.parse_example(first.numpy(), f"record 0 of {paths[0]}").features.feature
    names = bands + ([label] if label is not None else [])
    missing = [n for n in names if n not in feats]
    if missing:
        raise TFRecordError(
            f"Record 0 of {paths[0]} has no feature(s) {missing}; it has {sorted(feats)}. Pass names among those."
        )
    kinds = {n: feats[n].WhichOneof("kind") for n in names}
    lengths = {n: records.feature_array(feats[n]).size for n in names}
    for b in bands:
        if lengths[b] != pw * ph:
            raise TFRecordError(
                f"Record 0 of {paths[0]}: band {b!r} has {lengths[b]} values, not {pw}x{ph} = {pw * ph}. "
                "patch_size must be the stored patch size (patch + kernel for exports with a kernel)."
            )

    def spec(name: str, length: int):
        if kinds[name] == "bytes_list":
            return t.io.FixedLenFeature([], t.string)
        dtype = t.int64 if kinds[name] == "int64_list" else t.float32
        return t.io.FixedLenFeature([length], dtype)

    specs = {n: spec(n, lengths[n]) for n in names}

    # Bytes holding a whole patch are Earth Engine's uint8 pixels; other bytes are strings.
    raw = {n for n in names if kinds[n] == "bytes_list" and lengths[n] == pw * ph}

    def decode(name: str, value):
        return t.io.decode_raw(value, t.uint8) if name in raw else value

    def parse(rec):
        ex = t.io.parse_single_example(rec, specs)
        x = t.stack([t.reshape(t.cast(decode(b, ex[b]), t.float32), [ph, pw]) for b in bands], axis=-1)
        if label is None:
            return x
        y = decode(label, ex[label])
        if label in raw:
            y = t.cast(y, t.int64)
        if lengths[label] == pw * ph:
            y = t.reshape(y, [ph, pw, 1])
        return x, y

    ds = t.data.TFRecordDataset(paths, compression_type="GZIP" if compressed else "")
    ds = ds.map(parse, num_parallel_calls=t.data.AUTOTUNE, deterministic=True)
    if batch_size is not None:
        ds = ds.batch(int(batch_size))
    return ds

"""Image patches as Earth Engine TFRecords: `export_image` out, `read_predictions` back in.

Layout (docs/earth-engine-semantics.md, section 5): one `tf.train.Example` per patch, one float_list
feature per band (the patch flattened row-major), patches row-major over the region,
continuing across `<prefix>-NNNNN.tfrecord[.gz]` shards, georeferenced by the
`<prefix>-mixer.json` sidecar. Sizes follow Earth Engine's order: (width, height) / (x, y).
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from affine import Affine

from ..errors import EEModelWidgetsError, ExportError, InputError, RegionError, TFRecordError
from . import features, records
from .mixer import Mixer, load_mixer

# Upper bound on one strip read while exporting (bytes of float32): a row of patches is read
# in chunks of whole patches no larger than this, so memory stays flat for any region size.
STRIP_BYTES = 64 << 20


def _pair(value, name: str, minimum: int) -> tuple[int, int]:
    """An int or a 2-sequence (x, y) -> (x, y) ints >= minimum."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value, value)
    try:
        x, y = (int(v) for v in value)
        if any(float(v) != int(v) for v in value):
            raise ValueError
    except (TypeError, ValueError):
        raise InputError(
            f"{name} must be an int or [x, y] of ints (Earth Engine order), got {value!r}."
        ) from None
    if x < minimum or y < minimum:
        raise InputError(f"{name} must be >= {minimum} on both axes, got {[x, y]}.")
    return x, y


def margins(kernel_size) -> tuple[int, int]:
    """Per-side margin (x, y) of Earth Engine's `kernelSize`: kernel // 2 on each side.

    Stored patches are `patch + 2 * (kernel // 2)`: `patch + kernel` for even kernels, and EE's
    default kernelSize [1, 1] means no margin.
    """
    kx, ky = _pair(kernel_size, "kernel_size", 0)
    return kx // 2, ky // 2


def export_image(
    image,
    prefix: str | os.PathLike,
    region=None,
    proj=None,
    patch_dimensions=(256, 256),
    kernel_size=(0, 0),
    compressed: bool = True,
    max_file_size: int = 1 << 30,
    default_value: float = 0,
    collapse_bands: bool = False,
    progress: bool = False,
    tensor_depths: Mapping[str, int] | None = None,
    sequence_data: bool = False,
    masked_threshold: float = 1.0,
) -> list[str]:
    """Export `image` as Earth Engine TFRecord patches plus the mixer; returns the files written.

    `region`/`proj` pick the grid like everywhere else (None: the image's own grid and extent).
    As in Earth Engine, when the patches do not divide the region the partial patches on the
    right and bottom edges are dropped (a warning says how many pixels). `kernel_size` adds
    kernel // 2 pixels of neighbouring data on each side of every patch (pixels outside the
    image, like masked pixels, get `default_value`). Shards hold at most `max_file_size`
    bytes before compression. All files are written under temporary names and renamed at the
    end (the mixer last): a failed export leaves nothing behind, and shards of an earlier export
    with the same prefix are removed so they cannot be mistaken for part of this one.

    Earth Engine's other `formatOptions` (feature layout in `tfrecord/features.py`):
    `tensor_depths` {array band: depth} exports the bands `<name>_0..` as one 3-D feature;
    `sequence_data` writes one SequenceExample per pixel; uint8 bands go out as raw bytes;
    `masked_threshold` < 1 drops patches whose share of masked pixels (a pixel is masked when
    any band is, counted without the kernel margin) exceeds it, and, as in Earth Engine, then
    no mixer is written (the remaining patches no longer fill the grid).
    """
    from ..core.region import grid_for

    pw, ph = _pair(patch_dimensions, "patch_dimensions", 1)
    mx, my = margins(kernel_size)
    if not isinstance(max_file_size, (int, np.integer)) or max_file_size <= 0:
        raise InputError(f"max_file_size must be a positive number of bytes, got {max_file_size!r}.")
    if not np.isfinite(default_value):
        raise InputError(f"default_value must be a finite number, got {default_value!r}.")
    prefix = os.fspath(prefix)
    records.check_prefix(prefix)
    records.ensure_parent(prefix)

    if (
        isinstance(masked_threshold, bool)
        or not isinstance(masked_threshold, (int, float, np.number))
        or not 0 <= masked_threshold <= 1
    ):
        raise InputError(
            f"masked_threshold must be a fraction in [0, 1] (the largest share of masked pixels a patch "
            f"may have), got {masked_threshold!r}."
        )
    specs = features.plan_features(image.band_names, image.band_types, tensor_depths)
    as_bytes = [b for s in specs if s.as_bytes for b in s.bands]
    if as_bytes and not 0 <= default_value <= 255:
        warnings.warn(
            f"export_image: the uint8 band(s) {as_bytes} go out as bytes, where default_value "
            f"{default_value!r} is clamped to {int(np.clip(np.trunc(default_value), 0, 255))} as Earth Engine "
            "does, so their masked pixels read as a valid value. Give a default_value in 0..255 that "
            "the data never takes, or cast those bands to float.",
            UserWarning,
            stacklevel=2,
        )
    grid = grid_for(image, region, proj)
    per_row, rows = grid.width // pw, grid.height // ph
    if per_row == 0 or rows == 0:
        raise RegionError(
            f"The region is {grid.width}x{grid.height} px, smaller than one {pw}x{ph} patch, so Earth "
            "Engine's layout would export nothing: use smaller patch_dimensions or a larger region."
        )
    dropped_x, dropped_y = grid.width - per_row * pw, grid.height - rows * ph
    if dropped_x or dropped_y:
        warnings.warn(
            f"export_image: {pw}x{ph} patches do not divide the {grid.width}x{grid.height} px region; "
            f"as Earth Engine does, the last {dropped_x} column(s) and {dropped_y} row(s) of pixels "
            "(partial patches on the right/bottom edges) are not exported. Choose a region that is a "
            "multiple of the patch size to keep them.",
            UserWarning,
            stacklevel=2,
        )
    mixer = Mixer.from_grid(grid, pw, ph)
    bands = image.band_names
    stored_w, stored_h = pw + 2 * mx, ph + 2 * my
    per_chunk = max(1, STRIP_BYTES // (4 * len(bands) * stored_h * max(pw, 1)))
    if masked_threshold == 1:  # otherwise patches may be dropped: no lower bound on the size
        per_pixel = sum(1 if b in as_bytes else 4 for b in bands)
        _check_free_space(prefix, mixer.total_patches * stored_w * stored_h * per_pixel, compressed)

    files = records.AtomicFiles()
    writer = records.ShardWriter(prefix, files, compressed, max_file_size)
    bar = None
    try:
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=mixer.total_patches, desc="TFRecord patches", unit="patch")
        for r in range(rows):
            for c0 in range(0, per_row, per_chunk):
                n = min(per_chunk, per_row - c0)
                # One read per strip of patches, margins included: neighbours overlap by 2*margin.
                strip_grid = grid.window(c0 * pw - mx, r * ph - my, n * pw + 2 * mx, stored_h)
                strip = image.read(strip_grid, bands)
                for i in range(n):
                    patch = strip[:, :, i * pw : i * pw + stored_w]
                    if bar is not None:
                        bar.update(1)
                    if masked_threshold < 1:
                        core = np.ma.getmaskarray(patch)[:, my : my + ph, mx : mx + pw]
                        if core.any(axis=0).mean() > masked_threshold:
                            continue
                    if sequence_data:
                        for rec in features.pixel_sequence_examples(
                            specs, bands, patch, default_value, collapse_bands
                        ):
                            writer.write(rec)
                    else:
                        writer.write(
                            features.patch_example(specs, bands, patch, default_value, collapse_bands)
                        )
        writer.close()
        mixer_path = records.mixer_name(prefix)
        if masked_threshold == 1:
            with open(files.temp_for(mixer_path), "w", encoding="utf-8") as f:
                f.write(mixer.to_json())
        # A mixer on disk vouches for complete shards: the old one goes first, the new one is
        # renamed last, after the new shards and the removal of an older export's extra shards;
        # under a lock, so a concurrent export to the same prefix cannot interleave.
        with records.publish_lock(prefix):
            stale = records.stale_shards(prefix, writer.finals)
            records.unlink_quiet(mixer_path)
            written = files.commit(before_last=lambda: [records.unlink_quiet(p) for p in stale])
    except BaseException as exc:
        try:
            writer.close()
        except Exception:  # noqa: BLE001 - the original error is the one to report
            pass
        files.abort()
        if _is_io_error(exc):
            raise ExportError(
                f"Could not write TFRecord export {prefix!r}: {exc}. Nothing was written."
            ) from exc
        raise
    finally:
        if bar is not None:
            bar.close()
    return written


def _check_free_space(prefix: str, raw: int, compressed: bool) -> None:
    """Refuse (uncompressed) or warn about (gzip) an export whose values alone exceed the free
    space, before any patch is read: a too fine scale or too large region would otherwise run
    for hours and then fail on a full disk."""
    from ..core.output_file import free_bytes

    folder = os.path.dirname(os.path.abspath(prefix))
    free = free_bytes(folder)
    if free is None or raw <= free:
        return
    sizes = f"{raw / 2**20:,.1f} MiB of values, and {free / 2**20:,.1f} MiB are free on the disk of {folder}"
    fix = "Export a smaller region or a coarser scale, or choose another folder"
    if not compressed:
        raise ExportError(f"Cannot export TFRecords to {prefix!r}: the patches hold {sizes}. {fix}.")
    warnings.warn(
        f"export_image: the patches hold {sizes}; gzip rarely shrinks float values that much, so the "
        f"export will likely fail on a full disk. {fix}.",
        UserWarning,
        stacklevel=3,
    )


# ---- predictions back -------------------------------------------------------------------------
def read_predictions(
    files,
    mixer,
    bands: Sequence[str] | None = None,
    kernel_size=None,
):
    """Reassemble prediction records into a georeferenced `Image`, like `earthengine upload image`.

    `files`: the shards (paths, or a glob) holding one Example per exported patch, same count
    and order, any number of shards; `mixer`: the export's `<prefix>-mixer.json` (path or dict).
    Each feature becomes a band (all features, sorted by name, unless `bands` picks and orders
    them); float_list, int64_list and Earth Engine's uint8-as-bytes features are accepted.
    Patches may carry the kernel margin or not: it is detected from the feature length and
    cropped. Pass `kernel_size` when the margins differ between x and y, or when the kernel is
    as large as the patch or larger: records that big are refused otherwise, since a mixer of
    another export (32 px patches declared, 64 px written) would pass for a margin. A mixer
    describing more than `MAX_READ_PIXELS` pixels per band is refused before anything is allocated.
    """
    from ..core.image import Image

    mix = load_mixer(mixer)
    paths = records.resolve_files(files)
    pw, ph = mix.patch_width, mix.patch_height
    out = None
    names: list[str] = []
    margin: tuple[int, int] | None = None
    if kernel_size is not None:
        margin = margins(kernel_size)
    float_bands: set[str] = set()  # bands with float values; the others are class-like
    beyond_float32: dict[str, int] = {}  # int64 bands -> their largest |value| above 2**24
    count = 0
    counts: list[int] = []
    for path in paths:
        n_file = 0
        for raw in records.iter_records(path):
            where = f"record {n_file} of {path}"
            if count >= mix.total_patches:
                raise TFRecordError(
                    f"Too many records: {where} is patch number {count + 1}, but the mixer says "
                    f"totalPatches={mix.total_patches}. Pass only the prediction shards of this export "
                    "(and the mixer of the same export)."
                )
            feats = records.parse_example(raw, where).features.feature
            if out is None:
                names = _pick_bands(feats, bands, where)
                if margin is None and names[0] in feats:
                    # the first record must fit the mixer before the mosaic is allocated
                    margin = _detect_margin(
                        _feature_size(feats[names[0]], where, names[0]), pw, ph, where, names[0]
                    )
                out = _allocate(mix, len(names))
            if bands is None and len(feats) > len(names):
                # All features are bands: one that the first record lacked would be dropped unseen.
                extra = sorted(set(feats) - set(names))
                raise TFRecordError(
                    f"{where} has feature(s) {extra} that the first record lacks (it has {names}): every "
                    "record needs the same features. Pass bands=[...] to read some of them only."
                )
            r, c = divmod(count, mix.patches_per_row)
            for i, name in enumerate(names):
                if name not in feats:
                    raise TFRecordError(
                        f"{where} has no feature {name!r} (it has {sorted(feats)}): every record needs "
                        "the same features, one per output band."
                    )
                try:
                    values = records.feature_array(feats[name])
                except ValueError as exc:
                    raise TFRecordError(
                        f"{where}: feature {name!r} is {exc}; write a float_list per band."
                    ) from None
                if values.dtype.kind == "f":
                    float_bands.add(name)
                elif values.size:
                    big = int(np.abs(values).max())
                    if big > _FLOAT32_EXACT and big > beyond_float32.get(name, 0):
                        beyond_float32[name] = big
                if margin is None:
                    margin = _detect_margin(values.size, pw, ph, where, name)
                sw, sh = pw + 2 * margin[0], ph + 2 * margin[1]
                if values.size != sw * sh:
                    raise TFRecordError(
                        f"{where}: feature {name!r} has {values.size} values, expected {sw * sh} "
                        f"({sw}x{sh}: the mixer's patchDimensions {pw}x{ph} + {margin[0]} px margins in x, "
                        f"{margin[1]} in y{', from kernel_size' if kernel_size is not None else ', like the first patch'}). "
                        "Every patch must have the same size: the exported patch size, with or without the "
                        "kernel margin; check kernel_size and that the mixer belongs to these records."
                    )
                patch = values.reshape(sh, sw)[margin[1] : margin[1] + ph, margin[0] : margin[0] + pw]
                out[i, r * ph : (r + 1) * ph, c * pw : (c + 1) * pw] = patch
            count += 1
            n_file += 1
        counts.append(n_file)
    if count != mix.total_patches:
        per_file = ", ".join(f"{os.path.basename(p)}: {n}" for p, n in zip(paths, counts))
        raise TFRecordError(
            f"The prediction files hold {count} record(s) ({per_file}) but the mixer says "
            f"totalPatches={mix.total_patches}: a shard is missing or truncated, or the files belong "
            "to another export. Predict every exported patch, in order, and pass all the shards."
        )
    if beyond_float32:
        # Bands are float32 from here on (as every image's are): say so rather than round quietly.
        name, big = max(beyond_float32.items(), key=lambda kv: kv[1])
        warnings.warn(
            f"Integer feature(s) {sorted(beyond_float32)} hold values beyond 2**24 (16,777,216), "
            f"e.g. {big:,} in {name!r}: bands are float32, which cannot hold them exactly "
            f"({big:,} reads as {int(np.float32(big)):,}). Keep class values below 2**24.",
            stacklevel=2,
        )
    data, transform = _north_up(out, mix.transform)
    return Image.from_array(
        data,
        transform=transform,
        crs=mix.crs,
        band_names=names,
        # int64 / uint8 predictions are class labels: nearest-neighbour when resampled.
        categorical=[n for n in names if n not in float_bands],
    )


def _pick_bands(feats: Mapping, bands: Sequence[str] | None, where: str) -> list[str]:
    if bands is None:
        names = sorted(feats)
        if not names:
            raise TFRecordError(f"{where} has no features: write one feature per output band.")
        return names
    if isinstance(bands, str):
        bands = [bands]
    missing = [b for b in bands if b not in feats]
    if missing:
        raise TFRecordError(
            f"{where} has no feature(s) {missing}; it has {sorted(feats)}. Pick bands among those."
        )
    return list(bands)


# Integers up to this are exact in float32 (24-bit significand).
_FLOAT32_EXACT = 2**24

#: Largest mosaic `read_predictions` builds in memory, in pixels per band (as `to_numpy`).
MAX_READ_PIXELS = 100_000_000


def _allocate(mix: Mixer, nbands: int) -> np.ndarray:
    """The mosaic the mixer describes, refused with a clear error when it is absurdly large."""
    w, h = mix.patches_per_row * mix.patch_width, mix.rows * mix.patch_height
    if w * h > MAX_READ_PIXELS:
        raise TFRecordError(
            f"The mixer describes a {w}x{h} px grid ({mix.patches_per_row}x{mix.rows} patches of "
            f"{mix.patch_width}x{mix.patch_height} px), {w * h:,} pixels per band: more than read_predictions "
            f"holds in memory ({MAX_READ_PIXELS:,}). Check that the mixer belongs to these records; split a "
            "genuinely larger export into several exports."
        )
    return np.zeros((nbands, h, w), dtype=np.float32)


def _feature_size(feature, where: str, name: str) -> int:
    try:
        return records.feature_array(feature).size
    except ValueError as exc:
        raise TFRecordError(f"{where}: feature {name!r} is {exc}; write a float_list per band.") from None


def _detect_margin(size: int, pw: int, ph: int, where: str, name: str) -> tuple[int, int]:
    """The per-side margin from a feature's length: 0, or m with (pw + 2m)(ph + 2m) == size.

    A margin of half the patch or more (a kernel at least as large as the patch: records at
    least twice the mixer's patch per axis) is far more likely a mixer of another export than a
    real kernel, so it is refused unless `kernel_size` says so."""
    if size == pw * ph:
        return (0, 0)
    # (pw + 2m)(ph + 2m) = size  ->  4m^2 + 2(pw + ph)m + pw*ph - size = 0
    disc = (pw + ph) ** 2 - 4 * (pw * ph - size)
    m = round((-(pw + ph) + math.isqrt(disc)) / 4) if disc >= 0 else 0
    fits = m > 0 and (pw + 2 * m) * (ph + 2 * m) == size
    if fits and 2 * m < min(pw, ph):
        return (m, m)
    side = math.isqrt(size)
    shape = f" ({side}x{side} px if square)" if side * side == size else ""
    if fits:
        raise TFRecordError(
            f"{where}: feature {name!r} has {size} values{shape}, but the mixer's patchDimensions are "
            f"{pw}x{ph} ({pw * ph} values). That is a {2 * m} px kernel margin, as large as the patch: more "
            f"likely the mixer belongs to another export (or the patches were written at another size). If the "
            f"export really used kernelSize [{2 * m}, {2 * m}], pass kernel_size=[{2 * m}, {2 * m}]."
        )
    raise TFRecordError(
        f"{where}: feature {name!r} has {size} values{shape}, but the mixer's patchDimensions are {pw}x{ph} "
        f"({pw * ph} values) and no kernel margin (pw + k) x (ph + k) gives {size}. Write patches of "
        "patchDimensions (optionally with the export's kernel margin; pass kernel_size= if it differs "
        "between x and y), or use the mixer of the export these records come from."
    )


def _north_up(data: np.ndarray, t: Affine) -> tuple[np.ndarray, Affine]:
    """Flip a south-up (positive y scale) or east-to-west patch grid to the usual orientation.

    Earth Engine lays pixel rows along the export affine, so a positive y scale means the first
    row is the southernmost; flipping keeps every pixel at the same place on the ground.
    """
    if t.b != 0 or t.d != 0:
        return data, t  # rotated grids stay as they are; the affine says where pixels are
    h, w = data.shape[1:]
    if t.e > 0:
        data = data[:, ::-1, :]
        t = Affine(t.a, 0.0, t.c, 0.0, -t.e, t.f + t.e * h)
    if t.a < 0:
        data = data[:, :, ::-1]
        t = Affine(-t.a, 0.0, t.c + t.a * w, 0.0, t.e, t.f)
    return np.ascontiguousarray(data), t


def write_predictions(
    path: str | os.PathLike,
    predictions,
    band_names: Sequence[str] | None = None,
    compressed: bool | None = None,
) -> str:
    """Write model outputs as Earth Engine prediction records: one Example per patch, one
    float_list per output band, in the order of the patches (ready for `read_predictions` or
    `earthengine upload image`).

    `predictions`: a dict band -> array (N, H, W) or (N, H, W, 1), or an array (N, H, W, C)
    (channels last, as Keras returns) with `band_names` naming the C channels. `compressed`
    None means gzip when `path` ends in `.gz`. Written atomically.
    """
    path = os.fspath(path)
    if isinstance(predictions, Mapping):
        arrays = {str(k): np.asarray(v) for k, v in predictions.items()}
        if band_names is not None:
            raise InputError(
                "Pass band_names only with an (N, H, W, C) array; a dict already names its bands."
            )
    else:
        arr = np.asarray(predictions)
        if arr.ndim == 3:
            arr = arr[..., None]
        if arr.ndim != 4:
            raise InputError(
                f"predictions must be (N, H, W, C) or a dict of (N, H, W) arrays, got shape {arr.shape}."
            )
        if band_names is None:
            raise InputError(f"Name the {arr.shape[-1]} output channel(s): pass band_names=[...].")
        band_names = [band_names] if isinstance(band_names, str) else list(band_names)
        if len(band_names) != arr.shape[-1]:
            raise InputError(f"{len(band_names)} band_names {band_names} for {arr.shape[-1]} channel(s).")
        arrays = {b: arr[..., i] for i, b in enumerate(band_names)}
    if not arrays:
        raise InputError("predictions is empty: pass at least one output band.")
    for name, a in arrays.items():
        if a.ndim == 4 and a.shape[-1] == 1:
            arrays[name] = a = a[..., 0]
        if a.ndim != 3:
            raise InputError(f"Band {name!r}: expected (N, H, W) patches, got shape {a.shape}.")
    lengths = {a.shape[0] for a in arrays.values()}
    if len(lengths) != 1:
        raise InputError(f"All bands need the same number of patches, got {lengths}.")
    if compressed is None:
        compressed = path.lower().endswith(".gz")
    records.ensure_parent(path)
    return _write_single(
        path,
        compressed,
        (
            records.example_bytes({b: records.float_feature(a[n]) for b, a in arrays.items()})
            for n in range(lengths.pop())
        ),
    )


def _write_single(path: str, compressed: bool, serialized) -> str:
    """Write serialized records to one TFRecord file, atomically."""
    t = records.tf()
    files = records.AtomicFiles()
    try:
        options = t.io.TFRecordOptions(compression_type="GZIP" if compressed else "")
        with t.io.TFRecordWriter(files.temp_for(path), options) as w:
            for rec in serialized:
                w.write(rec)
        files.commit()
    except BaseException as exc:
        files.abort()
        if _is_io_error(exc):
            raise ExportError(f"Could not write {path!r}: {exc}. Nothing was written.") from exc
        raise
    return path


def _is_io_error(exc: BaseException) -> bool:
    """A failure of the file system (OSError, or TensorFlow's file errors), not of our inputs
    (our own errors, e.g. an unreadable source image, already say what to do)."""
    if isinstance(exc, EEModelWidgetsError):
        return False
    if isinstance(exc, OSError):
        return True
    tf_errors = getattr(sys.modules.get("tensorflow"), "errors", None)
    return tf_errors is not None and isinstance(exc, tf_errors.OpError)

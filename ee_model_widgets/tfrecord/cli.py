"""`ee-model tfrecord export|import`: the TFRecord exchange from the command line.

`ee_model_widgets.cli` calls `register(subparsers)`; each command sets `func(args) -> int`
and raises our own errors (the main CLI turns them into a message and an exit code). The
module imports nothing heavy, so building the parser stays fast.
"""

from __future__ import annotations

import argparse
import sys


def _pair(text: str) -> tuple[int, int]:
    """'256' -> (256, 256); '256,128' -> (256, 128) (x, y, Earth Engine order)."""
    try:
        parts = [int(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or X,Y (integers), got {text!r}") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 0:
        raise argparse.ArgumentTypeError(f"expected N or X,Y (non-negative integers), got {text!r}")
    return parts[0], parts[1]


def _region(text: str) -> tuple[float, float, float, float]:
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"expected west,south,east,north in lon/lat degrees, got {text!r}")
    return parts


def _size(text: str) -> int:
    """Bytes, with an optional K/M/G suffix (powers of 1024)."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("b")
    mult = units.get(t[-1:], 1)
    try:
        n = int(float(t[:-1] if mult > 1 else t) * mult)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a size in bytes such as 1000000 or 100M, got {text!r}"
        ) from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"the size must be positive, got {text!r}")
    return n


def _depths(text: str) -> dict[str, int]:
    """'probs=4,t=12' -> {"probs": 4, "t": 12} (Earth Engine's tensorDepths)."""
    out = {}
    for item in text.split(","):
        name, _, depth = item.partition("=")
        if not name.strip() or not depth.strip().isdigit():
            raise argparse.ArgumentTypeError(f"expected NAME=DEPTH[,NAME=DEPTH], got {text!r}")
        out[name.strip()] = int(depth)
    return out


def register(subparsers) -> argparse.ArgumentParser:
    """Add `tfrecord export` and `tfrecord import` to the `ee-model` command's subparsers."""
    p = subparsers.add_parser(
        "tfrecord",
        help="export image patches as Earth Engine TFRecords + mixer, import predictions",
        description="TFRecord exchange in Earth Engine's format (Export.image fileFormat 'TFRecord').",
    )
    sub = p.add_subparsers(dest="tfrecord_command", metavar="{export,import}")
    sub.required = True

    e = sub.add_parser(
        "export",
        help="GeoTIFF -> <PREFIX>-00000.tfrecord.gz ... + <PREFIX>-mixer.json",
        description="Write one tf.train.Example per patch (a float list per band, patches row-major) "
        "and the mixer, exactly like Earth Engine's TFRecord image export. Partial patches on the "
        "right/bottom edges are dropped, as in Earth Engine.",
    )
    e.add_argument("image", metavar="IMAGE.tif", help="input raster (anything GDAL reads)")
    e.add_argument("prefix", metavar="PREFIX", help="output prefix, e.g. out/scene")
    e.add_argument(
        "--region",
        type=_region,
        help="west,south,east,north in lon/lat degrees, e.g. --region -67.7,-47.9,-67.6,-47.8 (default: whole image)",
    )
    e.add_argument("--bands", help="comma-separated band names to export (default: all)")
    e.add_argument("--patch", type=_pair, default=(256, 256), help="patch size N or X,Y (default 256)")
    e.add_argument(
        "--kernel", type=_pair, default=(0, 0), help="kernelSize N or X,Y: kernel/2 margin per side"
    )
    e.add_argument("--no-compress", action="store_true", help="write .tfrecord instead of .tfrecord.gz")
    e.add_argument(
        "--max-file-size", type=_size, default=1 << 30, help="bytes per shard before compression (default 1G)"
    )
    e.add_argument("--default-value", type=float, default=0.0, help="value of masked pixels (default 0)")
    e.add_argument(
        "--tensor-depths",
        type=_depths,
        help="array bands as 3-D features: NAME=DEPTH[,NAME=DEPTH] (bands NAME_0, NAME_1, ...)",
    )
    e.add_argument("--sequence-data", action="store_true", help="one tf.train.SequenceExample per pixel")
    e.add_argument(
        "--masked-threshold",
        type=float,
        default=1.0,
        help="drop patches with a larger share of masked pixels; below 1, no mixer is written (as in EE)",
    )
    e.set_defaults(func=_export)

    i = sub.add_parser(
        "import",
        help="prediction TFRecords + mixer -> GeoTIFF",
        description="Reassemble prediction records (one Example per exported patch, same order, any "
        "number of shards; one feature per output band) into a georeferenced GeoTIFF.",
    )
    i.add_argument("files", nargs="+", metavar="PREDICTION_FILES", help="shards or globs, in order")
    i.add_argument("--mixer", required=True, metavar="MIXER", help="the export's <prefix>-mixer.json")
    i.add_argument("--output", required=True, metavar="OUT.tif", help="GeoTIFF to write")
    i.add_argument("--bands", help="comma-separated feature names to import (default: all, sorted)")
    i.set_defaults(func=_import)
    return p


def _bands(text: str | None) -> list[str] | None:
    return [b.strip() for b in text.split(",") if b.strip()] if text else None


def _export(args) -> int:
    from ..core.image import Image
    from .patches import export_image

    img = Image.open(args.image)
    bands = _bands(args.bands)
    if bands:
        img = img.select(bands)
    files = export_image(
        img,
        args.prefix,
        region=args.region,
        patch_dimensions=args.patch,
        kernel_size=args.kernel,
        compressed=not args.no_compress,
        max_file_size=args.max_file_size,
        default_value=args.default_value,
        tensor_depths=args.tensor_depths,
        sequence_data=args.sequence_data,
        masked_threshold=args.masked_threshold,
        progress=sys.stderr.isatty(),
    )
    for f in files:
        print(f)
    return 0


def _import(args) -> int:
    import glob

    from ..errors import TFRecordError
    from .patches import read_predictions

    # Each argument may be a glob (shells on Windows do not expand them).
    files: list[str] = []
    for f in args.files:
        if glob.has_magic(f):
            found = sorted(glob.glob(f))
            if not found:
                raise TFRecordError(f"No prediction files match {f!r}: check the path and the prefix.")
            files.extend(found)
        else:
            files.append(f)
    img = read_predictions(files, args.mixer, bands=_bands(args.bands))
    print(img.export(args.output, progress=sys.stderr.isatty()))
    return 0

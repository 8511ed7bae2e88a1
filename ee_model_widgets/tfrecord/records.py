"""TFRecord plumbing: Example features <-> numpy, shard names and order, atomic sharded writes.

Everything TensorFlow-specific for the TFRecord exchange lives here and imports TensorFlow
lazily, so `import ee_model_widgets.tfrecord` (and the CLI's argument parsing) stays fast.
The record framing, gzip and protobuf parsing are TensorFlow's own (`tf.io.TFRecordWriter`,
`tf.data.TFRecordDataset`, `tf.train.Example`); we only add naming, ordering and errors.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..core.output_file import create_temp, remove_leftovers
from ..errors import TFRecordError

# `<prefix>-00000.tfrecord` / `.tfrecord.gz`: Earth Engine's shard names; the shard number is
# the digits after the last '-' (how public EE readers order shards).
SHARD_RE = re.compile(r"^(?P<prefix>.*)-(?P<num>\d+)\.tfrecord(?P<gz>\.gz)?$", re.IGNORECASE)
GZIP_MAGIC = b"\x1f\x8b"
# Each TFRecord frame adds a uint64 length, its masked CRC32C and the data's CRC32C.
RECORD_OVERHEAD = 16


def tf():
    """TensorFlow, imported on first use (it takes seconds and is not needed to import us)."""
    import tensorflow

    return tensorflow


def shard_name(prefix: str | os.PathLike, index: int, compressed: bool) -> str:
    """Earth Engine's shard file name: `<prefix>-00000.tfrecord[.gz]`."""
    return f"{os.fspath(prefix)}-{index:05d}.tfrecord" + (".gz" if compressed else "")


def mixer_name(prefix: str | os.PathLike) -> str:
    """Earth Engine's sidecar name: `<prefix>-mixer.json`."""
    return f"{os.fspath(prefix)}-mixer.json"


# ---- encoding ----------------------------------------------------------------------------
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def float_feature(values: np.ndarray):
    """A `tf.train.Feature` holding `values` (any shape, flattened row-major) as a float_list.

    Filling a FloatList value by value is the slow part of writing Examples from numpy; protobuf
    parsing the packed little-endian float32 bytes (field 1, wire type 2: tag 0x0a) is an order
    of magnitude faster and still fully validated by protobuf itself.
    """
    t = tf()
    raw = np.ascontiguousarray(values, dtype="<f4").tobytes()
    return t.train.Feature(float_list=t.train.FloatList.FromString(b"\x0a" + _varint(len(raw)) + raw))


def bytes_feature(data: bytes):
    """A `tf.train.Feature` holding one bytes entry (Earth Engine's uint8 bands: raw pixel bytes)."""
    t = tf()
    return t.train.Feature(bytes_list=t.train.BytesList(value=[data]))


def scalar_feature(value):
    """A property value as Earth Engine's table export writes it: numbers as float_list,
    strings as bytes_list, arrays flattened to float_list."""
    t = tf()
    if value is None:
        raise TypeError("it is None (a missing value, e.g. a masked pixel)")
    if isinstance(value, (str, bytes)):
        data = value.encode("utf-8") if isinstance(value, str) else value
        return t.train.Feature(bytes_list=t.train.BytesList(value=[data]))
    if isinstance(value, (bool, int, float, np.number, np.bool_)):
        return float_feature(np.asarray([value], dtype=np.float32))
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise TypeError(f"{type(value).__name__} {value!r} is not a number, string or array") from None
    if arr.dtype == object or not arr.size:
        raise TypeError(f"{value!r} is not a non-empty numeric array")
    return float_feature(arr)


def example_bytes(features: dict) -> bytes:
    """Serialize a `tf.train.Example` from a dict of feature name -> `tf.train.Feature`."""
    t = tf()
    return t.train.Example(features=t.train.Features(feature=features)).SerializeToString()


# ---- decoding ----------------------------------------------------------------------------
def parse_example(raw: bytes, where: str):
    """Parse one serialized `tf.train.Example`, or raise TFRecordError naming `where`."""
    from google.protobuf.message import DecodeError

    try:
        return tf().train.Example.FromString(raw)
    except DecodeError as exc:
        raise TFRecordError(
            f"{where} is not a tf.train.Example ({exc}): the file does not hold Earth Engine-style "
            "records; write one tf.train.Example per patch."
        ) from None


def feature_array(feature) -> np.ndarray:
    """A feature's values as a flat numpy array: float_list -> float32, int64_list -> int64,
    Earth Engine's uint8-as-bytes (one bytes entry of raw pixels) -> uint8."""
    kind = feature.WhichOneof("kind")
    if kind == "float_list":
        return np.asarray(feature.float_list.value, dtype=np.float32)
    if kind == "int64_list":
        return np.asarray(feature.int64_list.value, dtype=np.int64)
    if kind == "bytes_list":
        values = feature.bytes_list.value
        if len(values) == 1:
            return np.frombuffer(values[0], dtype=np.uint8)
        # One byte string per pixel, each a single byte: still uint8 pixels.
        if all(len(v) == 1 for v in values):
            return np.frombuffer(b"".join(values), dtype=np.uint8)
        raise ValueError(f"a bytes_list of {len(values)} strings is not raw uint8 pixels")
    return np.zeros(0, dtype=np.float32)


# ---- finding and ordering shards ------------------------------------------------------------
def resolve_files(files: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Turn a glob, a path or a list of paths into the shard list in record order.

    EE-named shards (`-00000.tfrecord[.gz]`) are ordered by shard number and must run 0..n-1
    without gaps (a gap means a lost shard and misplaced patches); other names keep the order
    given (a glob is sorted).
    """
    if isinstance(files, (str, os.PathLike)):
        pattern = os.fspath(files)
        if glob.has_magic(pattern):
            # `prefix-*` also matches the export's sidecar; it is not a record file.
            paths = sorted(p for p in glob.glob(pattern) if not p.endswith("-mixer.json"))
            if not paths:
                raise TFRecordError(
                    f"No TFRecord files match {pattern!r}: check the directory and the prefix "
                    "(Earth Engine names shards '<prefix>-00000.tfrecord.gz')."
                )
        else:
            paths = [pattern]
    else:
        paths = [os.fspath(p) for p in files]
    if not paths:
        raise TFRecordError(
            "No TFRecord files given: pass a list of shard paths or a glob such as 'preds-*'."
        )
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise TFRecordError(
            f"TFRecord file(s) not found: {missing}. Check the paths (and that downloads finished)."
        )
    # The same file twice would duplicate patches.
    real = [os.path.realpath(p) for p in paths]
    dupes = sorted({p for p, r in zip(paths, real) if real.count(r) > 1})
    if dupes:
        raise TFRecordError(f"TFRecord file(s) given twice: {dupes}. Pass each shard once.")

    matches = [SHARD_RE.match(os.path.basename(p)) for p in paths]
    if not any(matches):
        return paths
    if not all(matches):
        odd = [p for p, m in zip(paths, matches) if not m]
        raise TFRecordError(
            f"Mixed file names: {odd} do not follow '<prefix>-NNNNN.tfrecord[.gz]' like the others. "
            "Pass only the shards of one export (or rename them so their order is clear)."
        )
    prefixes = sorted({m["prefix"] for m in matches})
    if len(prefixes) > 1:
        raise TFRecordError(
            f"The files come from {len(prefixes)} exports ({prefixes}): pass the shards of one export "
            "(one '<prefix>-NNNNN.tfrecord' series) at a time."
        )
    numbered = sorted(zip((int(m["num"]) for m in matches), paths))
    nums = [n for n, _ in numbered]
    expected = list(range(len(nums)))
    if nums != expected:
        missing_nums = sorted(set(range(max(nums) + 1)) - set(nums))
        if missing_nums:
            prefix = matches[0]["prefix"]
            ext = ".tfrecord" + (matches[0]["gz"] or "")
            lost = ", ".join(f"{prefix}-{n:05d}{ext}" for n in missing_nums[:5])
            raise TFRecordError(
                f"Missing shard(s) {missing_nums[:20]} ({lost}{'...' if len(missing_nums) > 5 else ''}) "
                f"among the {len(nums)} shard(s) given (up to {numbered[-1][1]}): records would land in the wrong "
                "patches. Add the missing shard file(s) (all shards of the export, numbered from 00000)."
            )
        raise TFRecordError(
            f"Shard numbers {nums} repeat: pass the shards of one export only, each once "
            f"({[os.path.basename(p) for _, p in numbered]})."
        )
    return [p for _, p in numbered]


def is_gzip(path: str) -> bool:
    """True if `path` holds gzip data (sniffed, so misnamed files still open)."""
    with open(path, "rb") as f:
        head = f.read(2)
    if head == GZIP_MAGIC:
        return True
    if path.lower().endswith(".gz"):
        raise TFRecordError(
            f"{path} is named .gz but is not gzip data (first bytes {head!r}): the file is corrupt or "
            "misnamed. Download it again, or rename it without .gz if it is an uncompressed TFRecord."
        )
    return False


def iter_records(path: str) -> Iterator[bytes]:
    """The serialized records of one shard; a corrupt or truncated file raises TFRecordError."""
    t = tf()
    compression = "GZIP" if is_gzip(path) else ""
    ds = t.data.TFRecordDataset(path, compression_type=compression)
    it = iter(ds)
    index = 0
    while True:
        try:
            rec = next(it)
        except StopIteration:
            return
        except t.errors.OpError as exc:
            what = "gzip stream" if compression else "TFRecord framing"
            msg = _tf_message(exc)
            raise TFRecordError(
                f"{path} is corrupt after {index} record(s): its {what} cannot be read ({msg}). "
                "The file is truncated or damaged: copy or download it again."
            ) from None
        index += 1
        yield rec.numpy()


def _tf_message(exc) -> str:
    """TensorFlow's error text without its graph-node prefix and op suffix."""
    msg = str(getattr(exc, "message", exc)).splitlines()[0]
    msg = re.sub(r"\{\{.*?\}\}\s*", "", msg)
    return re.sub(r"\s*\[Op:.*$", "", msg).strip() or type(exc).__name__


# ---- atomic, sharded writing --------------------------------------------------------------
class AtomicFiles:
    """Write several files under temporary names, then publish them all by renaming.

    Either every file appears under its final name or none does: on error (or interrupt)
    `abort()` removes the temporaries and anything already renamed.
    """

    def __init__(self):
        self._pending: list[tuple[str, str]] = []  # (temp, final)

    def temp_for(self, final: str) -> str:
        """A hidden temporary path beside `final` (same filesystem, so rename is atomic).

        Named as every export's temporaries are (`core/output_file.py`), so the leftovers of
        an earlier write to `final` killed outright (kill -9, a dead kernel) are removed here.
        """
        final = os.fspath(final)
        remove_leftovers(final)
        tmp = create_temp(final)
        self._pending.append((tmp, final))
        return tmp

    def commit(self, before_last=None) -> list[str]:
        """Rename every temporary to its final name, in the order they were created;
        `before_last()` runs just before the last one (the file that vouches for the others)."""
        done: list[str] = []
        try:
            for i, (tmp, final) in enumerate(self._pending):
                if before_last is not None and i == len(self._pending) - 1:
                    before_last()
                os.replace(tmp, final)
                done.append(final)
        except BaseException:
            for final in done:
                unlink_quiet(final)
            self.abort()
            raise
        self._pending = []
        return done

    def abort(self) -> None:
        for tmp, _ in self._pending:
            unlink_quiet(tmp)
        self._pending = []


@contextmanager
def publish_lock(prefix: str) -> Iterator[None]:
    """Hold an exclusive lock on the folder of `prefix` while an export publishes its files, so
    two exports to the same prefix at once cannot interleave their renames (one export's mixer
    over the other's shards). An advisory flock (POSIX; elsewhere, no lock)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    fd = os.open(os.path.dirname(os.path.abspath(prefix)), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def unlink_quiet(path: str) -> None:
    """Remove `path` if it exists."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class ShardWriter:
    """Writes serialized Examples into `<prefix>-NNNNN.tfrecord[.gz]` shards of at most
    `max_file_size` bytes before compression (Earth Engine's `maxFileSize`), via AtomicFiles.

    A single record larger than the limit gets a shard of its own rather than failing.
    """

    def __init__(self, prefix: str, files: AtomicFiles, compressed: bool, max_file_size: int):
        self.prefix = prefix
        self.files = files
        self.compressed = compressed
        self.max_file_size = int(max_file_size)
        self._writer = None
        self._size = 0
        self.finals: list[str] = []
        self.count = 0

    def _open(self) -> None:
        t = tf()
        final = shard_name(self.prefix, len(self.finals), self.compressed)
        options = t.io.TFRecordOptions(compression_type="GZIP" if self.compressed else "")
        self._writer = t.io.TFRecordWriter(self.files.temp_for(final), options)
        self.finals.append(final)
        self._size = 0

    def write(self, record: bytes) -> None:
        size = len(record) + RECORD_OVERHEAD
        if self._writer is None or (self._size and self._size + size > self.max_file_size):
            self.close()
            self._open()
        self._writer.write(record)
        self._size += size
        self.count += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def stale_shards(prefix: str, keep: Sequence[str]) -> list[str]:
    """Shards of an earlier export with the same prefix that the new export does not replace
    (left behind they would be read as extra patches)."""
    keep_abs = {os.path.abspath(k) for k in keep}
    d, base = os.path.split(os.path.abspath(prefix))
    out = []
    for p in glob.glob(os.path.join(glob.escape(d), glob.escape(base) + "-*.tfrecord*")):
        m = SHARD_RE.match(os.path.basename(p))
        if m and m["prefix"] == base and os.path.abspath(p) not in keep_abs:
            out.append(p)
    return sorted(out)


def check_prefix(prefix: str) -> None:
    """Refuse a prefix that names a folder ('out/', '.', '..'): its files would be named '-00000...'
    inside it, and the earlier-export clean-up, which works on the normalised path, would remove
    `out-*.tfrecord*` shards beside that folder."""
    base = os.path.basename(prefix)
    if base in ("", ".", ".."):
        from ..errors import ExportError

        example = os.path.join(prefix, "patches")
        raise ExportError(
            f"The prefix {prefix!r} is a folder, but a prefix starts the file names "
            "(<prefix>-00000.tfrecord.gz, <prefix>-mixer.json): add a name, e.g. "
            f"{example!r}."
        )


def ensure_parent(path: str) -> None:
    """Fail early, with a clear message, if the output directory does not exist."""
    parent = Path(os.fspath(path)).parent
    if not parent.is_dir():
        from ..errors import ExportError

        raise ExportError(
            f"Output directory {str(parent)!r} does not exist: create it first or pick another path."
        )

"""Writing an output file safely: checks before the work, a temporary file, then a rename.

`check_target` refuses what is bound to fail (the target is a folder, its folder is missing,
read-only or not writable, an uncompressed output larger than the free space) before any
pixel is computed. `output_file` writes to a hidden temporary beside the target
(`.<name>.<pid>.<token>.<host>.tmp`, same filesystem, so the final rename is atomic) and
renames it at the end, so the target is either the complete new file or left as it was.
The temporary is created like any new file (mode 0o666 minus the umask, or the mode of the
file it replaces), not 0600 as `tempfile.mkstemp` would. A process killed mid-write cannot
clean up, so each write first removes the leftovers of earlier writes to the same target
by processes of this host that no longer exist (POSIX only: Windows has no safe "is this
process alive" probe in the standard library, so leftovers stay there).
"""

from __future__ import annotations

import errno
import glob
import os
import shutil
import socket
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import EEModelWidgetsError, ExportError

# GDAL side files a write can leave beside a GeoTIFF (statistics, external overviews).
_SIDE_FILES = (".aux.xml", ".ovr")
# A write that fails with less free space than this failed for want of space (a few
# multi-band blocks: GDAL writes whole blocks, so a failed one can leave that much free).
_FULL_BYTES = 16 * 1024 * 1024


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def check_target(path: str | os.PathLike, size_bytes: int | None = None) -> str:
    """Refuse a target that cannot be written; returns `path` as a string.

    `size_bytes`: the exact size of the output, when it is known in advance (uncompressed);
    it is then checked against the free space of the target's filesystem.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ExportError(
            f"Cannot export to {path}: it is a folder. Give a file name inside it, e.g. "
            f"{os.path.join(path, 'prediction.tif')}."
        )
    if os.path.islink(path):
        # The final rename would replace the link itself, not write the file it points to.
        raise ExportError(
            f"Cannot export to {path}: it is a symbolic link (to {os.path.realpath(path)}), which the "
            "export would replace by the new file. Export to the link's target, or remove the link first."
        )
    if os.path.exists(path) and not stat.S_ISREG(os.stat(path).st_mode):
        # A device (/dev/null), a FIFO or a socket: the final rename would replace it by a plain file.
        raise ExportError(
            f"Cannot export to {path}: it is not a regular file (a device, pipe or socket), which the "
            "export would replace. Give the path of a .tif file."
        )
    if not os.path.isdir(directory):
        raise ExportError(f"Cannot export to {path}: the folder {directory} does not exist. Create it first.")
    if not os.access(directory, os.W_OK | os.X_OK):
        read_only = hasattr(os, "statvfs") and os.statvfs(directory).f_flag & os.ST_RDONLY
        code = errno.EROFS if read_only else errno.EACCES
        raise ExportError(f"Cannot export to {path}: {describe_os_error(OSError(code, ''), directory)}")
    if size_bytes is not None:
        free = shutil.disk_usage(directory).free
        if size_bytes > free:
            raise ExportError(
                f"Cannot export to {path}: the file needs {_mib(size_bytes)} and only {_mib(free)} "
                f"are free on the disk of {directory}. Free some space, choose another folder, "
                "export a smaller region or a coarser scale, or compress the output."
            )
    return path


def _parse_temp(name: str, base: str) -> tuple[int, str] | None:
    """(pid, host) of one of our temporaries for target `base`, or None if it is not one."""
    prefix, suffix = f".{base}.", ".tmp"
    if not (name.startswith(prefix) and name.endswith(suffix)):
        return None
    parts = name[len(prefix) : -len(suffix)].split(".", 2)
    if len(parts) != 3 or not parts[0].isdigit():
        return None
    return int(parts[0]), parts[2]


def _alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would send Ctrl-C there: keep the file, to be safe
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_leftovers(path: str | os.PathLike) -> list[str]:
    """Remove temporaries of earlier writes to `path` whose process (on this host) is gone."""
    path = os.path.abspath(os.fspath(path))
    directory, base = os.path.split(path)
    host = socket.gethostname()
    removed = []
    for tmp in glob.glob(os.path.join(glob.escape(directory), f".{glob.escape(base)}.*.tmp")):
        owner = _parse_temp(os.path.basename(tmp), base)
        if owner is None or owner[1] != host or owner[0] == os.getpid() or _alive(owner[0]):
            continue
        remove_quietly(tmp)
        removed.append(tmp)
    return removed


def remove_quietly(path: str) -> None:
    """Remove `path` and its GDAL side files, whichever exist."""
    for p in (path, *(path + side for side in _SIDE_FILES)):
        try:
            os.remove(p)
        except FileNotFoundError:
            pass


def create_temp(path: str) -> str:
    """Create an empty hidden temporary beside `path`, named so `remove_leftovers` knows its owner."""
    directory, base = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{base}.{os.getpid()}.{uuid.uuid4().hex[:8]}.{socket.gethostname()}.tmp")
    try:
        # 0o666 & ~umask, as for any new file; O_EXCL: never someone else's file.
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as exc:
        raise ExportError(f"Cannot export to {path}: {describe_os_error(exc, directory)}") from exc
    try:  # replacing a file keeps its permissions, as writing over it would
        os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
    except FileNotFoundError:
        pass
    return tmp


def _no_space(directory: str) -> str:
    free = shutil.disk_usage(directory).free
    return (
        f"no space left on the disk of {directory} ({_mib(free)} free without the partial file). "
        "Free some space, choose another folder, or export a smaller region or a coarser scale."
    )


def free_bytes(directory: str) -> int | None:
    """Free space on `directory`'s disk, or None when it cannot be measured (the folder is gone)."""
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def describe_os_error(exc: BaseException, directory: str) -> str:
    """A user-facing reason for a failed write: a full disk, a read-only folder, or the error."""
    code = _errno_in_chain(exc)
    text = str(exc)
    if not os.path.isdir(directory):
        # Removed (or renamed) while the export ran: GDAL and the rename then only say "no such file".
        return (
            f"the folder {directory} was removed or renamed during the export. "
            "Create it again (or choose another folder) and export again."
        )
    if code == errno.ENOSPC or "No space left" in text or "Free disk space" in text:
        return _no_space(directory)
    if code == errno.EROFS:
        return f"the folder {directory} is on a read-only file system. Choose a folder you can write to."
    if code in (errno.EACCES, errno.EPERM):
        return f"no permission to create files in {directory}. Choose a folder you can write to."
    return f"{type(exc).__name__}: {exc}"


def _errno_in_chain(exc: BaseException | None) -> int | None:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno:
            return exc.errno
        exc = exc.__cause__ or exc.__context__
    return None


@contextmanager
def output_file(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path to write; on success it becomes `path`, on any error it is removed.

    Leftovers of killed earlier writes to `path` are removed first. A failure while the disk
    is full becomes an ExportError saying so (GDAL's own error only says "write failed");
    other errors are re-raised unchanged (callers decide how to word them).
    """
    path = os.fspath(path)
    remove_leftovers(path)
    tmp = create_temp(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        # Measured before the partial file goes: that is what filled the disk.
        free = None if isinstance(exc, EEModelWidgetsError) else free_bytes(directory)
        full = free is not None and free < _FULL_BYTES
        remove_quietly(tmp)
        if full and isinstance(exc, Exception):
            raise ExportError(
                f"Export to {path} failed and nothing was written: {_no_space(directory)}"
            ) from exc
        raise

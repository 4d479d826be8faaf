"""Small durable-file helpers shared by the log, its indexes and the log manager.

The storage engine's crash-safety rests on three habits kept here in one place: replace a file by
writing a temporary one and renaming it over the old, fsync what must survive power loss, and fsync
the directory so the rename itself survives.
"""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path
from typing import Any


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, sync: bool = True) -> None:
    """Replace ``path`` with ``data`` so a reader (or a crash) sees the old or the new content.

    ``sync=False`` skips both fsyncs for callers that make a whole batch of files durable at once
    afterwards (:func:`sync_filesystem`). The temporary name is short and fixed-length because
    ``<name>.tmp`` overflows NAME_MAX for the longest legal topic names.
    """
    tmp = path.with_name(f"{uuid.uuid4().hex[:16]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if sync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync:
        fsync_dir(path.parent)


def remove_temporaries(directory: Path) -> None:
    """Temporary files a crash left behind by :func:`write_atomic` (never the real files)."""
    for stray in directory.glob("*.tmp"):
        stray.unlink(missing_ok=True)


def remove_tree(path: Path) -> None:
    """Remove a directory and everything in it, as far as possible (what is left is an orphan the
    next open removes). shutil is imported here, on first use: with tempfile, bz2 and lzma it is
    a few milliseconds of every fresh process that starts a broker, and a broker that deletes
    nothing never needs it."""
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def write_int(path: Path, value: int) -> None:
    write_atomic(path, f"{value}\n".encode())


def read_int(path: Path, default: int) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return default


def write_json(path: Path, value: Any, *, sync: bool = True) -> None:
    import json  # on first use, here and below: a broker on an empty directory reads none

    write_atomic(path, json.dumps(value, separators=(",", ":")).encode(), sync=sync)


def load_json(path: Path) -> Any:
    """The parsed content; OSError when the file cannot be read, ValueError when it is not JSON.
    (json, with the regular expressions it compiles, is ~2% of a fresh process's start, and a
    broker started on an empty directory reads and writes no JSON until its first topic.)"""
    data = path.read_bytes()
    import json

    return json.loads(data)


def read_json(path: Path) -> Any:
    """The parsed content, or None when the file is missing or not JSON."""
    try:
        return load_json(path)
    except (OSError, ValueError):
        return None


_libc: Any = None


def sync_filesystem(directory: Path) -> None:
    """Make every write to ``directory``'s filesystem durable with one ``syncfs`` (Linux), instead
    of one fsync per file: a clean stop of thousands of partitions then costs one call. Falls back
    to ``sync()`` where syncfs is missing. Raises OSError when the kernel reports a write error."""
    import ctypes  # here: ~5% of what starting a broker costs, needed only when it stops

    global _libc
    if _libc is None:  # the process's own symbols, libc's among them: ctypes.util.find_library
        _libc = ctypes.CDLL(None, use_errno=True)  # ran ldconfig in a subprocess (~10 ms a stop)
    syncfs = getattr(_libc, "syncfs", None)
    if syncfs is None:
        os.sync()
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        if syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), str(directory))
    finally:
        os.close(fd)


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)

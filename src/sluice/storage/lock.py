"""One process per data directory, as Kafka's ``.lock``: two brokers on one directory would hand
out the same offsets and overwrite each other's acknowledged records."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from sluice.errors import StorageError

LOCK_FILE = ".lock"


class DataDirInUseError(StorageError):
    """Another process holds the data directory."""


class DataDirLock:
    """An exclusive ``flock`` on ``DATA/.lock``, held until :meth:`release` (or process exit, so a
    SIGKILLed broker never leaves a stale lock behind)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, data_dir: Path) -> DataDirLock:
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            # Python's own words name only the path: "[Errno 17] File exists: 'data'".
            raise StorageError(
                f"data directory {data_dir} is not a directory (it, or a parent, is a file)"
            ) from None
        path = data_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirInUseError(
                f"data directory {data_dir} is in use by another sluice process"
            ) from None
        return cls(path, fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

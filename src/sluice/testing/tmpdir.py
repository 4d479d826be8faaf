"""A temporary data directory for an embedded broker, made without importing :mod:`tempfile`.

tempfile imports shutil, random, bz2 and lzma: about 5 ms of a fresh process that starts an
embedded broker, a third of the broker's own start-to-ready. The directory is made as tempfile
makes one (new, private to this user, randomly named, under tempfile's root) and removed as its
``TemporaryDirectory`` is: by :meth:`TemporaryDirectory.cleanup`, or when the object is collected
or the interpreter exits, whichever comes first. Only by the process that made it: a child
forked from it (that exits as usual, running its exit hooks) leaves it to its parent, which
tempfile's does not.
"""

from __future__ import annotations

import contextlib
import os
import sys
import weakref
from typing import Any


def temporary_root() -> str:
    """Where tempfile would put it: its own answer when something has imported it already (pytest
    has, and ``tempfile.tempdir`` may be set); otherwise the first of ``$TMPDIR``, ``$TEMP``,
    ``$TMP`` and ``/tmp`` that is a writable directory, the common case tempfile's search ends in
    too; anything else is left to tempfile's full search."""
    loaded: Any = sys.modules.get("tempfile")
    if loaded is None:
        for candidate in (*(os.environ.get(v) for v in ("TMPDIR", "TEMP", "TMP")), "/tmp"):
            if candidate:
                if os.path.isdir(candidate) and os.access(candidate, os.W_OK | os.X_OK):
                    return os.path.abspath(candidate)
                break  # tempfile would look further: let it
        import tempfile as loaded
    root: str = loaded.gettempdir()
    return root


def _remove(path: str, owner: int) -> None:
    if os.getpid() != owner:  # a forked child's exit: the directory is its parent's
        return
    with contextlib.suppress(FileNotFoundError):  # removed by someone else: as cleanup wanted
        _rmtree(path)


def _rmtree(top: str) -> None:
    """``shutil.rmtree``, making what a test made read-only writable again first, as
    tempfile's does (a directory chmod-ed 0o500 to provoke a disk error, say)."""
    import shutil

    def onerror(func: Any, path: str, exc_info: Any) -> None:
        if not issubclass(exc_info[0], PermissionError):
            if issubclass(exc_info[0], FileNotFoundError):
                return
            raise exc_info[1]
        with contextlib.suppress(FileNotFoundError):
            if path != top:
                os.chmod(os.path.dirname(path), 0o700)
            os.chmod(path, 0o700)
            try:
                os.unlink(path)
            except (IsADirectoryError, PermissionError):
                _rmtree(path)

    shutil.rmtree(top, onerror=onerror)


class TemporaryDirectory:
    """``tempfile.TemporaryDirectory(prefix=...)``'s ``name`` and ``cleanup()``."""

    def __init__(self, prefix: str) -> None:
        root = temporary_root()
        while True:
            path = os.path.join(root, prefix + os.urandom(6).hex())
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                continue
            break
        self.name = path
        self._finalizer = weakref.finalize(self, _remove, path, os.getpid())

    def cleanup(self) -> None:
        """Remove the directory and everything in it (once; later calls, and calls in a
        forked child, do nothing)."""
        self._finalizer()

"""A small real filesystem to fill up, for full-disk tests: a tmpfs mounted for the test (the
suite runs as root in CI, and mounting needs it; without root the test fails, it never skips)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

DISK_BYTES = 24 * 1024 * 1024


@contextlib.contextmanager
def small_tmpfs(mount_point: Path, size: int = DISK_BYTES) -> Iterator[Path]:
    mount_point.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs for a full-disk test (needs root): {done.stderr}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(path: Path, leave: int, name: str = "filler") -> None:
    """Write a file that leaves ``leave`` bytes free on ``path``'s filesystem (0: none at all)."""
    stats = os.statvfs(path)
    free = stats.f_bavail * stats.f_frsize
    with (path / name).open("wb", buffering=0) as f:
        f.write(b"\0" * max(0, free - leave))
        if leave == 0:
            with contextlib.suppress(OSError):
                while True:  # the last pages, to the very end
                    f.write(b"\0" * 4096)

"""Make the process's resident memory follow the request memory it holds (glibc only).

A big request's buffer doubles as its bytes arrive, and ``queued.max.request.bytes`` bounds
what such buffers hold together. glibc serves big allocations with their own ``mmap`` at first,
but each time one is freed it raises that threshold to the freed size (up to 32 MiB) and its
heap-trim threshold to twice that, so later buffers of those sizes come from the heap, whose
freed space stays resident: a flood of big requests then leaves the broker tens of MiB above
what it holds, by chance of allocation order. Fixing the threshold turns that adaptation off:
buffers from ``MMAP_THRESHOLD`` up are mapped for themselves and unmapped when freed.

The threshold sits above the requests clients send in normal work (librdkafka and the Java
client cap a request near 1 MB), whose buffers keep being reused from the heap, so only the
rare big ones pay for a fresh mapping. Process-wide, hence only for a process that is the
broker (``sluice serve``), never for one that embeds it.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 4 * 1024 * 1024
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD
_M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
_M_MMAP_THRESHOLD = -3


def map_big_buffers_apart() -> bool:
    """Fix glibc's mmap and trim thresholds; False where the C library is not glibc."""
    try:
        # The interpreter's own symbols include its C library's (find_library would run
        # ldconfig, a process, at every broker start).
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - glibc only; musl also has a mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    if not done:
        log.warning("mallopt refused the mmap and trim thresholds; memory use may drift higher")
    return done

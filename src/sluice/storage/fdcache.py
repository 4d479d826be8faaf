"""A bounded pool of open segment file descriptors, least recently used closed first.

A partition keeps its active segment open; every other segment is opened on demand and its
descriptor parked here, so a broker with many segments (``segment.bytes`` set low, long retention)
holds a bounded number of descriptors instead of one per segment forever. A descriptor in use
(leased) is never closed under its user: a worker thread writing or reading a segment holds a lease,
and eviction skips leased and pinned (active) segments.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Protocol


class CachedFile(Protocol):
    @property
    def evictable(self) -> bool:
        """Open, not pinned and not leased."""
        ...

    def close_fd(self) -> None:
        """Close the descriptor (called with the cache's lock held)."""
        ...


class FdCache:
    def __init__(self, capacity: int = 1000) -> None:
        self.capacity = max(1, capacity)
        self.lock = threading.Lock()
        """Guards every segment's descriptor and lease count; held only around syscalls that
        open or close descriptors, never around I/O."""
        self._lru: OrderedDict[CachedFile, None] = OrderedDict()
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._lru)

    # All methods below are called with ``lock`` held.

    def track(self, entry: CachedFile) -> None:
        """``entry`` has an open descriptor that may be closed when unused: remember it as the most
        recently used, and close the least recently used idle ones beyond capacity."""
        self._lru[entry] = None
        self._lru.move_to_end(entry)
        self.shrink()

    def touch(self, entry: CachedFile) -> None:
        if entry in self._lru:
            self._lru.move_to_end(entry)

    def forget(self, entry: CachedFile) -> None:
        self._lru.pop(entry, None)

    def shrink(self, target: int | None = None) -> int:
        """Close idle descriptors, oldest first, until at most ``target`` (default: capacity) are
        cached; returns how many were closed. Leased ones stay (they are closed later)."""
        limit = self.capacity if target is None else target
        closed = 0
        if len(self._lru) <= limit:
            return 0
        for entry in list(self._lru):
            if len(self._lru) <= limit:
                break
            if entry.evictable:
                del self._lru[entry]
                entry.close_fd()
                closed += 1
        self.evictions += closed
        return closed


DEFAULT_CACHE = FdCache()
"""For logs opened on their own (tests, the group offsets log); a LogManager has its own."""

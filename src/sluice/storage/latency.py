"""How long fsyncs take, kept as a fixed-bucket histogram of plain counters.

Storage keeps the numbers and knows nothing of how they are exported: the server's metrics
collector reads :meth:`LatencyHistogram.snapshot` at scrape time. Observations come from worker
threads (the writer's group commit runs its fsync in the executor) as well as the event loop, so
one small lock guards the counters; an fsync costs milliseconds, the lock well under a
microsecond.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

FSYNC_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip
"""Upper bounds in seconds (a last, unbounded bucket follows): from a page-cache-only sync on
tmpfs (~10 us) to a stalled disk."""


class LatencyHistogram:
    def __init__(self, buckets: tuple[float, ...] = FSYNC_BUCKETS) -> None:
        self.buckets = buckets
        self._counts = [0] * (len(buckets) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        index = bisect_left(self.buckets, seconds)
        with self._lock:
            self._counts[index] += 1
            self._sum += seconds

    def time(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` and observe how long it took (whether or not it raised)."""
        started = time.perf_counter()
        try:
            return fn()
        finally:
            self.observe(time.perf_counter() - started)

    def snapshot(self) -> tuple[list[int], float]:
        """(count per bucket, the last one unbounded; sum of seconds), consistent with each
        other."""
        with self._lock:
            return list(self._counts), self._sum


DEFAULT_FSYNC_TIMES = LatencyHistogram()
"""For logs opened on their own; a LogManager has its own."""

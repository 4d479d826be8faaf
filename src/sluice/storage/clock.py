"""The millisecond wall clock every storage decision (rolling, retention) reads, injectable so tests
move time without sleeping."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], int]


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000

"""The log of connections the broker refuses or closes by policy: one line each, naming the peer
and the cause, with a ceiling so that a flood of connections cannot flood the log as well.

Past a few lines per cause in a window, further ones are counted instead, and one line per cause
sums them up (how many, from which addresses) when the window ends: every refused connection is
accounted for, in a line of its own or in a count.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import field

from sluice.dataclass import dataclass

log = logging.getLogger("sluice.server.connections")

WINDOW_S = 10.0
LINES_PER_WINDOW = 20
_HOSTS_KEPT = 1000
_HOSTS_SHOWN = 5


@dataclass(slots=True)
class _Window:
    started: float
    level: int
    logged: int = 0
    suppressed: int = 0
    hosts: Counter[str] = field(default_factory=Counter)


class ConnectionLog:
    def __init__(self) -> None:
        self._windows: dict[str, _Window] = {}

    def note(
        self, cause: str, host: str, message: str, *args: object, level: int = logging.WARNING
    ) -> None:
        """Log ``message % args`` (which names the peer and the cause), unless ``cause`` has had
        its share of lines in this window; then count it, by ``host``."""
        now = time.monotonic()
        window = self._windows.get(cause)
        if window is None or now - window.started >= WINDOW_S:
            if window is not None:
                self._sum_up(cause, window, now)
            window = self._windows[cause] = _Window(now, level)
        if window.logged < LINES_PER_WINDOW:
            window.logged += 1
            log.log(level, message, *args)
            return
        window.suppressed += 1
        if host in window.hosts or len(window.hosts) < _HOSTS_KEPT:
            window.hosts[host] += 1
        else:
            window.hosts["other addresses"] += 1

    def tick(self) -> None:
        """Sum up windows that have ended (called by the server's housekeeping)."""
        now = time.monotonic()
        for cause, window in list(self._windows.items()):
            if now - window.started >= WINDOW_S:
                self._sum_up(cause, window, now)
                del self._windows[cause]

    def flush(self) -> None:
        """Sum up every window now (at shutdown)."""
        now = time.monotonic()
        for cause, window in self._windows.items():
            self._sum_up(cause, window, now)
        self._windows.clear()

    @staticmethod
    def _sum_up(cause: str, window: _Window, now: float) -> None:
        if not window.suppressed:
            return
        hosts = ", ".join(f"{h}: {n}" for h, n in window.hosts.most_common(_HOSTS_SHOWN))
        log.log(
            window.level,
            "%s: %d more connections in %.1f s, not logged one by one (by address: %s)",
            cause,
            window.suppressed,
            now - window.started,
            hosts,
        )

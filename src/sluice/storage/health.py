"""Whether the data directory's disk is full, so the condition is logged once when writes start
failing for lack of space and once when they succeed again, not once per refused append."""

from __future__ import annotations

import logging

from sluice.storage.files import is_disk_full

log = logging.getLogger(__name__)


class DiskHealth:
    def __init__(self) -> None:
        self.full = False
        self.refused = 0
        """Writes refused since the disk filled."""

    def failed(self, exc: BaseException, what: str) -> None:
        """A write failed; if for lack of space, say so when the disk first fills."""
        if not is_disk_full(exc):
            return
        self.refused += 1
        if not self.full:
            self.full = True
            log.error(
                "disk full: %s failed (%s); appends, topic creation and other writes are refused "
                "with KAFKA_STORAGE_ERROR until space is freed; reads go on",
                what,
                exc,
            )

    def succeeded(self) -> None:
        """A write succeeded: if the disk was full, it no longer is."""
        if self.full:
            self.full = False
            log.warning(
                "disk space available again: writes succeed (%d refused while the disk was full)",
                self.refused,
            )
            self.refused = 0


DEFAULT_HEALTH = DiskHealth()
"""For logs opened on their own; a LogManager has its own."""

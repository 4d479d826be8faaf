"""A close that runs in a task of its own (Producer's and Consumer's): a caller cancelled
meanwhile, or a second close, never cuts it short, and every caller waiting for it gets its
outcome."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)


class ClosesInTask:
    """For a class whose ``close`` starts ``_closing_task`` (and sets ``_close_waiters`` to 0
    in its ``__init__``); ``_closed_thing`` names it in the log."""

    _closing_task: asyncio.Future[None] | None
    _close_waiters: int
    _closed_thing = "client"

    async def _wait_for_close(self, closing: asyncio.Future[None]) -> None:
        self._close_waiters += 1
        try:
            await asyncio.shield(closing)
        finally:
            self._close_waiters -= 1

    def _close_failed(self, closing: asyncio.Future[None]) -> None:
        """A close that failed with no caller to raise it to (every caller was cancelled, or
        none waited) is logged; one a caller awaits is raised to it."""
        if closing.cancelled() or closing.exception() is None or self._close_waiters:
            return
        log.error("closing the %s failed", self._closed_thing, exc_info=closing.exception())

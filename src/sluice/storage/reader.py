"""Reading the byte ranges a Fetch answers with, off the event loop's thread when they are big.

A ``pread`` is a copy out of the page cache, or a wait for the disk when the bytes are not cached;
on the loop's thread either one holds every connection. Measured with ``sluice.bench.fetch``
(docs/storage.md), moving reads of more than :data:`INLINE_READ_MAX_BYTES` to a worker cut the
loop's lag p99 2-6x under concurrent consumers or many partitions, and its CPU time by a third to
a half with 8 partitions, at the same consume throughput. ``os.sendfile`` is not an option: uvloop's transports do not support
``loop.sendfile`` and refuse ``add_writer`` on their sockets, so the bytes go through memory and
``transport.writelines``.

The worker is one thread of its own. Each thread that allocates the read buffers gets a malloc
arena of its own, whose freed memory is returned to the kernel and faulted in again on the next
read: with the default executor's threads the same load cost the broker 3-5x the page faults and
a third more CPU, for no less lag.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor

from sluice.storage.log import FileSlice
from sluice.storage.segment import LogSegment

INLINE_READ_MAX_BYTES = 256 * 1024
"""Reads up to this size in all are done on the caller's thread: a hop to a worker and back costs
about what copying this much out of the page cache does (as for the writer's inline writes)."""


class SliceReader:
    """Reads :class:`FileSlice` ranges for the owner's thread (the event loop): small reads there,
    bigger ones in ``worker`` (by default one thread of its own, started on first use)."""

    def __init__(
        self, inline_max_bytes: int = INLINE_READ_MAX_BYTES, worker: Executor | None = None
    ) -> None:
        self.inline_max_bytes = inline_max_bytes
        self._worker = worker or ThreadPoolExecutor(max_workers=1, thread_name_prefix="sluice-read")

    async def read(self, slices: Sequence[FileSlice]) -> list[bytes]:
        """The bytes of each slice, in order.

        Each segment's descriptor is leased on this thread before the hop (the slices were found
        on it, so none can have been closed meanwhile) and given back when the worker is done
        with them: once it has read, or if the job is cancelled before it ran, never while it
        may still read (a request cancelled meanwhile must not close them under it). A segment
        deleted meanwhile stays readable through its descriptor."""
        if sum(s.length for s in slices) <= self.inline_max_bytes:
            return [s.read() for s in slices]
        leased: list[LogSegment] = []
        jobs: list[tuple[int, int, int]] = []
        try:
            for s in slices:
                jobs.append((s.segment.acquire_fd(), s.position, s.length))
                leased.append(s.segment)
            job = self._worker.submit(_pread_all, jobs)
        except BaseException:
            _release(leased)
            raise
        job.add_done_callback(lambda _: _release(leased))  # in the worker, or the canceller
        return await asyncio.wrap_future(job)

    def close(self) -> None:
        self._worker.shutdown(wait=True)


def _pread_all(jobs: list[tuple[int, int, int]]) -> list[bytes]:
    return [os.pread(fd, length, position) for fd, position, length in jobs]


def _release(leased: list[LogSegment]) -> None:
    for segment in leased:
        segment.release_fd()

"""The per-partition writer task: appends are validated and given offsets in the caller,
queued, and written by one task per partition whose file I/O runs in a worker thread.

Why: a write or fsync inside the request blocks every other request on the event loop. Here the
request path only validates and enqueues; the writer drains whatever queued up while its previous
write ran into one ``pwritev`` (natural batching), and a separate sync task gives group commit:
one fsync covers every append that arrived while the previous fsync ran.

What it costs: an acknowledged fire-and-forget append can still fail to reach the file (the
caller learns nothing), errors reach callers through futures, and the queue must stay bounded. It
is bounded by bytes with strict FIFO admission, so a full queue makes callers wait (backpressure)
and never reorders or drops their appends.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from sluice.config import AckLevel
from sluice.errors import LogClosedError, StorageError

if TYPE_CHECKING:
    from sluice.storage.log import PartitionLog, Reservation, TxnCheck
    from sluice.storage.producer_state import BatchMetadata
    from sluice.storage.segment import LogSegment

_MAX_GROUP_BYTES = 8 * 1024 * 1024
"""Upper bound on one pwritev: large enough to batch, small enough to keep latency even."""

INLINE_WRITE_MAX_BYTES = 256 * 1024
"""Groups up to this size are written on the loop's thread by the writer task; larger ones in a
worker thread. Handing work to a thread and back costs about 0.2-0.25 ms on the 2-core machines we
measure on (see docs/storage.md), about what writing a few hundred KiB into the page cache takes,
so below this the hop costs more than it frees. fsyncs, which take milliseconds, always leave."""

_Waiter = tuple["Reservation", "asyncio.Future[int] | None"]


_log = logging.getLogger(__name__)


class PartitionWriter:
    def __init__(self, log: PartitionLog, executor: Executor | None = None) -> None:
        self._log = log
        self._loop = asyncio.get_running_loop()
        self._executor = executor
        self._queue: deque[_Waiter] = deque()
        self._queued_bytes = 0
        self._admission: deque[asyncio.Future[None]] = deque()
        self._work = asyncio.Event()
        self._sync_wanted = asyncio.Event()
        self._sync_waiters: list[_Waiter] = []
        self._closing = False
        self._writing = False
        self._broken: StorageError | None = None
        self._task = self._loop.create_task(self._write_loop(), name=f"writer:{log.name}")
        self._sync_task = self._loop.create_task(self._sync_loop(), name=f"sync:{log.name}")

    @property
    def running(self) -> bool:
        return not self._task.done()

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    @property
    def idle(self) -> bool:
        """Nothing queued, waiting for admission, being written or waiting for an fsync: an
        inline append now cannot overtake anything this writer accepted."""
        return (
            not self._queue
            and not self._admission
            and not self._sync_waiters
            and not self._writing
        )

    async def submit(
        self,
        data: bytes | bytearray | memoryview,
        ack: AckLevel | None = None,
        txn_check: TxnCheck | None = None,
    ) -> int:
        """Queue an append; return its first offset once acknowledged at ``ack``."""
        return await self._submit(self._log.reserve, data, ack, txn_check)

    async def submit_marker(
        self, producer_id: int, producer_epoch: int, coordinator_epoch: int | None, commit: bool
    ) -> int:
        """Queue a transaction marker (:meth:`PartitionLog.reserve_marker`), in order with the
        appends; return its offset once it is fsynced."""
        return await self._submit(
            self._log.reserve_marker, producer_id, producer_epoch, coordinator_epoch, commit, AckLevel.FSYNCED
        )

    async def _submit(self, reserve: Callable[..., Reservation], *args: Any) -> int:
        if self._closing:
            raise LogClosedError(f"log {self._log.name} is closing")
        if self._broken is not None:
            raise self._broken
        waited = await self._admit()
        try:
            if self._closing:
                raise LogClosedError(f"log {self._log.name} is closing")
            reservation = reserve(*args)
            future: asyncio.Future[int] | None = None
            if reservation.duplicate is None:
                if reservation.ack is not AckLevel.QUEUED:
                    future = self._loop.create_future()
                    if reservation.producer_batch is not None:
                        reservation.producer_batch.settle_with(future)
                self._queue.append((reservation, future))
                self._queued_bytes += len(reservation.buffer)
                self._work.set()
        finally:
            if waited:
                self._admission.popleft()
                self._wake_admission()
        if reservation.duplicate is not None:
            return await duplicate_offset(reservation.duplicate)
        if future is None:
            return reservation.base_offset
        return await future

    # -- admission (bounded queue, strict FIFO) ---------------------------------------------------

    async def _admit(self) -> bool:
        """Wait for queue space. Once anyone waits, later callers queue behind them, so appends
        enter the queue (and get offsets) in the order their callers arrived."""
        if not self._admission and self._queued_bytes < self._log.config.writer_queue_bytes:
            return False
        future: asyncio.Future[None] = self._loop.create_future()
        self._admission.append(future)
        self._wake_admission()
        try:
            await future
        except asyncio.CancelledError:
            self._admission.remove(future)
            self._wake_admission()
            raise
        return True

    def _wake_admission(self) -> None:
        if (
            self._admission
            and not self._admission[0].done()
            and (self._queued_bytes < self._log.config.writer_queue_bytes or self._closing)
        ):
            self._admission[0].set_result(None)

    # -- the writer task ---------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    break
                self._work.clear()
                await self._work.wait()
                continue
            # One group per call, so its locals (which reference the request buffers) are gone
            # before this task waits again: an idle partition must not pin its last request.
            self._writing = True
            try:
                await self._write_group()
            finally:
                self._writing = False

    async def _write_group(self) -> None:
        group: list[_Waiter] = []
        size = 0
        while self._queue and (not group or size + len(self._queue[0][0].buffer) <= _MAX_GROUP_BYTES):
            item = self._queue.popleft()
            group.append(item)
            size += len(item[0].buffer)
        self._queued_bytes -= size
        self._wake_admission()
        try:
            await self._write_popped(group, size)
        except Exception as exc:
            # A bug, not an I/O error (those are handled below): the in-memory state may be
            # half-updated, so stop taking appends rather than guess. Callers get an error at
            # once instead of a timeout; a restart recovers the partition from its files.
            name = self._log.name
            _log.exception("the writer of %s failed; the partition refuses appends until the broker restarts", name)
            self._broken = StorageError(f"partition {name} is unavailable after an internal error: {exc!r}")
            self._fail_with_queue(group, self._broken)

    def _sync_failed(self, exc: OSError, error: StorageError) -> None:
        """A sync or seal raised ``exc``: where the log fences (see
        :meth:`PartitionLog.sync_failed`), it refuses appends until a restart, and so does this
        writer, which fails the appends waiting for a sync instead of syncing again."""
        if self._log.sync_failed(exc, error):
            self._broken = self._log.fenced

    def _fail_with_queue(self, group: list[_Waiter], error: StorageError) -> None:
        """Fail ``group`` and every append queued behind it: their offsets now will not exist."""
        rest = list(self._queue)
        self._queue.clear()
        self._queued_bytes = 0
        self._log.reset_reservations()
        self._wake_admission()
        _fail(group + rest, error)

    async def _write_popped(self, group: list[_Waiter], size: int) -> None:
        log = self._log
        try:
            plan = log.plan([r for r, _ in group])  # may read a segment (indexes rebuilt on first use)
        except OSError as exc:
            self._fail_with_queue(group, StorageError(f"write to {log.name} failed: {exc}"))
            return
        try:
            if size <= INLINE_WRITE_MAX_BYTES and not plan.creates:
                log.execute(plan)
            else:
                await self._loop.run_in_executor(self._executor, log.execute, plan)
        except OSError as exc:
            log.abort(plan)
            log.disk.failed(exc, f"writing to {log.name}")
            self._fail_with_queue(group, StorageError(f"write to {log.name} failed: {exc}"))
            return
        log.disk.succeeded()
        log.commit(plan)
        seal_error: StorageError | None = None
        if plan.rolled:
            try:
                await self._loop.run_in_executor(self._executor, log.seal_rolled, plan)
                log.mark_sealed(plan)
            except OSError as exc:
                seal_error = StorageError(f"sealing a segment of {log.name} failed: {exc}")
                self._sync_failed(exc, seal_error)
        for reservation, future in group:
            if future is None or future.done():
                continue
            if reservation.ack is AckLevel.WRITTEN:
                future.set_result(reservation.base_offset)
            elif seal_error is not None:
                future.set_exception(seal_error)
            else:
                self._sync_waiters.append((reservation, future))
        if self._sync_waiters or log.flush_due():
            self._sync_wanted.set()

    # -- the sync task (group commit and flush.messages / flush.ms) ---------------------------------

    async def _sync_loop(self) -> None:
        log = self._log
        while True:
            # Fenced, nothing is synced again (and an unflushed log must not spin this loop).
            if not self._sync_waiters and (self._broken is not None or not log.flush_due()):
                if self._closing and self._task.done():
                    break
                self._sync_wanted.clear()
                timeout = None
                if log.config.flush_ms >= 0 and log.unflushed_records:
                    timeout = max(0.0, (log.last_flush_ms + log.config.flush_ms - log.clock()) / 1000)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._sync_wanted.wait(), timeout)
                continue
            await self._sync_once()

    async def _sync_once(self) -> None:
        """One group commit; a method of its own so the waiters (and the request buffers their
        reservations reference) are released before the sync task waits again."""
        log = self._log
        offset, segment, position, records = log.sync_point()
        # A roll commits before its seal's fsync ends: appends acknowledged here may lie in
        # the rolled segments, so they are synced too (a no-op cost when none is pending).
        segments = [*log.sealing_segments(), segment]
        waiters, self._sync_waiters = self._sync_waiters, []
        if self._broken is not None:
            _fail(waiters, self._broken)
            return
        try:
            await self._loop.run_in_executor(
                self._executor, log.fsync_times.time, functools.partial(_fsync_all, segments)
            )
        except OSError as exc:
            log.disk.failed(exc, f"syncing {log.name}")
            error = StorageError(f"fsync of {log.name} failed: {exc}")
            self._sync_failed(exc, error)  # not opened: nothing lost, sync again later
            _fail(waiters, error)
            return
        if self._broken is not None:  # a seal's fsync failed meanwhile
            _fail(waiters, self._broken)
            return
        log.mark_flushed(offset, segment, position, records)
        for reservation, future in waiters:
            if future is not None and not future.done():
                future.set_result(reservation.base_offset)

    async def close(self) -> None:
        """Stop accepting, write and sync everything accepted, then stop both tasks."""
        self._closing = True
        self._work.set()
        self._wake_admission()
        await self._task
        self._sync_wanted.set()
        await self._sync_task


def _fsync_all(segments: list[LogSegment]) -> None:
    for segment in segments:
        segment.fsync()


def _fail(items: list[_Waiter], error: StorageError) -> None:
    for _reservation, future in items:
        if future is not None and not future.done():
            future.set_exception(error)


async def duplicate_offset(original: BatchMetadata) -> int:
    """The answer to an idempotent producer's retry of a batch already appended: the original's
    first offset, once the original is acknowledged (if it fails, so does the retry, which the
    producer then sends again and is accepted: the failed batch's state was undone)."""
    if original.pending is not None:
        await asyncio.shield(original.pending)
    return original.first_offset

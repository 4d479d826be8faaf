"""``LogCleaner``: which compacted log to clean, and when (after Kafka's LogCleaner and
LogCleanerManager); the work itself is :mod:`.compaction`, its file work in worker processes
(:mod:`.cleaner_worker`), its swaps in the cleaner's threads, and only the planning and the
publication of swapped segments on the event loop.

Every ``log.cleaner.backoff.ms`` (or at once after a run), each of
``log.cleaner.threads`` loops takes the *dirtiest* compacted log: the highest ratio of dirty
bytes (segments past the cleaner checkpoint) to cleanable bytes (closed segments from the log
start up to the first uncleanable one), among logs whose ratio exceeds
``min.cleanable.dirty.ratio`` or whose oldest dirty record is older than
``max.compaction.lag.ms``. One run per log at a time; the run's segments are held (retention
and DeleteRecords wait for them); the checkpoint moves to where the run's map ended.

Counters for the observability issue live on the object: ``runs``, ``bytes_read``,
``bytes_written``, ``last_clean_ms``, ``dirty_ratios`` (per log name, as of the last look),
``uncleanable`` (log name -> why) and ``last_stats``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from sluice.dataclass import dataclass
from sluice.errors import SluiceError
from sluice.protocol.records import DEFAULT_MAX_UNCOMPRESSED
from sluice.storage.clock import Clock, wall_clock_ms
from sluice.storage.files import is_disk_full
from sluice.storage.log import PartitionLog
from sluice.storage.segment import LogSegment
from sluice.storage.swaps import (
    MAP_ENTRY_BYTES,
    CleanerCheckpoint,
    CleaningAborted,
    read_checkpoint,
    write_checkpoint,
)

if TYPE_CHECKING:  # the cleaning code itself is imported on a cleaner's first run
    from sluice.storage.cleaner_worker import CleanerWorker
    from sluice.storage.compaction import CleanedSpec, CleaningStats, RunOutput, RunPlan

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CleanerConfig:
    """The broker's ``log.cleaner.*`` settings (Kafka's defaults)."""

    enable: bool = True
    threads: int = 1
    dedupe_buffer_size: int = 128 * 1024 * 1024
    io_max_bytes_per_second: float = 1.7976931348623157e308
    io_buffer_size: int = 512 * 1024
    backoff_ms: int = 15_000
    max_batch_bytes: int = DEFAULT_MAX_UNCOMPRESSED
    """``sluice.batch.uncompressed.max.bytes``: the most one batch may decompress to."""
    worker: str = "process"
    """Where a run's file work happens: ``process`` (worker processes, so the event loop never
    waits for the interpreter lock) or ``thread`` (for comparison: the benchmark; and tests)."""

    @property
    def map_capacity(self) -> int:
        """Keys one run's map holds: the dedupe buffer shared by the threads."""
        return max(1, self.dedupe_buffer_size // max(1, self.threads) // MAP_ENTRY_BYTES)


@dataclass(slots=True)
class Cleanable:
    """A compacted log and what a run would clean now (Kafka's LogToClean)."""

    log: PartitionLog
    first_dirty: int
    segments: list[LogSegment]
    clean_bytes: int
    dirty_bytes: int
    overdue: bool
    """A dirty record is older than ``max.compaction.lag.ms``: clean whatever the ratio."""

    @property
    def first_uncleanable(self) -> int:
        return self.segments[-1].next_offset

    @property
    def ratio(self) -> float:
        total = self.clean_bytes + self.dirty_bytes
        return self.dirty_bytes / total if total else 0.0


@dataclass(slots=True)
class CleanResult:
    """One run: the dirty section it started from and where its map ended (the new
    checkpoint), with its counters."""

    name: str
    first_dirty: int
    end_offset: int
    stats: CleaningStats
    swaps: int = 0
    size_before: int = 0
    size_after: int = 0


class LogCleaner:
    """Owned by the :class:`~sluice.storage.manager.LogManager` (started with its housekeeping,
    stopped first at its close; a topic's runs are aborted before the topic is deleted)."""

    def __init__(
        self,
        config: CleanerConfig,
        logs: Callable[[], Iterable[PartitionLog]],
        clock: Clock = wall_clock_ms,
    ) -> None:
        self.config = config
        self._logs = logs
        self.clock = clock
        self._executor: ThreadPoolExecutor | None = None
        self._checkpoints: weakref.WeakKeyDictionary[PartitionLog, CleanerCheckpoint | None] = (
            weakref.WeakKeyDictionary()
        )
        self._running: dict[PartitionLog, asyncio.Future[Any]] = {}
        self._workers: dict[PartitionLog, CleanerWorker] = {}
        """Runs in a worker process, by log: :meth:`abort` kills the worker."""
        self._idle_workers: list[CleanerWorker] = []
        self._aborting: set[PartitionLog] = set()
        self._stopping = False
        self._loops: list[asyncio.Task[None]] = []
        self._wake: asyncio.Event | None = None
        # counters (exported by the observability issue)
        self.runs = 0
        self.bytes_read = 0
        self.bytes_written = 0
        self.last_clean_ms = -1
        self.dirty_ratios: dict[str, float] = {}
        self.uncleanable: dict[str, str] = {}
        self.last_stats: CleaningStats | None = None

    # -- choosing ---------------------------------------------------------------------------------

    def checkpoint(self, plog: PartitionLog) -> CleanerCheckpoint | None:
        if plog not in self._checkpoints:
            self._checkpoints[plog] = read_checkpoint(plog.directory)
        return self._checkpoints[plog]

    def cleanable(self, plog: PartitionLog, now: int | None = None) -> Cleanable | None:
        """What a run on ``plog`` would clean now, or None if no segment is cleanable."""
        now = self.clock() if now is None else now
        checkpoint = self.checkpoint(plog)
        first_dirty = plog.log_start_offset if checkpoint is None else checkpoint.first_dirty
        if not plog.log_start_offset <= first_dirty <= plog.log_end_offset:
            first_dirty = plog.log_start_offset  # retention passed it, or the log was cut back
        segments = plog.cleanable_segments(now, first_dirty)
        if not segments:
            return None
        clean = sum(s.size for s in segments if s.next_offset <= first_dirty)
        dirty = sum(s.size for s in segments if s.next_offset > first_dirty)
        overdue = False
        lag = plog.config.max_compaction_lag_ms
        for seg in segments:
            if seg.next_offset > first_dirty and seg.size:
                first_stamps = seg.time_index.timestamps
                if first_stamps and 0 < first_stamps[0] < now - lag:
                    overdue = True
                    break
        return Cleanable(plog, first_dirty, segments, clean, dirty, overdue)

    def dirtiest(self) -> Cleanable | None:
        """The compacted log most in need of cleaning, if any needs it (Kafka's
        grabFilthiestCompactedLog); records every compacted log's dirty ratio on the way."""
        now = self.clock()
        best: Cleanable | None = None
        ratios: dict[str, float] = {}
        for plog in self._logs():
            if plog.closed or not plog.config.compact or plog.name in self.uncleanable:
                continue
            if plog in self._running or plog in self._aborting:
                continue
            try:
                found = self.cleanable(plog, now)
            except (OSError, SluiceError) as exc:
                log.warning("cannot tell how dirty %s is: %s", plog.name, exc)
                continue
            ratios[plog.name] = 0.0 if found is None else found.ratio
            if found is None or found.dirty_bytes == 0:
                continue
            if not (found.overdue or found.ratio > plog.config.min_cleanable_dirty_ratio):
                continue
            if best is None or found.ratio > best.ratio:
                best = found
        self.dirty_ratios = ratios
        return best

    # -- running ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start ``log.cleaner.threads`` cleaning loops on the running event loop."""
        self._wake = asyncio.Event()
        for i in range(self.config.threads):
            self._loops.append(asyncio.get_running_loop().create_task(self._loop(), name=f"log-cleaner-{i}"))

    def wake(self) -> None:
        """Look for work now rather than after the backoff."""
        if self._wake is not None:
            self._wake.set()

    async def _loop(self) -> None:
        assert self._wake is not None
        while not self._stopping:
            try:
                result = await self.clean_dirtiest()
            except Exception:  # a bug: keep the broker up, try again later
                log.exception("the log cleaner failed")
                result = None
            if result is None:  # nothing dirty enough: wait
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.config.backoff_ms / 1000)
            else:
                await asyncio.sleep(0)

    async def clean_dirtiest(self) -> CleanResult | None:
        candidate = self.dirtiest()
        if candidate is None:
            return None
        return await self._clean_guarded(candidate)

    async def clean(self, plog: PartitionLog) -> CleanResult | None:
        """Clean ``plog`` now, whatever its dirty ratio (tools, tests, benchmarks); None if it
        has nothing cleanable or is being cleaned already."""
        if plog in self._running or plog.closed:
            return None
        candidate = self.cleanable(plog)
        if candidate is None:
            return None
        return await self._clean_guarded(candidate)

    async def _clean_guarded(self, candidate: Cleanable) -> CleanResult | None:
        plog = candidate.log
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._running[plog] = future
        try:
            return await self._run(candidate)
        except CleaningAborted:
            return None
        except (OSError, SluiceError) as exc:
            if is_disk_full(exc):  # passes: the log is tried again once the cleaner backs off
                plog.disk.failed(exc, f"cleaning {plog.name}")
                return None
            # Kafka marks such a partition uncleanable until restart; it stays readable.
            self.uncleanable[plog.name] = str(exc)
            log.error("cleaning %s failed; it is not cleaned again until a restart: %s", plog.name, exc)
            return None
        finally:
            del self._running[plog]
            future.set_result(None)

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.config.threads, thread_name_prefix="sluice-cleaner"
            )
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _aborted(self, plog: PartitionLog) -> Callable[[], bool]:
        return lambda: self._stopping or plog in self._aborting or plog.closed

    def _plan(self, c: Cleanable) -> RunPlan:
        from sluice.storage.compaction import RunPlan, SegmentSpec

        plog = c.log
        specs = [SegmentSpec(seg.base_offset, seg.size, seg.next_offset) for seg in c.segments]
        start_position = 0
        for seg in c.segments:
            if seg.next_offset > c.first_dirty:
                # Through the segment, which checks an entry loaded from its file against the log.
                start_position = seg.scan_position(max(c.first_dirty, seg.base_offset))
                break
        for seg in c.segments:
            _ = seg.aborted_txns  # in memory before any swap (the files may become the new ones')
        aborted = plog.aborted_txns(c.segments[0].base_offset, c.first_uncleanable)
        return RunPlan(
            name=plog.name,
            directory=plog.directory,
            config=plog.config,
            segments=specs,
            first_dirty=c.first_dirty,
            first_uncleanable=c.first_uncleanable,
            map_start_position=start_position,
            producer_last_offsets=plog.producer_last_offsets(),
            now=self.clock(),
            token=os.urandom(4).hex(),  # secrets.token_hex without importing secrets (hmac, hashlib)
            map_capacity=self.config.map_capacity,
            io_buffer_size=self.config.io_buffer_size,
            io_bytes_per_second=self.config.io_max_bytes_per_second / self.config.threads,
            max_batch_bytes=self.config.max_batch_bytes,
            aborted=aborted,
            producer_marker_epochs=plog.producer_marker_epochs(),
        )

    async def _run(self, c: Cleanable) -> CleanResult:
        from sluice.storage.compaction import CleaningStats, discard, run

        plog = c.log
        plan = self._plan(c)
        held = list(c.segments)
        for seg in held:
            seg.cleaning = True
        result = CleanResult(plog.name, c.first_dirty, c.first_dirty, CleaningStats())
        result.size_before = sum(seg.size for seg in held)
        try:
            try:
                if self.config.worker == "thread":
                    output = await self._io(run, plan, self._aborted(plog))
                else:
                    output = await self._io(self._run_in_process, plan, plog)
                result.end_offset = output.end_offset
                result.stats = output.stats
                previous = self.checkpoint(plog)
                # Every group's segment, up to its end: the map may have ended part way through
                # the last one, past which the run still drops aborted batches and spent markers.
                reach = max([output.end_offset, *(spec.end for spec in output.groups)])
                gaps = max(reach, -1 if previous is None else previous.gaps_below)
                # Recovery must accept this run's gaps before the first of them is on disk.
                await self._save_checkpoint(plog, CleanerCheckpoint(c.first_dirty, gaps))
                pending = [spec for spec in output.groups if spec.changed]
                while pending:
                    if self._aborted(plog)():
                        raise CleaningAborted(plog.name)
                    spec = pending.pop(0)
                    old = [seg for seg in held if spec.base <= seg.base_offset < spec.end]
                    if not await self._swap(plog, plan, spec, old):
                        held = []  # a failed swap keeps them held until a restart finishes it
                        raise OSError(f"the swap of cleaned segment {spec.base} did not finish")
                    result.swaps += 1
            except BaseException:
                # The cleaned files not swapped in (a committed swap's file is not one of them:
                # the next start finishes it): on a full disk, the space most needed.
                await self._io(discard, plan.directory, plan.token)
                raise
            await self._save_checkpoint(plog, CleanerCheckpoint(output.end_offset, gaps))
        finally:
            for seg in held:
                seg.cleaning = False
        result.size_after = sum(
            seg.size for seg in plog.segments if seg.base_offset < c.first_uncleanable
        )
        self.runs += 1
        self.bytes_read += result.stats.bytes_read
        self.bytes_written += result.stats.bytes_written
        self.last_clean_ms = self.clock()
        self.last_stats = result.stats
        _log_run(result)
        return result

    def _run_in_process(self, plan: RunPlan, plog: PartitionLog) -> RunOutput:
        """A cleaner thread's part: run ``plan`` in a worker process and wait for it (the wait
        holds no lock). :meth:`abort` kills the worker."""
        from sluice.storage.cleaner_worker import CleanerWorker, WorkerDied

        worker = self._idle_workers.pop() if self._idle_workers else CleanerWorker()
        self._workers[plog] = worker
        try:
            if self._aborted(plog)():
                raise CleaningAborted(plan.name)
            try:
                return worker.run(plan)
            except WorkerDied:
                if worker.killed or self._aborted(plog)():
                    raise CleaningAborted(plan.name) from None
                raise OSError(f"cleaning {plan.name}: the worker process died") from None
        finally:
            del self._workers[plog]
            self._idle_workers.append(worker)

    async def _swap(self, plog: PartitionLog, plan: RunPlan, spec: CleanedSpec, old: list[LogSegment]) -> bool:
        """Swap the cleaned group in for ``old``: the files in a cleaner thread, then the log's
        list here. The old segments' descriptors are leased throughout, and their indexes never
        read from (or written to) files meanwhile, so readers read them on until the list
        changes. False if the files are half
        swapped (the next start finishes it; until then the log serves the old segments)."""
        from sluice.storage.compaction import commit_swap, discard, finish_swap, new_segment

        new = new_segment(plan, spec, plog.active_segment.files)
        leased: list[LogSegment] = []
        try:
            for seg in old:
                seg.acquire_fd()
                leased.append(seg)
                seg.being_replaced = True
            await self._io(commit_swap, plan.directory, spec, plan.token)
        except BaseException:
            for seg in leased:
                seg.being_replaced = False
                seg.release_fd()
            await self._io(discard, plan.directory, plan.token, [spec])
            raise
        try:
            await self._io(finish_swap, plan.directory, spec, new)
        except OSError as exc:
            log.error("the swap of cleaned segment %s failed half way: %s", new.log_path, exc)
            plog.mark_unclean(f"the swap of cleaned segment {new.name} failed half way ({exc})")
            return False  # the leases stay: the old files are read through them until restart
        plog.replace_segments(old, new)
        for seg in leased:
            seg.release_fd()
        return True

    async def _save_checkpoint(self, plog: PartitionLog, checkpoint: CleanerCheckpoint) -> None:
        await self._io(write_checkpoint, plog.directory, checkpoint)
        self._checkpoints[plog] = checkpoint

    # -- stopping -------------------------------------------------------------------------------------

    async def abort(self, logs: Iterable[PartitionLog]) -> None:
        """Stop cleaning ``logs`` (a topic being deleted): a worker process is killed, a run in
        a thread ends at its next check, a committed swap is finished first. Returns once none
        is running, their names out of ``uncleanable`` and ``dirty_ratios``."""
        logs = list(logs)
        self._aborting.update(logs)
        for plog in logs:
            worker = self._workers.get(plog)
            if worker is not None:
                worker.kill()
        try:
            waits = [self._running[plog] for plog in logs if plog in self._running]
            if waits:
                await asyncio.gather(*waits)
        finally:
            self._aborting.difference_update(logs)
            for plog in logs:
                # By name: a topic created again under it is another log, with files of its own.
                self.uncleanable.pop(plog.name, None)
                self.dirty_ratios.pop(plog.name, None)

    async def stop(self) -> None:
        """Stop every loop; runs in progress are aborted (worker processes killed)."""
        self._stopping = True
        self.wake()
        for worker in list(self._workers.values()):
            worker.kill()
        if self._running:
            await asyncio.gather(*self._running.values())
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops = []
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        for worker in self._idle_workers:
            worker.close()
        self._idle_workers = []

    def close_sync(self) -> None:
        """Stop without an event loop (a manager closed without one; tests): nothing may be
        running."""
        self._stopping = True
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        for worker in self._idle_workers:
            worker.close()
        self._idle_workers = []


def _log_run(result: CleanResult) -> None:
    stats = result.stats
    if stats.batches_unparsed:
        log.warning(
            "cleaning %s kept %d record batches whole: their records do not parse under a good CRC",
            result.name,
            stats.batches_unparsed,
        )
    elapsed = max(stats.ended - stats.started, 1e-9)
    mib = stats.bytes_read / (1 << 20)
    log.info(
        "cleaned %s (dirty section [%d, %d)): %.1f MiB in %.2f s (%.1f MiB/s), %d swaps, "
        "%d of %d records kept, size %d -> %d bytes",
        result.name,
        result.first_dirty,
        result.end_offset,
        mib,
        elapsed,
        mib / elapsed,
        result.swaps,
        stats.records_kept,
        stats.records_read,
        result.size_before,
        result.size_after,
    )

"""``PartitionLog``: one partition's append-only, segmented log (after Kafka's ``Log``).

Writes go through three phases so that the I/O can leave the event loop's thread:

* **reserve** (caller's thread): validate the batches (header bounds, CRC-32C), assign offsets by
  patching baseOffset in place. Cheap, and it is what makes a fire-and-forget append able to
  report its offset at once.
* **execute** (any thread): write planned bytes at planned file positions; touches files only.
* **commit** (owner's thread): publish the new bytes to readers (sizes, indexes, end offset).

A failed execute is undone by truncating back to the committed size, so readers never see a torn
write and the log keeps working once the cause (ENOSPC, EIO) is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import field
from pathlib import Path
from typing import TypeVar

from sluice.config import AckLevel, LogConfig
from sluice.dataclass import dataclass
from sluice.errors import LogClosedError, OffsetOutOfRangeError, StorageError
from sluice.protocol.markers import Marker, build_marker, read_marker
from sluice.protocol.records import (
    DEFAULT_MAX_UNCOMPRESSED,
    HEADER_SIZE,
    TRANSACTIONAL_BIT,
    BatchHeader,
    assign_offsets,
    iter_record_stamps,
    read_header,
    scan_batches,
)
from sluice.storage.clock import Clock, wall_clock_ms
from sluice.storage.fdcache import DEFAULT_CACHE, FdCache
from sluice.storage.files import fsync_dir, read_int, write_int, write_json
from sluice.storage.health import DEFAULT_HEALTH
from sluice.storage.latency import DEFAULT_FSYNC_TIMES
from sluice.storage.loader import (
    CLEAN_SHUTDOWN_FILE,
    LOG_START_OFFSET_FILE,
    RECOVERY_POINT_FILE,
    CleanState,
    RecoveryReport,
    SegmentState,
    load,
)
from sluice.storage.producer_state import (
    BatchMetadata,
    ProducerEntry,
    ProducerState,
    Undo,
    is_idempotent,
    require_single_batch,
)
from sluice.storage.producer_state import (
    write_snapshot as write_producer_snapshot,
)
from sluice.storage.segment import DescriptorError, LogSegment, iter_headers
from sluice.storage.txn_index import AbortedTxn, collect

TxnCheck = Callable[[int, int], None]
"""Asked (producer id, epoch) before a transactional batch is given offsets; raises the Kafka
error to answer if the transaction coordinator has no such transaction open on the partition
(the broker's transaction verification, Kafka's KIP-890 part 1). Called in the same step that
reserves the offsets, so no marker can slip between the check and the batch's place in the log."""

__all__ = ["CleanState", "Clock", "FileSlice", "PartitionLog", "RecoveryReport", "wall_clock_ms"]

log = logging.getLogger(__name__)

_MAX_RELATIVE_OFFSET = (1 << 31) - 1
DEFAULT_PRODUCER_EXPIRATION_MS = 86_400_000
"""Kafka's ``producer.id.expiration.ms`` default: a producer idle this long is forgotten."""


@dataclass(frozen=True, slots=True)
class FileSlice:
    """A committed byte range of one segment file: what a Fetch answers with. :meth:`read` reads
    it on the caller's thread; :class:`~sluice.storage.reader.SliceReader` reads many, the big
    ones in a worker."""

    segment: LogSegment
    position: int
    length: int
    first_offset: int

    def read(self) -> bytes:
        try:
            return self.segment.pread(self.position, self.length)
        except OSError as exc:
            raise StorageError(f"reading {self.segment.log_path} failed: {exc}") from exc


@dataclass(slots=True)
class Reservation:
    """Validated batches with offsets assigned, waiting to be written; or, for an idempotent
    producer's retry of a batch already appended, the original (``duplicate``) and nothing to
    write."""

    buffer: memoryview
    headers: list[BatchHeader]
    base_offset: int
    next_offset: int
    records: int
    ack: AckLevel
    duplicate: BatchMetadata | None = None
    producer_batch: BatchMetadata | None = None
    """The producer state's record of this (idempotent) batch: its writer attaches the append's
    future, so a duplicate arriving meanwhile waits for it."""
    undo: Undo = field(default_factory=list)
    aborted: AbortedTxn | None = None
    """A marker aborting an open transaction: its aborted-transactions index entry, added to
    the marker's segment when the marker is committed."""


@dataclass(slots=True)
class _SegmentWrite:
    """The bytes one write puts into one segment, contiguously from ``position``."""

    segment: LogSegment
    position: int
    buffers: list[memoryview] = field(default_factory=list)
    batches: list[tuple[BatchHeader, int]] = field(default_factory=list)
    size: int = 0


@dataclass(slots=True)
class WritePlan:
    items: list[Reservation]
    writes: list[_SegmentWrite]
    new_segments: list[LogSegment]
    rolled: list[LogSegment]
    creates: list[LogSegment]
    """Segments whose files the write creates (new ones, and an active one never written)."""
    snapshot: tuple[int, dict[int, ProducerEntry]] | None = None
    """Producer state as of the new active segment's base offset (the recovery point the roll
    writes), written with the sealing of a rolled segment so that opening after a crash replays
    the headers of the one segment recovery walks, and rebuilds its aborted-transactions index."""
    txn_retry: list[LogSegment] = field(default_factory=list)
    """Sealed segments whose aborted-transactions index file could not be written before: tried
    again by the seal, and the recovery point stays at the first still unsaved."""

    @property
    def next_offset(self) -> int:
        return self.items[-1].next_offset

    @property
    def records(self) -> int:
        return sum(item.records for item in self.items)


class PartitionLog:
    """One partition directory: its segments, offsets, reads and retention (Kafka's LocalLog).
    Not thread-safe: one owner thread (the event loop) calls every method; only :meth:`execute`
    and :meth:`seal_rolled` run elsewhere (they touch files only). Appends come inline
    (:meth:`append`) or from a :class:`~sluice.storage.writer.PartitionWriter` driving
    reserve/plan/execute/commit; which one is the :class:`~sluice.storage.partition.Partition`'s
    decision, not the log's."""

    def __init__(
        self,
        directory: Path,
        config: LogConfig,
        segments: list[LogSegment],
        log_start_offset: int,
        clock: Clock,
        recovery: RecoveryReport,
    ) -> None:
        self.directory = directory
        self.name = directory.name
        """How logs and errors name this log (the log manager sets ``<topic>-<partition>``)."""
        self.disk = DEFAULT_HEALTH
        self.fsync_times = DEFAULT_FSYNC_TIMES
        """Where group commits and flushes record how long their fsyncs took (the log
        manager's histogram, read by the metrics)."""
        self.config = config
        self.clock = clock
        self.recovery = recovery
        self._segments = segments
        self._bases = [s.base_offset for s in segments]
        segments[-1].pin()
        self.log_start_offset = log_start_offset
        self.log_end_offset = segments[-1].next_offset
        self._next_offset = self.log_end_offset
        self.high_watermark = self.log_end_offset
        self._hw_segment = segments[-1]
        self._hw_position = segments[-1].size
        self.flushed_offset = self.log_end_offset
        self.flush_count = 0
        """fsyncs that completed: with group commit, far fewer than fsync-acknowledged appends."""
        self.unflushed_records = 0
        self.appended_records = 0
        self.appended_bytes = 0
        """Records and batch bytes appended since this log was opened (the metrics' produced
        counts, from the batch headers; a duplicate an idempotent producer resent is not
        appended, so not counted)."""
        self.last_flush_ms = clock()
        self._producers = ProducerState(directory, DEFAULT_PRODUCER_EXPIRATION_MS)
        self._producers_at: int | None = -1
        """Where the producer state is to be loaded from, lazily: a snapshot's offset, -1 for a
        partition that had no producers (nothing to load), None once loaded."""
        self._pending_producers: deque[Reservation] = deque()
        """Reservations of idempotent batches not yet committed, oldest first (their state
        changes are undone if their write fails)."""
        self._closed = False
        self._dirty = not recovery.clean
        """Whether the active segment changed since the log was opened, or was recovered (its
        index files are stale): its indexes need saving at close. An untouched log closes
        without touching its files."""
        self._hw_listeners: list[Callable[[], None]] = []
        self._unclean: str | None = None
        self._fenced: StorageError | None = None
        """Set by a failed fsync (:meth:`fence`): appends are refused until a restart."""
        self._stable_cache: tuple[int, LogSegment, int] | None = None
        """(LSO, segment, position of the batch holding it) when the LSO is below the high
        watermark: where a read_committed read stops."""

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: Path,
        config: LogConfig | None = None,
        clock: Clock = wall_clock_ms,
        *,
        state: CleanState | None = None,
        files: FdCache = DEFAULT_CACHE,
    ) -> PartitionLog:
        """Open (creating if needed) the log in ``directory``: from ``state`` without reading any
        file, else from the directory, recovering after an unclean stop (see :mod:`.loader`)."""
        config = config or LogConfig()
        loaded = load(directory, config, clock, files, state)
        log = cls(directory, config, loaded.segments, loaded.log_start_offset, clock, loaded.report)
        if state is None:
            state = loaded.recorded  # a clean close's own marker (a log opened on its own)
        if state is not None:
            log._producers_at = state.producers  # loaded on first use, if there is anything
            if state.ongoing_txns:
                log.producer_state()  # the LSO depends on it from the start
        elif loaded.report.recovered_from >= 0:
            # After a crash, in the opening thread: the newest snapshot from before the segments
            # recovery walked, then the headers after it, rebuilding those segments'
            # aborted-transactions index on the way; only then may the recovery point move.
            log._producers_at = None
            start = loaded.report.recovered_from
            since = log._producers.load_newest(start, log.log_end_offset)
            active = log.active_segment.base_offset
            if since is None or since < active:
                # A snapshot at the active segment's base first, as the roll that sealed the
                # walked segments would have written had the crash not come first: once the
                # recovery point moves there, retention may delete them, and a later crash
                # would replay from an older snapshot without their producers.
                log._replay_producers(since, rebuild_txn_index_from=start, until=active)
                log._snapshot_producers(active)
                since = active
            log._replay_producers(since, rebuild_txn_index_from=start)
            log._finish_recovery()
        elif log.log_end_offset > log.segments[0].base_offset:
            # Opened from the files of a clean stop (another layout, or a log opened on its
            # own): the newest snapshot, then the headers after it (below the log start too).
            log._producers_at = None
            since = log._producers.load_newest(log.log_end_offset)
            if since != log.log_end_offset:
                log._replay_producers(since)
        return log

    def _finish_recovery(self) -> None:
        """Write the aborted-transactions index of the sealed segments recovery walked, then
        move the recovery point to the active segment (or to the first of them whose index
        could not be written: the next recovery rebuilds it)."""
        for seg in self._segments[:-1]:
            try:
                seg.save_txn_index()
            except OSError as exc:
                log.warning("could not save the transaction index of %s: %s", seg.log_path, exc)
        self._save_recovery_point(self.active_segment.base_offset, self._segments[:-1])

    def _save_recovery_point(self, offset: int, check: Iterable[LogSegment]) -> None:
        """Best effort, like the index files: an old recovery point only makes the next recovery
        walk further. Never past a segment of ``check`` whose transaction index is not saved."""
        unsaved = [seg.base_offset for seg in check if not seg.txn_saved]
        if unsaved:
            offset = min(offset, *unsaved)
        path = self.directory / RECOVERY_POINT_FILE
        try:
            if read_int(path, -1) != offset:
                write_int(path, offset)
        except OSError as exc:
            log.warning("could not save the recovery point of %s: %s", self.name, exc)

    @classmethod
    def create(
        cls,
        directory: Path,
        config: LogConfig,
        clock: Clock = wall_clock_ms,
        *,
        files: FdCache = DEFAULT_CACHE,
    ) -> PartitionLog:
        """A new, empty log in an existing empty ``directory``, without any I/O: its first
        segment's file is created by the first append."""
        segment = LogSegment(
            directory,
            0,
            index_interval_bytes=config.index_interval_bytes,
            max_index_bytes=config.segment_index_bytes,
            created_ms=clock(),
            files=files,
            exists=False,
        )
        segment.fresh_indexes()
        segment.fresh_txn_index()
        return cls(directory, config, [segment], 0, clock, RecoveryReport(clean=True))

    # -- state -----------------------------------------------------------------------------------

    @property
    def segments(self) -> Sequence[LogSegment]:
        return self._segments

    @property
    def active_segment(self) -> LogSegment:
        return self._segments[-1]

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    @property
    def closed(self) -> bool:
        return self._closed

    def add_high_watermark_listener(self, callback: Callable[[], None]) -> None:
        """Called (on the owner's thread) whenever the high watermark advances: for long polls."""
        self._hw_listeners.append(callback)

    def remove_high_watermark_listener(self, callback: Callable[[], None]) -> None:
        self._hw_listeners.remove(callback)

    def wake_listeners(self) -> None:
        """The log is going away (its topic deleted): long polls waiting on it look again now,
        and find the topic gone (or recreated, a new log), as Kafka completes the delayed
        fetches of a partition it stops; else they would wait out their max_wait_ms on a log
        that will never move."""
        for callback in list(self._hw_listeners):
            callback()

    def update_config(self, config: LogConfig) -> None:
        was_fsynced = self.config.append_ack is AckLevel.FSYNCED
        self.config = config
        for seg in self._segments:
            seg.index_interval_bytes = config.index_interval_bytes
        if was_fsynced and config.append_ack is not AckLevel.FSYNCED:
            self._advance_high_watermark(
                self.log_end_offset, self.active_segment, self.active_segment.size
            )

    def check_open(self) -> None:
        if self._closed:
            raise LogClosedError(f"log {self.name} is closed")

    # -- appending -------------------------------------------------------------------------------

    def reserve(
        self,
        data: bytes | bytearray | memoryview,
        ack: AckLevel | None = None,
        txn_check: TxnCheck | None = None,
    ) -> Reservation:
        """Validate ``data`` (one or more whole batches) and assign its offsets, patching in place.

        Raises a typed error (CorruptRecordError, InvalidRecordError, RecordTooLargeError, and the
        idempotent producer's OutOfOrderSequenceError, InvalidProducerEpochError,
        UnknownProducerIdError) and changes nothing if any batch is bad. A writable buffer is
        patched and kept, not copied: the caller hands it over. A batch an idempotent producer
        already appended is not reserved again: the reservation names the original. Any other
        transactional batch is first put to ``txn_check`` (if given), whose error refuses it.
        """
        self.check_open()
        if self._fenced is not None:
            raise self._fenced
        view = memoryview(data)
        if view.readonly:
            view = memoryview(bytearray(view))
        headers = scan_batches(view, max_batch_bytes=self.config.max_message_bytes)
        ack = ack or self.config.append_ack
        idempotent = is_idempotent(headers[0])
        if idempotent or len(headers) > 1:
            require_single_batch(headers)
        if idempotent:
            duplicate = self.producer_state().check(headers[0])
            if duplicate is not None:
                base = duplicate.first_offset
                return Reservation(view, [], base, base, 0, ack, duplicate=duplicate)
            if txn_check is not None and headers[0].attributes & TRANSACTIONAL_BIT:
                txn_check(headers[0].producer_id, headers[0].producer_epoch)
        base = self._next_offset
        next_offset = assign_offsets(view, headers, base)
        patched = []
        offset = base
        for h in headers:
            patched.append(h._replace(base_offset=offset))
            offset += h.last_offset_delta + 1
        self._next_offset = next_offset
        reservation = Reservation(
            view, patched, base, next_offset, sum(h.records_count for h in headers), ack
        )
        if idempotent:
            state = self.producer_state()
            reservation.producer_batch = state.record(headers[0], base, reservation.undo)
            self._pending_producers.append(reservation)
        return reservation

    def reserve_marker(
        self,
        producer_id: int,
        producer_epoch: int,
        coordinator_epoch: int | None,
        commit: bool,
        ack: AckLevel | None = None,
    ) -> Reservation:
        """Build the COMMIT or ABORT marker ending ``producer_id``'s transaction and give it its
        offset (the broker's own control batch: nothing to validate but the producer's epochs).
        Raises InvalidProducerEpochError or TransactionCoordinatorFencedError, changing nothing.
        ``coordinator_epoch`` None: this node's own coordinator (see ProducerState.check_marker)."""
        self.check_open()
        if self._fenced is not None:
            raise self._fenced
        state = self.producer_state()
        coordinator_epoch = state.check_marker(producer_id, producer_epoch, coordinator_epoch)
        base = self._next_offset
        now = self.clock()
        batch = bytearray(
            build_marker(producer_id, producer_epoch, coordinator_epoch, commit, timestamp=now, base_offset=base)
        )
        header = read_header(batch)
        self._next_offset = base + 1
        reservation = Reservation(memoryview(batch), [header], base, base + 1, 1, ack or self.config.append_ack)
        reservation.aborted = state.end_txn(
            producer_id, producer_epoch, Marker(commit, coordinator_epoch), base, now, reservation.undo
        )
        self._pending_producers.append(reservation)
        return reservation

    # -- producer state ----------------------------------------------------------------------------

    def producer_state(self) -> ProducerState:
        """The idempotent producers' state, loaded on first use after a clean open (one small
        snapshot read; nothing at all for a partition that had none)."""
        at = self._producers_at
        if at is not None:
            if at >= 0:
                try:
                    loaded = self._producers.load_newest(at)
                    if loaded != at:
                        self._replay_producers(loaded)
                except OSError as exc:
                    # Nothing half loaded is kept: the next use loads it again.
                    self._producers = ProducerState(self.directory, self._producers.expiration_ms)
                    raise StorageError(f"loading the producer state of {self.name} failed: {exc}") from exc
            self._producers_at = None
        return self._producers

    def _replay_producers(
        self, since: int | None, *, rebuild_txn_index_from: int = -1, until: int | None = None
    ) -> None:
        """Rebuild from batch headers after the snapshot (``since``) or, without one, from the
        first batch the segments hold (and the one record of each marker). From
        ``rebuild_txn_index_from`` on (if not -1), the aborted-transactions index entries the
        markers make are added to their segments. ``until``: only the batches before it.

        Not from the log start offset: DeleteRecords moves it inside a segment without
        touching the producer state, and the batches below it, still in the file, are then
        the only record of their producers (replaying from the log start forgot an idempotent
        producer after a crash: its next batch was refused UNKNOWN_PRODUCER_ID)."""
        start = self._segments[0].base_offset if since is None else since
        rebuild = rebuild_txn_index_from >= 0

        def add(entry: AbortedTxn) -> None:
            if entry.last_offset >= rebuild_txn_index_from:
                self._segment_of(entry.last_offset).add_aborted_txn(entry)

        self._producers.replay(self._batches_from(start, until), add if rebuild else None)
        self._producers.changed = True

    def _snapshot_producers(self, offset: int) -> None:
        """Best effort (a full disk: a warning, and a later crash replays from an older one):
        the loaded producer state, which must be the state as of ``offset``, if it has any."""
        if not self._producers.producers:
            return
        try:
            self._producers.snapshot(offset, keep=offset)
        except OSError as exc:
            log.warning("could not save the producer state of %s at %d: %s", self.name, offset, exc)

    def _batches_from(
        self, start: int, until: int | None = None
    ) -> Iterator[tuple[BatchHeader, Marker | None]]:
        """Headers of the batches from ``start`` on (and before ``until``), each control batch
        with its marker."""
        i = max(0, bisect_right(self._bases, start) - 1)
        for seg in self._segments[i:]:
            if until is not None and seg.base_offset >= until:
                return
            position = seg.scan_position(max(start, seg.base_offset))
            for header in seg.iter_batches(position):
                if until is not None and header.base_offset >= until:
                    return
                if header.base_offset < start:
                    continue
                marker = None
                if header.is_control:
                    marker = read_marker(header, seg.pread(header.position, header.size))
                yield header, marker

    def _segment_of(self, offset: int) -> LogSegment:
        return self._segments[max(0, bisect_right(self._bases, offset) - 1)]

    def _committed_producers(self, as_of: int | None = None) -> dict[int, ProducerEntry]:
        """The producer state without what pending (reserved, unwritten) batches added: the
        state as of the committed log end (or of offset ``as_of``, a batch boundary at or
        below it, for the snapshot of a roll: pending reservations from there on are taken
        out too)."""
        state = self._producers
        view = dict(state.producers)
        for reservation in reversed(self._pending_producers):
            if as_of is not None and reservation.base_offset < as_of:
                break
            for pid, before in reversed(reservation.undo):
                if before is None:
                    view.pop(pid, None)
                else:
                    view[pid] = before
        return view

    def _forget_pending(self, committed: Sequence[Reservation]) -> None:
        done = {id(r) for r in committed}
        while self._pending_producers and id(self._pending_producers[0]) in done:
            reservation = self._pending_producers.popleft()
            reservation.undo.clear()
            if reservation.aborted is not None:
                self._segment_of(reservation.base_offset).add_aborted_txn(reservation.aborted)

    def _revert_pending(self) -> None:
        """The pending batches will never be written: undo what they did to the state."""
        while self._pending_producers:
            self._producers.revert(self._pending_producers.pop().undo)
        self._producers.forget_unwritten(self.log_end_offset)

    def plan(self, items: list[Reservation]) -> WritePlan:
        """Decide where every reserved byte goes, rolling segments where the config says."""
        segment = self.active_segment
        position = segment.size
        write = _SegmentWrite(segment, position)
        writes = [write]
        new_segments: list[LogSegment] = []
        rolled: list[LogSegment] = []
        for item in items:
            size = len(item.buffer)
            if self._should_roll(segment, position, size, item.next_offset):
                rolled.append(segment)
                segment = self._new_segment(item.base_offset)
                new_segments.append(segment)
                position = 0
                write = _SegmentWrite(segment, 0)
                writes.append(write)
            write.buffers.append(item.buffer)
            for h in item.headers:
                write.batches.append((h, position + h.position))
            write.size += size
            position += size
        written = [p for p in writes if p.size]
        creates = [p.segment for p in written if not p.segment.exists]
        return WritePlan(items, written, new_segments, rolled, creates)

    def _new_segment(self, base_offset: int) -> LogSegment:
        """A segment to roll to (its file is created by whoever writes it first)."""
        active = self.active_segment
        segment = LogSegment(
            self.directory,
            base_offset,
            index_interval_bytes=self.config.index_interval_bytes,
            max_index_bytes=self.config.segment_index_bytes,
            created_ms=self.clock(),
            files=active._files,
            exists=False,
        )
        segment.fresh_indexes()
        segment.fresh_txn_index()
        return segment

    def _should_roll(self, segment: LogSegment, position: int, size: int, next_offset: int) -> bool:
        if position == 0:
            return False
        return (
            position + size > self.config.segment_bytes
            or self.clock() - segment.created_ms >= self.config.roll_ms
            or segment.indexes_full()
            or next_offset - 1 - segment.base_offset > _MAX_RELATIVE_OFFSET
        )

    @staticmethod
    def execute(plan: WritePlan) -> None:
        """The I/O of a plan. Thread-safe with respect to readers: it touches files only."""
        for seg in plan.creates:
            seg.create_file()
        if plan.creates:
            fsync_dir(plan.creates[0].directory)
        for seg in plan.rolled:
            # Before any byte is written: its seal must not fail for want of a descriptor
            # once the appends are in (pinned, it stays open until sealed).
            seg.ensure_open()
        for write in plan.writes:
            write.segment.write_at(write.position, write.buffers)  # type: ignore[arg-type]

    def commit(self, plan: WritePlan) -> None:
        """Publish a plan whose bytes are written."""
        for write in plan.writes:
            seg = write.segment
            for header, position in write.batches:
                seg.note_appended(header, position)
            seg.size = write.position + write.size
        if plan.new_segments:
            plan.new_segments[-1].pin()
            self._segments.extend(plan.new_segments)
            self._bases.extend(s.base_offset for s in plan.new_segments)
        self._dirty = True
        self.log_end_offset = plan.next_offset
        if plan.rolled:
            for seg in plan.rolled:  # here, on the owner's thread: the seal may run in another
                seg.complete_time_index()
            base = plan.new_segments[-1].base_offset
            if self._producers_at is None:
                # Copies: the snapshot is written in the writer's thread while appends go on.
                producers = self._committed_producers(as_of=base)
                plan.snapshot = (base, {pid: entry.copy() for pid, entry in producers.items()})
            plan.txn_retry = [seg for seg in self._segments[:-1] if not seg.txn_saved and seg not in plan.rolled]
        if self._pending_producers:
            self._forget_pending(plan.items)
        records = plan.records
        self.unflushed_records += records
        self.appended_records += records
        self.appended_bytes += sum(write.size for write in plan.writes)
        if self.config.append_ack is not AckLevel.FSYNCED:
            self._advance_high_watermark(
                self.log_end_offset, self.active_segment, self.active_segment.size
            )

    def abort(self, plan: WritePlan) -> None:
        """Undo a plan whose execute failed: cut files back to committed sizes, forget offsets
        reserved after the committed end (the writer fails those appends)."""
        for write in plan.writes:
            if write.segment in plan.new_segments:
                continue
            # Best effort: later writes go to explicit positions and recovery truncates tails.
            with contextlib.suppress(OSError):
                write.segment.truncate_file(write.segment.size)
        for seg in plan.new_segments:
            with contextlib.suppress(OSError):
                seg.delete()
        for seg in plan.creates:
            if seg not in plan.new_segments and seg.size == 0:
                seg.exists = False  # created again by the next write (creating is idempotent)
        self._revert_pending()
        self._next_offset = self.log_end_offset

    def reset_reservations(self) -> None:
        """Forget reservations that will never be written (their appends were failed)."""
        self._revert_pending()
        self._next_offset = self.log_end_offset

    def seal_rolled(self, plan: WritePlan) -> None:
        """Make segments that stopped being active durable, then move the recovery point past
        them. Any thread: rolled segments' state no longer changes."""
        for seg in plan.rolled:
            seg.seal()
        for seg in plan.txn_retry:
            try:
                seg.save_txn_index()
            except OSError as exc:
                log.warning("could not save the transaction index of %s: %s", seg.log_path, exc)
        if plan.snapshot is not None:
            offset, producers = plan.snapshot
            try:
                write_producer_snapshot(self.directory, offset, producers)
            except OSError as exc:
                # Best effort too: without it a crash replays from an older snapshot, while
                # failing would leave the segment unsealed (retention stuck behind it).
                log.warning("could not save the producer state of %s at %d: %s", self.name, offset, exc)
        if plan.rolled:
            # Best effort, like the index files: an old recovery point only makes the next
            # recovery walk further, while failing here would leave the segments unsealed, and
            # retention never deletes past an unsealed segment (on the disk that just filled).
            self._save_recovery_point(plan.new_segments[-1].base_offset, [*plan.txn_retry, *plan.rolled])

    def mark_sealed(self, plan: WritePlan) -> None:
        for seg in plan.rolled:
            seg.sealed = True
            seg.unpin()

    def append(
        self,
        data: bytes | bytearray | memoryview,
        ack: AckLevel | None = None,
        txn_check: TxnCheck | None = None,
    ) -> int:
        """Append inline, in the caller: validate, assign offsets, write; fsync if ``ack`` (default
        the topic's) is ``fsynced`` or ``flush.messages`` is reached. Returns the first offset.

        The only inline path: :class:`~sluice.storage.partition.Partition` uses it in ``inline``
        mode, and tools and tests that own a log use it directly."""
        reservation = self.reserve(data, ack, txn_check)
        if reservation.duplicate is not None:  # inline: the original was written before it
            return reservation.base_offset
        return self._append_reserved(reservation)

    def append_marker(
        self, producer_id: int, producer_epoch: int, coordinator_epoch: int | None, commit: bool
    ) -> int:
        """Append a transaction marker inline and fsync it (see :meth:`reserve_marker`)."""
        return self._append_reserved(
            self.reserve_marker(producer_id, producer_epoch, coordinator_epoch, commit, AckLevel.FSYNCED)
        )

    def _append_reserved(self, reservation: Reservation) -> int:
        try:
            self.write_inline([reservation])
        except StorageError:
            self.reset_reservations()  # the producer state forgets the failed batch
            raise
        if reservation.ack is AckLevel.FSYNCED or self.flush_due():
            self.flush()
        return reservation.base_offset

    def write_inline(self, items: list[Reservation]) -> None:
        try:
            plan = self.plan(items)  # may read a segment (its indexes rebuilt on first use)
        except OSError as exc:
            raise StorageError(f"write to {self.name} failed: {exc}") from exc
        try:
            self.execute(plan)
        except OSError as exc:
            self.abort(plan)
            self.disk.failed(exc, f"writing to {self.name}")
            raise StorageError(f"write to {self.name} failed: {exc}") from exc
        self.disk.succeeded()
        self.commit(plan)
        if plan.rolled:
            try:
                self.seal_rolled(plan)
            except OSError as exc:
                error = StorageError(f"sealing a segment of {self.name} failed: {exc}")
                self.sync_failed(exc, error)
                raise error from exc
            self.mark_sealed(plan)

    # -- flushing --------------------------------------------------------------------------------

    def flush_due(self) -> bool:
        cfg = self.config
        if self.unflushed_records == 0 or self._fenced is not None:
            return False
        if cfg.flush_messages > 0 and self.unflushed_records >= cfg.flush_messages:
            return True
        return cfg.flush_ms >= 0 and self.clock() - self.last_flush_ms >= cfg.flush_ms

    def sync_point(self) -> tuple[int, LogSegment, int, int]:
        """What an fsync started now will cover: (end offset, segment, position, records)."""
        seg = self.active_segment
        return self.log_end_offset, seg, seg.size, self.unflushed_records

    def sealing_segments(self) -> list[LogSegment]:
        """Segments rolled but not yet sealed (their fsync may still be running in the writer):
        a group commit must sync them too before it acknowledges up to the log end."""
        return [seg for seg in self._segments[:-1] if not seg.sealed]

    def mark_flushed(self, offset: int, segment: LogSegment, position: int, records: int) -> None:
        self.flushed_offset = max(self.flushed_offset, offset)
        self.flush_count += 1
        self.unflushed_records = max(0, self.unflushed_records - records)
        self.last_flush_ms = self.clock()
        if self.config.append_ack is AckLevel.FSYNCED:
            self._advance_high_watermark(offset, segment, position)

    def flush(self) -> None:
        """fsync everything committed so far, in the caller's thread."""
        if self._fenced is not None:
            raise self._fenced
        offset, seg, position, records = self.sync_point()
        try:
            self.fsync_times.time(seg.fsync)
        except OSError as exc:
            self.disk.failed(exc, f"syncing {self.name}")
            error = StorageError(f"fsync of {self.name} failed: {exc}")
            self.sync_failed(exc, error)
            raise error from exc
        self.mark_flushed(offset, seg, position, records)

    def sync_failed(self, exc: OSError, error: StorageError) -> bool:
        """A sync (or seal) raised ``exc``: fence (and say so), unless the file could not even be
        opened for it (DescriptorError: out of descriptors, the log closing), which loses no
        written byte; the next sync covers those bytes, as ever."""
        if isinstance(exc, DescriptorError):
            return False
        self.fence(error)
        return True

    def fence(self, error: StorageError) -> None:
        """An fsync failed. The kernel reports a lost writeback once and then forgets it, so a
        later fsync that succeeds proves nothing about the bytes the failed one covered (their
        pages may be gone): acknowledging appends made after them as durable, or moving the
        high watermark past them, could promise what is not on disk. So, as Kafka takes a log
        directory offline, appends are refused from now on (reads go on), and a clean close
        records no state, so the next start recovers the log from its files."""
        if self._fenced is not None:
            return
        log.error("%s; %s refuses appends until the broker restarts", error, self.name)
        self._fenced = StorageError(f"partition {self.name} refuses appends after a failed fsync ({error})")
        self.mark_unclean(f"an fsync failed ({error})")

    @property
    def fenced(self) -> StorageError | None:
        """Why appends are refused after a failed fsync; None if they are not."""
        return self._fenced

    def _advance_high_watermark(self, offset: int, segment: LogSegment, position: int) -> None:
        if offset < self.high_watermark:
            return
        self.high_watermark = offset
        self._hw_segment = segment
        self._hw_position = position
        if self._producers.unreplicated:
            self._producers.on_high_watermark(offset)
        for callback in list(self._hw_listeners):
            callback()

    # -- transactions: the last stable offset --------------------------------------------------

    @property
    def last_stable_offset(self) -> int:
        """The first offset not yet decided (Kafka's LSO): the first offset of the earliest
        transaction still open (or ended by a marker not yet below the high watermark), never
        below the log start; the high watermark when there is none."""
        first = self._producers.first_unstable
        hw = self.high_watermark
        if first is None or first >= hw:
            return hw
        start = self.log_start_offset
        return first if first > start else start

    def _stable_position(self, lso: int) -> tuple[LogSegment, int]:
        """Where a read_committed read stops: the segment and position of the batch holding
        ``lso`` (below the high watermark), cached while the LSO stays."""
        cached = self._stable_cache
        if cached is not None and cached[0] == lso:
            return cached[1], cached[2]
        seg = self._segment_of(lso)
        end = self._hw_position if seg is self._hw_segment else seg.size
        header = seg.find_batch(lso, end)
        position = end if header is None else header.position
        self._stable_cache = (lso, seg, position)
        return seg, position

    # -- reading ---------------------------------------------------------------------------------

    def read(self, offset: int, max_bytes: int) -> FileSlice | None:
        """Bytes from the start of the batch holding ``offset``: at most ``max_bytes`` unless the
        first batch alone is bigger (a consumer must always make progress). ``None`` at the high
        watermark; OffsetOutOfRangeError outside [log start, high watermark]."""
        self.check_open()
        if offset < self.log_start_offset or offset > self.high_watermark:
            raise OffsetOutOfRangeError(
                f"offset {offset} is outside [{self.log_start_offset}, {self.high_watermark}]"
            )
        if offset == self.high_watermark:
            return None
        try:
            return self._read(offset, max_bytes)
        except OSError as exc:
            raise StorageError(f"reading {self.name} at offset {offset} failed: {exc}") from exc

    def _read(self, offset: int, max_bytes: int) -> FileSlice | None:
        i = max(0, bisect_right(self._bases, offset) - 1)
        for seg in self._segments[i:]:
            end = self._hw_position if seg is self._hw_segment else seg.size
            header = seg.find_batch(offset, end)
            if header is not None:
                length = min(end - header.position, max(max_bytes, header.size))
                return FileSlice(seg, header.position, length, header.base_offset)
            if seg is self._hw_segment:
                return None
        return None

    def read_committed(self, offset: int, max_bytes: int) -> tuple[FileSlice | None, list[AbortedTxn]]:
        """A read_committed read (Kafka's TXN_COMMITTED isolation): as :meth:`read`, but only
        below the last stable offset (``None`` at or past it), with the aborted transactions
        overlapping what is returned, from ``offset`` up to the first offset the sparse index
        places past its end (Kafka's bound), for the consumer to drop their records."""
        self.check_open()
        if offset < self.log_start_offset or offset > self.high_watermark:
            raise OffsetOutOfRangeError(
                f"offset {offset} is outside [{self.log_start_offset}, {self.high_watermark}]"
            )
        lso = self.last_stable_offset
        if offset >= lso:
            return None, []
        try:
            if lso == self.high_watermark:
                stop, stop_position = self._hw_segment, self._hw_position
            else:
                stop, stop_position = self._stable_position(lso)
            found = self._read_until(offset, max_bytes, stop, stop_position)
            if found is None:
                return None, []
            return found, self.aborted_txns(offset, self._upper_bound(found))
        except OSError as exc:
            raise StorageError(f"reading {self.name} at offset {offset} failed: {exc}") from exc

    def _read_until(self, offset: int, max_bytes: int, stop: LogSegment, stop_position: int) -> FileSlice | None:
        i = max(0, bisect_right(self._bases, offset) - 1)
        for seg in self._segments[i:]:
            end = stop_position if seg is stop else seg.size
            header = seg.find_batch(offset, end)
            if header is not None:
                length = min(end - header.position, max(max_bytes, header.size))
                return FileSlice(seg, header.position, length, header.base_offset)
            if seg is stop:
                return None
        return None

    def _upper_bound(self, found: FileSlice) -> int:
        """The first offset the offset index places at or past the end of ``found``; else the
        next segment's base offset, or the log end (Kafka's fetchUpperBoundOffset)."""
        seg = found.segment
        index = seg.index
        i = bisect_left(index.positions, found.position + found.length)
        if i < len(index):
            return seg.base_offset + index.offsets[i]
        j = bisect_right(self._bases, seg.base_offset)
        return self._bases[j] if j < len(self._bases) else self.log_end_offset

    def aborted_txns(self, start: int, upper: int) -> list[AbortedTxn]:
        """The aborted transactions overlapping [start, upper): the index entries of the
        segment holding ``start`` and after, until one's LSO reaches ``upper``. Raises OSError
        if an index file is unreadable."""
        out: list[AbortedTxn] = []
        i = max(0, bisect_right(self._bases, start) - 1)
        for seg in self._segments[i:]:
            if collect(seg.aborted_txns, start, upper, out):
                break
        return out

    def read_bytes(self, offset: int, max_bytes: int) -> bytes:
        found = self.read(offset, max_bytes)
        return b"" if found is None else found.read()

    def _visible_batches(self, start_offset: int) -> list[tuple[LogSegment, int]]:
        """(segment, end position) pairs a search may walk, from the segment holding start."""
        i = max(0, bisect_right(self._bases, start_offset) - 1)
        out = []
        for seg in self._segments[i:]:
            out.append((seg, self._hw_position if seg is self._hw_segment else seg.size))
            if seg is self._hw_segment:
                break
        return out

    async def offset_for_timestamp(
        self, timestamp: int, *, max_block: int = DEFAULT_MAX_UNCOMPRESSED
    ) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record at or after ``timestamp``, or None.

        The indexes give where to look on the owner's thread; the batch headers from there are
        read in the loop's default executor (where DeleteRecords cut into a segment, the batch
        that gave it its largest timestamp may be gone, and the walk may cross the whole
        segment), then the candidate batch's records, since a compressed batch may inflate to
        gigabytes (see :meth:`_search_batch`)."""
        after = self.log_start_offset
        while True:
            self.check_open()
            try:
                candidate = await self._timestamp_candidate(timestamp, after)
                if candidate is None:
                    return None
                seg, header, start = candidate
                found = await self._search_batch(
                    seg, header, functools.partial(_at_or_after, timestamp, start), max_block
                )
            except _Retired:
                continue  # a cleaning swap or retention changed the segments: again, over the new
            if found is not None:
                return found
            # Only a batch whose header lies about its max timestamp gets here: search on.
            after = header.next_offset

    async def _timestamp_candidate(
        self, timestamp: int, after: int
    ) -> tuple[LogSegment, BatchHeader, int] | None:
        """The first visible batch at or past offset ``after`` whose header says it may hold a
        record at or after ``timestamp``, with the offset its search starts from."""
        for seg, end in self._visible_batches(max(after, self.log_start_offset)):
            if seg.retired:  # replaced or deleted while this search awaited
                raise _Retired
            try:
                _ = seg.time_index  # closed segments load lazily; this fills max_timestamp
                if seg.max_timestamp < timestamp:
                    continue
                start = max(seg.time_scan_start(timestamp), self.log_start_offset, after)
                position = seg.scan_position(start)
            except OSError as exc:
                raise StorageError(f"searching {self.name} by timestamp failed: {exc}") from exc
            if position + HEADER_SIZE > end:
                continue  # nothing visible from there (an empty segment has no file yet)
            header = await _on_leased_fd(seg, _first_header_at, position, end, start, timestamp)
            if header is not None:
                return seg, header, start
        return None

    async def max_timestamp_offset(
        self, *, max_block: int = DEFAULT_MAX_UNCOMPRESSED
    ) -> tuple[int, int] | None:
        """(offset, timestamp) of the visible record with the largest timestamp, the first such
        if several share it (ListOffsets -3); None if no record has a timestamp.

        Only records in [log start, high watermark) count: the segments' recorded maxima are
        bounds, exact for a segment wholly inside; where DeleteRecords cut into a segment (or
        the high watermark does), the record holding its maximum may be gone (or not yet
        visible), and that segment's visible part is searched (headers, then the records of
        at most two batches, in the loop's default executor)."""
        while True:
            self.check_open()
            try:
                bounds = self._timestamp_bounds()
            except OSError as exc:
                raise StorageError(f"finding the max timestamp of {self.name} failed: {exc}") from exc
            best: tuple[int, int] | None = None  # (offset, timestamp)
            try:
                for bound, _, seg, end in bounds:
                    if best is not None and bound < best[1]:
                        break  # no later candidate can beat it (equal ones come in offset order)
                    found = await self._segment_max_timestamp(seg, end, max_block)
                    if found is not None and (
                        best is None or found[1] > best[1] or (found[1] == best[1] and found[0] < best[0])
                    ):
                        best = found
            except _Retired:
                continue  # a cleaning swap or retention changed the segments: again, over the new
            return best

    def _timestamp_bounds(self) -> list[tuple[int, int, LogSegment, int]]:
        """(recorded max timestamp, base offset, segment, visible end) of each visible segment
        with timestamps, largest first, then by offset."""
        out = []
        for seg, end in self._visible_batches(self.log_start_offset):
            _ = seg.time_index  # closed segments load lazily; this fills max_timestamp
            if seg.max_timestamp >= 0:
                out.append((seg.max_timestamp, seg.base_offset, seg, end))
        out.sort(key=lambda c: (-c[0], c[1]))
        return out

    async def _segment_max_timestamp(
        self, seg: LogSegment, end: int, max_block: int
    ) -> tuple[int, int] | None:
        """The first visible record of ``seg`` (up to byte ``end``) with its largest visible
        timestamp."""
        if seg.retired:  # replaced or deleted while this search awaited
            raise _Retired
        start = self.log_start_offset
        offset, max_ts = seg.offset_of_max_timestamp, seg.max_timestamp
        if start <= offset < self.high_watermark:
            try:
                header = seg.find_batch(offset, end)
            except OSError as exc:
                raise StorageError(f"reading {seg.log_path} failed: {exc}") from exc
            if header is not None and header.base_offset >= start:
                found = await self._search_batch(seg, header, lambda _o, t: t == max_ts, max_block)
                return found if found is not None else (offset, max_ts)
        # The recorded maximum is below the log start or past the high watermark: search.
        try:  # the index entry's check reads the log
            position = seg.scan_position(max(start, seg.base_offset))
        except OSError as exc:
            raise StorageError(f"reading {seg.log_path} failed: {exc}") from exc
        return await _on_leased_fd(seg, _max_stamp_at, position, end, start, max_block)

    @staticmethod
    async def _search_batch(
        seg: LogSegment, header: BatchHeader, match: Callable[[int, int], bool], max_block: int
    ) -> tuple[int, int] | None:
        """The first (offset, timestamp) of ``header``'s batch that ``match`` accepts.

        Runs in the loop's default executor: the batch is read with the segment's fd leased for
        the duration, and its records streamed with a fixed buffer (keys, values and headers
        skipped unread), stopping at the first match, so neither memory nor the event loop
        depends on how far the batch inflates."""
        return await _on_leased_fd(
            seg, _search_batch_at, header.position, header.size, match, max_block
        )

    # -- retention -------------------------------------------------------------------------------

    def apply_retention(self) -> int:
        """Delete whole closed segments past ``retention.ms`` / ``retention.bytes`` (when the
        cleanup policy includes ``delete``) or wholly below the log start offset; returns how
        many were deleted. An active segment whose newest record is past ``retention.ms`` is
        rolled first, as Kafka does, so an idle partition does not keep expired data until
        ``segment.ms``. A segment the log cleaner left empty goes with the segment after it, or
        not at all (it says nothing about its age); segments a cleaning run holds stay."""
        self.check_open()
        cfg = self.config
        now = self.clock()
        by_policy = cfg.cleanup_policy.delete
        if by_policy and self._active_segment_expired(now):
            self._roll_empty()
        total = self.size_bytes
        deletable = 0
        i = 0
        while i < len(self._segments) - 1:
            seg = self._segments[i]
            if not seg.sealed or seg.cleaning or seg.next_offset > self.high_watermark:
                break  # never past the high watermark (Kafka's rule)
            below_start = seg.next_offset <= self.log_start_offset
            if not below_start and seg.size:
                if not by_policy:
                    break
                if seg.max_timestamp < 0:
                    _ = seg.time_index  # not known from a clean-shutdown state: load it
                expired = (
                    cfg.retention_ms >= 0
                    and seg.max_timestamp >= 0
                    and now - seg.max_timestamp > cfg.retention_ms
                )
                too_big = cfg.retention_bytes >= 0 and total - seg.size >= cfg.retention_bytes
                if not (expired or too_big):
                    break
            elif not below_start and not by_policy:
                break
            total -= seg.size
            i += 1
            if seg.size or below_start:
                deletable = i
        for _ in range(deletable):
            self._delete_first_segment()
        if deletable:
            self.log_start_offset = max(self.log_start_offset, self._segments[0].base_offset)
            try:
                self._save_log_start_offset()
            except StorageError as exc:
                # The segments are gone: the next open finds the start from the first one left.
                log.warning("%s; the next start finds it from the segments", exc)
        return deletable

    def _active_segment_expired(self, now: int) -> bool:
        """Expired, and nothing is on its way into it: no reserved-but-uncommitted appends (the
        writer task may be writing them) and every record visible (the high watermark at the
        end), so rolling here cannot race a write or hide an unflushed record."""
        active = self.active_segment
        if self.config.retention_ms < 0 or active.size == 0:
            return False
        if self._next_offset != self.log_end_offset or self.high_watermark != self.log_end_offset:
            return False
        if active.max_timestamp < 0:
            _ = active.time_index
        return active.max_timestamp >= 0 and now - active.max_timestamp > self.config.retention_ms

    def _roll_empty(self) -> None:
        """Seal the active segment, then start a new, empty one at the log end. In that order:
        a new file created before a seal that fails would stay on disk but not in memory, and
        appends going on into the old segment would overlap it (recovery cut the log there).
        A failed seal fences the log, as a failed seal after an append does."""
        old = self.active_segment
        if self._producers_at is None:
            # As a roll through the writer does: the producer state as of the new segment's
            # base, before the recovery point moves there and retention deletes the old one,
            # whose batch headers are otherwise the only record of the producers that wrote
            # them since the last snapshot (a crash then rebuilt an older state: an idempotent
            # producer's next batch was refused OUT_OF_ORDER_SEQUENCE_NUMBER, and a retry of
            # one already appended was taken again). Nothing is pending (see the caller).
            try:
                self._producers.snapshot(self.log_end_offset, keep=self.log_end_offset)
            except OSError as exc:
                log.warning(
                    "could not save the producer state of %s at %d: %s; not rolling its expired "
                    "active segment", self.name, self.log_end_offset, exc,
                )
                return
        try:
            old.seal()
        except OSError as exc:
            error = StorageError(f"sealing a segment of {self.name} failed: {exc}")
            self.sync_failed(exc, error)
            raise
        new = self._new_segment(self.log_end_offset)
        try:
            new.create_file()
            fsync_dir(self.directory)
        except OSError:
            with contextlib.suppress(OSError):
                new.delete()  # else recovery skips it: empty, inside the old segment's range
            raise
        old.sealed = True
        new.pin()
        old.unpin()
        self._segments.append(new)
        self._bases.append(new.base_offset)
        self._dirty = True
        self._save_recovery_point(new.base_offset, self._segments[:-1])

    def delete_records(self, before_offset: int) -> int:
        """Advance the log start offset to ``before_offset`` (-1: the high watermark), deleting
        segments wholly below it. Returns the new log start offset."""
        self.check_open()
        target = self.high_watermark if before_offset == -1 else before_offset
        if target < 0 or target > self.high_watermark:
            raise OffsetOutOfRangeError(
                f"cannot delete records before {before_offset}: high watermark is {self.high_watermark}"
            )
        if target > self.log_start_offset:
            self._save_log_start_offset(target)  # first: a failure (a full disk) changes nothing
            self.log_start_offset = target
            while (
                len(self._segments) > 1
                and self._segments[0].next_offset <= target
                and self._segments[0].sealed
                and not self._segments[0].cleaning
            ):
                self._delete_first_segment()
        return self.log_start_offset

    def _delete_first_segment(self) -> None:
        seg = self._segments.pop(0)
        self._bases.pop(0)
        seg.delete()

    def _save_log_start_offset(self, offset: int | None = None) -> None:
        """Persist the log start offset (default: the current one); StorageError if it cannot
        be written, so a request that moves it gets KAFKA_STORAGE_ERROR, not a dropped
        connection."""
        value = self.log_start_offset if offset is None else offset
        try:
            write_int(self.directory / LOG_START_OFFSET_FILE, value)
        except OSError as exc:
            self.disk.failed(exc, f"saving the log start offset of {self.name}")
            raise StorageError(f"cannot save the log start offset of {self.name}: {exc}") from exc

    # -- the log cleaner's hooks (storage/cleaner.py) ---------------------------------------------

    def cleanable_segments(self, now: int, first_dirty: int) -> list[LogSegment]:
        """The segments a cleaning run may read and rewrite, from the first: closed and sealed,
        below the segment holding the high watermark (nothing unacknowledged is cleaned) and
        wholly below the last stable offset (no undecided transaction is cleaned: Kafka's
        firstUnstableOffset bound), and, from the dirty ones on, none holding a record newer
        than ``min.compaction.lag.ms``."""
        lag = self.config.min_compaction_lag_ms
        stable = self.last_stable_offset
        out: list[LogSegment] = []
        for seg in self._segments[:-1]:
            if not seg.sealed or seg is self._hw_segment or seg.damage is not None or seg.next_offset > stable:
                break
            if lag > 0 and seg.next_offset > first_dirty:
                if seg.max_timestamp < 0:
                    _ = seg.time_index
                if seg.max_timestamp > now - lag:
                    break
            out.append(seg)
        return out

    def producer_last_offsets(self) -> dict[int, int]:
        """Each idempotent producer's latest committed batch, by its last offset: the cleaner
        keeps that batch (emptied if need be), so that rebuilding the state from the log finds
        the producer's epoch and last sequence, as Kafka's cleaner does."""
        self.producer_state()  # loaded, if it was not yet
        return {
            pid: entry.batches[-1].first_offset + entry.batches[-1].last_offset_delta
            for pid, entry in self._committed_producers().items()
            if entry.batches
        }

    def producer_marker_epochs(self) -> dict[int, int]:
        """Producers whose newest trace is a marker (no batch remembered, e.g. after a marker
        bumped their epoch), by epoch: the cleaner keeps that marker, which holds the epoch
        that fences their older incarnations (Kafka's LastRecord without a data offset)."""
        self.producer_state()
        return {pid: entry.epoch for pid, entry in self._committed_producers().items() if not entry.batches}

    def active_producers(self) -> list[tuple[int, ProducerEntry]]:
        """Every producer the partition remembers, as of the committed log end (DescribeProducers:
        admin tools find hanging transactions by ``txn_first_offset``)."""
        self.producer_state()
        return sorted(self._committed_producers().items())

    def replace_segments(self, old: Sequence[LogSegment], new: LogSegment) -> None:
        """Put ``new`` in the place of the consecutive segments ``old`` (whose files a cleaning
        swap has just replaced). The old segments are closed once their readers let go."""
        i = next(k for k, seg in enumerate(self._segments) if seg is old[0])
        if any(a is not b for a, b in zip(self._segments[i : i + len(old)], old, strict=True)):
            raise ValueError(f"{self.name}: the segments to replace are not consecutive")
        new.exists = True
        new.sealed = True
        self._segments[i : i + len(old)] = [new]
        self._bases[i : i + len(old)] = [new.base_offset]
        for seg in old:
            seg.close()

    def mark_unclean(self, reason: str) -> None:
        """The files no longer match what this log holds in memory (a swap that failed half
        way): a clean close must not record its state, so the next start reads the files."""
        self._unclean = reason

    # -- closing ---------------------------------------------------------------------------------

    def clean_state(self) -> CleanState:
        """What a clean reopen needs (:meth:`open` with ``state``), as of now."""
        active = self.active_segment
        return CleanState(
            tuple(
                SegmentState(s.base_offset, s.size, s.max_timestamp, s.offset_of_max_timestamp)
                for s in self._segments
            ),
            self.log_end_offset,
            self.log_start_offset,
            active.created_ms,
            self._producers_saved_at(),
            self._producers_at is None and bool(self._producers.ongoing),
            active.last_batch if active.size else -1,
        )

    def _producers_saved_at(self) -> int:
        """Where a clean reopen finds the producer state: the offset of the snapshot holding it
        as of the log end, or -1 when there are no producers."""
        if self._producers_at is not None:
            return self._producers_at  # never loaded: as it was found
        if not self._producers.producers:
            return -1
        return self.log_end_offset

    def _save_producers(self, *, sync: bool) -> None:
        """A snapshot at the log end, for a clean close (only if the state is loaded and there
        is something a snapshot does not already hold)."""
        state = self._producers
        if self._producers_at is None and state.producers:
            newest = state.snapshots()
            if state.changed or not newest or int(newest[-1].stem) != self.log_end_offset:
                state.snapshot(self.log_end_offset, sync=sync, keep=self.active_segment.base_offset)

    def expire_producers(self, now_ms: int) -> int:
        """Forget idle producers (``producer.id.expiration.ms``), if the state was ever loaded."""
        if self._producers_at is not None:
            return 0
        return self._producers.expire(now_ms)

    @property
    def producer_expiration_ms(self) -> int:
        return self._producers.expiration_ms

    @producer_expiration_ms.setter
    def producer_expiration_ms(self, value: int) -> None:
        self._producers.expiration_ms = value

    def close(self, *, marker: bool = True, sync: bool = True) -> CleanState:
        """Clean shutdown: make the active segment durable, save its indexes if they changed, and
        return the state a clean reopen needs.

        ``marker`` leaves that state in the directory's ``.clean-shutdown`` file (a log opened on
        its own); a log manager passes False and keeps one file for all its logs. ``sync=False``
        skips the fsyncs for a caller that syncs the whole filesystem afterwards.
        """
        if self._closed:
            return self.clean_state()
        active = self.active_segment
        try:
            if self._unclean is not None:
                raise StorageError(f"{self.name}: {self._unclean}")
            damaged = [s for s in self._segments if s.damage is not None]
            if damaged:
                # Never record a damaged file as clean: the next open recovers it.
                raise StorageError(f"{damaged[0].log_path}: {damaged[0].damage}")
            try:
                self._save_producers(sync=sync)
            except OSError as exc:  # the next open replays headers instead
                log.warning("could not save the producer state of %s: %s", self.name, exc)
            for seg in self._segments:
                try:
                    seg.save_txn_index(sync=sync)
                except OSError as exc:  # not clean: the next open recovers and rebuilds it
                    raise StorageError(f"saving the transaction index of {seg.log_path}: {exc}") from exc
            if self._dirty:
                if sync:
                    active.fsync()
                try:
                    active.save_indexes(sync=sync)
                except OSError as exc:  # the log is the truth: the next open rebuilds them
                    log.warning("could not save the indexes of %s: %s", self.name, exc)
                    active.index_path.unlink(missing_ok=True)  # never a stale one
                    active.time_index_path.unlink(missing_ok=True)
            state = self.clean_state()
            if marker:
                try:
                    write_json(self.directory / CLEAN_SHUTDOWN_FILE, state.to_json())
                except OSError as exc:
                    # Nothing is lost: the next open recovers instead of trusting the state.
                    log.warning("could not write the clean-shutdown marker of %s: %s", self.name, exc)
        finally:
            self._closed = True
            for seg in self._segments:
                seg.close()
        return state

    def abandon(self) -> None:
        """Close file descriptors without the clean-shutdown marker (tests: simulate a crash)."""
        self._closed = True
        for seg in self._segments:
            seg.close()

    def delete(self) -> None:
        """Close and remove every file of this log (topic deletion)."""
        self._closed = True
        for seg in self._segments:
            seg.delete()
        for name in (CLEAN_SHUTDOWN_FILE, RECOVERY_POINT_FILE, LOG_START_OFFSET_FILE):
            (self.directory / name).unlink(missing_ok=True)


_T = TypeVar("_T")


class _Retired(Exception):
    """A segment a search by time was about to read left the log while the search awaited
    the executor (a cleaning swap replaced it, retention deleted it): the search starts
    again over the log's segments as they are now."""


_HEADER_CHUNK = 64 * 1024
"""Bytes read at a time where an executor walks batch headers."""


async def _on_leased_fd(seg: LogSegment, work: Callable[..., _T], *args: object) -> _T:
    """``work(fd, *args)`` in the loop's default executor, with the segment's fd leased for the
    duration (a file it cannot open is a StorageError)."""
    try:
        fd = seg.acquire_fd()
    except OSError as exc:
        if seg.retired:
            raise _Retired from exc
        raise StorageError(f"reading {seg.log_path} failed: {exc}") from exc
    try:
        return await asyncio.get_running_loop().run_in_executor(None, work, fd, *args)
    finally:
        seg.release_fd()


def _at_or_after(timestamp: int, start: int, offset: int, record_timestamp: int) -> bool:
    return record_timestamp >= timestamp and offset >= start


def _search_batch_at(
    fd: int, position: int, size: int, match: Callable[[int, int], bool], max_block: int
) -> tuple[int, int] | None:
    """Executor side of :meth:`PartitionLog._search_batch`: touches only the leased fd."""
    try:
        batch = os.pread(fd, size, position)
    except OSError as exc:
        raise StorageError(f"reading a batch at byte {position} failed: {exc}") from exc
    if len(batch) < size:
        raise StorageError(f"batch at byte {position} is cut short ({len(batch)} of {size} bytes)")
    return next((s for s in iter_record_stamps(batch, max_block=max_block) if match(*s)), None)


def _headers_at(fd: int, position: int, end: int) -> Iterator[BatchHeader]:
    """Headers of the batches in [position, end) of a leased fd (see :func:`iter_headers`)."""
    return iter_headers(lambda at, length: os.pread(fd, length, at), position, end, _HEADER_CHUNK)


def _first_header_at(fd: int, position: int, end: int, start: int, timestamp: int) -> BatchHeader | None:
    """Executor side of :meth:`PartitionLog._timestamp_candidate`: the first batch ending past
    offset ``start`` whose max timestamp reaches ``timestamp``."""
    return next(
        (h for h in _headers_at(fd, position, end) if h.next_offset > start and h.max_timestamp >= timestamp),
        None,
    )


def _max_stamp_at(
    fd: int, position: int, end: int, start: int, max_block: int
) -> tuple[int, int] | None:
    """Executor side of :meth:`PartitionLog._segment_max_timestamp`: the first record at or
    past offset ``start`` with the largest timestamp among the batches in [position, end),
    reading their headers (in chunks) and the records of the batch holding
    ``start`` and of the winning batch. Touches only the leased fd."""
    best: tuple[int, int] | None = None  # (offset, timestamp), exact
    best_batch: tuple[int, int, int] | None = None  # (position, size, max timestamp): to search
    for header in _headers_at(fd, position, end):
        top = max(best[1] if best else -1, best_batch[2] if best_batch else -1)
        if header.next_offset > start and header.max_timestamp > top:
            if header.base_offset >= start:
                best_batch, best = (header.position, header.size, header.max_timestamp), None
            else:  # cut by the log start: its maximum may be a deleted record's
                batch = os.pread(fd, header.size, header.position)
                for offset, ts in iter_record_stamps(batch, max_block=max_block):
                    if offset >= start and ts > (best[1] if best else top):
                        best, best_batch = (offset, ts), None
    if best_batch is not None:
        at, size, max_ts = best_batch
        batch = os.pread(fd, size, at)
        return next((s for s in iter_record_stamps(batch, max_block=max_block) if s[1] == max_ts), None)
    return best

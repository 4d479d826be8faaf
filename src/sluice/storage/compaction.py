"""The log cleaner's work on one partition (after Kafka's ``Cleaner``).

A cleaning run over a compacted log:

1. **Map** the dirty section, [first dirty offset, first uncleanable offset): key -> offset of
   its latest record (:class:`OffsetMap`, bounded; when it fills, the run cleans up to where it
   got, and the rest stays dirty for the next run).
2. **Clean** every closed segment from the log start up to the mapped end, in groups of
   consecutive segments whose sizes add up to at most ``segment.bytes``: each group is rewritten
   into one new file, ``<base>.<run>.log.cleaned``, keeping a record unless the map holds a later
   offset for its key, a tombstone until its delete horizon (``delete.retention.ms`` after a
   cleaning first kept it), and a batch's header (emptied) when it is an idempotent producer's
   latest. Offsets are preserved, so the new segment has gaps.

   Transactions, as Kafka's cleaner (``CleanedTransactionMetadata``): only what lies below the
   last stable offset is cleaned; the records of aborted transactions (known from the
   aborted-transactions index) are dropped whatever their keys, and never enter the map; a
   marker stays while any batch of its transaction does, then gets a delete horizon like a
   tombstone and goes once it passes; the ABORT markers kept make the new segment's
   aborted-transactions index, written with the swap.

   Both steps are :func:`run`: file work only (it reads sealed, immutable segment files and
   writes new ones), in a **worker process** (:mod:`.cleaner_worker`). A thread would do the same
   work, but it parses every record in Python, holding the interpreter lock the event loop needs:
   with the cleaner in a thread, a producer's p99 round trip was 5 to 13 times its idle one
   (``python -m sluice.bench.compaction``, docs/storage.md).
3. **Swap**, one group at a time, crash-safely, by the log's owner (:func:`commit_swap` then
   :func:`finish_swap`; :func:`finish_swaps` is the loader's part):

   * the cleaned file is written and fsynced (by the worker);
   * the new aborted-transactions index, if the group has or had one, is written (fsynced) as
     ``<base>.<end>.txnindex.swap``;
   * the cleaned file is renamed to ``<base>.<end>.swap``, naming the offsets it replaces, and
     the directory fsynced: **the commit point**. Before it, a crash leaves the old segments and
     a ``.cleaned`` file the next open deletes; after it, the next open finishes the swap;
   * the old segments' index files and their ``.log`` files (but the first's) are removed, the
     transaction index swap file renamed over ``<base>.txnindex``, then the swap file over
     ``<base>.log`` (the last step, so a swap file still there means "not finished") and the
     directory fsynced; the new offset and time index files are written last (best effort:
     missing ones are rebuilt).

   The log's in-memory segment list changes on its owner's thread after the files
   (:meth:`PartitionLog.replace_segments`); until then readers read the old segments through
   descriptors held open for the purpose, so no reader ever sees half a swap.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sluice.config import LogConfig
from sluice.errors import CorruptRecordError, InvalidRecordError
from sluice.protocol.keyed import (
    KeyedRecord,
    check_crc,
    delete_horizon,
    empty_batch,
    keyed_records,
    records_section,
    rewrite_batch,
)
from sluice.protocol.records import HEADER_SIZE, BatchHeader, iter_stored_batches, read_header
from sluice.storage import txn_index
from sluice.storage.fdcache import FdCache
from sluice.storage.files import fsync_dir, write_atomic
from sluice.storage.segment import LogSegment, segment_name
from sluice.storage.swaps import (
    CLEANED_SUFFIX,
    CleaningAborted,
    cleaned_path,
    finish_swap_files,
    swap_path,
    txn_swap_path,
)
from sluice.storage.txn_index import AbortedTxn

log = logging.getLogger(__name__)

_SHORT_KEY = 16
_MAX_RELATIVE_OFFSET = (1 << 31) - 1


# -- the offset map ---------------------------------------------------------------------------------


class OffsetMap:
    """Key -> offset of its latest record in the dirty section, at most ``capacity`` keys.

    Keys shorter than 16 bytes are kept as they are; longer ones as their 16-byte BLAKE2b digest
    (so no two keys can collide unless BLAKE2b does: a collision would make the cleaner drop a
    key's latest record, which is why Kafka hashes with 128 bits too). Short keys and digests
    differ in length, so they never collide with each other."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self.table: dict[bytes, int] = {}
        """Slot -> offset; the hot loops index it directly (keys under 16 bytes are their own
        slot, so only long keys pay for :meth:`slot`)."""

    def __len__(self) -> int:
        return len(self.table)

    @staticmethod
    def slot(key: bytes) -> bytes:
        return key if len(key) < _SHORT_KEY else hashlib.blake2b(key, digest_size=16).digest()

    def put(self, key: bytes, offset: int) -> None:
        self.table[self.slot(key)] = offset

    def get(self, key: bytes) -> int | None:
        return self.table.get(self.slot(key))


# -- what the worker is given ---------------------------------------------------------------------


class Throttler:
    """``log.cleaner.io.max.bytes.per.second`` (this worker's share): a worker that gets ahead
    of the rate sleeps (Kafka's Throttler)."""

    def __init__(self, bytes_per_second: float) -> None:
        self.rate = bytes_per_second
        self._start = time.monotonic()
        self._bytes = 0.0
        self.slept_s = 0.0

    def throttle(self, nbytes: int) -> None:
        if self.rate >= 1e300:
            return
        now = time.monotonic()
        if now - self._start > 1.0:  # a fresh window each second
            self._start, self._bytes = now, 0.0
        self._bytes += nbytes
        ahead = self._bytes / self.rate - (now - self._start)
        if ahead > 0:
            self.slept_s += ahead
            time.sleep(ahead)


@dataclass(slots=True)
class CleaningStats:
    """One run's counters (Kafka's CleanerStats); times are ``time.monotonic()`` of the worker."""

    map_bytes_read: int = 0
    map_records: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    records_read: int = 0
    records_kept: int = 0
    batches_emptied: int = 0
    batches_unparsed: int = 0
    """Batches whose records do not parse (under a good CRC): kept whole (:func:`_parse`)."""
    tombstones_removed: int = 0
    groups: int = 0
    started: float = field(default_factory=time.monotonic)
    map_done: float = 0.0
    ended: float = 0.0


@dataclass(frozen=True, slots=True)
class SegmentSpec:
    """A sealed segment as the run found it (immutable while the run holds it)."""

    base: int
    size: int
    end: int
    """The next segment's base offset: where this segment's offsets end, gaps included."""


@dataclass(slots=True)
class RunPlan:
    """Everything a run needs, taken on the log's thread; picklable, for a worker process."""

    name: str
    directory: Path
    config: LogConfig
    segments: list[SegmentSpec]
    """Every segment the run may read or rewrite: from the log start up to the first uncleanable
    offset (closed and sealed all)."""
    first_dirty: int
    first_uncleanable: int
    map_start_position: int
    """Where in the segment holding ``first_dirty`` the map starts reading (index lookup)."""
    producer_last_offsets: dict[int, int]
    """Idempotent producers' latest batches (by last offset): kept, emptied if need be."""
    now: int
    token: str
    """Names this run's ``.cleaned`` files, so no other run (nor a worker outliving its broker)
    ever writes the same file."""
    map_capacity: int
    io_buffer_size: int
    io_bytes_per_second: float
    max_batch_bytes: int
    aborted: list[AbortedTxn] = field(default_factory=list)
    """The aborted transactions overlapping the segments (from their aborted-transactions
    indexes): their records are dropped."""
    producer_marker_epochs: dict[int, int] = field(default_factory=dict)
    """Producers whose newest trace is a marker, by epoch: that marker is kept (emptied if need
    be), so rebuilding the state from the log finds the epoch that fences older ones."""


@dataclass(slots=True)
class CleanedSpec:
    """One group's cleaned file (``cleaned_path(directory, base, token)``) and the new segment's
    indexes, as the worker built them."""

    base: int
    end: int
    size: int
    changed: bool
    """False when every batch was kept as it was and the group is one segment: nothing to swap."""
    index: tuple[array[int], array[int]]
    time_index: tuple[array[int], array[int]]
    aborted: list[AbortedTxn] = field(default_factory=list)
    """The new segment's aborted-transactions index: the kept ABORT markers' entries."""
    txn_index: bool = False
    """Whether the swap writes that index: it has entries, or one of the old segments had one."""


@dataclass(slots=True)
class RunOutput:
    end_offset: int
    """Where the map ended: the new first dirty offset."""
    groups: list[CleanedSpec]
    stats: CleaningStats


class Transactions:
    """What a pass over the log knows of transactions (Kafka's CleanedTransactionMetadata):
    which producers are in an aborted transaction (entered at its first offset, from the
    index), which in a committed one (a transactional batch of a producer not aborting), and
    the index entries of the ABORT markers a group keeps. A producer has one transaction at a
    time on a partition, so its next marker ends whichever it is in."""

    def __init__(self, aborted: list[AbortedTxn]) -> None:
        self._pending = sorted(aborted, key=lambda t: t.first_offset, reverse=True)
        self._aborted: dict[int, list[Any]] = {}
        """Producer id -> [its aborted transaction's entry, whether one of its batches was seen]."""
        self._committed: set[int] = set()
        self.index: list[AbortedTxn] = []

    def _enter(self, offset: int) -> None:
        pending = self._pending
        while pending and pending[-1].first_offset <= offset:
            txn = pending.pop()
            self._aborted.setdefault(txn.producer_id, [txn, False])

    def on_batch(self, header: BatchHeader) -> bool:
        """Whether a data batch belongs to an aborted transaction (its records go)."""
        if self._pending:
            self._enter(header.last_offset)
        if not header.is_transactional:
            return False
        state = self._aborted.get(header.producer_id)
        if state is not None:
            state[1] = True
            return True
        self._committed.add(header.producer_id)
        return False

    def on_marker(self, header: BatchHeader) -> bool:
        """Whether a marker may go (after its delete horizon): none of its transaction's batches
        is left in the log. An ABORT marker that stays keeps its index entry."""
        if self._pending:
            self._enter(header.last_offset)
        if header.records_count == 0:
            return True  # emptied by an earlier cleaning
        pid = header.producer_id
        state = self._aborted.pop(pid, None)
        if state is not None:
            if state[1]:
                self.index.append(state[0])
                return False
            return True
        if pid in self._committed:
            self._committed.discard(pid)
            return False
        return True


class _Run:
    def __init__(self, plan: RunPlan, aborted: Callable[[], bool]) -> None:
        self.plan = plan
        self.aborted = aborted
        self.stats = CleaningStats()
        self.throttler = Throttler(plan.io_bytes_per_second)
        self.txns = Transactions(plan.aborted)

    def check(self) -> None:
        if self.aborted():
            raise CleaningAborted(self.plan.name)

    def batches(self, spec: SegmentSpec, position: int = 0) -> Iterator[tuple[BatchHeader, bytes]]:
        """The segment's batches from ``position``, whole (header and bytes), read in chunks of
        ``log.cleaner.io.buffer.size``; a bigger batch is read alone."""
        path = self.plan.directory / f"{segment_name(spec.base)}.log"
        end = spec.size
        fd = os.open(path, os.O_RDONLY)
        try:
            if os.fstat(fd).st_size < end:
                raise OSError(errno.EIO, f"holds fewer bytes than the {end} the log has", str(path))
            while position + HEADER_SIZE <= end:
                self.check()
                chunk = os.pread(fd, min(self.plan.io_buffer_size, end - position), position)
                self.throttler.throttle(len(chunk))
                consumed = 0
                for header in iter_stored_batches(chunk):
                    yield header._replace(position=position + header.position), chunk[
                        header.position : header.position + header.size
                    ]
                    consumed = header.position + header.size
                if consumed == 0:
                    header = read_header(chunk)
                    if header.size > end - position or header.size < HEADER_SIZE:
                        raise OSError(errno.EIO, f"batch at byte {position} runs past the segment", str(path))
                    batch = os.pread(fd, header.size, position)
                    self.throttler.throttle(len(batch))
                    yield header._replace(position=position), batch
                    consumed = header.size
                position += consumed
        finally:
            os.close(fd)


def run(plan: RunPlan, aborted: Callable[[], bool] = lambda: False) -> RunOutput:
    """A whole run's file work: map the dirty section, then write every group's cleaned file
    (fsynced). Touches no log state, so it runs in a worker process (or thread). Raises
    CleaningAborted if ``aborted`` says so (its files are removed)."""
    job = _Run(plan, aborted)
    omap = OffsetMap(plan.map_capacity)
    end = _build_offset_map(job, omap)
    job.stats.map_done = time.monotonic()
    groups: list[CleanedSpec] = []
    try:
        for group in group_segments(plan.segments, end, plan.config.segment_bytes):
            groups.append(_clean_group(job, group, omap, end))
    except BaseException:
        for spec in groups:
            cleaned_path(plan.directory, spec.base, plan.token).unlink(missing_ok=True)
        raise
    job.stats.ended = time.monotonic()
    return RunOutput(end, groups, job.stats)


# -- 1. the map --------------------------------------------------------------------------------------


def _build_offset_map(job: _Run, omap: OffsetMap) -> int:
    """Fill ``omap`` from the dirty section; returns the end of what it covers (the first offset
    not mapped: ``first_uncleanable`` unless the map filled). Whole batches only, so the end is
    always a batch boundary (a single batch with more keys than the map holds is mapped all the
    same: the bound is then exceeded by one batch)."""
    plan = job.plan
    stats = job.stats
    first = plan.first_dirty
    end = first
    table = omap.table
    slot = omap.slot
    dirty = [spec for spec in plan.segments if spec.end > first]
    txns = Transactions([t for t in plan.aborted if t.last_offset >= first])
    for i, spec in enumerate(dirty):
        position = plan.map_start_position if i == 0 else 0
        for header, batch in job.batches(spec, position):
            stats.map_bytes_read += header.size
            if header.next_offset <= first:
                continue
            if header.is_control:
                txns.on_marker(header)
                end = header.next_offset
                continue
            if txns.on_batch(header) or header.records_count == 0:
                end = header.next_offset  # an aborted transaction's keys supersede nothing
                continue
            if len(omap) and len(omap) + header.records_count > omap.capacity:
                return end
            parsed = _parse(header, batch, plan.max_batch_bytes)
            if parsed is None:  # kept whole by the clean pass: its keys supersede nothing
                end = header.next_offset
                continue
            base = header.base_offset
            for offset_delta, _, key, _, _, _ in parsed[1]:
                if key is not None and base + offset_delta >= first:
                    table[key if len(key) < _SHORT_KEY else slot(key)] = base + offset_delta
            stats.map_records += header.records_count
            end = header.next_offset
        end = max(end, spec.end)  # past a gap at the segment's end
    return min(end, plan.first_uncleanable)


# -- 2. the groups ------------------------------------------------------------------------------------


def group_segments(segments: list[SegmentSpec], end_offset: int, max_bytes: int) -> list[list[SegmentSpec]]:
    """Consecutive segments below ``end_offset`` in groups of at most ``max_bytes`` (and offsets
    a 32-bit index can address): each group becomes one segment, so small segments merge."""
    todo = [spec for spec in segments if spec.base < end_offset]
    groups: list[list[SegmentSpec]] = []
    while todo:
        group = [todo.pop(0)]
        size = group[0].size
        while (
            todo
            and size + todo[0].size <= max_bytes
            and todo[0].end - 1 - group[0].base <= _MAX_RELATIVE_OFFSET
        ):
            size += todo[0].size
            group.append(todo.pop(0))
        groups.append(group)
    return groups


# -- 3. cleaning a group ---------------------------------------------------------------------------


def _clean_group(job: _Run, group: list[SegmentSpec], omap: OffsetMap, end_offset: int) -> CleanedSpec:
    """Write the group's ``.cleaned`` file (fsynced) and build the new segment's indexes."""
    plan = job.plan
    cfg = plan.config
    base = group[0].base
    new = LogSegment(
        plan.directory,
        base,
        index_interval_bytes=cfg.index_interval_bytes,
        max_index_bytes=cfg.segment_index_bytes,
        created_ms=plan.now,
        exists=False,
    )
    new.fresh_indexes()
    path = cleaned_path(plan.directory, base, plan.token)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    changed = len(group) > 1
    try:
        pending: list[bytes] = []
        pending_bytes = 0
        position = 0
        for spec in group:
            for header, batch in job.batches(spec):
                out = _clean_batch(job, header, batch, omap, end_offset)
                if out is not batch:
                    changed = True
                if out is None:
                    continue
                new.note_appended(header if out is batch else read_header(out), position)
                position += len(out)
                pending.append(out)
                pending_bytes += len(out)
                if pending_bytes >= plan.io_buffer_size:
                    _write_all(fd, pending)
                    job.throttler.throttle(pending_bytes)
                    pending, pending_bytes = [], 0
        if pending:
            _write_all(fd, pending)
            job.throttler.throttle(pending_bytes)
        if changed:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
    if not changed:
        path.unlink(missing_ok=True)
    job.stats.bytes_written += position
    job.stats.groups += 1
    new.complete_time_index()  # its last entry: the largest timestamp (the swap reads it back)
    index, time_index = new.index, new.time_index
    aborted, job.txns.index = job.txns.index, []
    had_index = any((plan.directory / f"{segment_name(spec.base)}{txn_index.SUFFIX}").exists() for spec in group)
    return CleanedSpec(
        base,
        group[-1].end,
        position,
        changed,
        (index.offsets, index.positions),
        (time_index.timestamps, time_index.offsets),
        aborted,
        bool(aborted) or had_index,
    )


def _write_all(fd: int, pieces: list[bytes]) -> None:
    data = b"".join(pieces)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _clean_batch(job: _Run, header: BatchHeader, batch: bytes, omap: OffsetMap, end_offset: int) -> bytes | None:
    """What of one batch the cleaned segment keeps: the batch itself (unchanged), a rewritten
    batch, an empty one (its header only) or None."""
    plan = job.plan
    stats = job.stats
    stats.bytes_read += header.size
    stats.records_read += header.records_count
    now = plan.now
    horizon = delete_horizon(header)
    producers_last = (
        header.producer_id >= 0
        and plan.producer_last_offsets.get(header.producer_id) == header.last_offset
    )
    if header.is_control:
        # Kafka keeps the marker of a producer whose newest trace it is (it holds the epoch).
        keep_empty = (
            plan.producer_marker_epochs.get(header.producer_id, -2) == header.producer_epoch
            or header.next_offset == plan.first_uncleanable
        )
        if not job.txns.on_marker(header):
            stats.records_kept += header.records_count
            return batch  # a batch of its transaction is still in the log
        if header.records_count == 0:
            return batch if keep_empty else None
        if horizon is None:
            check_crc(batch, header)
            parsed = _parse(header, batch, plan.max_batch_bytes, checked=True)
            if parsed is None:
                stats.batches_unparsed += 1
                return batch
            records, kept = parsed
            stats.records_kept += len(kept)
            return rewrite_batch(header, records, kept, new_delete_horizon=now + plan.config.delete_retention_ms)
        if now < horizon:
            stats.records_kept += header.records_count
            return batch
        return _emptied(stats, header) if keep_empty else None
    keep_empty = producers_last or header.next_offset == plan.first_uncleanable
    if job.txns.on_batch(header):
        # An aborted transaction's batch: its records go, whatever their keys.
        if header.records_count == 0:
            return batch if keep_empty else None
        return _emptied(stats, header) if keep_empty else None
    if header.records_count == 0:
        return batch if keep_empty else None
    check_crc(batch, header)
    parsed = _parse(header, batch, plan.max_batch_bytes, checked=True)
    if parsed is None:
        stats.batches_unparsed += 1
        stats.records_kept += header.records_count
        return batch
    records, all_records = parsed
    kept = []
    tombstones = False
    base = header.base_offset
    get = omap.table.get
    slot = omap.slot
    expired = horizon is not None and now >= horizon
    for record in all_records:
        offset_delta, _, key, has_value, _, _ = record
        offset = base + offset_delta
        if offset < end_offset:
            if key is None:
                continue  # keyless records do not survive compaction (Kafka drops them too)
            latest = get(key if len(key) < _SHORT_KEY else slot(key))
            if latest is not None and offset < latest:
                continue
            if not has_value and expired:
                stats.tombstones_removed += 1
                continue
        kept.append(record)
        if not has_value:
            tombstones = True
    stats.records_kept += len(kept)
    needs_horizon = tombstones and horizon is None
    if len(kept) == len(all_records) and not needs_horizon:
        return batch
    if kept:
        new_horizon = now + plan.config.delete_retention_ms if needs_horizon else None
        return rewrite_batch(header, records, kept, new_delete_horizon=new_horizon)
    return _emptied(stats, header) if keep_empty else None


def _parse(
    header: BatchHeader, batch: bytes, limit: int, *, checked: bool = False
) -> tuple[bytes, list[KeyedRecord]] | None:
    """The batch's records section and its records, or None when its records do not parse
    (or decompress past ``limit``) under a good CRC. The hot path never reads records, so
    such a batch is what a producer sent (trailing bytes, a key running past its record),
    or was stored before the topic was compacted, or before ``sluice.batch.uncompressed.max.bytes``
    was lowered: it is kept whole and maps no key (keeping more is always safe), where failing
    the run would leave the log uncleanable for good, every run failing on the same batch.
    A bad CRC (the file changed behind the broker) still fails the run (CorruptRecordError)."""
    try:
        records = records_section(header, batch, limit=limit)
        return records, keyed_records(records, header.records_count)
    except (CorruptRecordError, InvalidRecordError):
        if not checked:
            check_crc(batch, header)
        return None


def _emptied(stats: CleaningStats, header: BatchHeader) -> bytes:
    stats.batches_emptied += 1
    return empty_batch(header)


# -- 4. the swap (the log's owner, after the worker) -------------------------------------------------


def new_segment(plan: RunPlan, spec: CleanedSpec, files: FdCache) -> LogSegment:
    """The segment object of a cleaned group, its indexes as the worker built them."""
    cfg = plan.config
    seg = LogSegment(
        plan.directory,
        spec.base,
        index_interval_bytes=cfg.index_interval_bytes,
        max_index_bytes=cfg.segment_index_bytes,
        created_ms=plan.now,
        files=files,
        exists=False,
    )
    seg.fresh_indexes()
    # The arrays as they are: no per-entry Python on the event loop (a 1 GiB segment has ~260k).
    seg.index.offsets, seg.index.positions = spec.index
    seg.time_index.timestamps, seg.time_index.offsets = spec.time_index
    if spec.time_index[0]:
        seg.max_timestamp = spec.time_index[0][-1]
        seg.offset_of_max_timestamp = spec.base + spec.time_index[1][-1]
    seg.size = spec.size
    seg.next_offset = spec.end
    seg.sealed = True
    seg.set_aborted_txns(list(spec.aborted), saved=True)  # its file is written by the swap
    return seg


def commit_swap(directory: Path, spec: CleanedSpec, token: str) -> None:
    """The commit point: the cleaned file becomes the swap file naming the offsets it replaces
    (the new transaction index written first, so the commit covers it)."""
    if spec.txn_index:
        write_atomic(txn_swap_path(directory, spec.base, spec.end), txn_index.encode(spec.aborted))
    os.replace(cleaned_path(directory, spec.base, token), swap_path(directory, spec.base, spec.end))
    fsync_dir(directory)


def finish_swap(directory: Path, spec: CleanedSpec, seg: LogSegment) -> None:
    """After the commit: the old files go, the swap file becomes ``<base>.log``, and the new
    segment's index files are written (best effort: missing ones are rebuilt when needed). The
    caller holds descriptors of the old segments, so their readers read on meanwhile."""
    finish_swap_files(directory, spec.base, spec.end)
    fsync_dir(directory)
    try:
        seg.index.save(seg.index_path)
        seg.time_index.save(seg.time_index_path)
    except OSError as exc:
        log.warning("could not save the indexes of cleaned segment %s: %s", seg.log_path, exc)
        with contextlib.suppress(OSError):
            seg.index_path.unlink(missing_ok=True)
            seg.time_index_path.unlink(missing_ok=True)


def discard(directory: Path, token: str, specs: list[CleanedSpec] | None = None) -> None:
    """Remove this run's cleaned files (all of them, when ``specs`` is None) and the swap files
    of ``specs`` that were not (or could not be) committed."""
    for stray in directory.glob(f"*.{token}{CLEANED_SUFFIX}"):
        stray.unlink(missing_ok=True)
    for spec in specs or []:
        swap_path(directory, spec.base, spec.end).unlink(missing_ok=True)
        txn_swap_path(directory, spec.base, spec.end).unlink(missing_ok=True)

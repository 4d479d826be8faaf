"""One segment of a partition log: a ``.log`` file of record batches plus its two indexes.

Modelled on Kafka's ``LogSegment``. The segment tracks ``size`` (bytes committed: safe to read)
separately from what the writer has planned, so a reader never sees a half-written batch, and a
failed write is undone by truncating back to ``size``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import mmap
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

from sluice.dataclass import dataclass
from sluice.protocol.crc import crc32c
from sluice.protocol.records import (
    ATTRIBUTES_OFFSET,
    HEADER_SIZE,
    LOG_OVERHEAD,
    BatchHeader,
    iter_stored_batches,
    read_header,
)
from sluice.storage import txn_index
from sluice.storage.fdcache import DEFAULT_CACHE, FdCache
from sluice.storage.index import IndexCorruptError, OffsetIndex, TimeIndex
from sluice.storage.txn_index import AbortedTxn, TxnIndexCorruptError

log = logging.getLogger(__name__)

_SCAN_CHUNK = 16 * 1024
_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024
_INDEX_ENTRY = 8
_TIME_ENTRY = 16


def segment_name(base_offset: int) -> str:
    return f"{base_offset:020d}"


_CHECKED_LAST_BATCH_BYTES = 1 << 20
"""A clean start's first open reads the active segment's last batch whole, to check its CRC,
when it is at most this big (else its header only)."""


class DescriptorError(OSError):
    """A segment's file could not be opened to sync it (out of descriptors, its log closed, the
    file refused as damaged): nothing was synced, and no written byte was lost by it, so the
    partition is not fenced as after a failed fsync (:meth:`PartitionLog.fence`)."""


@dataclass(frozen=True, slots=True)
class RecoveryResult:
    valid_bytes: int
    truncated_bytes: int
    next_offset: int


class LogSegment:
    """A segment's files and in-memory state. All methods run on the owning log's thread except
    :meth:`write_at`, :meth:`fsync`, :meth:`seal` and the descriptor methods, which a worker thread
    may run: they touch only the file, never the state readers look at, and hold a lease on the
    descriptor while they use it.

    The descriptor is opened on demand. The active segment pins it; any other segment's descriptor
    lives in the :class:`FdCache` and may be closed whenever nobody holds a lease.
    """

    def __init__(
        self,
        directory: Path,
        base_offset: int,
        *,
        index_interval_bytes: int,
        max_index_bytes: int,
        created_ms: int,
        files: FdCache = DEFAULT_CACHE,
        exists: bool = True,
    ) -> None:
        self.directory = directory
        self.base_offset = base_offset
        self.index_interval_bytes = index_interval_bytes
        self.created_ms = created_ms
        self._max_index_entries = max(1, max_index_bytes // _INDEX_ENTRY)
        self._max_time_entries = max(1, max_index_bytes // _TIME_ENTRY)
        self._files = files
        self._fd: int | None = None
        self._leases = 0
        self._pinned = False
        self._retired = False
        self.exists = exists
        """Whether the ``.log`` file is on disk: a new segment's file is created by its first write
        (:meth:`create_file`), so an empty partition costs no file and no descriptor."""
        self._index: OffsetIndex | None = None
        self._time_index: TimeIndex | None = None
        self._unchecked = bytearray()
        """One flag per offset index entry loaded from its file (1: not yet checked against the
        batch header at its position, see :meth:`scan_position`); entries this process built
        from the log are trusted."""
        self._time_unchecked = bytearray()
        """The same for the time index's entries (see :meth:`time_scan_start`)."""
        self._aborted: list[AbortedTxn] | None = None
        """The aborted-transactions index (:mod:`.txn_index`), loaded on first use."""
        self.txn_saved = True
        """Whether ``<base>.txnindex`` holds every entry in memory (a new entry is written when
        the segment is sealed or the log closes)."""
        self.size = 0
        self.next_offset = base_offset
        self.max_timestamp = -1
        self.offset_of_max_timestamp = -1
        self.bytes_since_index_entry = 0
        self.sealed = False  # closed and durable: only then may retention delete it
        self.expected_size: int | None = None
        """The size a clean shutdown recorded, checked against the file when it is first opened
        (a clean start reads no file, so this is where a file changed behind the broker's back
        shows): a shorter or missing file must never be written past its end or read as whole."""
        self.expected_last_batch = -1
        """Where a clean shutdown recorded the last batch of this (active) segment (-1: not
        recorded): checked with the first batch when the file is first opened."""
        self.last_batch = -1
        """Position of the last batch committed or recovered in this segment (-1: none known)."""
        self._reported_garbage = False
        """Whether a read has logged that this file holds bytes that are not batches."""
        self.damage: str | None = None
        """Why this segment's file is refused (it changed outside the broker); None if it is not."""
        self.cleaning = False
        """Held by a log cleaner run (which reads it and may replace it): retention and
        DeleteRecords leave it alone until the run lets go."""
        self.being_replaced = False
        """A cleaning swap is replacing this segment's files: its index files may already be
        the new segment's, so indexes are rebuilt from the (leased, old) descriptor if needed,
        and never saved."""

    @property
    def name(self) -> str:
        return segment_name(self.base_offset)

    @property
    def files(self) -> FdCache:
        """The descriptor cache this segment's descriptor lives in."""
        return self._files

    @property
    def log_path(self) -> Path:
        return self.directory / f"{self.name}.log"

    @property
    def index_path(self) -> Path:
        return self.directory / f"{self.name}.index"

    @property
    def time_index_path(self) -> Path:
        return self.directory / f"{self.name}.timeindex"

    @property
    def txn_index_path(self) -> Path:
        return self.directory / f"{self.name}{txn_index.SUFFIX}"

    # -- descriptors -------------------------------------------------------------------------

    @property
    def retired(self) -> bool:
        """Closed for good: out of its log (replaced by a cleaning swap, or deleted)."""
        return self._retired

    def acquire_fd(self) -> int:
        """The open descriptor, leased until :meth:`release_fd`: it is not closed meanwhile, so
        a worker thread may use it while the owner's thread goes on."""
        with self._files.lock:
            if self.damage is not None:
                raise OSError(errno.EIO, self.damage, str(self.log_path))
            if self._fd is None:
                if self._retired:
                    raise OSError(errno.EBADF, "segment is closed", str(self.log_path))
                self._fd = self._open_checked()
                self._leases += 1  # before tracking: a full cache must not evict this very fd
                if not self._pinned:
                    self._files.track(self)
            else:
                self._leases += 1
                if not self._pinned:
                    self._files.touch(self)
            return self._fd

    def release_fd(self) -> None:
        with self._files.lock:
            self._leases -= 1
            if self._leases == 0 and self._retired:
                self.close_fd()
            elif self._leases == 0 and not self._pinned and len(self._files) > self._files.capacity:
                self._files.shrink()

    @property
    def evictable(self) -> bool:
        return self._fd is not None and not self._pinned and self._leases == 0

    def close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def _open_checked(self) -> int:
        """Open the file; the first time, check it still holds what the clean shutdown recorded
        (it may be longer: bytes past the committed size are never read, and are overwritten)."""
        expected = self.expected_size
        try:
            fd = self._open(os.O_RDWR)
        except FileNotFoundError:
            if expected is None:
                raise
            self._damaged("is missing")
        if expected is None:
            return fd
        actual = os.fstat(fd).st_size
        if actual < expected:
            os.close(fd)
            self._damaged(f"holds {actual} bytes but the last clean shutdown left {expected}")
        where = self._not_batches(fd, expected)
        if where is not None:
            os.close(fd)
            self._damaged(f"holds no record batch at {where} where the last clean shutdown left one")
        self.expected_size = None
        return fd

    def _not_batches(self, fd: int, size: int) -> str | None:
        """Where the file, as a clean shutdown left it, no longer holds a sane batch header: its
        first batch, and the last one where the state recorded it (two small preads). Zeroed or
        overwritten in place, with its size unchanged, it would otherwise be trusted, appends
        would go on after the garbage, and the next recovery would cut the log there, with
        them. None if both look right (the bytes between are checked by reads as ever)."""
        if size == 0:
            return None
        checks = [(0, "byte 0")]
        if self.expected_last_batch > 0:
            checks.append((self.expected_last_batch, f"byte {self.expected_last_batch}"))
        for position, where in checks:
            if position + HEADER_SIZE > size:
                return where
            header = read_header(os.pread(fd, HEADER_SIZE, position))
            if (
                header.magic != 2
                or header.batch_length < HEADER_SIZE - LOG_OVERHEAD
                or position + header.size > size
                or not self.base_offset <= header.base_offset < header.next_offset <= self.next_offset
            ):
                return where
            if position == self.expected_last_batch:
                if position + header.size != size or header.next_offset != self.next_offset:
                    return where
                if header.size <= _CHECKED_LAST_BATCH_BYTES:  # the tail a crash would cut: its CRC too
                    batch = os.pread(fd, header.size, position)
                    if crc32c(memoryview(batch)[ATTRIBUTES_OFFSET:]) != header.crc:
                        return where
        return None

    def _damaged(self, what: str) -> NoReturn:
        self.damage = (
            f"segment file {what}: it changed outside the broker; the partition is recovered "
            "at the next start"
        )
        log.error("%s: %s", self.log_path, self.damage)
        raise OSError(errno.EIO, self.damage, str(self.log_path))

    def _open(self, flags: int) -> int:
        try:
            return os.open(self.log_path, flags, 0o644)
        except OSError as exc:
            # Out of descriptors: give back idle cached ones and try once more.
            if exc.errno in (errno.EMFILE, errno.ENFILE) and self._files.shrink(len(self._files) // 2):
                return os.open(self.log_path, flags, 0o644)
            raise

    def create_file(self) -> None:
        """Create the empty ``.log`` file (a new segment's first write calls this); the caller
        fsyncs the directory so the new name survives a power loss."""
        with self._files.lock:
            fd = self._open(os.O_RDWR | os.O_CREAT)
            if self._fd is None and not self._retired:
                self._fd = fd
                if not self._pinned:
                    self._files.track(self)
            else:
                os.close(fd)
            self.exists = True

    def pin(self) -> None:
        """Keep the descriptor open while this is the active segment (it is written and synced
        all the time; reopening it would also lose writeback errors an fsync must report)."""
        with self._files.lock:
            self._pinned = True
            self._files.forget(self)

    def unpin(self) -> None:
        with self._files.lock:
            self._pinned = False
            if self._fd is not None:
                self._files.track(self)

    def close(self) -> None:
        """Close the descriptor now, or when the last lease is released."""
        with self._files.lock:
            self._retired = True
            self._files.forget(self)
            if self._leases == 0:
                self.close_fd()

    def delete(self) -> None:
        self.close()
        for path in (self.log_path, self.index_path, self.time_index_path, self.txn_index_path):
            path.unlink(missing_ok=True)
        self.exists = False

    def file_size(self) -> int:
        if not self.exists:
            return 0
        fd = self.acquire_fd()
        try:
            return os.fstat(fd).st_size
        finally:
            self.release_fd()

    def write_at(self, position: int, buffers: list[memoryview | bytes | bytearray]) -> None:
        """Write ``buffers`` contiguously at ``position``; raises OSError, never writes short."""
        fd = self.acquire_fd()
        try:
            for start in range(0, len(buffers), _IOV_MAX):
                chunk = buffers[start : start + _IOV_MAX]
                total = sum(len(b) for b in chunk)
                written = os.pwritev(fd, chunk, position)
                if written < total:  # short write (rare): finish it piece by piece
                    flat = b"".join(chunk)
                    while written < total:
                        written += os.pwrite(fd, flat[written:], position + written)
                position += total
        finally:
            self.release_fd()

    def truncate_file(self, size: int) -> None:
        fd = self.acquire_fd()
        try:
            os.ftruncate(fd, size)
        finally:
            self.release_fd()

    def _sync_fd(self) -> int:
        """:meth:`acquire_fd` for a sync: its failure is a DescriptorError."""
        try:
            return self.acquire_fd()
        except OSError as exc:
            raise DescriptorError(exc.errno, f"cannot open the file to sync it: {exc.strerror}", str(self.log_path)) from exc

    def ensure_open(self) -> None:
        """Open the file now if it is not (its descriptor then stays while the segment is
        pinned): a roll does this before writing, so the seal that follows cannot fail for want
        of a descriptor after the appends are in."""
        self.acquire_fd()
        self.release_fd()

    def fsync(self) -> None:
        if not self.exists:
            return
        fd = self._sync_fd()
        try:
            os.fdatasync(fd)
        finally:
            self.release_fd()

    def seal(self) -> None:
        """Make a segment that stops being active durable: its data (an fsync failure raises),
        then its index files (best effort: an index that cannot be written, say on a full disk,
        is rebuilt from the log when next needed, so it must not fail the appends)."""
        if self.exists:
            fd = self._sync_fd()
            try:
                os.fsync(fd)
            finally:
                self.release_fd()
        try:
            self.save_txn_index()
        except OSError as exc:
            log.warning("could not save the transaction index of %s (%s); recovery rebuilds it", self.log_path, exc)
        try:
            self.complete_time_index()  # a no-op where the owner's thread did it (a roll's commit)
            self.index.save(self.index_path)
            self.time_index.save(self.time_index_path)
        except OSError as exc:
            log.warning("could not save the indexes of %s (%s); they are rebuilt when needed", self.log_path, exc)
            self.index_path.unlink(missing_ok=True)
            self.time_index_path.unlink(missing_ok=True)

    # -- indexes ---------------------------------------------------------------------------

    @property
    def index(self) -> OffsetIndex:
        if self._index is None:
            self._load_indexes()
        assert self._index is not None
        return self._index

    @property
    def time_index(self) -> TimeIndex:
        if self._time_index is None:
            self._load_indexes()
        assert self._time_index is not None
        return self._time_index

    def fresh_indexes(self) -> None:
        self._index = OffsetIndex(self._max_index_entries)
        self._time_index = TimeIndex(self._max_time_entries)
        self._unchecked = bytearray()
        self._time_unchecked = bytearray()

    def _load_indexes(self) -> None:
        """Load a closed segment's indexes, rebuilding from the log if missing or insane."""
        if self.being_replaced:
            self.rebuild_indexes(save=False)
            return
        index = OffsetIndex(self._max_index_entries)
        time_index = TimeIndex(self._max_time_entries)
        try:
            index.load(self.index_path, self.size)
            time_index.load(self.time_index_path, self.next_offset - 1 - self.base_offset)
        except (OSError, IndexCorruptError):
            self.rebuild_indexes()
            return
        self._index, self._time_index = index, time_index
        self._unchecked = bytearray(b"\x01") * len(index)
        self._time_unchecked = bytearray(b"\x01") * len(time_index)
        try:
            holds = self._time_index_holds_the_max()
        except OSError:
            # The log is not batches where the entry points (changed behind the broker's back;
            # find_batch logged it): reads there fail, as without the check, and the rest of
            # the partition and the broker's start go on (an error here stopped the start)
            return
        if not holds:
            log.warning("%s: the time index does not end at the segment's largest timestamp; rebuilt from the log", self.log_path)
            self.rebuild_indexes()
            return
        if self._time_index is not time_index:
            return  # the check found a wrong offset index entry: both were rebuilt from the log
        if len(time_index):
            self.max_timestamp = time_index.last_timestamp
            self.offset_of_max_timestamp = self.base_offset + int(time_index.offsets[-1])

    def _time_index_holds_the_max(self) -> bool:
        """Whether the loaded time index's last entry is the segment's largest timestamp: the
        one a clean shutdown recorded, when it did, and in any case the max timestamp of the
        batch ending at its offset. Retention and timestamp lookups go by that entry: one
        missing from a truncated file would delete the segment early, or skip it in a lookup."""
        time_index = self.time_index
        if not len(time_index):
            return self.max_timestamp < 0
        last_ts, last_offset = time_index.last_timestamp, self.base_offset + int(time_index.offsets[-1])
        if self.max_timestamp >= 0 and (last_ts, last_offset) != (self.max_timestamp, self.offset_of_max_timestamp):
            return False
        return self._time_entry_holds(len(time_index) - 1)

    def _time_entry_holds(self, i: int) -> bool:
        """Whether time index entry ``i`` names a batch that ends at its offset with its
        timestamp as the max (OSError propagates: the log itself is unreadable)."""
        time_index = self.time_index
        offset = self.base_offset + int(time_index.offsets[i])
        header = self.find_batch(offset)
        ok = header is not None and header.last_offset == offset and header.max_timestamp == time_index.timestamps[i]
        if ok and i < len(self._time_unchecked):
            self._time_unchecked[i] = 0
        return ok

    def scan_position(self, offset: int) -> int:
        """Where a scan for the batch holding ``offset`` starts: the position of the offset
        index's last entry at or before it (0 if none).

        An entry loaded from the ``.index`` file is checked against the batch header at its
        position the first time it is used (one small pread): the file is derived data, and an
        entry naming another batch than the one there (a flipped bit, a stale or foreign file)
        would start reads past the offset, and a consumer would skip records without a sign.
        A wrong entry rebuilds both indexes from the log."""
        index = self.index
        i = index.entry_at_or_before(offset - self.base_offset)
        if i < 0:
            return 0
        position = int(index.positions[i])
        if i < len(self._unchecked) and self._unchecked[i]:
            if not self._entry_holds(int(index.offsets[i]), position):
                log.warning("%s: offset index entry %d names another batch; indexes rebuilt from the log", self.log_path, i)
                self.rebuild_indexes()
                return self.scan_position(offset)
            self._unchecked[i] = 0
        return position

    def _entry_holds(self, relative_offset: int, position: int) -> bool:
        raw = self.pread(position, HEADER_SIZE)
        if len(raw) < HEADER_SIZE:
            return False
        header = read_header(raw)
        return (
            header.magic == 2
            and header.base_offset == self.base_offset + relative_offset
            and header.batch_length >= HEADER_SIZE - LOG_OVERHEAD
            and position + header.size <= self.size
        )

    def time_scan_start(self, timestamp: int) -> int:
        """The first offset a search for ``timestamp`` need look at (the time index's lookup),
        its entry checked against the log the first time it is used, as :meth:`scan_position`
        checks the offset index's: an entry with too high an offset would skip records."""
        time_index = self.time_index
        i = time_index.entry_before(timestamp)
        if i < 0:
            return self.base_offset
        if i < len(self._time_unchecked) and self._time_unchecked[i] and not self._time_entry_holds(i):
            log.warning("%s: time index entry %d names another batch; indexes rebuilt from the log", self.log_path, i)
            self.rebuild_indexes()
            return self.time_scan_start(timestamp)
        return self.base_offset + int(time_index.offsets[i]) + 1

    def rebuild_indexes(self, *, save: bool = True) -> None:
        """Rebuild both indexes from the trusted bytes [0, size) (no CRC: already recovered)."""
        self.fresh_indexes()
        self.bytes_since_index_entry = 0
        self.max_timestamp = -1
        self.offset_of_max_timestamp = -1
        for header in self.iter_batches(0):
            self.note_appended(header, header.position)
        self.complete_time_index()
        # The files only spare the next open a scan: a full disk must not fail the read that
        # needed the index.
        if save and not self.being_replaced:
            with contextlib.suppress(OSError):
                self.save_indexes()

    def save_indexes(self, *, sync: bool = True) -> None:
        """Write both index files of the active segment; while it is small, remove them instead
        (rebuilding costs less than writing files, which matters when thousands of partitions
        stop at once), so a stale file is never left behind."""
        if len(self.index) <= 1 and self.size <= 4 * self.index_interval_bytes:
            self.index_path.unlink(missing_ok=True)
            self.time_index_path.unlink(missing_ok=True)
            return
        self.complete_time_index()
        self.index.save(self.index_path, sync=sync)
        self.time_index.save(self.time_index_path, sync=sync)

    def note_appended(self, header: BatchHeader, position: int) -> None:
        """Account for a batch committed at ``position``: indexes, timestamps, next offset.

        Both indexes are sparse, as Kafka's: the time index gets an entry (the largest timestamp
        so far) when the offset index does, every ``index.interval.bytes``, not one for every
        batch that raises the largest timestamp (nearly all of them: clocks move on), which cost
        16 bytes of memory a batch and rolled segments once the time index was full (a small
        batch every millisecond rolled a segment every 11 minutes, whatever segment.bytes)."""
        if header.max_timestamp > self.max_timestamp:
            self.max_timestamp = header.max_timestamp
            self.offset_of_max_timestamp = header.last_offset
        index = self.index
        if not len(index) or self.bytes_since_index_entry >= self.index_interval_bytes:
            index.append(header.base_offset - self.base_offset, position)
            self.bytes_since_index_entry = 0
            self.complete_time_index()
        self.bytes_since_index_entry += header.size
        self.next_offset = header.next_offset
        self.last_batch = position

    def complete_time_index(self) -> None:
        """Give the time index its entry for the largest timestamp so far (if it lacks it): done
        before its file is written, so the last entry is the segment's largest timestamp
        (Kafka's ``onBecomeInactiveSegment``), which the next load reads back."""
        if self.max_timestamp >= 0:
            self.time_index.maybe_append(self.max_timestamp, self.offset_of_max_timestamp - self.base_offset)

    def indexes_full(self) -> bool:
        return self.index.full or self.time_index.full

    # -- aborted transactions ----------------------------------------------------------------

    @property
    def aborted_txns(self) -> list[AbortedTxn]:
        """The aborted-transactions index, in marker order (loaded from its file on first use:
        a segment without one has none). OSError if the file is unreadable or insane."""
        if self._aborted is None:
            try:
                self._aborted = txn_index.load(self.txn_index_path)
            except TxnIndexCorruptError as exc:
                raise OSError(errno.EIO, str(exc), str(self.txn_index_path)) from exc
        return self._aborted

    def fresh_txn_index(self) -> None:
        """A new segment: no entries, and no file to look for."""
        self._aborted = []
        self.txn_saved = True

    def add_aborted_txn(self, entry: AbortedTxn) -> None:
        self.aborted_txns.append(entry)
        self.txn_saved = False

    def set_aborted_txns(self, entries: list[AbortedTxn], *, saved: bool) -> None:
        """Replace the entries in memory (a cleaned segment brings its own, whose file the swap
        writes: ``saved``); no file is touched."""
        self._aborted = entries
        self.txn_saved = saved

    def save_txn_index(self, *, sync: bool = True) -> None:
        """Write the index file if it lacks entries (OSError if it cannot be written)."""
        if not self.txn_saved:
            txn_index.save(self.txn_index_path, self.aborted_txns, sync=sync)
            self.txn_saved = True

    # -- reading ---------------------------------------------------------------------------

    def pread(self, position: int, length: int) -> bytes:
        fd = self.acquire_fd()
        try:
            return os.pread(fd, length, position)
        finally:
            self.release_fd()

    def iter_batches(self, position: int, end: int | None = None) -> Iterator[BatchHeader]:
        """Headers of committed batches from ``position`` up to ``end`` (default: ``size``)."""
        end = self.size if end is None else end
        yield from iter_headers(self.pread, position, end, _SCAN_CHUNK)

    def find_batch(self, offset: int, end: int | None = None) -> BatchHeader | None:
        """The committed batch holding ``offset``, found from the nearest index entry.

        Raises OSError (EIO) where the committed bytes stop being batches (a file zeroed or
        overwritten behind the broker's back): the read fails rather than silently skipping
        to the next segment, which would hand a consumer a gap in the offsets as if nothing
        were missing."""
        position = self.scan_position(offset)
        reached = position
        for header in self.iter_batches(position, end):
            if header.next_offset > offset:
                return header
            reached = header.position + header.size
        limit = self.size if end is None else end
        if reached < limit:
            what = f"bytes {reached}..{limit} are not record batches"
            if not self._reported_garbage:
                self._reported_garbage = True
                log.error("%s: %s (changed outside the broker); reads there fail", self.log_path, what)
            raise OSError(errno.EIO, what, str(self.log_path))
        return None

    # -- recovery --------------------------------------------------------------------------

    def recover(self, max_batch_bytes: int | None = None, gaps_below: int = -1) -> RecoveryResult:
        """Walk every batch with bounds, continuity and CRC checks; rebuild the indexes; truncate
        the file at the first invalid byte. The log is the truth, the indexes are derived.

        Offsets must follow on from batch to batch, except across gaps that end at or below
        ``gaps_below``: the log cleaner removes batches there (see :mod:`.compaction`), and
        nowhere else can a gap be anything but stale bytes."""
        self.fresh_indexes()
        self.bytes_since_index_entry = 0
        self.max_timestamp = -1
        self.offset_of_max_timestamp = -1
        self.next_offset = self.base_offset
        self.last_batch = -1
        fd = self.acquire_fd()
        try:
            file_size = os.fstat(fd).st_size
            valid = 0
            if file_size:
                with mmap.mmap(fd, file_size, prot=mmap.PROT_READ) as mm:
                    view = memoryview(mm)
                    try:
                        valid = self._walk(view, file_size, max_batch_bytes, gaps_below)
                    finally:
                        view.release()
            if valid < file_size:
                os.ftruncate(fd, valid)
                os.fsync(fd)
        finally:
            self.release_fd()
        self.size = valid
        return RecoveryResult(valid, file_size - valid, self.next_offset)

    def _walk(self, view: memoryview, end: int, max_batch_bytes: int | None, gaps_below: int) -> int:
        position = 0
        expected = self.base_offset
        while end - position >= HEADER_SIZE:
            header = read_header(view, position)
            size = header.size
            if (
                header.magic != 2
                or header.batch_length < HEADER_SIZE - LOG_OVERHEAD
                or size > end - position
                or not (header.base_offset == expected or expected < header.base_offset <= gaps_below)
                or header.last_offset_delta < 0
                or (max_batch_bytes is not None and size > max_batch_bytes)
                or crc32c(view[position + ATTRIBUTES_OFFSET : position + size]) != header.crc
            ):
                break
            self.note_appended(header, position)
            expected = header.next_offset
            position += size
        self.complete_time_index()
        return position


def iter_headers(
    pread: Callable[[int, int], bytes], position: int, end: int, chunk_size: int
) -> Iterator[BatchHeader]:
    """Headers of the committed batches in [position, end), read ``chunk_size`` bytes at a time
    with ``pread(position, length)`` (a batch bigger than a chunk is stepped over by its
    header); stops where the bytes stop being batches. One walk for the segment's own reads
    and for an executor's over a leased fd."""
    while position + HEADER_SIZE <= end:
        chunk = pread(position, min(chunk_size, end - position))
        consumed = 0
        for header in iter_stored_batches(chunk, base=position):
            consumed = header.position + header.size - position
            yield header
        if consumed == 0:  # a batch bigger than the chunk: step over it by its header
            header = read_header(chunk, base=position)
            if header.size > end - position or header.batch_length < HEADER_SIZE - LOG_OVERHEAD:
                return
            yield header
            consumed = header.size
        position += consumed

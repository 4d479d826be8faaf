"""One segment of a partition log: a ``.log`` file of record batches plus its two indexes.

Modelled on Kafka's ``LogSegment``. The segment tracks ``size`` (bytes committed: safe to read)
separately from what the writer has planned, so a reader never sees a half-written batch, and a
failed write is undone by truncating back to ``size``.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import crc32c

from sluice.protocol.records import (
    ATTRIBUTES_OFFSET,
    HEADER_SIZE,
    LOG_OVERHEAD,
    BatchHeader,
    iter_stored_batches,
    read_header,
)
from sluice.storage.index import IndexCorruptError, OffsetIndex, TimeIndex

_SCAN_CHUNK = 16 * 1024
_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024
_INDEX_ENTRY = 8
_TIME_ENTRY = 16


def segment_name(base_offset: int) -> str:
    return f"{base_offset:020d}"


@dataclass(frozen=True, slots=True)
class RecoveryResult:
    valid_bytes: int
    truncated_bytes: int
    next_offset: int


class LogSegment:
    """A segment's files and in-memory state. All methods run on the owning log's thread except
    :meth:`write_at`, :meth:`fsync` and :meth:`seal`, which the writer may run in a worker thread
    because they touch only the file, never the state readers look at."""

    def __init__(
        self,
        directory: Path,
        base_offset: int,
        *,
        index_interval_bytes: int,
        max_index_bytes: int,
        created_ms: int,
    ) -> None:
        self.directory = directory
        self.base_offset = base_offset
        self.index_interval_bytes = index_interval_bytes
        name = segment_name(base_offset)
        self.log_path = directory / f"{name}.log"
        self.index_path = directory / f"{name}.index"
        self.time_index_path = directory / f"{name}.timeindex"
        self.created_ms = created_ms
        self._max_index_entries = max(1, max_index_bytes // _INDEX_ENTRY)
        self._max_time_entries = max(1, max_index_bytes // _TIME_ENTRY)
        self._fd: int | None = None
        self._index: OffsetIndex | None = None
        self._time_index: TimeIndex | None = None
        self.size = 0
        self.next_offset = base_offset
        self.max_timestamp = -1
        self.offset_of_max_timestamp = -1
        self.bytes_since_index_entry = 0
        self.sealed = False  # closed and durable: only then may retention delete it

    # -- files -----------------------------------------------------------------------------

    @property
    def fd(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.log_path, os.O_RDWR | os.O_CREAT, 0o644)
        return self._fd

    def acquire_fd(self) -> int:
        """The file descriptor, for a read that runs off the owner's thread (a timestamp lookup in
        an executor). Call on the owner's thread and pair with :meth:`release_fd` there once the
        read is done, so retention or deletion never closes the fd under the reader (the leases
        that enforce this replace these trivial versions)."""
        return self.fd

    def release_fd(self) -> None:
        """End a read started with :meth:`acquire_fd` (owner's thread)."""

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def delete(self) -> None:
        self.close()
        for path in (self.log_path, self.index_path, self.time_index_path):
            path.unlink(missing_ok=True)

    def file_size(self) -> int:
        return os.fstat(self.fd).st_size

    def write_at(self, position: int, buffers: list[memoryview | bytes | bytearray]) -> None:
        """Write ``buffers`` contiguously at ``position``; raises OSError, never writes short."""
        fd = self.fd
        for start in range(0, len(buffers), _IOV_MAX):
            chunk = buffers[start : start + _IOV_MAX]
            total = sum(len(b) for b in chunk)
            written = os.pwritev(fd, chunk, position)
            if written < total:  # short write (rare): finish it piece by piece
                flat = b"".join(chunk)
                while written < total:
                    written += os.pwrite(fd, flat[written:], position + written)
            position += total

    def truncate_file(self, size: int) -> None:
        os.ftruncate(self.fd, size)

    def fsync(self) -> None:
        os.fdatasync(self.fd)

    def seal(self) -> None:
        """Make a segment that stops being active durable: data, indexes, then its directory."""
        os.fsync(self.fd)
        self.index.save(self.index_path)
        self.time_index.save(self.time_index_path)

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

    def _load_indexes(self) -> None:
        """Load a closed segment's indexes, rebuilding from the log if missing or insane."""
        index = OffsetIndex(self._max_index_entries)
        time_index = TimeIndex(self._max_time_entries)
        try:
            index.load(self.index_path, self.size)
            time_index.load(self.time_index_path, self.next_offset - 1 - self.base_offset)
        except (OSError, IndexCorruptError):
            self.rebuild_indexes()
            return
        self._index, self._time_index = index, time_index
        if len(time_index):
            self.max_timestamp = time_index.last_timestamp
            self.offset_of_max_timestamp = self.base_offset + int(time_index.offsets[-1])

    def rebuild_indexes(self) -> None:
        """Rebuild both indexes from the trusted bytes [0, size) (no CRC: already recovered)."""
        self.fresh_indexes()
        self.bytes_since_index_entry = 0
        self.max_timestamp = -1
        self.offset_of_max_timestamp = -1
        for header in self.iter_batches(0):
            self.note_appended(header, header.position)
        self.save_indexes()

    def save_indexes(self) -> None:
        self.index.save(self.index_path)
        self.time_index.save(self.time_index_path)

    def note_appended(self, header: BatchHeader, position: int) -> None:
        """Account for a batch committed at ``position``: indexes, timestamps, next offset."""
        index = self.index
        if not len(index) or self.bytes_since_index_entry >= self.index_interval_bytes:
            index.append(header.base_offset - self.base_offset, position)
            self.bytes_since_index_entry = 0
        self.bytes_since_index_entry += header.size
        if header.max_timestamp > self.max_timestamp:
            self.max_timestamp = header.max_timestamp
            self.offset_of_max_timestamp = header.last_offset
            self.time_index.maybe_append(header.max_timestamp, header.last_offset - self.base_offset)
        self.next_offset = header.next_offset

    def indexes_full(self) -> bool:
        return self.index.full or self.time_index.full

    # -- reading ---------------------------------------------------------------------------

    def pread(self, position: int, length: int) -> bytes:
        return os.pread(self.fd, length, position)

    def iter_batches(self, position: int, end: int | None = None) -> Iterator[BatchHeader]:
        """Headers of committed batches from ``position`` up to ``end`` (default: ``size``)."""
        end = self.size if end is None else end
        while position + HEADER_SIZE <= end:
            chunk = self.pread(position, min(_SCAN_CHUNK, end - position))
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

    def find_batch(self, offset: int, end: int | None = None) -> BatchHeader | None:
        """The committed batch holding ``offset``, found from the nearest index entry."""
        _, position = self.index.lookup(offset - self.base_offset)
        for header in self.iter_batches(position, end):
            if header.next_offset > offset:
                return header
        return None

    # -- recovery --------------------------------------------------------------------------

    def recover(self, max_batch_bytes: int | None = None) -> RecoveryResult:
        """Walk every batch with bounds, continuity and CRC checks; rebuild the indexes; truncate
        the file at the first invalid byte. The log is the truth, the indexes are derived."""
        self.fresh_indexes()
        self.bytes_since_index_entry = 0
        self.max_timestamp = -1
        self.offset_of_max_timestamp = -1
        self.next_offset = self.base_offset
        file_size = self.file_size()
        valid = 0
        if file_size:
            with mmap.mmap(self.fd, file_size, prot=mmap.PROT_READ) as mm:
                view = memoryview(mm)
                try:
                    valid = self._walk(view, file_size, max_batch_bytes)
                finally:
                    view.release()
        if valid < file_size:
            os.ftruncate(self.fd, valid)
            os.fsync(self.fd)
        self.size = valid
        return RecoveryResult(valid, file_size - valid, self.next_offset)

    def _walk(self, view: memoryview, end: int, max_batch_bytes: int | None) -> int:
        position = 0
        expected = self.base_offset
        while end - position >= HEADER_SIZE:
            header = read_header(view, position)
            size = header.size
            if (
                header.magic != 2
                or header.batch_length < HEADER_SIZE - LOG_OVERHEAD
                or size > end - position
                or header.base_offset != expected
                or header.last_offset_delta < 0
                or (max_batch_bytes is not None and size > max_batch_bytes)
                or crc32c.crc32c(view[position + ATTRIBUTES_OFFSET : position + size]) != header.crc
            ):
                break
            self.note_appended(header, position)
            expected = header.next_offset
            position += size
        return position

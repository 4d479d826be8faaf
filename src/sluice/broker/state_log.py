"""``StateLog``: a coordinator's durable state, as key/value changes in a private partition log.

Kafka keeps each coordinator's state in an internal topic (``__consumer_offsets``,
``__transaction_state``) and rebuilds it by replaying that topic. sluice does the same on one
node, with one :class:`~sluice.storage.partition.Partition` per coordinator owned by the
coordinator rather than a topic: clients never see it in Metadata, cannot delete or produce to
it, and the LogManager's retention never touches it (its directory has no ``-<n>`` suffix, so the
LogManager never takes it for an orphaned partition). The in-memory view is materialised by the
subclass (:meth:`StateLog._apply`) from records replayed at open and from every write.

Compaction is by snapshot rather than Kafka's log cleaner: once the log holds many more records
than live keys, the whole live state is appended again and the log start offset is moved to
where that copy begins, which lets storage delete the segments before it. A crash half-way
leaves the old start in place, and replaying the partial copy only re-applies current values,
so every prefix of the sequence is a correct state. Writes are held back while a snapshot is
taken, so the copy can never land after (and overwrite) a newer change.

Every write is acknowledged after an fsync (group commit makes that cheap), and the view applies
writes strictly in log order, whatever order their acknowledgements resume in, so what the
coordinator answers from is always a prefix of what a restart would replay. A write of several
changes is one record batch: all or none of it survives a crash.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Executor
from pathlib import Path
from typing import Generic, Self, TypeVar

from sluice.config import AckLevel, LogConfig
from sluice.dataclass import dataclass
from sluice.errors import LogClosedError, SluiceError
from sluice.plural import plural
from sluice.protocol.records import build_batch, decode_records, iter_stored_batches
from sluice.storage.clock import Clock, wall_clock_ms
from sluice.storage.log import PartitionLog
from sluice.storage.partition import Partition

log = logging.getLogger(__name__)

LOG_CONFIG = LogConfig(
    segment_bytes=1 << 20,
    segment_index_bytes=64 * 1024,
    max_message_bytes=64 << 20,
    retention_ms=-1,
    retention_bytes=-1,
    append_ack=AckLevel.FSYNCED,
)
"""Small segments so a snapshot frees space promptly; large batches so a change of thousands of
keys is one record batch (one atomic append); acknowledged after fsync; never expired by time
or size (a quiet key's only copy may be old): only snapshots move the log start."""

_SNAPSHOT_BATCH_BYTES = 256 * 1024

K = TypeVar("K")
V = TypeVar("V")


@dataclass(slots=True)
class _Ticket(Generic[K, V]):
    changes: list[tuple[K, V]]
    applied: asyncio.Future[None]
    done: bool = False
    ok: bool = False


class StateLog(Generic[K, V]):
    """The log and the order in which its changes reach the view. Subclasses say how a change
    is encoded, what applying one does, and what the live state is. Owned by the event loop
    once :meth:`open` returns (which runs without one, in the broker's opening thread)."""

    kind = "state"
    """Named in log lines ("group store", "transaction store")."""

    def __init__(
        self,
        partition: Partition,
        clock_ms: Clock = wall_clock_ms,
        *,
        compact_min_records: int = 10_000,
    ) -> None:
        self._partition = partition
        self._log = partition.log
        self._clock_ms = clock_ms
        self.compact_min_records = compact_min_records
        self.records_in_log = 0
        """Records from the log start on: garbage plus live; compared to :attr:`live` to decide
        when a snapshot pays off."""
        self.snapshots = 0
        self._tickets: deque[_Ticket[K, V]] = deque()
        self._compacting: asyncio.Future[None] | None = None
        self._compaction_task: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    def open(
        cls,
        directory: Path,
        executor: Executor | None = None,
        clock_ms: Clock = wall_clock_ms,
        *,
        compact_min_records: int = 10_000,
    ) -> Self:
        """Open (recovering after a crash) and replay. Blocking; needs no event loop."""
        partition = Partition.open(directory, LOG_CONFIG, clock_ms, executor=executor)
        store = cls(partition, clock_ms, compact_min_records=compact_min_records)
        store._replay()
        return store

    # -- what a subclass defines ----------------------------------------------------------------

    def _encode(self, key: K, value: V) -> tuple[bytes, bytes | None]:
        raise NotImplementedError

    def _decode(self, key: bytes, value: bytes | None) -> tuple[K, V]:
        """Raises ValueError, TypeError, KeyError or IndexError for a record it cannot read."""
        raise NotImplementedError

    def _apply(self, key: K, value: V) -> None:
        raise NotImplementedError

    def _snapshot(self) -> Iterator[tuple[K, V]]:
        """The live state as changes that, replayed after anything, give the current view."""
        raise NotImplementedError

    @property
    def live(self) -> int:
        raise NotImplementedError

    def _stamp(self, changes: list[tuple[K, V]]) -> list[tuple[K, V]]:
        """The changes as they will be written, given in log order (after any snapshot): where
        a subclass numbers its writes."""
        return changes

    def _replayed(self, records: int) -> str:
        """What the log line after a replay says about the view."""
        return plural(self.live, "live key")

    # -- the log -------------------------------------------------------------------------------

    @property
    def partition(self) -> Partition:
        return self._partition

    @property
    def partition_log(self) -> PartitionLog:
        return self._log

    def _replay(self) -> None:
        count = 0
        for key, value in self._read_all():
            self._apply(key, value)
            count += 1
        self.records_in_log = count
        log.info(
            "%s: replayed %s (%s) from %s",
            self.kind,
            plural(count, "record"),
            self._replayed(count),
            self._log.directory,
        )

    def _read_all(self) -> Iterator[tuple[K, V]]:
        plog = self._log
        offset = plog.log_start_offset
        while offset < plog.high_watermark:
            chunk = plog.read(offset, 1 << 20)
            if chunk is None:
                break
            data = chunk.read()
            progressed = False
            for header in iter_stored_batches(data):
                batch = memoryview(data)[header.position : header.position + header.size]
                for record in decode_records(batch):
                    if record.offset < offset or record.key is None:
                        continue
                    try:
                        change = self._decode(record.key, record.value)
                    except (ValueError, TypeError, KeyError, IndexError) as exc:
                        log.warning(
                            "%s: skipping the unreadable record at offset %d: %s",
                            self.kind,
                            record.offset,
                            exc,
                        )
                        continue
                    yield change
                offset = max(offset, header.next_offset)
                progressed = True
            if not progressed:
                break

    def _batch(self, changes: list[tuple[K, V]]) -> bytes:
        return build_batch(
            [self._encode(k, v) for k, v in changes], base_timestamp=self._clock_ms()
        )

    # -- writing -------------------------------------------------------------------------------

    async def write(self, changes: list[tuple[K, V]]) -> None:
        """Append ``changes`` as one batch (atomic: all or none survive a crash); return once
        fsynced and applied to the view. Raises a SluiceError (StorageError, LogClosedError)."""
        if not changes:
            return
        if self._closed:
            raise LogClosedError(f"the {self.kind} is closed")
        while self._compacting is not None:
            await asyncio.shield(self._compacting)
        changes = self._stamp(changes)
        ticket: _Ticket[K, V] = _Ticket(changes, asyncio.get_running_loop().create_future())
        self._tickets.append(ticket)
        try:
            await self._partition.append(self._batch(changes))
            ticket.ok = True
        finally:
            ticket.done = True
            self._drain()
        await asyncio.shield(ticket.applied)
        self._maybe_compact()

    def _drain(self) -> None:
        while self._tickets and self._tickets[0].done:
            ticket = self._tickets.popleft()
            if ticket.ok:
                for key, value in ticket.changes:
                    self._apply(key, value)
                self.records_in_log += len(ticket.changes)
            if not ticket.applied.done():
                ticket.applied.set_result(None)

    async def settled(self) -> None:
        """Wait until every write called so far has been applied (or has failed)."""
        while self._tickets:
            await asyncio.shield(self._tickets[-1].applied)

    # -- compaction ------------------------------------------------------------------------------

    def needs_compaction(self) -> bool:
        return self.records_in_log > max(self.compact_min_records, 2 * self.live)

    def _maybe_compact(self) -> None:
        if self.needs_compaction() and self._compaction_task is None and not self._closed:
            self._compaction_task = asyncio.get_running_loop().create_task(
                self._compact_in_background(), name=f"{self.kind}-compaction"
            )

    async def _compact_in_background(self) -> None:
        try:
            await self.compact()
        except SluiceError as exc:
            log.warning("%s: compaction failed (will retry later): %s", self.kind, exc)
        finally:
            self._compaction_task = None

    async def compact(self) -> None:
        """Append the live state again and move the log start to it (see the module doc)."""
        if self._compacting is not None:
            await asyncio.shield(self._compacting)
            return
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._compacting = gate
        try:
            await self.settled()
            start = self._log.log_end_offset
            batch: list[tuple[K, V]] = []
            size = 0
            written = 0
            for key, value in self._snapshot():
                batch.append((key, value))
                raw_key, raw_value = self._encode(key, value)
                size += 64 + len(raw_key) + len(raw_value or b"")
                if size >= _SNAPSHOT_BATCH_BYTES:
                    await self._partition.append(self._batch(batch))
                    written += len(batch)
                    batch, size = [], 0
            if batch:
                await self._partition.append(self._batch(batch))
                written += len(batch)
            self._log.delete_records(start)
            self._log.apply_retention()
            self.records_in_log = written
            self.snapshots += 1
            log.info(
                "%s: wrote a snapshot of %s; the log now starts at offset %d",
                self.kind,
                plural(written, "record"),
                start,
            )
        finally:
            self._compacting = None
            gate.set_result(None)

    # -- closing -------------------------------------------------------------------------------

    async def close(self) -> None:
        """Let in-flight writes and a running snapshot finish, then close the log cleanly."""
        if self._compaction_task is not None:
            await asyncio.gather(self._compaction_task, return_exceptions=True)
        await self.settled()
        self._closed = True
        await self._partition.close()

    def close_sync(self) -> None:
        """Close without a loop (a store that was opened but never written through a writer)."""
        self._closed = True
        self._log.close()

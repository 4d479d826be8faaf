"""Durable group state: committed offsets and group metadata, in one private partition log.

Kafka's design, scaled to one node: every change is a key/value record appended to a log
(``DATA/__consumer_offsets/``, a :class:`~sluice.storage.partition.Partition` owned by the
coordinator rather than a topic, so clients never see it in Metadata, cannot delete it and the
LogManager's retention never touches it); the in-memory maps are a materialised view that
:meth:`GroupStore.open` rebuilds by replaying the log from its start offset. A ``None`` value
is a tombstone.

Compaction is by snapshot rather than Kafka's log cleaner: once the log holds many more records
than live keys, the whole live state is appended again and the log start offset is moved to
where that copy begins, which lets storage delete the segments before it. A crash half-way
leaves the old start in place, and replaying the partial copy only re-applies current values,
so every prefix of the sequence is a correct state. Writes are held back while a snapshot is
taken, so the copy can never land after (and overwrite) a newer commit.

Every write is acknowledged after an fsync (group commit makes that cheap), and the in-memory
view applies writes strictly in log order, whatever order their acknowledgements resume in, so
what OffsetFetch returns is always a prefix of what a restart would replay.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor
from dataclasses import field
from pathlib import Path
from typing import Any

from sluice.config import AckLevel, LogConfig
from sluice.dataclass import dataclass
from sluice.errors import SluiceError
from sluice.plural import plural
from sluice.protocol.records import build_batch, decode_records, iter_stored_batches
from sluice.storage.clock import Clock, wall_clock_ms
from sluice.storage.log import PartitionLog
from sluice.storage.partition import Partition

log = logging.getLogger(__name__)

DIR_NAME = "__consumer_offsets"
"""No ``-<n>`` suffix, so the LogManager never mistakes it for an orphaned partition."""

LOG_CONFIG = LogConfig(
    segment_bytes=1 << 20,
    segment_index_bytes=64 * 1024,
    max_message_bytes=64 << 20,
    retention_ms=-1,
    retention_bytes=-1,
    append_ack=AckLevel.FSYNCED,
)
"""Small segments so a snapshot frees space promptly; large batches so a commit of thousands of
partitions is one record batch (one atomic append); acknowledged after fsync; never expired by
time or size (a quiet group's only copy may be old): only snapshots move the log start."""

_SNAPSHOT_BATCH_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class OffsetKey:
    group: str
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class GroupKey:
    group: str


Key = OffsetKey | GroupKey


@dataclass(frozen=True, slots=True)
class CommittedOffset:
    offset: int
    leader_epoch: int = -1
    metadata: str = ""
    commit_timestamp: int = 0
    """Wall-clock ms of the commit: offsets.retention.minutes counts from here (or from when
    the group became empty)."""
    expire_timestamp: int | None = None
    """Only from OffsetCommit v2-4 with an explicit retention_time_ms (Kafka's old semantics)."""
    topic_id: str | None = None
    """The topic's id when committed: an offset never outlives its topic's deletion and
    re-creation under the same name."""


@dataclass(slots=True)
class StoredMember:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    subscription: bytes
    assignment: bytes


@dataclass(slots=True)
class StoredGroup:
    """A group's metadata as of its last completed rebalance (Kafka's GroupMetadataValue)."""

    protocol_type: str | None
    generation: int
    protocol_name: str | None
    leader: str | None
    state_timestamp: int
    members: list[StoredMember] = field(default_factory=list)


Value = CommittedOffset | StoredGroup | None
Change = tuple[Key, Value]


# -- record coding (JSON: small, debuggable, versioned by its shape) --------------------------------


def encode_key(key: Key) -> bytes:
    if isinstance(key, OffsetKey):
        return json.dumps(["o", key.group, key.topic, key.partition]).encode()
    return json.dumps(["g", key.group]).encode()


def decode_key(raw: bytes) -> Key:
    parts = json.loads(raw)
    if parts[0] == "o":
        return OffsetKey(str(parts[1]), str(parts[2]), int(parts[3]))
    if parts[0] == "g":
        return GroupKey(str(parts[1]))
    raise ValueError(f"unknown key kind {parts[0]!r}")


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def encode_value(value: Value) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, CommittedOffset):
        return json.dumps(dataclasses.asdict(value)).encode()
    doc: dict[str, Any] = dataclasses.asdict(value)
    for m in doc["members"]:
        m["subscription"] = _b64(m["subscription"])
        m["assignment"] = _b64(m["assignment"])
    return json.dumps(doc).encode()


def decode_value(key: Key, raw: bytes | None) -> Value:
    if raw is None:
        return None
    doc = json.loads(raw)
    if isinstance(key, OffsetKey):
        return CommittedOffset(**doc)
    members = [
        StoredMember(
            **{
                **m,
                "subscription": base64.b64decode(m["subscription"]),
                "assignment": base64.b64decode(m["assignment"]),
            }
        )
        for m in doc.pop("members")
    ]
    return StoredGroup(**doc, members=members)


def encode_batch(changes: Iterable[Change], timestamp: int) -> bytes:
    return build_batch(
        [(encode_key(k), encode_value(v)) for k, v in changes], base_timestamp=timestamp
    )


# -- the store -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Ticket:
    changes: list[Change]
    applied: asyncio.Future[None]
    done: bool = False
    ok: bool = False


class GroupStore:
    """The materialised view plus the log. Owned by the event loop once :meth:`open` returns."""

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
        self.offsets: dict[str, dict[tuple[str, int], CommittedOffset]] = {}
        self.groups: dict[str, StoredGroup] = {}
        self.records_in_log = 0
        """Records from the log start on: garbage plus live; compared to :attr:`live` to decide
        when a snapshot pays off."""
        self.snapshots = 0
        self._tickets: deque[_Ticket] = deque()
        self._compacting: asyncio.Future[None] | None = None
        self._compaction_task: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    def open(
        cls,
        data_dir: Path,
        executor: Executor | None = None,
        clock_ms: Clock = wall_clock_ms,
        *,
        compact_min_records: int = 10_000,
    ) -> GroupStore:
        """Open (recovering after a crash) and replay. Blocking; needs no event loop."""
        partition = Partition.open(data_dir / DIR_NAME, LOG_CONFIG, clock_ms, executor=executor)
        store = cls(partition, clock_ms, compact_min_records=compact_min_records)
        store._replay()
        return store

    @property
    def live(self) -> int:
        return len(self.groups) + sum(len(v) for v in self.offsets.values())

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
            "group store: replayed %s (%s, %s live) from %s",
            plural(count, "record"),
            plural(len(self.groups), "group"),
            plural(self.live - len(self.groups), "committed offset"),
            self._log.directory,
        )

    def _read_all(self) -> Iterator[tuple[Key, Value]]:
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
                        key = decode_key(record.key)
                        value = decode_value(key, record.value)
                    except (ValueError, TypeError, KeyError, IndexError) as exc:
                        log.warning(
                            "group store: skipping the unreadable record at offset %d: %s", record.offset, exc
                        )
                        continue
                    yield key, value
                offset = max(offset, header.next_offset)
                progressed = True
            if not progressed:
                break

    def _apply(self, key: Key, value: Value) -> None:
        if isinstance(key, OffsetKey):
            tp = (key.topic, key.partition)
            if isinstance(value, CommittedOffset):
                self.offsets.setdefault(key.group, {})[tp] = value
            else:
                offsets = self.offsets.get(key.group)
                if offsets is not None:
                    offsets.pop(tp, None)
                    if not offsets:
                        del self.offsets[key.group]
        elif isinstance(value, StoredGroup):
            self.groups[key.group] = value
        else:
            self.groups.pop(key.group, None)

    # -- writing ---------------------------------------------------------------------------------

    async def write(self, changes: list[Change]) -> None:
        """Append ``changes`` as one batch (atomic: all or none survive a crash); return once
        fsynced and applied to the view. Raises a SluiceError (StorageError, LogClosedError)."""
        if not changes:
            return
        if self._closed:
            from sluice.errors import LogClosedError

            raise LogClosedError("the group store is closed")
        while self._compacting is not None:
            await asyncio.shield(self._compacting)
        ticket = _Ticket(changes, asyncio.get_running_loop().create_future())
        self._tickets.append(ticket)
        try:
            await self._partition.append(encode_batch(changes, self._clock_ms()))
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

    # -- compaction ----------------------------------------------------------------------------------

    def needs_compaction(self) -> bool:
        return self.records_in_log > max(self.compact_min_records, 2 * self.live)

    def _maybe_compact(self) -> None:
        if self.needs_compaction() and self._compaction_task is None and not self._closed:
            self._compaction_task = asyncio.get_running_loop().create_task(
                self._compact_in_background(), name="group-store-compaction"
            )

    async def _compact_in_background(self) -> None:
        try:
            await self.compact()
        except SluiceError as exc:
            log.warning("group store: compaction failed (will retry later): %s", exc)
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
            while self._tickets:
                await asyncio.shield(self._tickets[-1].applied)
            start = self._log.log_end_offset
            batch: list[Change] = []
            size = 0
            written = 0
            for change in self._snapshot():
                batch.append(change)
                size += 64 + len(encode_key(change[0])) + len(encode_value(change[1]) or b"")
                if size >= _SNAPSHOT_BATCH_BYTES:
                    await self._partition.append(encode_batch(batch, self._clock_ms()))
                    written += len(batch)
                    batch, size = [], 0
            if batch:
                await self._partition.append(encode_batch(batch, self._clock_ms()))
                written += len(batch)
            self._log.delete_records(start)
            self._log.apply_retention()
            self.records_in_log = written
            self.snapshots += 1
            log.info("group store: wrote a snapshot of %s; the log now starts at offset %d", plural(written, "record"), start)
        finally:
            self._compacting = None
            gate.set_result(None)

    def _snapshot(self) -> Iterator[Change]:
        for group_id, stored in list(self.groups.items()):
            yield GroupKey(group_id), stored
        for group_id, offsets in list(self.offsets.items()):
            for (topic, partition), committed in list(offsets.items()):
                yield OffsetKey(group_id, topic, partition), committed

    # -- closing -------------------------------------------------------------------------------------

    async def close(self) -> None:
        """Let in-flight writes and a running snapshot finish, then close the log cleanly."""
        if self._compaction_task is not None:
            await asyncio.gather(self._compaction_task, return_exceptions=True)
        while self._tickets:
            await asyncio.shield(self._tickets[-1].applied)
        self._closed = True
        await self._partition.close()

    def close_sync(self) -> None:
        """Close without a loop (a store that was opened but never written through a writer)."""
        self._closed = True
        self._log.close()

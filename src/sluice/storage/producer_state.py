"""What a partition knows of its idempotent producers (after Kafka's ProducerStateManager): per
producer id, its epoch and the sequence numbers and offsets of its last five batches, so that a
batch a producer sends again (its answer was lost) is acknowledged with its first offset and never
written twice, a gap in the sequence is refused, and an older epoch is fenced.

Batches are checked when they are *reserved* (validated and given offsets), in the order they
arrive, even though the writer writes them later: a batch that repeats one still being written
gets that batch's offset once it is acknowledged, never a second write. What a reservation changed
is undone if its write fails, so the retry is accepted.

The state is rebuilt from batch headers alone (producer id, epoch, base sequence, last offset
delta): from the newest snapshot on, at open. Snapshots are written when a segment is sealed and at
a clean close, so opening a large log reads one small file and the headers of one segment.
Producers idle for longer than ``producer.id.expiration.ms`` (by their last batch's timestamp, as
Kafka does) are forgotten; retention and DeleteRecords never forget a producer.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import field
from pathlib import Path
from typing import Any

from sluice.dataclass import dataclass
from sluice.errors import (
    InvalidProducerEpochError,
    InvalidRecordError,
    OutOfOrderSequenceError,
    UnknownProducerIdError,
)
from sluice.protocol.records import BatchHeader
from sluice.storage.files import write_atomic

log = logging.getLogger(__name__)

BATCHES_RETAINED = 5
"""As Kafka: a producer has at most five batches in flight per partition, so five suffice."""
SNAPSHOT_SUFFIX = ".snapshot"
_SEQ_MAX = (1 << 31) - 1


def last_sequence(base_sequence: int, last_offset_delta: int) -> int:
    """The batch's last sequence number; sequences wrap from 2^31-1 to 0."""
    if base_sequence > _SEQ_MAX - last_offset_delta:
        return last_offset_delta - (_SEQ_MAX - base_sequence) - 1
    return base_sequence + last_offset_delta


def is_idempotent(header: BatchHeader) -> bool:
    return header.producer_id >= 0 and header.base_sequence >= 0 and not header.is_control


@dataclass(slots=True)
class BatchMetadata:
    first_seq: int
    last_seq: int
    first_offset: int
    last_offset_delta: int
    timestamp: int
    pending: asyncio.Future[int] | None = None
    """While the batch is not yet acknowledged: the future of its append (a duplicate waits for
    it, so it is never acknowledged before the original). Dropped once done, so no request
    buffer is kept alive."""

    def settle_with(self, future: asyncio.Future[int]) -> None:
        self.pending = future
        future.add_done_callback(self._settled)

    def _settled(self, _future: asyncio.Future[int]) -> None:
        self.pending = None


@dataclass(slots=True)
class ProducerEntry:
    epoch: int
    last_timestamp: int = -1
    batches: deque[BatchMetadata] = field(default_factory=deque)

    @property
    def last_seq(self) -> int | None:
        return self.batches[-1].last_seq if self.batches else None

    def find(self, first_seq: int, last_seq: int) -> BatchMetadata | None:
        for batch in self.batches:
            if batch.first_seq == first_seq and batch.last_seq == last_seq:
                return batch
        return None

    def copy(self) -> ProducerEntry:
        return ProducerEntry(self.epoch, self.last_timestamp, deque(self.batches))

    def to_json(self) -> list[Any]:
        return [
            self.epoch,
            self.last_timestamp,
            [[b.first_seq, b.last_seq, b.first_offset, b.last_offset_delta, b.timestamp] for b in self.batches],
        ]

    @classmethod
    def from_json(cls, raw: list[Any]) -> ProducerEntry:
        epoch, last_timestamp, batches = raw
        return cls(
            int(epoch),
            int(last_timestamp),
            deque(BatchMetadata(int(a), int(b), int(c), int(d), int(e)) for a, b, c, d, e in batches),
        )


Undo = list[tuple[int, ProducerEntry | None]]
"""(producer id, its entry before a reservation changed it, or None if it had none)."""


class ProducerState:
    """One partition's producers. Owned by the partition's log (its thread, the event loop)."""

    def __init__(self, directory: Path, expiration_ms: int) -> None:
        self.directory = directory
        self.expiration_ms = expiration_ms
        self.producers: dict[int, ProducerEntry] = {}
        self.changed = False
        """Whether the state differs from the newest snapshot (a clean close then writes one)."""

    # -- the append path ---------------------------------------------------------------------------

    def check(self, header: BatchHeader) -> BatchMetadata | None:
        """Validate an idempotent batch against its producer's state: the batch it duplicates
        (then nothing is written), or None (append it). Raises the Kafka error Kafka answers."""
        pid, epoch, first_seq = header.producer_id, header.producer_epoch, header.base_sequence
        last_seq = last_sequence(first_seq, header.last_offset_delta)
        entry = self.producers.get(pid)
        if entry is None:
            if first_seq != 0:
                raise UnknownProducerIdError(
                    f"producer {pid} is unknown here (never seen, or idle past "
                    f"producer.id.expiration.ms) and its batch starts at sequence {first_seq}, not 0"
                )
            return None
        if epoch < entry.epoch:
            raise InvalidProducerEpochError(
                f"producer {pid} epoch {epoch} is older than its current epoch {entry.epoch}"
            )
        if epoch > entry.epoch:
            if first_seq != 0:
                raise OutOfOrderSequenceError(
                    f"producer {pid}'s new epoch {epoch} must start at sequence 0, not {first_seq}"
                )
            return None
        duplicate = entry.find(first_seq, last_seq)
        if duplicate is not None:
            return duplicate
        expected = entry.last_seq
        if expected is None:
            if first_seq != 0:
                raise OutOfOrderSequenceError(f"producer {pid} must start at sequence 0, not {first_seq}")
            return None
        if not (first_seq == expected + 1 or (first_seq == 0 and expected == _SEQ_MAX)):
            raise OutOfOrderSequenceError(
                f"producer {pid} sent sequence {first_seq}; the next expected is "
                f"{0 if expected == _SEQ_MAX else expected + 1}"
            )
        return None

    def record(self, header: BatchHeader, first_offset: int, undo: Undo) -> BatchMetadata:
        """Account for a batch just given offsets (``header`` as sent, ``first_offset`` assigned),
        noting in ``undo`` what to restore if its write fails."""
        pid = header.producer_id
        entry = self.producers.get(pid)
        undo.append((pid, None if entry is None else entry.copy()))
        if entry is None:
            entry = self.producers[pid] = ProducerEntry(header.producer_epoch)
        elif header.producer_epoch != entry.epoch:
            entry.epoch = header.producer_epoch
            entry.batches.clear()
        batch = BatchMetadata(
            header.base_sequence,
            last_sequence(header.base_sequence, header.last_offset_delta),
            first_offset,
            header.last_offset_delta,
            header.max_timestamp,
        )
        if len(entry.batches) == BATCHES_RETAINED:
            entry.batches.popleft()
        entry.batches.append(batch)
        entry.last_timestamp = max(entry.last_timestamp, header.max_timestamp)
        self.changed = True
        return batch

    def revert(self, undo: Undo) -> None:
        """Undo :meth:`record` calls (newest first): their batches were never written."""
        for pid, before in reversed(undo):
            if before is None:
                self.producers.pop(pid, None)
            else:
                self.producers[pid] = before
        undo.clear()

    # -- rebuilding and expiring --------------------------------------------------------------------

    def replay(self, headers: Iterable[BatchHeader]) -> None:
        """Rebuild from stored batches (their offsets as stored), in log order: no checks, the log
        is the truth."""
        for header in headers:
            if is_idempotent(header):
                self.record(header, header.base_offset, [])

    def expire(self, now_ms: int) -> int:
        """Forget producers whose last batch is older than ``producer.id.expiration.ms`` and that
        have nothing in flight; returns how many."""
        cutoff = now_ms - self.expiration_ms
        gone = [
            pid
            for pid, entry in self.producers.items()
            if entry.last_timestamp < cutoff and not any(b.pending for b in entry.batches)
        ]
        for pid in gone:
            del self.producers[pid]
        if gone:
            self.changed = True
        return len(gone)

    # -- snapshots ------------------------------------------------------------------------------

    def snapshot(self, offset: int, *, sync: bool = True) -> None:
        """Write the state as of ``offset`` (the log end it covers)."""
        write_snapshot(self.directory, offset, self.producers, sync=sync)
        self.changed = False

    def snapshots(self) -> list[Path]:
        return snapshot_files(self.directory)

    def load_newest(self, at_most: int) -> int | None:
        """Load the newest snapshot covering no more than offset ``at_most`` (newer ones, left by
        a log that was cut back by recovery, are deleted); returns its offset, None without one."""
        for path in reversed(self.snapshots()):
            offset = int(path.stem)
            if offset > at_most:
                path.unlink(missing_ok=True)
                continue
            try:
                raw = json.loads(path.read_bytes())
                self.producers = {int(p): ProducerEntry.from_json(e) for p, e in raw["producers"].items()}
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring unreadable producer snapshot %s: %s", path, exc)
                path.unlink(missing_ok=True)
                continue
            return offset
        return None


def snapshot_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob(f"*{SNAPSHOT_SUFFIX}") if p.stem.isdigit())


def write_snapshot(
    directory: Path, offset: int, producers: dict[int, ProducerEntry], *, sync: bool = True
) -> None:
    """Write ``producers`` as the state at ``offset`` (empty too: it bounds the replay after a
    crash), and keep the two newest snapshots. Any thread: it reads only what it is given."""
    body = {"offset": offset, "producers": {str(p): e.to_json() for p, e in producers.items()}}
    write_atomic(directory / f"{offset:020d}{SNAPSHOT_SUFFIX}", json.dumps(body).encode(), sync=sync)
    for stale in snapshot_files(directory)[:-2]:
        stale.unlink(missing_ok=True)


def require_single_batch(headers: list[BatchHeader]) -> None:
    """An idempotent producer's record set for one partition holds exactly one batch (Kafka's
    rule for produce v3+), so a duplicate is a whole record set, answered with one offset."""
    if len(headers) != 1 and any(is_idempotent(h) for h in headers):
        raise InvalidRecordError(
            f"a record set from an idempotent producer must hold one batch, not {len(headers)}"
        )

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
Kafka does) are forgotten, unless a transaction of theirs is open; retention and DeleteRecords never
forget a producer.

Transactions (after Kafka's ProducerAppendInfo): a transactional batch (attributes bit 4) opens
its producer's transaction on the partition at its first offset, or continues the open one; a
non-transactional batch while one is open is INVALID_TXN_STATE. A marker (a control batch the
broker writes) ends it: its epoch must be at least the producer's (else INVALID_PRODUCER_EPOCH)
and its coordinator epoch at least the last marker's (else TRANSACTION_COORDINATOR_FENCED); a
marker with a newer epoch clears the remembered batches, as Kafka's does, so the producer
continues at sequence 0. The open transactions give the partition's first unstable offset (the
LSO's bound); an ended transaction counts as unstable until its marker is below the high
watermark (Kafka's "unreplicated" transactions: here, a marker not yet fsynced on a topic
acknowledged at ``fsynced``). Open transactions are kept in snapshots, so they survive clean
stops and crashes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import field
from pathlib import Path
from typing import Any

from sluice.dataclass import dataclass
from sluice.errors import (
    InvalidProducerEpochError,
    InvalidRecordError,
    InvalidTxnStateError,
    OutOfOrderSequenceError,
    TransactionCoordinatorFencedError,
    UnknownProducerIdError,
)
from sluice.protocol.markers import Marker
from sluice.protocol.records import TRANSACTIONAL_BIT, BatchHeader
from sluice.storage.files import load_json, write_json
from sluice.storage.txn_index import AbortedTxn

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
    coordinator_epoch: int = -1
    """The coordinator epoch of the producer's last marker here (-1: none yet)."""
    txn_first_offset: int = -1
    """First offset of the producer's open transaction on this partition; -1: none open."""

    @property
    def last_seq(self) -> int | None:
        return self.batches[-1].last_seq if self.batches else None

    def find(self, first_seq: int, last_seq: int) -> BatchMetadata | None:
        for batch in self.batches:
            if batch.first_seq == first_seq and batch.last_seq == last_seq:
                return batch
        return None

    def copy(self) -> ProducerEntry:
        return ProducerEntry(
            self.epoch, self.last_timestamp, deque(self.batches), self.coordinator_epoch, self.txn_first_offset
        )

    def to_json(self) -> list[Any]:
        return [
            self.epoch,
            self.last_timestamp,
            [[b.first_seq, b.last_seq, b.first_offset, b.last_offset_delta, b.timestamp] for b in self.batches],
            self.coordinator_epoch,
            self.txn_first_offset,
        ]

    @classmethod
    def from_json(cls, raw: list[Any]) -> ProducerEntry:
        """Also the three-field form of snapshots written before transactions."""
        epoch, last_timestamp, batches, *txn = raw
        coordinator_epoch, txn_first = (int(txn[0]), int(txn[1])) if txn else (-1, -1)
        return cls(
            int(epoch),
            int(last_timestamp),
            deque(BatchMetadata(int(a), int(b), int(c), int(d), int(e)) for a, b, c, d, e in batches),
            coordinator_epoch,
            txn_first,
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
        self.ongoing: dict[int, int] = {}
        """Producer id -> first offset of its open transaction (derived from the entries)."""
        self.unreplicated: list[tuple[int, int]] = []
        """(first offset, marker offset) of ended transactions whose marker is not yet below the
        high watermark: still unstable (Kafka's unreplicatedTxns)."""
        self.first_unstable: int | None = None
        """The earliest first offset of an open or unreplicated transaction (cached)."""

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
        else:
            duplicate = entry.find(first_seq, last_seq)
            if duplicate is not None:
                return duplicate
            expected = entry.last_seq
            if expected is None:
                if first_seq != 0:
                    raise OutOfOrderSequenceError(f"producer {pid} must start at sequence 0, not {first_seq}")
            elif not (first_seq == expected + 1 or (first_seq == 0 and expected == _SEQ_MAX)):
                raise OutOfOrderSequenceError(
                    f"producer {pid} sent sequence {first_seq}; the next expected is "
                    f"{0 if expected == _SEQ_MAX else expected + 1}"
                )
        if entry.txn_first_offset >= 0 and not header.attributes & TRANSACTIONAL_BIT:
            raise InvalidTxnStateError(
                f"producer {pid} sent a non-transactional batch while its transaction (from "
                f"offset {entry.txn_first_offset}) is open"
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
        if header.attributes & TRANSACTIONAL_BIT and entry.txn_first_offset < 0:
            entry.txn_first_offset = first_offset  # opens the producer's transaction here
            self.ongoing[pid] = first_offset
            self._refresh()
        self.changed = True
        return batch

    def check_marker(self, pid: int, epoch: int, coordinator_epoch: int | None) -> int:
        """Refuse a marker from a fenced producer epoch or coordinator epoch (Kafka's rules);
        the coordinator epoch to write. None is this node's own transaction coordinator, the
        only one there is: no other can be newer, so a marker a WriteTxnMarkers request wrote
        with a higher coordinator epoch (an operator's abort, say) must not fence it. Its
        markers carry the producer's last coordinator epoch here (at least 0)."""
        entry = self.producers.get(pid)
        if coordinator_epoch is None:
            coordinator_epoch = max(0, -1 if entry is None else entry.coordinator_epoch)
        if entry is None:
            return coordinator_epoch
        if epoch < entry.epoch:
            raise InvalidProducerEpochError(
                f"a marker for producer {pid} at epoch {epoch}, older than its current epoch {entry.epoch}"
            )
        if coordinator_epoch < entry.coordinator_epoch:
            raise TransactionCoordinatorFencedError(
                f"a marker for producer {pid} from coordinator epoch {coordinator_epoch}, older "
                f"than {entry.coordinator_epoch}"
            )
        return coordinator_epoch

    def end_txn(
        self, pid: int, epoch: int, marker: Marker, offset: int, timestamp: int, undo: Undo
    ) -> AbortedTxn | None:
        """Account for a marker at ``offset`` (unchecked: see :meth:`check_marker`). Returns
        the aborted-transactions index entry it makes, if it aborts an open transaction."""
        entry = self.producers.get(pid)
        undo.append((pid, None if entry is None else entry.copy()))
        if entry is None:
            entry = self.producers[pid] = ProducerEntry(epoch)
        aborted = None
        first = entry.txn_first_offset
        if first >= 0:
            del self.ongoing[pid]
            if not marker.commit:
                others = [o for p, o in self.ongoing.items() if p != pid]
                aborted = AbortedTxn(pid, first, offset, min(others) if others else offset + 1)
            self.unreplicated.append((first, offset))
            entry.txn_first_offset = -1
        if epoch != entry.epoch:
            entry.epoch = epoch
            entry.batches.clear()
        entry.coordinator_epoch = marker.coordinator_epoch
        entry.last_timestamp = timestamp
        self.changed = True
        self._refresh()
        return aborted

    def revert(self, undo: Undo) -> None:
        """Undo :meth:`record` and :meth:`end_txn` calls (newest first): never written."""
        for pid, before in reversed(undo):
            if before is None:
                self.producers.pop(pid, None)
            else:
                self.producers[pid] = before
        if undo:
            self._rebuild_ongoing()
        undo.clear()

    def forget_unwritten(self, log_end_offset: int) -> None:
        """After reverts: ended transactions whose markers were never written are not ended."""
        if self.unreplicated:
            self.unreplicated = [t for t in self.unreplicated if t[1] < log_end_offset]
            self._refresh()

    def on_high_watermark(self, high_watermark: int) -> None:
        """Markers now below the high watermark make their transactions stable."""
        kept = [t for t in self.unreplicated if t[1] >= high_watermark]
        if len(kept) != len(self.unreplicated):
            self.unreplicated = kept
            self._refresh()

    def _rebuild_ongoing(self) -> None:
        self.ongoing = {pid: e.txn_first_offset for pid, e in self.producers.items() if e.txn_first_offset >= 0}
        self._refresh()

    def _refresh(self) -> None:
        firsts = [*self.ongoing.values(), *(first for first, _ in self.unreplicated)]
        self.first_unstable = min(firsts) if firsts else None

    # -- rebuilding and expiring --------------------------------------------------------------------

    def replay(
        self,
        batches: Iterable[tuple[BatchHeader, Marker | None]],
        aborted: Callable[[AbortedTxn], None] | None = None,
    ) -> None:
        """Rebuild from stored batches (their offsets as stored), in log order, each control
        batch with the marker it holds: no checks, the log is the truth. ``aborted`` gets each
        index entry a marker makes, for recovery to rebuild the aborted-transactions index."""
        for header, marker in batches:
            if header.is_control:
                if marker is not None and header.producer_id >= 0:
                    entry = self.end_txn(
                        header.producer_id, header.producer_epoch, marker, header.base_offset, header.max_timestamp, []
                    )
                    if entry is not None and aborted is not None:
                        aborted(entry)
            elif is_idempotent(header):
                self.record(header, header.base_offset, [])
        self.unreplicated = []  # everything replayed is written (the caller's high watermark)
        self._refresh()

    def expire(self, now_ms: int) -> int:
        """Forget producers whose last batch is older than ``producer.id.expiration.ms`` and that
        have nothing in flight; returns how many."""
        cutoff = now_ms - self.expiration_ms
        gone = [
            pid
            for pid, entry in self.producers.items()
            if entry.last_timestamp < cutoff
            and entry.txn_first_offset < 0  # an open transaction keeps its producer (Kafka's rule)
            and not any(b.pending for b in entry.batches)
        ]
        for pid in gone:
            del self.producers[pid]
        if gone:
            self.changed = True
        return len(gone)

    # -- snapshots ------------------------------------------------------------------------------

    def snapshot(self, offset: int, *, sync: bool = True, keep: int | None = None) -> None:
        """Write the state as of ``offset`` (the log end it covers); see :func:`write_snapshot`
        for ``keep``."""
        write_snapshot(self.directory, offset, self.producers, sync=sync, keep=keep)
        self.changed = False

    def snapshots(self) -> list[Path]:
        return snapshot_files(self.directory)

    def load_newest(self, at_most: int, log_end: int | None = None) -> int | None:
        """Load the newest snapshot covering no more than offset ``at_most`` (those past
        ``log_end``, default ``at_most``, left by a log that was cut back by recovery, are
        deleted); returns its offset, None without one. A snapshot that cannot be read for
        want of a descriptor, memory or a working disk raises that OSError: it is not deleted
        as unreadable, since it may be the only record of producers whose batches are gone."""
        end = at_most if log_end is None else log_end
        for path in reversed(self.snapshots()):
            offset = int(path.stem)
            if offset > at_most:
                if offset > end:
                    path.unlink(missing_ok=True)
                continue
            try:
                raw = load_json(path)
                self.producers = {int(p): ProducerEntry.from_json(e) for p, e in raw["producers"].items()}
            except FileNotFoundError:
                continue
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring unreadable producer snapshot %s: %s", path, exc)
                path.unlink(missing_ok=True)
                continue
            self.unreplicated = []
            self._rebuild_ongoing()
            return offset
        return None


def snapshot_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob(f"*{SNAPSHOT_SUFFIX}") if p.stem.isdigit())


def write_snapshot(
    directory: Path,
    offset: int,
    producers: dict[int, ProducerEntry],
    *,
    sync: bool = True,
    keep: int | None = None,
) -> None:
    """Write ``producers`` as the state at ``offset`` (empty too: it bounds the replay after a
    crash), and keep the two newest snapshots, and the newest at or below ``keep`` (the active
    segment's base: where a replay after a crash starts). Any thread: it reads only what it is
    given."""
    body = {"offset": offset, "producers": {str(p): e.to_json() for p, e in producers.items()}}
    write_json(directory / f"{offset:020d}{SNAPSHOT_SUFFIX}", body, sync=sync)
    files = snapshot_files(directory)
    kept = set(files[-2:])
    if keep is not None:
        below = [p for p in files if int(p.stem) <= keep]
        kept.update(below[-1:])
    for stale in files:
        if stale not in kept:
            stale.unlink(missing_ok=True)


def require_single_batch(headers: list[BatchHeader]) -> None:
    """An idempotent producer's record set for one partition holds exactly one batch (Kafka's
    rule for produce v3+), so a duplicate is a whole record set, answered with one offset."""
    if len(headers) != 1 and any(is_idempotent(h) for h in headers):
        raise InvalidRecordError(
            f"a record set from an idempotent producer must hold one batch, not {len(headers)}"
        )

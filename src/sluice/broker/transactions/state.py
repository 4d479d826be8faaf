"""One transactional id's state and its transitions: Kafka's TransactionMetadata, no I/O, no time.

A :class:`TxnRecord` is what the transaction log stores (Kafka's TransactionLogValue) and what
every transition produces; :class:`Transaction` holds the current record and, while a record is
being written, the state it is moving to (Kafka's ``pendingState``), which makes every other
request for that id answer CONCURRENT_TRANSACTIONS until the write is done.

States and transitions (Kafka's, for clients of transaction protocol version 1, which bump the
epoch only at InitProducerId)::

    Empty / CompleteCommit / CompleteAbort --AddPartitions/AddOffsets--> Ongoing
    Ongoing --EndTxn(commit)--> PrepareCommit --markers written--> CompleteCommit
    Ongoing --EndTxn(abort), InitProducerId, timeout--> PrepareAbort --markers--> CompleteAbort
    Empty / Complete* --InitProducerId--> Empty (epoch + 1, or a new producer id at epoch 0)
    Empty / Complete* --transactional.id.expiration.ms--> Dead (a tombstone: forgotten)

``PrepareEpochFence`` is only ever pending: fencing an ongoing transaction (a new incarnation's
InitProducerId, or the timeout) writes ``PrepareAbort`` with the epoch already bumped, so the
markers carry the new epoch and the old producer is fenced everywhere.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from enum import Enum

from sluice.dataclass import dataclass
from sluice.errors import ErrorCode

NO_PRODUCER_ID = -1
NO_EPOCH = -1
EPOCH_MAX = 32767
"""Short.MaxValue: an epoch clients never hold, kept so the coordinator can always fence."""

TopicPartition = tuple[str, int]


class TxnState(Enum):
    """Kafka's names, which DescribeTransactions and ListTransactions report."""

    EMPTY = "Empty"
    ONGOING = "Ongoing"
    PREPARE_COMMIT = "PrepareCommit"
    PREPARE_ABORT = "PrepareAbort"
    COMPLETE_COMMIT = "CompleteCommit"
    COMPLETE_ABORT = "CompleteAbort"
    DEAD = "Dead"
    PREPARE_EPOCH_FENCE = "PrepareEpochFence"

    @classmethod
    def named(cls, name: str) -> TxnState | None:
        """The state a ListTransactions filter names (exact, as Kafka's fromName), or None."""
        return next((s for s in cls if s.value == name), None)


ENDED = frozenset({TxnState.EMPTY, TxnState.COMPLETE_COMMIT, TxnState.COMPLETE_ABORT})
"""No transaction in progress: a new one may start, the epoch may be bumped, the id may expire."""
PREPARED = frozenset({TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT})
"""Decided, markers still to be written."""


def epoch_exhausted(epoch: int) -> bool:
    """Kafka's isEpochExhausted: the epoch a producer may not be given another bump from."""
    return epoch >= EPOCH_MAX - 1


@dataclass(frozen=True, slots=True)
class TxnRecord:
    """A transactional id's durable state (Kafka's TransactionLogValue, plus the groups whose
    offsets the transaction carries: Kafka keeps those as ``__consumer_offsets`` partitions)."""

    producer_id: int
    producer_epoch: int
    timeout_ms: int
    state: TxnState
    last_producer_epoch: int = NO_EPOCH
    """The epoch before the last KIP-360 bump: a producer retrying that bump gets it again."""
    previous_producer_id: int = NO_PRODUCER_ID
    """The id before the last rotation (epochs exhausted): a retry of it is not fenced."""
    partitions: frozenset[TopicPartition] = frozenset()
    groups: frozenset[str] = frozenset()
    start_timestamp: int = -1
    """Wall-clock ms the transaction started (its first partition or group), -1 if none."""
    last_update_timestamp: int = -1
    """Wall-clock ms of the last transition: transactional.id.expiration.ms counts from it."""


@dataclass(slots=True)
class Transaction:
    """One transactional id as the coordinator holds it."""

    transactional_id: str
    record: TxnRecord
    pending: TxnState | None = None
    """The state a write in flight moves to: others wait (CONCURRENT_TRANSACTIONS)."""
    unmarked: set[TopicPartition] = field(default_factory=set)
    """While Prepare*: the partitions whose marker is not written yet."""

    @property
    def state(self) -> TxnState:
        return self.record.state


def _to(record: TxnRecord, state: TxnState, now: int, **changes: object) -> TxnRecord:
    return dataclasses.replace(record, state=state, last_update_timestamp=now, **changes)  # type: ignore[arg-type]


def valid_producer_id(record: TxnRecord, producer_id: int, epoch: int) -> bool:
    """Kafka's isValidProducerId for an InitProducerId naming the id and epoch it holds
    (KIP-360): not fenced if the id was just created, is the current id, or is the previous id
    with its epochs exhausted (a retry after a rotation whose answer was lost)."""
    return (
        record.producer_epoch == NO_EPOCH
        or producer_id == record.producer_id
        or (producer_id == record.previous_producer_id and epoch_exhausted(epoch))
    )


def bump_epoch(
    record: TxnRecord, timeout_ms: int, expected_epoch: int | None, now: int
) -> TxnRecord | ErrorCode:
    """Kafka's prepareIncrementProducerEpoch: the next epoch (Empty), or the current one again
    for a retry of a bump already made, or PRODUCER_FENCED."""
    bumped = record.producer_epoch + 1
    if expected_epoch is None:
        epoch, last = bumped, NO_EPOCH  # a new incarnation: a retry of an older bump is fenced
    elif record.producer_epoch == NO_EPOCH or expected_epoch == record.producer_epoch:
        epoch, last = bumped, record.producer_epoch
    elif expected_epoch == record.last_producer_epoch:
        epoch, last = record.producer_epoch, record.last_producer_epoch
    else:
        return ErrorCode.PRODUCER_FENCED
    return _to(
        record,
        TxnState.EMPTY,
        now,
        producer_epoch=epoch,
        last_producer_epoch=last,
        timeout_ms=timeout_ms,
        partitions=frozenset(),
        groups=frozenset(),
        start_timestamp=-1,
    )


def rotate_producer_id(
    record: TxnRecord, producer_id: int, timeout_ms: int, now: int, record_last_epoch: bool
) -> TxnRecord:
    """Kafka's prepareProducerIdRotation: a new producer id at epoch 0 (epochs exhausted)."""
    return _to(
        record,
        TxnState.EMPTY,
        now,
        producer_id=producer_id,
        previous_producer_id=record.producer_id,
        producer_epoch=0,
        last_producer_epoch=record.producer_epoch if record_last_epoch else NO_EPOCH,
        timeout_ms=timeout_ms,
        partitions=frozenset(),
        groups=frozenset(),
        start_timestamp=-1,
    )


def add(
    record: TxnRecord,
    partitions: frozenset[TopicPartition],
    groups: frozenset[str],
    now: int,
) -> TxnRecord:
    """Kafka's prepareAddPartitions: Ongoing, started now unless it already was."""
    start = now if record.state in ENDED else record.start_timestamp
    return _to(
        record,
        TxnState.ONGOING,
        now,
        partitions=record.partitions | partitions,
        groups=record.groups | groups,
        start_timestamp=start,
    )


def prepare_end(record: TxnRecord, commit: bool, now: int) -> TxnRecord:
    """Kafka's prepareAbortOrCommit: the outcome decided, markers to write."""
    return _to(record, TxnState.PREPARE_COMMIT if commit else TxnState.PREPARE_ABORT, now)


def fence(record: TxnRecord, now: int) -> TxnRecord:
    """Kafka's prepareFenceProducerEpoch followed by the abort it leads to: PrepareAbort at
    the next epoch, so the markers fence the producer that ran the transaction."""
    return _to(
        record,
        TxnState.PREPARE_ABORT,
        now,
        producer_epoch=record.producer_epoch + 1,
        last_producer_epoch=NO_EPOCH,
    )


def complete(record: TxnRecord, now: int) -> TxnRecord:
    """Kafka's prepareComplete: every marker written; the transaction is over."""
    state = (
        TxnState.COMPLETE_COMMIT
        if record.state is TxnState.PREPARE_COMMIT
        else TxnState.COMPLETE_ABORT
    )
    return _to(record, state, now, partitions=frozenset(), groups=frozenset())

"""Durable transaction state: every transactional id's :class:`~.state.TxnRecord`, in a private
partition log (``DATA/__transaction_state/``), as Kafka keeps it in ``__transaction_state``.

One record per transition, keyed by transactional id; a ``None`` value (a tombstone) is an id
that expired. The log, its snapshot compaction and the order in which writes reach the view
are :class:`~sluice.broker.state_log.StateLog`'s; a transition is acknowledged after an fsync,
so what the coordinator answers from is always what a restart would replay. The encoding is
JSON, like the group store's: small at these sizes and readable when debugging.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sluice.broker.state_log import StateLog
from sluice.broker.transactions.state import NO_EPOCH, Transaction, TxnRecord, TxnState
from sluice.plural import plural

DIR_NAME = "__transaction_state"
"""No ``-<n>`` suffix, so the LogManager never mistakes it for an orphaned partition."""


def encode_record(record: TxnRecord) -> bytes:
    import json  # json on first use: a broker with no transactions reads and writes none

    partitions: dict[str, list[int]] = {}
    for topic, partition in sorted(record.partitions):
        partitions.setdefault(topic, []).append(partition)
    return json.dumps(
        {
            "producer_id": record.producer_id,
            "producer_epoch": record.producer_epoch,
            "last_producer_epoch": record.last_producer_epoch,
            "previous_producer_id": record.previous_producer_id,
            "timeout_ms": record.timeout_ms,
            "state": record.state.value,
            "partitions": partitions,
            "groups": sorted(record.groups),
            "start_timestamp": record.start_timestamp,
            "last_update_timestamp": record.last_update_timestamp,
        }
    ).encode()


def decode_record(raw: bytes) -> TxnRecord:
    import json

    doc: dict[str, Any] = json.loads(raw)
    state = TxnState.named(doc["state"])
    if state is None:
        raise ValueError(f"unknown transaction state {doc['state']!r}")
    return TxnRecord(
        producer_id=int(doc["producer_id"]),
        producer_epoch=int(doc["producer_epoch"]),
        last_producer_epoch=int(doc["last_producer_epoch"]),
        previous_producer_id=int(doc["previous_producer_id"]),
        timeout_ms=int(doc["timeout_ms"]),
        state=state,
        partitions=frozenset(
            (str(topic), int(p)) for topic, parts in doc["partitions"].items() for p in parts
        ),
        groups=frozenset(str(g) for g in doc["groups"]),
        start_timestamp=int(doc["start_timestamp"]),
        last_update_timestamp=int(doc["last_update_timestamp"]),
    )


class TransactionStore(StateLog[str, TxnRecord | None]):
    """Every transactional id, by id. The coordinator may hold a :class:`Transaction` here that
    is not durable yet (a new id whose first record is being written: epoch -1); it is never
    part of a snapshot."""

    kind = "transaction store"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.transactions: dict[str, Transaction] = {}

    @property
    def live(self) -> int:
        return len(self.transactions)

    def _replayed(self, records: int) -> str:
        by_state: dict[str, int] = {}
        for txn in self.transactions.values():
            by_state[txn.state.value] = by_state.get(txn.state.value, 0) + 1
        states = ", ".join(f"{n} {s}" for s, n in sorted(by_state.items()))
        return (
            f"{plural(len(self.transactions), 'transactional id')}{': ' + states if states else ''}"
        )

    def _encode(self, key: str, value: TxnRecord | None) -> tuple[bytes, bytes | None]:
        return key.encode(), None if value is None else encode_record(value)

    def _decode(self, key: bytes, value: bytes | None) -> tuple[str, TxnRecord | None]:
        return key.decode(), None if value is None else decode_record(value)

    def _apply(self, key: str, value: TxnRecord | None) -> None:
        if value is None:
            self.transactions.pop(key, None)
            return
        txn = self.transactions.get(key)
        if txn is None:
            self.transactions[key] = Transaction(key, value)
        else:
            txn.record = value

    def _snapshot(self) -> Iterator[tuple[str, TxnRecord | None]]:
        for txn_id, txn in list(self.transactions.items()):
            if txn.record.producer_epoch != NO_EPOCH:
                yield txn_id, txn.record

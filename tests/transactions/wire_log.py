"""What a partition holds and what the coordinator reports, read over the wire (raw Fetch and
DescribeTransactions through sluice's codec), for tests whose broker runs elsewhere (a thread,
a child process) and whose clients hide control batches."""

from __future__ import annotations

import struct
import time
from typing import NamedTuple

from sluice.protocol import ApiKey
from sluice.protocol import messages as m
from sluice.protocol.records import decode_records, iter_stored_batches
from tests.server.wire import WireClient, fetch


class StoredBatch(NamedTuple):
    base_offset: int
    producer_id: int
    producer_epoch: int
    transactional: bool
    control: bool
    values: list[bytes | None]
    """Data records' values; for a control batch, ["COMMIT"] or ["ABORT"] as bytes."""


def stored_batches(port: int, topic: str, partition: int) -> list[StoredBatch]:
    """Every batch of a partition from offset 0 to its high watermark."""
    out: list[StoredBatch] = []
    offset = 0
    with WireClient("127.0.0.1", port) as client:
        while True:
            part = fetch(client, topic, partition, offset)
            data = bytes(part.records or b"")
            progressed = False
            for h in iter_stored_batches(data):
                if h.base_offset < offset:
                    continue
                records = decode_records(data[h.position : h.position + h.size])
                if h.is_control:
                    (record,) = records
                    assert record.key is not None
                    _, kind = struct.unpack(">hh", record.key)
                    values: list[bytes | None] = [b"COMMIT" if kind == 1 else b"ABORT"]
                else:
                    values = [r.value for r in records]
                out.append(
                    StoredBatch(
                        h.base_offset,
                        h.producer_id,
                        h.producer_epoch,
                        h.is_transactional,
                        h.is_control,
                        values,
                    )
                )
                offset = h.next_offset
                progressed = True
            if not progressed or offset >= part.high_watermark:
                return out


def markers(port: int, topic: str, partition: int) -> list[bytes | None]:
    """The partition's transaction markers in order: b"COMMIT" / b"ABORT"."""
    return [b.values[0] for b in stored_batches(port, topic, partition) if b.control]


def data_values(port: int, topic: str, partition: int) -> list[bytes | None]:
    return [v for b in stored_batches(port, topic, partition) if not b.control for v in b.values]


def describe(port: int, txn_id: str) -> m.DescribedTransactionState:
    with WireClient("127.0.0.1", port) as client:
        resp = client.call(
            ApiKey.DESCRIBE_TRANSACTIONS,
            0,
            m.DescribeTransactionsRequest(transactional_ids=[txn_id]),
            m.DescribeTransactionsResponse,
        )
    (state,) = resp.transaction_states
    return state


def offset_fetch(port: int, group: str, topic: str, partition: int) -> tuple[int, int]:
    """(committed offset, error) of one partition, asked with require_stable (OffsetFetch v7)."""
    with WireClient("127.0.0.1", port) as client:
        resp = client.call(
            ApiKey.OFFSET_FETCH,
            7,
            m.OffsetFetchRequest(
                group_id=group,
                topics=[m.OffsetFetchRequestTopic(name=topic, partition_indexes=[partition])],
                require_stable=True,
            ),
            m.OffsetFetchResponse,
        )
    (p,) = resp.topics[0].partitions
    return p.committed_offset, p.error_code


def wait_for_state(
    port: int, txn_id: str, *states: str, timeout: float = 30.0, poll: float = 0.05
) -> m.DescribedTransactionState:
    """Poll DescribeTransactions until the id is in one of ``states`` (a readiness check with
    a deadline, for what a background timer does)."""
    deadline = time.monotonic() + timeout
    while True:
        d = describe(port, txn_id)
        if d.transaction_state in states:
            return d
        assert time.monotonic() < deadline, f"{txn_id} is {d.transaction_state}, not {states}"
        time.sleep(poll)

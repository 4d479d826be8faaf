"""Helpers of the transaction tests: transactional batches as a producer builds them, and a
read_committed consumer's view of a log, computed as Kafka's Java consumer does it (the aborted
transactions of each fetch, the ABORT markers ending them)."""

from __future__ import annotations

import heapq

from sluice.protocol.markers import read_marker
from sluice.protocol.records import build_batch, decode_records, iter_stored_batches
from sluice.storage import PartitionLog
from sluice.storage.txn_index import AbortedTxn

TS = 1_700_000_000_000


def txn_batch(
    pid: int, seq: int, n: int = 2, *, epoch: int = 0, tag: str = "t", ts: int = TS, transactional: bool = True
) -> bytes:
    """A transactional producer's batch of ``n`` records (values ``<tag><seq>-<i>``)."""
    records = [(f"k{i}".encode(), f"{tag}{seq}-{i}".encode()) for i in range(n)]
    return build_batch(
        records, producer_id=pid, producer_epoch=epoch, base_sequence=seq, base_timestamp=ts, transactional=transactional
    )


def committed_values(log: PartitionLog, start: int | None = None) -> list[bytes | None]:
    """The values a read_committed consumer gets from ``start`` up to the last stable offset,
    fetching 4 KiB at a time and dropping aborted transactions' records as the Java client does
    (its abortedTransactions queue and abortedProducerIds set)."""
    offset = log.log_start_offset if start is None else start
    out: list[bytes | None] = []
    queue: list[tuple[int, int]] = []
    seen: set[AbortedTxn] = set()
    aborting: set[int] = set()
    while True:
        found, aborted = log.read_committed(offset, 4096)
        if found is None:
            return out
        for txn in aborted:
            if txn not in seen:
                seen.add(txn)
                heapq.heappush(queue, (txn.first_offset, txn.producer_id))
        data = found.read()
        headers = list(iter_stored_batches(data))
        assert headers, f"no whole batch at {offset}"
        for h in headers:
            batch = data[h.position : h.position + h.size]
            if h.producer_id >= 0:
                while queue and queue[0][0] <= h.last_offset:
                    aborting.add(heapq.heappop(queue)[1])
            if h.is_control:
                marker = read_marker(h, batch)
                if marker is not None and not marker.commit:
                    aborting.discard(h.producer_id)
                continue
            if h.is_transactional and h.producer_id in aborting:
                continue
            out.extend(r.value for r in decode_records(batch) if r.offset >= offset)
        offset = headers[-1].next_offset

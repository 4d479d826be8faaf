"""Seeded random runs of appends, retries, DeleteRecords, retention, markers, crashes and clean
restarts against a model of what the partition must remember: every producer's last batch is
still recognised when it is sent again (never written twice), its next sequence is accepted,
and the last stable offset is the first offset of the earliest open transaction (never below
the log start) or the high watermark. Retention and DeleteRecords never make the partition
forget a producer; a crash must not either (it did, when they had passed the producer's
batches: a replay from the log start, a retention roll without a snapshot)."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from sluice.storage import PartitionLog

from .conftest import FakeClock
from .test_producer_state import idem
from .txns import txn_batch

OpenLog = Callable[..., PartitionLog]
IDEMPOTENT, TRANSACTIONAL = 7, 9


def batch(pid: int, seq: int, ts: int) -> bytes:
    return txn_batch(pid, seq, ts=ts) if pid == TRANSACTIONAL else idem(seq, pid=pid, ts=ts)


@pytest.mark.parametrize("seed", range(40))
def test_the_partition_remembers_its_producers_whatever_happens(
    open_log: OpenLog, clock: FakeClock, seed: int
) -> None:
    rng = random.Random(seed)
    size = len(idem(0))
    settings = {"segment_bytes": size * rng.choice([2, 3, 5, 50]), "retention_ms": rng.choice([1000, -1])}
    log = open_log(**settings)
    last: dict[int, tuple[int, int]] = {}  # producer -> (sequence, first offset) of its last batch
    open_at: int | None = None  # the model: the first offset of the open transaction
    for step in range(80):
        op = rng.choice(["append", "append", "append", "retry", "delete", "retention", "crash", "close", "marker"])
        pid = rng.choice([IDEMPOTENT, TRANSACTIONAL])
        if op == "append":
            seq = last[pid][0] + 2 if pid in last else 0
            offset = log.append(batch(pid, seq, clock.now))
            last[pid] = (seq, offset)
            if pid == TRANSACTIONAL and open_at is None:
                open_at = offset
        elif op == "retry" and pid in last:
            seq, offset = last[pid]
            end = log.log_end_offset
            assert log.append(batch(pid, seq, clock.now)) == offset, (seed, step)
            assert log.log_end_offset == end  # not written again
        elif op == "delete":
            log.delete_records(rng.randint(log.log_start_offset, log.high_watermark))
        elif op == "retention":
            clock.now += rng.choice([10, 3000])
            log.apply_retention()
        elif op == "marker" and open_at is not None:
            log.append_marker(TRANSACTIONAL, 0, 0, commit=rng.random() < 0.5)
            open_at = None
        elif op in ("crash", "close"):
            if op == "crash":
                log.abandon()
            else:
                log.close()
            log = open_log(**settings)
        expected = log.high_watermark if open_at is None else max(open_at, log.log_start_offset)
        assert log.last_stable_offset == expected, (seed, step, op)
    for pid, (seq, offset) in last.items():
        assert log.append(batch(pid, seq, clock.now)) == offset, (seed, pid)
        log.append(batch(pid, seq + 2, clock.now))  # the next one is in sequence

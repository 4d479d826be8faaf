"""The log cleaner and transactions (Kafka's rules): it cleans only below the last stable offset,
drops the records of aborted transactions whatever their keys, keeps a marker until its
transaction's records are gone and ``delete.retention.ms`` has passed, and leaves the
aborted-transactions index consistent across its swaps (and crashes in them)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from sluice.protocol.keyed import delete_horizon
from sluice.protocol.records import build_batch
from sluice.storage import PartitionLog
from sluice.storage.compaction import commit_swap, run
from sluice.storage.swaps import CHECKPOINT_FILE, swap_path, txn_swap_path
from sluice.storage.txn_index import AbortedTxn

from . import test_compaction
from .conftest import FakeClock
from .test_compaction import Make, clean, compacted, fill, headers_of, keyed, latest, records
from .txns import committed_values

make = test_compaction.make  # the fixture: a log and a cleaner of it

TS = 1_000


def txn(pairs: list[tuple[bytes, bytes | None]], pid: int, seq: int, *, epoch: int = 0) -> bytes:
    return build_batch(
        pairs, base_timestamp=TS, producer_id=pid, producer_epoch=epoch, base_sequence=seq, transactional=True
    )


def committed_latest(log: PartitionLog) -> dict[bytes, bytes]:
    """Each key's latest value as a read_committed consumer sees the log (values here are
    ``key=value``)."""
    return {v.split(b"=")[0]: v for v in committed_values(log) if v is not None and b"=" in v}


def kv(key: str, value: str) -> tuple[bytes, bytes]:
    return key.encode(), f"{key}={value}".encode()


@pytest.mark.parametrize("worker", ["thread", "process"])
def test_aborted_records_are_dropped_and_supersede_nothing(make: Make, worker: str) -> None:
    log, cleaner = make(worker=worker)
    log.append(keyed([kv("a", "committed")]))  # 0
    log.append(txn([kv("a", "aborted"), kv("b", "aborted")], pid=5, seq=0))  # 1-2
    log.append(txn([kv("c", "yes")], pid=6, seq=0))  # 3
    log.append_marker(5, 0, 0, commit=False)  # 4
    log.append_marker(6, 0, 0, commit=True)  # 5
    fill(log, 80, 4)  # other keys: rolls the transactions out of the active segment
    before = committed_latest(log)
    assert before[b"a"] == b"a=committed" and b"b" not in before and before[b"c"] == b"c=yes"
    result = clean(cleaner, log)
    assert result is not None and result.swaps
    raw = {k: v for _, k, v in records(log)}  # what is stored, read uncommitted
    assert raw[b"a"] == b"a=committed"  # the aborted a did not supersede it, nor stays itself
    assert b"b" not in raw
    assert committed_latest(log) == before
    # pid 5's aborted batch was its last: kept emptied (its sequence and epoch survive)
    five = [h for h in headers_of(log) if h.producer_id == 5]
    assert [(h.base_offset, h.records_count, h.is_control) for h in five] == [(1, 0, False), (4, 1, True)]
    # the ABORT marker stays (its transaction was still in the log when this cleaning began),
    # and with it its index entry, now in the cleaned segment's index, on disk too
    assert log.aborted_txns(0, 100) == [AbortedTxn(5, 1, 4, 3)]
    state = log.close()
    reopened = PartitionLog.open(log.directory, log.config, log.clock, state=state)
    try:
        assert reopened.aborted_txns(0, 100) == [AbortedTxn(5, 1, 4, 3)]
        assert committed_latest(reopened) == before
    finally:
        reopened.abandon()


def test_markers_stay_until_their_records_are_gone_and_delete_retention_ms_has_passed(
    make: Make, clock: FakeClock
) -> None:
    log, cleaner = make(compacted(clock, delete_retention_ms="60000"))
    log.append(txn([kv("a", "aborted")], pid=5, seq=0))  # 0
    log.append_marker(5, 0, 0, commit=False)  # 1
    log.append(txn([kv("b", "old")], pid=6, seq=0))  # 2
    log.append_marker(6, 0, 0, commit=True)  # 3
    log.append(keyed([kv("b", "new")]))  # 4: supersedes the committed b
    log.append(keyed([kv("z", "producers-last")], producer_id=5, producer_epoch=0, base_sequence=1))  # 5
    log.append(keyed([kv("y", "producers-last")], producer_id=6, producer_epoch=0, base_sequence=1))  # 6
    fill(log, 60, 3)

    def markers() -> dict[int, int | None]:
        """Offset -> delete horizon of each marker left."""
        return {h.base_offset: delete_horizon(h) for h in headers_of(log) if h.is_control and h.records_count}

    start = clock.now
    clean(cleaner, log)  # the transactions' records go; their markers stay (records were there)
    assert markers() == {1: None, 3: None}
    assert log.aborted_txns(0, 100) == [AbortedTxn(5, 0, 1, 2)]
    clock.now += 30_000
    clean(cleaner, log)  # now their transactions are empty: a delete horizon, like a tombstone
    assert markers() == {1: start + 90_000, 3: start + 90_000}
    assert log.aborted_txns(0, 100) == []  # nothing of the aborted transaction is left to hide
    clock.now += 59_000
    clean(cleaner, log)
    assert list(markers()) == [1, 3]
    clock.now += 2_000
    clean(cleaner, log)
    assert markers() == {}
    assert latest(log)[b"b"] == b"b=new"


def test_a_marker_that_is_its_producers_newest_trace_is_kept(make: Make, clock: FakeClock) -> None:
    log, cleaner = make(compacted(clock, delete_retention_ms="0"))
    log.append(txn([kv("a", "x")], pid=5, seq=0))  # 0
    log.append_marker(5, 1, 0, commit=False)  # 1: a bumped epoch: the producer's batches are forgotten
    fill(log, 60, 3)
    for _ in range(3):
        clean(cleaner, log)
    (marker,) = [h for h in headers_of(log) if h.producer_id == 5]
    assert marker.is_control and marker.producer_epoch == 1  # it holds the epoch that fences epoch 0


def test_nothing_at_or_past_the_lso_is_cleaned(make: Make) -> None:
    log, cleaner = make()
    fill(log, 40, 2)
    log.append(txn([kv("k0", "open")], pid=9, seq=0))
    open_at = log.log_end_offset - 1
    fill(log, 120, 2)
    before = records(log)
    clean(cleaner, log)
    after = records(log)
    assert [r for r in after if r[0] >= open_at] == [r for r in before if r[0] >= open_at]
    assert all(seg.next_offset <= open_at for seg in cleaner.cleanable(log).segments)  # type: ignore[union-attr]
    log.append_marker(9, 0, 0, commit=True)
    log.append(keyed([kv("k9", "push")]))
    fill(log, 40, 3)
    clean(cleaner, log)
    assert len(records(log)) < len(after)  # now past it


@pytest.mark.parametrize("stage", ["committed", "txn-index-renamed"])
def test_a_swap_with_a_transaction_index_interrupted_by_a_crash_is_finished(
    make: Make, clock: FakeClock, stage: str
) -> None:
    log, cleaner = make()
    fill(log, 30, 3)
    first_txn = log.log_end_offset
    log.append(txn([kv("a", "aborted")], pid=5, seq=0))
    marker = log.append_marker(5, 0, 0, commit=False)
    fill(log, 60, 3)
    entry = AbortedTxn(5, first_txn, marker, marker + 1)
    holder = next(seg for seg in log.segments if seg.base_offset <= marker < seg.next_offset)
    first = log.segments[0]
    assert holder is not first and holder.txn_index_path.exists() and not first.txn_index_path.exists()
    want = {k: v for k, v in latest(log).items() if k != b"a"}  # the aborted record goes
    cleanable = cleaner.cleanable(log)
    assert cleanable is not None
    plan = cleaner._plan(cleanable)
    plan.config = dataclasses.replace(plan.config, segment_bytes=1 << 20)  # one group: they merge
    output = run(plan)
    (spec,) = [g for g in output.groups if g.changed]
    assert spec.base == first.base_offset and spec.end > marker
    assert spec.txn_index and spec.aborted == [entry]
    (log.directory / CHECKPOINT_FILE).write_text(f'{{"first_dirty": 0, "gaps_below": {output.end_offset}}}')
    commit_swap(log.directory, spec, plan.token)
    assert txn_swap_path(log.directory, spec.base, spec.end).exists()
    if stage == "txn-index-renamed":
        holder.log_path.unlink()
        holder.txn_index_path.unlink()
        os.replace(txn_swap_path(log.directory, spec.base, spec.end), first.txn_index_path)
    log.abandon()
    reopened = PartitionLog.open(log.directory, log.config, clock)
    try:
        assert not list(log.directory.glob("*.swap"))
        assert reopened.segments[0].next_offset > marker  # the merged segment
        assert reopened.aborted_txns(0, 1 << 20) == [entry]
        assert first.txn_index_path.exists() and not holder.txn_index_path.exists()
        assert b"a=aborted" not in committed_values(reopened)
        assert latest(reopened) == want
    finally:
        reopened.abandon()


def test_a_crash_before_the_commit_point_leaves_the_old_index(make: Make, clock: FakeClock, tmp_path: Path) -> None:
    log, cleaner = make()
    log.append(txn([kv("a", "aborted")], pid=5, seq=0))
    log.append_marker(5, 0, 0, commit=False)
    fill(log, 60, 3)
    plan = cleaner._plan(cleaner.cleanable(log))  # type: ignore[arg-type]
    spec = run(plan).groups[0]
    # the transaction index swap file is written, the log's is not yet renamed: no commit
    from sluice.storage import txn_index
    from sluice.storage.files import write_atomic

    write_atomic(txn_swap_path(log.directory, spec.base, spec.end), txn_index.encode(spec.aborted))
    assert not swap_path(log.directory, spec.base, spec.end).exists()
    want = records(log)
    log.abandon()
    reopened = PartitionLog.open(log.directory, log.config, clock)
    try:
        assert not list(log.directory.glob("*.swap")) and not list(log.directory.glob("*.cleaned"))
        assert records(reopened) == want
        assert reopened.aborted_txns(0, 1 << 20) == [AbortedTxn(5, 0, 1, 2)]
    finally:
        reopened.abandon()


def test_a_partial_runs_gaps_past_its_map_are_accepted_by_recovery(make: Make, clock: FakeClock) -> None:
    """A run whose map filled part way through a segment still drops that segment's aborted
    batches past where the map ended: recovery from before it (no recovery point) must take
    that gap for the cleaner's, not cut the segment there and drop every segment after it."""
    log, cleaner = make(compacted(clock, segment_bytes="4000"), dedupe_buffer_size=20 * 128)
    for i in range(40):  # more keys than the map's 20: the map ends part way
        log.append(keyed([kv(f"x{i}", "1")]))
    log.append(txn([kv("a", "aborted")], pid=5, seq=0))  # 40: dropped past the map's end
    log.append_marker(5, 0, 0, commit=False)  # 41
    log.append(txn([kv("b", "yes")], pid=5, seq=1, epoch=0))  # 42: pid 5's last batch
    log.append_marker(5, 0, 0, commit=True)  # 43
    fill(log, 200, 3)  # later segments: what a cut would drop
    assert log.segments[0].next_offset > 44  # the transactions are in the first segment
    want = committed_latest(log)
    result = clean(cleaner, log)
    assert result is not None and result.swaps and result.end_offset < 40
    assert [h.base_offset for h in headers_of(log) if h.producer_id == 5][:1] == [41]  # 40 dropped
    assert committed_latest(log) == want
    got = records(log)
    log.abandon()  # a crash
    (log.directory / "recovery-point").unlink()  # recovery walks the cleaned segment too
    reopened = PartitionLog.open(log.directory, log.config, clock)
    try:
        assert reopened.recovery.bytes_truncated == 0 and reopened.recovery.segments_dropped == 0
        assert records(reopened) == got
        assert committed_latest(reopened) == want
    finally:
        reopened.abandon()

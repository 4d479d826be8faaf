"""Transactions on the partition: transactional batches open a producer's transaction, markers
end it; the last stable offset, the aborted-transactions index and read_committed reads follow;
and all of it survives snapshots, clean stops, crashes, retention and DeleteRecords."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from sluice.config import AckLevel
from sluice.errors import (
    InvalidProducerEpochError,
    InvalidRecordError,
    InvalidTxnStateError,
    OutOfOrderSequenceError,
    TransactionCoordinatorFencedError,
)
from sluice.protocol.markers import Marker, build_marker, read_marker
from sluice.protocol.records import build_batch, read_header
from sluice.storage import LogConfig, PartitionLog
from sluice.storage.partition import Partition
from sluice.storage.txn_index import AbortedTxn, collect

from .conftest import FakeClock, all_records
from .txns import TS, committed_values, txn_batch

OpenLog = Callable[..., PartitionLog]


def plain(tag: str, n: int = 1) -> bytes:
    return build_batch([(None, f"{tag}-{i}".encode()) for i in range(n)], base_timestamp=TS)


def values(log: PartitionLog) -> list[bytes | None]:
    return [v for _, v in all_records(log)]


# -- the protocol's marker -----------------------------------------------------------------------------


def test_a_marker_is_kafkas_control_batch() -> None:
    batch = build_marker(42, 3, 7, commit=False, timestamp=TS, base_offset=10)
    header = read_header(batch)
    assert header.attributes == 0x30 and header.is_control and header.is_transactional
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (42, 3, -1)
    assert (header.base_offset, header.records_count, header.last_offset_delta) == (10, 1, 0)
    assert read_marker(header, batch) == Marker(commit=False, coordinator_epoch=7)
    # one record of 16 bytes: attributes, deltas, key (int16 version 0, int16 type 0 = ABORT),
    # value (int16 version 0, int32 coordinator epoch 7), no headers
    assert batch[61:] == bytes.fromhex("20 00 00 00 08 0000 0000 0c 0000 00000007 00")
    commit = build_marker(42, 3, 7, commit=True, timestamp=TS)
    assert commit[61:] == bytes.fromhex("20 00 00 00 08 0000 0001 0c 0000 00000007 00")
    assert read_marker(read_header(commit), commit) == Marker(True, 7)


def test_clients_may_still_not_write_control_batches(open_log: OpenLog) -> None:
    log = open_log()
    with pytest.raises(InvalidRecordError, match="control"):
        log.append(build_marker(1, 0, 0, commit=True, timestamp=TS))
    assert log.log_end_offset == 0


# -- opening and ending transactions ---------------------------------------------------------------


def test_a_transactional_batch_opens_its_producers_transaction_and_holds_the_lso(open_log: OpenLog) -> None:
    log = open_log()
    log.append(plain("a", 2))  # 0-1
    assert log.last_stable_offset == log.high_watermark == 2
    log.append(txn_batch(7, 0))  # 2-3: opens pid 7's transaction at 2
    log.append(plain("b"))  # 4
    log.append(txn_batch(7, 2))  # 5-6: continues it
    assert log.high_watermark == 7
    assert log.last_stable_offset == 2
    assert committed_values(log) == [b"a-0", b"a-1"]
    assert log.read_committed(2, 1 << 20) == (None, [])
    assert log.active_producers()[0][1].txn_first_offset == 2
    marker = log.append_marker(7, 0, 0, commit=True)
    assert marker == 7 and log.last_stable_offset == log.high_watermark == 8
    assert committed_values(log) == [b"a-0", b"a-1", b"t0-0", b"t0-1", b"b-0", b"t2-0", b"t2-1"]
    assert log.aborted_txns(0, 100) == []  # a commit needs no index entry


def test_the_lso_is_the_earliest_open_transaction(open_log: OpenLog) -> None:
    log = open_log()
    log.append(txn_batch(1, 0))  # 0-1
    log.append(txn_batch(2, 0))  # 2-3
    log.append(txn_batch(3, 0))  # 4-5
    assert log.last_stable_offset == 0
    log.append_marker(2, 0, 0, commit=True)  # 6: not the earliest
    assert log.last_stable_offset == 0
    log.append_marker(1, 0, 0, commit=False)  # 7
    assert log.last_stable_offset == 4  # pid 3's
    log.append_marker(3, 0, 0, commit=True)  # 8
    assert log.last_stable_offset == 9
    # Kafka's entry: the LSO once pid 1 aborted was pid 3's first offset (pid 2 had ended)
    assert log.aborted_txns(0, 100) == [AbortedTxn(1, 0, 7, 4)]
    assert committed_values(log) == [b"t0-0", b"t0-1", b"t0-0", b"t0-1"]


def test_an_abort_is_indexed_and_read_committed_returns_the_aborted_transactions(open_log: OpenLog) -> None:
    log = open_log()
    log.append(txn_batch(5, 0, tag="x"))  # 0-1
    log.append(plain("c"))  # 2
    log.append(txn_batch(5, 2, tag="x"))  # 3-4
    assert log.append_marker(5, 0, 9, commit=False) == 5
    assert log.last_stable_offset == 6
    assert log.active_segment.aborted_txns == [AbortedTxn(5, 0, 5, 6)]
    found, aborted = log.read_committed(0, 1 << 20)
    assert found is not None and aborted == [AbortedTxn(5, 0, 5, 6)]
    # Kafka's rule: only transactions overlapping [fetch offset, upper bound of what is returned)
    assert log.aborted_txns(6, 100) == []
    assert committed_values(log) == [b"c-0"]
    # the producer goes on with its next transaction, sequence continuing
    log.append(txn_batch(5, 4, tag="y"))  # 6-7
    log.append_marker(5, 0, 9, commit=True)  # 8
    assert committed_values(log) == [b"c-0", b"y4-0", b"y4-1"]


class CountingEntries(Sequence[AbortedTxn]):
    """A segment's index entries that count how many of them a search looks at."""

    def __init__(self, entries: list[AbortedTxn]) -> None:
        self.entries = entries
        self.looked_at = 0

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> AbortedTxn:  # type: ignore[override]
        self.looked_at += 1
        return self.entries[i]


def test_a_read_committed_search_skips_the_aborted_transactions_before_the_fetch() -> None:
    # 100,000 aborted transactions of one producer, interleaved with a long open one of
    # another (so their LSOs stay low): a fetch near the end must not look at each of them.
    entries = [AbortedTxn(1, 10 + 3 * i, 11 + 3 * i, 5) for i in range(100_000)]
    counting = CountingEntries(entries)
    out: list[AbortedTxn] = []
    assert not collect(counting, 300_000, 300_012, out)
    assert out == entries[-3:]
    assert counting.looked_at < 100  # a binary search, then the overlapping entries
    # the same answers as looking at every entry (the search before), for random ranges
    rng = random.Random(5)
    marker = 0
    made: list[AbortedTxn] = []
    for _ in range(300):
        marker += rng.randint(1, 20)
        first = marker - rng.randint(1, 40)
        made.append(AbortedTxn(7, first, marker, rng.choice([marker + 1, max(0, first - 3)])))
    for _ in range(500):
        start = rng.randint(0, marker + 5)
        upper = start + rng.randint(1, 60)
        found: list[AbortedTxn] = []
        done = collect(made, start, upper, found)
        expected: list[AbortedTxn] = []
        expected_done = False
        for entry in made:
            if entry.last_offset >= start and entry.first_offset < upper:
                expected.append(entry)
            if entry.last_stable_offset >= upper:
                expected_done = True
                break
        assert (found, done) == (expected, expected_done)


def test_a_marker_without_an_open_transaction_is_harmless(open_log: OpenLog) -> None:
    log = open_log()
    log.append(plain("a"))
    assert log.append_marker(11, 0, 0, commit=False) == 1  # never seen: Kafka writes it too
    assert log.append_marker(11, 0, 0, commit=True) == 2
    assert log.last_stable_offset == log.high_watermark == 3
    assert log.aborted_txns(0, 10) == []
    assert committed_values(log) == [b"a-0"]
    (pid, entry), = log.active_producers()
    assert (pid, entry.epoch, entry.coordinator_epoch, entry.txn_first_offset) == (11, 0, 0, -1)


def test_a_non_transactional_batch_inside_a_transaction_is_refused(open_log: OpenLog) -> None:
    log = open_log()
    log.append(txn_batch(7, 0))
    with pytest.raises(InvalidTxnStateError):
        log.append(txn_batch(7, 2, transactional=False))
    assert log.log_end_offset == 2
    log.append_marker(7, 0, 0, commit=True)
    assert log.append(txn_batch(7, 2, transactional=False)) == 3  # outside one it is fine


def test_marker_epochs_fence_old_producers_and_coordinators(open_log: OpenLog) -> None:
    log = open_log()
    log.append(txn_batch(7, 0, epoch=3))
    with pytest.raises(InvalidProducerEpochError):
        log.append_marker(7, 2, 0, commit=True)
    log.append_marker(7, 3, 5, commit=False)
    with pytest.raises(TransactionCoordinatorFencedError):
        log.append_marker(7, 3, 4, commit=True)
    assert log.log_end_offset == 3  # the refused markers wrote nothing
    assert log.aborted_txns(0, 10) == [AbortedTxn(7, 0, 2, 3)]


def test_sequences_after_a_marker_are_kafkas(open_log: OpenLog) -> None:
    log = open_log()
    log.append(txn_batch(7, 0))
    log.append_marker(7, 0, 0, commit=True)
    # same epoch: the sequence continues, and a retry of the last batch is still known
    assert log.append(txn_batch(7, 0)) == 0
    with pytest.raises(OutOfOrderSequenceError):
        log.append(txn_batch(7, 0 + 5))
    log.append(txn_batch(7, 2))  # 3-4
    # the coordinator aborts with a bumped epoch (a timed-out transaction): the remembered
    # batches go, the producer continues at its new epoch from sequence 0
    log.append_marker(7, 1, 0, commit=False)
    with pytest.raises(InvalidProducerEpochError):
        log.append(txn_batch(7, 4, epoch=0))
    with pytest.raises(OutOfOrderSequenceError):
        log.append(txn_batch(7, 4, epoch=1))
    assert log.append(txn_batch(7, 0, epoch=1)) == 6


def test_a_producer_with_an_open_transaction_never_expires(open_log: OpenLog, clock: FakeClock) -> None:
    log = open_log()
    log.producer_expiration_ms = 1000
    log.append(txn_batch(1, 0, ts=clock.now))
    log.append(txn_batch(2, 0, ts=clock.now))
    log.append_marker(2, 0, 0, commit=True)
    clock.now += 10_000
    assert log.expire_producers(clock.now) == 1  # pid 2, whose transaction ended
    assert [pid for pid, _ in log.active_producers()] == [1]
    assert log.last_stable_offset == 0


def test_a_marker_not_yet_fsynced_keeps_its_transaction_unstable(open_log: OpenLog) -> None:
    """On a topic acknowledged at fsynced, the high watermark is the fsynced offset: an ended
    transaction stays below the LSO until its marker is below the high watermark (Kafka's
    unreplicated transactions)."""
    log = open_log(sluice_append_ack="fsynced")
    log.append(plain("a"))  # fsynced: high watermark 1
    log.append(txn_batch(7, 0))  # 1-2
    assert (log.high_watermark, log.last_stable_offset) == (3, 1)
    reservation = log.reserve_marker(7, 0, 0, False, AckLevel.FSYNCED)
    log.write_inline([reservation])  # written, not yet fsynced
    assert log.log_end_offset == 4 and log.high_watermark == 3
    assert log.last_stable_offset == 1  # the transaction ended, but its marker is not visible
    assert committed_values(log) == [b"a-0"]
    log.flush()
    assert (log.high_watermark, log.last_stable_offset) == (4, 4)
    assert committed_values(log) == [b"a-0"]


def test_a_failed_marker_write_changes_nothing(open_log: OpenLog, tmp_path: Path) -> None:
    from .test_writer import file_size_limit

    log = open_log()
    log.append(txn_batch(7, 0))
    size = log.active_segment.size
    with file_size_limit(size + 10), pytest.raises(Exception, match="failed"):
        log.append_marker(7, 0, 0, commit=False)
    assert log.log_end_offset == 2 and log.last_stable_offset == 0
    assert log.active_producers()[0][1].txn_first_offset == 0
    assert log.aborted_txns(0, 10) == []
    assert log.append_marker(7, 0, 0, commit=False) == 2  # the retry is accepted
    assert log.aborted_txns(0, 10) == [AbortedTxn(7, 0, 2, 3)]


# -- the writer path: markers behind appends --------------------------------------------------------


def test_a_marker_through_the_writer_lands_behind_the_appends_and_is_fsynced(tmp_path: Path) -> None:
    async def main() -> None:
        part = Partition.open(tmp_path / "p", LogConfig.from_dict({"sluice.append.ack": "written"}))
        try:
            # Tasks start in creation order: the marker is submitted after the five appends.
            appends = [asyncio.ensure_future(part.append(txn_batch(7, 2 * i))) for i in range(5)]
            marker = asyncio.ensure_future(part.write_txn_marker(7, 0, 0, commit=False))
            assert await asyncio.gather(*appends, marker) == [0, 2, 4, 6, 8, 10]
            assert part.log.flushed_offset == 11  # durable when answered, whatever the topic's ack
            assert part.log.last_stable_offset == 11
            assert part.log.aborted_txns(0, 20) == [AbortedTxn(7, 0, 10, 11)]
            with pytest.raises(InvalidProducerEpochError):
                await part.write_txn_marker(7, -1, 0, True)
            with pytest.raises(TransactionCoordinatorFencedError):
                await part.write_txn_marker(7, 0, -1, True)
            assert part.log.log_end_offset == 11
        finally:
            await part.close()

    asyncio.run(main())


# -- durability: snapshots, clean stops, crashes ---------------------------------------------------


def test_open_transactions_and_the_index_survive_a_clean_stop(open_log: OpenLog, tmp_path: Path) -> None:
    log = open_log(segment_bytes=300)
    log.append(txn_batch(1, 0, tag="gone"))
    log.append(txn_batch(2, 0, tag="open"))
    log.append(plain("p", 3))
    log.append_marker(1, 0, 0, commit=False)
    log.append(txn_batch(3, 0, tag="kept"))
    log.append_marker(3, 0, 0, commit=True)
    assert len(log.segments) > 1
    lso, aborted = log.last_stable_offset, log.aborted_txns(0, 100)
    assert lso == 2 and aborted == [AbortedTxn(1, 0, 7, 2)]
    assert committed_values(log) == []  # pid 1's aborted records, below pid 2's open transaction
    state = log.close()
    assert state.ongoing_txns
    # from the clean-shutdown state (the log manager's way: no file is read but the snapshot)
    reopened = PartitionLog.open(log.directory, log.config, log.clock, state=state)
    try:
        assert reopened.last_stable_offset == lso
        reopened.append_marker(2, 0, 0, commit=True)
        assert reopened.aborted_txns(0, 100) == aborted
        assert committed_values(reopened) == [b"open0-0", b"open0-1", b"p-0", b"p-1", b"p-2", b"kept0-0", b"kept0-1"]
    finally:
        reopened.close()


@pytest.mark.parametrize("snapshots", ["kept", "lost"])
def test_a_crash_rebuilds_the_lso_and_the_index_from_the_log(open_log: OpenLog, snapshots: str) -> None:
    log = open_log(segment_bytes=400)
    expected_values: list[bytes | None] = []
    for round_no in range(6):
        pid = 100 + round_no
        log.append(txn_batch(pid, 0, tag=f"r{round_no}"))
        log.append(plain(f"p{round_no}"))
        expected_values.append(f"p{round_no}-0".encode())
        commit = round_no % 2 == 0
        log.append_marker(pid, 0, 0, commit=commit)
        if commit:
            expected_values[-1:-1] = [f"r{round_no}0-0".encode(), f"r{round_no}0-1".encode()]
    log.append(txn_batch(999, 0, tag="open"))  # left open by the crash
    open_at = log.log_end_offset - 2
    assert len(log.segments) >= 3
    aborted = log.aborted_txns(0, 1 << 20)
    assert [t.producer_id for t in aborted] == [101, 103, 105]
    log.abandon()  # a crash
    if snapshots == "lost":
        for path in log.directory.glob("*.snapshot"):
            path.unlink()
    reopened = open_log(segment_bytes=400)
    assert not reopened.recovery.clean
    assert reopened.last_stable_offset == open_at
    assert reopened.aborted_txns(0, 1 << 20) == aborted
    assert committed_values(reopened) == expected_values
    reopened.append_marker(999, 0, 0, commit=True)
    assert committed_values(reopened)[-2:] == [b"open0-0", b"open0-1"]


def test_recovery_rebuilds_an_index_file_changed_behind_the_brokers_back(open_log: OpenLog) -> None:
    log = open_log(segment_bytes=300)
    log.append(txn_batch(1, 0))
    log.append_marker(1, 0, 0, commit=False)
    for i in range(4):
        log.append(plain(f"f{i}", 3))
    sealed = log.segments[0]
    assert sealed.txn_index_path.exists()
    aborted = log.aborted_txns(0, 100)
    log.abandon()
    sealed.txn_index_path.write_bytes(b"\x00" * 7)  # not a whole entry
    reopened = open_log(segment_bytes=300)
    assert reopened.aborted_txns(0, 100) == aborted


def test_the_index_goes_with_its_segment(open_log: OpenLog, clock: FakeClock) -> None:
    log = open_log(segment_bytes=300, retention_ms=1000)
    log.append(txn_batch(1, 0, ts=clock.now))
    log.append_marker(1, 0, 0, commit=False)
    first = log.segments[0]
    while len(log.segments) < 3:
        log.append(plain("x", 3))
    assert first.txn_index_path.exists()
    clock.now += 10**9
    log.append(build_batch([(None, b"new")], base_timestamp=clock.now))
    assert log.apply_retention() >= 1
    assert not first.txn_index_path.exists()
    assert log.aborted_txns(0, 1 << 20) == []


def test_delete_records_past_an_open_transaction_moves_the_lso_with_the_log_start(open_log: OpenLog) -> None:
    log = open_log()
    log.append(txn_batch(1, 0))  # 0-1
    log.append(plain("a", 3))  # 2-4
    assert log.last_stable_offset == 0
    log.delete_records(3)
    assert log.last_stable_offset == 3  # Kafka: the first unstable offset is never below the log start
    assert committed_values(log) == []  # nothing below the LSO but what was deleted
    log.append_marker(1, 0, 0, commit=True)
    assert committed_values(log) == [b"a-1", b"a-2"]


def test_retention_never_deletes_past_the_high_watermark(open_log: OpenLog, clock: FakeClock) -> None:
    log = open_log(segment_bytes=200, retention_ms=1000, sluice_append_ack="fsynced")
    log.append(plain("durable"))
    for i in range(6):  # written, not fsynced: rolled segments above the high watermark
        log.append(build_batch([(None, f"late{i}".encode() * 10)], base_timestamp=clock.now), AckLevel.WRITTEN)
    assert len(log.segments) > 2 and log.high_watermark == 1
    clock.now += 10**9
    log.apply_retention()
    assert log.log_start_offset <= log.high_watermark
    assert all(seg.next_offset > 1 for seg in log.segments)


@pytest.mark.parametrize("removal", ["delete_records", "retention"])
@pytest.mark.parametrize("stop", ["clean", "crash"])
def test_a_transaction_whose_start_was_deleted_stays_open_across_a_restart(
    open_log: OpenLog, clock: FakeClock, removal: str, stop: str
) -> None:
    """DeleteRecords or retention may pass an open transaction's first offset (Kafka's rule: only
    the high watermark bounds them), taking the segment holding its first batch with it. Its
    later records must still wait for its marker after a restart: the producer state that knows
    the transaction is open comes from a snapshot, since the log no longer holds its start."""
    log = open_log(segment_bytes=300, retention_ms=1000)
    log.append(txn_batch(7, 0, tag="first", ts=clock.now))  # 0-1: opens the transaction
    log.append(plain("a", 3))
    while len(log.segments) < 3:
        log.append(plain("b", 3))
    log.append(txn_batch(7, 2, tag="later", ts=clock.now))  # the same transaction, later on
    while len(log.segments) < 5:
        log.append(build_batch([(None, b"c")], base_timestamp=clock.now + 10**9))
    if removal == "delete_records":
        log.delete_records(log.segments[2].base_offset)
    else:
        clock.now += 2000  # the first two segments expire; the third holds newer records
        assert log.apply_retention() == 2
    start = log.log_start_offset
    assert start > 1 and log.last_stable_offset == start
    if stop == "clean":
        log.close()
    else:
        log.abandon()
    reopened = open_log(segment_bytes=300, retention_ms=1000)
    assert reopened.log_start_offset == start
    assert reopened.last_stable_offset == start  # still open
    assert committed_values(reopened) == []
    reopened.append_marker(7, 0, 0, commit=False)
    seen = committed_values(reopened)
    assert seen and not [v for v in seen if v is not None and v.startswith(b"later")]


def test_a_transaction_whose_start_delete_records_passed_inside_a_segment_survives_a_crash(
    open_log: OpenLog,
) -> None:
    """DeleteRecords past an open transaction's first batch, inside the only segment: that
    batch stays in the file, the only record (before a snapshot) that the transaction is open.
    After a crash the transaction must still hold the LSO at the log start and its producer go
    on with it; the replay used to start at the log start and forgot both (the records after
    the LSO became visible to read_committed, the producer's next batch was refused)."""
    log = open_log()
    log.append(txn_batch(7, 0, tag="first"))  # 0-1: opens the transaction
    log.append(plain("a"))  # 2
    assert log.delete_records(-1) == 3 and len(log.segments) == 1
    log.append(plain("b"))  # 3
    assert log.last_stable_offset == 3 and committed_values(log) == []
    log.abandon()
    reopened = open_log()
    assert reopened.log_start_offset == 3
    assert reopened.last_stable_offset == 3  # still open
    assert committed_values(reopened) == []
    assert reopened.append(txn_batch(7, 2, tag="later")) == 4  # the same transaction goes on
    reopened.append_marker(7, 0, 0, commit=False)
    assert committed_values(reopened) == [b"b-0"]

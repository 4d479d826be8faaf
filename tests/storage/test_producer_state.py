"""The idempotent producer's rules in the log: duplicates of the last five batches are answered
with their original offsets and never written twice, gaps and old epochs are refused, sequences
wrap, idle producers expire, and the state survives restarts (from the log, and from a snapshot
plus the batches after it) and retention."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from sluice.errors import (
    InvalidProducerEpochError,
    InvalidRecordError,
    OutOfOrderSequenceError,
    StorageError,
    UnknownProducerIdError,
)
from sluice.protocol.records import build_batch
from sluice.storage import LogConfig, PartitionLog
from sluice.storage.files import write_int
from sluice.storage.loader import RECOVERY_POINT_FILE
from sluice.storage.partition import Partition
from sluice.storage.producer_state import last_sequence

from .conftest import FakeClock, all_records
from .test_writer import file_size_limit

OpenLog = Callable[..., PartitionLog]
PID = 7


def idem(seq: int, n: int = 2, *, pid: int = PID, epoch: int = 0, tag: str = "v", ts: int = 1_700_000_000_000) -> bytes:
    """An idempotent producer's batch of ``n`` records starting at sequence ``seq``."""
    records = [(None, f"{tag}{seq}-{i}".encode()) for i in range(n)]
    return build_batch(records, producer_id=pid, producer_epoch=epoch, base_sequence=seq, base_timestamp=ts)


def values(log: PartitionLog) -> list[bytes | None]:
    return [v for _, v in all_records(log)]


def test_a_retry_of_any_of_the_last_five_batches_gets_its_offset_and_is_not_written(open_log: OpenLog) -> None:
    log = open_log()
    offsets = [log.append(idem(seq)) for seq in range(0, 12, 2)]  # six batches of two records
    assert offsets == list(range(0, 12, 2))
    end = log.log_end_offset
    for seq, offset in zip(range(2, 12, 2), offsets[1:], strict=True):  # the last five
        assert log.append(idem(seq)) == offset
    assert log.log_end_offset == end
    assert len(values(log)) == 12
    # the sixth-newest is no longer remembered: it is out of sequence
    with pytest.raises(OutOfOrderSequenceError):
        log.append(idem(0))


def test_a_gap_is_refused_and_changes_nothing(open_log: OpenLog) -> None:
    log = open_log()
    log.append(idem(0))
    with pytest.raises(OutOfOrderSequenceError, match="next expected is 2"):
        log.append(idem(4))
    assert log.log_end_offset == 2
    assert log.append(idem(2)) == 2  # the expected one still goes in


def test_epochs_fence_and_a_new_epoch_starts_at_zero(open_log: OpenLog) -> None:
    log = open_log()
    log.append(idem(0, epoch=3))
    with pytest.raises(InvalidProducerEpochError):
        log.append(idem(2, epoch=2))  # a zombie from before the bump
    with pytest.raises(OutOfOrderSequenceError, match="new epoch"):
        log.append(idem(5, epoch=4))
    assert log.append(idem(0, epoch=4)) == 2
    with pytest.raises(InvalidProducerEpochError):
        log.append(idem(2, epoch=3))  # the old epoch is fenced now
    # a retry from the old epoch's batches is not a duplicate under the new epoch
    with pytest.raises(InvalidProducerEpochError):
        log.append(idem(0, epoch=3))


def test_an_unknown_producer_must_start_at_zero(open_log: OpenLog) -> None:
    log = open_log()
    with pytest.raises(UnknownProducerIdError):
        log.append(idem(10))
    assert log.log_end_offset == 0
    assert log.append(idem(0)) == 0


def test_sequences_wrap_around(open_log: OpenLog) -> None:
    log = open_log()
    top = 2**31 - 1
    assert last_sequence(top - 2, 4) == 1
    log.append(build_batch([(None, b"a")], producer_id=PID, producer_epoch=0, base_sequence=0))
    # jump the producer to near the top via a new epoch (a new epoch starts at 0, so rather
    # append sequentially with big batches: simulate by a producer whose state says top - 3)
    state = log.producer_state()
    state.producers[PID].batches[-1].last_seq = top - 3
    assert log.append(idem(top - 2, 5)) == 1  # top-2 .. top, 0, 1
    assert log.append(idem(2, 1)) == 6
    assert log.append(idem(top - 2, 5)) == 1  # a duplicate across the wrap


def test_idle_producers_expire(open_log: OpenLog, clock: FakeClock) -> None:
    log = open_log()
    log.producer_expiration_ms = 1000
    log.append(idem(0, ts=clock.now))
    assert log.expire_producers(clock.now + 999) == 0
    assert log.expire_producers(clock.now + 1001) == 1
    with pytest.raises(UnknownProducerIdError):
        log.append(idem(2, ts=clock.now))


def test_a_producer_record_set_holds_one_batch(open_log: OpenLog) -> None:
    log = open_log()
    with pytest.raises(InvalidRecordError, match="one batch"):
        log.append(idem(0) + idem(2))
    assert log.log_end_offset == 0


def test_the_state_is_rebuilt_from_the_log_after_a_crash(open_log: OpenLog) -> None:
    log = open_log()
    for seq in range(0, 8, 2):
        log.append(idem(seq))
    log.abandon()  # no clean close, no snapshot
    again = open_log()
    assert not again.recovery.clean
    assert again.append(idem(6)) == 6  # the last batch is recognised
    assert again.append(idem(8)) == 8


def test_snapshot_at_roll_plus_the_batches_after_it(open_log: OpenLog, tmp_path: Path) -> None:
    batch_size = len(idem(0))
    log = open_log(segment_bytes=batch_size * 3)
    for seq in range(0, 20, 2):
        log.append(idem(seq))
    assert len(log.segments) > 2
    snapshots = sorted((tmp_path / "p-0").glob("*.snapshot"))
    assert 1 <= len(snapshots) <= 2  # written at rolls, the two newest kept
    log.abandon()
    again = open_log(segment_bytes=batch_size * 3)
    assert again.append(idem(18)) == 18  # duplicate found: snapshot + replay of the tail
    assert again.append(idem(20)) == 20


def test_a_clean_reopen_loads_the_snapshot_lazily(open_log: OpenLog, tmp_path: Path) -> None:
    log = open_log()
    log.append(idem(0))
    log.append(idem(2))
    state = log.close(marker=False)
    assert state.producers == 4  # a snapshot at the log end
    again = PartitionLog.open(tmp_path / "p-0", LogConfig(), state=state)
    assert again.append(idem(2)) == 2
    assert again.append(idem(4)) == 4
    again.abandon()


def test_a_partition_without_producers_reopens_with_nothing_to_load(open_log: OpenLog, tmp_path: Path) -> None:
    log = open_log()
    log.append(build_batch([(None, b"plain")]))
    state = log.close(marker=False)
    assert state.producers == -1
    assert list((tmp_path / "p-0").glob("*.snapshot")) == []


def test_a_log_opened_on_its_own_reopens_from_its_marker_without_reading_segments(
    open_log: OpenLog, tmp_path: Path
) -> None:
    """A clean close's marker says where the producer state is (nowhere, here): the reopen does
    not replay the segments' headers to find out (it read them all before: ~0.8 s a GiB)."""
    log = open_log()
    for _ in range(2000):
        log.append(build_batch([(None, b"plain")]))
    log.close()  # with its marker, as a log opened on its own closes
    read_before = _bytes_read()
    again = PartitionLog.open(tmp_path / "p-0", LogConfig())
    # the marker and the indexes' metadata, not 2000 batch headers (61 bytes each)
    assert _bytes_read() - read_before < 20_000
    assert again.recovery.clean and again.log_end_offset == 2000
    assert again.append(idem(0)) == 2000  # idempotent producers are checked as usual after it
    assert again.append(idem(0)) == 2000


def _bytes_read() -> int:
    """What this process has read so far (read and pread calls alike)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def test_retention_and_delete_records_keep_deduplication(open_log: OpenLog) -> None:
    batch_size = len(idem(0))
    log = open_log(segment_bytes=batch_size * 2)
    for seq in range(0, 10, 2):
        log.append(idem(seq))
    log.delete_records(-1)  # everything below the high watermark goes
    assert log.log_start_offset == 10
    assert log.append(idem(8)) == 8  # still a duplicate, answered with its (deleted) offset
    assert log.append(idem(10)) == 10


def test_delete_records_inside_a_segment_keeps_the_producer_across_a_crash(open_log: OpenLog) -> None:
    """DeleteRecords moves the log start inside the only segment: the batches below it stay in
    the file and are the only record of their producer until a snapshot is written. A crash
    then must not forget it (the replay used to start at the log start)."""
    log = open_log()
    log.append(idem(0))
    log.append(idem(2))
    assert log.delete_records(-1) == 4 and len(log.segments) == 1
    log.abandon()  # a crash: no snapshot, no clean-shutdown state
    again = open_log()
    assert again.log_start_offset == 4
    assert again.append(idem(2)) == 2  # still a duplicate, answered with its (deleted) offset
    assert again.append(idem(4)) == 4  # and the sequence goes on (was UNKNOWN_PRODUCER_ID)


def test_retention_of_the_expired_active_segment_keeps_the_producer_across_a_crash(
    open_log: OpenLog, clock: FakeClock
) -> None:
    """Retention rolls an expired active segment and deletes it: its batch headers were the
    only record of what its producers wrote since the last snapshot, so the roll writes one
    first, as a roll through the writer does. Without it a crash rebuilt the state of an older
    snapshot: the next batch was out of sequence and a retry of an appended one was taken
    again."""
    size = len(idem(0))
    log = open_log(segment_bytes=size * 3, retention_ms=1000)
    for seq in range(0, 10, 2):
        log.append(idem(seq, ts=clock.now))  # offsets 0-9, a roll (and a snapshot) at 6
    assert [s.base_offset for s in log.segments] == [0, 6]
    clock.now += 5000
    assert log.apply_retention() == 2  # the active segment rolled, then both deleted
    assert log.log_start_offset == log.log_end_offset == 10
    log.abandon()
    again = open_log(segment_bytes=size * 3, retention_ms=1000)
    assert again.append(idem(6, ts=clock.now)) == 6  # a duplicate, not written again
    assert again.append(idem(10, ts=clock.now)) == 10  # no gap (was OUT_OF_ORDER_SEQUENCE_NUMBER)
    assert again.log_end_offset == 12


def test_a_recovery_that_walked_sealed_segments_snapshots_before_retention_deletes_them(
    open_log: OpenLog, clock: FakeClock
) -> None:
    """A crash after a roll committed but before its seal wrote the snapshot at the new base
    (the seal runs after, in the writer's thread): recovery walks the sealed segment, rebuilds
    the state and moves the recovery point past it. Unless it writes that snapshot itself,
    retention may then delete the segment, and a second crash rebuilt the state without the
    producers that only wrote there (the next batch was refused UNKNOWN_PRODUCER_ID)."""
    size = len(idem(0))
    log = open_log(segment_bytes=size * 3, retention_ms=1000)
    for seq in range(0, 6, 2):
        log.append(idem(seq, ts=clock.now))  # 0-5: the producer's only batches
    clock.now += 10_000
    log.append(build_batch([(None, b"other")] * 2, base_timestamp=clock.now))  # 6-7: a roll at 6
    assert [s.base_offset for s in log.segments] == [0, 6]
    directory = log.directory
    log.abandon()
    # as the crash left it before the roll's seal: no snapshot at 6, the recovery point at 0
    (directory / f"{6:020d}.snapshot").unlink()
    write_int(directory / RECOVERY_POINT_FILE, 0)
    recovered = open_log(segment_bytes=size * 3, retention_ms=1000)
    clock.now += 500
    assert recovered.apply_retention() == 1  # the first segment (expired) goes
    recovered.abandon()  # a second crash
    again = open_log(segment_bytes=size * 3, retention_ms=1000)
    assert again.append(idem(4, ts=clock.now)) == 4  # still a duplicate
    assert again.append(idem(6, ts=clock.now)) == 8  # in sequence


def test_a_failed_write_forgets_the_batch_so_its_retry_is_accepted(open_log: OpenLog) -> None:
    log = open_log(sluice_append_mode="inline")
    log.append(idem(0))
    big = idem(2, 50)
    with file_size_limit(log.active_segment.size + 10), pytest.raises(StorageError):
        log.append(big)
    assert log.append(big) == 2  # not a duplicate of a batch that was never written
    assert log.log_end_offset == 52


def test_a_retry_of_a_batch_still_being_written_waits_and_gets_its_offset(open_log: OpenLog) -> None:
    """The writer holds the original (its fsync is held): the retry arrives meanwhile, is not
    written again, and is answered with the original's offset once the original is durable."""
    log = open_log(sluice_append_ack="fsynced")
    partition = Partition(log)
    release = threading.Event()

    async def main() -> tuple[int, int, int]:
        await partition.append(idem(0))  # creates the file, starts the writer
        segment = log.active_segment
        real = segment.fsync

        def held() -> None:
            release.wait(10)
            real()

        segment.fsync = held  # type: ignore[method-assign]
        original = asyncio.ensure_future(partition.append(idem(2)))
        for _ in range(100):
            await asyncio.sleep(0)
        retry = asyncio.ensure_future(partition.append(idem(2)))
        for _ in range(100):
            await asyncio.sleep(0)
        assert not original.done() and not retry.done()  # nobody is answered before durability
        release.set()
        results = await asyncio.gather(original, retry)
        stored = len(values(log))
        await partition.close()
        return results[0], results[1], stored

    assert asyncio.run(main()) == (2, 2, 4)

"""Recovery: clean restarts skip the walk; unclean ones walk, rebuild indexes and truncate."""

from __future__ import annotations

import asyncio
import errno
import os
import random
import stat
import struct
from collections.abc import Callable

import pytest

from sluice.errors import StorageError
from sluice.protocol.records import build_batch, scan_batches
from sluice.storage import LogConfig, PartitionLog
from sluice.storage.loader import CLEAN_SHUTDOWN_FILE, RECOVERY_POINT_FILE

from .conftest import FakeClock, all_records, make_batch

OpenLog = Callable[..., PartitionLog]


def _fill(log: PartitionLog, batches: int, n: int = 3) -> list[int]:
    """Append ``batches`` batches; return each batch's end position in the active segment."""
    ends = []
    for i in range(batches):
        log.append(make_batch(n, tag=f"b{i}"))
        ends.append(log.active_segment.size)
    return ends


def test_clean_restart_skips_recovery_and_keeps_everything(open_log: OpenLog) -> None:
    log = open_log()
    _fill(log, 20)
    before = all_records(log)
    log.close()
    assert (log.directory / CLEAN_SHUTDOWN_FILE).exists()
    again = open_log()
    assert again.recovery.clean and again.recovery.segments_recovered == 0
    assert not (log.directory / CLEAN_SHUTDOWN_FILE).exists()  # a crash from here on is unclean
    assert again.log_end_offset == 60
    assert all_records(again) == before
    assert again.append(make_batch(1)) == 60


def test_unclean_restart_walks_and_keeps_everything(open_log: OpenLog) -> None:
    log = open_log()
    _fill(log, 20)
    before = all_records(log)
    log.abandon()
    again = open_log()
    assert not again.recovery.clean and again.recovery.bytes_truncated == 0
    assert all_records(again) == before


def test_marker_with_a_stale_size_is_not_trusted(open_log: OpenLog) -> None:
    log = open_log()
    _fill(log, 5)
    log.close()
    with open(log.active_segment.log_path, "ab") as f:
        f.write(b"\0" * 10)  # bytes appended after the marker was written
    again = open_log()
    assert not again.recovery.clean and again.recovery.bytes_truncated == 10
    assert again.log_end_offset == 15


def test_torn_tail_at_every_kind_of_position(open_log: OpenLog) -> None:
    log = open_log()
    ends = _fill(log, 12)
    path = log.active_segment.log_path
    log.abandon()
    data = path.read_bytes()
    rng = random.Random(7)
    cuts = sorted({0, 1, 60, 61, ends[0], ends[0] + 1, *(rng.randrange(len(data)) for _ in range(25))})
    for cut in cuts:
        path.write_bytes(data[:cut])
        recovered = open_log()
        whole = sum(1 for e in ends if e <= cut)
        assert recovered.log_end_offset == whole * 3, cut
        assert recovered.active_segment.size == (ends[whole - 1] if whole else 0)
        assert os.path.getsize(path) == recovered.active_segment.size  # truncated on disk
        assert [o for o, _ in all_records(recovered)] == list(range(whole * 3))
        assert recovered.read(recovered.log_end_offset, 100) is None  # nothing past the cut
        recovered.abandon()


def test_flipped_byte_truncates_from_that_batch(open_log: OpenLog) -> None:
    log = open_log()
    ends = _fill(log, 10)
    path = log.active_segment.log_path
    log.abandon()
    data = bytearray(path.read_bytes())
    data[ends[5] + 70] ^= 0x40  # inside batch 6's records: only the CRC can notice
    path.write_bytes(bytes(data))
    again = open_log()
    assert again.log_end_offset == 18
    assert again.recovery.bytes_truncated == len(data) - ends[5]
    assert again.append(make_batch(1)) == 18  # and the log keeps working
    values = dict(all_records(again))
    assert values[17] is not None and values[17].startswith(b"b5-")


def test_garbage_tail_that_looks_like_a_header_is_rejected(open_log: OpenLog) -> None:
    log = open_log()
    _fill(log, 3)
    path = log.active_segment.log_path
    log.abandon()
    stale = bytearray(make_batch(3))  # a valid batch, but with offsets that do not continue the log
    with open(path, "ab") as f:
        f.write(stale)
    again = open_log()
    assert again.log_end_offset == 9
    assert again.recovery.bytes_truncated == len(stale)


@pytest.mark.parametrize("damage", ["delete", "garbage", "unsorted"])
def test_missing_or_corrupt_index_is_rebuilt(open_log: OpenLog, damage: str) -> None:
    batch = len(make_batch(3))
    log = open_log(segment_bytes=batch * 10, index_interval_bytes=batch * 2)
    _fill(log, 25)
    first = log.segments[0]
    expected = (first.index.offsets.tolist(), first.index.positions.tolist())
    assert len(expected[0]) > 2
    log.close()
    if damage == "delete":
        first.index_path.unlink()
        first.time_index_path.unlink()
    elif damage == "garbage":
        first.index_path.write_bytes(b"\x01\x02\x03")
    else:
        first.index_path.write_bytes(first.index_path.read_bytes()[::-1])
    again = open_log(segment_bytes=batch * 10, index_interval_bytes=batch * 2)
    rebuilt = again.segments[0].index
    assert (rebuilt.offsets.tolist(), rebuilt.positions.tolist()) == expected
    assert again.segments[0].max_timestamp == 1000
    assert [o for o, _ in all_records(again)] == list(range(75))


def test_corruption_in_an_older_unflushed_segment_drops_what_follows(open_log: OpenLog) -> None:
    batch = len(make_batch(3))
    log = open_log(segment_bytes=batch * 4)
    _fill(log, 10)
    assert [s.base_offset for s in log.segments] == [0, 12, 24]
    second = log.segments[1].log_path
    log.abandon()
    (log.directory / "recovery-point").write_text("0\n")  # as if the rolls had not been flushed
    data = bytearray(second.read_bytes())
    data[batch + 70] ^= 1
    second.write_bytes(bytes(data))
    again = open_log(segment_bytes=batch * 4)
    assert [s.base_offset for s in again.segments] == [0, 12]
    assert again.log_end_offset == 15
    assert again.recovery.segments_recovered == 2
    assert not (log.directory / f"{24:020d}.log").exists()


def test_recovery_only_walks_segments_past_the_recovery_point(open_log: OpenLog) -> None:
    batch = len(make_batch(3))
    log = open_log(segment_bytes=batch * 4)
    _fill(log, 10)
    log.abandon()
    again = open_log(segment_bytes=batch * 4)
    assert again.recovery.segments_recovered == 1
    assert again.log_end_offset == 30
    assert scan_batches(again.read_bytes(0, batch))[0].base_offset == 0


def test_a_failed_seal_when_retention_rolls_leaves_no_segment_behind(
    open_log: OpenLog, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retention rolls an expired active segment: the old one's fsync fails. The new empty file
    used to be created first and stay on disk (not in memory) while appends went on into the
    old segment; a later recovery then cut the log at it. Now nothing is created, and the log
    refuses appends (a failed fsync fences it) until it is reopened."""
    size = len(build_batch([(None, b"x")]))
    settings = {"segment_bytes": size * 2, "retention_ms": 1000}
    log = open_log(**settings)
    log.append(build_batch([(None, b"x")], base_timestamp=clock.now))
    clock.now += 5_000
    real_fsync = os.fsync
    failures = 1

    def fsync(fd: int) -> None:
        nonlocal failures
        if failures and stat.S_ISREG(os.fstat(fd).st_mode):
            failures -= 1
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError):
        log.apply_retention()
    assert failures == 0
    assert sorted(p.name for p in log.directory.glob("*.log")) == [f"{0:020d}.log"]
    with pytest.raises(StorageError, match="failed fsync"):
        log.append(build_batch([(None, b"y")], base_timestamp=clock.now))
    log.abandon()  # a crash
    again = open_log(**settings)
    assert [o for o, _ in all_records(again)] == [0]
    for i in range(3):  # rolls by size as usual
        assert again.append(build_batch([(None, b"z")], base_timestamp=clock.now)) == 1 + i
    again.abandon()
    assert [o for o, _ in all_records(open_log(**settings))] == [0, 1, 2, 3]


def test_recovery_removes_an_empty_segment_inside_the_previous_ones_offsets(open_log: OpenLog) -> None:
    """What a failed seal left before the seal came first: an empty file whose base offset lies
    inside the segment before it, then segments appended after it. Recovery removes the empty
    one; it used to take it for the end of the log and drop every segment after it."""
    size = len(make_batch(1))
    log = open_log(segment_bytes=size * 2)
    for i in range(5):
        log.append(make_batch(1, tag=f"b{i}"))
    before = all_records(log)
    assert [s.base_offset for s in log.segments] == [0, 2, 4]
    log.abandon()
    stray = log.directory / f"{1:020d}.log"
    stray.touch()
    (log.directory / RECOVERY_POINT_FILE).write_text("0")  # recovery walks from the start
    again = open_log(segment_bytes=size * 2)
    assert [s.base_offset for s in again.segments] == [0, 2, 4]
    assert all_records(again) == before
    assert not stray.exists()


def _timed_log(open_log: OpenLog) -> tuple[PartitionLog, int]:
    """Two closed segments and an active one, of 3-record batches whose timestamps rise by 10
    ms a batch, with an index entry every other batch."""
    batch = len(make_batch(3))
    log = open_log(segment_bytes=batch * 10, index_interval_bytes=batch * 2)
    for i in range(25):
        log.append(make_batch(3, tag=f"b{i}", ts=1000 + 10 * i))
    assert len(log.segments) == 3
    return log, batch


def _entry(path: os.PathLike[str], size: int, i: int, change: Callable[[int, int], tuple[int, int]]) -> None:
    """Rewrite entry ``i`` of an index file (two little-endian ints of ``size`` bytes each)."""
    fmt = "<ii" if size == 4 else "<qq"
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        struct.pack_into(fmt, data, i * 2 * size, *change(*struct.unpack_from(fmt, data, i * 2 * size)))
        f.seek(0)
        f.write(data)


def _first_offsets_read(log: PartitionLog) -> list[int]:
    """For every offset, the base offset of the first batch a fetch there returns."""
    return [scan_batches(log.read_bytes(o, 1))[0].base_offset for o in range(log.log_start_offset, log.high_watermark)]


@pytest.mark.parametrize("clean", [True, False], ids=["clean-restart", "unclean-restart"])
def test_an_offset_index_entry_naming_another_batch_is_not_trusted(open_log: OpenLog, clean: bool) -> None:
    """An .index file whose entries are in order and inside the log, but one names the wrong
    batch (a flipped bit, a stale file): a fetch must still start at the batch holding the
    offset, not past it (the consumer would skip records with no sign of it)."""
    log, batch = _timed_log(open_log)
    expected = _first_offsets_read(log)
    first = log.segments[0]
    assert first.index.offsets.tolist()[:2] == [0, 6]
    log.close() if clean else log.abandon()
    _entry(first.index_path, 4, 1, lambda o, p: (o - 3, p))  # offset 3 -> the batch of offset 6
    again = open_log(segment_bytes=batch * 10, index_interval_bytes=batch * 2)
    assert _first_offsets_read(again) == expected
    assert [o for o, _ in all_records(again, 3)][:4] == [3, 4, 5, 6]


def test_a_time_index_cut_short_is_not_trusted_after_a_clean_stop(open_log: OpenLog) -> None:
    """A .timeindex file cut short at a whole entry: the segment's largest timestamp (what
    retention goes by, and timestamp lookups skip a segment by) must not come from its last
    entry when the clean stop recorded another. (After an unclean stop nothing recorded the
    largest timestamp; the last entry is checked against its batch, as below.)"""
    log, batch = _timed_log(open_log)
    first = log.segments[0]
    assert first.max_timestamp == 1090  # its last batch (offsets 27..29)
    state = log.close()
    whole = first.time_index_path.read_bytes()
    # An entry every other batch (index.interval.bytes), and the largest timestamp last.
    assert len(whole) == 6 * 16 and whole[-16:] == struct.pack("<qq", 1090, 29)
    first.time_index_path.write_bytes(whole[: 4 * 16])  # its last entries gone
    config = LogConfig.from_dict({"segment.bytes": str(batch * 10), "index.interval.bytes": str(batch * 2)})
    again = PartitionLog.open(log.directory, config, FakeClock(), state=state)
    try:
        seg = again.segments[0]
        _ = seg.time_index
        assert (seg.max_timestamp, seg.offset_of_max_timestamp) == (1090, 29)
        assert asyncio.run(again.offset_for_timestamp(1085)) == (27, 1090)
    finally:
        again.close()


@pytest.mark.parametrize("clean", [True, False], ids=["clean-restart", "unclean-restart"])
def test_a_time_index_entry_naming_another_batch_is_not_trusted(open_log: OpenLog, clean: bool) -> None:
    """A .timeindex entry whose offset is too high (in order with the others, inside the
    segment): a lookup by time starting after it would skip records."""
    log, batch = _timed_log(open_log)
    first = log.segments[0]
    log.close() if clean else log.abandon()
    _entry(first.time_index_path, 8, 1, lambda t, o: (t, o + 3))  # (1020, 8) -> (1020, 11)
    again = open_log(segment_bytes=batch * 10, index_interval_bytes=batch * 2)
    assert asyncio.run(again.offset_for_timestamp(1021)) == (9, 1030)
    assert asyncio.run(again.offset_for_timestamp(1030)) == (9, 1030)
    # The last entry too: the segment's largest timestamp comes from the log.
    again.close() if clean else again.abandon()
    _entry(first.time_index_path, 8, 5, lambda t, o: (t + 5, o))  # (1090, 29) -> (1095, 29)
    third = open_log(segment_bytes=batch * 10, index_interval_bytes=batch * 2)
    seg = third.segments[0]
    _ = seg.time_index
    assert seg.max_timestamp == 1090
    assert asyncio.run(third.offset_for_timestamp(1092)) == (30, 1100)

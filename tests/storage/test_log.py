"""PartitionLog rules on real files: offsets, reads, rolling, indexes, timestamps, retention."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable

import crc32c
import pytest

from sluice.errors import (
    CorruptRecordError,
    InvalidConfigError,
    OffsetOutOfRangeError,
    RecordTooLargeError,
)
from sluice.protocol.records import Compression, build_batch, scan_batches
from sluice.storage import LogConfig, PartitionLog

from .conftest import FakeClock, all_records, make_batch

OpenLog = Callable[..., PartitionLog]


def test_append_assigns_consecutive_offsets(open_log: OpenLog) -> None:
    log = open_log()
    assert log.append(make_batch(3)) == 0
    assert log.append(make_batch(1)) == 3
    assert log.append(make_batch(2) + make_batch(4)) == 4
    assert log.log_end_offset == log.high_watermark == 10
    assert [o for o, _ in all_records(log)] == list(range(10))


def test_stored_bytes_are_the_produced_bytes_with_offsets_patched(open_log: OpenLog) -> None:
    log = open_log()
    log.append(make_batch(2))
    batch = make_batch(3, tag="second")
    log.append(batch)
    stored = log.read_bytes(2, 1 << 20)
    assert stored[12:] == batch[12:]  # everything after baseOffset + length is verbatim
    assert scan_batches(stored)[0].base_offset == 2


def test_read_starts_at_the_batch_holding_the_offset(open_log: OpenLog) -> None:
    log = open_log()
    log.append(make_batch(5))
    log.append(make_batch(5))
    found = log.read(7, 1 << 20)
    assert found is not None
    assert found.first_offset == 5
    assert scan_batches(found.read())[0].base_offset == 5


def test_read_returns_a_whole_batch_even_when_max_bytes_is_smaller(open_log: OpenLog) -> None:
    log = open_log()
    log.append(make_batch(50, size=100))
    log.append(make_batch(1))
    found = log.read(0, 10)
    assert found is not None
    (header,) = scan_batches(found.read())
    assert found.length == header.size


def test_read_caps_at_max_bytes_after_the_first_batch(open_log: OpenLog) -> None:
    log = open_log()
    sizes = [len(make_batch(3))] * 4
    for _ in sizes:
        log.append(make_batch(3))
    found = log.read(0, sizes[0] + 10)
    assert found is not None and found.length == sizes[0] + 10  # may end in a partial batch


def test_read_at_high_watermark_is_empty_and_past_it_out_of_range(open_log: OpenLog) -> None:
    log = open_log()
    log.append(make_batch(2))
    assert log.read(2, 100) is None
    with pytest.raises(OffsetOutOfRangeError):
        log.read(3, 100)
    with pytest.raises(OffsetOutOfRangeError):
        log.read(-1, 100)


def test_bad_batch_in_a_multi_batch_append_stores_nothing(open_log: OpenLog) -> None:
    log = open_log()
    log.append(make_batch(2))
    bad = bytearray(make_batch(2))
    bad[-1] ^= 1
    with pytest.raises(CorruptRecordError):
        log.append(make_batch(3) + bytes(bad))
    assert log.log_end_offset == 2
    assert log.append(make_batch(1)) == 2
    assert [o for o, _ in all_records(log)] == [0, 1, 2]


def test_batch_over_max_message_bytes_is_refused(open_log: OpenLog) -> None:
    log = open_log(max_message_bytes=300)
    with pytest.raises(RecordTooLargeError):
        log.append(make_batch(20, size=50))
    assert log.log_end_offset == 0
    assert log.active_segment.file_size() == 0


def test_segments_roll_by_size_and_reads_cross_them(open_log: OpenLog) -> None:
    batch_size = len(make_batch(4))
    log = open_log(segment_bytes=batch_size * 3)
    for i in range(10):
        log.append(make_batch(4, tag=f"b{i}"))
    assert [s.base_offset for s in log.segments] == [0, 12, 24, 36]
    assert all(s.size <= batch_size * 3 for s in log.segments)
    names = sorted(p.name for p in log.directory.glob("*.log"))
    assert names == [f"{b:020d}.log" for b in (0, 12, 24, 36)]
    assert [o for o, _ in all_records(log)] == list(range(40))
    assert all(s.sealed for s in log.segments[:-1])
    assert (log.directory / f"{0:020d}.index").exists()
    assert (log.directory / f"{0:020d}.timeindex").exists()


def test_segments_roll_by_age(open_log: OpenLog, clock: FakeClock) -> None:
    log = open_log(segment_ms=1000)
    log.append(make_batch(1))
    clock.now += 999
    log.append(make_batch(1))
    assert len(log.segments) == 1
    clock.now += 1
    log.append(make_batch(1))
    assert [s.base_offset for s in log.segments] == [0, 2]


def test_segment_age_survives_a_reopen(open_log: OpenLog, clock: FakeClock) -> None:
    log = open_log(segment_ms=1000)
    log.append(make_batch(1, ts=clock.now))
    log.close()
    clock.now += 600
    log = open_log(segment_ms=1000)  # the age counts from the first batch, not from the reopen
    log.append(make_batch(1, ts=clock.now))
    assert len(log.segments) == 1
    clock.now += 400
    log.append(make_batch(1, ts=clock.now))
    assert [s.base_offset for s in log.segments] == [0, 2]


def test_sparse_index_has_an_entry_every_interval(open_log: OpenLog) -> None:
    log = open_log(index_interval_bytes=1000)
    for _ in range(40):
        log.append(make_batch(2, size=100))
    index = log.active_segment.index
    batch = len(make_batch(2, size=100))
    assert len(index) == pytest.approx(40 * batch / (1000 + batch), abs=2)
    for offset in range(0, 80, 7):  # every lookup lands on the right batch
        found = log.read(offset, 1)
        assert found is not None and found.first_offset == offset - offset % 2


def test_offset_for_timestamp_finds_first_record_at_or_after(open_log: OpenLog) -> None:
    log = open_log(segment_bytes=250)
    for i in range(10):
        records = [(None, b"a"), (None, b"b")]
        log.append(build_batch(records, base_timestamp=1000 + 10 * i, timestamps=[1000 + 10 * i, 1005 + 10 * i]))
    assert len(log.segments) > 2
    assert asyncio.run(log.offset_for_timestamp(0)) == (0, 1000)
    assert asyncio.run(log.offset_for_timestamp(1005)) == (1, 1005)
    assert asyncio.run(log.offset_for_timestamp(1006)) == (2, 1010)
    assert asyncio.run(log.offset_for_timestamp(1095)) == (19, 1095)
    assert asyncio.run(log.offset_for_timestamp(1096)) is None


def test_timestamp_lookup_with_out_of_order_timestamps(open_log: OpenLog) -> None:
    log = open_log()
    log.append(build_batch([(None, b"x")], base_timestamp=500))
    log.append(build_batch([(None, b"x")], base_timestamp=300))
    log.append(build_batch([(None, b"x")], base_timestamp=900))
    assert asyncio.run(log.offset_for_timestamp(400)) == (0, 500)
    assert asyncio.run(log.offset_for_timestamp(600)) == (2, 900)
    assert asyncio.run(log.max_timestamp_offset()) == (2, 900)


def test_retention_by_bytes_deletes_oldest_closed_segments(open_log: OpenLog) -> None:
    batch_size = len(make_batch(4))
    log = open_log(segment_bytes=batch_size * 2, retention_bytes=batch_size * 5, retention_ms=-1)
    for _ in range(10):
        log.append(make_batch(4))
    assert len(log.segments) == 5
    assert log.apply_retention() == 2
    assert log.size_bytes == batch_size * 6
    assert log.log_start_offset == 16
    with pytest.raises(OffsetOutOfRangeError):
        log.read(15, 100)
    assert [o for o, _ in all_records(log)] == list(range(16, 40))
    assert not (log.directory / f"{0:020d}.log").exists()


def test_retention_by_time_rolls_and_deletes_an_expired_active_segment(
    open_log: OpenLog, clock: FakeClock
) -> None:
    """As Kafka: closed segments go first; once the active segment's newest record is past
    retention.ms too, it is rolled and deleted, so an idle partition holds no expired data."""
    batch_size = len(build_batch([(None, b"x")]))
    log = open_log(segment_bytes=batch_size * 2, retention_ms=1000)
    for i in range(3):
        log.append(build_batch([(None, b"x")], base_timestamp=clock.now + i * 100))
    clock.now += 1150  # segment [0, 1] is expired; the active [2] holds a newer record
    assert log.apply_retention() == 1
    assert (log.log_start_offset, len(log.segments)) == (2, 1)
    clock.now += 10_000
    assert log.apply_retention() == 1
    assert (log.log_start_offset, log.log_end_offset, log.size_bytes) == (3, 3, 0)
    assert [s.base_offset for s in log.segments] == [3]
    assert all_records(log) == []
    assert log.append(build_batch([(None, b"y")], base_timestamp=clock.now)) == 3
    log.close()
    again = open_log(segment_bytes=batch_size * 2, retention_ms=1000)
    assert again.recovery.clean
    assert (again.log_start_offset, again.log_end_offset) == (3, 4)
    assert [o for o, _ in all_records(again)] == [3]


def test_retention_leaves_an_active_segment_with_an_append_in_flight(
    open_log: OpenLog, clock: FakeClock
) -> None:
    """Rolling races nothing: with offsets reserved but not yet written (the writer task's
    window), the expired active segment stays until the next check."""
    log = open_log(retention_ms=1000)
    log.append(build_batch([(None, b"x")], base_timestamp=clock.now))
    clock.now += 5_000
    reservation = log.reserve(build_batch([(None, b"late")], base_timestamp=clock.now))
    assert log.apply_retention() == 0
    log.write_inline([reservation])
    assert [o for o, _ in all_records(log)] == [0, 1]


def test_delete_records_moves_the_log_start_and_survives_reopen(open_log: OpenLog) -> None:
    batch_size = len(make_batch(2))
    log = open_log(segment_bytes=batch_size * 2)
    for _ in range(6):
        log.append(make_batch(2))
    assert log.delete_records(5) == 5
    assert [s.base_offset for s in log.segments] == [4, 8]
    with pytest.raises(OffsetOutOfRangeError):
        log.read(4, 100)
    assert [o for o, _ in all_records(log)] == list(range(5, 12))
    with pytest.raises(OffsetOutOfRangeError):
        log.delete_records(13)
    log.close()
    again = open_log(segment_bytes=batch_size * 2)
    assert again.log_start_offset == 5
    assert again.delete_records(-1) == 12


def test_config_rejects_unknown_keys_and_bad_values() -> None:
    with pytest.raises(InvalidConfigError, match="unknown"):
        LogConfig.from_dict({"segment.bites": "1"})
    with pytest.raises(InvalidConfigError, match="integer"):
        LogConfig.from_dict({"segment.bytes": "big"})
    with pytest.raises(InvalidConfigError):
        LogConfig.from_dict({"segment.bytes": "1"})
    with pytest.raises(InvalidConfigError, match="one of"):
        LogConfig.from_dict({"sluice.append.ack": "maybe"})
    cfg = LogConfig.from_dict({"retention.ms": "-1", "sluice.append.ack": "FSYNCED"})
    assert cfg.retention_ms == -1 and cfg.append_ack.value == "fsynced"
    assert cfg.diff() == {"retention.ms": "-1", "sluice.append.ack": "fsynced"}


def test_timestamp_lookups_stream_through_a_compressed_batch(open_log: OpenLog) -> None:
    """The answer sits behind a 32 MiB value of one zstd batch: found by streaming past it."""
    log = open_log()
    log.append(build_batch([(None, b"x")], base_timestamp=100))
    log.append(
        build_batch(
            [(None, bytes(32 << 20)), (b"k", b"v"), (None, None)],
            base_timestamp=200,
            timestamps=[200, 300, 250],
            compression=Compression.ZSTD,
        )
    )
    assert asyncio.run(log.offset_for_timestamp(150)) == (1, 200)
    assert asyncio.run(log.offset_for_timestamp(260)) == (2, 300)
    assert asyncio.run(log.max_timestamp_offset()) == (2, 300)


def test_a_header_lying_about_its_max_timestamp_does_not_hide_later_records(
    open_log: OpenLog,
) -> None:
    log = open_log()
    liar = bytearray(build_batch([(None, b"a")], base_timestamp=100))
    liar[35:43] = (10_000).to_bytes(8, "big")  # maxTimestamp, under the CRC
    liar[17:21] = crc32c.crc32c(bytes(liar[21:])).to_bytes(4, "big")
    log.append(bytes(liar))
    log.append(build_batch([(None, b"b")], base_timestamp=5_000))
    assert asyncio.run(log.offset_for_timestamp(4_000)) == (1, 5_000)


def test_max_timestamp_counts_only_records_delete_records_left(open_log: OpenLog) -> None:
    """ListOffsets -3 answers the visible record with the largest timestamp. DeleteRecords
    cutting into a segment, or into a batch, can remove the record its recorded maximum came
    from: the answer is then the largest of what is left, never a deleted offset and never
    "none" while records remain."""
    stamps = [[500, 900, 100], [700, 650, 700], [300, 200, 100], [600, 400, 600], [600, 600, 100]]
    batches = [build_batch([(None, b"x" * 40)] * 3, base_timestamp=ts[0], timestamps=ts) for ts in stamps]
    log = open_log(segment_bytes=2 * len(batches[0]))  # two batches a segment
    for batch in batches:
        log.append(batch)
    assert [s.base_offset for s in log.segments] == [0, 6, 12]
    expected = {
        0: (1, 900),
        2: (3, 700),  # 900 went with offset 1: the first 700 left (not 5, its twin)
        4: (5, 700),  # inside a batch: its 700 at offset 3 is gone, the one at 5 is not
        6: (9, 600),  # the first of three 600s, two segments apart
        10: (11, 600),  # the rest of a cut batch, before the active segment's 600
        12: (12, 600),  # the active segment: two 600s, the first
        14: (14, 100),
    }
    for start, answer in expected.items():
        log.delete_records(start)
        assert asyncio.run(log.max_timestamp_offset()) == answer, start
    log.delete_records(-1)
    assert asyncio.run(log.max_timestamp_offset()) is None


def test_timestamp_searches_walk_a_cut_segment_off_the_event_loop(
    open_log: OpenLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where DeleteRecords took the batch that gave a segment its largest timestamp, a search
    by time (and for the largest timestamp) walks the rest of the segment's headers: in the
    executor, never on the event loop's thread, which every client's requests share (a 200 MB
    segment held it for 1.7 s)."""
    log = open_log(sluice_append_mode="inline")
    log.append(build_batch([(None, b"x" * 900)], base_timestamp=10_000))
    old = build_batch([(None, b"x" * 900)], base_timestamp=5_000)
    for _ in range(2000):
        log.append(old)
    size = log.active_segment.size
    log.delete_records(1)
    read_on: dict[str, int] = {}
    real_pread = os.pread

    def pread(fd: int, length: int, offset: int) -> bytes:
        data = real_pread(fd, length, offset)
        where = "loop" if threading.current_thread() is threading.main_thread() else "executor"
        read_on[where] = read_on.get(where, 0) + len(data)
        return data

    monkeypatch.setattr(os, "pread", pread)
    assert asyncio.run(log.offset_for_timestamp(6000)) is None
    assert read_on.get("loop", 0) < 4096 and read_on["executor"] >= size - 1000
    read_on.clear()
    assert asyncio.run(log.max_timestamp_offset()) == (1, 5000)
    assert read_on.get("loop", 0) < 4096 and read_on["executor"] >= size - 1000


def test_the_time_index_is_as_sparse_as_the_offset_index(open_log: OpenLog) -> None:
    """A time index entry every ``index.interval.bytes``, as Kafka's, not one for every batch
    whose timestamp is the largest yet (nearly every batch): that cost 16 bytes a batch and
    rolled the segment when the time index filled, long before the offset index or
    ``segment.bytes`` (here: 110 KB segments instead of one). Lookups stay exact."""
    log = open_log(segment_index_bytes=16384, sluice_append_mode="inline")
    base = 1_700_000_000_000
    for i in range(3000):
        log.append(build_batch([(None, b"x" * 40)], base_timestamp=base + 2 * i))
    assert len(log.segments) == 1
    seg = log.segments[0]
    assert len(seg.time_index) <= len(seg.index) + 1 < 100
    for i in (0, 1, 999, 1000, 2998, 2999):
        assert asyncio.run(log.offset_for_timestamp(base + 2 * i)) == (i, base + 2 * i)
        assert asyncio.run(log.offset_for_timestamp(base + 2 * i - 1)) == (i, base + 2 * i)
    assert asyncio.run(log.offset_for_timestamp(base + 6000)) is None
    assert asyncio.run(log.max_timestamp_offset()) == (2999, base + 5998)
    log.close()
    again = open_log(segment_index_bytes=16384, sluice_append_mode="inline")
    seg = again.segments[0]
    _ = seg.time_index
    assert (seg.max_timestamp, seg.offset_of_max_timestamp) == (base + 5998, 2999)
    assert asyncio.run(again.offset_for_timestamp(base + 3001)) == (1501, base + 3002)

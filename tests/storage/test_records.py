"""Record batch v2 validation and coding: the checks every append runs."""

from __future__ import annotations

import struct

import crc32c
import pytest

from sluice.errors import CorruptRecordError, InvalidRecordError, RecordTooLargeError
from sluice.protocol.records import (
    ATTRIBUTES_OFFSET,
    Compression,
    assign_offsets,
    build_batch,
    decode_records,
    scan_batches,
)

from .conftest import make_batch


def test_scan_reads_every_batch_header() -> None:
    data = make_batch(3) + make_batch(5, ts=2_000)
    headers = scan_batches(data)
    assert [h.records_count for h in headers] == [3, 5]
    assert headers[1].position == headers[0].size
    assert headers[1].max_timestamp == 2_000
    assert sum(h.size for h in headers) == len(data)


def test_assign_offsets_patches_without_breaking_crc() -> None:
    data = bytearray(make_batch(3) + make_batch(2))
    headers = scan_batches(data)
    assert assign_offsets(data, headers, 100, leader_epoch=7) == 105
    again = scan_batches(data)  # CRC still valid
    assert [h.base_offset for h in again] == [100, 103]
    assert [h.partition_leader_epoch for h in again] == [7, 7]
    assert [r.offset for r in decode_records(data[: again[0].size])] == [100, 101, 102]


@pytest.mark.parametrize(
    "codec", [Compression.NONE, Compression.GZIP, Compression.SNAPPY, Compression.LZ4, Compression.ZSTD]
)
def test_records_round_trip_with_every_codec(codec: int) -> None:
    records = [(b"k1", b"hello" * 50), (None, None), (b"", b"")]
    batch = build_batch(
        records,
        headers=[[("h", b"1")], [], [("x", None)]],
        compression=codec,
        base_timestamp=5,
        timestamps=[5, 9, 7],
    )
    (header,) = scan_batches(batch)
    assert header.compression == codec
    assert header.max_timestamp == 9
    decoded = decode_records(batch)
    assert [(r.key, r.value) for r in decoded] == records
    assert [r.timestamp for r in decoded] == [5, 9, 7]
    assert decoded[0].headers == [("h", b"1")]
    assert decoded[2].headers == [("x", None)]


def test_bad_crc_is_corrupt_message() -> None:
    data = bytearray(make_batch())
    data[-1] ^= 0xFF
    with pytest.raises(CorruptRecordError, match="CRC"):
        scan_batches(data)


def test_wrong_magic_is_corrupt_message() -> None:
    data = bytearray(make_batch())
    data[16] = 1
    with pytest.raises(CorruptRecordError, match="magic"):
        scan_batches(data)


@pytest.mark.parametrize("cut", [1, 30, 60, 61, 80])
def test_truncated_input_is_corrupt_message(cut: int) -> None:
    data = make_batch()
    with pytest.raises(CorruptRecordError):
        scan_batches(data[:cut])


def test_length_below_header_is_corrupt() -> None:
    data = bytearray(make_batch())
    struct.pack_into(">i", data, 8, 10)
    with pytest.raises(CorruptRecordError):
        scan_batches(data)


def _refresh_crc(data: bytearray) -> None:
    struct.pack_into(">I", data, 17, crc32c.crc32c(bytes(data[ATTRIBUTES_OFFSET:])))


def test_inconsistent_record_count_is_invalid_record() -> None:
    data = bytearray(make_batch(3))
    struct.pack_into(">i", data, 57, 4)  # recordsCount no longer lastOffsetDelta + 1
    _refresh_crc(data)
    with pytest.raises(InvalidRecordError):
        scan_batches(data)


def test_batch_over_max_message_bytes_is_message_too_large() -> None:
    data = make_batch(10, size=200)
    with pytest.raises(RecordTooLargeError):
        scan_batches(data, max_batch_bytes=len(data) - 1)
    assert scan_batches(data, max_batch_bytes=len(data))


def test_empty_record_set_is_invalid() -> None:
    with pytest.raises(InvalidRecordError):
        scan_batches(b"")


def test_error_codes_are_the_kafka_ones() -> None:
    assert CorruptRecordError.code == 2
    assert RecordTooLargeError.code == 10
    assert InvalidRecordError.code == 87

"""Record batches checked and read without materialising their records: the header plausibility
check every append runs, streaming record stamps (ListOffsets), the record-count verification of
compressed batches (Produce) and recompression (compression.type)."""

from __future__ import annotations

import struct

import crc32c
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.errors import CorruptRecordError, InvalidRecordError
from sluice.protocol.compression import Compression, compress, compress_raw_snappy
from sluice.protocol.records import (
    HEADER_SIZE,
    TIMESTAMP_TYPE_BIT,
    TRANSACTIONAL_BIT,
    build_batch,
    decode_records,
    iter_record_stamps,
    read_header,
    recompress_batch,
    scan_batches,
    verify_record_count,
)

CODECS = [Compression.NONE, Compression.GZIP, Compression.SNAPPY, Compression.LZ4, Compression.ZSTD]


def forge(
    payload: bytes,
    *,
    count: int,
    last_delta: int | None = None,
    attributes: int = 0,
    base_timestamp: int = 1_000,
    max_timestamp: int = 1_000,
    producer: tuple[int, int, int] = (-1, -1, -1),
) -> bytes:
    """A batch with any header over any records section, with a valid CRC: what an attacker (or a
    buggy client) can send."""
    tail = struct.pack(
        ">hiqqqhii",
        attributes,
        count - 1 if last_delta is None else last_delta,
        base_timestamp,
        max_timestamp,
        *producer,
        count,
    ) + payload
    return struct.pack(">qiibI", 0, len(tail) + 9, 0, 2, crc32c.crc32c(tail)) + tail


def records_section(batch: bytes) -> bytes:
    return batch[HEADER_SIZE:]


def test_a_70_byte_batch_claiming_2_31_records_is_refused() -> None:
    forged = forge(b"\x00" * 9, count=2**31 - 1)
    assert len(forged) == 70
    with pytest.raises(InvalidRecordError, match="claims 2147483647 records"):
        scan_batches(forged)


def test_plausibility_bound_is_seven_bytes_a_record() -> None:
    honest = build_batch([(None, None)] * 10)  # each record is exactly 7 bytes
    section = records_section(honest)
    assert len(section) == 70
    (header,) = scan_batches(forge(section, count=10))
    assert header.records_count == 10
    with pytest.raises(InvalidRecordError, match="at least 7"):
        scan_batches(forge(section, count=11))


@given(count=st.integers(1, 2**31 - 1), size=st.integers(0, 2000))
@settings(max_examples=300)
def test_no_uncompressed_header_claims_more_than_its_bytes_hold(count: int, size: int) -> None:
    try:
        (header,) = scan_batches(forge(b"\x00" * size, count=count))
    except InvalidRecordError:
        return
    assert header.records_count * 7 <= size


records_strategy = st.lists(
    st.tuples(
        st.one_of(st.none(), st.binary(max_size=40)),
        st.one_of(st.none(), st.binary(max_size=300)),
        st.integers(0, 10**6),
        st.lists(st.tuples(st.text(max_size=5), st.one_of(st.none(), st.binary(max_size=9))), max_size=3),
    ),
    min_size=1,
    max_size=25,
)


@given(records=records_strategy, codec=st.sampled_from(CODECS), chunk=st.integers(1, 64))
@settings(max_examples=300, deadline=None)
def test_streamed_stamps_match_full_decoding(
    records: list[tuple[bytes | None, bytes | None, int, list[tuple[str, bytes | None]]]],
    codec: int,
    chunk: int,
) -> None:
    """Tiny chunks cut every record prefix, key, value and header at every possible place."""
    base = min(r[2] for r in records)
    batch = build_batch(
        [(k, v) for k, v, _, _ in records],
        headers=[h for _, _, _, h in records],
        timestamps=[t for _, _, t, _ in records],
        base_timestamp=base,
        base_offset=500,
        compression=codec,
    )
    expected = [(r.offset, r.timestamp) for r in decode_records(batch)]
    assert list(iter_record_stamps(batch, chunk_size=chunk)) == expected


def test_streaming_stops_where_the_caller_does() -> None:
    """A huge value is skipped, never held: the second record's stamp comes after 64 MiB."""
    big = build_batch(
        [(None, bytes(64 << 20)), (b"k", b"v")],
        timestamps=[10, 20],
        base_timestamp=10,
        compression=Compression.ZSTD,
    )
    stamps = iter_record_stamps(big)
    assert next(stamps) == (0, 10)
    assert next(stamps) == (1, 20)


def test_log_append_time_batches_stamp_every_record_with_the_max_timestamp() -> None:
    batch = build_batch([(None, b"a"), (None, b"b")], timestamps=[5, 6], base_timestamp=5)
    tail = bytearray(batch[21:])
    struct.pack_into(">h", tail, 0, TIMESTAMP_TYPE_BIT)
    struct.pack_into(">q", tail, 14, 99)  # maxTimestamp
    forged = batch[:17] + struct.pack(">I", crc32c.crc32c(bytes(tail))) + bytes(tail)
    assert list(iter_record_stamps(forged)) == [(0, 99), (1, 99)]


@pytest.mark.parametrize("codec", CODECS)
def test_stamps_of_a_batch_with_fewer_records_than_claimed_are_corrupt(codec: int) -> None:
    section = records_section(build_batch([(None, b"x")] * 3))
    forged = forge(compress(codec, section), count=4, attributes=codec)
    with pytest.raises(CorruptRecordError, match="claims 4 records but holds 3"):
        list(iter_record_stamps(forged))


# -- verification of compressed batches ---------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS[1:])
def test_honest_compressed_batches_pass_verification(codec: int) -> None:
    for n in (1, 7, 300):
        batch = build_batch([(b"k", b"v" * 100)] * n, compression=codec)
        verify_record_count(read_header(batch), batch, limit=1 << 20)


@pytest.mark.parametrize("codec", CODECS[1:])
def test_compressed_batch_claiming_more_records_than_its_bytes_is_refused(codec: int) -> None:
    section = records_section(build_batch([(None, None)] * 10))
    forged = forge(compress(codec, section), count=11, attributes=codec)
    scan_batches(forged)  # the header alone cannot tell: the records are compressed
    with pytest.raises(InvalidRecordError, match=r"claims 11 records .* decompress to 70 bytes"):
        verify_record_count(read_header(forged), forged, limit=1 << 20)
    raw = forge(compress_raw_snappy(section), count=11, attributes=Compression.SNAPPY)
    with pytest.raises(InvalidRecordError, match=r"decompress to 70 bytes"):
        verify_record_count(read_header(raw), raw, limit=1 << 20)


def test_a_claim_beyond_the_limit_is_refused_without_decompressing() -> None:
    forged = forge(compress(Compression.ZSTD, b"\x00" * 100), count=2**31 - 1, attributes=Compression.ZSTD)
    with pytest.raises(InvalidRecordError, match=r"sluice\.batch\.uncompressed\.max\.bytes=1000"):
        verify_record_count(read_header(forged), forged, limit=1000)


@given(
    count=st.integers(1, 2**31 - 1),
    section=st.binary(max_size=3000),
    codec=st.sampled_from(CODECS[1:]),
)
@settings(max_examples=300, deadline=None)
def test_verified_compressed_claims_are_plausible(count: int, section: bytes, codec: int) -> None:
    forged = forge(compress(codec, section), count=count, attributes=codec)
    try:
        verify_record_count(read_header(forged), forged, limit=1 << 20)
    except (InvalidRecordError, CorruptRecordError):
        return
    assert count * 7 <= len(section)


# -- recompression ------------------------------------------------------------------------------


@pytest.mark.parametrize("source", CODECS)
@pytest.mark.parametrize("target", CODECS)
def test_recompression_keeps_every_record_and_header_field(source: int, target: int) -> None:
    records = [(b"k1", b"hello" * 50), (None, None), (b"", b"\xff\x00")]
    batch = bytearray(
        build_batch(
            records,
            headers=[[("h", b"1")], [], [("x", None), ("y", b"")]],
            compression=source,
            base_offset=0,
            base_timestamp=5,
            timestamps=[5, 9, 7],
            producer_id=77,
            producer_epoch=3,
            base_sequence=12,
        )
    )
    # The transactional bit, as a transactional producer sets it.
    tail = bytearray(batch[21:])
    struct.pack_into(">h", tail, 0, source | TRANSACTIONAL_BIT)
    batch = bytearray(batch[:17] + struct.pack(">I", crc32c.crc32c(bytes(tail))) + tail)
    out = recompress_batch(batch, target, limit=1 << 20)
    (before,) = scan_batches(batch)
    (after,) = scan_batches(out)  # a valid CRC
    assert after.compression == target
    assert after.is_transactional
    for field in (
        "base_offset",
        "last_offset_delta",
        "base_timestamp",
        "max_timestamp",
        "producer_id",
        "producer_epoch",
        "base_sequence",
        "records_count",
    ):
        assert getattr(after, field) == getattr(before, field), field
    assert after.attributes & ~0x07 == before.attributes & ~0x07
    assert decode_records(out) == decode_records(batch)


def test_recompression_refuses_past_the_limit() -> None:
    batch = build_batch([(None, bytes(100_000))], compression=Compression.ZSTD)
    with pytest.raises(InvalidRecordError, match=r"sluice\.batch\.uncompressed\.max\.bytes"):
        recompress_batch(batch, Compression.GZIP, limit=50_000)


def test_recompression_refuses_records_that_do_not_chain() -> None:
    section = records_section(build_batch([(None, b"abc")] * 3))
    forged = forge(compress(Compression.LZ4, section + b"\x00"), count=3, attributes=Compression.LZ4)
    with pytest.raises(CorruptRecordError, match="after its 3 records"):
        recompress_batch(forged, Compression.ZSTD, limit=1 << 20)


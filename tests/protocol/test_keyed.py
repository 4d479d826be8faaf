"""protocol/keyed.py against the record codec: keys read out of batches (streamed, in chunks of
any size, every codec) and batches rewritten with a subset of their records, checked by decoding
them as a consumer would."""

from __future__ import annotations

import crc32c
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.errors import CorruptRecordError, InvalidRecordError
from sluice.protocol.keyed import (
    DELETE_HORIZON_BIT,
    delete_horizon,
    empty_batch,
    keyed_records,
    keyless_records,
    records_section,
    rewrite_batch,
)
from sluice.protocol.records import (
    ATTRIBUTES_OFFSET,
    Compression,
    build_batch,
    decode_records,
    read_header,
)

CODECS = [Compression.NONE, Compression.GZIP, Compression.SNAPPY, Compression.LZ4, Compression.ZSTD]

records_strategy = st.lists(
    st.tuples(
        st.one_of(st.none(), st.binary(max_size=300)),  # key
        st.one_of(st.none(), st.binary(max_size=300)),  # value
        st.integers(0, 100_000),  # timestamp delta
        st.lists(st.tuples(st.text(max_size=5), st.one_of(st.none(), st.binary(max_size=10))), max_size=2),
    ),
    min_size=1,
    max_size=40,
)


def make(recs: list[tuple[bytes | None, bytes | None, int, list[tuple[str, bytes | None]]]], codec: int) -> bytes:
    base_ts = 1_700_000_000_000
    return build_batch(
        [(k, v) for k, v, _, _ in recs],
        headers=[h for _, _, _, h in recs],
        base_offset=1000,
        base_timestamp=base_ts,
        timestamps=[base_ts + t for _, _, t, _ in recs],
        compression=codec,
    )


def crc_ok(batch: bytes) -> bool:
    return crc32c.crc32c(batch[ATTRIBUTES_OFFSET:]) == read_header(batch).crc


@settings(max_examples=150, deadline=None)
@given(recs=records_strategy, codec=st.sampled_from(CODECS), chunk=st.sampled_from([7, 64, 65536]))
def test_keyless_records_finds_every_record_without_a_key(recs: list, codec: int, chunk: int) -> None:  # type: ignore[type-arg]
    batch = make(recs, codec)
    assert keyless_records(batch, chunk_size=chunk) == [i for i, (k, *_) in enumerate(recs) if k is None]


@settings(max_examples=150, deadline=None)
@given(recs=records_strategy, codec=st.sampled_from(CODECS), data=st.data())
def test_a_rewritten_batch_holds_exactly_the_kept_records(recs: list, codec: int, data: st.DataObject) -> None:  # type: ignore[type-arg]
    batch = make(recs, codec)
    header = read_header(batch)
    section = records_section(header, batch)
    parsed = keyed_records(section, header.records_count)
    decoded = decode_records(batch)
    assert [(r[2], r[3]) for r in parsed] == [(d.key, d.value is not None) for d in decoded]
    keep = sorted(data.draw(st.sets(st.integers(0, len(recs) - 1), min_size=1)))
    horizon = data.draw(st.one_of(st.none(), st.integers(1_600_000_000_000, 1_800_000_000_000)))
    out = rewrite_batch(header, section, [parsed[i] for i in keep], new_delete_horizon=horizon)
    new = read_header(out)
    assert crc_ok(out)
    assert (new.base_offset, new.last_offset_delta, new.compression) == (1000, header.last_offset_delta, codec)
    assert new.records_count == len(keep)
    got = decode_records(out)
    want = [decoded[i] for i in keep]
    assert [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in got] == [
        (r.offset, r.timestamp, r.key, r.value, r.headers) for r in want
    ]
    assert new.max_timestamp == max(r.timestamp for r in want)
    if horizon is None:
        assert delete_horizon(new) is None
    else:
        assert new.attributes & DELETE_HORIZON_BIT and delete_horizon(new) == horizon == new.base_timestamp


def test_an_empty_batch_keeps_the_producer_fields() -> None:
    batch = build_batch(
        [(b"k", b"v")] * 3,
        base_offset=40,
        base_timestamp=5,
        compression=Compression.GZIP,
        producer_id=7,
        producer_epoch=2,
        base_sequence=11,
    )
    out = empty_batch(read_header(batch))
    new = read_header(out)
    assert crc_ok(out) and len(out) == 61
    assert (new.base_offset, new.last_offset, new.records_count, new.compression) == (40, 42, 0, 0)
    assert (new.producer_id, new.producer_epoch, new.base_sequence, new.max_timestamp) == (7, 2, 11, 5)
    assert decode_records(out) == []


def test_batches_claiming_more_records_than_they_hold_are_refused() -> None:
    batch = bytearray(build_batch([(b"k", b"v")] * 3))
    batch[57:61] = (5).to_bytes(4, "big")  # records count 5, 3 present
    with pytest.raises(InvalidRecordError):
        keyless_records(bytes(batch))
    garbage = bytearray(build_batch([(b"k", b"v")] * 3, compression=Compression.GZIP))
    garbage[70:80] = b"\xff" * 10
    with pytest.raises(CorruptRecordError):
        keyless_records(bytes(garbage))

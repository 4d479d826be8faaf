"""The record walk of ``sluice.produce.validate.records`` (:mod:`sluice.protocol.walk`): honest
batches of every codec pass whatever the chunking; each way records can contradict a valid
header and CRC is refused with INVALID_RECORD, naming the fault."""

from __future__ import annotations

import os
import random
import struct

import crc32c
import pytest

from sluice.errors import CorruptRecordError, InvalidRecordError
from sluice.protocol.compression import Compression, compress
from sluice.protocol.records import build_batch, read_header, write_varint
from sluice.protocol.walk import walk_batch

CODECS = [Compression.NONE, Compression.GZIP, Compression.SNAPPY, Compression.LZ4, Compression.ZSTD]
LIMIT = 1 << 26


def record(delta: int, value: bytes = b"v", *, ts_delta: int = 0) -> bytes:
    """One encoded record (length prefix included) with offset delta ``delta``."""
    body = bytearray([0])  # attributes
    write_varint(body, ts_delta)
    write_varint(body, delta)
    write_varint(body, -1)  # no key
    write_varint(body, len(value))
    body += value
    write_varint(body, 0)  # no headers
    out = bytearray()
    write_varint(out, len(body))
    return bytes(out + body)


def v(n: int) -> bytes:
    """``n`` as a zigzag varint."""
    out = bytearray()
    write_varint(out, n)
    return bytes(out)


def raw(delta: int, fields: bytes, *, length: int | None = None) -> bytes:
    """A record of offset delta ``delta`` whose key, value and header bytes are ``fields`` as
    given (garbage or not), its length ``length`` or the true one."""
    body = b"\x00" + v(0) + v(delta) + fields
    return v(len(body) if length is None else length) + body


def forge(section: bytes, count: int, codec: int = Compression.NONE) -> bytes:
    """A batch with a valid header (count == lastOffsetDelta + 1) and CRC over any records."""
    tail = struct.pack(">hiqqqhii", codec, count - 1, 0, 0, -1, -1, -1, count) + compress(codec, section)
    return struct.pack(">qiibI", 0, len(tail) + 9, 0, 2, crc32c.crc32c(tail)) + tail


def walk(batch: bytes, chunk_size: int = 64 * 1024) -> None:
    walk_batch(read_header(batch), bytearray(batch), limit=LIMIT, chunk_size=chunk_size)


def refusal(batch: bytes, chunk_size: int = 64 * 1024) -> str:
    with pytest.raises(InvalidRecordError) as info:
        walk(batch, chunk_size)
    return str(info.value)


def records(n: int, size: int = 40) -> bytes:
    return b"".join(record(i, os.urandom(size)) for i in range(n))


@pytest.mark.parametrize("codec", CODECS)
def test_honest_batches_pass_whatever_the_chunking(codec: int) -> None:
    many = records(3000)  # offset deltas of 1 and 2 bytes, records across every chunk boundary
    for chunk_size in (1, 7, 21, 22, 100, 4096, 64 * 1024):
        walk(forge(many, 3000, codec), chunk_size)
    walk(build_batch([(b"k", b"v")], compression=codec))
    walk(build_batch([(b"k", os.urandom(300))] * 70, compression=codec, headers=[[("h", b"x")]] * 70))
    # Timestamp deltas of any width, and a record past offset delta 4095 (a 3-byte varint).
    walk(forge(b"".join(record(i, ts_delta=-(i << 40)) for i in range(5000)), 5000, codec), 33)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("chunk_size", [1, 13, 64 * 1024])
def test_each_lie_is_refused_with_what_is_wrong(codec: int, chunk_size: int) -> None:
    two = record(0) + record(1)
    cases = {
        "claims 1 holds 2": (forge(two, 1, codec), "records still remaining"),
        "claims 3 holds 2": (forge(two, 3, codec), "premature EOF"),
        "a byte after the last record": (forge(two + b"\x00", 2, codec), "1 bytes follow"),
        "the last record cut short": (forge(two[:-1], 2, codec), "past the end"),
        "offset deltas 0, 0": (forge(record(0) + record(0), 2, codec), "offset delta 0"),
        "offset deltas 0, 2": (forge(record(0) + record(2), 2, codec), "offset delta 2"),
        "offset deltas 1, 2": (forge(record(1) + record(2), 2, codec), "record 0 of the batch has offset delta 1"),
        "a length too short for the fields": (forge(b"\x06\x00\x00\x00\x01\x00\x00" * 2, 2, codec), "too short"),
        "a negative length": (forge(b"\x01" + record(0)[1:] + record(1), 2, codec), "negative length"),
        "a varint that never ends": (forge(b"\xff" * 40, 2, codec), "does not parse"),
        "garbage": (forge(bytes(range(256)) * 4, 5, codec), "of the batch"),
    }
    for name, (batch, says) in cases.items():
        message = refusal(batch, chunk_size)
        assert says in message, (name, message)
    many = records(2000)
    assert "records still remaining" in refusal(forge(many, 1999, codec), chunk_size)
    assert "premature EOF" in refusal(forge(many, 2001, codec), chunk_size)
    assert "record 2000 of the batch has offset delta 1000" in refusal(
        forge(many + record(1000), 2001, codec), chunk_size
    )


@pytest.mark.parametrize("codec", CODECS[1:])
def test_compressed_data_that_does_not_decompress_stays_corrupt(codec: int) -> None:
    batch = bytearray(forge(records(50), 50, codec))
    batch[61:] = os.urandom(len(batch) - 61)
    tail = bytes(batch[21:])
    batch[17:21] = struct.pack(">I", crc32c.crc32c(tail))
    with pytest.raises((CorruptRecordError, InvalidRecordError)):
        walk(bytes(batch))


def test_decompression_is_bounded_by_the_limit() -> None:
    batch = forge(records(1000, size=2000), 1000, Compression.ZSTD)
    with pytest.raises(InvalidRecordError, match="max"):
        walk_batch(read_header(batch), batch, limit=1 << 20)


def _outcome(batch: bytes, chunk_size: int) -> str | None:
    try:
        walk(batch, chunk_size)
    except InvalidRecordError as exc:
        return str(exc)
    return None


def rich_record(delta: int, rng: random.Random) -> bytes:
    """A sound record with a key or not, a value or not (lengths of one and two bytes) and a
    few headers, some with null values."""

    def field(null: bool, size: int) -> bytes:
        return v(-1) if null else v(size) + rng.randbytes(size)

    fields = field(rng.random() < 0.3, rng.randint(0, 80)) + field(rng.random() < 0.2, rng.randint(0, 130))
    headers = rng.randint(0, 3)
    fields += v(headers)
    for _ in range(headers):
        fields += field(False, rng.randint(0, 5)) + field(rng.random() < 0.5, rng.randint(0, 70))
    return raw(delta, fields)


def test_streamed_walks_agree_with_the_walk_in_place() -> None:
    """The streamed walk of a compressed batch (prefixes cut by chunk ends carried over, record
    tails skipped across chunks) accepts and refuses exactly what the walk of the same records
    uncompressed does, on damaged sections of every kind (seeded, so deterministic). Chunks of
    one byte send every record through the field-by-field reader, so the tight loop of the walk
    in place is checked against it."""

    rng = random.Random(87)
    refused = 0
    for _ in range(150):
        count = rng.randint(1, 80)
        section = bytearray(
            b"".join(
                record(i, os.urandom(rng.randint(0, 40)), ts_delta=rng.choice([0, 5, -300, 1 << 33]))
                if rng.random() < 0.5
                else rich_record(i, rng)
                for i in range(count)
            )
        )
        claimed = count
        damage = rng.randint(0, 5)
        if damage == 1:
            section[rng.randrange(len(section))] = rng.randrange(256)
        elif damage == 2:
            claimed = max(1, count + rng.choice([-1, 1]))
        elif damage == 3:
            section += bytes([rng.randrange(256)])
        elif damage == 4:
            del section[rng.randrange(len(section)) :]
        elif damage == 5:  # a field's length becomes null, negative, long or unterminated
            section[rng.randrange(len(section))] = rng.choice([0x01, 0x03, 0x7E, 0x80])
        plain = _outcome(forge(bytes(section), claimed), 64 * 1024) is None
        refused += not plain
        for codec in (Compression.GZIP, Compression.LZ4):
            batch = forge(bytes(section), claimed, codec)
            for chunk_size in (1, 5, 64):
                streamed = _outcome(batch, chunk_size)
                assert (streamed is None) == plain, (damage, codec, chunk_size, streamed)
    print(f"{refused} of 150 refused")
    assert 30 < refused < 120  # both outcomes were exercised


HONEST_FIELDS = v(-1) + v(1) + b"x" + v(0)
FIELD_LIES = {
    "a key length past the record's end": (v(50) + b"k" + v(1) + b"x" + v(0), "key length 50, but"),
    "a key length of -5": (v(-5) + v(1) + b"x" + v(0), "key length -5"),
    "a key length of -70 (two bytes)": (v(-70) + v(1) + b"x" + v(0), "key length -70"),
    "a value length past the record's end": (v(-1) + v(40) + b"x" + v(0), "value length 40, but"),
    "a value length of -2": (v(-1) + v(-2) + v(0), "value length -2"),
    "a header count that does not fit": (v(-1) + v(1) + b"x" + v(30) + v(0) + v(-1), "header count 30"),
    "a negative header count": (v(-1) + v(1) + b"x" + v(-1), "header count -1"),
    "a header key length of -1": (v(-1) + v(1) + b"x" + v(1) + v(-1) + v(-1), "header 0 with key length -1"),
    "a header key past the record's end": (HONEST_FIELDS[:-1] + v(1) + v(7) + b"hh" + v(-1), "header 0 key length 7"),
    "a header value past the record's end": (
        HONEST_FIELDS[:-1] + v(2) + v(1) + b"h" + v(-1) + v(1) + b"h" + v(9) + b"ab",
        "header 1 value length 9",
    ),
    "a header value length of -3": (HONEST_FIELDS[:-1] + v(1) + v(1) + b"h" + v(-3), "header 0 value length -3"),
    "fields ending before the record": (HONEST_FIELDS + b"\x00\x00", "but its fields end after 7 bytes"),
    "a key length that is not a varint": (b"\xff" * 6 + v(1) + b"x" + v(0), "its key is a malformed varint"),
}


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("chunk_size", [1, 5, 13, 64 * 1024])
def test_records_whose_fields_lie_are_refused_naming_the_record_and_the_field(codec: int, chunk_size: int) -> None:
    """Kafka's DefaultRecord.readFrom reads every field: a record of the right length whose key,
    value or headers are garbage is refused, not stored for consumers to choke on. Small chunks
    cut the lying field (and the honest ones around it) at a decompressed chunk's end."""
    for name, (fields, says) in FIELD_LIES.items():
        batch = forge(raw(0, HONEST_FIELDS) + raw(1, fields) + raw(2, HONEST_FIELDS), 3, codec)
        message = refusal(batch, chunk_size)
        assert "record 1 of the batch" in message and says in message, (name, message)
    # A record whose length cuts its last field: the header count lies past its end.
    short = raw(1, HONEST_FIELDS, length=len(raw(1, HONEST_FIELDS)) - 2)
    message = refusal(forge(raw(0, HONEST_FIELDS) + short + HONEST_FIELDS[-1:] + raw(2, HONEST_FIELDS), 3, codec), chunk_size)
    assert "record 1 of the batch has length 6, too short for its fields: its header count" in message
    # A length of 2: the attributes and the timestamp delta; the offset delta lies past the end.
    message = refusal(forge(raw(0, HONEST_FIELDS) + v(2) + b"\x00\x00\x02" + HONEST_FIELDS + raw(2, HONEST_FIELDS), 3, codec), chunk_size)
    assert "record 1 of the batch has length 2, too short for its fields: its offset delta" in message
    # Far into a batch (the tight loop passes 3000 records first), and after a long value.
    many = records(3000)
    lie = raw(3000, v(-1) + v(300) + os.urandom(300) + v(1) + v(-1) + v(0))
    assert "record 3000 of the batch has header 0 with key length -1" in refusal(
        forge(many + lie + record(3001), 3002, codec), chunk_size
    )


@pytest.mark.parametrize("codec", CODECS)
def test_every_field_shape_a_client_writes_passes(codec: int) -> None:
    """Keys and values null, empty, short and long (varints of 1 to 3 bytes), many headers,
    null header values: the encoder's batches pass whatever cuts their fields."""
    sizes = [0, 1, 63, 64, 200, 8191, 8192, 20000]
    batch = [(None if i % 5 == 0 else os.urandom(sizes[i % 8]), None if i % 3 == 0 else os.urandom(sizes[(i * 3) % 8])) for i in range(60)]
    headers = [[(f"h{j}" * (i % 4), None if j % 2 else os.urandom(sizes[(i + j) % 8] // 4)) for j in range(i % 70)] for i in range(60)]
    encoded = build_batch(batch, compression=codec, headers=headers)
    for chunk_size in (13, 4096, 64 * 1024):
        walk(encoded, chunk_size)
    small = [(b"k", None)] * 100 + [(None, b"")] * 100 + [(b"k" * 70, b"v" * 200)] * 20
    walk(build_batch(small, compression=codec, headers=[[("", None), ("h" * 64, b"v" * 64)]] * 220), 1)


def test_a_compressed_value_is_skipped_not_held() -> None:
    """A record's value is passed over chunk by chunk: walking a 16 MiB value holds a few
    chunks, never the value."""
    import tracemalloc

    batch = build_batch([(b"k", bytes(16 << 20))], compression=Compression.ZSTD, headers=[[("h", b"v")]])
    tracemalloc.start()
    try:
        walk(batch)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"peak {peak} bytes walking a 16 MiB value")
    assert peak < 1 << 20

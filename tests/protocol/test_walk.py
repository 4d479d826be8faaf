"""The record walk of ``sluice.produce.validate.records`` (:mod:`sluice.protocol.walk`): honest
batches of every codec pass whatever the chunking; each way records can contradict a valid
header and CRC is refused with INVALID_RECORD, naming the fault."""

from __future__ import annotations

import os
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


def test_streamed_walks_agree_with_the_walk_in_place() -> None:
    """The streamed walk of a compressed batch (prefixes cut by chunk ends carried over, record
    tails skipped across chunks) accepts and refuses exactly what the walk of the same records
    uncompressed does, on damaged sections of every kind (seeded, so deterministic)."""
    import random

    rng = random.Random(87)
    refused = 0
    for _ in range(150):
        count = rng.randint(1, 80)
        section = bytearray(
            b"".join(
                record(i, os.urandom(rng.randint(0, 40)), ts_delta=rng.choice([0, 5, -300, 1 << 33]))
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
        plain = _outcome(forge(bytes(section), claimed), 64 * 1024) is None
        refused += not plain
        for codec in (Compression.GZIP, Compression.LZ4):
            batch = forge(bytes(section), claimed, codec)
            for chunk_size in (1, 5, 21, 22, 64):
                streamed = _outcome(batch, chunk_size)
                assert (streamed is None) == plain, (damage, codec, chunk_size, streamed)
    assert 30 < refused < 120  # both outcomes were exercised

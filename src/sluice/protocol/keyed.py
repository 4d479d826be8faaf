"""Record keys: what compacted topics need from a batch's records (sans-IO).

Two users, both off the hot path of ordinary topics:

* Produce to a compacted topic must refuse a record without a key (Kafka's INVALID_RECORD):
  :func:`keyless_records` streams the records with a bounded buffer, parsing each record's
  prefix up to its key length and skipping the rest unread.
* The log cleaner reads each record's offset, key and whether it has a value
  (:func:`keyed_records`), then writes a batch holding a subset of them (:func:`rewrite_batch`)
  or, when a batch must stay for its producer's sake but none of its records may,
  only its header (:func:`empty_batch`).

A rewritten batch keeps what Kafka's cleaner keeps: its base offset and last offset delta (so
the offsets of the records it holds, gaps included, and its producer's last sequence number stay
what they were), producer id, epoch, base sequence, partition leader epoch, timestamp type,
transactional and control bits, and its codec (the records are compressed again). Records are
copied byte for byte, unless the batch gets a *delete horizon*: Kafka then stores that time in
the base timestamp (attributes bit 6) and re-encodes every record's timestamp delta against it,
so each record's timestamp is unchanged.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from sluice.errors import CorruptRecordError, InvalidRecordError
from sluice.protocol.compression import CODEC_NAMES, compress, inflate
from sluice.protocol.crc import crc32c
from sluice.protocol.records import (
    ATTRIBUTES_OFFSET,
    COMPRESSION_MASK,
    DEFAULT_MAX_UNCOMPRESSED,
    HEADER_SIZE,
    TIMESTAMP_TYPE_BIT,
    BatchHeader,
    Bytes,
    Compression,
    read_header,
    read_varint,
    write_varint,
)

DELETE_HORIZON_BIT = 0x40
"""Attributes bit 6: the base timestamp holds the time after which the batch's tombstones (and
a control batch) may be removed by the cleaner."""

NO_TIMESTAMP = -1

_TAIL = struct.Struct(">hiqqqhii")
"""attributes .. recordsCount: the part of the header after the CRC."""
_LEAD = struct.Struct(">qiibI")
"""baseOffset, batchLength, partitionLeaderEpoch, magic, crc."""
_MAX_KEY_PREFIX = 5 + 1 + 10 + 5 + 5
"""Longest record prefix :func:`keyless_records` parses: length, attributes, timestamp
delta, offset delta and key length."""


def has_delete_horizon(header: BatchHeader) -> bool:
    return bool(header.attributes & DELETE_HORIZON_BIT)


def delete_horizon(header: BatchHeader) -> int | None:
    """When the batch's tombstones (or the control batch itself) may go; None if not yet set."""
    return header.base_timestamp if header.attributes & DELETE_HORIZON_BIT else None


KeyedRecord = tuple[int, int, bytes | None, bool, int, int]
"""One record of a batch's (decompressed) records section, as the cleaner sees it: (offset delta,
timestamp delta, key, whether it has a value, where the record starts in the section, where it
ends). A plain tuple: the cleaner makes one per record, and a NamedTuple costs several times more."""


def records_section(header: BatchHeader, batch: Bytes, *, limit: int = DEFAULT_MAX_UNCOMPRESSED) -> bytes:
    """The batch's records, decompressed whole (refused past ``limit`` bytes)."""
    view = memoryview(batch)
    payload = view[HEADER_SIZE : header.size]
    if header.compression == Compression.NONE:
        return bytes(payload)
    return b"".join(inflate(header.compression, payload, limit=limit, chunk_size=1 << 20))


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    b = buf[pos]
    if b < 0x80:
        return (b >> 1) ^ -(b & 1), pos + 1
    return read_varint(buf, pos)


def keyed_records(records: bytes, count: int) -> list[KeyedRecord]:
    """Every record of a records section (see :data:`KeyedRecord`). Raises CorruptRecordError if
    the records do not parse or are not exactly ``count`` records filling the section.

    The cleaner's inner loop: varints of one and two bytes (record lengths and offset deltas of
    up to 8191) are decoded inline, longer ones by :func:`read_varint`."""
    out: list[KeyedRecord] = []
    append = out.append
    pos = 0
    end = len(records)
    slow = read_varint
    try:
        for _ in range(count):
            b = records[pos]
            if b < 0x80:
                length, p = (b >> 1) ^ -(b & 1), pos + 1
            elif records[pos + 1] < 0x80:
                raw = (b & 0x7F) | (records[pos + 1] << 7)
                length, p = (raw >> 1) ^ -(raw & 1), pos + 2
            else:
                length, p = slow(records, pos)
            record_end = p + length
            if length < 6 or record_end > end:
                raise CorruptRecordError(f"record of length {length} does not fit its batch")
            p += 1  # attributes
            b = records[p]
            if b < 0x80:
                ts_delta, p = (b >> 1) ^ -(b & 1), p + 1
            elif records[p + 1] < 0x80:
                raw = (b & 0x7F) | (records[p + 1] << 7)
                ts_delta, p = (raw >> 1) ^ -(raw & 1), p + 2
            else:
                ts_delta, p = slow(records, p)
            b = records[p]
            if b < 0x80:
                off_delta, p = (b >> 1) ^ -(b & 1), p + 1
            elif records[p + 1] < 0x80:
                raw = (b & 0x7F) | (records[p + 1] << 7)
                off_delta, p = (raw >> 1) ^ -(raw & 1), p + 2
            else:
                off_delta, p = slow(records, p)
            b = records[p]
            if b < 0x80:
                key_len, p = (b >> 1) ^ -(b & 1), p + 1
            else:
                key_len, p = slow(records, p)
            if key_len < 0:
                key = None
            else:
                key = records[p : p + key_len]
                p += key_len
            b = records[p]
            if b < 0x80:
                value_len, p = (b >> 1) ^ -(b & 1), p + 1
            elif records[p + 1] < 0x80:
                raw = (b & 0x7F) | (records[p + 1] << 7)
                value_len, p = (raw >> 1) ^ -(raw & 1), p + 2
            else:
                value_len, p = slow(records, p)
            if p > record_end or (value_len > 0 and p + value_len > record_end):
                raise CorruptRecordError("record fields run past the record's length")
            append((off_delta, ts_delta, key, value_len >= 0, pos, record_end))
            pos = record_end
    except IndexError:
        raise CorruptRecordError("record extends past its batch") from None
    if pos != end:
        raise CorruptRecordError(f"record batch holds {end - pos} bytes after its {count} records")
    return out


def rewrite_batch(
    header: BatchHeader,
    records: bytes,
    kept: Sequence[KeyedRecord],
    *,
    new_delete_horizon: int | None = None,
) -> bytes:
    """The batch holding only ``kept`` (records of ``records``, in order, at least one), with
    its codec and every header field Kafka's cleaner keeps. ``new_delete_horizon`` sets the
    delete horizon of a batch that has none yet."""
    base_ts = header.base_timestamp
    attributes = header.attributes
    if new_delete_horizon is not None and not attributes & DELETE_HORIZON_BIT:
        attributes |= DELETE_HORIZON_BIT
        shift = base_ts - new_delete_horizon
        base_ts = new_delete_horizon
    else:
        shift = 0
    body = bytearray()
    max_ts = NO_TIMESTAMP
    for record in kept:
        _, ts_delta, _, _, start, end = record
        max_ts = max(max_ts, header.base_timestamp + ts_delta)
        if shift == 0:
            body += records[start:end]
        else:
            body += _with_timestamp_delta(records, record, ts_delta + shift)
    if attributes & TIMESTAMP_TYPE_BIT or not kept:
        max_ts = header.max_timestamp  # log-append time: the broker's stamp stays
    payload = compress(header.compression, body)
    return _assemble(header, attributes, base_ts, max_ts, len(kept), payload)


def empty_batch(header: BatchHeader) -> bytes:
    """Only the header of ``header``'s batch, no records (Kafka's empty batch): kept so the
    producer's last sequence number and epoch survive its records."""
    attributes = header.attributes & ~(COMPRESSION_MASK | DELETE_HORIZON_BIT)
    return _assemble(header, attributes, NO_TIMESTAMP, header.max_timestamp, 0, b"")


def _assemble(
    header: BatchHeader, attributes: int, base_ts: int, max_ts: int, count: int, payload: bytes
) -> bytes:
    tail = (
        _TAIL.pack(
            attributes,
            header.last_offset_delta,
            base_ts,
            max_ts,
            header.producer_id,
            header.producer_epoch,
            header.base_sequence,
            count,
        )
        + payload
    )
    batch_length = len(tail) + 9  # partitionLeaderEpoch, magic, crc
    return (
        _LEAD.pack(
            header.base_offset,
            batch_length,
            header.partition_leader_epoch,
            header.magic,
            crc32c(tail),
        )
        + tail
    )


def _with_timestamp_delta(records: bytes, record: KeyedRecord, ts_delta: int) -> bytes:
    """The record re-encoded with another timestamp delta (its length varint follows)."""
    _, _, _, _, start, end = record
    _, body = _varint(records, start)
    p = body + 1
    _, p = _varint(records, p)  # the old timestamp delta
    inner = bytearray(records[body : body + 1])  # attributes
    write_varint(inner, ts_delta)
    inner += records[p:end]
    out = bytearray()
    write_varint(out, len(inner))
    out += inner
    return bytes(out)


def check_crc(batch: Bytes, header: BatchHeader) -> None:
    view = memoryview(batch)
    if crc32c(view[ATTRIBUTES_OFFSET : header.size]) != header.crc:
        raise CorruptRecordError(
            f"record batch at offset {header.base_offset} fails its CRC-32C check"
        )


# -- the produce check ---------------------------------------------------------------------------


def keyless_records(
    batch: Bytes, *, chunk_size: int = 64 * 1024, limit: int = DEFAULT_MAX_UNCOMPRESSED
) -> list[int]:
    """The indexes (within the batch) of its records without a key; empty if every record has
    one. Streams the records (decompressing in chunks of ``chunk_size``; at most ``limit``
    bytes in all) and parses each record only up to its key length, so memory stays at one chunk.
    Raises CorruptRecordError if the records do not parse, InvalidRecordError if they are fewer
    than the header claims or decompress past ``limit``."""
    view = memoryview(batch)
    header = read_header(view)
    if header.size > len(view):
        raise CorruptRecordError(f"record batch claims {header.size} bytes, {len(view)} present")
    if header.compression == Compression.NONE:
        return _keyless_plain(bytes(view[HEADER_SIZE : header.size]), header.records_count)
    remaining = header.records_count
    index = 0
    keyless: list[int] = []
    carry = b""
    skip = 0
    for chunk in inflate(
        header.compression, view[HEADER_SIZE : header.size], chunk_size=chunk_size, limit=limit
    ):
        if remaining == 0:
            break
        data: bytes = carry + chunk if carry else chunk
        carry = b""
        end = len(data)
        if skip >= end:
            skip -= end
            continue
        pos = skip
        skip = 0
        while remaining:
            try:
                length, body = read_varint(data, pos)
                p = body + 1
                _, p = read_varint(data, p)
                _, p = read_varint(data, p)
                key_len, p = read_varint(data, p)
            except CorruptRecordError:
                if end - pos >= _MAX_KEY_PREFIX:
                    raise
                carry = data[pos:]
                break
            if length < p - body + 2:
                raise CorruptRecordError(f"record length {length} is too short for its fields")
            if key_len < 0:
                keyless.append(index)
            remaining -= 1
            index += 1
            record_end = body + length
            if record_end >= end:
                skip = record_end - end
                break
            pos = record_end
    if remaining:
        codec = CODEC_NAMES.get(header.compression, str(header.compression))
        raise InvalidRecordError(
            f"{codec} record batch claims {header.records_count} records but holds "
            f"{header.records_count - remaining}"
        )
    return keyless


def _keyless_plain(records: bytes, count: int) -> list[int]:
    """:func:`keyless_records` of an uncompressed records section (already in memory): each
    record's prefix parsed in place, varints of one and two bytes inline."""
    keyless: list[int] = []
    pos = 0
    slow = read_varint
    try:
        for index in range(count):
            b = records[pos]
            if b < 0x80:
                length, p = (b >> 1) ^ -(b & 1), pos + 1
            elif records[pos + 1] < 0x80:
                raw = (b & 0x7F) | (records[pos + 1] << 7)
                length, p = (raw >> 1) ^ -(raw & 1), pos + 2
            else:
                length, p = slow(records, pos)
            record_end = p + length
            p += 1  # attributes
            for _ in range(2):  # timestamp delta, offset delta: skipped
                if records[p] < 0x80:
                    p += 1
                elif records[p + 1] < 0x80:
                    p += 2
                else:
                    _, p = slow(records, p)
            b = records[p]
            if b < 0x80:
                key_len, p = (b >> 1) ^ -(b & 1), p + 1
            else:
                key_len, p = slow(records, p)
            if p > record_end or length < 6:
                raise CorruptRecordError(f"record length {length} is too short for its fields")
            if key_len < 0:
                keyless.append(index)
            pos = record_end
    except IndexError:
        raise InvalidRecordError(f"record batch claims {count} records but its bytes end first") from None
    if pos > len(records):
        raise InvalidRecordError(f"record batch claims {count} records but its bytes end first")
    return keyless

"""Walking a batch's records to refuse one whose header and CRC are sound but whose records lie
(sans-IO; the opt-in check of ``sluice.produce.validate.records``).

The hot path never reads records (:mod:`sluice.protocol.records` checks headers and the CRC), so
a batch claiming one record that holds two, or whose records section is garbage under a valid
CRC, would be stored: consumers then see two records at one offset, or nothing. Kafka's
LogValidator refuses such a batch (INVALID_RECORD) because it iterates every record; this module
is the cheapest walk that catches the same lies. Per record it reads the length varint, passes
the attributes byte and the timestamp delta, and reads the offset delta; keys, values and headers
are skipped unread. It refuses a batch (InvalidRecordError, INVALID_RECORD) when

* a varint is malformed or a record is shorter than its fixed fields (Kafka: "Found invalid
  record structure"),
* a record's offset delta is not its index (Kafka refuses this only by rewriting a compressed
  batch; sluice never rewrites on produce, so it refuses),
* the records run out before ``recordsCount`` of them (Kafka: "Incorrect declared batch size,
  premature EOF reached"), or a record runs past the section's end (Kafka: "Invalid record
  size"),
* bytes remain after ``recordsCount`` records (Kafka: "Incorrect declared batch size, records
  still remaining in file").

``recordsCount == lastOffsetDelta + 1`` is the header check's, so the last record's offset delta
is ``lastOffsetDelta``. A compressed batch is streamed (one chunk held at a time, at most
``limit`` bytes decompressed in all); data that does not decompress stays CorruptRecordError
(CORRUPT_MESSAGE), as elsewhere.
"""

from __future__ import annotations

from typing import NoReturn

from sluice.errors import CorruptRecordError, InvalidRecordError
from sluice.protocol.compression import CODEC_NAMES, inflate
from sluice.protocol.records import HEADER_SIZE, BatchHeader, Bytes, Compression, read_varint

_MAX_PREFIX = 5 + 1 + 10 + 5
"""Longest record prefix walked: length (varint32), attributes, timestamp delta (varint64),
offset delta (varint32). A chunk is walked only while this much is left of it."""
_MIN_TAIL = 3
"""Key length, value length and header count: one byte each at least, after the prefix."""
WALK_CHUNK = 64 * 1024
"""Decompressed chunk a compressed batch is walked in."""


class _Stop(Exception):
    """The walk of one buffer ended early: the record at ``index`` (starting at ``pos``) has a
    malformed prefix, or the buffer ran out."""

    def __init__(self, index: int, pos: int) -> None:
        self.index = index
        self.pos = pos


def walk_batch(header: BatchHeader, batch: Bytes, *, limit: int, chunk_size: int = WALK_CHUNK) -> None:
    """Refuse (InvalidRecordError) a batch whose records are not exactly what its header says.

    ``batch`` starts at the header and holds the whole batch (its CRC already checked)."""
    payload = memoryview(batch)[HEADER_SIZE : header.size]
    count = header.records_count
    if header.compression == Compression.NONE:
        end = len(payload)
        try:
            index, pos = _walk(payload, 0, 0, count, end + 1)
        except _Stop as stop:
            _refuse_stopped(header, stop, end)
        _check_end(header, index, pos, end)
        return
    _walk_stream(header, payload, limit, chunk_size)


def _walk(data: Bytes, pos: int, first: int, count: int, stop_at: int) -> tuple[int, int]:
    """Walk records from ``pos`` (the one numbered ``first``) until ``count`` are walked or a
    record starts at or after ``stop_at``; return (records walked in all, where the next
    starts). Raises _Stop where a prefix does not parse (IndexError: the buffer ended).

    The inner loop of the setting, ~0.4 us a record: varints of the usual widths (lengths of one
    and two bytes, timestamp deltas of one and two, offset deltas of one to three) are decoded
    inline; an offset delta is compared zigzag-encoded with twice its index; a length's sign
    (the zigzag low bit) is gathered into ``odd`` and checked once, before any answer."""
    slow = read_varint
    odd = 0
    i2 = first << 1
    try:
        for i2 in range(first << 1, count << 1, 2):
            if pos >= stop_at:
                break
            b = data[pos]
            if b < 0x80:
                odd |= b
                body = pos + 1
                pos = body + (b >> 1)
            else:
                b2 = data[pos + 1]
                if b2 < 0x80:
                    b = (b & 0x7F) | (b2 << 7)
                    odd |= b
                    body = pos + 2
                    pos = body + (b >> 1)
                else:
                    length, body = slow(data, pos)
                    odd |= length < 0
                    pos = body + length
            p = body + 2  # past the attributes and a one-byte timestamp delta
            if data[p - 1] >= 0x80:
                if data[p] < 0x80:
                    p += 1
                else:
                    _, p = slow(data, p - 1)
            b = data[p]
            if b < 0x80:
                p += 1
            else:
                b2 = data[p + 1]
                if b2 < 0x80:
                    b = (b & 0x7F) | (b2 << 7)
                    p += 2
                else:
                    b3 = data[p + 2]
                    if b3 < 0x80:
                        b = (b & 0x7F) | ((b2 & 0x7F) << 7) | (b3 << 14)
                        p += 3
                    else:
                        delta, p = slow(data, p)
                        b = (delta << 1) ^ (delta >> 63)
            if b != i2:
                _check_signs(odd)
                raise InvalidRecordError(
                    f"record {i2 >> 1} of the batch has offset delta {(b >> 1) ^ -(b & 1)}; the "
                    f"offset deltas of a batch's records must be 0, 1, 2, ... (Kafka: inner "
                    f"record offsets are not incremental)"
                )
            if pos < p + _MIN_TAIL:
                _check_signs(odd)
                raise InvalidRecordError(
                    f"record {i2 >> 1} of the batch has length {pos - body}, too short for its "
                    f"fields (Kafka: Found invalid record structure)"
                )
        else:
            i2 = count << 1
    except (IndexError, CorruptRecordError) as exc:  # the buffer ended, or a varint is too long
        _check_signs(odd)
        raise _Stop(i2 >> 1, pos) from exc
    _check_signs(odd)
    return i2 >> 1, pos


def _check_signs(odd: int) -> None:
    if odd & 1:
        raise InvalidRecordError(
            "a record of the batch has a negative length (Kafka: Found invalid record structure)"
        )


def _refuse_stopped(header: BatchHeader, stop: _Stop, end: int | None) -> NoReturn:
    """A walk stopped inside record ``stop.index``: ``stop.pos`` is where it starts or, once its
    length is read, where it ends. ``end`` is the records' end when the walk was the final one,
    None when more bytes follow (the prefix is then malformed). Always raises."""
    if end is not None and stop.pos == end:
        raise InvalidRecordError(
            f"record batch claims {header.records_count} records but holds {stop.index} "
            f"(Kafka: Incorrect declared batch size, premature EOF reached)"
        )
    if end is not None and stop.pos > end:
        raise InvalidRecordError(
            f"record {stop.index} of the batch runs {stop.pos - end} bytes past the end of the "
            f"batch (Kafka: Invalid record size)"
        )
    raise InvalidRecordError(
        f"record {stop.index} of the batch does not parse: a malformed or truncated varint "
        f"(Kafka: Found invalid record structure)"
    )


def _check_end(header: BatchHeader, index: int, pos: int, end: int) -> None:
    """After ``index`` (== recordsCount) records ending at ``pos``: they must end at ``end``."""
    if pos > end:
        raise InvalidRecordError(
            f"record {index - 1} of the batch runs {pos - end} bytes past the end of the "
            f"batch (Kafka: Invalid record size)"
        )
    if pos < end:
        raise InvalidRecordError(
            f"record batch claims {header.records_count} records but {end - pos} bytes follow "
            f"them (Kafka: Incorrect declared batch size, records still remaining in file)"
        )


def _walk_stream(header: BatchHeader, payload: memoryview, limit: int, chunk_size: int) -> None:
    """:func:`walk_batch` of a compressed batch: decompressed chunk by chunk; a record prefix
    cut by a chunk's end is carried into the next, the rest of a record skipped unread."""
    count = header.records_count
    index = 0
    carry = b""  # the unwalked tail of the last chunk (shorter than a prefix)
    skip = 0  # bytes of the current record still to pass over
    total = 0
    for chunk in inflate(header.compression, payload, chunk_size=chunk_size, limit=limit):
        total += len(chunk)
        if skip >= len(chunk):
            skip -= len(chunk)
            continue
        data: Bytes = carry + chunk if carry else chunk
        pos, skip = skip, 0
        end = len(data)
        try:
            index, pos = _walk(data, pos, index, count, end - _MAX_PREFIX + 1)
        except _Stop as stop:
            _refuse_stopped(header, stop, None)  # more bytes follow: malformed
        if index == count and pos < end:
            _check_end(header, index, pos, end)  # bytes after the last record
        if pos >= end:
            skip, carry = pos - end, b""
        else:
            carry = bytes(data[pos:])
    # The stream has ended: what is carried is walked as the end of the records.
    if skip:
        raise InvalidRecordError(
            f"{_codec(header)} record {index - 1} of the batch runs {skip} bytes past the end "
            f"of its {total} decompressed bytes (Kafka: Invalid record size)"
        )
    end = len(carry)
    try:
        index, pos = _walk(carry, 0, index, count, end + 1)
    except _Stop as stop:
        _refuse_stopped(header, stop, end)
    _check_end(header, index, pos, end)


def _codec(header: BatchHeader) -> str:
    return CODEC_NAMES.get(header.compression, str(header.compression))

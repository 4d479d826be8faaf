"""Walking a batch's records to refuse one whose header and CRC are sound but whose records lie
(sans-IO; the opt-in check of ``sluice.produce.validate.records``).

The hot path never reads records (:mod:`sluice.protocol.records` checks headers and the CRC), so
a batch claiming one record that holds two, or whose records are garbage under a valid CRC,
would be stored: consumers then see two records at one offset, or stop at a record they
cannot parse. Kafka's LogValidator refuses such a batch (INVALID_RECORD) because it reads every
record (DefaultRecord.readFrom); this module reads every record's fields as that reader does,
without copying a key, value or header. It refuses a batch (InvalidRecordError, INVALID_RECORD) when

* a varint is malformed, a field runs past its record's end, or a record's fields end before
  its length says (Kafka: "Found invalid record structure", "Invalid record size: expected to
  read X bytes in record payload, but instead read Y"),
* a key, value or header value length is negative other than -1 (null), a header count is
  negative or larger than what is left of its record, a header key length is negative (Kafka:
  "Found invalid number of record headers", "Invalid negative header key size"; Kafka's reader
  takes a length below -1 as null, a librdkafka consumer stops there, so sluice refuses it),
* a record's offset delta is not its index (Kafka refuses this only by rewriting a compressed
  batch; sluice never rewrites on produce, so it refuses),
* the records run out before ``recordsCount`` of them (Kafka: "Incorrect declared batch size,
  premature EOF reached"), or a record runs past the section's end (Kafka: "Invalid record
  size"),
* bytes remain after ``recordsCount`` records (Kafka: "Incorrect declared batch size, records
  still remaining in file").

``recordsCount == lastOffsetDelta + 1`` is the header check's, so the last record's offset delta
is ``lastOffsetDelta``. Two readers share the work: :func:`_walk`, the tight loop, passes every
record that lies whole in the buffer at hand and has the common shapes; anything else (a record
cut by a decompressed chunk's end, long fields, a fault) goes to :func:`_read_record`, which
reads one record field by field across chunks and names what is wrong. A compressed batch is
streamed (one chunk held at a time, plus the few bytes of a varint cut by its end; skipped
fields are never gathered; at most ``limit`` bytes decompressed in all); data that does not
decompress stays CorruptRecordError (CORRUPT_MESSAGE), as elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NoReturn

from sluice.errors import CorruptRecordError, InvalidRecordError
from sluice.protocol.compression import inflate
from sluice.protocol.records import HEADER_SIZE, BatchHeader, Bytes, Compression, read_varint

WALK_CHUNK = 64 * 1024
"""Decompressed chunk a compressed batch is walked in."""

_BAD = -(1 << 62)
"""Added to the position at a field the tight loop refuses: reading there raises IndexError,
and the record cannot end where its length says."""
_SKIP = tuple(
    1 + (b >> 1) if b < 0x80 and not b & 1 else 1 if b == 1 else 0 if b >= 0x80 else _BAD
    for b in range(256)
)
"""Bytes a key, value or header value takes, by the first byte of its length: a one-byte
length ``b`` is ``b >> 1`` bytes when even, null when 1, negative (refused) when any other odd
value; 0 marks a longer length varint."""
_KEY_SKIP = tuple(1 + (b >> 1) if b < 0x80 and not b & 1 else _BAD for b in range(256))
"""The same for a header key, which is never null and (in the tight loop) shorter than 64."""


def walk_batch(header: BatchHeader, batch: Bytes, *, limit: int, chunk_size: int = WALK_CHUNK) -> None:
    """Refuse (InvalidRecordError) a batch whose records are not exactly what its header says.

    ``batch`` starts at the header and holds the whole batch (its CRC already checked)."""
    payload = memoryview(batch)[HEADER_SIZE : header.size]
    if header.compression == Compression.NONE:
        reader = _Reader(payload, iter(()))
        reader.final = True
    else:
        chunks = inflate(header.compression, payload, chunk_size=chunk_size, limit=limit)
        reader = _Reader(b"", iter(chunks))
    count = header.records_count
    index = 0
    while True:
        index, reader.pos = _walk(reader.buf, reader.pos, index, count)
        if index == count:
            break
        _read_record(reader, index, count)
        index += 1
    left = len(reader.buf) - reader.pos
    left += sum(len(chunk) for chunk in reader.chunks)  # decompressed to its end: corrupt or not
    if left:
        raise InvalidRecordError(
            f"record batch claims {count} records but {left} bytes follow them (Kafka: "
            f"Incorrect declared batch size, records still remaining in file)"
        )


def _walk(data: Bytes, pos: int, first: int, count: int) -> tuple[int, int]:
    """Pass records from ``pos`` (the one numbered ``first``) while each lies whole in ``data``
    and is sound in its common shape; return (records passed in all, where the next starts).
    The record it stops at is :func:`_read_record`'s to read (it may be sound: cut by the end of
    ``data``, or with a field this loop does not decode).

    The inner loop of the setting, so written for speed: varints of the usual widths are
    decoded inline; an offset delta is compared zigzag-encoded with twice its index; a length of
    one byte is looked up in ``_SKIP`` (a zigzag varint's low bit is its sign: null, negative or
    a size in one lookup). A field it refuses sends the position to ``_BAD``. Every record must
    end where its length says (``p == end``); reading its header count, or the explicit check
    after its headers, proves it lies in ``data``."""
    slow = read_varint
    skip = _SKIP
    key_skip = _KEY_SKIP
    size = len(data)
    i2 = first << 1
    try:
        for i2 in range(first << 1, count << 1, 2):
            b = data[pos]  # pos is where the record starts until it is passed
            if b < 0x80:
                end = pos + 1 + (b >> 1)
                p = pos + 3  # past the length, the attributes and a one-byte timestamp delta
            else:
                b2 = data[pos + 1]
                if b2 >= 0x80:
                    break
                b = (b & 0x7F) | (b2 << 7)
                end = pos + 2 + (b >> 1)
                p = pos + 4
            if b & 1:
                break  # a negative length
            if data[p - 1] >= 0x80:  # a wider timestamp delta
                if data[p] < 0x80:
                    p += 1
                else:
                    _, p = slow(data, p - 1)
            b = data[p]  # the offset delta
            if b < 0x80:
                p += 1
            else:
                b2 = data[p + 1]
                if b2 < 0x80:
                    b = (b & 0x7F) | (b2 << 7)
                    p += 2
                else:
                    b3 = data[p + 2]
                    if b3 >= 0x80:
                        break
                    b = (b & 0x7F) | ((b2 & 0x7F) << 7) | (b3 << 14)
                    p += 3
            if b != i2:
                break
            k = skip[data[p]]  # the key length
            if k:
                p += k
            else:
                b = data[p]
                b2 = data[p + 1]
                if b2 >= 0x80 or b & 1:
                    break
                p += 2 + (((b & 0x7F) | (b2 << 7)) >> 1)
            k = skip[data[p]]  # the value length
            if k:
                p += k
            else:
                b = data[p]
                b2 = data[p + 1]
                if b2 >= 0x80 or b & 1:
                    break
                p += 2 + (((b & 0x7F) | (b2 << 7)) >> 1)
            n = data[p]  # the header count
            if n:
                if n >= 0x80 or n & 1:
                    break
                p += 1
                while n:
                    p += key_skip[data[p]]
                    k = skip[data[p]]
                    if k:
                        p += k
                    else:
                        b = data[p]
                        b2 = data[p + 1]
                        p += _BAD if b2 >= 0x80 or b & 1 else 2 + (((b & 0x7F) | (b2 << 7)) >> 1)
                    n -= 2
                if p != end or end > size:  # the last header value was skipped unread
                    break
            elif p + 1 != end:
                break
            pos = end
        else:
            return count, pos
    except (IndexError, CorruptRecordError):  # the buffer ended, or a varint is too long
        pass
    return i2 >> 1, pos


class _End(Exception):
    """The records' bytes ended (the last chunk is consumed)."""


class _PastEnd(Exception):
    """A varint of a record was read past the record's end."""


class _Reader:
    """The records' bytes as a cursor over ``buf`` and the chunks still to come. A skip drops
    whole chunks unread; only the unread tail of a chunk (a varint cut by its end) is carried."""

    __slots__ = ("base", "buf", "chunks", "final", "pos")

    def __init__(self, buf: Bytes, chunks: Iterator[Bytes]) -> None:
        self.buf = buf
        self.pos = 0
        self.chunks = chunks
        self.base = 0  # bytes before buf[0]
        self.final = False  # no chunk is left: buf ends the records

    @property
    def at(self) -> int:
        return self.base + self.pos

    @property
    def total(self) -> int:
        """The records' length, once ``final``."""
        return self.base + len(self.buf)

    def _more(self) -> None:
        for chunk in self.chunks:
            if chunk:
                tail = self.buf[self.pos :]
                self.base += self.pos
                self.buf = bytes(tail) + chunk if len(tail) else chunk
                self.pos = 0
                return
        self.final = True
        raise _End

    def byte(self) -> int:
        if self.pos >= len(self.buf):
            self._more()
        b = self.buf[self.pos]
        self.pos += 1
        return b

    def varint(self, width: int) -> int:
        """A zigzag varint of at most ``width`` bytes (Kafka: 5 for an int, 10 for a long);
        CorruptRecordError past it."""
        raw = 0
        for shift in range(0, 7 * width, 7):
            b = self.byte()
            raw |= (b & 0x7F) << shift
            if b < 0x80:
                return (raw >> 1) ^ -(raw & 1)
        raise CorruptRecordError("varint too long")

    def skip(self, n: int) -> None:
        while self.pos + n > len(self.buf):
            n -= len(self.buf) - self.pos
            self.pos = len(self.buf)
            self._more()
        self.pos += n


def _read_record(r: _Reader, index: int, count: int) -> None:
    """Read record ``index`` at the reader's position field by field, as Kafka's
    DefaultRecord.readFrom does, and leave the reader at its end; refuse it, naming the record
    and the fault, when it is not sound."""
    name = f"record {index} of the batch"
    start = r.at
    try:
        length = r.varint(5)
    except _End:
        if r.at == start:
            raise InvalidRecordError(
                f"record batch claims {count} records but holds {index} (Kafka: Incorrect "
                f"declared batch size, premature EOF reached)"
            ) from None
        _refuse(f"{name} does not parse: its length is a truncated varint")
    except CorruptRecordError:
        _refuse(f"{name} does not parse: its length is a malformed varint")
    if length < 0:
        _refuse(f"{name} has a negative length {length}")
    body = r.at
    end = body + length
    field = "attributes"
    try:
        if r.final and end > r.total:
            raise _End
        r.byte()
        field = "timestamp delta"
        r.varint(10)
        field = "offset delta"
        delta = r.varint(5)
        if r.at > end:
            raise _PastEnd
        if delta != index:
            raise InvalidRecordError(
                f"{name} has offset delta {delta}; the offset deltas of a batch's records must "
                f"be 0, 1, 2, ... (Kafka: inner record offsets are not incremental)"
            )
        for field in ("key", "value"):
            _field(r, name, field, r.varint(5), end, -1)
        field = "header count"
        headers = r.varint(5)
        if r.at > end:
            raise _PastEnd
        if headers < 0 or headers > end - r.at:
            raise InvalidRecordError(
                f"{name} has header count {headers}, "
                + ("negative" if headers < 0 else f"more than the {end - r.at} bytes left of it")
                + " (Kafka: Found invalid number of record headers)"
            )
        for j in range(headers):
            field = f"header {j} key"
            size = r.varint(5)
            if size < 0:
                _refuse(
                    f"{name} has header {j} with key length {size}: a header key cannot be null "
                    f"(Kafka: Invalid negative header key size)",
                    kafka=False,
                )
            _field(r, name, field, size, end, 0)
            field = f"header {j} value"
            _field(r, name, field, r.varint(5), end, -1)
    except _End:
        if end > r.total:  # final: the stream has ended
            raise InvalidRecordError(
                f"{name} runs {end - r.total} bytes past the end of the batch (Kafka: Invalid "
                f"record size)"
            ) from None
        _refuse(f"{name} has length {length}, too short for its fields: its {field} runs past its end")
    except _PastEnd:
        _refuse(f"{name} has length {length}, too short for its fields: its {field} runs past its end")
    except CorruptRecordError:
        _refuse(f"{name} does not parse: its {field} is a malformed varint")
    if r.at != end:
        _refuse(
            f"{name} has length {length} but its fields end after {r.at - body} bytes (Kafka: "
            f"Invalid record size: expected to read {length} bytes in record payload, but "
            f"instead read {r.at - body})",
            kafka=False,
        )


def _field(r: _Reader, name: str, field: str, size: int, end: int, least: int) -> None:
    """Pass a length-prefixed field of ``size`` bytes (-1: null, when ``least`` allows it)
    whose length varint was just read, all inside the record ending at ``end``."""
    if r.at > end:
        raise _PastEnd
    if size < least:
        _refuse(f"{name} has {field} length {size}: only -1 (null) may be negative")
    if size > end - r.at:
        _refuse(f"{name} has {field} length {size}, but {end - r.at} bytes of the record are left")
    if size > 0:
        r.skip(size)


def _refuse(what: str, *, kafka: bool = True) -> NoReturn:
    suffix = " (Kafka: Found invalid record structure)" if kafka else ""
    raise InvalidRecordError(what + suffix)

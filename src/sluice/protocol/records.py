"""Kafka record batch v2 (magic 2): header validation, offset patching, and record coding.

The broker's hot path only ever calls :func:`scan_batches` and :func:`assign_offsets`: they read the
61-byte headers and check the CRC with hardware CRC-32C, never the records. Record encoding and
decoding (:func:`build_batch`, :func:`decode_records`) exist for the features that need them
(timestamp lookup inside a batch, tools, tests).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import field
from typing import NamedTuple

from sluice.dataclass import dataclass
from sluice.errors import CorruptRecordError, InvalidRecordError, RecordTooLargeError
from sluice.protocol.compression import CODEC_NAMES, compress, decompress, inflate
from sluice.protocol.compression import Compression as Compression  # re-exported with batches
from sluice.protocol.crc import crc32c

Bytes = bytes | bytearray | memoryview
"""Any buffer the record functions accept."""

HEADER_SIZE = 61
"""Bytes from baseOffset through recordsCount; records follow."""
LOG_OVERHEAD = 12
"""baseOffset (8) + batchLength (4): the part of a batch not counted by batchLength."""
MAGIC_OFFSET = 16
CRC_OFFSET = 17
ATTRIBUTES_OFFSET = 21
BASE_TIMESTAMP_OFFSET = 27
MAX_TIMESTAMP_OFFSET = 35

_HEADER = struct.Struct(">qiibIhiqqqhii")
_BASE_OFFSET = struct.Struct(">q")
_LENGTH = struct.Struct(">i")

COMPRESSION_MASK = 0x07
TIMESTAMP_TYPE_BIT = 0x08
TRANSACTIONAL_BIT = 0x10
CONTROL_BIT = 0x20

MIN_RECORD_SIZE = 7
"""The smallest record: length, attributes, timestamp delta, offset delta, key length, value
length and header count, one byte each. A batch cannot hold more records than this allows."""

NO_PRODUCER_ID = -1
NO_SEQUENCE = -1


class BatchHeader(NamedTuple):
    """The fixed 61-byte header of one batch; ``position`` is where it starts in its buffer.

    A NamedTuple because the append path builds one per batch: it is several times cheaper to
    construct than a frozen dataclass.
    """

    position: int
    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int

    @property
    def size(self) -> int:
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def compression(self) -> int:
        return self.attributes & COMPRESSION_MASK

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL_BIT)

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL_BIT)


def read_header(buf: Bytes, position: int = 0, base: int = 0) -> BatchHeader:
    """Decode the header at ``position`` without checking anything but that 61 bytes are there.

    ``base`` is added to the reported position, for buffers that are a window into a file.
    """
    if len(buf) - position < HEADER_SIZE:
        raise CorruptRecordError(
            f"record batch header needs {HEADER_SIZE} bytes, {len(buf) - position} left"
        )
    return BatchHeader(base + position, *_HEADER.unpack_from(buf, position))


def scan_batches(
    buf: Bytes,
    *,
    max_batch_bytes: int | None = None,
    check_crc: bool = True,
) -> list[BatchHeader]:
    """Validate every batch in ``buf`` (which must hold whole batches only) and return headers.

    Raises a typed error on the first problem, so a caller can refuse the whole buffer before it
    stores any of it.
    """
    view = memoryview(buf)
    end = len(view)
    if end == 0:
        raise InvalidRecordError("empty record set")
    headers: list[BatchHeader] = []
    pos = 0
    while pos < end:
        header = read_header(view, pos)
        _check_header(header, end - pos, max_batch_bytes)
        if (
            check_crc
            and crc32c(view[pos + ATTRIBUTES_OFFSET : pos + header.size]) != header.crc
        ):
            raise CorruptRecordError(f"record batch at byte {pos} fails its CRC-32C check")
        _check_plausible(header)
        headers.append(header)
        pos += header.size
    return headers


def _check_header(header: BatchHeader, available: int, max_batch_bytes: int | None) -> None:
    if header.magic != 2:
        raise CorruptRecordError(f"record batch magic {header.magic} is not supported (only 2)")
    size = header.size
    if header.batch_length < HEADER_SIZE - LOG_OVERHEAD:
        raise CorruptRecordError(
            f"record batch length {header.batch_length} is below the header size"
        )
    if max_batch_bytes is not None and size > max_batch_bytes:
        raise RecordTooLargeError(
            f"record batch of {size} bytes exceeds max.message.bytes={max_batch_bytes}"
        )
    if size > available:
        raise CorruptRecordError(
            f"record batch claims {size} bytes but only {available} are present"
        )
    if header.is_control:
        # Only a transaction coordinator writes control batches (sluice's writes its markers
        # itself, never through here); from a client one would end another producer's
        # transaction, or burn offsets at will, since its count need not match its offset delta.
        raise InvalidRecordError("clients may not write control batches")
    if header.attributes & TRANSACTIONAL_BIT and (header.producer_id < 0 or header.base_sequence < 0):
        # Not an idempotent producer's batch, so no transaction could hold it: it would skip
        # the coordinator's verification and stand outside every transaction's markers.
        raise InvalidRecordError(
            f"a transactional record batch needs a producer id and a sequence (producer id "
            f"{header.producer_id}, base sequence {header.base_sequence})"
        )
    if header.records_count < 0 or header.last_offset_delta < 0:
        raise InvalidRecordError("record batch has a negative record count or offset delta")
    if header.records_count != header.last_offset_delta + 1:
        raise InvalidRecordError(
            f"record batch count {header.records_count} disagrees with lastOffsetDelta "
            f"{header.last_offset_delta}"
        )
    if header.records_count == 0:
        raise InvalidRecordError("record batch holds no records")


def _check_plausible(header: BatchHeader) -> None:
    """An uncompressed batch cannot hold more records than 7 bytes each allow (O(1)). Checked
    after the CRC, so a batch cut short is reported corrupt rather than implausible."""
    if (
        header.attributes & COMPRESSION_MASK == Compression.NONE
        and header.records_count > (header.size - HEADER_SIZE) // MIN_RECORD_SIZE
    ):
        raise InvalidRecordError(
            f"record batch claims {header.records_count} records in "
            f"{header.size - HEADER_SIZE} bytes of records; a record takes at least "
            f"{MIN_RECORD_SIZE}"
        )


def assign_offsets(
    buf: bytearray | memoryview,
    headers: Sequence[BatchHeader],
    base_offset: int,
    leader_epoch: int = 0,
) -> int:
    """Patch baseOffset and partitionLeaderEpoch of every batch in place; return the next offset.

    Neither field is covered by the CRC, so the batches stay valid without re-checksumming.
    """
    offset = base_offset
    for header in headers:
        _BASE_OFFSET.pack_into(buf, header.position, offset)
        _LENGTH.pack_into(buf, header.position + 12, leader_epoch)
        offset += header.last_offset_delta + 1
    return offset


def iter_stored_batches(buf: Bytes, position: int = 0, base: int = 0) -> Iterator[BatchHeader]:
    """Walk batches already stored (trusted bounds, no CRC); stops at a partial trailing batch."""
    view = memoryview(buf)
    end = len(view)
    while end - position >= HEADER_SIZE:
        header = read_header(view, position, base)
        if header.size > end - position or header.batch_length < HEADER_SIZE - LOG_OVERHEAD:
            return
        yield header
        position += header.size


_RECORDS_COUNT_OFFSET = HEADER_SIZE - 4


def count_records(buf: Bytes) -> int:
    """The records the whole batches of ``buf`` claim (their headers' recordsCount), reading two
    fields per batch and checking nothing: for traffic metrics, on buffers already validated (a
    produce that was appended) or stored (a fetch answer, whose partial last batch is not
    counted)."""
    view = memoryview(buf)
    end = len(view)
    position = count = 0
    while end - position >= HEADER_SIZE:
        (length,) = _LENGTH.unpack_from(view, position + 8)
        size = length + LOG_OVERHEAD
        if length < HEADER_SIZE - LOG_OVERHEAD or size > end - position:
            break
        (records,) = _LENGTH.unpack_from(view, position + _RECORDS_COUNT_OFFSET)
        count += records
        position += size
    return count


# ---------------------------------------------------------------------------------------------
# Record-level coding: only for features that need individual records.


@dataclass(slots=True)
class Record:
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)


def _zigzag(n: int) -> int:
    return (n << 1) ^ (n >> 63)


def write_varint(out: bytearray, n: int) -> None:
    """Append a zigzag-encoded signed varint (the record format's varint)."""
    v = _zigzag(n) & 0xFFFFFFFFFFFFFFFF
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)


def read_varint(buf: Bytes, pos: int) -> tuple[int, int]:
    """Read a zigzag signed varint at ``pos``; return (value, new position)."""
    shift = 0
    raw = 0
    while True:
        if pos >= len(buf):
            raise CorruptRecordError("truncated varint in record")
        b = buf[pos]
        pos += 1
        raw |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if shift > 63:
            raise CorruptRecordError("varint too long in record")
    return (raw >> 1) ^ -(raw & 1), pos


def _write_bytes(out: bytearray, data: bytes | None) -> None:
    if data is None:
        write_varint(out, -1)
    else:
        write_varint(out, len(data))
        out += data


def build_batch(
    records: Sequence[tuple[bytes | None, bytes | None]],
    *,
    headers: Sequence[Sequence[tuple[str, bytes | None]]] | None = None,
    base_offset: int = 0,
    base_timestamp: int = 0,
    timestamps: Sequence[int] | None = None,
    compression: int = Compression.NONE,
    producer_id: int = NO_PRODUCER_ID,
    producer_epoch: int = -1,
    base_sequence: int = NO_SEQUENCE,
    transactional: bool = False,
) -> bytes:
    """Encode a record batch v2 the way producers do (for tools, tests and benchmarks);
    ``transactional`` sets attributes bit 4, as a transactional producer's batches have it."""
    if not records:
        raise InvalidRecordError("a batch needs at least one record")
    body = bytearray()
    max_ts = base_timestamp
    for i, (key, value) in enumerate(records):
        hdrs = headers[i] if headers is not None else ()
        ts = timestamps[i] if timestamps is not None else base_timestamp
        max_ts = max(max_ts, ts)
        r = bytearray()
        r.append(0)  # attributes
        write_varint(r, ts - base_timestamp)
        write_varint(r, i)
        _write_bytes(r, key)
        _write_bytes(r, value)
        write_varint(r, len(hdrs))
        for hk, hv in hdrs:
            _write_bytes(r, hk.encode())
            _write_bytes(r, hv)
        write_varint(body, len(r))
        body += r
    payload = compress(compression, body)
    attributes = (compression & COMPRESSION_MASK) | (TRANSACTIONAL_BIT if transactional else 0)
    tail = (
        struct.pack(
            ">hiqqqhii",
            attributes,
            len(records) - 1,
            base_timestamp,
            max_ts,
            producer_id,
            producer_epoch,
            base_sequence,
            len(records),
        )
        + payload
    )
    crc = crc32c(tail)
    batch_length = 4 + 1 + 4 + len(tail)  # leader epoch, magic, crc, then the rest
    return struct.pack(">qiibI", base_offset, batch_length, 0, 2, crc) + tail


DEFAULT_MAX_UNCOMPRESSED = 256 * 1024 * 1024
"""Default bound of the decompressed records of one batch materialised at once (the broker
setting ``sluice.batch.uncompressed.max.bytes``)."""


def decode_records(batch: Bytes, *, limit: int = DEFAULT_MAX_UNCOMPRESSED) -> list[Record]:
    """Decode every record of one batch (decompressing if needed, refused past ``limit`` bytes).

    For tools and tests: it materialises every record. The broker streams instead
    (:func:`iter_record_stamps`, :func:`verify_record_count`)."""
    view = memoryview(batch)
    header = read_header(view)
    data = memoryview(_records_section(header, view, limit))
    out: list[Record] = []
    pos = 0
    for _ in range(header.records_count):
        length, pos = read_varint(data, pos)
        end = pos + length
        if end > len(data):
            raise CorruptRecordError("record extends past its batch")
        pos += 1  # attributes
        ts_delta, pos = read_varint(data, pos)
        off_delta, pos = read_varint(data, pos)
        key, pos = _read_bytes(data, pos)
        value, pos = _read_bytes(data, pos)
        n_headers, pos = read_varint(data, pos)
        hdrs: list[tuple[str, bytes | None]] = []
        for _ in range(n_headers):
            hk, pos = _read_bytes(data, pos)
            hv, pos = _read_bytes(data, pos)
            # Kafka's clients decode a header key as Java's String(bytes, UTF_8) does, an invalid
            # byte becoming U+FFFD; the broker stores such keys (as Kafka's does) unchecked.
            hdrs.append(((hk or b"").decode("utf-8", "replace"), hv))
        if pos != end:
            raise CorruptRecordError("record length disagrees with its contents")
        out.append(
            Record(
                header.base_offset + off_delta, header.base_timestamp + ts_delta, key, value, hdrs
            )
        )
    return out


def _records_section(header: BatchHeader, view: memoryview, limit: int) -> Bytes:
    payload = view[HEADER_SIZE : header.size]
    if header.compression == Compression.NONE:
        return payload
    return decompress(header.compression, payload, limit=limit, max_block=limit)


# ---------------------------------------------------------------------------------------------
# Streaming over records: bounded memory whatever a batch inflates to.

_MAX_RECORD_PREFIX = 5 + 1 + 10 + 5
"""Longest record prefix parsed: length (varint32), attributes, timestamp delta (varint64),
offset delta (varint32). Everything after it is skipped unread."""


def iter_record_stamps(
    batch: Bytes, *, chunk_size: int = 64 * 1024, max_block: int = DEFAULT_MAX_UNCOMPRESSED
) -> Iterator[tuple[int, int]]:
    """(offset, timestamp) of each record of one stored batch, in order.

    Decompresses as a stream and parses only each record's prefix, skipping keys, values and
    headers across chunk boundaries, so memory stays at one chunk (raw snappy: one block of at
    most ``max_block``) however far the batch inflates. A caller that stops early stops the
    decompression. A log-append-time batch's records all carry its max timestamp, as in Kafka.
    Raises CorruptRecordError if the records do not parse or are fewer than the header says."""
    view = memoryview(batch)
    header = read_header(view)
    if header.size > len(view):
        raise CorruptRecordError(f"record batch claims {header.size} bytes, {len(view)} present")
    chunks = inflate(
        header.compression,
        view[HEADER_SIZE : header.size],
        chunk_size=chunk_size,
        max_block=max_block,
    )
    log_append_time = bool(header.attributes & TIMESTAMP_TYPE_BIT)
    remaining = header.records_count
    carry = b""  # a record prefix cut by a chunk boundary
    skip = 0  # bytes of the current record still to pass over
    for chunk in chunks:
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
                length, body_start = read_varint(data, pos)
                p = body_start + 1  # attributes
                ts_delta, p = read_varint(data, p)
                off_delta, p = read_varint(data, p)
            except CorruptRecordError:
                if end - pos >= _MAX_RECORD_PREFIX:
                    raise
                carry = data[pos:]  # the prefix continues in the next chunk
                break
            # The rest of a record holds at least key length, value length and header count.
            if length < p - body_start + 3:
                raise CorruptRecordError(f"record length {length} is too short for its fields")
            remaining -= 1
            yield (
                header.base_offset + off_delta,
                header.max_timestamp if log_append_time else header.base_timestamp + ts_delta,
            )
            record_end = body_start + length
            if record_end >= end:
                skip = record_end - end
                break
            pos = record_end
    if remaining:
        raise CorruptRecordError(
            f"record batch claims {header.records_count} records but holds "
            f"{header.records_count - remaining}"
        )


def verify_record_count(header: BatchHeader, batch: Bytes, *, limit: int) -> None:
    """Refuse a compressed batch whose records cannot be as many as its header claims.

    Every record takes at least MIN_RECORD_SIZE bytes, so ``records_count`` of them need that
    many decompressed bytes: decompress as a stream only until they are there (usually a tiny
    prefix of the batch), never holding more than one chunk. ``batch`` starts at the header.
    Raises InvalidRecordError (too few bytes, or more needed than ``limit``) or
    CorruptRecordError (the data does not decompress)."""
    need = header.records_count * MIN_RECORD_SIZE
    codec = CODEC_NAMES.get(header.compression, str(header.compression))
    if need > limit:
        raise InvalidRecordError(
            f"{codec} record batch claims {header.records_count} records: that is at least "
            f"{need} bytes decompressed, over sluice.batch.uncompressed.max.bytes={limit}"
        )
    view = memoryview(batch)
    got = 0
    chunk_size = min(need, VERIFY_CHUNK)  # decoders that can stop early stop at ``need``
    for chunk in inflate(
        header.compression, view[HEADER_SIZE : header.size], chunk_size=chunk_size, max_block=limit
    ):
        got += len(chunk)
        if got >= need:
            return
    raise InvalidRecordError(
        f"{codec} record batch claims {header.records_count} records (at least {need} bytes) "
        f"but its records decompress to {got} bytes"
    )


VERIFY_CHUNK = 16 * 1024
"""Largest chunk of :func:`verify_record_count`: most batches need far less, and a decoder asked
for less stops sooner."""


def verification_cost(header: BatchHeader) -> int:
    """Decompressed bytes :func:`verify_record_count` may produce for ``header``'s batch (what
    decides whether it can run inline): raw snappy decodes its whole block, up to 22x its size."""
    need = header.records_count * MIN_RECORD_SIZE
    if header.compression == Compression.SNAPPY:
        return max(need, 22 * (header.size - HEADER_SIZE))
    return need + min(need, VERIFY_CHUNK)


def recompress_batch(batch: Bytes, codec: int, *, limit: int) -> bytes:
    """Re-encode one batch with ``codec``, records byte for byte as they were.

    The records section is decompressed whole (refused past ``limit`` bytes), checked to hold
    exactly ``records_count`` records whose lengths chain to its end, and compressed again; the
    header keeps every field (offset deltas, timestamps and their type, producer id, epoch and
    sequence, transactional bit) but the codec bits, the length and a new CRC."""
    view = memoryview(batch)
    header = read_header(view)
    records = _records_section(header, view, limit)
    _check_record_chain(records, header.records_count)
    payload = compress(codec, records)
    attributes = (header.attributes & ~COMPRESSION_MASK) | (codec & COMPRESSION_MASK)
    tail = bytearray(view[ATTRIBUTES_OFFSET:HEADER_SIZE])
    struct.pack_into(">h", tail, 0, attributes)
    tail += payload
    crc = crc32c(tail)
    batch_length = len(tail) + 9  # partitionLeaderEpoch, magic, crc
    return (
        struct.pack(
            ">qiibI",
            header.base_offset,
            batch_length,
            header.partition_leader_epoch,
            header.magic,
            crc,
        )
        + tail
    )


def _check_record_chain(records: Bytes, count: int) -> None:
    """Each record's length must lead to the next and the last must end the section: what a
    consumer relies on to decode what the broker re-encoded."""
    pos = 0
    end = len(records)
    for _ in range(count):
        length, pos = read_varint(records, pos)
        if length < MIN_RECORD_SIZE - 1 or pos + length > end:
            raise CorruptRecordError(f"record of length {length} does not fit its batch")
        pos += length
    if pos != end:
        raise CorruptRecordError(
            f"record batch holds {end - pos} bytes after its {count} records"
        )


def _read_bytes(data: memoryview, pos: int) -> tuple[bytes | None, int]:
    n, pos = read_varint(data, pos)
    if n < 0:
        return None, pos
    if pos + n > len(data):
        raise CorruptRecordError("record field extends past its batch")
    return bytes(data[pos : pos + n]), pos + n

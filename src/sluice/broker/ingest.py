"""What Produce does to a partition's record batches before the log sees them.

* A compressed batch's header cannot be checked against its bytes (the records are compressed),
  so its record count is verified by decompressing as a stream just far enough to hold that many
  records (7 bytes each at least): a batch claiming 2^31 records in 70 bytes never moves the log
  end offset. Small work runs inline; anything that may decompress more than
  :data:`INLINE_DECOMPRESSION_BYTES` runs in the loop's default executor.
* A topic whose ``compression.type`` is not ``producer`` stores every batch with its codec:
  batches with another codec are recompressed in the executor.

* A compacted topic (``cleanup.policy`` with ``compact``) takes only records with keys, as
  Kafka: every record's key length is read (streamed, decompressing as it goes), inline when the
  batches are small, else in the executor. Other topics never pay for it.

Uncompressed batches on a ``producer`` topic (the common case) pass through untouched: their
plausibility is an O(1) header check in the log's own validation.

* With ``sluice.produce.validate.records`` on (off by default), every batch's records are walked
  first (:mod:`sluice.protocol.walk`, after the CRC): a batch whose records are not exactly what
  its header says is refused with INVALID_RECORD, as Kafka's LogValidator refuses it. That walk
  covers what the compressed record-count check would, so that check is then skipped. Off, none
  of this runs (one boolean test per partition).

* Timestamps (``message.timestamp.type``): on a CreateTime topic each batch's first and largest
  timestamps are checked against ``message.timestamp.before.max.ms`` and
  ``message.timestamp.after.max.ms`` of the broker's clock (two header fields a batch; records
  are not read, so a record stamped earlier than its batch's first one passes, with
  ``sluice.produce.validate.records`` too: its walk reads timestamp deltas, not their bounds).
  On a LogAppendTime topic each batch's header is stamped with the broker's clock (its
  timestamp type bit and max timestamp, then its CRC, which is checked first: a new CRC must
  never bless corrupt bytes), as Kafka's LogValidator does;
  the records are untouched and every client reads the batch's max timestamp as theirs.
"""

from __future__ import annotations

import asyncio
import struct

from sluice.config import CompressionType, LogConfig, TimestampType
from sluice.errors import CorruptRecordError, InvalidTimestampError, RecordErrors
from sluice.protocol.crc import crc32c
from sluice.protocol.keyed import keyless_records
from sluice.protocol.records import (
    ATTRIBUTES_OFFSET,
    BASE_TIMESTAMP_OFFSET,
    COMPRESSION_MASK,
    CRC_OFFSET,
    HEADER_SIZE,
    LOG_OVERHEAD,
    MAX_TIMESTAMP_OFFSET,
    TIMESTAMP_TYPE_BIT,
    BatchHeader,
    Compression,
    recompress_batch,
    scan_batches,
    verification_cost,
    verify_record_count,
)
from sluice.protocol.walk import walk_batch

INLINE_DECOMPRESSION_BYTES = 256 * 1024
"""Decompressed bytes a request may need for verification before it leaves the event loop: at
most ~1.5 ms of gzip (the slowest codec), well under 0.5 ms of the others; a typical batch needs
a few KiB (``python -m sluice.bench.ingest``)."""

TARGET_CODEC: dict[CompressionType, int | None] = {
    CompressionType.PRODUCER: None,
    CompressionType.UNCOMPRESSED: Compression.NONE,
    CompressionType.GZIP: Compression.GZIP,
    CompressionType.SNAPPY: Compression.SNAPPY,
    CompressionType.LZ4: Compression.LZ4,
    CompressionType.ZSTD: Compression.ZSTD,
}

KEY_CHECK_INLINE_BYTES = 4 * 1024
"""Record bytes (compressed ones counted 8-fold) whose keys are read on the event loop; more go
to the executor. Reading a key costs 1-2 us a record (``python -m sluice.bench.compaction``
prints it), so 4 KiB of 100-byte records is about what a hop to a thread and back costs
(~50 us, ``python -m sluice.bench.ingest``)."""
_COMPRESSED_WEIGHT = 8

Records = bytes | bytearray | memoryview
_LENGTH = struct.Struct(">i")


WALK_INLINE_BYTES = 64 * 1024
"""Uncompressed record bytes walked on the event loop when ``sluice.produce.validate.records``
is on; more, or any compressed batch, go to the executor. 64 KiB of 100-byte records
is ~0.4 ms of walking (docs/broker.md, "Record validation", has the measurements)."""


RECORD_ERRORS_LISTED = 4096
"""Keyless records of a batch a compacted topic refuses that the answer lists one by one
(``record_errors``); the top-level message counts them all. Kafka lists every one: a 0.8 MB
zstd batch of a million keyless records was a million entries, built and encoded on the event
loop (2.5 s every other client waited). A producer fails the whole batch either way (Java's
marks a record not listed as part of a batch with invalid records)."""

STAMP_INLINE_BYTES = 1 << 20
"""Bytes of batches stamped with the log append time on the event loop (two CRC-32C passes,
~0.1 ms a MiB each); more go to the executor."""

_TIMESTAMPS = struct.Struct(">qq")  # a batch header's baseTimestamp and maxTimestamp
_MAX_TIMESTAMP = struct.Struct(">q")
_ATTRIBUTES = struct.Struct(">h")
_CRC = struct.Struct(">I")
_NO_LIMIT = 2**63 - 1


async def prepare(
    records: Records,
    config: LogConfig,
    limit: int,
    name: str = "",
    *,
    walk: bool = False,
    now: int | None = None,
) -> Records:
    """The batches to append: ``records`` itself when nothing needs doing, else a new buffer
    (or ``records`` patched in place, when it is writable: a LogAppendTime topic's stamp).

    Raises the typed errors of the checks (INVALID_RECORD, CORRUPT_MESSAGE, MESSAGE_TOO_LARGE,
    INVALID_TIMESTAMP), so nothing of a refused request is appended. ``name`` (topic-partition)
    is for messages. ``walk`` (``sluice.produce.validate.records``) walks every batch's records
    first. ``now`` is the broker's clock: with it, timestamps are checked (CreateTime) or
    stamped (LogAppendTime); without it, left as they are."""
    if now is None:
        return await _prepare(records, config, limit, name, walk=walk)
    if config.message_timestamp_type is TimestampType.CREATE_TIME:
        bounds = (config.message_timestamp_before_max_ms, config.message_timestamp_after_max_ms)
        if bounds != (_NO_LIMIT, _NO_LIMIT):  # the defaults: nothing to read
            check_timestamps(memoryview(records), config, now)
        return await _prepare(records, config, limit, name, walk=walk)
    out = await _prepare(records, config, limit, name, walk=walk)
    if len(out) <= STAMP_INLINE_BYTES:
        return stamp_log_append_time(out, config, now)
    return await asyncio.get_running_loop().run_in_executor(None, stamp_log_append_time, out, config, now)


def check_timestamps(view: memoryview, config: LogConfig, now: int) -> None:
    """Kafka's bounds on CreateTime timestamps, by batch: the first timestamp no further in the
    past than ``message.timestamp.before.max.ms``, the largest no further in the future than
    ``message.timestamp.after.max.ms``; -1 (no timestamp) passes, as in Kafka. Reads two fields
    of each header (a malformed buffer stops the walk; the log's checks refuse it)."""
    earliest = now - config.message_timestamp_before_max_ms
    latest = now + config.message_timestamp_after_max_ms
    pos, end, index = 0, len(view), 0
    while end - pos >= HEADER_SIZE:
        first, largest = _TIMESTAMPS.unpack_from(view, pos + BASE_TIMESTAMP_OFFSET)
        for ts in (first, largest):
            if ts != -1 and not earliest <= ts <= latest:
                raise InvalidTimestampError(
                    f"Timestamp {ts} of a record in batch {index} is out of range. The timestamp "
                    f"should be within [{earliest}, {latest}] (message.timestamp.before.max.ms "
                    f"{config.message_timestamp_before_max_ms}, message.timestamp.after.max.ms "
                    f"{config.message_timestamp_after_max_ms})"
                )
        (length,) = _LENGTH.unpack_from(view, pos + 8)
        if length <= 0:
            return
        pos += length + LOG_OVERHEAD
        index += 1


def stamp_log_append_time(records: Records, config: LogConfig, now: int) -> Records:
    """Every batch's header stamped as Kafka stamps a LogAppendTime topic's: the timestamp type
    bit set, the max timestamp ``now``, the CRC recomputed, after it is checked (a corrupt
    batch is CORRUPT_MESSAGE, never blessed with a new CRC). Patches ``records`` in place when
    it is writable (the request frame, handed over), else a copy."""
    view = memoryview(records)
    headers = scan_batches(view, max_batch_bytes=config.max_message_bytes)
    if view.readonly:
        records = bytearray(view)
        view = memoryview(records)
    for h in headers:
        at = h.position
        _ATTRIBUTES.pack_into(view, at + ATTRIBUTES_OFFSET, h.attributes | TIMESTAMP_TYPE_BIT)
        _MAX_TIMESTAMP.pack_into(view, at + MAX_TIMESTAMP_OFFSET, now)
        _CRC.pack_into(view, at + CRC_OFFSET, crc32c(view[at + ATTRIBUTES_OFFSET : at + h.size]))
    return records


async def _prepare(records: Records, config: LogConfig, limit: int, name: str, *, walk: bool) -> Records:
    view = memoryview(records)
    if walk:
        await _walk(view, config, limit)
    if config.compact:
        await _require_keys(view, config, limit, name)
    target = TARGET_CODEC[config.compression_type]
    if target is None and not _any_compressed(view):
        return records  # the hot path: the log's own header checks are all it takes
    # Headers only (no CRC: the log checks it on append); a bad header is refused here with the
    # log's own message.
    headers = scan_batches(view, max_batch_bytes=config.max_message_bytes, check_crc=False)
    recompress = [target is not None and h.compression != target for h in headers]
    verify = [h for h, r in zip(headers, recompress, strict=True) if not r and h.compression]
    if any(recompress):
        assert target is not None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            None, _recompress_and_verify, view, headers, recompress, target, limit
        )
    if not verify or walk:  # the walk has counted every compressed batch's records
        return records
    if sum(verification_cost(h) for h in verify) <= INLINE_DECOMPRESSION_BYTES:
        _verify(view, verify, limit)
    else:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, _verify, view, verify, limit)
    return records


async def _walk(view: memoryview, config: LogConfig, limit: int) -> None:
    """Kafka's record-by-record validation, opt-in: CRCs are checked first, so a corrupt batch
    is CORRUPT_MESSAGE and never walked (the log checks them again: ~0.1 ms a MiB)."""
    headers = scan_batches(view, max_batch_bytes=config.max_message_bytes)
    # A compressed batch of a few KiB can inflate to sluice.batch.uncompressed.max.bytes (one
    # huge record is a valid structure, walked to its end): it never decompresses on the loop.
    if len(view) <= WALK_INLINE_BYTES and not any(h.compression for h in headers):
        _walk_all(view, headers, limit)
    else:
        await asyncio.get_running_loop().run_in_executor(None, _walk_all, view, headers, limit)


def _walk_all(view: memoryview, headers: list[BatchHeader], limit: int) -> None:
    for h in headers:
        walk_batch(h, view[h.position : h.position + h.size], limit=limit)


async def _require_keys(view: memoryview, config: LogConfig, limit: int, name: str) -> None:
    """Kafka's rule for compacted topics: every record has a key (INVALID_RECORD, with each
    keyless record's index in ``record_errors``). CRCs are checked first, so a corrupt batch is
    CORRUPT_MESSAGE and never parsed."""
    headers = scan_batches(view, max_batch_bytes=config.max_message_bytes)
    cost = sum(h.size * (_COMPRESSED_WEIGHT if h.compression else 1) for h in headers)
    if cost <= KEY_CHECK_INLINE_BYTES:
        _check_keys(view, headers, limit, name)
    else:
        await asyncio.get_running_loop().run_in_executor(None, _check_keys, view, headers, limit, name)


def _check_keys(view: memoryview, headers: list[BatchHeader], limit: int, name: str) -> None:
    for h in headers:
        keyless = keyless_records(view[h.position : h.position + h.size], limit=limit)
        if keyless:
            message = f"Compacted topic cannot accept message without key in topic partition {name}."
            errors = [(i, message) for i in keyless[:RECORD_ERRORS_LISTED]]
            raise RecordErrors(
                f"One or more records have been rejected due to {len(keyless)} record errors in "
                f"total, and only showing the first three errors at most: "
                + ", ".join(f"RecordError(batchIndex={i}, message='{m}')" for i, m in errors[:3]),
                errors,
            )


def _any_compressed(view: memoryview) -> bool:
    """Whether any batch has a codec, reading two fields of each (no validation: a malformed buffer
    answers either way and the full checks refuse it)."""
    pos, end = 0, len(view)
    while end - pos >= HEADER_SIZE:
        if view[pos + ATTRIBUTES_OFFSET + 1] & COMPRESSION_MASK:
            return True
        (length,) = _LENGTH.unpack_from(view, pos + 8)
        if length <= 0:
            return False
        pos += length + LOG_OVERHEAD
    return False


def _verify(view: memoryview, headers: list[BatchHeader], limit: int) -> None:
    for h in headers:
        verify_record_count(h, view[h.position : h.position + h.size], limit=limit)


def _recompress_and_verify(
    view: memoryview,
    headers: list[BatchHeader],
    recompress: list[bool],
    target: int,
    limit: int,
) -> bytearray:
    """Executor side: one new buffer of every batch, recompressed where asked. A batch's CRC is
    checked before it is recompressed, or the new CRC would bless corrupt bytes."""
    out = bytearray()
    for h, redo in zip(headers, recompress, strict=True):
        batch = view[h.position : h.position + h.size]
        if not redo:
            if h.compression:
                verify_record_count(h, batch, limit=limit)
            out += batch
            continue
        if crc32c(batch[ATTRIBUTES_OFFSET:]) != h.crc:
            raise CorruptRecordError(f"record batch at byte {h.position} fails its CRC-32C check")
        out += recompress_batch(batch, target, limit=limit)
    return out

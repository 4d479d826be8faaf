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
"""

from __future__ import annotations

import asyncio
import struct

from sluice.config import CompressionType, LogConfig
from sluice.errors import CorruptRecordError, RecordErrors
from sluice.protocol.crc import crc32c
from sluice.protocol.keyed import keyless_records
from sluice.protocol.records import (
    ATTRIBUTES_OFFSET,
    COMPRESSION_MASK,
    HEADER_SIZE,
    LOG_OVERHEAD,
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


async def prepare(
    records: Records, config: LogConfig, limit: int, name: str = "", *, walk: bool = False
) -> Records:
    """The batches to append: ``records`` itself when nothing needs doing, else a new buffer.

    Raises the typed errors of the checks (INVALID_RECORD, CORRUPT_MESSAGE, MESSAGE_TOO_LARGE),
    so nothing of a refused request is appended. ``name`` (topic-partition) is for messages.
    ``walk`` (``sluice.produce.validate.records``) walks every batch's records first."""
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
            errors = [(i, message) for i in keyless]
            raise RecordErrors(
                f"One or more records have been rejected due to {len(errors)} record errors in "
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

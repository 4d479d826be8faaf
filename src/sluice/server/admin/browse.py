"""The console's message browser: records of a topic read straight from its partition logs.

From an offset, from a time (the log's own timestamp search), or newest first; one partition
or all of them merged by timestamp; a page at a time, with a cursor (the next offset of every
partition) for the page after. The bytes are read on the event loop with the same committed,
visible ranges a Fetch reads (up to the high watermark); decoding (and decompressing) batches
runs in the executor :func:`page` is given (the admin side's one thread, see below; the loop's
default one without), since a compressed batch may inflate to megabytes.

Records are browsed, never served in bulk: a page holds at most :data:`MAX_LIMIT` records, a
value or key is cut to :data:`PREVIEW_BYTES` (its full size is reported), and a page stops
reading after :data:`PAGE_READ_BYTES` of batches. The cut is made as each batch is decoded, so
a page holds previews, not records: a few kilobytes of compressed batches can inflate to
gigabytes (a zstd batch of one 64 MiB value of zeros is 2 KB), and a page of 500 such records
kept whole would hold 500 of them. Batches are decoded one at a time per admin side (its own
executor thread), so concurrent pages do not multiply the one batch being inflated.

The browser reads as a read_uncommitted consumer does (up to the high watermark), so each
record says what a read_committed consumer makes of it: ``visible``; ``aborted`` (a record of
an aborted transaction, which such a consumer skips for ever); or ``pending`` (at or past the
last stable offset: it waits until the transactions before it are decided).
"""

from __future__ import annotations

import asyncio
import base64
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from typing import Any

from sluice.errors import ErrorCode, Refused, SluiceError
from sluice.protocol.records import (
    TIMESTAMP_TYPE_BIT,
    decode_records,
    iter_stored_batches,
)
from sluice.storage.log import PartitionLog
from sluice.storage.manager import Topic
from sluice.storage.txn_index import AbortedTxn

MAX_LIMIT = 500
PREVIEW_BYTES = 64 * 1024
READ_BYTES = 256 * 1024
"""Bytes of batches read per step (at least one whole batch, however big)."""
PAGE_READ_BYTES = 8 * 1024 * 1024
DECODE_LIMIT = 64 * 1024 * 1024
"""The most a compressed batch may inflate to for the browser to show it."""


Cut = tuple[bytes, int]
"""The first :data:`PREVIEW_BYTES` of a key, value or header value, and its full size."""


def _cut(data: bytes | None) -> Cut | None:
    return None if data is None else (data[:PREVIEW_BYTES], len(data))


@dataclass(frozen=True, slots=True)
class Shown:
    partition: int
    offset: int
    timestamp: int
    key: Cut | None
    value: Cut | None
    headers: list[tuple[str, Cut | None]]
    producer_id: int = -1
    transactional: bool = False
    read_committed: str = "visible"
    """What a read_committed consumer makes of it: visible, aborted or pending."""
    unreadable: str | None = None
    """Set on the one entry standing for a whole batch the browser cannot decode (it inflates
    past :data:`DECODE_LIMIT`, or its records are malformed): why. Its offset is the batch's
    first, ``end`` the offset after its last."""
    end: int = -1

    @property
    def after(self) -> int:
        """The offset after what this entry shows."""
        return self.end if self.end >= 0 else self.offset + 1

    def to_json(self) -> dict[str, Any]:
        shown = {
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp,
            "key": _preview(self.key),
            "value": _preview(self.value),
            "headers": [[k, _preview(v)] for k, v in self.headers],
            "transactional": self.transactional,
            "read_committed": self.read_committed,
        }
        if self.unreadable is not None:
            shown["unreadable"] = self.unreadable
            shown["last_offset"] = self.after - 1
        return shown


def _preview(data: Cut | None) -> dict[str, Any] | None:
    """Base64 of the first PREVIEW_BYTES, with the full size: the page decodes it as text,
    JSON or hex (and escapes it: it is shown as text, never as markup)."""
    if data is None:
        return None
    preview, size = data
    return {
        "b64": base64.b64encode(preview).decode(),
        "size": size,
        "truncated": size > PREVIEW_BYTES,
    }


@dataclass(slots=True)
class Page:
    records: list[Shown]
    cursor: dict[int, int]
    """Per partition: the offset the next page starts from (forward) or stops before (newest
    first)."""
    more: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "records": [r.to_json() for r in self.records],
            "cursor": format_cursor(self.cursor),
            "more": self.more,
        }


def _bad(message: str) -> Refused:
    return Refused(ErrorCode.INVALID_REQUEST, message)


def parse_cursor(text: str) -> dict[int, int]:
    """``partition:offset,partition:offset``."""
    out: dict[int, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        partition, sep, offset = item.partition(":")
        try:
            if not sep:
                raise ValueError
            out[int(partition)] = int(offset)
        except ValueError:
            raise _bad(f"bad cursor item {item!r}: expected partition:offset") from None
    return out


def format_cursor(cursor: dict[int, int]) -> str:
    return ",".join(f"{p}:{o}" for p, o in sorted(cursor.items()))


async def page(
    topic: Topic,
    partitions: list[int],
    mode: str,
    limit: int,
    *,
    offset: int | None = None,
    timestamp: int | None = None,
    cursor: dict[int, int] | None = None,
    executor: Executor | None = None,
) -> Page:
    """One page of records. ``mode`` is ``offset`` (from ``offset`` in each partition),
    ``timestamp`` (from the first record at or after ``timestamp``, ms) or ``newest`` (the latest
    records, newest first); a ``cursor`` from the previous page continues it."""
    limit = max(1, min(limit, MAX_LIMIT))
    logs: dict[int, PartitionLog] = {}
    for index in partitions:
        if not 0 <= index < len(topic.partitions):
            raise _bad(f"topic {topic.name!r} has no partition {index}")
        logs[index] = topic.partitions[index].log
    if mode == "newest":
        return await _newest(logs, limit, cursor or {}, executor)
    if mode not in ("offset", "timestamp"):
        raise _bad(f"unknown mode {mode!r}: use newest, offset or timestamp")
    starts: dict[int, int] = {}
    for index, plog in logs.items():
        if cursor is not None:
            starts[index] = cursor.get(index, plog.log_start_offset)
        elif mode == "offset":
            starts[index] = plog.log_start_offset if offset is None else offset
        else:
            if timestamp is None:
                raise _bad("mode timestamp needs a timestamp (ms)")
            found = await plog.offset_for_timestamp(timestamp)
            starts[index] = plog.high_watermark if found is None else found[0]
    return await _forward(logs, starts, limit, executor)


async def _forward(
    logs: dict[int, PartitionLog], starts: dict[int, int], limit: int, executor: Executor | None
) -> Page:
    read: list[Shown] = []
    budget = PAGE_READ_BYTES
    for index, plog in logs.items():
        got, spent = await _read(index, plog, starts[index], None, limit, budget, executor)
        budget = max(0, budget - spent)
        read.extend(got)
    # Merged by time, as a reader of the whole topic would see them arrive.
    read.sort(key=lambda r: (r.timestamp, r.partition, r.offset))
    shown = read[:limit]
    cursor = dict(starts)
    for record in shown:
        cursor[record.partition] = max(cursor[record.partition], record.after)
    for index, plog in logs.items():
        cursor[index] = max(cursor[index], min(plog.log_start_offset, plog.high_watermark))
    more = any(cursor[i] < plog.high_watermark for i, plog in logs.items())
    return Page(shown, cursor, more)


async def _newest(
    logs: dict[int, PartitionLog], limit: int, before: dict[int, int], executor: Executor | None
) -> Page:
    read: list[Shown] = []
    budget = PAGE_READ_BYTES
    for index, plog in logs.items():
        end = min(before.get(index, plog.high_watermark), plog.high_watermark)
        start = max(plog.log_start_offset, end - limit)
        got, spent = await _read(index, plog, start, end, limit, budget, executor)
        budget = max(0, budget - spent)
        read.extend(got[-limit:])
    read.sort(key=lambda r: (r.timestamp, r.partition, r.offset), reverse=True)
    shown = read[:limit]
    cursor = {
        i: min(before.get(i, plog.high_watermark), plog.high_watermark) for i, plog in logs.items()
    }
    for record in shown:
        cursor[record.partition] = min(cursor[record.partition], record.offset)
    more = any(cursor[i] > plog.log_start_offset for i, plog in logs.items())
    return Page(shown, cursor, more)


async def _read(
    partition: int,
    plog: PartitionLog,
    start: int,
    end: int | None,
    limit: int,
    budget: int,
    executor: Executor | None,
) -> tuple[list[Shown], int]:
    """Up to ``limit`` records of one partition from ``start`` (before ``end``), and the bytes
    read to find them."""
    loop = asyncio.get_running_loop()
    out: list[Shown] = []
    offset = max(start, plog.log_start_offset)
    stop = plog.high_watermark if end is None else min(end, plog.high_watermark)
    spent = 0
    while len(out) < limit and offset < stop and spent < budget:
        try:
            found = plog.read(offset, READ_BYTES)
            data = b"" if found is None else found.read()
        except SluiceError:
            break  # deleted or truncated meanwhile: show what was found
        if not data:
            break
        spent += len(data)
        records, next_offset = await loop.run_in_executor(
            executor, _decode, partition, data, offset, stop, limit - len(out)
        )
        out.extend(_as_read_committed(plog, records, offset, next_offset))
        if next_offset <= offset:
            break
        offset = next_offset
    return out, spent


def _as_read_committed(
    plog: PartitionLog, records: list[Shown], start: int, upper: int
) -> list[Shown]:
    """``records`` (read from [start, upper)) marked as a read_committed consumer sees them:
    past the last stable offset they wait; a transactional one its producer aborted (the
    aborted-transactions index, as a Fetch hands it to such a consumer) is skipped."""
    lso = plog.last_stable_offset
    aborted: list[AbortedTxn] | None = None
    out: list[Shown] = []
    for record in records:
        if record.offset >= lso:
            record = replace(record, read_committed="pending")
        elif record.transactional:
            if aborted is None:
                try:
                    aborted = plog.aborted_txns(start, upper)
                except OSError:
                    aborted = []  # an unreadable index: Fetch fails on it; shown as visible
            if any(
                a.producer_id == record.producer_id
                and a.first_offset <= record.offset <= a.last_offset
                for a in aborted
            ):
                record = replace(record, read_committed="aborted")
        out.append(record)
    return out


def _decode(
    partition: int, data: bytes, start: int, stop: int, limit: int
) -> tuple[list[Shown], int]:
    """Executor side: records of the whole batches in ``data`` in [start, stop), at most
    ``limit``; and the offset to read next."""
    out: list[Shown] = []
    next_offset = start
    for header in iter_stored_batches(data):
        if header.is_control:
            next_offset = header.next_offset
            continue
        batch = memoryview(data)[header.position : header.position + header.size]
        log_append_time = bool(header.attributes & TIMESTAMP_TYPE_BIT)
        try:
            records = decode_records(batch, limit=DECODE_LIMIT)
        except SluiceError as exc:
            # One entry for the batch, not a failed page: every page holding it would fail.
            if header.last_offset >= start:
                if header.base_offset >= stop or len(out) >= limit:
                    return out, next_offset
                out.append(
                    Shown(
                        partition,
                        header.base_offset,
                        header.max_timestamp,
                        None,
                        None,
                        [],
                        header.producer_id,
                        header.is_transactional,
                        unreadable=(
                            f"a batch of {header.records_count} records the browser cannot "
                            f"show: {exc}"
                        ),
                        end=header.next_offset,
                    )
                )
            next_offset = max(next_offset, header.next_offset)
            continue
        for record in records:
            if record.offset < start:
                continue
            if record.offset >= stop or len(out) >= limit:
                return out, next_offset
            out.append(
                Shown(
                    partition,
                    record.offset,
                    header.max_timestamp if log_append_time else record.timestamp,
                    _cut(record.key),
                    _cut(record.value),
                    [(k, _cut(v)) for k, v in record.headers],
                    header.producer_id,
                    header.is_transactional,
                )
            )
            next_offset = record.offset + 1
        next_offset = max(next_offset, header.next_offset)
    return out, next_offset

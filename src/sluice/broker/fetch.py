"""Fetch: byte ranges of the logs, with Kafka's long polling.

A partition's answer starts at the batch holding the fetch offset and may end in a partial batch
(clients drop it). Limits follow KIP-74: ``partition_max_bytes`` per partition and ``max_bytes``
per response (capped by the broker's ``fetch.max.bytes``), except that the first batch of the
first partition with data is always returned whole, however big, so a consumer can always make
progress.

Each pass over the request finds the byte ranges on the loop's thread (index lookups, a few
batch headers); the record bytes are read only for the answer, by storage's
:class:`~sluice.storage.reader.SliceReader` (off the loop when they are big), and go into the
response as they are, never decoded.

Isolation: ``read_committed`` (isolation level 1) answers only what lies below each partition's
last stable offset, with the aborted transactions overlapping what it returns (Kafka's rule:
from the fetch offset up to the first offset the index places past the returned bytes), so the
consumer drops their records; ``read_uncommitted`` reads up to the high watermark as before.
Every answer reports the partition's last stable offset.

Long polling: when fewer than ``min_bytes`` are ready, the request waits up to ``max_wait_ms`` for
any of its partitions' high watermarks to move (storage calls a listener; nothing polls), or
for one of their topics to be deleted, then looks again (a deleted topic is answered
UNKNOWN_TOPIC_OR_PARTITION, as Kafka does); a read_committed request finds nothing new until
the LSO moves, which happens only with the high watermark (a marker's append moves both).
Incremental fetch sessions (KIP-227) are not kept: every answer says session id 0, which tells
clients to send full requests, as the protocol allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Generator

from sluice.broker.context import ELEMENTS_PER_TURN, BrokerContext
from sluice.broker.stats import BrokerStats
from sluice.errors import ErrorCode, SluiceError
from sluice.protocol import Request
from sluice.protocol import messages as m
from sluice.storage.log import FileSlice, PartitionLog
from sluice.storage.txn_index import AbortedTxn

READ_COMMITTED = 1


async def fetch(broker: BrokerContext, request: Request) -> m.FetchResponse:
    body = request.body
    assert isinstance(body, m.FetchRequest)
    deadline = time.monotonic() + max(0, body.max_wait_ms) / 1000
    held = 0  # bytes read into this request's answers, counted as unsent until it returns
    try:
        while True:
            finding = _find_all(broker, body)
            try:
                while True:  # many partitions: read what each turn found, let others run
                    held += await _read(broker, next(finding))
                    await asyncio.sleep(0)
            except StopIteration as done:
                responses, ready, logs, found = done.value
            wait = deadline - time.monotonic()
            if ready or wait <= 0 or broker.fetch_waiters.closed or not logs:
                held += await _read(broker, found)
                if broker.stats is not None:
                    _count(broker.stats, responses)
                return m.FetchResponse(throttle_time_ms=0, error_code=0, session_id=0, responses=responses)
            # This pass's answers (records read in its earlier turns) are dropped: found again
            # once data arrives
            responses, found = [], []
            broker.unsent.release(held)
            held = 0
            await _wait_for_data(broker, logs, wait)
    finally:
        broker.unsent.release(held)


Found = list[tuple[m.FetchPartitionData, FileSlice]]
"""Answers that have records, each with the range its records are in (still to read)."""


async def _read(broker: BrokerContext, found: Found) -> int:
    """Read the ranges found into their answers; the bytes read, which the caller keeps
    counted as unsent answers (:attr:`BrokerContext.unsent`) until it hands the answer on: a
    request of many partitions reads a turn at a time, and the records read in one turn are
    held while the next turns run, and other fetches must see them (the connection counts
    them once written, until its client takes them). Called with no await since the ranges
    were found, so none can have gone."""
    reading = sum(s.length for _, s in found)
    broker.unsent.held += reading
    try:
        records = await broker.logs.reader.read([s for _, s in found])
    except BaseException:
        broker.unsent.release(reading)
        raise
    for (part, _), data in zip(found, records, strict=True):
        part.records = data
    return reading


def records_bytes(answer: m.FetchResponse) -> int:
    """Bytes of records an answer holds (what :func:`fetch` counted as unsent until it returned)."""
    return sum(len(p.records) for t in answer.responses for p in t.partitions if p.records)


def _find_all(
    broker: BrokerContext, body: m.FetchRequest
) -> Generator[Found, None, tuple[list[m.FetchableTopicResponse], bool, list[PartitionLog], Found]]:
    """One pass over the request, returning (answers with their records still to read, whether
    to answer now, the logs looked at, each answer that has records with the range they are
    in). Every :data:`ELEMENTS_PER_TURN` partitions it yields the ranges found since the last
    turn, for the caller to read before it lets the loop run other work: a request may name
    200,000 partitions (a second of finding), and a range found and not read across an await
    could be deleted meanwhile (retention, DeleteRecords, a compaction's swap)."""
    # Kafka's rule: the request's max_bytes, capped by fetch.max.bytes (so one small request
    # cannot make the broker read gigabytes into memory, e.g. by naming a partition 300
    # times); 0 or less still gets the first batch below. And no more than the answers other
    # clients leave unsent allow: with no room, no records at all (not even the first batch),
    # answered as "nothing ready" (after max_wait_ms), so the memory of answers nobody reads
    # stays bounded.
    room = broker.unsent.room()
    remaining = min(body.max_bytes, broker.config.fetch_max_bytes, room)
    total = 0
    errors = False
    read_committed = body.isolation_level == READ_COMMITTED
    logs: list[PartitionLog] = []
    found_all: Found = []
    responses: list[m.FetchableTopicResponse] = []
    manager = broker.logs
    seen = turn = 0
    for topic in body.topics:
        parts: list[m.FetchPartitionData] = []
        for fp in topic.partitions:
            seen += 1
            if not seen % ELEMENTS_PER_TURN:
                yield found_all[turn:]
                turn = len(found_all)
            try:
                plog = manager.get_log(topic.topic, fp.partition)
            except SluiceError as exc:
                parts.append(_failed(fp.partition, exc.code))
                errors = True
                continue
            logs.append(plog)
            answer: FileSlice | None = None
            aborted: list[AbortedTxn] = []
            code = ErrorCode.NONE
            limit = min(fp.partition_max_bytes, remaining)
            if limit > 0 or (total == 0 and room > 0):
                try:
                    if read_committed:
                        found, aborted = plog.read_committed(fp.fetch_offset, max(limit, 0))
                    else:
                        found = plog.read(fp.fetch_offset, max(limit, 0))
                except SluiceError as exc:
                    code = exc.code
                    errors = True
                else:
                    # Past the first batch of the response, a batch that does not fit waits
                    # for the next fetch.
                    if found is not None and (total == 0 or found.length <= limit):
                        answer = found
                        total += found.length
                        remaining -= found.length
            part = m.FetchPartitionData(
                partition_index=fp.partition,
                error_code=code,
                high_watermark=plog.high_watermark,
                last_stable_offset=plog.last_stable_offset,
                log_start_offset=plog.log_start_offset,
                aborted_transactions=(
                    [m.AbortedTransaction(producer_id=t.producer_id, first_offset=t.first_offset) for t in aborted]
                    if answer is not None
                    else []
                )
                if read_committed
                else None,
                records=b"",
            )
            parts.append(part)
            if answer is not None:
                found_all.append((part, answer))
        responses.append(m.FetchableTopicResponse(topic=topic.topic, partitions=parts))
    ready = errors or total >= max(body.min_bytes, 1)
    return responses, ready, logs, found_all[turn:]


def _count(stats: BrokerStats, responses: list[m.FetchableTopicResponse]) -> None:
    """Bytes and records (from the batch headers) sent, by topic."""
    for answer in responses:
        for part in answer.partitions:
            records = part.records
            if isinstance(records, bytes) and records:
                stats.fetched(answer.topic, records)


def _failed(partition: int, code: int) -> m.FetchPartitionData:
    return m.FetchPartitionData(
        partition_index=partition,
        error_code=code,
        high_watermark=-1,
        last_stable_offset=-1,
        log_start_offset=-1,
        records=b"",  # empty, not null: librdkafka cannot parse a null record set
    )


async def _wait_for_data(broker: BrokerContext, logs: list[PartitionLog], timeout: float) -> None:
    """Sleep until a high watermark of ``logs`` moves, the timeout passes, or shutdown."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not future.done():
            future.set_result(None)

    timer = loop.call_later(timeout, wake)
    waiters = broker.fetch_waiters
    waiters.add(future)
    for plog in logs:
        plog.add_high_watermark_listener(wake)
    try:
        async with broker.heavy.paused():  # a request past the inline elements: others' turn
            await future
    finally:
        timer.cancel()
        waiters.discard(future)
        for plog in logs:
            with contextlib.suppress(ValueError):  # a log deleted meanwhile dropped its listeners
                plog.remove_high_watermark_listener(wake)

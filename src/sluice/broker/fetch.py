"""Fetch: byte ranges of the logs, with Kafka's long polling.

A partition's answer starts at the batch holding the fetch offset and may end in a partial batch
(clients drop it). Limits follow KIP-74: ``partition_max_bytes`` per partition and ``max_bytes``
per response, except that the first batch of the first partition with data is always returned
whole, however big, so a consumer can always make progress.

Long polling: when fewer than ``min_bytes`` are ready, the request waits up to ``max_wait_ms`` for
any of its partitions' high watermarks to move (storage calls a listener; nothing polls), then
reads again. Incremental fetch sessions (KIP-227) are not kept: every answer says session id 0,
which tells clients to send full requests, as the protocol allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from sluice.broker.context import BrokerContext
from sluice.broker.stats import BrokerStats
from sluice.errors import ErrorCode, SluiceError
from sluice.protocol import Request
from sluice.protocol import messages as m
from sluice.storage.log import PartitionLog

READ_COMMITTED = 1


async def fetch(broker: BrokerContext, request: Request) -> m.FetchResponse:
    body = request.body
    assert isinstance(body, m.FetchRequest)
    deadline = time.monotonic() + max(0, body.max_wait_ms) / 1000
    while True:
        responses, ready, logs = _read_all(broker, body)
        wait = deadline - time.monotonic()
        if ready or wait <= 0 or broker.fetch_waiters.closed or not logs:
            if broker.stats is not None:
                _count(broker.stats, responses)
            return m.FetchResponse(throttle_time_ms=0, error_code=0, session_id=0, responses=responses)
        await _wait_for_data(broker, logs, wait)


def _read_all(
    broker: BrokerContext, body: m.FetchRequest
) -> tuple[list[m.FetchableTopicResponse], bool, list[PartitionLog]]:
    """One pass over the request: (answers, whether to answer now, the logs read)."""
    remaining = body.max_bytes if body.max_bytes > 0 else 0x7FFFFFFF
    total = 0
    errors = False
    read_committed = body.isolation_level == READ_COMMITTED
    logs: list[PartitionLog] = []
    responses: list[m.FetchableTopicResponse] = []
    manager = broker.logs
    for topic in body.topics:
        parts: list[m.FetchPartitionData] = []
        for fp in topic.partitions:
            try:
                plog = manager.get_log(topic.topic, fp.partition)
            except SluiceError as exc:
                parts.append(_failed(fp.partition, exc.code))
                errors = True
                continue
            logs.append(plog)
            records = b""
            code = ErrorCode.NONE
            limit = min(fp.partition_max_bytes, remaining)
            if limit > 0 or total == 0:
                try:
                    found = plog.read(fp.fetch_offset, max(limit, 0))
                except SluiceError as exc:
                    code = exc.code
                    errors = True
                else:
                    # Past the first batch of the response, a batch that does not fit waits
                    # for the next fetch.
                    if found is not None and (total == 0 or found.length <= limit):
                        records = found.read()
                        total += len(records)
                        remaining -= len(records)
            parts.append(
                m.FetchPartitionData(
                    partition_index=fp.partition,
                    error_code=code,
                    high_watermark=plog.high_watermark,
                    last_stable_offset=plog.high_watermark,
                    log_start_offset=plog.log_start_offset,
                    aborted_transactions=[] if read_committed else None,
                    records=records,
                )
            )
        responses.append(m.FetchableTopicResponse(topic=topic.topic, partitions=parts))
    ready = errors or total >= max(body.min_bytes, 1)
    return responses, ready, logs


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
        await future
    finally:
        timer.cancel()
        waiters.discard(future)
        for plog in logs:
            with contextlib.suppress(ValueError):  # a log deleted meanwhile dropped its listeners
                plog.remove_high_watermark_listener(wake)

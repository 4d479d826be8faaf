"""ListOffsets: earliest (-2), latest (-1), max timestamp (-3, v7) and the first offset at or
after a timestamp, per partition. With isolation level read_committed (v2+), as Kafka: latest
is the last stable offset, and a timestamp's offset is answered only if it lies below it."""

from __future__ import annotations

import asyncio

from sluice.broker.context import ELEMENTS_PER_TURN, BrokerContext
from sluice.errors import ErrorCode, Refused, SluiceError
from sluice.protocol import Request
from sluice.protocol import messages as m
from sluice.storage.log import PartitionLog

LATEST = -1
READ_COMMITTED = 1
EARLIEST = -2
MAX_TIMESTAMP = -3


async def list_offsets(broker: BrokerContext, request: Request) -> m.ListOffsetsResponse:
    body = request.body
    assert isinstance(body, m.ListOffsetsRequest)
    topics = []
    seen = 0
    for topic in body.topics:
        parts = []
        for p in topic.partitions:
            seen += 1
            if not seen % ELEMENTS_PER_TURN:
                await asyncio.sleep(0)
            try:
                plog = broker.logs.get_log(topic.name, p.partition_index)
                offset, timestamp = await _lookup(
                    plog,
                    p.timestamp,
                    request.api_version,
                    broker.config.max_uncompressed_batch_bytes,
                    committed=request.api_version >= 2 and body.isolation_level == READ_COMMITTED,
                )
                code = ErrorCode.NONE
            except SluiceError as exc:
                offset, timestamp, code = -1, -1, exc.code
            parts.append(
                m.ListOffsetsPartitionResponse(
                    partition_index=p.partition_index,
                    error_code=code,
                    timestamp=timestamp,
                    offset=offset,
                    leader_epoch=0 if code == ErrorCode.NONE else -1,
                )
            )
        topics.append(m.ListOffsetsTopicResponse(name=topic.name, partitions=parts))
    return m.ListOffsetsResponse(throttle_time_ms=0, topics=topics)


async def _lookup(
    plog: PartitionLog, timestamp: int, version: int, max_block: int, *, committed: bool = False
) -> tuple[int, int]:
    """Latest and earliest come from the log's state; a timestamp search streams one batch's
    records in an executor (see PartitionLog.offset_for_timestamp)."""
    if timestamp == LATEST:
        return (plog.last_stable_offset if committed else plog.high_watermark), -1
    if timestamp == EARLIEST:
        return plog.log_start_offset, -1
    if timestamp == MAX_TIMESTAMP and version >= 7:
        found = await plog.max_timestamp_offset(max_block=max_block)
    elif timestamp < 0:
        raise Refused(ErrorCode.INVALID_REQUEST, f"unknown special timestamp {timestamp}")
    else:
        found = await plog.offset_for_timestamp(timestamp, max_block=max_block)
    if found is None or (committed and found[0] >= plog.last_stable_offset):
        return -1, -1
    return found

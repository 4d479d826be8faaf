"""DescribeProducers (key 61): per partition, the producers its log remembers, with the first
offset of each one's open transaction, which is how admin tools (``kafka-transactions.sh
find-hanging``, ``Admin.describeProducers``) find a transaction holding the last stable offset
back."""

from __future__ import annotations

from sluice.broker.context import BrokerContext, turn_after
from sluice.errors import ErrorCode, SluiceError
from sluice.protocol import Request
from sluice.protocol import messages as m


async def describe_producers(broker: BrokerContext, request: Request) -> m.DescribeProducersResponse:
    body = request.body
    assert isinstance(body, m.DescribeProducersRequest)
    topics = []
    # Each partition once, however often it is named: its answer lists every producer the
    # log remembers, so repeats made a small request an answer of any size.
    seen: set[tuple[str, int]] = set()
    done = 0
    for topic in body.topics:
        parts = []
        for index in topic.partition_indexes:
            done += 1
            await turn_after(done)
            if (topic.name, index) in seen:
                continue
            seen.add((topic.name, index))
            try:
                producers = broker.logs.get_log(topic.name, index).active_producers()
            except (SluiceError, OSError) as exc:
                code = exc.code if isinstance(exc, SluiceError) else ErrorCode.KAFKA_STORAGE_ERROR
                parts.append(
                    m.DescribeProducersPartitionResponse(
                        partition_index=index, error_code=code, error_message=str(exc), active_producers=[]
                    )
                )
                continue
            parts.append(
                m.DescribeProducersPartitionResponse(
                    partition_index=index,
                    error_code=ErrorCode.NONE,
                    active_producers=[
                        m.ProducerState(
                            producer_id=pid,
                            producer_epoch=entry.epoch,
                            last_sequence=-1 if entry.last_seq is None else entry.last_seq,
                            last_timestamp=entry.last_timestamp,
                            coordinator_epoch=entry.coordinator_epoch,
                            current_txn_start_offset=entry.txn_first_offset,
                        )
                        for pid, entry in producers
                    ],
                )
            )
        if parts or not topic.partition_indexes:
            topics.append(m.DescribeProducersTopicResponse(name=topic.name, partitions=parts))
    return m.DescribeProducersResponse(throttle_time_ms=0, topics=topics)

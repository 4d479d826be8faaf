"""Produce: hand each partition's record batches to its log, untouched but for the offsets.

The records are ``memoryview`` slices of the request frame (a writable ``bytearray``), so the log
patches base offsets in place and writes the very same buffer: no record is decoded or copied.

acks maps to the storage engine's acknowledgement levels: 0 is QUEUED (validated and enqueued,
and no response at all), 1 is WRITTEN (in the file, so it survives a process crash), and all (-1)
is the topic's ``sluice.append.ack`` but never less than WRITTEN: "all replicas" of a single node
is the durability the operator configured for the topic.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from sluice.broker import ingest
from sluice.broker.context import ELEMENTS_PER_TURN, BrokerContext
from sluice.config import AckLevel, TimestampType
from sluice.dataclass import dataclass
from sluice.errors import CloseConnection, ErrorCode, RecordErrors, Refused, SluiceError
from sluice.protocol import Request
from sluice.protocol import messages as m
from sluice.protocol.records import read_header
from sluice.storage.log import PartitionLog, TxnCheck
from sluice.storage.manager import LogManager
from sluice.storage.partition import Partition
from sluice.storage.producer_state import is_idempotent, last_sequence

log = logging.getLogger(__name__)


def ack_level(acks: int, log_: PartitionLog) -> AckLevel:
    if acks == 0:
        return AckLevel.QUEUED
    if acks == 1:
        return AckLevel.WRITTEN
    topic_ack = log_.config.append_ack
    return AckLevel.WRITTEN if topic_ack is AckLevel.QUEUED else topic_ack


@dataclass(frozen=True, slots=True)
class Appended:
    """A partition's successful append: its base offset and, on a LogAppendTime topic, the
    time its batches were stamped with (-1 on a CreateTime topic, as Kafka answers)."""

    base_offset: int
    log_append_time: int = -1


Outcome = Appended | tuple[int, str] | tuple[int, str, list[tuple[int, str]]]
"""A partition's result: its append, or (error code, message[, record errors])."""

MESSAGE_TEXT_BUDGET = 64 * 1024
"""Characters of partition error messages one Produce answer carries in all; past it a
partition is answered with its error code alone (Kafka answers most errors so). Each message
names its topic and partition: a 2 MiB request naming 200,000 partitions of an unknown topic
was answered with about 60 MiB, and any client could ask for that again and again."""


async def produce(broker: BrokerContext, request: Request) -> m.ProduceResponse | None:
    body = request.body
    assert isinstance(body, m.ProduceRequest)
    acks = body.acks
    if acks not in (0, 1, -1):
        return _all_failed(body, ErrorCode.INVALID_REQUIRED_ACKS, f"acks must be 0, 1 or -1, not {acks}")
    logs = broker.logs
    limit = broker.config.max_uncompressed_batch_bytes
    walk = broker.config.validate_records
    # The log is kept with its job: a topic deleted meanwhile must not fail the response.
    targets: list[tuple[str, int, PartitionLog | None]] = []
    jobs: list[Awaitable[Appended] | Outcome] = []
    for topic in body.topic_data:
        for part in topic.partition_data:
            check = _txn_check(broker, body.transactional_id, topic.name, part.index)
            plog, job = _submit(logs, topic.name, part, acks, limit, check, walk)
            targets.append((topic.name, part.index, plog))
            jobs.append(job)
            if not len(jobs) % ELEMENTS_PER_TURN:
                await asyncio.sleep(0)  # nothing started yet: the appends start in order below
    if acks == -1:
        results = await _settle_within(jobs, body.timeout_ms)
    else:
        if len(jobs) > 1:
            # Start every append before awaiting any, so partitions are written concurrently.
            jobs = [_start(job) for job in jobs]
        results = [await _settle(job) for job in jobs]
    if acks == 0:
        for result in results:
            if isinstance(result, tuple):
                # Kafka's answer to a failed acks=0 produce: drop the connection, the only
                # signal such a client can see.
                raise CloseConnection(f"acks=0 produce failed: {result[1]}")
        return None
    responses: dict[str, list[m.ProducePartitionResponse]] = {}
    budget = _TextBudget()
    for i, ((name, index, plog), result) in enumerate(zip(targets, results, strict=True), 1):
        if not i % ELEMENTS_PER_TURN:
            await asyncio.sleep(0)
        responses.setdefault(name, []).append(_partition_response(plog, index, result, budget))
    return m.ProduceResponse(
        responses=[
            m.ProduceTopicResponse(name=name, partition_responses=parts)
            for name, parts in responses.items()
        ],
        throttle_time_ms=0,
    )


def _txn_check(broker: BrokerContext, txn_id: str | None, topic: str, partition: int) -> TxnCheck:
    """The partition's check of a transactional batch against the transaction coordinator,
    made by the log when it gives the batch offsets (so no marker slips in between)."""

    def check(producer_id: int, epoch: int) -> None:
        refused = broker.verify_produce(txn_id, producer_id, epoch, topic, partition)
        if refused is not None:
            raise Refused(*refused)

    return check


def _submit(
    logs: LogManager,
    topic: str,
    part: m.ProducePartitionData,
    acks: int,
    limit: int,
    txn_check: TxnCheck,
    walk: bool,
) -> tuple[PartitionLog | None, Awaitable[Appended] | Outcome]:
    """Start one partition's append: its log and a future of its base offset, or an error."""
    try:
        partition = logs.get_partition(topic, part.index)
    except SluiceError as exc:
        return None, (int(exc.code), str(exc))
    plog = partition.log
    if acks == -1 and plog.config.min_insync_replicas > 1:
        # Kafka's answer when fewer replicas are in sync than the topic asks for: one node is
        # one replica (the producer retries, as it would until a follower caught up)
        return plog, (
            int(ErrorCode.NOT_ENOUGH_REPLICAS),
            f"acks=all needs {plog.config.min_insync_replicas} in-sync replicas "
            f"(min.insync.replicas) and this single-node broker has 1",
        )
    if part.records is None or len(part.records) == 0:
        return plog, (int(ErrorCode.INVALID_RECORD), "a produce request must carry record batches")
    return plog, _append(partition, part.records, ack_level(acks, plog), limit, txn_check, walk)


async def _append(
    partition: Partition,
    records: bytes | bytearray | memoryview,
    ack: AckLevel,
    limit: int,
    txn_check: TxnCheck,
    walk: bool,
) -> Appended:
    """Verify (compressed record counts; every record with ``sluice.produce.validate.records``;
    CreateTime timestamps), recompress (compression.type) and stamp (LogAppendTime) as the
    topic needs, then append: see :mod:`sluice.broker.ingest`."""
    config = partition.log.config
    now = partition.log.clock()
    data = await ingest.prepare(records, config, limit, partition.name, walk=walk, now=now)
    base_offset = await partition.append(data, ack, txn_check)
    if config.message_timestamp_type is TimestampType.LOG_APPEND_TIME:
        return Appended(base_offset, _stamp_stored(partition.log, data, base_offset, now))
    return Appended(base_offset)


def _stamp_stored(plog: PartitionLog, data: ingest.Records, base_offset: int, now: int) -> int:
    """The log append time of the batch appended at ``base_offset``: ``now``, its stamp, unless
    it is an idempotent producer's retry of a batch the log already had (nothing written),
    whose stamp is the original's. Kafka answers a duplicate so: the time a consumer sees."""
    header = read_header(memoryview(data))
    if not is_idempotent(header):
        return now
    entry = plog.producer_state().producers.get(header.producer_id)
    if entry is None or entry.epoch != header.producer_epoch:
        return now
    last_seq = last_sequence(header.base_sequence, header.last_offset_delta)
    original = entry.find(header.base_sequence, last_seq)
    return original.timestamp if original is not None and original.first_offset == base_offset else now


def _start(job: Awaitable[Appended] | Outcome) -> Awaitable[Appended] | Outcome:
    if isinstance(job, Appended | tuple):
        return job
    return asyncio.ensure_future(job)


async def _settle(job: Awaitable[Appended] | Outcome) -> Outcome:
    if isinstance(job, Appended | tuple):
        return job
    try:
        return await job
    except RecordErrors as exc:
        return (int(exc.code), str(exc), exc.record_errors)
    except SluiceError as exc:
        return (int(exc.code), str(exc))


async def _settle_within(jobs: list[Awaitable[Appended] | Outcome], timeout_ms: int) -> list[Outcome]:
    """acks=all honours the request's ``timeout_ms`` as Kafka does: a partition not durable in
    time is answered REQUEST_TIMED_OUT. Its append is not undone; it completes in the background
    (as in Kafka, where the leader has appended and only the replicas are late).

    A timeout of 0 or less bounds nothing: Kafka's leader of a single-replica partition answers
    such a request with success once appended, so sluice waits for the append's durability."""
    started: list[asyncio.Future[Appended] | Outcome] = [
        job if isinstance(job, Appended | tuple) else asyncio.ensure_future(job) for job in jobs
    ]
    futures = [job for job in started if isinstance(job, asyncio.Future)]
    if futures:
        await asyncio.wait(futures, timeout=timeout_ms / 1000 if timeout_ms > 0 else None)
    results: list[Outcome] = []
    for job in started:
        if isinstance(job, asyncio.Future) and not job.done():
            job.add_done_callback(_retrieve)
            results.append((int(ErrorCode.REQUEST_TIMED_OUT), f"not durable within {timeout_ms} ms"))
        else:
            results.append(await _settle(job))  # done: no wait, errors become outcomes
    return results


def _retrieve(future: asyncio.Future[Appended]) -> None:
    """Consume a late append's outcome (nobody awaits it any more), logging a failure."""
    if not future.cancelled() and (exc := future.exception()) is not None:
        log.warning(
            "an acks=all append failed after its producer was answered REQUEST_TIMED_OUT "
            "(the producer may retry it): %s",
            exc,
        )


class _TextBudget:
    """What is left of :data:`MESSAGE_TEXT_BUDGET` in one answer: partition error messages and
    the per-record ones (a compacted topic's keyless records, each named with its own copy of
    the message: a 0.8 MB zstd batch of a million was answered with 79 MB)."""

    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = MESSAGE_TEXT_BUDGET

    def take(self, text: str) -> str | None:
        """``text`` if it fits in what is left, else None (the error code stands alone)."""
        self.left -= len(text)
        return text if self.left >= 0 else None


def _partition_response(
    plog: PartitionLog | None, index: int, result: Outcome, budget: _TextBudget
) -> m.ProducePartitionResponse:
    if isinstance(result, tuple):
        message = budget.take(result[1])
        return m.ProducePartitionResponse(
            index=index,
            error_code=result[0],
            base_offset=-1,
            record_errors=[
                m.BatchIndexAndErrorMessage(batch_index=i, batch_index_error_message=budget.take(text))
                for i, text in (result[2] if len(result) > 2 else [])
            ],
            error_message=message,
        )
    assert plog is not None  # an append that succeeded had its log
    return m.ProducePartitionResponse(
        index=index,
        error_code=ErrorCode.NONE,
        base_offset=result.base_offset,
        log_append_time_ms=result.log_append_time,
        log_start_offset=plog.log_start_offset,
        record_errors=[],
    )


def _all_failed(body: m.ProduceRequest, code: int, message: str) -> m.ProduceResponse:
    """Every partition answered ``code``; the message, within :data:`MESSAGE_TEXT_BUDGET`."""
    budget = _TextBudget()
    return m.ProduceResponse(
        responses=[
            m.ProduceTopicResponse(
                name=topic.name,
                partition_responses=[
                    m.ProducePartitionResponse(
                        index=p.index,
                        error_code=code,
                        base_offset=-1,
                        record_errors=[],
                        error_message=budget.take(message),
                    )
                    for p in topic.partition_data
                ],
            )
            for topic in body.topic_data
        ],
        throttle_time_ms=0,
    )

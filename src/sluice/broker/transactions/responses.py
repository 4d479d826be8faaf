"""Every transaction API's answer, shaped for the request's version.

The coordinator decides (error codes, ids, epochs, states); this module knows which fields each
version has, the older code a version expects in place of PRODUCER_FENCED, and how a refusal of
a whole request looks per API.
"""

from __future__ import annotations

from collections.abc import Iterable

from sluice.broker.transactions.state import Transaction, TxnState
from sluice.errors import ErrorCode
from sluice.protocol import ApiKey, Request, ResponseBody
from sluice.protocol import messages as m

TopicPartition = tuple[str, int]

PRODUCER_FENCED_SINCE: dict[int, int] = {
    ApiKey.INIT_PRODUCER_ID: 4,
    ApiKey.ADD_PARTITIONS_TO_TXN: 2,
    ApiKey.ADD_OFFSETS_TO_TXN: 2,
    ApiKey.END_TXN: 2,
}
"""First version that knows PRODUCER_FENCED (90); before it Kafka answers INVALID_PRODUCER_EPOCH
(47), which older clients handle the same way."""


def for_version(api: int, version: int, error: ErrorCode) -> ErrorCode:
    if error is ErrorCode.PRODUCER_FENCED and version < PRODUCER_FENCED_SINCE.get(api, 0):
        return ErrorCode.INVALID_PRODUCER_EPOCH
    return error


def init_producer_id_response(
    version: int, error: ErrorCode, producer_id: int = -1, epoch: int = -1
) -> m.InitProducerIdResponse:
    if error is not ErrorCode.NONE:
        producer_id, epoch = -1, -1
    return m.InitProducerIdResponse(
        throttle_time_ms=0,
        error_code=for_version(ApiKey.INIT_PRODUCER_ID, version, error),
        producer_id=producer_id,
        producer_epoch=epoch,
    )


def add_partitions_response(
    version: int, req: m.AddPartitionsToTxnRequest, results: dict[TopicPartition, ErrorCode]
) -> m.AddPartitionsToTxnResponse:
    """One entry per partition asked for (v0-3), in the request's order."""
    topics: dict[str, list[m.AddPartitionsToTxnPartitionResult]] = {}
    for t in req.v3_and_below_topics:
        for p in dict.fromkeys(t.partitions):
            error = for_version(ApiKey.ADD_PARTITIONS_TO_TXN, version, results[(t.name, p)])
            topics.setdefault(t.name, []).append(
                m.AddPartitionsToTxnPartitionResult(partition_index=p, partition_error_code=error)
            )
    return m.AddPartitionsToTxnResponse(
        throttle_time_ms=0,
        results_by_topic_v3_and_below=[
            m.AddPartitionsToTxnTopicResult(name=name, results_by_partition=parts)
            for name, parts in topics.items()
        ],
    )


def add_offsets_response(version: int, error: ErrorCode) -> m.AddOffsetsToTxnResponse:
    return m.AddOffsetsToTxnResponse(
        throttle_time_ms=0, error_code=for_version(ApiKey.ADD_OFFSETS_TO_TXN, version, error)
    )


def end_txn_response(version: int, error: ErrorCode) -> m.EndTxnResponse:
    return m.EndTxnResponse(
        throttle_time_ms=0, error_code=for_version(ApiKey.END_TXN, version, error)
    )


def described(
    txn_id: str, error: ErrorCode, txn: Transaction | None
) -> m.DescribedTransactionState:
    """DescribeTransactions' entry for one id: while the markers of a decided transaction are
    being written, its partitions are those still without one (as Kafka reports them)."""
    if txn is None or error is not ErrorCode.NONE:
        return m.DescribedTransactionState(
            error_code=error
            if error is not ErrorCode.NONE
            else ErrorCode.TRANSACTIONAL_ID_NOT_FOUND,
            transactional_id=txn_id,
            transaction_state="",
            transaction_timeout_ms=0,
            transaction_start_time_ms=-1,
            producer_id=-1,
            producer_epoch=-1,
        )
    record = txn.record
    partitions = (
        txn.unmarked
        if record.state in (TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT)
        else record.partitions
    )
    by_topic: dict[str, list[int]] = {}
    for topic, partition in sorted(partitions):
        by_topic.setdefault(topic, []).append(partition)
    return m.DescribedTransactionState(
        error_code=ErrorCode.NONE,
        transactional_id=txn_id,
        transaction_state=record.state.value,
        transaction_timeout_ms=record.timeout_ms,
        transaction_start_time_ms=record.start_timestamp,
        producer_id=record.producer_id,
        producer_epoch=record.producer_epoch,
        topics=[
            m.DescribeTransactionsTopicData(topic=topic, partitions=parts)
            for topic, parts in by_topic.items()
        ],
    )


def list_transactions_response(
    unknown_states: Iterable[str], listed: Iterable[Transaction]
) -> m.ListTransactionsResponse:
    return m.ListTransactionsResponse(
        throttle_time_ms=0,
        error_code=ErrorCode.NONE,
        unknown_state_filters=list(unknown_states),
        transaction_states=[
            m.ListedTransactionState(
                transactional_id=t.transactional_id,
                producer_id=t.record.producer_id,
                transaction_state=t.record.state.value,
            )
            for t in listed
        ],
    )


def error_response(request: Request, error: ErrorCode) -> ResponseBody:
    """The whole request refused with one code, in the shape its API and version expect."""
    body = request.body
    v = request.api_version
    match body:
        case m.InitProducerIdRequest():
            return init_producer_id_response(v, error)
        case m.AddPartitionsToTxnRequest():
            return add_partitions_response(
                v,
                body,
                {(t.name, p): error for t in body.v3_and_below_topics for p in t.partitions},
            )
        case m.AddOffsetsToTxnRequest():
            return add_offsets_response(v, error)
        case m.EndTxnRequest():
            return end_txn_response(v, error)
        case m.DescribeTransactionsRequest():
            return m.DescribeTransactionsResponse(
                transaction_states=[described(t, error, None) for t in body.transactional_ids]
            )
        case m.ListTransactionsRequest():
            return m.ListTransactionsResponse(error_code=error)
    raise ValueError(f"not a transaction API: {type(body).__name__}")

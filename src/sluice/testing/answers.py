"""A request refused with one error code, in the shape its API and version expect: what a
scripted fault (:meth:`Faults.fail`) answers instead of running the handler.

Per partition, topic, resource or group where the API has such error codes (every partition of
a Produce gets NOT_LEADER_OR_FOLLOWER, say), at the top level where that is all the API has;
Kafka's ``AbstractRequest.getErrorResponse`` does the same per API. The group APIs' answers come
from the group coordinator's own refusals (:func:`sluice.broker.groups.responses.error_response`),
the transaction coordinator's from its own (:func:`sluice.broker.transactions.responses.error_response`).
"""

from __future__ import annotations

from sluice.broker.groups import GROUP_APIS
from sluice.broker.groups.responses import error_response as group_error_response
from sluice.broker.transactions.responses import error_response as txn_error_response
from sluice.errors import ErrorCode
from sluice.protocol import ApiKey, Request, ResponseBody
from sluice.protocol import messages as m

TXN_APIS = frozenset(
    {
        ApiKey.ADD_PARTITIONS_TO_TXN,
        ApiKey.ADD_OFFSETS_TO_TXN,
        ApiKey.END_TXN,
        ApiKey.DESCRIBE_TRANSACTIONS,
        ApiKey.LIST_TRANSACTIONS,
    }
)
"""The transaction coordinator's APIs (InitProducerId, also an idempotent producer's, is answered
here; TxnOffsetCommit is a group API)."""

ANSWERABLE: frozenset[ApiKey] = frozenset(map(ApiKey, GROUP_APIS)) | TXN_APIS | {
    ApiKey.PRODUCE,
    ApiKey.FETCH,
    ApiKey.LIST_OFFSETS,
    ApiKey.METADATA,
    ApiKey.INIT_PRODUCER_ID,
    ApiKey.CREATE_TOPICS,
    ApiKey.DELETE_TOPICS,
    ApiKey.CREATE_PARTITIONS,
    ApiKey.DELETE_RECORDS,
    ApiKey.DESCRIBE_CONFIGS,
    ApiKey.ALTER_CONFIGS,
    ApiKey.INCREMENTAL_ALTER_CONFIGS,
    ApiKey.API_VERSIONS,
    ApiKey.DESCRIBE_CLUSTER,
    ApiKey.WRITE_TXN_MARKERS,
    ApiKey.DESCRIBE_PRODUCERS,
}
"""The APIs :func:`error_answer` can refuse."""


def error_answer(
    request: Request, error: ErrorCode, node: tuple[int, str, int]
) -> ResponseBody:
    """``request`` refused with ``error``; ``node`` (id, host, port) is this broker, which a
    Metadata answer must still list. Raises ValueError for an API not in :data:`ANSWERABLE`."""
    if request.api_key in GROUP_APIS:
        return group_error_response(request, error)
    if request.api_key in TXN_APIS:
        return txn_error_response(request, error)
    body = request.body
    v = request.api_version
    match body:
        case m.ProduceRequest():
            return m.ProduceResponse(
                responses=[
                    m.ProduceTopicResponse(
                        name=t.name,
                        partition_responses=[
                            m.ProducePartitionResponse(
                                index=p.index, error_code=error, base_offset=-1
                            )
                            for p in t.partition_data
                        ],
                    )
                    for t in body.topic_data
                ]
            )
        case m.FetchRequest():
            return m.FetchResponse(
                error_code=error,  # and per partition, as Kafka's own error answer has it
                responses=[
                    m.FetchableTopicResponse(
                        topic=t.topic,
                        topic_id=t.topic_id,
                        partitions=[_failed_fetch(p.partition, error) for p in t.partitions],
                    )
                    for t in body.topics
                ]
            )
        case m.ListOffsetsRequest():
            return m.ListOffsetsResponse(
                topics=[
                    m.ListOffsetsTopicResponse(
                        name=t.name,
                        partitions=[
                            m.ListOffsetsPartitionResponse(
                                partition_index=p.partition_index, error_code=error
                            )
                            for p in t.partitions
                        ],
                    )
                    for t in body.topics
                ]
            )
        case m.MetadataRequest():
            node_id, host, port = node
            return m.MetadataResponse(
                brokers=[m.MetadataResponseBroker(node_id=node_id, host=host, port=port)],
                controller_id=node_id,
                topics=[
                    m.MetadataResponseTopic(
                        error_code=error,
                        # named by id (v10+): a name is only nullable in answers from v12
                        name=t.name if t.name is not None or v >= 12 else "",
                        topic_id=t.topic_id,
                    )
                    for t in body.topics or []
                ],
            )
        case m.InitProducerIdRequest():
            return m.InitProducerIdResponse(error_code=error, producer_id=-1, producer_epoch=-1)
        case m.CreateTopicsRequest():
            return m.CreateTopicsResponse(
                topics=[
                    m.CreatableTopicResult(name=t.name, error_code=error, configs=None)
                    for t in body.topics
                ]
            )
        case m.DeleteTopicsRequest():
            if v >= 6:
                results = [
                    m.DeletableTopicResult(name=t.name, topic_id=t.topic_id, error_code=error)
                    for t in body.topics
                ]
            else:
                results = [
                    m.DeletableTopicResult(name=n, error_code=error) for n in body.topic_names
                ]
            return m.DeleteTopicsResponse(responses=results)
        case m.CreatePartitionsRequest():
            return m.CreatePartitionsResponse(
                results=[
                    m.CreatePartitionsTopicResult(name=t.name, error_code=error)
                    for t in body.topics
                ]
            )
        case m.DeleteRecordsRequest():
            return m.DeleteRecordsResponse(
                topics=[
                    m.DeleteRecordsTopicResult(
                        name=t.name,
                        partitions=[
                            m.DeleteRecordsPartitionResult(
                                partition_index=p.partition_index,
                                low_watermark=-1,
                                error_code=error,
                            )
                            for p in t.partitions
                        ],
                    )
                    for t in body.topics
                ]
            )
        case m.DescribeConfigsRequest():
            return m.DescribeConfigsResponse(
                results=[
                    m.DescribeConfigsResult(
                        error_code=error,
                        resource_type=r.resource_type,
                        resource_name=r.resource_name,
                    )
                    for r in body.resources
                ]
            )
        case m.AlterConfigsRequest():
            return m.AlterConfigsResponse(responses=_refused_resources(body.resources, error))
        case m.IncrementalAlterConfigsRequest():
            return m.IncrementalAlterConfigsResponse(
                responses=_refused_resources(body.resources, error)
            )
        case m.ApiVersionsRequest():
            return m.ApiVersionsResponse(error_code=error)
        case m.DescribeClusterRequest():
            return m.DescribeClusterResponse(error_code=error)
        case m.WriteTxnMarkersRequest():
            return m.WriteTxnMarkersResponse(
                markers=[
                    m.WritableTxnMarkerResult(
                        producer_id=marker.producer_id,
                        topics=[
                            m.WritableTxnMarkerTopicResult(
                                name=t.name,
                                partitions=[
                                    m.WritableTxnMarkerPartitionResult(
                                        partition_index=p, error_code=error
                                    )
                                    for p in t.partition_indexes
                                ],
                            )
                            for t in marker.topics
                        ],
                    )
                    for marker in body.markers
                ]
            )
        case m.DescribeProducersRequest():
            return m.DescribeProducersResponse(
                topics=[
                    m.DescribeProducersTopicResponse(
                        name=t.name,
                        partitions=[
                            m.DescribeProducersPartitionResponse(
                                partition_index=p, error_code=error
                            )
                            for p in t.partition_indexes
                        ],
                    )
                    for t in body.topics
                ]
            )
    raise ValueError(f"no error answer for {ApiKey(request.api_key).name}")


def _failed_fetch(partition: int, error: ErrorCode) -> m.FetchPartitionData:
    return m.FetchPartitionData(
        partition_index=partition,
        error_code=error,
        high_watermark=-1,
        last_stable_offset=-1,
        log_start_offset=-1,
        records=b"",  # empty, not null: librdkafka cannot parse a null record set
    )


def _refused_resources(
    resources: list[m.AlterConfigsResource] | list[m.IncrementalAlterConfigsResource],
    error: ErrorCode,
) -> list[m.AlterConfigsResourceResponse]:
    return [
        m.AlterConfigsResourceResponse(
            error_code=error, resource_type=r.resource_type, resource_name=r.resource_name
        )
        for r in resources
    ]

"""Typed request and response bodies for every API sluice speaks, with their wire schemas.

Each field states its Kafka type and version ranges exactly as Apache Kafka's message JSON
(clients/src/main/resources/common/message/*.json) does, so a per-version difference is one
argument here rather than a branch in code. Field names are the JSON names in snake_case.
Versions outside sluice's supported ranges are kept where the JSON has them (they cost nothing
and make the declarations easy to check against the JSON), but only the ranges in
:mod:`sluice.protocol.api_versions` are tested and accepted.
"""

from __future__ import annotations

import uuid
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from sluice.dataclass import dataclass
from sluice.protocol.primitives import Buffer
from sluice.protocol.schema import (
    BOOL,
    INT8,
    INT16,
    INT32,
    INT64,
    RECORDS,
    STRING,
    UUID,
    Records,
    arr,
    f,
    message,
)

if TYPE_CHECKING:  # at run time, _lazy_message below
    from sluice.protocol.admin_messages import *  # noqa: F403
    from sluice.protocol.group_messages import *  # noqa: F403

_INT32_MIN = -(2**31)


class ApiKey(IntEnum):
    PRODUCE = 0
    FETCH = 1
    LIST_OFFSETS = 2
    METADATA = 3
    OFFSET_COMMIT = 8
    OFFSET_FETCH = 9
    FIND_COORDINATOR = 10
    JOIN_GROUP = 11
    HEARTBEAT = 12
    LEAVE_GROUP = 13
    SYNC_GROUP = 14
    DESCRIBE_GROUPS = 15
    LIST_GROUPS = 16
    SASL_HANDSHAKE = 17
    API_VERSIONS = 18
    CREATE_TOPICS = 19
    DELETE_TOPICS = 20
    DELETE_RECORDS = 21
    INIT_PRODUCER_ID = 22
    ADD_PARTITIONS_TO_TXN = 24
    ADD_OFFSETS_TO_TXN = 25
    END_TXN = 26
    WRITE_TXN_MARKERS = 27
    TXN_OFFSET_COMMIT = 28
    DESCRIBE_CONFIGS = 32
    ALTER_CONFIGS = 33
    DESCRIBE_LOG_DIRS = 35
    SASL_AUTHENTICATE = 36
    CREATE_PARTITIONS = 37
    DELETE_GROUPS = 42
    ELECT_LEADERS = 43
    INCREMENTAL_ALTER_CONFIGS = 44
    ALTER_PARTITION_REASSIGNMENTS = 45
    LIST_PARTITION_REASSIGNMENTS = 46
    OFFSET_DELETE = 47
    DESCRIBE_CLUSTER = 60
    DESCRIBE_PRODUCERS = 61
    DESCRIBE_TRANSACTIONS = 65
    LIST_TRANSACTIONS = 66
    CONSUMER_GROUP_HEARTBEAT = 68


# ---- Produce (0) ---------------------------------------------------------------------------------


@message
class ProducePartitionData:
    index: int = f(INT32)
    records: Buffer | None = f(RECORDS, nullable="0+")


@message
class ProduceTopicData:
    name: str = f(STRING)
    partition_data: list[ProducePartitionData] = f(arr(ProducePartitionData))


@message
class ProduceRequest:
    transactional_id: str | None = f(STRING, "3+", nullable="3+", default=None)
    acks: int = f(INT16)
    timeout_ms: int = f(INT32)
    topic_data: list[ProduceTopicData] = f(arr(ProduceTopicData))


@message
class BatchIndexAndErrorMessage:
    batch_index: int = f(INT32, "8+")
    batch_index_error_message: str | None = f(STRING, "8+", nullable="8+", default=None)


@message
class LeaderIdAndEpoch:
    leader_id: int = f(INT32, default=-1)
    leader_epoch: int = f(INT32, default=-1)


@message
class NodeEndpoint:
    node_id: int = f(INT32)
    host: str = f(STRING)
    port: int = f(INT32)
    rack: str | None = f(STRING, nullable="0+", default=None)


@message
class ProducePartitionResponse:
    index: int = f(INT32)
    error_code: int = f(INT16)
    base_offset: int = f(INT64)
    log_append_time_ms: int = f(INT64, "2+", default=-1)
    log_start_offset: int = f(INT64, "5+", default=-1)
    record_errors: list[BatchIndexAndErrorMessage] = f(arr(BatchIndexAndErrorMessage), "8+")
    error_message: str | None = f(STRING, "8+", nullable="8+", default=None)
    current_leader: LeaderIdAndEpoch | None = f(LeaderIdAndEpoch, "10+", tag=0)


@message
class ProduceTopicResponse:
    name: str = f(STRING)
    partition_responses: list[ProducePartitionResponse] = f(arr(ProducePartitionResponse))


@message
class ProduceResponse:
    responses: list[ProduceTopicResponse] = f(arr(ProduceTopicResponse))
    throttle_time_ms: int = f(INT32, "1+")
    node_endpoints: list[NodeEndpoint] = f(arr(NodeEndpoint), "10+", tag=0)


# ---- Fetch (1) -----------------------------------------------------------------------------------


@message
class ReplicaState:
    replica_id: int = f(INT32, default=-1)
    replica_epoch: int = f(INT64, default=-1)


@message
class FetchPartition:
    partition: int = f(INT32)
    current_leader_epoch: int = f(INT32, "9+", default=-1)
    fetch_offset: int = f(INT64)
    last_fetched_epoch: int = f(INT32, "12+", default=-1)
    log_start_offset: int = f(INT64, "5+", default=-1)
    partition_max_bytes: int = f(INT32)
    replica_directory_id: uuid.UUID = f(UUID, "17+", tag=0)


@message
class FetchTopic:
    topic: str = f(STRING, "0-12")
    topic_id: uuid.UUID = f(UUID, "13+")
    partitions: list[FetchPartition] = f(arr(FetchPartition))


@message
class ForgottenTopic:
    topic: str = f(STRING, "7-12")
    topic_id: uuid.UUID = f(UUID, "13+")
    partitions: list[int] = f(arr(INT32), "7+")


@message
class FetchRequest:
    cluster_id: str | None = f(STRING, "12+", nullable="12+", tag=0, default=None)
    replica_id: int = f(INT32, "0-14", default=-1)
    replica_state: ReplicaState | None = f(ReplicaState, "15+", tag=1)
    max_wait_ms: int = f(INT32)
    min_bytes: int = f(INT32)
    max_bytes: int = f(INT32, "3+", default=0x7FFFFFFF)
    isolation_level: int = f(INT8, "4+", default=0)
    session_id: int = f(INT32, "7+", default=0)
    session_epoch: int = f(INT32, "7+", default=-1)
    topics: list[FetchTopic] = f(arr(FetchTopic))
    forgotten_topics_data: list[ForgottenTopic] = f(arr(ForgottenTopic), "7+")
    rack_id: str = f(STRING, "11+", default="")


@message
class EpochEndOffset:
    epoch: int = f(INT32, default=-1)
    end_offset: int = f(INT64, default=-1)


@message
class SnapshotId:
    end_offset: int = f(INT64, default=-1)
    epoch: int = f(INT32, default=-1)


@message
class AbortedTransaction:
    producer_id: int = f(INT64, "4+")
    first_offset: int = f(INT64, "4+")


@message
class FetchPartitionData:
    partition_index: int = f(INT32)
    error_code: int = f(INT16)
    high_watermark: int = f(INT64)
    last_stable_offset: int = f(INT64, "4+", default=-1)
    log_start_offset: int = f(INT64, "5+", default=-1)
    diverging_epoch: EpochEndOffset | None = f(EpochEndOffset, "12+", tag=0)
    current_leader: LeaderIdAndEpoch | None = f(LeaderIdAndEpoch, "12+", tag=1)
    snapshot_id: SnapshotId | None = f(SnapshotId, "12+", tag=2)
    aborted_transactions: list[AbortedTransaction] | None = f(
        arr(AbortedTransaction), "4+", nullable="4+"
    )
    preferred_read_replica: int = f(INT32, "11+", default=-1)
    records: Records | None = f(RECORDS, nullable="0+")


@message
class FetchableTopicResponse:
    topic: str = f(STRING, "0-12")
    topic_id: uuid.UUID = f(UUID, "13+")
    partitions: list[FetchPartitionData] = f(arr(FetchPartitionData))


@message
class FetchResponse:
    throttle_time_ms: int = f(INT32, "1+")
    error_code: int = f(INT16, "7+")
    session_id: int = f(INT32, "7+", default=0)
    responses: list[FetchableTopicResponse] = f(arr(FetchableTopicResponse))
    node_endpoints: list[NodeEndpoint] = f(arr(NodeEndpoint), "16+", tag=0)


# ---- ListOffsets (2) -----------------------------------------------------------------------------


@message
class ListOffsetsPartition:
    partition_index: int = f(INT32)
    current_leader_epoch: int = f(INT32, "4+", default=-1)
    timestamp: int = f(INT64)
    max_num_offsets: int = f(INT32, "0", default=1)


@message
class ListOffsetsTopic:
    name: str = f(STRING)
    partitions: list[ListOffsetsPartition] = f(arr(ListOffsetsPartition))


@message
class ListOffsetsRequest:
    replica_id: int = f(INT32, default=-1)
    isolation_level: int = f(INT8, "2+")
    topics: list[ListOffsetsTopic] = f(arr(ListOffsetsTopic))
    timeout_ms: int = f(INT32, "10+")


@message
class ListOffsetsPartitionResponse:
    partition_index: int = f(INT32)
    error_code: int = f(INT16)
    old_style_offsets: list[int] = f(arr(INT64), "0")
    timestamp: int = f(INT64, "1+", default=-1)
    offset: int = f(INT64, "1+", default=-1)
    leader_epoch: int = f(INT32, "4+", default=-1)


@message
class ListOffsetsTopicResponse:
    name: str = f(STRING)
    partitions: list[ListOffsetsPartitionResponse] = f(arr(ListOffsetsPartitionResponse))


@message
class ListOffsetsResponse:
    throttle_time_ms: int = f(INT32, "2+")
    topics: list[ListOffsetsTopicResponse] = f(arr(ListOffsetsTopicResponse))


# ---- Metadata (3) --------------------------------------------------------------------------------


@message
class MetadataRequestTopic:
    topic_id: uuid.UUID = f(UUID, "10+")
    name: str | None = f(STRING, nullable="10+")


@message
class MetadataRequest:
    topics: list[MetadataRequestTopic] | None = f(arr(MetadataRequestTopic), nullable="1+")
    """None asks for every topic (v1+); an empty list for none."""
    allow_auto_topic_creation: bool = f(BOOL, "4+", default=True)
    include_cluster_authorized_operations: bool = f(BOOL, "8-10")
    include_topic_authorized_operations: bool = f(BOOL, "8+")


@message
class MetadataResponseBroker:
    node_id: int = f(INT32)
    host: str = f(STRING)
    port: int = f(INT32)
    rack: str | None = f(STRING, "1+", nullable="1+", default=None)


@message
class MetadataResponsePartition:
    error_code: int = f(INT16)
    partition_index: int = f(INT32)
    leader_id: int = f(INT32)
    leader_epoch: int = f(INT32, "7+", default=-1)
    replica_nodes: list[int] = f(arr(INT32))
    isr_nodes: list[int] = f(arr(INT32))
    offline_replicas: list[int] = f(arr(INT32), "5+")


@message
class MetadataResponseTopic:
    error_code: int = f(INT16)
    name: str | None = f(STRING, nullable="12+")
    topic_id: uuid.UUID = f(UUID, "10+")
    is_internal: bool = f(BOOL, "1+", default=False)
    partitions: list[MetadataResponsePartition] = f(arr(MetadataResponsePartition))
    topic_authorized_operations: int = f(INT32, "8+", default=_INT32_MIN)


@message
class MetadataResponse:
    throttle_time_ms: int = f(INT32, "3+")
    brokers: list[MetadataResponseBroker] = f(arr(MetadataResponseBroker))
    cluster_id: str | None = f(STRING, "2+", nullable="2+", default=None)
    controller_id: int = f(INT32, "1+", default=-1)
    topics: list[MetadataResponseTopic] = f(arr(MetadataResponseTopic))
    cluster_authorized_operations: int = f(INT32, "8-10", default=_INT32_MIN)


# ---- SaslHandshake (17), ApiVersions (18) --------------------------------------------------------


@message
class SaslHandshakeRequest:
    mechanism: str = f(STRING)


@message
class SaslHandshakeResponse:
    error_code: int = f(INT16)
    mechanisms: list[str] = f(arr(STRING))


@message
class ApiVersionsRequest:
    client_software_name: str = f(STRING, "3+")
    client_software_version: str = f(STRING, "3+")


@message
class ApiVersion:
    api_key: int = f(INT16)
    min_version: int = f(INT16)
    max_version: int = f(INT16)


@message
class SupportedFeatureKey:
    name: str = f(STRING, "3+")
    min_version: int = f(INT16, "3+")
    max_version: int = f(INT16, "3+")


@message
class FinalizedFeatureKey:
    name: str = f(STRING, "3+")
    max_version_level: int = f(INT16, "3+")
    min_version_level: int = f(INT16, "3+")


@message
class ApiVersionsResponse:
    error_code: int = f(INT16)
    api_keys: list[ApiVersion] = f(arr(ApiVersion))
    throttle_time_ms: int = f(INT32, "1+")
    supported_features: list[SupportedFeatureKey] = f(arr(SupportedFeatureKey), "3+", tag=0)
    finalized_features_epoch: int = f(INT64, "3+", tag=1, default=-1)
    finalized_features: list[FinalizedFeatureKey] = f(arr(FinalizedFeatureKey), "3+", tag=2)
    zk_migration_ready: bool = f(BOOL, "3+", tag=3, default=False)


# ---- CreateTopics (19), DeleteTopics (20) --------------------------------------------------------


@message
class CreatableReplicaAssignment:
    partition_index: int = f(INT32)
    broker_ids: list[int] = f(arr(INT32))


@message
class CreatableTopicConfig:
    name: str = f(STRING)
    value: str | None = f(STRING, nullable="0+")


@message
class CreatableTopic:
    name: str = f(STRING)
    num_partitions: int = f(INT32)
    """-1: the broker default (v4+)."""
    replication_factor: int = f(INT16)
    assignments: list[CreatableReplicaAssignment] = f(arr(CreatableReplicaAssignment))
    configs: list[CreatableTopicConfig] = f(arr(CreatableTopicConfig))


@message
class CreateTopicsRequest:
    topics: list[CreatableTopic] = f(arr(CreatableTopic))
    timeout_ms: int = f(INT32, default=60000)
    validate_only: bool = f(BOOL, "1+", default=False)


@message
class CreatableTopicConfigs:
    name: str = f(STRING, "5+")
    value: str | None = f(STRING, "5+", nullable="5+")
    read_only: bool = f(BOOL, "5+")
    config_source: int = f(INT8, "5+", default=-1)
    is_sensitive: bool = f(BOOL, "5+")


@message
class CreatableTopicResult:
    name: str = f(STRING)
    topic_id: uuid.UUID = f(UUID, "7+")
    error_code: int = f(INT16)
    error_message: str | None = f(STRING, "1+", nullable="0+")
    topic_config_error_code: int = f(INT16, "5+", tag=0)
    num_partitions: int = f(INT32, "5+", default=-1)
    replication_factor: int = f(INT16, "5+", default=-1)
    configs: list[CreatableTopicConfigs] | None = f(arr(CreatableTopicConfigs), "5+", nullable="5+")


@message
class CreateTopicsResponse:
    throttle_time_ms: int = f(INT32, "2+")
    topics: list[CreatableTopicResult] = f(arr(CreatableTopicResult))


@message
class DeleteTopicState:
    name: str | None = f(STRING, "6+", nullable="6+", default=None)
    topic_id: uuid.UUID = f(UUID, "6+")


@message
class DeleteTopicsRequest:
    topics: list[DeleteTopicState] = f(arr(DeleteTopicState), "6+")
    topic_names: list[str] = f(arr(STRING), "0-5")
    timeout_ms: int = f(INT32)


@message
class DeletableTopicResult:
    name: str | None = f(STRING, nullable="6+")
    topic_id: uuid.UUID = f(UUID, "6+")
    error_code: int = f(INT16)
    error_message: str | None = f(STRING, "5+", nullable="5+", default=None)


@message
class DeleteTopicsResponse:
    throttle_time_ms: int = f(INT32, "1+")
    responses: list[DeletableTopicResult] = f(arr(DeletableTopicResult))


# ---- DeleteRecords (21), InitProducerId (22) -----------------------------------------------------


@message
class DeleteRecordsPartition:
    partition_index: int = f(INT32)
    offset: int = f(INT64)


@message
class DeleteRecordsTopic:
    name: str = f(STRING)
    partitions: list[DeleteRecordsPartition] = f(arr(DeleteRecordsPartition))


@message
class DeleteRecordsRequest:
    topics: list[DeleteRecordsTopic] = f(arr(DeleteRecordsTopic))
    timeout_ms: int = f(INT32)


@message
class DeleteRecordsPartitionResult:
    partition_index: int = f(INT32)
    low_watermark: int = f(INT64)
    error_code: int = f(INT16)


@message
class DeleteRecordsTopicResult:
    name: str = f(STRING)
    partitions: list[DeleteRecordsPartitionResult] = f(arr(DeleteRecordsPartitionResult))


@message
class DeleteRecordsResponse:
    throttle_time_ms: int = f(INT32)
    topics: list[DeleteRecordsTopicResult] = f(arr(DeleteRecordsTopicResult))


@message
class InitProducerIdRequest:
    transactional_id: str | None = f(STRING, nullable="0+", default=None)
    transaction_timeout_ms: int = f(INT32)
    producer_id: int = f(INT64, "3+", default=-1)
    producer_epoch: int = f(INT16, "3+", default=-1)


@message
class InitProducerIdResponse:
    throttle_time_ms: int = f(INT32)
    error_code: int = f(INT16)
    producer_id: int = f(INT64, default=-1)
    producer_epoch: int = f(INT16)


# ---- the admin APIs' enumerations (their messages are in admin_messages) ----------------------


class ConfigResourceType(IntEnum):
    UNKNOWN = 0
    TOPIC = 2
    BROKER = 4
    BROKER_LOGGER = 8


class ConfigOperation(IntEnum):
    SET = 0
    DELETE = 1
    APPEND = 2
    SUBTRACT = 3


class ElectionType(IntEnum):
    PREFERRED = 0
    UNCLEAN = 1


class EndpointType(IntEnum):
    UNKNOWN = 0
    BROKER = 1
    CONTROLLER = 2


# ---- the registry --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApiSpec:
    key: ApiKey
    request_class: str
    response_class: str
    """The classes by name: a group or admin API's are built on first use (:func:`_lazy_message`)."""
    flexible_from: int | None
    """First flexible version (compact encodings, tagged fields, header v2/v1); None: never."""

    @property
    def request(self) -> type:
        found: type | None = globals().get(self.request_class)
        return found if found is not None else _lazy_message(self.request_class)

    @property
    def response(self) -> type:
        found: type | None = globals().get(self.response_class)
        return found if found is not None else _lazy_message(self.response_class)

    def flexible(self, version: int) -> bool:
        return self.flexible_from is not None and version >= self.flexible_from


APIS: dict[int, ApiSpec] = {
    s.key: s
    for s in (
        ApiSpec(ApiKey.PRODUCE, "ProduceRequest", "ProduceResponse", 9),
        ApiSpec(ApiKey.FETCH, "FetchRequest", "FetchResponse", 12),
        ApiSpec(ApiKey.LIST_OFFSETS, "ListOffsetsRequest", "ListOffsetsResponse", 6),
        ApiSpec(ApiKey.METADATA, "MetadataRequest", "MetadataResponse", 9),
        ApiSpec(ApiKey.OFFSET_COMMIT, "OffsetCommitRequest", "OffsetCommitResponse", 8),
        ApiSpec(ApiKey.OFFSET_FETCH, "OffsetFetchRequest", "OffsetFetchResponse", 6),
        ApiSpec(ApiKey.FIND_COORDINATOR, "FindCoordinatorRequest", "FindCoordinatorResponse", 3),
        ApiSpec(ApiKey.JOIN_GROUP, "JoinGroupRequest", "JoinGroupResponse", 6),
        ApiSpec(ApiKey.HEARTBEAT, "HeartbeatRequest", "HeartbeatResponse", 4),
        ApiSpec(ApiKey.LEAVE_GROUP, "LeaveGroupRequest", "LeaveGroupResponse", 4),
        ApiSpec(ApiKey.SYNC_GROUP, "SyncGroupRequest", "SyncGroupResponse", 4),
        ApiSpec(ApiKey.DESCRIBE_GROUPS, "DescribeGroupsRequest", "DescribeGroupsResponse", 5),
        ApiSpec(ApiKey.LIST_GROUPS, "ListGroupsRequest", "ListGroupsResponse", 3),
        ApiSpec(ApiKey.SASL_HANDSHAKE, "SaslHandshakeRequest", "SaslHandshakeResponse", None),
        ApiSpec(ApiKey.API_VERSIONS, "ApiVersionsRequest", "ApiVersionsResponse", 3),
        ApiSpec(ApiKey.CREATE_TOPICS, "CreateTopicsRequest", "CreateTopicsResponse", 5),
        ApiSpec(ApiKey.DELETE_TOPICS, "DeleteTopicsRequest", "DeleteTopicsResponse", 4),
        ApiSpec(ApiKey.DELETE_RECORDS, "DeleteRecordsRequest", "DeleteRecordsResponse", 2),
        ApiSpec(ApiKey.INIT_PRODUCER_ID, "InitProducerIdRequest", "InitProducerIdResponse", 2),
        ApiSpec(
            ApiKey.ADD_PARTITIONS_TO_TXN,
            "AddPartitionsToTxnRequest",
            "AddPartitionsToTxnResponse",
            3,
        ),
        ApiSpec(ApiKey.ADD_OFFSETS_TO_TXN, "AddOffsetsToTxnRequest", "AddOffsetsToTxnResponse", 3),
        ApiSpec(ApiKey.END_TXN, "EndTxnRequest", "EndTxnResponse", 3),
        ApiSpec(ApiKey.WRITE_TXN_MARKERS, "WriteTxnMarkersRequest", "WriteTxnMarkersResponse", 1),
        ApiSpec(ApiKey.TXN_OFFSET_COMMIT, "TxnOffsetCommitRequest", "TxnOffsetCommitResponse", 3),
        ApiSpec(ApiKey.DESCRIBE_CONFIGS, "DescribeConfigsRequest", "DescribeConfigsResponse", 4),
        ApiSpec(ApiKey.ALTER_CONFIGS, "AlterConfigsRequest", "AlterConfigsResponse", 2),
        ApiSpec(ApiKey.SASL_AUTHENTICATE, "SaslAuthenticateRequest", "SaslAuthenticateResponse", 2),
        ApiSpec(ApiKey.CREATE_PARTITIONS, "CreatePartitionsRequest", "CreatePartitionsResponse", 2),
        ApiSpec(ApiKey.DELETE_GROUPS, "DeleteGroupsRequest", "DeleteGroupsResponse", 2),
        ApiSpec(
            ApiKey.INCREMENTAL_ALTER_CONFIGS,
            "IncrementalAlterConfigsRequest",
            "IncrementalAlterConfigsResponse",
            1,
        ),
        ApiSpec(ApiKey.OFFSET_DELETE, "OffsetDeleteRequest", "OffsetDeleteResponse", None),
        ApiSpec(ApiKey.DESCRIBE_LOG_DIRS, "DescribeLogDirsRequest", "DescribeLogDirsResponse", 2),
        ApiSpec(ApiKey.ELECT_LEADERS, "ElectLeadersRequest", "ElectLeadersResponse", 2),
        ApiSpec(
            ApiKey.ALTER_PARTITION_REASSIGNMENTS,
            "AlterPartitionReassignmentsRequest",
            "AlterPartitionReassignmentsResponse",
            0,
        ),
        ApiSpec(
            ApiKey.LIST_PARTITION_REASSIGNMENTS,
            "ListPartitionReassignmentsRequest",
            "ListPartitionReassignmentsResponse",
            0,
        ),
        ApiSpec(ApiKey.DESCRIBE_CLUSTER, "DescribeClusterRequest", "DescribeClusterResponse", 0),
        ApiSpec(
            ApiKey.DESCRIBE_PRODUCERS, "DescribeProducersRequest", "DescribeProducersResponse", 0
        ),
        ApiSpec(
            ApiKey.DESCRIBE_TRANSACTIONS,
            "DescribeTransactionsRequest",
            "DescribeTransactionsResponse",
            0,
        ),
        ApiSpec(ApiKey.LIST_TRANSACTIONS, "ListTransactionsRequest", "ListTransactionsResponse", 0),
        ApiSpec(
            ApiKey.CONSUMER_GROUP_HEARTBEAT,
            "ConsumerGroupHeartbeatRequest",
            "ConsumerGroupHeartbeatResponse",
            0,
        ),
    )
}


def _lazy_message(name: str) -> Any:
    """The group APIs' messages (:mod:`sluice.protocol.group_messages`), then the admin and
    transaction APIs' (:mod:`sluice.protocol.admin_messages`), each module imported the first
    time a name is looked up here, the name then kept as this module's own."""
    if not name.startswith("__"):  # the import machinery's and tools' probes never import them
        from sluice.protocol import group_messages

        found: Any = getattr(group_messages, name, None) if name in group_messages.__all__ else None
        if found is None:
            from sluice.protocol import admin_messages

            if name in admin_messages.__all__:
                found = getattr(admin_messages, name)
        if found is not None:
            globals()[name] = found
            return found
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if not TYPE_CHECKING:  # mypy sees the names themselves (imported above), so a misspelt one fails
    __getattr__ = _lazy_message

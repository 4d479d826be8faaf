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

from sluice.dataclass import dataclass
from sluice.protocol.primitives import Buffer
from sluice.protocol.schema import (
    BOOL,
    BYTES,
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


# ---- OffsetCommit (8) ----------------------------------------------------------------------------


@message
class OffsetCommitRequestPartition:
    partition_index: int = f(INT32)
    committed_offset: int = f(INT64)
    committed_leader_epoch: int = f(INT32, "6+", default=-1)
    commit_timestamp: int = f(INT64, "1", default=-1)
    committed_metadata: str | None = f(STRING, nullable="0+")


@message
class OffsetCommitRequestTopic:
    name: str = f(STRING)
    partitions: list[OffsetCommitRequestPartition] = f(arr(OffsetCommitRequestPartition))


@message
class OffsetCommitRequest:
    group_id: str = f(STRING)
    generation_id_or_member_epoch: int = f(INT32, "1+", default=-1)
    member_id: str = f(STRING, "1+")
    group_instance_id: str | None = f(STRING, "7+", nullable="7+", default=None)
    retention_time_ms: int = f(INT64, "2-4", default=-1)
    topics: list[OffsetCommitRequestTopic] = f(arr(OffsetCommitRequestTopic))


@message
class OffsetCommitResponsePartition:
    partition_index: int = f(INT32)
    error_code: int = f(INT16)


@message
class OffsetCommitResponseTopic:
    name: str = f(STRING)
    partitions: list[OffsetCommitResponsePartition] = f(arr(OffsetCommitResponsePartition))


@message
class OffsetCommitResponse:
    throttle_time_ms: int = f(INT32, "3+")
    topics: list[OffsetCommitResponseTopic] = f(arr(OffsetCommitResponseTopic))


# ---- OffsetFetch (9) -----------------------------------------------------------------------------


@message
class OffsetFetchRequestTopic:
    name: str = f(STRING)
    partition_indexes: list[int] = f(arr(INT32))


@message
class OffsetFetchRequestGroup:
    group_id: str = f(STRING, "8+")
    member_id: str | None = f(STRING, "9+", nullable="9+", default=None)
    member_epoch: int = f(INT32, "9+", default=-1)
    topics: list[OffsetFetchRequestTopic] | None = f(
        arr(OffsetFetchRequestTopic), "8+", nullable="8+"
    )


@message
class OffsetFetchRequest:
    group_id: str = f(STRING, "0-7")
    topics: list[OffsetFetchRequestTopic] | None = f(
        arr(OffsetFetchRequestTopic), "0-7", nullable="2-7"
    )
    """v0-7: None (v2+) asks for every committed partition of ``group_id``."""
    groups: list[OffsetFetchRequestGroup] = f(arr(OffsetFetchRequestGroup), "8+")
    require_stable: bool = f(BOOL, "7+", default=False)


@message
class OffsetFetchResponsePartition:
    partition_index: int = f(INT32)
    committed_offset: int = f(INT64)
    committed_leader_epoch: int = f(INT32, "5+", default=-1)
    metadata: str | None = f(STRING, nullable="0+")
    error_code: int = f(INT16)


@message
class OffsetFetchResponseTopic:
    name: str = f(STRING)
    partitions: list[OffsetFetchResponsePartition] = f(arr(OffsetFetchResponsePartition))


@message
class OffsetFetchResponseGroup:
    group_id: str = f(STRING, "8+")
    topics: list[OffsetFetchResponseTopic] = f(arr(OffsetFetchResponseTopic), "8+")
    error_code: int = f(INT16, "8+", default=0)


@message
class OffsetFetchResponse:
    throttle_time_ms: int = f(INT32, "3+")
    topics: list[OffsetFetchResponseTopic] = f(arr(OffsetFetchResponseTopic), "0-7")
    error_code: int = f(INT16, "2-7", default=0)
    groups: list[OffsetFetchResponseGroup] = f(arr(OffsetFetchResponseGroup), "8+")


# ---- FindCoordinator (10) ------------------------------------------------------------------------


@message
class FindCoordinatorRequest:
    key: str = f(STRING, "0-3")
    key_type: int = f(INT8, "1+", default=0)
    """0 group, 1 transaction."""
    coordinator_keys: list[str] = f(arr(STRING), "4+")


@message
class Coordinator:
    key: str = f(STRING, "4+")
    node_id: int = f(INT32, "4+")
    host: str = f(STRING, "4+")
    port: int = f(INT32, "4+")
    error_code: int = f(INT16, "4+")
    error_message: str | None = f(STRING, "4+", nullable="4+")


@message
class FindCoordinatorResponse:
    throttle_time_ms: int = f(INT32, "1+")
    error_code: int = f(INT16, "0-3")
    error_message: str | None = f(STRING, "1-3", nullable="1-3")
    node_id: int = f(INT32, "0-3")
    host: str = f(STRING, "0-3")
    port: int = f(INT32, "0-3")
    coordinators: list[Coordinator] = f(arr(Coordinator), "4+")


# ---- JoinGroup (11) ------------------------------------------------------------------------------


@message
class JoinGroupRequestProtocol:
    name: str = f(STRING)
    metadata: Buffer = f(BYTES)


@message
class JoinGroupRequest:
    group_id: str = f(STRING)
    session_timeout_ms: int = f(INT32)
    rebalance_timeout_ms: int = f(INT32, "1+", default=-1)
    member_id: str = f(STRING)
    group_instance_id: str | None = f(STRING, "5+", nullable="5+", default=None)
    protocol_type: str = f(STRING)
    protocols: list[JoinGroupRequestProtocol] = f(arr(JoinGroupRequestProtocol))
    reason: str | None = f(STRING, "8+", nullable="8+", default=None)


@message
class JoinGroupResponseMember:
    member_id: str = f(STRING)
    group_instance_id: str | None = f(STRING, "5+", nullable="5+", default=None)
    metadata: Buffer = f(BYTES)


@message
class JoinGroupResponse:
    throttle_time_ms: int = f(INT32, "2+")
    error_code: int = f(INT16)
    generation_id: int = f(INT32, default=-1)
    protocol_type: str | None = f(STRING, "7+", nullable="7+", default=None)
    protocol_name: str | None = f(STRING, nullable="7+")
    leader: str = f(STRING)
    skip_assignment: bool = f(BOOL, "9+", default=False)
    member_id: str = f(STRING)
    members: list[JoinGroupResponseMember] = f(arr(JoinGroupResponseMember))


# ---- Heartbeat (12), LeaveGroup (13), SyncGroup (14) ---------------------------------------------


@message
class HeartbeatRequest:
    group_id: str = f(STRING)
    generation_id: int = f(INT32)
    member_id: str = f(STRING)
    group_instance_id: str | None = f(STRING, "3+", nullable="3+", default=None)


@message
class HeartbeatResponse:
    throttle_time_ms: int = f(INT32, "1+")
    error_code: int = f(INT16)


@message
class MemberIdentity:
    member_id: str = f(STRING, "3+")
    group_instance_id: str | None = f(STRING, "3+", nullable="3+", default=None)
    reason: str | None = f(STRING, "5+", nullable="5+", default=None)


@message
class LeaveGroupRequest:
    group_id: str = f(STRING)
    member_id: str = f(STRING, "0-2")
    members: list[MemberIdentity] = f(arr(MemberIdentity), "3+")


@message
class LeaveGroupMemberResponse:
    member_id: str = f(STRING, "3+")
    group_instance_id: str | None = f(STRING, "3+", nullable="3+")
    error_code: int = f(INT16, "3+")


@message
class LeaveGroupResponse:
    throttle_time_ms: int = f(INT32, "1+")
    error_code: int = f(INT16)
    members: list[LeaveGroupMemberResponse] = f(arr(LeaveGroupMemberResponse), "3+")


@message
class SyncGroupRequestAssignment:
    member_id: str = f(STRING)
    assignment: Buffer = f(BYTES)


@message
class SyncGroupRequest:
    group_id: str = f(STRING)
    generation_id: int = f(INT32)
    member_id: str = f(STRING)
    group_instance_id: str | None = f(STRING, "3+", nullable="3+", default=None)
    protocol_type: str | None = f(STRING, "5+", nullable="5+", default=None)
    protocol_name: str | None = f(STRING, "5+", nullable="5+", default=None)
    assignments: list[SyncGroupRequestAssignment] = f(arr(SyncGroupRequestAssignment))


@message
class SyncGroupResponse:
    throttle_time_ms: int = f(INT32, "1+")
    error_code: int = f(INT16)
    protocol_type: str | None = f(STRING, "5+", nullable="5+", default=None)
    protocol_name: str | None = f(STRING, "5+", nullable="5+", default=None)
    assignment: Buffer = f(BYTES)


# ---- DescribeGroups (15), ListGroups (16) --------------------------------------------------------


@message
class DescribeGroupsRequest:
    groups: list[str] = f(arr(STRING))
    include_authorized_operations: bool = f(BOOL, "3+")


@message
class DescribedGroupMember:
    member_id: str = f(STRING)
    group_instance_id: str | None = f(STRING, "4+", nullable="4+", default=None)
    client_id: str = f(STRING)
    client_host: str = f(STRING)
    member_metadata: Buffer = f(BYTES)
    member_assignment: Buffer = f(BYTES)


@message
class DescribedGroup:
    error_code: int = f(INT16)
    group_id: str = f(STRING)
    group_state: str = f(STRING)
    protocol_type: str = f(STRING)
    protocol_data: str = f(STRING)
    members: list[DescribedGroupMember] = f(arr(DescribedGroupMember))
    authorized_operations: int = f(INT32, "3+", default=_INT32_MIN)


@message
class DescribeGroupsResponse:
    throttle_time_ms: int = f(INT32, "1+")
    groups: list[DescribedGroup] = f(arr(DescribedGroup))


@message
class ListGroupsRequest:
    states_filter: list[str] = f(arr(STRING), "4+")
    types_filter: list[str] = f(arr(STRING), "5+")


@message
class ListedGroup:
    group_id: str = f(STRING)
    protocol_type: str = f(STRING)
    group_state: str = f(STRING, "4+")
    group_type: str = f(STRING, "5+")


@message
class ListGroupsResponse:
    throttle_time_ms: int = f(INT32, "1+")
    error_code: int = f(INT16)
    groups: list[ListedGroup] = f(arr(ListedGroup))


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


# ---- WriteTxnMarkers (27) ------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class WritableTxnMarkerTopic:
    name: str = f(STRING)
    partition_indexes: list[int] = f(arr(INT32))


@dataclass(slots=True, kw_only=True)
class WritableTxnMarker:
    producer_id: int = f(INT64)
    producer_epoch: int = f(INT16)
    transaction_result: bool = f(BOOL)
    topics: list[WritableTxnMarkerTopic] = f(arr(WritableTxnMarkerTopic))
    coordinator_epoch: int = f(INT32)


@dataclass(slots=True, kw_only=True)
class WriteTxnMarkersRequest:
    markers: list[WritableTxnMarker] = f(arr(WritableTxnMarker))


@dataclass(slots=True, kw_only=True)
class WritableTxnMarkerPartitionResult:
    partition_index: int = f(INT32)
    error_code: int = f(INT16)


@dataclass(slots=True, kw_only=True)
class WritableTxnMarkerTopicResult:
    name: str = f(STRING)
    partitions: list[WritableTxnMarkerPartitionResult] = f(arr(WritableTxnMarkerPartitionResult))


@dataclass(slots=True, kw_only=True)
class WritableTxnMarkerResult:
    producer_id: int = f(INT64)
    topics: list[WritableTxnMarkerTopicResult] = f(arr(WritableTxnMarkerTopicResult))


@dataclass(slots=True, kw_only=True)
class WriteTxnMarkersResponse:
    markers: list[WritableTxnMarkerResult] = f(arr(WritableTxnMarkerResult))


# ---- AddPartitionsToTxn (24), AddOffsetsToTxn (25), EndTxn (26), TxnOffsetCommit (28) ------------


@dataclass(slots=True, kw_only=True)
class AddPartitionsToTxnTopic:
    name: str = f(STRING)
    partitions: list[int] = f(arr(INT32))


@dataclass(slots=True, kw_only=True)
class AddPartitionsToTxnTransaction:
    """v4+: brokers batching transactions (clients send v0-3)."""

    transactional_id: str = f(STRING, "4+")
    producer_id: int = f(INT64, "4+")
    producer_epoch: int = f(INT16, "4+")
    verify_only: bool = f(BOOL, "4+", default=False)
    topics: list[AddPartitionsToTxnTopic] = f(arr(AddPartitionsToTxnTopic), "4+")


@dataclass(slots=True, kw_only=True)
class AddPartitionsToTxnRequest:
    transactions: list[AddPartitionsToTxnTransaction] = f(arr(AddPartitionsToTxnTransaction), "4+")
    v3_and_below_transactional_id: str = f(STRING, "0-3")
    v3_and_below_producer_id: int = f(INT64, "0-3")
    v3_and_below_producer_epoch: int = f(INT16, "0-3")
    v3_and_below_topics: list[AddPartitionsToTxnTopic] = f(arr(AddPartitionsToTxnTopic), "0-3")


@dataclass(slots=True, kw_only=True)
class AddPartitionsToTxnPartitionResult:
    partition_index: int = f(INT32)
    partition_error_code: int = f(INT16)


@dataclass(slots=True, kw_only=True)
class AddPartitionsToTxnTopicResult:
    name: str = f(STRING)
    results_by_partition: list[AddPartitionsToTxnPartitionResult] = f(
        arr(AddPartitionsToTxnPartitionResult)
    )


@dataclass(slots=True, kw_only=True)
class AddPartitionsToTxnResult:
    transactional_id: str = f(STRING, "4+")
    topic_results: list[AddPartitionsToTxnTopicResult] = f(arr(AddPartitionsToTxnTopicResult), "4+")


@dataclass(slots=True, kw_only=True)
class AddPartitionsToTxnResponse:
    throttle_time_ms: int = f(INT32)
    error_code: int = f(INT16, "4+")
    results_by_transaction: list[AddPartitionsToTxnResult] = f(arr(AddPartitionsToTxnResult), "4+")
    results_by_topic_v3_and_below: list[AddPartitionsToTxnTopicResult] = f(
        arr(AddPartitionsToTxnTopicResult), "0-3"
    )


@dataclass(slots=True, kw_only=True)
class AddOffsetsToTxnRequest:
    transactional_id: str = f(STRING)
    producer_id: int = f(INT64)
    producer_epoch: int = f(INT16)
    group_id: str = f(STRING)


@dataclass(slots=True, kw_only=True)
class AddOffsetsToTxnResponse:
    throttle_time_ms: int = f(INT32)
    error_code: int = f(INT16)


@dataclass(slots=True, kw_only=True)
class EndTxnRequest:
    transactional_id: str = f(STRING)
    producer_id: int = f(INT64)
    producer_epoch: int = f(INT16)
    committed: bool = f(BOOL)


@dataclass(slots=True, kw_only=True)
class EndTxnResponse:
    throttle_time_ms: int = f(INT32)
    error_code: int = f(INT16)
    producer_id: int = f(INT64, "5+", default=-1)
    producer_epoch: int = f(INT16, "5+", default=-1)


@dataclass(slots=True, kw_only=True)
class TxnOffsetCommitRequestPartition:
    partition_index: int = f(INT32)
    committed_offset: int = f(INT64)
    committed_leader_epoch: int = f(INT32, "2+", default=-1)
    committed_metadata: str | None = f(STRING, nullable="0+")


@dataclass(slots=True, kw_only=True)
class TxnOffsetCommitRequestTopic:
    name: str = f(STRING)
    partitions: list[TxnOffsetCommitRequestPartition] = f(arr(TxnOffsetCommitRequestPartition))


@dataclass(slots=True, kw_only=True)
class TxnOffsetCommitRequest:
    transactional_id: str = f(STRING)
    group_id: str = f(STRING)
    producer_id: int = f(INT64)
    producer_epoch: int = f(INT16)
    generation_id: int = f(INT32, "3+", default=-1)
    member_id: str = f(STRING, "3+", default="")
    group_instance_id: str | None = f(STRING, "3+", nullable="3+", default=None)
    topics: list[TxnOffsetCommitRequestTopic] = f(arr(TxnOffsetCommitRequestTopic))


@dataclass(slots=True, kw_only=True)
class TxnOffsetCommitResponsePartition:
    partition_index: int = f(INT32)
    error_code: int = f(INT16)


@dataclass(slots=True, kw_only=True)
class TxnOffsetCommitResponseTopic:
    name: str = f(STRING)
    partitions: list[TxnOffsetCommitResponsePartition] = f(arr(TxnOffsetCommitResponsePartition))


@dataclass(slots=True, kw_only=True)
class TxnOffsetCommitResponse:
    throttle_time_ms: int = f(INT32)
    topics: list[TxnOffsetCommitResponseTopic] = f(arr(TxnOffsetCommitResponseTopic))


# ---- DescribeConfigs (32), AlterConfigs (33), IncrementalAlterConfigs (44) -----------------------


class ConfigResourceType(IntEnum):
    UNKNOWN = 0
    TOPIC = 2
    BROKER = 4
    BROKER_LOGGER = 8


@message
class DescribeConfigsResource:
    resource_type: int = f(INT8)
    resource_name: str = f(STRING)
    configuration_keys: list[str] | None = f(arr(STRING), nullable="0+")
    """None: every config of the resource."""


@message
class DescribeConfigsRequest:
    resources: list[DescribeConfigsResource] = f(arr(DescribeConfigsResource))
    include_synonyms: bool = f(BOOL, "1+", default=False)
    include_documentation: bool = f(BOOL, "3+", default=False)


@message
class DescribeConfigsSynonym:
    name: str = f(STRING, "1+")
    value: str | None = f(STRING, "1+", nullable="0+")
    source: int = f(INT8, "1+")


@message
class DescribeConfigsResourceResult:
    name: str = f(STRING)
    value: str | None = f(STRING, nullable="0+")
    read_only: bool = f(BOOL)
    is_default: bool = f(BOOL, "0")
    config_source: int = f(INT8, "1+", default=-1)
    is_sensitive: bool = f(BOOL)
    synonyms: list[DescribeConfigsSynonym] = f(arr(DescribeConfigsSynonym), "1+")
    config_type: int = f(INT8, "3+", default=0)
    documentation: str | None = f(STRING, "3+", nullable="0+")


@message
class DescribeConfigsResult:
    error_code: int = f(INT16)
    error_message: str | None = f(STRING, nullable="0+")
    resource_type: int = f(INT8)
    resource_name: str = f(STRING)
    configs: list[DescribeConfigsResourceResult] = f(arr(DescribeConfigsResourceResult))


@message
class DescribeConfigsResponse:
    throttle_time_ms: int = f(INT32)
    results: list[DescribeConfigsResult] = f(arr(DescribeConfigsResult))


@message
class AlterableConfig:
    name: str = f(STRING)
    value: str | None = f(STRING, nullable="0+")


@message
class AlterConfigsResource:
    resource_type: int = f(INT8)
    resource_name: str = f(STRING)
    configs: list[AlterableConfig] = f(arr(AlterableConfig))


@message
class AlterConfigsRequest:
    resources: list[AlterConfigsResource] = f(arr(AlterConfigsResource))
    validate_only: bool = f(BOOL)


@message
class AlterConfigsResourceResponse:
    error_code: int = f(INT16)
    error_message: str | None = f(STRING, nullable="0+")
    resource_type: int = f(INT8)
    resource_name: str = f(STRING)


@message
class AlterConfigsResponse:
    throttle_time_ms: int = f(INT32)
    responses: list[AlterConfigsResourceResponse] = f(arr(AlterConfigsResourceResponse))


class ConfigOperation(IntEnum):
    SET = 0
    DELETE = 1
    APPEND = 2
    SUBTRACT = 3


@message
class IncrementalAlterableConfig:
    name: str = f(STRING)
    config_operation: int = f(INT8)
    value: str | None = f(STRING, nullable="0+")


@message
class IncrementalAlterConfigsResource:
    resource_type: int = f(INT8)
    resource_name: str = f(STRING)
    configs: list[IncrementalAlterableConfig] = f(arr(IncrementalAlterableConfig))


@message
class IncrementalAlterConfigsRequest:
    resources: list[IncrementalAlterConfigsResource] = f(arr(IncrementalAlterConfigsResource))
    validate_only: bool = f(BOOL)


@message
class IncrementalAlterConfigsResponse:
    throttle_time_ms: int = f(INT32)
    responses: list[AlterConfigsResourceResponse] = f(arr(AlterConfigsResourceResponse))


# ---- DescribeLogDirs (35) ------------------------------------------------------------------------


@message
class DescribableLogDirTopic:
    topic: str = f(STRING)
    partitions: list[int] = f(arr(INT32))


@message
class DescribeLogDirsRequest:
    topics: list[DescribableLogDirTopic] | None = f(arr(DescribableLogDirTopic), nullable="0+")
    """None: every partition of every topic."""


@message
class DescribeLogDirsPartition:
    partition_index: int = f(INT32)
    partition_size: int = f(INT64)
    offset_lag: int = f(INT64)
    is_future_key: bool = f(BOOL)


@message
class DescribeLogDirsTopic:
    name: str = f(STRING)
    partitions: list[DescribeLogDirsPartition] = f(arr(DescribeLogDirsPartition))


@message
class DescribeLogDirsResult:
    error_code: int = f(INT16)
    log_dir: str = f(STRING)
    topics: list[DescribeLogDirsTopic] = f(arr(DescribeLogDirsTopic))
    total_bytes: int = f(INT64, "4+", default=-1)
    usable_bytes: int = f(INT64, "4+", default=-1)


@message
class DescribeLogDirsResponse:
    throttle_time_ms: int = f(INT32)
    error_code: int = f(INT16, "3+")
    results: list[DescribeLogDirsResult] = f(arr(DescribeLogDirsResult))


# ---- SaslAuthenticate (36), CreatePartitions (37) ------------------------------------------------


@message
class SaslAuthenticateRequest:
    auth_bytes: Buffer = f(BYTES)


@message
class SaslAuthenticateResponse:
    error_code: int = f(INT16)
    error_message: str | None = f(STRING, nullable="0+")
    auth_bytes: Buffer = f(BYTES)
    session_lifetime_ms: int = f(INT64, "1+", default=0)


@message
class CreatePartitionsAssignment:
    broker_ids: list[int] = f(arr(INT32))


@message
class CreatePartitionsTopic:
    name: str = f(STRING)
    count: int = f(INT32)
    assignments: list[CreatePartitionsAssignment] | None = f(
        arr(CreatePartitionsAssignment), nullable="0+", default=None
    )


@message
class CreatePartitionsRequest:
    topics: list[CreatePartitionsTopic] = f(arr(CreatePartitionsTopic))
    timeout_ms: int = f(INT32)
    validate_only: bool = f(BOOL)


@message
class CreatePartitionsTopicResult:
    name: str = f(STRING)
    error_code: int = f(INT16)
    error_message: str | None = f(STRING, nullable="0+", default=None)


@message
class CreatePartitionsResponse:
    throttle_time_ms: int = f(INT32)
    results: list[CreatePartitionsTopicResult] = f(arr(CreatePartitionsTopicResult))


# ---- DeleteGroups (42) ---------------------------------------------------------------------------


@message
class DeleteGroupsRequest:
    groups_names: list[str] = f(arr(STRING))


@message
class DeletableGroupResult:
    group_id: str = f(STRING)
    error_code: int = f(INT16)


@message
class DeleteGroupsResponse:
    throttle_time_ms: int = f(INT32)
    results: list[DeletableGroupResult] = f(arr(DeletableGroupResult))


# ---- ElectLeaders (43) ---------------------------------------------------------------------------


class ElectionType(IntEnum):
    PREFERRED = 0
    UNCLEAN = 1


@message
class ElectLeadersTopic:
    topic: str = f(STRING)
    partitions: list[int] = f(arr(INT32))


@message
class ElectLeadersRequest:
    election_type: int = f(INT8, "1+")
    """v0 is always a preferred election."""
    topic_partitions: list[ElectLeadersTopic] | None = f(arr(ElectLeadersTopic), nullable="0+")
    """None: every partition."""
    timeout_ms: int = f(INT32, default=60000)


@message
class ElectLeadersPartitionResult:
    partition_id: int = f(INT32)
    error_code: int = f(INT16)
    error_message: str | None = f(STRING, nullable="0+", default=None)


@message
class ReplicaElectionResult:
    topic: str = f(STRING)
    partition_result: list[ElectLeadersPartitionResult] = f(arr(ElectLeadersPartitionResult))


@message
class ElectLeadersResponse:
    throttle_time_ms: int = f(INT32)
    error_code: int = f(INT16, "1+")
    replica_election_results: list[ReplicaElectionResult] = f(arr(ReplicaElectionResult))


# ---- AlterPartitionReassignments (45), ListPartitionReassignments (46) ---------------------------


@message
class ReassignablePartition:
    partition_index: int = f(INT32)
    replicas: list[int] | None = f(arr(INT32), nullable="0+", default=None)
    """None: cancel the partition's pending reassignment."""


@message
class ReassignableTopic:
    name: str = f(STRING)
    partitions: list[ReassignablePartition] = f(arr(ReassignablePartition))


@message
class AlterPartitionReassignmentsRequest:
    timeout_ms: int = f(INT32, default=60000)
    topics: list[ReassignableTopic] = f(arr(ReassignableTopic))


@message
class ReassignablePartitionResponse:
    partition_index: int = f(INT32)
    error_code: int = f(INT16)
    error_message: str | None = f(STRING, nullable="0+", default=None)


@message
class ReassignableTopicResponse:
    name: str = f(STRING)
    partitions: list[ReassignablePartitionResponse] = f(arr(ReassignablePartitionResponse))


@message
class AlterPartitionReassignmentsResponse:
    throttle_time_ms: int = f(INT32)
    error_code: int = f(INT16)
    error_message: str | None = f(STRING, nullable="0+", default=None)
    responses: list[ReassignableTopicResponse] = f(arr(ReassignableTopicResponse))


@message
class ListPartitionReassignmentsTopics:
    name: str = f(STRING)
    partition_indexes: list[int] = f(arr(INT32))


@message
class ListPartitionReassignmentsRequest:
    timeout_ms: int = f(INT32, default=60000)
    topics: list[ListPartitionReassignmentsTopics] | None = f(
        arr(ListPartitionReassignmentsTopics), nullable="0+", default=None
    )
    """None: every partition."""


@message
class OngoingPartitionReassignment:
    partition_index: int = f(INT32)
    replicas: list[int] = f(arr(INT32))
    adding_replicas: list[int] = f(arr(INT32))
    removing_replicas: list[int] = f(arr(INT32))


@message
class OngoingTopicReassignment:
    name: str = f(STRING)
    partitions: list[OngoingPartitionReassignment] = f(arr(OngoingPartitionReassignment))


@message
class ListPartitionReassignmentsResponse:
    throttle_time_ms: int = f(INT32)
    error_code: int = f(INT16)
    error_message: str | None = f(STRING, nullable="0+", default=None)
    topics: list[OngoingTopicReassignment] = f(arr(OngoingTopicReassignment))


# ---- OffsetDelete (47) ---------------------------------------------------------------------------


@message
class OffsetDeleteRequestPartition:
    partition_index: int = f(INT32)


@message
class OffsetDeleteRequestTopic:
    name: str = f(STRING)
    partitions: list[OffsetDeleteRequestPartition] = f(arr(OffsetDeleteRequestPartition))


@message
class OffsetDeleteRequest:
    group_id: str = f(STRING)
    topics: list[OffsetDeleteRequestTopic] = f(arr(OffsetDeleteRequestTopic))


@message
class OffsetDeleteResponsePartition:
    partition_index: int = f(INT32)
    error_code: int = f(INT16)


@message
class OffsetDeleteResponseTopic:
    name: str = f(STRING)
    partitions: list[OffsetDeleteResponsePartition] = f(arr(OffsetDeleteResponsePartition))


@message
class OffsetDeleteResponse:
    error_code: int = f(INT16)
    throttle_time_ms: int = f(INT32)
    topics: list[OffsetDeleteResponseTopic] = f(arr(OffsetDeleteResponseTopic))


# ---- DescribeCluster (60) ------------------------------------------------------------------------


class EndpointType(IntEnum):
    UNKNOWN = 0
    BROKER = 1
    CONTROLLER = 2


@message
class DescribeClusterRequest:
    include_cluster_authorized_operations: bool = f(BOOL)
    endpoint_type: int = f(INT8, "1+", default=1)
    include_fenced_brokers: bool = f(BOOL, "2+")


@message
class DescribeClusterBroker:
    broker_id: int = f(INT32)
    host: str = f(STRING)
    port: int = f(INT32)
    rack: str | None = f(STRING, nullable="0+", default=None)
    is_fenced: bool = f(BOOL, "2+")


@message
class DescribeClusterResponse:
    throttle_time_ms: int = f(INT32)
    error_code: int = f(INT16)
    error_message: str | None = f(STRING, nullable="0+", default=None)
    endpoint_type: int = f(INT8, "1+", default=1)
    cluster_id: str = f(STRING)
    controller_id: int = f(INT32, default=-1)
    brokers: list[DescribeClusterBroker] = f(arr(DescribeClusterBroker))
    cluster_authorized_operations: int = f(INT32, default=_INT32_MIN)


# ---- DescribeProducers (61) ----------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class DescribeProducersTopicRequest:
    name: str = f(STRING)
    partition_indexes: list[int] = f(arr(INT32))


@dataclass(slots=True, kw_only=True)
class DescribeProducersRequest:
    topics: list[DescribeProducersTopicRequest] = f(arr(DescribeProducersTopicRequest))


@dataclass(slots=True, kw_only=True)
class ProducerState:
    producer_id: int = f(INT64)
    producer_epoch: int = f(INT32)
    last_sequence: int = f(INT32, default=-1)
    last_timestamp: int = f(INT64, default=-1)
    coordinator_epoch: int = f(INT32)
    current_txn_start_offset: int = f(INT64, default=-1)


@dataclass(slots=True, kw_only=True)
class DescribeProducersPartitionResponse:
    partition_index: int = f(INT32)
    error_code: int = f(INT16)
    error_message: str | None = f(STRING, nullable="0+", default=None)
    active_producers: list[ProducerState] = f(arr(ProducerState))


@dataclass(slots=True, kw_only=True)
class DescribeProducersTopicResponse:
    name: str = f(STRING)
    partitions: list[DescribeProducersPartitionResponse] = f(arr(DescribeProducersPartitionResponse))


@dataclass(slots=True, kw_only=True)
class DescribeProducersResponse:
    throttle_time_ms: int = f(INT32)
    topics: list[DescribeProducersTopicResponse] = f(arr(DescribeProducersTopicResponse))


# ---- DescribeTransactions (65), ListTransactions (66) --------------------------------------------


@dataclass(slots=True, kw_only=True)
class DescribeTransactionsRequest:
    transactional_ids: list[str] = f(arr(STRING))


@dataclass(slots=True, kw_only=True)
class DescribeTransactionsTopicData:
    topic: str = f(STRING)
    partitions: list[int] = f(arr(INT32))


@dataclass(slots=True, kw_only=True)
class DescribedTransactionState:
    error_code: int = f(INT16)
    transactional_id: str = f(STRING)
    transaction_state: str = f(STRING)
    transaction_timeout_ms: int = f(INT32)
    transaction_start_time_ms: int = f(INT64)
    producer_id: int = f(INT64)
    producer_epoch: int = f(INT16)
    topics: list[DescribeTransactionsTopicData] = f(arr(DescribeTransactionsTopicData))


@dataclass(slots=True, kw_only=True)
class DescribeTransactionsResponse:
    throttle_time_ms: int = f(INT32)
    transaction_states: list[DescribedTransactionState] = f(arr(DescribedTransactionState))


@dataclass(slots=True, kw_only=True)
class ListTransactionsRequest:
    state_filters: list[str] = f(arr(STRING))
    producer_id_filters: list[int] = f(arr(INT64))
    duration_filter: int = f(INT64, "1+", default=-1)


@dataclass(slots=True, kw_only=True)
class ListedTransactionState:
    transactional_id: str = f(STRING)
    producer_id: int = f(INT64)
    transaction_state: str = f(STRING)


@dataclass(slots=True, kw_only=True)
class ListTransactionsResponse:
    throttle_time_ms: int = f(INT32)
    error_code: int = f(INT16)
    unknown_state_filters: list[str] = f(arr(STRING))
    transaction_states: list[ListedTransactionState] = f(arr(ListedTransactionState))


# ---- the registry --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApiSpec:
    key: ApiKey
    request: type
    response: type
    flexible_from: int | None
    """First flexible version (compact encodings, tagged fields, header v2/v1); None: never."""

    def flexible(self, version: int) -> bool:
        return self.flexible_from is not None and version >= self.flexible_from


APIS: dict[int, ApiSpec] = {
    s.key: s
    for s in (
        ApiSpec(ApiKey.PRODUCE, ProduceRequest, ProduceResponse, 9),
        ApiSpec(ApiKey.FETCH, FetchRequest, FetchResponse, 12),
        ApiSpec(ApiKey.LIST_OFFSETS, ListOffsetsRequest, ListOffsetsResponse, 6),
        ApiSpec(ApiKey.METADATA, MetadataRequest, MetadataResponse, 9),
        ApiSpec(ApiKey.OFFSET_COMMIT, OffsetCommitRequest, OffsetCommitResponse, 8),
        ApiSpec(ApiKey.OFFSET_FETCH, OffsetFetchRequest, OffsetFetchResponse, 6),
        ApiSpec(ApiKey.FIND_COORDINATOR, FindCoordinatorRequest, FindCoordinatorResponse, 3),
        ApiSpec(ApiKey.JOIN_GROUP, JoinGroupRequest, JoinGroupResponse, 6),
        ApiSpec(ApiKey.HEARTBEAT, HeartbeatRequest, HeartbeatResponse, 4),
        ApiSpec(ApiKey.LEAVE_GROUP, LeaveGroupRequest, LeaveGroupResponse, 4),
        ApiSpec(ApiKey.SYNC_GROUP, SyncGroupRequest, SyncGroupResponse, 4),
        ApiSpec(ApiKey.DESCRIBE_GROUPS, DescribeGroupsRequest, DescribeGroupsResponse, 5),
        ApiSpec(ApiKey.LIST_GROUPS, ListGroupsRequest, ListGroupsResponse, 3),
        ApiSpec(ApiKey.SASL_HANDSHAKE, SaslHandshakeRequest, SaslHandshakeResponse, None),
        ApiSpec(ApiKey.API_VERSIONS, ApiVersionsRequest, ApiVersionsResponse, 3),
        ApiSpec(ApiKey.CREATE_TOPICS, CreateTopicsRequest, CreateTopicsResponse, 5),
        ApiSpec(ApiKey.DELETE_TOPICS, DeleteTopicsRequest, DeleteTopicsResponse, 4),
        ApiSpec(ApiKey.DELETE_RECORDS, DeleteRecordsRequest, DeleteRecordsResponse, 2),
        ApiSpec(ApiKey.INIT_PRODUCER_ID, InitProducerIdRequest, InitProducerIdResponse, 2),
        ApiSpec(
            ApiKey.ADD_PARTITIONS_TO_TXN, AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, 3
        ),
        ApiSpec(ApiKey.ADD_OFFSETS_TO_TXN, AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, 3),
        ApiSpec(ApiKey.END_TXN, EndTxnRequest, EndTxnResponse, 3),
        ApiSpec(ApiKey.WRITE_TXN_MARKERS, WriteTxnMarkersRequest, WriteTxnMarkersResponse, 1),
        ApiSpec(ApiKey.TXN_OFFSET_COMMIT, TxnOffsetCommitRequest, TxnOffsetCommitResponse, 3),
        ApiSpec(ApiKey.DESCRIBE_CONFIGS, DescribeConfigsRequest, DescribeConfigsResponse, 4),
        ApiSpec(ApiKey.ALTER_CONFIGS, AlterConfigsRequest, AlterConfigsResponse, 2),
        ApiSpec(ApiKey.SASL_AUTHENTICATE, SaslAuthenticateRequest, SaslAuthenticateResponse, 2),
        ApiSpec(ApiKey.CREATE_PARTITIONS, CreatePartitionsRequest, CreatePartitionsResponse, 2),
        ApiSpec(ApiKey.DELETE_GROUPS, DeleteGroupsRequest, DeleteGroupsResponse, 2),
        ApiSpec(
            ApiKey.INCREMENTAL_ALTER_CONFIGS,
            IncrementalAlterConfigsRequest,
            IncrementalAlterConfigsResponse,
            1,
        ),
        ApiSpec(ApiKey.OFFSET_DELETE, OffsetDeleteRequest, OffsetDeleteResponse, None),
        ApiSpec(ApiKey.DESCRIBE_LOG_DIRS, DescribeLogDirsRequest, DescribeLogDirsResponse, 2),
        ApiSpec(ApiKey.ELECT_LEADERS, ElectLeadersRequest, ElectLeadersResponse, 2),
        ApiSpec(
            ApiKey.ALTER_PARTITION_REASSIGNMENTS,
            AlterPartitionReassignmentsRequest,
            AlterPartitionReassignmentsResponse,
            0,
        ),
        ApiSpec(
            ApiKey.LIST_PARTITION_REASSIGNMENTS,
            ListPartitionReassignmentsRequest,
            ListPartitionReassignmentsResponse,
            0,
        ),
        ApiSpec(ApiKey.DESCRIBE_CLUSTER, DescribeClusterRequest, DescribeClusterResponse, 0),
        ApiSpec(ApiKey.DESCRIBE_PRODUCERS, DescribeProducersRequest, DescribeProducersResponse, 0),
        ApiSpec(
            ApiKey.DESCRIBE_TRANSACTIONS,
            DescribeTransactionsRequest,
            DescribeTransactionsResponse,
            0,
        ),
        ApiSpec(ApiKey.LIST_TRANSACTIONS, ListTransactionsRequest, ListTransactionsResponse, 0),
    )
}

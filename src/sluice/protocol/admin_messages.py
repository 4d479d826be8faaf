"""The messages of the admin and transaction APIs, built on first use.

Declared exactly as :mod:`sluice.protocol.messages` declares the rest (see its docstring), and
reached through it (``messages.DescribeConfigsRequest``, ``APIS[key].request``), which imports
this module the first time one of these names is looked up. A client's first requests (ApiVersions,
Metadata, Produce, Fetch, the group APIs) never need these ~90 classes, and building them was
about a tenth of what importing the broker cost; a broker that is never asked for them never builds
them.
"""

from __future__ import annotations

from sluice.dataclass import dataclass
from sluice.protocol.primitives import Buffer
from sluice.protocol.schema import BOOL, BYTES, INT8, INT16, INT32, INT64, STRING, arr, f, message

_INT32_MIN = -(2**31)


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


__all__ = [
    "AddOffsetsToTxnRequest",
    "AddOffsetsToTxnResponse",
    "AddPartitionsToTxnPartitionResult",
    "AddPartitionsToTxnRequest",
    "AddPartitionsToTxnResponse",
    "AddPartitionsToTxnResult",
    "AddPartitionsToTxnTopic",
    "AddPartitionsToTxnTopicResult",
    "AddPartitionsToTxnTransaction",
    "AlterConfigsRequest",
    "AlterConfigsResource",
    "AlterConfigsResourceResponse",
    "AlterConfigsResponse",
    "AlterPartitionReassignmentsRequest",
    "AlterPartitionReassignmentsResponse",
    "AlterableConfig",
    "CreatePartitionsAssignment",
    "CreatePartitionsRequest",
    "CreatePartitionsResponse",
    "CreatePartitionsTopic",
    "CreatePartitionsTopicResult",
    "DeletableGroupResult",
    "DeleteGroupsRequest",
    "DeleteGroupsResponse",
    "DescribableLogDirTopic",
    "DescribeClusterBroker",
    "DescribeClusterRequest",
    "DescribeClusterResponse",
    "DescribeConfigsRequest",
    "DescribeConfigsResource",
    "DescribeConfigsResourceResult",
    "DescribeConfigsResponse",
    "DescribeConfigsResult",
    "DescribeConfigsSynonym",
    "DescribeLogDirsPartition",
    "DescribeLogDirsRequest",
    "DescribeLogDirsResponse",
    "DescribeLogDirsResult",
    "DescribeLogDirsTopic",
    "DescribeProducersPartitionResponse",
    "DescribeProducersRequest",
    "DescribeProducersResponse",
    "DescribeProducersTopicRequest",
    "DescribeProducersTopicResponse",
    "DescribeTransactionsRequest",
    "DescribeTransactionsResponse",
    "DescribeTransactionsTopicData",
    "DescribedTransactionState",
    "ElectLeadersPartitionResult",
    "ElectLeadersRequest",
    "ElectLeadersResponse",
    "ElectLeadersTopic",
    "EndTxnRequest",
    "EndTxnResponse",
    "IncrementalAlterConfigsRequest",
    "IncrementalAlterConfigsResource",
    "IncrementalAlterConfigsResponse",
    "IncrementalAlterableConfig",
    "ListPartitionReassignmentsRequest",
    "ListPartitionReassignmentsResponse",
    "ListPartitionReassignmentsTopics",
    "ListTransactionsRequest",
    "ListTransactionsResponse",
    "ListedTransactionState",
    "OffsetDeleteRequest",
    "OffsetDeleteRequestPartition",
    "OffsetDeleteRequestTopic",
    "OffsetDeleteResponse",
    "OffsetDeleteResponsePartition",
    "OffsetDeleteResponseTopic",
    "OngoingPartitionReassignment",
    "OngoingTopicReassignment",
    "ProducerState",
    "ReassignablePartition",
    "ReassignablePartitionResponse",
    "ReassignableTopic",
    "ReassignableTopicResponse",
    "ReplicaElectionResult",
    "SaslAuthenticateRequest",
    "SaslAuthenticateResponse",
    "TxnOffsetCommitRequest",
    "TxnOffsetCommitRequestPartition",
    "TxnOffsetCommitRequestTopic",
    "TxnOffsetCommitResponse",
    "TxnOffsetCommitResponsePartition",
    "TxnOffsetCommitResponseTopic",
    "WritableTxnMarker",
    "WritableTxnMarkerPartitionResult",
    "WritableTxnMarkerResult",
    "WritableTxnMarkerTopic",
    "WritableTxnMarkerTopicResult",
    "WriteTxnMarkersRequest",
    "WriteTxnMarkersResponse",
]

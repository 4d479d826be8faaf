"""The consumer group APIs' messages (OffsetCommit, OffsetFetch, FindCoordinator, JoinGroup,
Heartbeat, LeaveGroup, SyncGroup, DescribeGroups, ListGroups, and KIP-848's
ConsumerGroupHeartbeat, which sluice only refuses), built on first use.

Declared exactly as :mod:`sluice.protocol.messages` declares the rest (see its docstring), and
reached through it (``messages.JoinGroupRequest``, ``APIS[key].request``), which imports this
module the first time one of these names is looked up. A broker builds them when the first
client that uses a group (or commits offsets) asks; a producer-only test, or a process that
starts a broker and never serves a group, never pays for these ~36 classes.
"""

from __future__ import annotations

import uuid

from sluice.protocol.primitives import Buffer
from sluice.protocol.schema import (
    BOOL,
    BYTES,
    INT8,
    INT16,
    INT32,
    INT64,
    STRING,
    UUID,
    arr,
    f,
    message,
)

_INT32_MIN = -(2**31)


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


# ---- ConsumerGroupHeartbeat (68, KIP-848) -------------------------------------------------------


@message
class ConsumerGroupHeartbeatTopicPartitions:
    topic_id: uuid.UUID = f(UUID)
    partitions: list[int] = f(arr(INT32))


@message
class ConsumerGroupHeartbeatRequest:
    group_id: str = f(STRING)
    member_id: str = f(STRING)
    member_epoch: int = f(INT32)
    instance_id: str | None = f(STRING, nullable="0+", default=None)
    rack_id: str | None = f(STRING, nullable="0+", default=None)
    rebalance_timeout_ms: int = f(INT32, default=-1)
    subscribed_topic_names: list[str] | None = f(arr(STRING), nullable="0+", default=None)
    subscribed_topic_regex: str | None = f(STRING, "1+", nullable="1+", default=None)
    server_assignor: str | None = f(STRING, nullable="0+", default=None)
    topic_partitions: list[ConsumerGroupHeartbeatTopicPartitions] | None = f(
        arr(ConsumerGroupHeartbeatTopicPartitions), nullable="0+", default=None
    )


@message
class ConsumerGroupHeartbeatAssignment:
    topic_partitions: list[ConsumerGroupHeartbeatTopicPartitions] = f(
        arr(ConsumerGroupHeartbeatTopicPartitions)
    )


@message
class ConsumerGroupHeartbeatResponse:
    throttle_time_ms: int = f(INT32)
    error_code: int = f(INT16)
    error_message: str | None = f(STRING, nullable="0+", default=None)
    member_id: str | None = f(STRING, nullable="0+", default=None)
    member_epoch: int = f(INT32)
    heartbeat_interval_ms: int = f(INT32)
    assignment: ConsumerGroupHeartbeatAssignment | None = f(
        ConsumerGroupHeartbeatAssignment, nullable="0+", default=None
    )


__all__ = [
    "ConsumerGroupHeartbeatAssignment",
    "ConsumerGroupHeartbeatRequest",
    "ConsumerGroupHeartbeatResponse",
    "ConsumerGroupHeartbeatTopicPartitions",
    "Coordinator",
    "DescribeGroupsRequest",
    "DescribeGroupsResponse",
    "DescribedGroup",
    "DescribedGroupMember",
    "FindCoordinatorRequest",
    "FindCoordinatorResponse",
    "HeartbeatRequest",
    "HeartbeatResponse",
    "JoinGroupRequest",
    "JoinGroupRequestProtocol",
    "JoinGroupResponse",
    "JoinGroupResponseMember",
    "LeaveGroupMemberResponse",
    "LeaveGroupRequest",
    "LeaveGroupResponse",
    "ListGroupsRequest",
    "ListGroupsResponse",
    "ListedGroup",
    "MemberIdentity",
    "OffsetCommitRequest",
    "OffsetCommitRequestPartition",
    "OffsetCommitRequestTopic",
    "OffsetCommitResponse",
    "OffsetCommitResponsePartition",
    "OffsetCommitResponseTopic",
    "OffsetFetchRequest",
    "OffsetFetchRequestGroup",
    "OffsetFetchRequestTopic",
    "OffsetFetchResponse",
    "OffsetFetchResponseGroup",
    "OffsetFetchResponsePartition",
    "OffsetFetchResponseTopic",
    "SyncGroupRequest",
    "SyncGroupRequestAssignment",
    "SyncGroupResponse",
]

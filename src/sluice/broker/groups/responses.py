"""Every group API's answer, shaped for the request's version.

The managers decide (error codes, results, offsets); this module only knows which fields each
version has and how a refusal looks per API, so a version's quirks live in one place and the
rules stay free of wire details. Non-nullable strings that an older version lacks get ``""``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from sluice.broker.groups.group import Group, GroupState, JoinResult, SyncResult
from sluice.broker.groups.store import CommittedOffset
from sluice.errors import ErrorCode
from sluice.protocol import Request, ResponseBody
from sluice.protocol import messages as m

GROUP_AUTHORIZED_OPERATIONS = (1 << 3) | (1 << 6) | (1 << 8)
"""READ, DELETE and DESCRIBE (AclOperation codes): everything, as sluice has no ACLs yet."""

_OPERATIONS_NOT_REQUESTED = -(2**31)

TopicPartition = tuple[str, int]
FetchedTopic = tuple[str, list[tuple[int, CommittedOffset | None]]]
"""A topic asked for (or, for a null topic list, committed) and each partition's offset."""


class CoordinatorLookup(NamedTuple):
    error: ErrorCode
    message: str | None
    node_id: int
    host: str
    port: int


class FetchedGroup(NamedTuple):
    group_id: str
    error: ErrorCode
    topics: list[FetchedTopic]
    unstable: frozenset[TopicPartition] = frozenset()
    """Partitions answered UNSTABLE_OFFSET_COMMIT (an open transaction holds an offset)."""


class DescribedGroup(NamedTuple):
    group_id: str
    error: ErrorCode | None
    group: Group | None
    """None: not a group we know (described as Dead, with no error, as Kafka does)."""


def find_coordinator_response(
    version: int, req: m.FindCoordinatorRequest, found: CoordinatorLookup
) -> m.FindCoordinatorResponse:
    """v4 batches keys (all of one key type, so one lookup answers every key)."""
    if version >= 4:
        return m.FindCoordinatorResponse(
            coordinators=[
                m.Coordinator(
                    key=key,
                    node_id=found.node_id,
                    host=found.host,
                    port=found.port,
                    error_code=found.error,
                    error_message=found.message,
                )
                for key in req.coordinator_keys
            ]
        )
    return m.FindCoordinatorResponse(
        error_code=found.error,
        error_message=found.message,
        node_id=found.node_id,
        host=found.host,
        port=found.port,
    )


def join_group_response(version: int, r: JoinResult) -> m.JoinGroupResponse:
    return m.JoinGroupResponse(
        error_code=r.error,
        generation_id=r.generation_id,
        protocol_type=r.protocol_type if version >= 7 else None,
        protocol_name=r.protocol_name if version >= 7 else (r.protocol_name or ""),
        leader=r.leader,
        member_id=r.member_id,
        members=[
            m.JoinGroupResponseMember(
                member_id=jm.member_id, group_instance_id=jm.group_instance_id, metadata=jm.metadata
            )
            for jm in r.members
        ],
    )


def sync_group_response(version: int, r: SyncResult) -> m.SyncGroupResponse:
    return m.SyncGroupResponse(
        error_code=r.error,
        protocol_type=r.protocol_type if version >= 5 else None,
        protocol_name=r.protocol_name if version >= 5 else None,
        assignment=r.assignment,
    )


def heartbeat_response(error: ErrorCode) -> m.HeartbeatResponse:
    return m.HeartbeatResponse(error_code=error)


def leave_group_response(
    version: int,
    leaving: Sequence[m.MemberIdentity],
    top: ErrorCode,
    results: Sequence[ErrorCode],
) -> m.LeaveGroupResponse:
    """v3+ answers per member; before that the one member's error is the top-level error.
    A top-level error (a bad group id, a dead group) answers no member, as Kafka's error
    response does."""
    if version >= 3:
        if top is not ErrorCode.NONE:
            return m.LeaveGroupResponse(error_code=top, members=[])
        return m.LeaveGroupResponse(
            error_code=top,
            members=[
                m.LeaveGroupMemberResponse(
                    member_id=ident.member_id,
                    group_instance_id=ident.group_instance_id,
                    error_code=err,
                )
                for ident, err in zip(leaving, results, strict=True)
            ],
        )
    code = top if top is not ErrorCode.NONE or not results else results[0]
    return m.LeaveGroupResponse(error_code=code)


def offset_commit_response(
    req: m.OffsetCommitRequest, results: list[ErrorCode]
) -> m.OffsetCommitResponse:
    """One entry per partition entry asked for, in the request's order (``results`` is in
    that order too)."""
    topics: dict[str, list[m.OffsetCommitResponsePartition]] = {}
    codes = iter(results)
    for t in req.topics:
        for p in t.partitions:
            topics.setdefault(t.name, []).append(
                m.OffsetCommitResponsePartition(
                    partition_index=p.partition_index, error_code=next(codes)
                )
            )
    return m.OffsetCommitResponse(
        topics=[m.OffsetCommitResponseTopic(name=n, partitions=ps) for n, ps in topics.items()]
    )


def txn_offset_commit_response(
    req: m.TxnOffsetCommitRequest, results: list[ErrorCode]
) -> m.TxnOffsetCommitResponse:
    """One entry per partition entry asked for, in the request's order (``results`` is in
    that order too)."""
    topics: dict[str, list[m.TxnOffsetCommitResponsePartition]] = {}
    codes = iter(results)
    for t in req.topics:
        for p in t.partitions:
            topics.setdefault(t.name, []).append(
                m.TxnOffsetCommitResponsePartition(
                    partition_index=p.partition_index, error_code=next(codes)
                )
            )
    return m.TxnOffsetCommitResponse(
        topics=[m.TxnOffsetCommitResponseTopic(name=n, partitions=ps) for n, ps in topics.items()]
    )


def _fetched_partition(
    partition: int, committed: CommittedOffset | None, unstable: bool
) -> m.OffsetFetchResponsePartition:
    if unstable or committed is None:
        return m.OffsetFetchResponsePartition(
            partition_index=partition,
            committed_offset=-1,
            committed_leader_epoch=-1,
            metadata="",
            error_code=ErrorCode.UNSTABLE_OFFSET_COMMIT if unstable else ErrorCode.NONE,
        )
    return m.OffsetFetchResponsePartition(
        partition_index=partition,
        committed_offset=committed.offset,
        committed_leader_epoch=committed.leader_epoch,
        metadata=committed.metadata,
        error_code=ErrorCode.NONE,
    )


def _fetched_topics(
    topics: Iterable[FetchedTopic], unstable: frozenset[TopicPartition] = frozenset()
) -> list[m.OffsetFetchResponseTopic]:
    return [
        m.OffsetFetchResponseTopic(
            name=topic,
            partitions=[
                _fetched_partition(partition, committed, (topic, partition) in unstable)
                for partition, committed in partitions
            ],
        )
        for topic, partitions in topics
    ]


def _refused_fetch_topics(
    topics: Iterable[m.OffsetFetchRequestTopic] | None, error: ErrorCode
) -> list[m.OffsetFetchResponseTopic]:
    """v0-1 have no top-level error: it is reported on every partition asked for."""
    return [
        m.OffsetFetchResponseTopic(
            name=t.name,
            partitions=[
                m.OffsetFetchResponsePartition(
                    partition_index=p, committed_offset=-1, metadata="", error_code=error
                )
                for p in t.partition_indexes
            ],
        )
        for t in topics or []
    ]


def offset_fetch_response(
    version: int, req: m.OffsetFetchRequest, fetched: Sequence[FetchedGroup]
) -> m.OffsetFetchResponse:
    """v8 answers each group asked for; before that ``fetched`` holds the request's one group."""
    if version >= 8:
        return m.OffsetFetchResponse(
            groups=[
                m.OffsetFetchResponseGroup(
                    group_id=g.group_id,
                    topics=_fetched_topics(g.topics, g.unstable),
                    error_code=g.error,
                )
                for g in fetched
            ]
        )
    (one,) = fetched
    topics = _fetched_topics(one.topics, one.unstable)
    if one.error is not ErrorCode.NONE and version < 2:
        topics = _refused_fetch_topics(req.topics, one.error)
    return m.OffsetFetchResponse(topics=topics, error_code=one.error)


def _refused_group(group_id: str, error: ErrorCode) -> m.DescribedGroup:
    return m.DescribedGroup(
        error_code=error, group_id=group_id, group_state="", protocol_type="", protocol_data=""
    )


def described_group(d: DescribedGroup, ops: int) -> m.DescribedGroup:
    """One group's entry of a DescribeGroups answer (``ops``: :func:`group_operations`)."""
    if d.error is not None:
        return _refused_group(d.group_id, d.error)
    group = d.group
    if group is None:
        return m.DescribedGroup(
            error_code=ErrorCode.NONE,
            group_id=d.group_id,
            group_state=GroupState.DEAD.value,
            protocol_type="",
            protocol_data="",
            authorized_operations=ops,
        )
    # Member metadata and assignments mean something only once a generation is Stable (Kafka).
    stable = group.is_(GroupState.STABLE) and group.protocol_name is not None
    members = [
        m.DescribedGroupMember(
            member_id=mm.member_id,
            group_instance_id=mm.group_instance_id,
            client_id=mm.client_id,
            client_host=mm.client_host,
            member_metadata=mm.metadata(group.protocol_name)
            if stable and group.protocol_name in mm.protocol_names()
            else b"",
            member_assignment=mm.assignment if stable else b"",
        )
        for mm in group.members.values()
    ]
    return m.DescribedGroup(
        error_code=ErrorCode.NONE,
        group_id=d.group_id,
        group_state=group.state.value,
        protocol_type=group.protocol_type or "",
        protocol_data=(group.protocol_name or "") if stable else "",
        members=members,
        authorized_operations=ops,
    )


def group_operations(version: int, req: m.DescribeGroupsRequest) -> int:
    """What DescribeGroups answers as each group's authorized operations."""
    return (
        GROUP_AUTHORIZED_OPERATIONS
        if version >= 3 and req.include_authorized_operations
        else _OPERATIONS_NOT_REQUESTED
    )


def list_groups_response(groups: Iterable[Group]) -> m.ListGroupsResponse:
    return m.ListGroupsResponse(
        error_code=ErrorCode.NONE,
        groups=[
            m.ListedGroup(
                group_id=g.group_id, protocol_type=g.protocol_type or "", group_state=g.state.value
            )
            for g in groups
        ],
    )


def delete_groups_response(results: dict[str, ErrorCode]) -> m.DeleteGroupsResponse:
    return m.DeleteGroupsResponse(
        results=[m.DeletableGroupResult(group_id=g, error_code=e) for g, e in results.items()]
    )


def offset_delete_response(
    top: ErrorCode, errors: dict[TopicPartition, ErrorCode]
) -> m.OffsetDeleteResponse:
    topics: dict[str, list[m.OffsetDeleteResponsePartition]] = {}
    for (topic, partition), err in errors.items():
        topics.setdefault(topic, []).append(
            m.OffsetDeleteResponsePartition(partition_index=partition, error_code=err)
        )
    return m.OffsetDeleteResponse(
        error_code=top,
        topics=[m.OffsetDeleteResponseTopic(name=n, partitions=ps) for n, ps in topics.items()],
    )


def error_response(request: Request, error: ErrorCode) -> ResponseBody:
    """The whole request refused with one code, in the shape its API and version expect."""
    body = request.body
    v = request.api_version
    match body:
        case m.FindCoordinatorRequest():
            if v >= 4:
                return m.FindCoordinatorResponse(
                    coordinators=[
                        m.Coordinator(key=k, node_id=-1, host="", port=-1, error_code=error)
                        for k in body.coordinator_keys
                    ]
                )
            return m.FindCoordinatorResponse(error_code=error, node_id=-1, host="", port=-1)
        case m.JoinGroupRequest():
            return join_group_response(v, JoinResult(error, body.member_id))
        case m.SyncGroupRequest():
            return sync_group_response(v, SyncResult(error))
        case m.HeartbeatRequest():
            return heartbeat_response(error)
        case m.LeaveGroupRequest():
            return m.LeaveGroupResponse(error_code=error)
        case m.OffsetCommitRequest():
            return m.OffsetCommitResponse(
                topics=[
                    m.OffsetCommitResponseTopic(
                        name=t.name,
                        partitions=[
                            m.OffsetCommitResponsePartition(
                                partition_index=p.partition_index, error_code=error
                            )
                            for p in t.partitions
                        ],
                    )
                    for t in body.topics
                ]
            )
        case m.OffsetFetchRequest():
            if v >= 8:
                return m.OffsetFetchResponse(
                    groups=[
                        m.OffsetFetchResponseGroup(group_id=g.group_id, error_code=error)
                        for g in body.groups
                    ]
                )
            return m.OffsetFetchResponse(
                error_code=error, topics=_refused_fetch_topics(body.topics, error)
            )
        case m.DescribeGroupsRequest():
            return m.DescribeGroupsResponse(groups=[_refused_group(g, error) for g in body.groups])
        case m.ListGroupsRequest():
            return m.ListGroupsResponse(error_code=error)
        case m.DeleteGroupsRequest():
            return m.DeleteGroupsResponse(
                results=[
                    m.DeletableGroupResult(group_id=g, error_code=error) for g in body.groups_names
                ]
            )
        case m.OffsetDeleteRequest():
            return m.OffsetDeleteResponse(error_code=error)
        case m.TxnOffsetCommitRequest():
            return txn_offset_commit_response(
                body, [error for t in body.topics for p in t.partitions]
            )
    raise ValueError(f"not a group API: {type(body).__name__}")

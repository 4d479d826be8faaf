"""A whole group lifecycle at every supported version of every group API, over the wire codec
(the harness encodes each request and decodes each answer), so no version's encoding of any
answer can be wrong without a test noticing."""

from __future__ import annotations

import pytest

from sluice.broker.groups import GROUP_APIS
from sluice.errors import ErrorCode
from sluice.protocol import SUPPORTED, ApiKey, RequestBody
from sluice.protocol import messages as m
from tests.groups.conftest import Harness, join_body

E = ErrorCode


def v(api: ApiKey, level: int) -> int:
    lo, hi = SUPPORTED[api]
    return min(max(level, lo), hi)


def test_group_apis_are_exactly_the_group_api_keys() -> None:
    assert {
        ApiKey.FIND_COORDINATOR,
        ApiKey.JOIN_GROUP,
        ApiKey.SYNC_GROUP,
        ApiKey.HEARTBEAT,
        ApiKey.LEAVE_GROUP,
        ApiKey.OFFSET_COMMIT,
        ApiKey.OFFSET_FETCH,
        ApiKey.DESCRIBE_GROUPS,
        ApiKey.LIST_GROUPS,
        ApiKey.DELETE_GROUPS,
        ApiKey.OFFSET_DELETE,
        ApiKey.TXN_OFFSET_COMMIT,
    } == set(GROUP_APIS)
    assert all(api in SUPPORTED for api in GROUP_APIS)


@pytest.mark.parametrize("level", range(9))
def test_lifecycle_at_every_version(h: Harness, level: int) -> None:
    fc = h.call(
        ApiKey.FIND_COORDINATOR,
        v(ApiKey.FIND_COORDINATOR, level),
        m.FindCoordinatorRequest(key="g", coordinator_keys=["g"]),
    )
    if level >= 4:
        assert fc.coordinators[0].error_code == E.NONE
    else:
        assert fc.error_code == E.NONE

    jv = v(ApiKey.JOIN_GROUP, level)
    body = join_body()
    if jv >= 4:
        first = h.call(ApiKey.JOIN_GROUP, jv, body)
        assert first.error_code == E.MEMBER_ID_REQUIRED
        body = join_body(member_id=first.member_id)
    joined = h.result(h.start_call(ApiKey.JOIN_GROUP, jv, body))
    assert joined.error_code == E.NONE and joined.generation_id == 1
    assert joined.protocol_name == "range"
    me, gen = joined.member_id, joined.generation_id

    sv = v(ApiKey.SYNC_GROUP, level)
    synced = h.result(
        h.start_call(
            ApiKey.SYNC_GROUP,
            sv,
            m.SyncGroupRequest(
                group_id="g",
                generation_id=gen,
                member_id=me,
                protocol_type="consumer",
                protocol_name="range",
                assignments=[m.SyncGroupRequestAssignment(member_id=me, assignment=b"\x00\x01")],
            ),
        )
    )
    assert synced.error_code == E.NONE and bytes(synced.assignment) == b"\x00\x01"
    if sv >= 5:
        assert (synced.protocol_type, synced.protocol_name) == ("consumer", "range")

    hb = h.call(
        ApiKey.HEARTBEAT,
        v(ApiKey.HEARTBEAT, level),
        m.HeartbeatRequest(group_id="g", generation_id=gen, member_id=me),
    )
    assert hb.error_code == E.NONE

    cv = v(ApiKey.OFFSET_COMMIT, level)
    committed = h.call(
        ApiKey.OFFSET_COMMIT,
        cv,
        m.OffsetCommitRequest(
            group_id="g",
            generation_id_or_member_epoch=gen,
            member_id=me,
            topics=[
                m.OffsetCommitRequestTopic(
                    name="t",
                    partitions=[
                        m.OffsetCommitRequestPartition(
                            partition_index=1,
                            committed_offset=42,
                            committed_leader_epoch=5,
                            committed_metadata="md",
                        )
                    ],
                )
            ],
        ),
    )
    assert committed.topics[0].partitions[0].error_code == E.NONE

    fv = v(ApiKey.OFFSET_FETCH, level)
    topics = [m.OffsetFetchRequestTopic(name="t", partition_indexes=[1])]
    if fv >= 8:
        fetched = h.call(
            ApiKey.OFFSET_FETCH,
            fv,
            m.OffsetFetchRequest(groups=[m.OffsetFetchRequestGroup(group_id="g", topics=topics)]),
        )
        part = fetched.groups[0].topics[0].partitions[0]
    else:
        fetched = h.call(ApiKey.OFFSET_FETCH, fv, m.OffsetFetchRequest(group_id="g", topics=topics))
        part = fetched.topics[0].partitions[0]
    assert (part.committed_offset, part.metadata, part.error_code) == (42, "md", E.NONE)
    if fv >= 5:
        assert part.committed_leader_epoch == (5 if cv >= 6 else -1)

    described = h.call(
        ApiKey.DESCRIBE_GROUPS,
        v(ApiKey.DESCRIBE_GROUPS, level),
        m.DescribeGroupsRequest(groups=["g"]),
    )
    group = described.groups[0]
    assert (group.group_state, group.protocol_data, [x.member_id for x in group.members]) == (
        "Stable",
        "range",
        [me],
    )

    listed = h.call(ApiKey.LIST_GROUPS, v(ApiKey.LIST_GROUPS, level), m.ListGroupsRequest())
    assert [(g.group_id, g.protocol_type) for g in listed.groups] == [("g", "consumer")]

    lv = v(ApiKey.LEAVE_GROUP, level)
    left = h.call(
        ApiKey.LEAVE_GROUP,
        lv,
        m.LeaveGroupRequest(group_id="g", member_id=me, members=[m.MemberIdentity(member_id=me)]),
    )
    assert left.error_code == E.NONE
    if lv >= 3:
        assert [(x.member_id, x.error_code) for x in left.members] == [(me, E.NONE)]

    od = h.call(
        ApiKey.OFFSET_DELETE,
        0,
        m.OffsetDeleteRequest(
            group_id="g",
            topics=[
                m.OffsetDeleteRequestTopic(
                    name="t", partitions=[m.OffsetDeleteRequestPartition(partition_index=0)]
                )
            ],
        ),
    )
    assert od.error_code == E.NONE and od.topics[0].partitions[0].error_code == E.NONE

    deleted = h.call(
        ApiKey.DELETE_GROUPS,
        v(ApiKey.DELETE_GROUPS, level),
        m.DeleteGroupsRequest(groups_names=["g"]),
    )
    assert [(r.group_id, r.error_code) for r in deleted.results] == [("g", E.NONE)]


@pytest.mark.parametrize("api", sorted(GROUP_APIS))
def test_closed_coordinator_answers_every_api_with_an_error(h: Harness, api: ApiKey) -> None:
    h.run(h.coordinator.close())
    lo, hi = SUPPORTED[api]
    for version in range(lo, hi + 1):
        resp = h.call(api, version, _minimal(api))
        codes = set(
            _error_codes(resp)
        )  # 0s: fields this version does not have, decoded as defaults
        assert E.COORDINATOR_NOT_AVAILABLE in codes and codes <= {0, E.COORDINATOR_NOT_AVAILABLE}, (
            version,
            resp,
        )


def _error_codes(value: object) -> list[int]:
    """Every error code anywhere in a response (top level, per group, per partition)."""
    out: list[int] = []
    if isinstance(value, list):
        for item in value:
            out.extend(_error_codes(item))
    elif hasattr(value, "__dataclass_fields__"):
        for name in value.__dataclass_fields__:
            child = getattr(value, name)
            if name == "error_code":
                out.append(child)
            else:
                out.extend(_error_codes(child))
    return out


def _minimal(api: ApiKey) -> RequestBody:
    match api:
        case ApiKey.FIND_COORDINATOR:
            return m.FindCoordinatorRequest(key="g", coordinator_keys=["g"])
        case ApiKey.JOIN_GROUP:
            return join_body()
        case ApiKey.SYNC_GROUP:
            return m.SyncGroupRequest(group_id="g", generation_id=1, member_id="x")
        case ApiKey.HEARTBEAT:
            return m.HeartbeatRequest(group_id="g", generation_id=1, member_id="x")
        case ApiKey.LEAVE_GROUP:
            return m.LeaveGroupRequest(
                group_id="g", member_id="x", members=[m.MemberIdentity(member_id="x")]
            )
        case ApiKey.OFFSET_COMMIT:
            return m.OffsetCommitRequest(
                group_id="g",
                member_id="x",
                topics=[
                    m.OffsetCommitRequestTopic(
                        name="t",
                        partitions=[
                            m.OffsetCommitRequestPartition(partition_index=0, committed_offset=1)
                        ],
                    )
                ],
            )
        case ApiKey.OFFSET_FETCH:
            topics = [m.OffsetFetchRequestTopic(name="t", partition_indexes=[0])]
            return m.OffsetFetchRequest(
                group_id="g",
                topics=topics,
                groups=[m.OffsetFetchRequestGroup(group_id="g", topics=topics)],
            )
        case ApiKey.DESCRIBE_GROUPS:
            return m.DescribeGroupsRequest(groups=["g"])
        case ApiKey.LIST_GROUPS:
            return m.ListGroupsRequest()
        case ApiKey.DELETE_GROUPS:
            return m.DeleteGroupsRequest(groups_names=["g"])
        case ApiKey.OFFSET_DELETE:
            return m.OffsetDeleteRequest(group_id="g")
        case ApiKey.TXN_OFFSET_COMMIT:
            return m.TxnOffsetCommitRequest(
                transactional_id="tx",
                group_id="g",
                producer_id=1,
                producer_epoch=0,
                topics=[
                    m.TxnOffsetCommitRequestTopic(
                        name="t",
                        partitions=[
                            m.TxnOffsetCommitRequestPartition(
                                partition_index=0, committed_offset=1, committed_metadata=None
                            )
                        ],
                    )
                ],
            )
    raise AssertionError(api)

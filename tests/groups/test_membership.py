"""The classic group protocol, driven through ``GroupCoordinator.handle`` with typed requests:
member ids, joins, leader election, generations, protocol selection, sync, heartbeats, leaving,
session/rebalance/sync timeouts, static membership and the cooperative rejoin flow."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sluice.broker.groups import GroupConfig
from sluice.broker.groups.consumer_protocol import (
    Assignment,
    encode_assignment,
    parse_subscription,
)
from sluice.errors import ErrorCode
from sluice.protocol import ApiKey
from sluice.protocol import messages as m
from tests.groups.conftest import NODE, Harness, join_body, sub

E = ErrorCode


def begin_join(h: Harness, version: int = 5, **kw: Any) -> asyncio.Task[m.JoinGroupResponse]:
    """A new member's JoinGroup, past MEMBER_ID_REQUIRED on v4+; returns the parked join."""
    if version >= 4 and not kw.get("member_id") and kw.get("instance_id") is None:
        first: m.JoinGroupResponse = h.call(ApiKey.JOIN_GROUP, version, join_body(**kw))
        assert first.error_code == E.MEMBER_ID_REQUIRED
        assert first.member_id.startswith("client-")
        kw["member_id"] = first.member_id
    return h.start_call(ApiKey.JOIN_GROUP, version, join_body(**kw))


def rejoin(
    h: Harness, member_id: str, version: int = 5, **kw: Any
) -> asyncio.Task[m.JoinGroupResponse]:
    return h.start_call(ApiKey.JOIN_GROUP, version, join_body(member_id=member_id, **kw))


def sync(
    h: Harness,
    member_id: str,
    generation: int,
    assignments: dict[str, bytes] | None = None,
    *,
    group: str = "g",
    version: int = 3,
    instance_id: str | None = None,
    protocol: tuple[str | None, str | None] = (None, None),
) -> asyncio.Task[m.SyncGroupResponse]:
    body = m.SyncGroupRequest(
        group_id=group,
        generation_id=generation,
        member_id=member_id,
        group_instance_id=instance_id,
        protocol_type=protocol[0],
        protocol_name=protocol[1],
        assignments=[
            m.SyncGroupRequestAssignment(member_id=k, assignment=v)
            for k, v in (assignments or {}).items()
        ],
    )
    return h.start_call(ApiKey.SYNC_GROUP, version, body)


def heartbeat(
    h: Harness, member_id: str, generation: int, *, group: str = "g", instance_id: str | None = None
) -> int:
    body = m.HeartbeatRequest(
        group_id=group, generation_id=generation, member_id=member_id, group_instance_id=instance_id
    )
    resp: m.HeartbeatResponse = h.call(ApiKey.HEARTBEAT, 4, body)
    return resp.error_code


def describe(h: Harness, group: str = "g") -> m.DescribedGroup:
    resp: m.DescribeGroupsResponse = h.call(
        ApiKey.DESCRIBE_GROUPS, 5, m.DescribeGroupsRequest(groups=[group])
    )
    return resp.groups[0]


def asg(*partitions: int, topic: str = "t") -> bytes:
    return encode_assignment(Assignment({topic: list(partitions)}))


def stable_pair(h: Harness) -> tuple[str, str, int]:
    """Two members in a Stable group: (leader, follower, generation)."""
    t1 = begin_join(h)
    r1 = h.result(t1)
    assert r1.error_code == E.NONE and r1.generation_id == 1 and r1.leader == r1.member_id
    a = r1.member_id
    s1 = h.result(sync(h, a, 1, {a: asg(0, 1, 2, 3, 4, 5)}))
    assert s1.error_code == E.NONE
    t2 = begin_join(h)
    assert not t2.done()
    assert heartbeat(h, a, 1) == E.REBALANCE_IN_PROGRESS
    t1b = rejoin(h, a)
    r1b, r2 = h.result(t1b), h.result(t2)
    b = r2.member_id
    assert r1b.generation_id == r2.generation_id == 2
    assert r1b.leader == a and r2.leader == a
    sa = sync(h, a, 2, {a: asg(0, 1, 2), b: asg(3, 4, 5)})
    sb = sync(h, b, 2)
    assert h.result(sa).assignment == asg(0, 1, 2)
    assert h.result(sb).assignment == asg(3, 4, 5)
    return a, b, 2


# -- FindCoordinator --------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 1, 2, 3])
def test_find_coordinator_answers_this_node(h: Harness, version: int) -> None:
    resp = h.call(ApiKey.FIND_COORDINATOR, version, m.FindCoordinatorRequest(key="g", key_type=0))
    assert (resp.error_code, resp.node_id, resp.host, resp.port) == (E.NONE, *NODE)


def test_find_coordinator_v4_batches_and_answers_transaction_keys(h: Harness) -> None:
    resp = h.call(
        ApiKey.FIND_COORDINATOR,
        4,
        m.FindCoordinatorRequest(key_type=0, coordinator_keys=["a", "b"]),
    )
    assert [(c.key, c.error_code, c.node_id, c.port) for c in resp.coordinators] == [
        ("a", E.NONE, 1, 9092),
        ("b", E.NONE, 1, 9092),
    ]
    # Transactional ids (key type 1) are coordinated here too: this is the only node.
    txn = h.call(
        ApiKey.FIND_COORDINATOR, 4, m.FindCoordinatorRequest(key_type=1, coordinator_keys=["x"])
    )
    assert [(c.key, c.error_code, c.node_id, c.port) for c in txn.coordinators] == [
        ("x", E.NONE, 1, 9092)
    ]
    old = h.call(ApiKey.FIND_COORDINATOR, 2, m.FindCoordinatorRequest(key="x", key_type=1))
    assert (old.error_code, old.node_id, old.host, old.port) == (E.NONE, *NODE)
    other = h.call(ApiKey.FIND_COORDINATOR, 2, m.FindCoordinatorRequest(key="x", key_type=2))
    assert other.error_code == E.INVALID_REQUEST


# -- joining -----------------------------------------------------------------------------------------


def test_member_id_required_from_v4_and_single_member_generation(h: Harness) -> None:
    task = begin_join(h, version=4)
    r = h.result(task)
    assert r.error_code == E.NONE
    assert r.generation_id == 1
    assert r.leader == r.member_id
    assert r.protocol_name == "range"
    assert [(x.member_id, parse_subscription(x.metadata).topics) for x in r.members] == [
        (r.member_id, ["t"])
    ]
    assert describe(h).group_state == "CompletingRebalance"
    s = h.result(sync(h, r.member_id, 1, {r.member_id: asg(0, 1)}))
    assert s.error_code == E.NONE and s.assignment == asg(0, 1)
    d = describe(h)
    assert (
        d.group_state == "Stable" and d.protocol_type == "consumer" and d.protocol_data == "range"
    )
    assert d.members[0].member_assignment == asg(0, 1)
    assert d.members[0].client_host == "/127.0.0.1"
    assert d.members[0].client_id == "client"


def test_v3_join_needs_no_member_id_round_trip(h: Harness) -> None:
    r = h.result(h.start_call(ApiKey.JOIN_GROUP, 3, join_body()))
    assert r.error_code == E.NONE and r.generation_id == 1 and r.member_id


def test_v0_join_uses_session_timeout_as_rebalance_timeout(h: Harness) -> None:
    r = h.result(h.start_call(ApiKey.JOIN_GROUP, 0, join_body(rebalance_timeout_ms=-1)))
    assert r.error_code == E.NONE
    assert h.coordinator.groups["g"].rebalance_timeout_ms == 10_000


def test_pending_member_id_expires_after_session_timeout(h: Harness) -> None:
    first = h.call(ApiKey.JOIN_GROUP, 5, join_body())
    assert first.error_code == E.MEMBER_ID_REQUIRED
    assert first.member_id in h.coordinator.groups["g"].pending_members
    h.advance(11)
    assert first.member_id not in h.coordinator.groups["g"].pending_members
    late = h.result(rejoin(h, first.member_id))
    assert late.error_code == E.UNKNOWN_MEMBER_ID


def test_join_errors(h: Harness) -> None:
    bad_session = h.call(ApiKey.JOIN_GROUP, 5, join_body(session_timeout_ms=1000))
    assert bad_session.error_code == E.INVALID_SESSION_TIMEOUT
    too_long = h.call(ApiKey.JOIN_GROUP, 5, join_body(session_timeout_ms=10_000_000))
    assert too_long.error_code == E.INVALID_SESSION_TIMEOUT
    assert h.call(ApiKey.JOIN_GROUP, 5, join_body(group="")).error_code == E.INVALID_GROUP_ID
    unknown = h.call(ApiKey.JOIN_GROUP, 5, join_body(group="nope", member_id="ghost"))
    assert unknown.error_code == E.UNKNOWN_MEMBER_ID
    no_protocols = h.call(ApiKey.JOIN_GROUP, 3, join_body(protocols=[]))
    assert no_protocols.error_code == E.INCONSISTENT_GROUP_PROTOCOL
    no_type = h.call(ApiKey.JOIN_GROUP, 3, join_body(protocol_type=""))
    assert no_type.error_code == E.INCONSISTENT_GROUP_PROTOCOL


def test_protocol_selection_mixes_clients_and_rejects_strangers(h: Harness) -> None:
    md = sub("t")
    a = h.result(begin_join(h, protocols=[("range", md), ("roundrobin", md)]))
    h.result(sync(h, a.member_id, 1, {}))
    b_task = begin_join(h, protocols=[("roundrobin", md)])
    c_task = begin_join(
        h, protocols=[("cooperative-sticky", md), ("roundrobin", md), ("range", md)]
    )
    assert not b_task.done() and not c_task.done()
    # A member speaking none of the group's common protocols, or another protocol type, is refused.
    assert h.call(ApiKey.JOIN_GROUP, 3, join_body(protocols=[("sticky", md)])).error_code == (
        E.INCONSISTENT_GROUP_PROTOCOL
    )
    assert h.call(ApiKey.JOIN_GROUP, 3, join_body(protocol_type="connect")).error_code == (
        E.INCONSISTENT_GROUP_PROTOCOL
    )
    a2 = rejoin(h, a.member_id, protocols=[("range", md), ("roundrobin", md)])
    results = [h.result(t) for t in (a2, b_task, c_task)]
    assert {r.protocol_name for r in results} == {"roundrobin"}
    assert {r.generation_id for r in results} == {2}
    leader = [r for r in results if r.members]
    assert len(leader) == 1 and leader[0].member_id == a.member_id
    assert len(leader[0].members) == 3


def test_a_protocol_listed_twice_counts_once(h: Harness) -> None:
    """A JoinGroup naming one protocol twice (the wire allows it; Kafka counts a member's
    protocols as a set) neither fails nor locks the group: it used to raise in the protocol
    vote (UNKNOWN_SERVER_ERROR, the group stuck in PreparingRebalance for five minutes) and to
    refuse every other joiner INCONSISTENT_GROUP_PROTOCOL."""
    md, other = sub("t"), sub("t", "u")
    a = h.result(begin_join(h, protocols=[("range", md), ("range", other)]))
    assert a.error_code == E.NONE and a.protocol_name == "range" and a.generation_id == 1
    # The first metadata listed is the member's (Kafka's MemberMetadata.metadata).
    assert [bytes(x.metadata) for x in a.members] == [md]
    h.result(sync(h, a.member_id, 1, {a.member_id: asg(0)}))
    b_task = begin_join(h, protocols=[("roundrobin", md), ("range", md)])
    assert not b_task.done()
    # A member whose only protocol was listed twice does not block the vote either.
    c_task = begin_join(h, protocols=[("range", md), ("range", md)])
    assert not c_task.done()
    a2 = rejoin(h, a.member_id, protocols=[("range", md), ("range", other)])
    results = [h.result(t) for t in (a2, b_task, c_task)]
    assert {(r.error_code, r.protocol_name, r.generation_id) for r in results} == {
        (E.NONE, "range", 2)
    }
    assert describe(h).group_state == "CompletingRebalance"


def test_join_v7_reports_protocol_type_and_v6_does_not(h: Harness) -> None:
    r7 = h.result(h.start_call(ApiKey.JOIN_GROUP, 7, join_body(member_id="", instance_id="i7")))
    assert r7.protocol_type == "consumer" and r7.protocol_name == "range"


# -- rebalancing -------------------------------------------------------------------------------------


def test_two_members_rebalance_and_split(h: Harness) -> None:
    a, b, gen = stable_pair(h)
    d = describe(h)
    assert d.group_state == "Stable"
    assert {x.member_id: x.member_assignment for x in d.members} == {
        a: asg(0, 1, 2),
        b: asg(3, 4, 5),
    }
    assert heartbeat(h, a, gen) == E.NONE
    assert heartbeat(h, b, gen) == E.NONE


def test_follower_rejoin_with_same_metadata_in_stable_gets_current_generation(h: Harness) -> None:
    _a, b, gen = stable_pair(h)
    r = h.result(rejoin(h, b))
    assert r.error_code == E.NONE and r.generation_id == gen and r.members == []
    assert describe(h).group_state == "Stable"


def test_leader_rejoin_in_stable_forces_rebalance(h: Harness) -> None:
    a, b, gen = stable_pair(h)
    ta = rejoin(h, a)
    assert not ta.done()
    assert describe(h).group_state == "PreparingRebalance"
    assert heartbeat(h, b, gen) == E.REBALANCE_IN_PROGRESS
    tb = rejoin(h, b)
    assert h.result(ta).generation_id == h.result(tb).generation_id == gen + 1


def test_session_timeout_removes_member_and_rebalances(h: Harness) -> None:
    a, b, gen = stable_pair(h)
    h.advance(6)
    assert heartbeat(h, a, gen) == E.NONE  # a keeps its session alive; b goes silent
    h.advance(5)
    group = h.coordinator.groups["g"]
    assert b not in group.members
    assert describe(h).group_state == "PreparingRebalance"
    assert heartbeat(h, b, gen) == E.UNKNOWN_MEMBER_ID
    assert heartbeat(h, a, gen) == E.REBALANCE_IN_PROGRESS
    r = h.result(rejoin(h, a))
    assert r.generation_id == gen + 1 and [x.member_id for x in r.members] == [a]


def test_timers_watch_only_groups_with_deadlines_and_a_group_that_wakes_again(
    h: Harness,
) -> None:
    """The 100 ms timer polls only groups that may have a deadline (polling every group took
    13 ms per 10,000 groups that only hold offsets, each tick). A group that went idle and is
    joined again is watched again: its pending member id and its member's session expire."""
    for i in range(50):
        body = m.OffsetCommitRequest(
            group_id=f"simple-{i}",
            generation_id_or_member_epoch=-1,
            member_id="",
            topics=[
                m.OffsetCommitRequestTopic(
                    name="t",
                    partitions=[m.OffsetCommitRequestPartition(partition_index=0, committed_offset=1)],
                )
            ],
        )
        h.call(ApiKey.OFFSET_COMMIT, 8, body)
    a = h.result(begin_join(h)).member_id
    h.result(sync(h, a, 1, {a: asg(0)}))
    timed = h.coordinator.membership._timed  # white-box: what the timers poll
    assert set(timed) == {"g"}
    leave = m.LeaveGroupRequest(group_id="g", members=[m.MemberIdentity(member_id=a)])
    assert h.call(ApiKey.LEAVE_GROUP, 4, leave).error_code == E.NONE
    h.advance(0.1)
    assert describe(h).group_state == "Empty" and set(timed) == set()
    # Joined again: a member id handed out (MEMBER_ID_REQUIRED) that never comes back expires.
    first = h.call(ApiKey.JOIN_GROUP, 5, join_body())
    assert first.error_code == E.MEMBER_ID_REQUIRED
    h.advance(11)
    assert h.coordinator.groups["g"].pending_members == {}
    # And a member that joins and goes silent is removed when its session expires.
    b = h.result(begin_join(h)).member_id
    gen = h.coordinator.groups["g"].generation_id
    h.result(sync(h, b, gen, {b: asg(0)}))
    assert describe(h).group_state == "Stable"
    h.advance(11)
    assert describe(h).group_state == "Empty"
    assert heartbeat(h, b, gen) == E.UNKNOWN_MEMBER_ID


def test_rebalance_timeout_drops_members_that_do_not_rejoin(h: Harness) -> None:
    a, b, gen = stable_pair(h)
    ta = rejoin(h, a)  # leader asks for a rebalance; b keeps heartbeating but never rejoins
    for _ in range(8):
        h.advance(4)
        if b in h.coordinator.groups["g"].members:
            assert heartbeat(h, b, gen) == E.REBALANCE_IN_PROGRESS
    r = h.result(ta)
    assert r.generation_id == gen + 1
    assert [x.member_id for x in r.members] == [a]
    assert heartbeat(h, b, gen) == E.UNKNOWN_MEMBER_ID


def test_leader_leaving_elects_a_new_leader(h: Harness) -> None:
    a, b, gen = stable_pair(h)
    resp = h.call(ApiKey.LEAVE_GROUP, 0, m.LeaveGroupRequest(group_id="g", member_id=a))
    assert resp.error_code == E.NONE
    r = h.result(rejoin(h, b))
    assert r.leader == b and r.generation_id == gen + 1


def test_last_member_leaving_empties_the_group(h: Harness) -> None:
    r = h.result(begin_join(h))
    h.result(sync(h, r.member_id, 1, {}))
    resp = h.call(
        ApiKey.LEAVE_GROUP,
        3,
        m.LeaveGroupRequest(group_id="g", members=[m.MemberIdentity(member_id=r.member_id)]),
    )
    assert resp.error_code == E.NONE and resp.members[0].error_code == E.NONE
    d = describe(h)
    assert d.group_state == "Empty" and d.members == []
    assert h.coordinator.groups["g"].generation_id == 2


def test_leave_group_errors(h: Harness) -> None:
    r = h.call(ApiKey.LEAVE_GROUP, 1, m.LeaveGroupRequest(group_id="nope", member_id="x"))
    assert r.error_code == E.UNKNOWN_MEMBER_ID
    a, b, _gen = stable_pair(h)
    batch = h.call(
        ApiKey.LEAVE_GROUP,
        4,
        m.LeaveGroupRequest(
            group_id="g",
            members=[m.MemberIdentity(member_id="ghost"), m.MemberIdentity(member_id=b)],
        ),
    )
    assert [x.error_code for x in batch.members] == [E.UNKNOWN_MEMBER_ID, E.NONE]
    assert h.call(
        ApiKey.LEAVE_GROUP, 0, m.LeaveGroupRequest(group_id="", member_id=a)
    ).error_code == (E.INVALID_GROUP_ID)


def test_heartbeat_and_sync_errors(h: Harness) -> None:
    assert heartbeat(h, "x", 1, group="nope") == E.UNKNOWN_MEMBER_ID
    a, b, gen = stable_pair(h)
    assert heartbeat(h, "ghost", gen) == E.UNKNOWN_MEMBER_ID
    assert heartbeat(h, a, gen - 1) == E.ILLEGAL_GENERATION
    assert heartbeat(h, a, gen, group="") == E.INVALID_GROUP_ID
    assert h.result(sync(h, a, gen - 1)).error_code == E.ILLEGAL_GENERATION
    assert h.result(sync(h, "ghost", gen)).error_code == E.UNKNOWN_MEMBER_ID
    assert h.result(sync(h, a, gen, group="nope")).error_code == E.UNKNOWN_MEMBER_ID
    wrong = sync(h, a, gen, version=5, protocol=("consumer", "roundrobin"))
    assert h.result(wrong).error_code == E.INCONSISTENT_GROUP_PROTOCOL
    right = h.result(sync(h, a, gen, version=5, protocol=("consumer", "range")))
    assert (right.error_code, right.protocol_type, right.protocol_name) == (
        E.NONE,
        "consumer",
        "range",
    )
    rejoin(h, a)
    assert h.result(sync(h, b, gen)).error_code == E.REBALANCE_IN_PROGRESS


def test_followers_wait_for_the_leaders_assignment(h: Harness) -> None:
    ta = begin_join(h)
    a = h.result(ta).member_id
    h.result(sync(h, a, 1, {a: asg(0)}))
    tb = begin_join(h)
    ta2 = rejoin(h, a)
    b = h.result(tb).member_id
    h.result(ta2)
    follower = sync(h, b, 2)
    assert not follower.done()
    assert describe(h).group_state == "CompletingRebalance"
    assert heartbeat(h, b, 2) == E.NONE  # heartbeats during CompletingRebalance are fine
    h.result(sync(h, a, 2, {a: asg(0, 1, 2), b: asg(3, 4, 5)}))
    assert h.result(follower).assignment == asg(3, 4, 5)


def test_a_leader_retrying_sync_group_stores_one_assignment(h: Harness) -> None:
    """A leader's second SyncGroup while its first is being stored (a client retrying after
    its request timed out) waits for the first: the assignment the members are given is the
    one stored, so a restart (and a static member rejoining from it) brings back the same one.
    A second write used to land after the first was handed out, so the group on disk held an
    assignment no member had."""
    a = h.result(begin_join(h)).member_id
    b_task = begin_join(h)
    a_task = rejoin(h, a)
    b = h.result(b_task).member_id
    assert h.result(a_task).generation_id == 2
    first = {a: asg(0, 1, 2), b: asg(3, 4, 5)}
    retry = {a: asg(3, 4, 5), b: asg(0, 1, 2)}

    def sync_now(assignment: dict[str, bytes]) -> asyncio.Task[m.SyncGroupResponse]:
        body = m.SyncGroupRequest(
            group_id="g",
            generation_id=2,
            member_id=a,
            assignments=[
                m.SyncGroupRequestAssignment(member_id=k, assignment=v)
                for k, v in assignment.items()
            ],
        )
        # Not settled: the retry arrives while the first assignment is still being written.
        return h.loop.create_task(h.over_the_wire(ApiKey.SYNC_GROUP, 3, body, "client"))

    s1, s2 = sync_now(first), sync_now(retry)
    follower = sync(h, b, 2)
    assert h.result(s1).error_code == E.REBALANCE_IN_PROGRESS  # superseded by the retry
    answered = h.result(s2)
    assert (answered.error_code, bytes(answered.assignment)) == (E.NONE, first[a])
    assert bytes(h.result(follower).assignment) == first[b]
    h.restart(crash=True)
    stored = {x.member_id: bytes(x.member_assignment) for x in describe(h).members}
    assert stored == first


def test_member_that_never_syncs_is_removed_after_the_rebalance_timeout(h: Harness) -> None:
    a, b, gen = stable_pair(h)
    ta = rejoin(h, a)
    tb = rejoin(h, b)
    h.result(ta), h.result(tb)
    h.result(sync(h, a, gen + 1, {a: asg(0, 1, 2), b: asg(3, 4, 5)}))
    # b never sends SyncGroup; the rebalance timeout (30 s) ends its membership.
    for _ in range(8):
        h.advance(4)
        assert heartbeat(h, a, gen + 1) in (E.NONE, E.REBALANCE_IN_PROGRESS)
    assert b not in h.coordinator.groups["g"].members
    assert describe(h).group_state == "PreparingRebalance"


def test_join_during_completing_rebalance_cancels_pending_syncs(h: Harness) -> None:
    ta = begin_join(h)
    a = h.result(ta).member_id
    follower_sync = None
    h.result(sync(h, a, 1, {}))
    tb = begin_join(h)
    ta2 = rejoin(h, a)
    b = h.result(tb).member_id
    h.result(ta2)
    follower_sync = sync(h, b, 2)
    tc = begin_join(h)  # a third member arrives before the leader's SyncGroup
    assert h.result(follower_sync).error_code == E.REBALANCE_IN_PROGRESS
    assert describe(h).group_state == "PreparingRebalance"
    ta3, tb3 = rejoin(h, a), rejoin(h, b)
    assert {h.result(t).generation_id for t in (ta3, tb3, tc)} == {3}


def test_retried_join_supersedes_the_parked_one(h: Harness) -> None:
    a, b, gen = stable_pair(h)
    first = rejoin(h, a)
    second = rejoin(h, a)
    assert h.result(first).error_code == E.REBALANCE_IN_PROGRESS
    tb = rejoin(h, b)
    assert h.result(second).generation_id == h.result(tb).generation_id == gen + 1


def test_initial_rebalance_delay_gathers_a_starting_fleet(make_harness: Any) -> None:
    h = make_harness(GroupConfig(initial_rebalance_delay_ms=3000))
    h.run(h.logs.create_topic("t", 6))
    t1 = begin_join(h)
    h.advance(2)
    t2 = begin_join(h)
    h.advance(2)  # the first delay is over, but a member arrived during it: wait one more
    assert not t1.done()
    h.advance(3)
    r1, r2 = h.result(t1), h.result(t2)
    assert r1.generation_id == r2.generation_id == 1
    assert len(r1.members or r2.members) == 2


def test_close_answers_parked_joins(h: Harness) -> None:
    a, b, gen = stable_pair(h)
    ta = rejoin(h, a)
    h.run(h.coordinator.close())
    assert h.result(ta).error_code == E.NOT_COORDINATOR
    after = h.call(
        ApiKey.HEARTBEAT, 4, m.HeartbeatRequest(group_id="g", generation_id=gen, member_id=b)
    )
    assert after.error_code == E.COORDINATOR_NOT_AVAILABLE


def test_begin_shutdown_releases_parked_requests_but_keeps_committing(h: Harness) -> None:
    a, b, gen = stable_pair(h)
    ta = rejoin(h, a)
    h.coordinator.begin_shutdown()
    assert h.result(ta).error_code == E.NOT_COORDINATOR
    assert h.call(ApiKey.JOIN_GROUP, 5, join_body(member_id=b)).error_code == E.NOT_COORDINATOR
    commit = h.call(
        ApiKey.OFFSET_COMMIT,
        8,
        m.OffsetCommitRequest(
            group_id="g",
            generation_id_or_member_epoch=gen,
            member_id=b,
            topics=[
                m.OffsetCommitRequestTopic(
                    name="t",
                    partitions=[
                        m.OffsetCommitRequestPartition(partition_index=3, committed_offset=1)
                    ],
                )
            ],
        ),
    )
    assert commit.topics[0].partitions[0].error_code == E.NONE


def test_a_cancelled_join_still_counts_as_joined(h: Harness) -> None:
    """The client's connection dropped while parked: Kafka cannot tell, and neither do we; the
    rebalance completes and the member catches up by rejoining."""
    a, b, gen = stable_pair(h)
    ta = rejoin(h, a)
    ta.cancel()
    h.settle()
    tb = rejoin(h, b)
    assert h.result(tb).generation_id == gen + 1


# -- static membership ---------------------------------------------------------------------------


def static_join(
    h: Harness, instance: str, member_id: str = "", **kw: Any
) -> asyncio.Task[m.JoinGroupResponse]:
    return h.start_call(
        ApiKey.JOIN_GROUP, 5, join_body(member_id=member_id, instance_id=instance, **kw)
    )


def test_static_member_restart_keeps_assignment_without_rebalance(h: Harness) -> None:
    ra = h.result(static_join(h, "ia"))
    a = ra.member_id
    assert ra.error_code == E.NONE and a.startswith("ia-")
    h.result(sync(h, a, 1, {a: asg(0, 1, 2)}, instance_id="ia"))
    tb = static_join(h, "ib")
    ta = static_join(h, "ia", a)
    rb, ra2 = h.result(tb), h.result(ta)
    b = rb.member_id
    h.result(sync(h, a, 2, {a: asg(0, 1, 2), b: asg(3, 4, 5)}, instance_id="ia"))
    h.result(sync(h, b, 2, instance_id="ib"))
    # b restarts: it comes back without its member id, under the same instance id.
    rb2 = h.result(static_join(h, "ib"))
    assert rb2.error_code == E.NONE
    assert rb2.member_id != b and rb2.generation_id == 2
    assert rb2.leader == a and rb2.members == []
    assert describe(h).group_state == "Stable"
    sb = h.result(sync(h, rb2.member_id, 2, instance_id="ib"))
    assert sb.assignment == asg(3, 4, 5)
    # The old incarnation is fenced, wherever it shows up.
    assert heartbeat(h, b, 2, instance_id="ib") == E.FENCED_INSTANCE_ID
    assert h.result(sync(h, b, 2, instance_id="ib")).error_code == E.FENCED_INSTANCE_ID
    assert h.result(static_join(h, "ib", b)).error_code == E.FENCED_INSTANCE_ID
    assert heartbeat(h, a, 2, instance_id="ia") == E.NONE
    assert ra2.generation_id == 2


def test_static_leader_restart_is_not_told_it_leads(h: Harness) -> None:
    ra = h.result(static_join(h, "ia"))
    a = ra.member_id
    h.result(sync(h, a, 1, {a: asg(0)}, instance_id="ia"))
    again = h.result(static_join(h, "ia"))
    assert again.member_id != a
    assert again.leader == a  # the old id: the new incarnation must not run the assignor
    assert h.coordinator.groups["g"].leader_id == again.member_id


def test_static_member_with_changed_protocols_triggers_rebalance(h: Harness) -> None:
    md = sub("t")
    a = h.result(static_join(h, "ia", protocols=[("range", md), ("roundrobin", md)])).member_id
    h.result(sync(h, a, 1, {}, instance_id="ia"))
    t = static_join(h, "ia", protocols=[("roundrobin", md)])
    r = h.result(t)
    assert r.generation_id == 2 and r.protocol_name == "roundrobin"


def test_static_member_session_expiry_removes_it(h: Harness) -> None:
    a = h.result(static_join(h, "ia")).member_id
    h.result(sync(h, a, 1, {}, instance_id="ia"))
    h.advance(11)
    assert describe(h).group_state == "Empty"
    assert heartbeat(h, a, 1, instance_id="ia") == E.UNKNOWN_MEMBER_ID


def test_a_static_restart_with_a_longer_session_timeout_is_judged_by_it(h: Harness) -> None:
    """A consumer redeployed with a larger session.timeout.ms: the rejoin's timeouts replace the
    old ones (Kafka's updateMember), even though the static rejoin causes no rebalance."""
    a = h.result(static_join(h, "ia", session_timeout_ms=6_000)).member_id
    h.result(sync(h, a, 1, {}, instance_id="ia"))
    again = h.result(static_join(h, "ia", session_timeout_ms=30_000, rebalance_timeout_ms=45_000))
    assert again.generation_id == 1
    member = h.coordinator.groups["g"].members[again.member_id]
    assert (member.session_timeout_ms, member.rebalance_timeout_ms) == (30_000, 45_000)
    h.advance(20)  # past the old 6 s session, within the new 30 s one
    assert describe(h).group_state == "Stable"
    h.advance(11)
    assert describe(h).group_state == "Empty"


def test_a_dynamic_rejoin_updates_the_member_timeouts(h: Harness) -> None:
    first = h.result(begin_join(h, session_timeout_ms=6_000))
    a = first.member_id
    h.result(sync(h, a, first.generation_id, {a: asg(0)}))
    r = h.result(rejoin(h, a, session_timeout_ms=30_000, rebalance_timeout_ms=40_000))
    assert r.error_code == E.NONE
    member = h.coordinator.groups["g"].members[a]
    assert (member.session_timeout_ms, member.rebalance_timeout_ms) == (30_000, 40_000)
    assert h.coordinator.groups["g"].rebalance_timeout_ms == 40_000
    h.result(sync(h, a, r.generation_id, {a: asg(0)}))
    h.advance(20)  # past the old 6 s session, within the new 30 s one
    assert describe(h).group_state == "Stable"


def test_admin_removes_static_member_by_instance_id(h: Harness) -> None:
    a = h.result(static_join(h, "ia")).member_id
    h.result(sync(h, a, 1, {}, instance_id="ia"))
    resp = h.call(
        ApiKey.LEAVE_GROUP,
        4,
        m.LeaveGroupRequest(
            group_id="g",
            members=[
                m.MemberIdentity(member_id="", group_instance_id="ia"),
                m.MemberIdentity(member_id="", group_instance_id="nobody"),
            ],
        ),
    )
    assert [x.error_code for x in resp.members] == [E.NONE, E.UNKNOWN_MEMBER_ID]
    assert describe(h).group_state == "Empty"


def test_static_members_that_miss_a_rebalance_stay(h: Harness) -> None:
    """Dynamic members that miss the join phase are dropped; static ones keep their place."""
    a = h.result(static_join(h, "ia")).member_id
    h.result(sync(h, a, 1, {}, instance_id="ia"))
    tb = static_join(h, "ib")
    for _ in range(8):
        h.advance(4)
        heartbeat(h, a, 1, instance_id="ia")
    rb = h.result(tb)
    assert rb.error_code == E.NONE and rb.generation_id == 2
    assert rb.leader == rb.member_id
    assert {x.member_id for x in rb.members} == {a, rb.member_id}
    assert a in h.coordinator.groups["g"].members


# -- the cooperative (incremental) rebalance flow --------------------------------------------------


def test_cooperative_rejoin_flow_keeps_owned_partitions_committable(h: Harness) -> None:
    """librdkafka's cooperative-sticky is client-side; the broker's part is to let members keep
    consuming (heartbeats say REBALANCE_IN_PROGRESS, commits still succeed) while they rejoin
    with their owned partitions, and to run the follow-up rebalance after revocations."""
    coop = "cooperative-sticky"
    a_owned = {"t": [0, 1, 2, 3, 4, 5]}
    a = h.result(begin_join(h, protocols=[(coop, sub("t", owned={}))])).member_id
    h.result(sync(h, a, 1, {a: asg(0, 1, 2, 3, 4, 5)}))
    tb = begin_join(h, protocols=[(coop, sub("t"))])
    assert heartbeat(h, a, 1) == E.REBALANCE_IN_PROGRESS
    commit = h.call(
        ApiKey.OFFSET_COMMIT,
        8,
        m.OffsetCommitRequest(
            group_id="g",
            generation_id_or_member_epoch=1,
            member_id=a,
            topics=[
                m.OffsetCommitRequestTopic(
                    name="t",
                    partitions=[
                        m.OffsetCommitRequestPartition(partition_index=5, committed_offset=7)
                    ],
                )
            ],
        ),
    )
    assert commit.topics[0].partitions[0].error_code == E.NONE  # allowed in PreparingRebalance
    ta = rejoin(h, a, protocols=[(coop, sub("t", owned=a_owned))])
    ra, rb = h.result(ta), h.result(tb)
    b = rb.member_id
    leader_view = {x.member_id: parse_subscription(x.metadata).owned_partitions for x in ra.members}
    assert leader_view == {a: a_owned, b: {}}
    # First round: the leader revokes 3-5 from itself but does not yet give them to b.
    h.result(sync(h, a, 2, {a: asg(0, 1, 2), b: asg()}))
    h.result(sync(h, b, 2))
    # a rejoins at once with its smaller ownership: a follower's changed metadata rebalances.
    ta3 = rejoin(h, a, protocols=[(coop, sub("t", owned={"t": [0, 1, 2]}))])
    assert heartbeat(h, b, 2) == E.REBALANCE_IN_PROGRESS
    tb3 = rejoin(h, b, protocols=[(coop, sub("t"))])
    ra3, rb3 = h.result(ta3), h.result(tb3)
    assert ra3.generation_id == rb3.generation_id == 3
    h.result(sync(h, a, 3, {a: asg(0, 1, 2), b: asg(3, 4, 5)}))
    assert h.result(sync(h, b, 3)).assignment == asg(3, 4, 5)


# -- listing and describing -----------------------------------------------------------------------


def test_list_groups_with_state_filter_and_describe_unknown(h: Harness) -> None:
    a, _b, _gen = stable_pair(h)
    simple = h.call(
        ApiKey.OFFSET_COMMIT,
        2,
        m.OffsetCommitRequest(
            group_id="simple",
            member_id="",
            topics=[
                m.OffsetCommitRequestTopic(
                    name="t",
                    partitions=[
                        m.OffsetCommitRequestPartition(partition_index=0, committed_offset=1)
                    ],
                )
            ],
        ),
    )
    assert simple.topics[0].partitions[0].error_code == E.NONE
    listed = h.call(ApiKey.LIST_GROUPS, 4, m.ListGroupsRequest())
    assert {(g.group_id, g.protocol_type, g.group_state) for g in listed.groups} == {
        ("g", "consumer", "Stable"),
        ("simple", "", "Empty"),
    }
    only_stable = h.call(ApiKey.LIST_GROUPS, 4, m.ListGroupsRequest(states_filter=["stable"]))
    assert [g.group_id for g in only_stable.groups] == ["g"]
    v0 = h.call(ApiKey.LIST_GROUPS, 0, m.ListGroupsRequest())
    assert {g.group_id for g in v0.groups} == {"g", "simple"}
    unknown = describe(h, "nope")
    assert (unknown.error_code, unknown.group_state, unknown.members) == (E.NONE, "Dead", [])
    ops = h.call(
        ApiKey.DESCRIBE_GROUPS,
        3,
        m.DescribeGroupsRequest(groups=["g"], include_authorized_operations=True),
    )
    assert ops.groups[0].authorized_operations > 0
    rejoin(h, a)
    preparing = describe(h)
    assert preparing.group_state == "PreparingRebalance"
    assert preparing.protocol_data == "" and all(
        x.member_assignment == b"" for x in preparing.members
    )


def test_group_metadata_over_the_store_limit_is_refused_as_kafka_does(h: Harness) -> None:
    """A generation whose metadata cannot fit one record of the group store (64 MiB) cannot be
    stored: the SyncGroup is answered UNKNOWN_SERVER_ERROR, Kafka's answer when a group's
    record is over the offsets log's limit (Java consumers raise it from poll()), and refused
    before it is encoded. It was answered COORDINATOR_NOT_AVAILABLE (a coordinator that is
    there, said to be missing), after encoding ~90 MiB of JSON on the event loop, which every
    client waited for, again on each rebalance of the loop that follows."""
    from sluice.broker.groups.group import GroupState
    from sluice.broker.state_log import LOG_CONFIG

    big = b"\x00" * (LOG_CONFIG.max_message_bytes * 3 // 4 + 1024)  # > the limit in base64
    ms = h.coordinator.membership
    # Straight to the coordinator: 48 MiB through the wire codec is not what is tested here.
    joined = h.run(ms.join_group(3, join_body(protocols=[("range", big)]), "c", "/127.0.0.1"))
    assert joined.error == E.NONE and joined.leader == joined.member_id
    request = m.SyncGroupRequest(
        group_id="g",
        generation_id=joined.generation_id,
        member_id=joined.member_id,
        assignments=[m.SyncGroupRequestAssignment(member_id=joined.member_id, assignment=b"a")],
    )
    synced = h.run(asyncio.wait_for(ms.sync_group(3, request), 10))
    assert synced.error == E.UNKNOWN_SERVER_ERROR
    group = h.coordinator.groups["g"]
    assert group.is_(GroupState.PREPARING_REBALANCE)  # as Kafka: the group rebalances
    assert "g" not in h.coordinator.store.groups
    # The store still takes writes of other groups.
    other = h.call(ApiKey.JOIN_GROUP, 3, join_body(group="other"))
    assert other.error_code == E.NONE
    done = h.result(sync(h, other.member_id, other.generation_id, {other.member_id: b"x"}, group="other"))
    assert done.error_code == E.NONE and done.assignment == b"x"

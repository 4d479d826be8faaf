"""Committed offsets through ``GroupCoordinator.handle``: OffsetCommit validation (generations,
members, static fencing, topics, metadata size), OffsetFetch at every version, durability across
clean and crash restarts, snapshot compaction, expiry, DeleteGroups and OffsetDelete."""

from __future__ import annotations

from typing import Any

import pytest

from sluice.broker.groups import GroupConfig
from sluice.broker.groups import committed as committed_module
from sluice.broker.groups.store import DIR_NAME
from sluice.errors import ErrorCode
from sluice.protocol import ApiKey
from sluice.protocol import messages as m
from tests.groups.conftest import Harness
from tests.groups.test_membership import (
    asg,
    begin_join,
    describe,
    heartbeat,
    rejoin,
    stable_pair,
    sync,
)

E = ErrorCode


def commit(
    h: Harness,
    offsets: dict[tuple[str, int], int],
    *,
    group: str = "g",
    generation: int = -1,
    member_id: str = "",
    instance_id: str | None = None,
    version: int = 8,
    metadata: str | None = "meta",
    retention_ms: int = -1,
) -> dict[tuple[str, int], int]:
    topics: dict[str, list[m.OffsetCommitRequestPartition]] = {}
    for (topic, partition), offset in offsets.items():
        topics.setdefault(topic, []).append(
            m.OffsetCommitRequestPartition(
                partition_index=partition,
                committed_offset=offset,
                committed_leader_epoch=3,
                committed_metadata=metadata,
            )
        )
    body = m.OffsetCommitRequest(
        group_id=group,
        generation_id_or_member_epoch=generation,
        member_id=member_id,
        group_instance_id=instance_id,
        retention_time_ms=retention_ms,
        topics=[m.OffsetCommitRequestTopic(name=t, partitions=ps) for t, ps in topics.items()],
    )
    return commit_codes(h.call(ApiKey.OFFSET_COMMIT, version, body))


def txn_commit_one(h: Harness, group: str, *, member_id: str = "", metadata: str | None = None) -> int:
    """A TxnOffsetCommit of t[0] at 1 for producer 7 of "tx" (generation -1); its error code."""
    resp = h.call(
        ApiKey.TXN_OFFSET_COMMIT,
        3,
        m.TxnOffsetCommitRequest(
            transactional_id="tx",
            group_id=group,
            producer_id=7,
            producer_epoch=0,
            generation_id=-1,
            member_id=member_id,
            topics=[
                m.TxnOffsetCommitRequestTopic(
                    name="t",
                    partitions=[
                        m.TxnOffsetCommitRequestPartition(
                            partition_index=0, committed_offset=1, committed_metadata=metadata
                        )
                    ],
                )
            ],
        ),
    )
    return int(resp.topics[0].partitions[0].error_code)


def commit_codes(resp: m.OffsetCommitResponse) -> dict[tuple[str, int], int]:
    return {(t.name, p.partition_index): p.error_code for t in resp.topics for p in t.partitions}


def commit_in_flight(h: Harness, group: str, offsets: dict[tuple[str, int], int]) -> Any:
    """A simple commit started but not yet written: the next request on the loop runs while
    this one waits for its write (writes go through the writer task and an fsync thread)."""
    body = m.OffsetCommitRequest(
        group_id=group,
        generation_id_or_member_epoch=-1,
        member_id="",
        topics=[
            m.OffsetCommitRequestTopic(
                name=t, partitions=[m.OffsetCommitRequestPartition(partition_index=p, committed_offset=o)]
            )
            for (t, p), o in offsets.items()
        ],
    )
    return h.loop.create_task(h.over_the_wire(ApiKey.OFFSET_COMMIT, 8, body, "racer"))


def fetch(
    h: Harness,
    partitions: list[tuple[str, int]] | None = None,
    *,
    group: str = "g",
    version: int = 7,
) -> dict[tuple[str, int], tuple[int, str]]:
    topics = None
    if partitions is not None:
        by: dict[str, list[int]] = {}
        for t, p in partitions:
            by.setdefault(t, []).append(p)
        topics = [m.OffsetFetchRequestTopic(name=t, partition_indexes=ps) for t, ps in by.items()]
    resp: m.OffsetFetchResponse = h.call(
        ApiKey.OFFSET_FETCH, version, m.OffsetFetchRequest(group_id=group, topics=topics)
    )
    assert resp.error_code == E.NONE
    return {
        (t.name, p.partition_index): (p.committed_offset, p.metadata or "")
        for t in resp.topics
        for p in t.partitions
        if p.committed_offset >= 0
    }


ALL = [("t", p) for p in range(6)]


def test_simple_commit_and_fetch(h: Harness) -> None:
    assert commit(h, {("t", 0): 5, ("t", 1): 9}) == {("t", 0): E.NONE, ("t", 1): E.NONE}
    assert fetch(h, ALL) == {("t", 0): (5, "meta"), ("t", 1): (9, "meta")}
    assert fetch(h) == {("t", 0): (5, "meta"), ("t", 1): (9, "meta")}  # null topics: everything
    assert commit(h, {("t", 0): 6}, metadata=None) == {("t", 0): E.NONE}
    assert fetch(h, [("t", 0)]) == {("t", 0): (6, "")}
    assert fetch(h, ALL, group="other") == {}
    assert describe(h).group_state == "Empty"


@pytest.mark.parametrize("version", [1, 2, 5, 7])
def test_fetch_versions(h: Harness, version: int) -> None:
    commit(h, {("t", 2): 11})
    resp = h.call(
        ApiKey.OFFSET_FETCH,
        version,
        m.OffsetFetchRequest(
            group_id="g", topics=[m.OffsetFetchRequestTopic(name="t", partition_indexes=[2, 3])]
        ),
    )
    parts = {p.partition_index: p for p in resp.topics[0].partitions}
    assert parts[2].committed_offset == 11 and parts[3].committed_offset == -1
    if version >= 5:
        assert parts[2].committed_leader_epoch == 3


def test_fetch_v8_batches_groups(h: Harness) -> None:
    commit(h, {("t", 0): 1}, group="a")
    commit(h, {("u", 1): 2}, group="b")
    resp = h.call(
        ApiKey.OFFSET_FETCH,
        8,
        m.OffsetFetchRequest(
            groups=[
                m.OffsetFetchRequestGroup(group_id="a", topics=None),
                m.OffsetFetchRequestGroup(
                    group_id="b",
                    topics=[m.OffsetFetchRequestTopic(name="u", partition_indexes=[1])],
                ),
                m.OffsetFetchRequestGroup(group_id="", topics=None),
            ]
        ),
    )
    got = {
        g.group_id: {
            (t.name, p.partition_index): p.committed_offset for t in g.topics for p in t.partitions
        }
        for g in resp.groups
    }
    assert got == {"a": {("t", 0): 1}, "b": {("u", 1): 2}, "": {}}
    assert [g.error_code for g in resp.groups] == [E.NONE, E.NONE, E.NONE]


def test_commit_validation_codes(h: Harness) -> None:
    # Unknown group, but a generation: a member of a generation that no longer exists.
    assert commit(h, {("t", 0): 1}, group="new", generation=3, member_id="m") == {
        ("t", 0): E.ILLEGAL_GENERATION
    }
    a, b, gen = stable_pair(h)
    assert commit(h, {("t", 0): 1}, generation=gen, member_id="ghost") == {
        ("t", 0): E.UNKNOWN_MEMBER_ID
    }
    assert commit(h, {("t", 0): 1}, generation=gen - 1, member_id=a) == {
        ("t", 0): E.ILLEGAL_GENERATION
    }
    assert commit(h, {("t", 0): 1}, generation=gen + 1, member_id=a) == {
        ("t", 0): E.ILLEGAL_GENERATION
    }
    # Without member id and generation, only an empty group accepts commits.
    assert commit(h, {("t", 0): 1}) == {("t", 0): E.UNKNOWN_MEMBER_ID}
    assert commit(h, {("t", 0): 1}, generation=gen, member_id=a) == {("t", 0): E.NONE}
    assert commit(h, {("nope", 0): 1, ("t", 9): 1}, generation=gen, member_id=a) == {
        ("nope", 0): E.UNKNOWN_TOPIC_OR_PARTITION,
        ("t", 9): E.UNKNOWN_TOPIC_OR_PARTITION,
    }
    big = commit(h, {("t", 1): 1}, generation=gen, member_id=a, metadata="x" * 5000)
    assert big == {("t", 1): E.OFFSET_METADATA_TOO_LARGE}
    # The empty group id is valid for commits (Kafka keeps it for old clients); it has no members.
    assert commit(h, {("t", 0): 1}, group="", generation=gen, member_id=a) == {
        ("t", 0): E.ILLEGAL_GENERATION
    }
    # CompletingRebalance: the member has its JoinGroup answer but not its assignment yet.
    ta, tb = rejoin(h, a), rejoin(h, b)
    h.result(ta), h.result(tb)
    assert commit(h, {("t", 0): 2}, generation=gen + 1, member_id=b) == {
        ("t", 0): E.REBALANCE_IN_PROGRESS
    }
    assert fetch(h, [("t", 0)]) == {("t", 0): (1, "meta")}


def test_commit_from_fenced_static_member(h: Harness) -> None:
    first = h.result(h.start_call(ApiKey.JOIN_GROUP, 5, _static("ia")))
    h.result(sync(h, first.member_id, 1, {}, instance_id="ia"))
    second = h.result(h.start_call(ApiKey.JOIN_GROUP, 5, _static("ia")))
    assert commit(h, {("t", 0): 1}, generation=1, member_id=first.member_id, instance_id="ia") == {
        ("t", 0): E.FENCED_INSTANCE_ID
    }
    assert commit(h, {("t", 0): 1}, generation=1, member_id=second.member_id, instance_id="ia") == {
        ("t", 0): E.NONE
    }
    assert commit(h, {("t", 0): 1}, generation=1, member_id=second.member_id, instance_id="ib") == {
        ("t", 0): E.UNKNOWN_MEMBER_ID
    }


def _static(instance: str) -> m.JoinGroupRequest:
    from tests.groups.conftest import join_body

    return join_body(instance_id=instance)


def test_commit_refreshes_the_session(h: Harness) -> None:
    a, b, gen = stable_pair(h)
    for _ in range(4):
        h.advance(4)
        assert commit(h, {("t", 0): 1}, generation=gen, member_id=a) == {("t", 0): E.NONE}
        assert heartbeat(h, b, gen) == E.NONE
    assert a in h.coordinator.groups["g"].members


# -- durability ----------------------------------------------------------------------------------


@pytest.mark.parametrize("crash", [False, True], ids=["clean", "crash"])
def test_offsets_and_groups_survive_restart(h: Harness, crash: bool) -> None:
    a, b, gen = stable_pair(h)
    assert commit(h, {("t", 0): 10, ("t", 3): 30}, generation=gen, member_id=a) == {
        ("t", 0): E.NONE,
        ("t", 3): E.NONE,
    }
    commit(h, {("u", 1): 7}, group="simple")
    h.restart(crash=crash)
    assert fetch(h, ALL) == {("t", 0): (10, "meta"), ("t", 3): (30, "meta")}
    assert fetch(h, [("u", 1)], group="simple") == {("u", 1): (7, "meta")}
    # The group comes back Stable with its members and assignments: no rebalance needed.
    d = describe(h)
    assert d.group_state == "Stable"
    assert {x.member_id: x.member_assignment for x in d.members} == {
        a: asg(0, 1, 2),
        b: asg(3, 4, 5),
    }
    assert heartbeat(h, a, gen) == E.NONE
    assert commit(h, {("t", 0): 11}, generation=gen, member_id=a) == {("t", 0): E.NONE}
    # Members that do not come back expire as usual.
    h.advance(11)
    assert describe(h).group_state in ("PreparingRebalance", "Empty")


def test_empty_group_and_deletions_survive_restart(h: Harness) -> None:
    r = h.result(begin_join(h))
    h.result(sync(h, r.member_id, 1, {}))
    commit(h, {("t", 0): 1}, generation=1, member_id=r.member_id)
    h.call(ApiKey.LEAVE_GROUP, 1, m.LeaveGroupRequest(group_id="g", member_id=r.member_id))
    commit(h, {("t", 0): 1}, group="gone")
    assert _delete(h, "gone") == {"gone": E.NONE}
    h.settle()
    h.restart()
    d = describe(h)
    assert d.group_state == "Empty" and d.protocol_type == "consumer"
    assert h.coordinator.groups["g"].generation_id == 2
    assert describe(h, "gone").group_state == "Dead"
    assert fetch(h, ALL, group="gone") == {}


def test_snapshot_compaction_bounds_the_log_and_replays_identically(make_harness: Any) -> None:
    h = make_harness(store_compact_min_records=50)
    h.run(h.logs.create_topic("t", 6))
    for i in range(400):
        commit(h, {("t", i % 6): i}, group=f"g{i % 3}")
    store = h.coordinator.store
    assert store.snapshots >= 3
    assert store.records_in_log <= 2 * 50 + 10
    assert store.partition_log.log_start_offset > 0
    expected = {g: fetch(h, ALL, group=g) for g in ("g0", "g1", "g2")}
    assert expected["g0"][("t", 0)] == (396, "meta")
    h.restart(crash=True)
    assert {g: fetch(h, ALL, group=g) for g in ("g0", "g1", "g2")} == expected
    assert h.coordinator.store.records_in_log <= 2 * 50 + 10


def test_deleted_then_compacted_group_leaves_nothing(make_harness: Any) -> None:
    h = make_harness(store_compact_min_records=1)
    h.run(h.logs.create_topic("t", 6))
    commit(h, {("t", 0): 1})
    assert _delete(h, "g") == {"g": E.NONE}
    h.run(h.coordinator.store.compact())
    assert h.coordinator.store.records_in_log == 0
    h.restart()
    assert h.coordinator.groups == {} and h.coordinator.store.offsets == {}
    assert (h.data_dir / DIR_NAME).is_dir()


def test_offsets_of_a_recreated_topic_are_not_served(h: Harness) -> None:
    commit(h, {("u", 0): 5})
    h.run(h.logs.delete_topic("u"))
    assert fetch(h, [("u", 0)]) == {}
    h.run(h.logs.create_topic("u", 2))
    assert fetch(h, [("u", 0)]) == {}
    assert h.run(h.coordinator.expire_offsets()) == 1
    assert describe(h).group_state == "Dead"


# -- expiry ----------------------------------------------------------------------------------------


def test_empty_group_offsets_expire_after_retention(make_harness: Any) -> None:
    h = make_harness(GroupConfig(offsets_retention_ms=60_000))
    h.run(h.logs.create_topic("t", 6))
    r = h.result(begin_join(h))
    h.result(sync(h, r.member_id, 1, {}))
    commit(h, {("t", 0): 1}, generation=1, member_id=r.member_id)
    h.advance(100)  # far past retention, but the group has a member... whose session expires
    assert describe(h).group_state == "Empty"
    assert h.run(h.coordinator.expire_offsets()) == 0  # empty for 0 s only
    h.advance(59)
    assert h.run(h.coordinator.expire_offsets()) == 0
    h.advance(2)
    assert h.run(h.coordinator.expire_offsets()) == 1
    assert describe(h).group_state == "Dead"
    h.restart()
    assert "g" not in h.coordinator.groups


def test_simple_group_offsets_expire_per_commit(make_harness: Any) -> None:
    h = make_harness(GroupConfig(offsets_retention_ms=60_000))
    h.run(h.logs.create_topic("t", 6))
    commit(h, {("t", 0): 1})
    h.advance(40)
    commit(h, {("t", 1): 1})
    h.advance(30)
    assert h.run(h.coordinator.expire_offsets()) == 1
    assert fetch(h, ALL) == {("t", 1): (1, "meta")}
    h.advance(31)
    assert h.run(h.coordinator.expire_offsets()) == 1
    assert "g" not in h.coordinator.groups


def test_expiry_runs_in_chunks_and_keeps_a_commit_made_between_them(
    make_harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An expiry run yields the event loop between chunks of groups (a million offsets in one
    go held it for about 4 s). A commit that arrives between two chunks, to a group not yet
    examined, is not expired, and every group is still examined."""
    monkeypatch.setattr(committed_module, "_EXPIRY_CHUNK_OFFSETS", 2)
    h = make_harness(GroupConfig(offsets_retention_ms=60_000))
    h.run(h.logs.create_topic("t", 6))
    for group in ("a", "b", "c", "d"):
        commit(h, {("t", 0): 1, ("t", 1): 1}, group=group)
    h.advance(61)
    expiry = h.loop.create_task(h.coordinator.expire_offsets())
    late = commit_in_flight(h, "d", {("t", 0): 9})  # runs while the first chunk is written
    assert h.result(expiry) == 7  # a, b, c whole, and d's other partition
    assert commit_codes(h.result(late)) == {("t", 0): E.NONE}
    for group in ("a", "b", "c"):
        assert describe(h, group).group_state == "Dead"
    assert fetch(h, ALL, group="d") == {("t", 0): (9, "")}
    h.restart()
    assert fetch(h, ALL, group="d") == {("t", 0): (9, "")}
    assert describe(h, "a").group_state == "Dead"


def test_explicit_retention_time_of_old_commit_versions(make_harness: Any) -> None:
    h = make_harness(GroupConfig(offsets_retention_ms=10**9))
    h.run(h.logs.create_topic("t", 6))
    commit(h, {("t", 0): 1}, version=2, retention_ms=5_000)
    h.advance(6)
    assert h.run(h.coordinator.expire_offsets()) == 1


def test_stable_group_keeps_subscribed_offsets_and_expires_others(make_harness: Any) -> None:
    h = make_harness(GroupConfig(offsets_retention_ms=60_000))
    h.run(h.logs.create_topic("t", 6))
    h.run(h.logs.create_topic("u", 2))
    r = h.result(begin_join(h))  # subscribed to "t" only
    h.result(sync(h, r.member_id, 1, {}))
    commit(h, {("t", 0): 1, ("u", 0): 1}, generation=1, member_id=r.member_id)
    for _ in range(13):
        h.advance(5)
        assert heartbeat(h, r.member_id, 1) == E.NONE
    assert h.run(h.coordinator.expire_offsets()) == 1
    assert fetch(h, [("t", 0), ("u", 0)]) == {("t", 0): (1, "meta")}


def test_expiry_runs_from_the_timer(make_harness: Any) -> None:
    h = make_harness(
        GroupConfig(
            offsets_retention_ms=1_000,
            offsets_retention_check_interval_ms=1_000,
            timer_interval_ms=10,
        )
    )
    h.run(h.logs.create_topic("t", 6))
    commit(h, {("t", 0): 1})
    h.clock.advance(5)
    import asyncio

    for _ in range(200):
        if "g" not in h.coordinator.groups:
            break
        h.run(asyncio.sleep(0.01))
    assert "g" not in h.coordinator.groups


# -- DeleteGroups, OffsetDelete ---------------------------------------------------------------------


def _delete(h: Harness, *groups: str) -> dict[str, int]:
    resp: m.DeleteGroupsResponse = h.call(
        ApiKey.DELETE_GROUPS, 2, m.DeleteGroupsRequest(groups_names=list(groups))
    )
    return {r.group_id: r.error_code for r in resp.results}


def test_delete_groups(h: Harness) -> None:
    _a, _b, _gen = stable_pair(h)
    commit(h, {("t", 0): 1}, group="idle")
    assert _delete(h, "g", "idle", "nope") == {
        "g": E.NON_EMPTY_GROUP,
        "idle": E.NONE,
        "nope": E.GROUP_ID_NOT_FOUND,
    }
    assert fetch(h, ALL, group="idle") == {}
    assert describe(h, "idle").group_state == "Dead"
    assert fetch(h, ALL) == {}  # "g" had no offsets; it is untouched
    assert describe(h).group_state == "Stable"


def test_delete_groups_names_a_group_twice(h: Harness) -> None:
    """Kafka takes the names as a set: one answer, and it is the deletion's (the second
    mention used to answer GROUP_ID_NOT_FOUND for the group the first had just deleted)."""
    commit(h, {("t", 0): 1}, group="idle")
    resp: m.DeleteGroupsResponse = h.call(
        ApiKey.DELETE_GROUPS, 2, m.DeleteGroupsRequest(groups_names=["idle", "idle"])
    )
    assert [(r.group_id, r.error_code) for r in resp.results] == [("idle", E.NONE)]
    assert describe(h, "idle").group_state == "Dead"


def test_a_commit_that_stores_nothing_makes_no_group(h: Harness) -> None:
    """A simple commit whose every partition is refused (a topic name with a typo, metadata
    too large) writes nothing, so it makes no group: it used to leave an Empty group that
    ListGroups and DescribeGroups showed until the next expiry run, and that a restart lost."""
    assert commit(h, {("nope", 0): 1}, group="typo") == {("nope", 0): E.UNKNOWN_TOPIC_OR_PARTITION}
    big = commit(h, {("t", 0): 1}, group="big", metadata="x" * 5000)
    assert big == {("t", 0): E.OFFSET_METADATA_TOO_LARGE}
    txn = txn_commit_one(h, "txbig", metadata="x" * 5000)
    assert txn == E.OFFSET_METADATA_TOO_LARGE
    listed: m.ListGroupsResponse = h.call(ApiKey.LIST_GROUPS, 4, m.ListGroupsRequest())
    assert listed.groups == []
    for group in ("typo", "big", "txbig"):
        assert describe(h, group).group_state == "Dead"
    # A commit with one good partition makes the group, as before.
    assert commit(h, {("t", 0): 1, ("nope", 0): 1}, group="typo")[("t", 0)] == E.NONE
    assert describe(h, "typo").group_state == "Empty"
    # A new group is still checked as the empty group it would be: a member id or an instance
    # id without a generation names a member it does not have.
    assert commit(h, {("t", 0): 1}, group="new", member_id="m") == {("t", 0): E.UNKNOWN_MEMBER_ID}
    fenced = commit(h, {("t", 0): 1}, group="new", instance_id="i", version=7)
    assert fenced == {("t", 0): E.UNKNOWN_MEMBER_ID}
    txn_member = txn_commit_one(h, "new", member_id="m")
    assert txn_member == E.UNKNOWN_MEMBER_ID
    assert describe(h, "new").group_state == "Dead"


def test_a_commit_in_flight_when_its_group_is_deleted_leaves_no_orphan_offset(h: Harness) -> None:
    """DeleteGroups while a simple commit waits for its write: both succeed, and the group and
    its offsets agree afterwards (nothing served for a group nobody can list or delete)."""
    pending = commit_in_flight(h, "race", {("t", 0): 101})
    assert _delete(h, "race") == {"race": E.NONE}
    assert commit_codes(h.result(pending)) == {("t", 0): E.NONE}
    assert fetch(h, ALL, group="race") == {}
    assert "race" not in h.coordinator.store.offsets
    h.restart()
    assert fetch(h, ALL, group="race") == {}
    assert describe(h, "race").group_state == "Dead"


def test_a_transactional_commit_in_flight_when_its_group_is_deleted_leaves_no_orphan(
    h: Harness,
) -> None:
    """As for a simple commit: a TxnOffsetCommit still waiting for its write when its group is
    deleted is tombstoned with the group, so the transaction's commit brings nothing back. It
    used to: OffsetFetch served the offset of a group DescribeGroups called Dead, that
    ListGroups did not list and DeleteGroups answered GROUP_ID_NOT_FOUND, until a restart."""
    commit(h, {("t", 1): 3}, group="race")
    body = m.TxnOffsetCommitRequest(
        transactional_id="tx",
        group_id="race",
        producer_id=7,
        producer_epoch=0,
        generation_id=-1,
        member_id="",
        topics=[
            m.TxnOffsetCommitRequestTopic(
                name="t",
                partitions=[m.TxnOffsetCommitRequestPartition(partition_index=0, committed_offset=42)],
            )
        ],
    )
    pending = h.loop.create_task(h.over_the_wire(ApiKey.TXN_OFFSET_COMMIT, 3, body, "tx"))
    assert _delete(h, "race") == {"race": E.NONE}
    assert h.result(pending).topics[0].partitions[0].error_code == E.NONE
    h.run(h.coordinator.end_transaction(7, ["race"], True))
    assert fetch(h, ALL, group="race") == {}
    assert describe(h, "race").group_state == "Dead"
    h.restart()
    assert fetch(h, ALL, group="race") == {}
    assert describe(h, "race").group_state == "Dead"


def test_a_group_deleted_as_it_empties_stays_deleted_after_a_restart(h: Harness) -> None:
    """The last member leaves and DeleteGroups arrives in the same turn of the event loop (a
    script stopping its consumers and deleting their group): the group's Empty metadata, written
    from a task of its own, used to land after the deletion's tombstone, so the acknowledged
    deletion was undone by the next restart (the group listed again)."""
    a, b, gen = stable_pair(h)
    commit(h, {("t", 0): 4}, generation=gen, member_id=a)
    leave = h.loop.create_task(
        h.over_the_wire(
            ApiKey.LEAVE_GROUP,
            4,
            m.LeaveGroupRequest(
                group_id="g", members=[m.MemberIdentity(member_id=a), m.MemberIdentity(member_id=b)]
            ),
            "c",
        )
    )
    delete = h.loop.create_task(
        h.over_the_wire(ApiKey.DELETE_GROUPS, 2, m.DeleteGroupsRequest(groups_names=["g"]), "c")
    )
    assert h.result(leave).error_code == E.NONE
    assert [r.error_code for r in h.result(delete).results] == [E.NONE]
    h.settle()
    h.run(h.coordinator.store.settled())
    h.restart(crash=True)
    assert describe(h).group_state == "Dead"
    listed: m.ListGroupsResponse = h.call(ApiKey.LIST_GROUPS, 4, m.ListGroupsRequest())
    assert listed.groups == []
    assert fetch(h, ALL) == {}


def test_offset_delete_keeps_a_group_with_a_commit_in_flight(h: Harness) -> None:
    commit(h, {("t", 0): 5}, group="race")
    pending = commit_in_flight(h, "race", {("t", 1): 7})
    code, errors = _offset_delete(h, "race", [("t", 0)])
    assert (code, errors) == (E.NONE, {("t", 0): E.NONE})
    assert commit_codes(h.result(pending)) == {("t", 1): E.NONE}
    assert fetch(h, ALL, group="race") == {("t", 1): (7, "")}
    assert describe(h, "race").group_state == "Empty"


def _offset_delete(
    h: Harness, group: str, partitions: list[tuple[str, int]]
) -> tuple[int, dict[tuple[str, int], int]]:
    by: dict[str, list[m.OffsetDeleteRequestPartition]] = {}
    for t, p in partitions:
        by.setdefault(t, []).append(m.OffsetDeleteRequestPartition(partition_index=p))
    resp: m.OffsetDeleteResponse = h.call(
        ApiKey.OFFSET_DELETE,
        0,
        m.OffsetDeleteRequest(
            group_id=group,
            topics=[m.OffsetDeleteRequestTopic(name=t, partitions=ps) for t, ps in by.items()],
        ),
    )
    return resp.error_code, {
        (t.name, p.partition_index): p.error_code for t in resp.topics for p in t.partitions
    }


def test_offset_delete(h: Harness) -> None:
    a, b, gen = stable_pair(h)  # subscribed to "t"
    commit(h, {("t", 0): 1, ("u", 0): 2, ("u", 1): 3}, generation=gen, member_id=a)
    top, parts = _offset_delete(h, "g", [("t", 0), ("u", 0), ("zz", 0)])
    assert top == E.NONE
    assert parts == {
        ("t", 0): E.GROUP_SUBSCRIBED_TO_TOPIC,
        ("u", 0): E.NONE,
        ("zz", 0): E.UNKNOWN_TOPIC_OR_PARTITION,
    }
    assert fetch(h, [("t", 0), ("u", 0), ("u", 1)]) == {
        ("t", 0): (1, "meta"),
        ("u", 1): (3, "meta"),
    }
    assert _offset_delete(h, "nope", [("t", 0)])[0] == E.GROUP_ID_NOT_FOUND
    assert _offset_delete(h, "", [("t", 0)])[0] == E.INVALID_GROUP_ID
    # Once the group is empty, everything may go, and the group goes with its last offset.
    for member in (a, b):
        h.call(ApiKey.LEAVE_GROUP, 1, m.LeaveGroupRequest(group_id="g", member_id=member))
    top, parts = _offset_delete(h, "g", [("t", 0), ("u", 1)])
    assert (top, set(parts.values())) == (E.NONE, {E.NONE})
    assert describe(h).group_state == "Dead"


def _entries(
    resp: m.OffsetCommitResponse | m.TxnOffsetCommitResponse,
) -> list[tuple[str, int, int]]:
    return [(t.name, p.partition_index, p.error_code) for t in resp.topics for p in t.partitions]


def test_a_partition_named_twice_is_answered_entry_by_entry(h: Harness) -> None:
    """As Kafka's coordinator: every entry is judged and answered for itself, and the partition
    keeps its last valid entry. Every mention was answered with the last one's verdict: a valid
    offset followed by one with too much metadata was refused twice and nothing stored; the
    other way round, the refused entry was answered NONE."""
    big = "x" * 5000

    def part(offset: int, metadata: str) -> m.OffsetCommitRequestPartition:
        return m.OffsetCommitRequestPartition(
            partition_index=0, committed_offset=offset, committed_metadata=metadata
        )

    body = m.OffsetCommitRequest(
        group_id="dup",
        generation_id_or_member_epoch=-1,
        member_id="",
        topics=[
            m.OffsetCommitRequestTopic(name="t", partitions=[part(5, "five"), part(6, big)]),
            m.OffsetCommitRequestTopic(name="u", partitions=[part(7, big)]),
            m.OffsetCommitRequestTopic(name="u", partitions=[part(8, "eight")]),
        ],
    )
    resp = h.call(ApiKey.OFFSET_COMMIT, 8, body)
    assert _entries(resp) == [
        ("t", 0, E.NONE),
        ("t", 0, E.OFFSET_METADATA_TOO_LARGE),
        ("u", 0, E.OFFSET_METADATA_TOO_LARGE),
        ("u", 0, E.NONE),
    ]
    assert fetch(h, [("t", 0), ("u", 0)], group="dup") == {
        ("t", 0): (5, "five"),
        ("u", 0): (8, "eight"),
    }
    # Two valid entries: both NONE, the last one kept (what Kafka's log keeps).
    body.topics = [m.OffsetCommitRequestTopic(name="t", partitions=[part(9, "a"), part(3, "b")])]
    assert _entries(h.call(ApiKey.OFFSET_COMMIT, 8, body)) == [("t", 0, E.NONE), ("t", 0, E.NONE)]
    assert fetch(h, [("t", 0)], group="dup") == {("t", 0): (3, "b")}

    # TxnOffsetCommit: the same rule for the offsets pending in the transaction.
    def tpart(offset: int, metadata: str) -> m.TxnOffsetCommitRequestPartition:
        return m.TxnOffsetCommitRequestPartition(
            partition_index=1, committed_offset=offset, committed_metadata=metadata
        )

    txn = m.TxnOffsetCommitRequest(
        transactional_id="tx",
        group_id="dup",
        producer_id=7,
        producer_epoch=0,
        generation_id=-1,
        member_id="",
        topics=[
            m.TxnOffsetCommitRequestTopic(name="t", partitions=[tpart(11, "ok"), tpart(12, big)]),
            m.TxnOffsetCommitRequestTopic(name="nope", partitions=[tpart(1, "")]),
        ],
    )
    assert _entries(h.call(ApiKey.TXN_OFFSET_COMMIT, 3, txn)) == [
        ("t", 1, E.NONE),
        ("t", 1, E.OFFSET_METADATA_TOO_LARGE),
        ("nope", 1, E.UNKNOWN_TOPIC_OR_PARTITION),
    ]
    h.run(h.coordinator.end_transaction(7, ["dup"], commit=True))
    assert fetch(h, [("t", 1)], group="dup") == {("t", 1): (11, "ok")}


def test_offset_metadata_is_measured_in_characters_as_kafka_does(h: Harness) -> None:
    """offset.metadata.max.bytes counts a Java string's length (UTF-16 code units), as Kafka's
    isMetadataInvalid does; UTF-8 bytes refused 4096 accented letters that Kafka accepts."""
    accented = "é" * 4096  # 8192 bytes of UTF-8, 4096 characters
    assert commit(h, {("t", 0): 1}, group="chars", metadata=accented) == {("t", 0): E.NONE}
    assert fetch(h, [("t", 0)], group="chars") == {("t", 0): (1, accented)}
    assert txn_commit_one(h, "chars", metadata=accented) == E.NONE
    # One more character is too many; a character outside the BMP is two UTF-16 units, as in Java.
    assert commit(h, {("t", 0): 2}, group="chars", metadata=accented + "é") == {
        ("t", 0): E.OFFSET_METADATA_TOO_LARGE
    }
    assert commit(h, {("t", 0): 3}, group="chars", metadata="é" * 4095 + "\U0001f600") == {
        ("t", 0): E.OFFSET_METADATA_TOO_LARGE
    }
    assert commit(h, {("t", 0): 4}, group="chars", metadata="é" * 4094 + "\U0001f600") == {
        ("t", 0): E.NONE
    }
    assert txn_commit_one(h, "chars", metadata=accented + "é") == E.OFFSET_METADATA_TOO_LARGE


def test_unknown_partitions_keep_their_answer_when_the_commit_is_refused(h: Harness) -> None:
    """Kafka answers a partition that does not exist UNKNOWN_TOPIC_OR_PARTITION whatever the
    group says of the rest (its request handler filters them before the coordinator), as
    TxnOffsetCommit here already did; OffsetCommit gave them the group's refusal."""
    a, _, gen = stable_pair(h)
    stale = commit(h, {("nope", 0): 1, ("t", 9): 1, ("t", 0): 1}, generation=gen - 1, member_id=a)
    assert stale == {
        ("nope", 0): E.UNKNOWN_TOPIC_OR_PARTITION,
        ("t", 9): E.UNKNOWN_TOPIC_OR_PARTITION,
        ("t", 0): E.ILLEGAL_GENERATION,
    }
    assert commit(h, {("nope", 0): 1, ("t", 0): 1}, group="new", generation=3, member_id="m") == {
        ("nope", 0): E.UNKNOWN_TOPIC_OR_PARTITION,
        ("t", 0): E.ILLEGAL_GENERATION,
    }
    assert commit(h, {("nope", 0): 1, ("t", 0): 1}, group="g") == {
        ("nope", 0): E.UNKNOWN_TOPIC_OR_PARTITION,
        ("t", 0): E.UNKNOWN_MEMBER_ID,
    }

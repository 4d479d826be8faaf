"""Transactional offsets (TxnOffsetCommit) through the group coordinator: pending per (group,
producer id), durable, visible to OffsetFetch only once their transaction commits, dropped when
it aborts, answered UNSTABLE_OFFSET_COMMIT to OffsetFetch with require_stable meanwhile, and
checked against the transaction (AddOffsetsToTxn) and, from v3, the group's member and
generation (KIP-447)."""

from __future__ import annotations

import asyncio

import pytest

from sluice.errors import ErrorCode
from sluice.protocol import ApiKey, RequestBody
from sluice.protocol import messages as m
from tests.transactions.conftest import (
    TxnHarness,
    add_offsets,
    add_partitions,
    commit_offsets,
    end,
    init,
    offset_fetch,
    txn_offset_commit,
)

E = ErrorCode
T0, T1 = ("t", 0), ("t", 1)


def begin_with_offsets(h: TxnHarness, group: str = "g", txn: str = "app") -> int:
    pid = init(h, txn).producer_id
    assert add_offsets(h, pid, 0, group, txn=txn) == E.NONE
    return pid


@pytest.mark.parametrize("version", [0, 1, 2, 3])
def test_offsets_are_pending_until_the_transaction_commits(h: TxnHarness, version: int) -> None:
    commit_offsets(h, "g", {T0: 3})
    pid = begin_with_offsets(h)
    assert txn_offset_commit(h, pid, 0, "g", {T0: 10, T1: 20}, version=version) == {
        T0: E.NONE,
        T1: E.NONE,
    }
    # not visible yet; require_stable (v7+) says the partitions are unstable
    assert offset_fetch(h, "g", [T0, T1], version=6) == {T0: (3, E.NONE), T1: (-1, E.NONE)}
    assert offset_fetch(h, "g", [T0, T1], require_stable=False) == {
        T0: (3, E.NONE),
        T1: (-1, E.NONE),
    }
    unstable = {T0: (-1, E.UNSTABLE_OFFSET_COMMIT), T1: (-1, E.UNSTABLE_OFFSET_COMMIT)}
    assert offset_fetch(h, "g", [T0, T1]) == unstable
    assert offset_fetch(h, "g", [T0, T1], version=8) == unstable
    assert offset_fetch(h, "g", [("t", 2)]) == {("t", 2): (-1, E.NONE)}
    assert end(h, pid, 0, True) == E.NONE
    committed = {T0: (10, E.NONE), T1: (20, E.NONE)}
    assert offset_fetch(h, "g", [T0, T1]) == committed
    h.restart(crash=True)
    assert offset_fetch(h, "g", [T0, T1]) == committed


def test_offsets_of_an_aborted_transaction_are_dropped(h: TxnHarness) -> None:
    commit_offsets(h, "g", {T0: 3})
    pid = begin_with_offsets(h)
    add_partitions(h, pid, 0, {"u": [0]})
    assert txn_offset_commit(h, pid, 0, "g", {T0: 10}) == {T0: E.NONE}
    assert end(h, pid, 0, False) == E.NONE
    assert offset_fetch(h, "g", [T0]) == {T0: (3, E.NONE)}
    assert h.broker.groups.store.pending == {}
    h.restart(crash=True)
    assert offset_fetch(h, "g", [T0]) == {T0: (3, E.NONE)}


@pytest.mark.parametrize("crash", [False, True])
def test_pending_offsets_survive_a_restart_and_commit_after_it(h: TxnHarness, crash: bool) -> None:
    pid = begin_with_offsets(h)
    assert txn_offset_commit(h, pid, 0, "g", {T0: 10}) == {T0: E.NONE}
    h.restart(crash=crash)
    assert offset_fetch(h, "g", [T0]) == {T0: (-1, E.UNSTABLE_OFFSET_COMMIT)}
    assert end(h, pid, 0, True) == E.NONE
    assert offset_fetch(h, "g", [T0]) == {T0: (10, E.NONE)}


def test_a_commit_made_after_the_transactional_one_is_kept(h: TxnHarness) -> None:
    """Kafka keeps the most recent commit when transactional and plain commits mix: a pending
    offset is materialised only if it was written after the partition's committed one."""
    pid = begin_with_offsets(h)
    assert txn_offset_commit(h, pid, 0, "g", {T0: 10, T1: 20}) == {T0: E.NONE, T1: E.NONE}
    commit_offsets(h, "g", {T0: 99})
    # snapshot compaction rewrites both; the order they were written in still decides
    h.run(h.broker.groups.store.compact())
    h.restart(crash=True)
    assert end(h, pid, 0, True) == E.NONE
    assert offset_fetch(h, "g", [T0, T1]) == {T0: (99, E.NONE), T1: (20, E.NONE)}


def test_txn_offset_commit_needs_the_group_in_the_transaction(h: TxnHarness) -> None:
    pid = init(h).producer_id
    # no transaction at all
    assert txn_offset_commit(h, pid, 0, "g", {T0: 1}) == {T0: E.INVALID_TXN_STATE}
    # a transaction, but not with this group's offsets
    add_partitions(h, pid, 0, {"t": [0]})
    assert txn_offset_commit(h, pid, 0, "g", {T0: 1}) == {T0: E.INVALID_TXN_STATE}
    assert add_offsets(h, pid, 0, "other") == E.NONE
    assert txn_offset_commit(h, pid, 0, "g", {T0: 1}) == {T0: E.INVALID_TXN_STATE}
    assert add_offsets(h, pid, 0, "g") == E.NONE
    assert txn_offset_commit(h, pid, 0, "g", {T0: 1}) == {T0: E.NONE}
    assert h.broker.groups.store.pending == {
        "g": {pid: {T0: h.broker.groups.store.pending["g"][pid][T0]}}
    }


def test_txn_offset_commit_error_answers(h: TxnHarness) -> None:
    pid = begin_with_offsets(h)
    # unknown partitions are answered on their own; the rest is committed
    answer = txn_offset_commit(h, pid, 0, "g", {T0: 1, ("t", 9): 1, ("nope", 0): 1})
    assert answer == {
        T0: E.NONE,
        ("t", 9): E.UNKNOWN_TOPIC_OR_PARTITION,
        ("nope", 0): E.UNKNOWN_TOPIC_OR_PARTITION,
    }
    # the producer: unknown id, another producer, an older epoch (Kafka's verification answers
    # INVALID_PRODUCER_EPOCH), an empty group id
    assert txn_offset_commit(h, pid, 0, "g", {T0: 1}, txn="nobody") == {
        T0: E.INVALID_PRODUCER_ID_MAPPING
    }
    assert txn_offset_commit(h, pid + 7, 0, "g", {T0: 1}) == {T0: E.INVALID_PRODUCER_ID_MAPPING}
    epoch = init(h).producer_epoch  # a new incarnation (the transaction is aborted)
    assert txn_offset_commit(h, pid, 0, "g", {T0: 1}) == {T0: E.INVALID_PRODUCER_EPOCH}
    assert add_offsets(h, pid, epoch, "") == E.NONE
    assert txn_offset_commit(h, pid, epoch, "", {T0: 1}) == {T0: E.INVALID_GROUP_ID}
    assert offset_fetch(h, "g", [T0]) == {T0: (-1, E.NONE)}  # the aborted one never became visible


def _join(h: TxnHarness, group: str) -> tuple[str, int]:
    """A consumer group with one member (classic protocol): its member id and generation."""
    from sluice.broker.groups.consumer_protocol import Subscription, encode_subscription

    meta = encode_subscription(Subscription(["t"], None, {}, version=1))
    body = m.JoinGroupRequest(
        group_id=group,
        session_timeout_ms=30_000,
        rebalance_timeout_ms=30_000,
        member_id="",
        protocol_type="consumer",
        protocols=[m.JoinGroupRequestProtocol(name="range", metadata=meta)],
    )
    first = h.call(ApiKey.JOIN_GROUP, 5, body)
    assert first.error_code == E.MEMBER_ID_REQUIRED
    body.member_id = first.member_id
    joined = h.call(ApiKey.JOIN_GROUP, 5, body)
    assert joined.error_code == E.NONE
    synced = h.call(
        ApiKey.SYNC_GROUP,
        3,
        m.SyncGroupRequest(
            group_id=group,
            generation_id=joined.generation_id,
            member_id=joined.member_id,
            assignments=[m.SyncGroupRequestAssignment(member_id=joined.member_id, assignment=b"")],
        ),
    )
    assert synced.error_code == E.NONE
    return joined.member_id, joined.generation_id


def test_kip_447_member_and_generation_are_checked_from_v3(h: TxnHarness) -> None:
    member, generation = _join(h, "g")
    pid = begin_with_offsets(h)
    assert txn_offset_commit(h, pid, 0, "g", {T0: 5}, member=member, generation=generation + 1) == {
        T0: E.ILLEGAL_GENERATION
    }
    assert txn_offset_commit(h, pid, 0, "g", {T0: 5}, member="stranger", generation=generation) == {
        T0: E.UNKNOWN_MEMBER_ID
    }
    assert txn_offset_commit(h, pid, 0, "g", {T0: 5}, member=member, generation=generation) == {
        T0: E.NONE
    }
    # v0-2 carry no member: accepted from the producer of a group that has members (Kafka)
    assert txn_offset_commit(h, pid, 0, "g", {T1: 6}, version=2) == {T1: E.NONE}
    # v3 without member or generation (a client not using group metadata) is accepted too
    assert txn_offset_commit(h, pid, 0, "g", {T1: 7}) == {T1: E.NONE}
    # a group that does not exist with a generation: ILLEGAL_GENERATION (Kafka's new coordinator)
    assert add_offsets(h, pid, 0, "ghost") == E.NONE
    assert txn_offset_commit(h, pid, 0, "ghost", {T0: 1}, member="m", generation=3) == {
        T0: E.ILLEGAL_GENERATION
    }
    assert end(h, pid, 0, True) == E.NONE
    assert offset_fetch(h, "g", [T0, T1]) == {T0: (5, E.NONE), T1: (7, E.NONE)}


def test_deleting_a_group_drops_its_pending_offsets(h: TxnHarness) -> None:
    pid = begin_with_offsets(h)
    assert txn_offset_commit(h, pid, 0, "g", {T0: 10}) == {T0: E.NONE}
    deleted = h.call(ApiKey.DELETE_GROUPS, 2, m.DeleteGroupsRequest(groups_names=["g"]))
    assert deleted.results[0].error_code == E.NONE
    assert h.broker.groups.store.pending == {}
    assert end(h, pid, 0, True) == E.NONE
    assert offset_fetch(h, "g", [T0]) == {T0: (-1, E.NONE)}


def test_expiry_waits_for_open_transactions(h: TxnHarness) -> None:
    commit_offsets(h, "g", {T0: 3})
    pid = begin_with_offsets(h)
    assert txn_offset_commit(h, pid, 0, "g", {T0: 10}) == {T0: E.NONE}
    h.clock.ms += h.broker.groups.config.offsets_retention_ms + 1
    assert h.run(h.broker.groups.expire_offsets()) == 0
    assert "g" in h.broker.groups.groups
    assert end(h, pid, 0, True) == E.NONE
    assert offset_fetch(h, "g", [T0]) == {T0: (10, E.NONE)}


def _txn_offsets_body(pid: int, group: str, offset: int) -> m.TxnOffsetCommitRequest:
    return m.TxnOffsetCommitRequest(
        transactional_id="app",
        group_id=group,
        producer_id=pid,
        producer_epoch=0,
        topics=[
            m.TxnOffsetCommitRequestTopic(
                name="t",
                partitions=[
                    m.TxnOffsetCommitRequestPartition(
                        partition_index=0, committed_offset=offset, committed_metadata=None
                    )
                ],
            )
        ],
    )


def test_txn_offset_commit_while_partitions_are_being_added(h: TxnHarness) -> None:
    """librdkafka sends TxnOffsetCommit while the AddPartitionsToTxn for the records produced
    just before is still being written: the group is in the transaction already, so it is
    accepted (a CONCURRENT_TRANSACTIONS would cost it a 500 ms backoff per transaction). A
    group still being added, or a transaction being ended, is answered CONCURRENT_TRANSACTIONS."""
    pid = begin_with_offsets(h)

    def during(api: ApiKey, body: RequestBody, group: str) -> list[int]:
        """TxnOffsetCommit for ``group`` while ``body`` is writing its transition."""

        async def interleaved() -> list[int]:
            first = asyncio.ensure_future(h.dispatch(api, 3, body))
            await asyncio.sleep(0)  # it has started writing its transition
            answer = await h.dispatch(ApiKey.TXN_OFFSET_COMMIT, 3, _txn_offsets_body(pid, group, 5))
            await first
            return [p.error_code for t in answer.topics for p in t.partitions]

        return h.run(interleaved())

    adding = m.AddPartitionsToTxnRequest(
        v3_and_below_transactional_id="app",
        v3_and_below_producer_id=pid,
        v3_and_below_producer_epoch=0,
        v3_and_below_topics=[m.AddPartitionsToTxnTopic(name="t", partitions=[1])],
    )
    assert during(ApiKey.ADD_PARTITIONS_TO_TXN, adding, "g") == [E.NONE]
    new_group = m.AddOffsetsToTxnRequest(
        transactional_id="app", producer_id=pid, producer_epoch=0, group_id="h"
    )
    assert during(ApiKey.ADD_OFFSETS_TO_TXN, new_group, "h") == [E.CONCURRENT_TRANSACTIONS]
    ending = m.EndTxnRequest(transactional_id="app", producer_id=pid, producer_epoch=0, committed=True)
    assert during(ApiKey.END_TXN, ending, "g") == [E.CONCURRENT_TRANSACTIONS]
    assert offset_fetch(h, "g", [T0]) == {T0: (5, E.NONE)}  # what was accepted was committed

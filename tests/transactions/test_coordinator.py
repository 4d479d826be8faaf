"""The transaction coordinator's rules, request by request, against a real broker (real logs,
the real group coordinator), every request and answer through the codec at its version:
InitProducerId with a transactional id, AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, the
markers they write, fencing, timeouts, expiry, and their error answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from sluice.broker.transactions.state import EPOCH_MAX, TxnRecord, TxnState
from sluice.errors import ErrorCode
from sluice.protocol import ApiKey
from sluice.protocol import messages as m
from tests.transactions.conftest import (
    Marker,
    TxnHarness,
    add_offsets,
    add_partitions,
    describe,
    end,
    init,
    produce,
    transactional_batch,
)

E = ErrorCode


def state(h: TxnHarness, txn: str = "app") -> str:
    (d,) = describe(h, txn)
    return str(d.transaction_state)


# -- InitProducerId ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 1, 2, 3, 4, 5])
def test_a_new_transactional_id_gets_a_fresh_producer_id_at_epoch_0(
    h: TxnHarness, version: int
) -> None:
    idempotent = init(h, None, version=version)
    first = init(h, "app", version=version)
    other = init(h, "other", version=version)
    assert (first.error_code, first.producer_epoch) == (E.NONE, 0)
    assert len({idempotent.producer_id, first.producer_id, other.producer_id}) == 3
    (d,) = describe(h, "app")
    assert (d.error_code, d.transaction_state, d.producer_id, d.producer_epoch) == (
        E.NONE,
        "Empty",
        first.producer_id,
        0,
    )
    assert d.transaction_timeout_ms == 60_000 and d.transaction_start_time_ms == -1


def test_transaction_timeouts_are_bounded_by_transaction_max_timeout_ms(
    make_harness: Callable[..., TxnHarness],
) -> None:
    h = make_harness(transaction_max_timeout_ms="30000")
    assert init(h, timeout_ms=30_001).error_code == E.INVALID_TRANSACTION_TIMEOUT
    assert init(h, timeout_ms=0).error_code == E.INVALID_TRANSACTION_TIMEOUT
    assert init(h, timeout_ms=-5).error_code == E.INVALID_TRANSACTION_TIMEOUT
    assert describe(h, "app")[0].error_code == E.TRANSACTIONAL_ID_NOT_FOUND  # nothing was made
    ok = init(h, timeout_ms=30_000)
    assert (ok.error_code, ok.producer_epoch) == (E.NONE, 0)


def test_bad_init_requests(h: TxnHarness) -> None:
    assert init(h, "").error_code == E.INVALID_REQUEST
    # v3+: an id without an epoch (or the reverse) is malformed, as Kafka answers
    assert init(h, pid=5, epoch=-1, version=3).error_code == E.INVALID_REQUEST
    assert init(h, pid=-1, epoch=2, version=4).error_code == E.INVALID_REQUEST


@pytest.mark.parametrize("version", [0, 2, 4])
def test_a_new_incarnation_bumps_the_epoch_and_fences_the_old_producer(
    h: TxnHarness, version: int
) -> None:
    old = init(h, version=version)
    new = init(h, version=version)
    assert (new.producer_id, new.producer_epoch) == (old.producer_id, 1)
    pid = old.producer_id
    # the old epoch is fenced from every API, with the code each version knows
    fenced = add_partitions(h, pid, 0, {"t": [0]}, version=1)
    assert fenced == {("t", 0): E.INVALID_PRODUCER_EPOCH}
    assert add_partitions(h, pid, 0, {"t": [0]}, version=2) == {("t", 0): E.PRODUCER_FENCED}
    assert add_offsets(h, pid, 0, "g", version=1) == E.INVALID_PRODUCER_EPOCH
    assert add_offsets(h, pid, 0, "g", version=3) == E.PRODUCER_FENCED
    assert end(h, pid, 0, True, version=0) == E.INVALID_PRODUCER_EPOCH
    assert end(h, pid, 0, True, version=3) == E.PRODUCER_FENCED
    # the new one works
    assert add_partitions(h, pid, 1, {"t": [0]}) == {("t", 0): E.NONE}
    assert end(h, pid, 1, True) == E.NONE


def test_init_aborts_the_ongoing_transaction_of_the_previous_incarnation(h: TxnHarness) -> None:
    first = init(h)
    pid = first.producer_id
    assert add_partitions(h, pid, 0, {"t": [0, 1], "u": [0]}) == dict.fromkeys(
        [("t", 0), ("t", 1), ("u", 0)], E.NONE
    )
    assert produce(h, "t", 0, transactional_batch(pid, 0, 0, b"doomed")) == E.NONE
    assert state(h) == "Ongoing"
    second = init(h)
    # the abort is fenced with epoch 1 (the markers say so); the new incarnation gets epoch 2
    assert (second.error_code, second.producer_id, second.producer_epoch) == (E.NONE, pid, 2)
    for tp in [("t", 0), ("t", 1), ("u", 0)]:
        assert h.markers(*tp) == [Marker(h.markers(*tp)[0].offset, pid, 1, False, 0)]
    assert h.markers("t", 2) == []
    assert state(h) == "Empty"
    # the old producer is fenced at the coordinator (on the partitions, the epoch-1 markers
    # fence it: the partition side's rule)
    assert end(h, pid, 0, True) == E.PRODUCER_FENCED
    assert add_partitions(h, pid, 0, {"t": [0]}) == {("t", 0): E.PRODUCER_FENCED}


@pytest.mark.parametrize("version", [3, 4, 5])
def test_kip_360_a_producer_naming_its_id_and_epoch_keeps_its_id(
    h: TxnHarness, version: int
) -> None:
    first = init(h, version=version)
    pid = first.producer_id
    bumped = init(h, version=version, pid=pid, epoch=0)
    assert (bumped.error_code, bumped.producer_id, bumped.producer_epoch) == (E.NONE, pid, 1)
    # a retry of that bump (its answer was lost) gets the same epoch, not another bump
    retry = init(h, version=version, pid=pid, epoch=0)
    assert (retry.error_code, retry.producer_id, retry.producer_epoch) == (E.NONE, pid, 1)
    # a new incarnation (no id) fences retries of older bumps
    assert init(h, version=version).producer_epoch == 2
    fenced = E.PRODUCER_FENCED if version >= 4 else E.INVALID_PRODUCER_EPOCH
    stale = init(h, version=version, pid=pid, epoch=1)
    assert (stale.error_code, stale.producer_id, stale.producer_epoch) == (fenced, -1, -1)
    # an id that is not this transactional id's is fenced too
    assert init(h, version=version, pid=pid + 1000, epoch=2).error_code == fenced


def test_kip_360_after_the_transactional_id_expired_a_new_id_is_given(h: TxnHarness) -> None:
    """An id that names a producer the coordinator no longer has (the transactional id
    expired) starts over, as Kafka's metadata created at epoch -1 allows."""
    resp = init(h, "fresh", pid=12345, epoch=7)
    assert resp.error_code == E.NONE and resp.producer_id != 12345 and resp.producer_epoch == 0


def test_epoch_exhaustion_rotates_to_a_new_producer_id(h: TxnHarness) -> None:
    pid = init(h).producer_id
    # White-box: a transactional id whose epochs are nearly all used (32765 InitProducerIds
    # would take minutes); written as the coordinator writes, so it also survives a restart.
    exhausted = TxnRecord(
        pid, EPOCH_MAX - 2, 60_000, TxnState.EMPTY, last_update_timestamp=h.clock()
    )
    h.run(h.broker.transactions.store.write([("app", exhausted)]))
    h.restart()
    last = init(h)  # the last epoch a producer may hold: 32766
    assert (last.error_code, last.producer_id, last.producer_epoch) == (E.NONE, pid, EPOCH_MAX - 1)
    resp = init(h, pid=pid, epoch=EPOCH_MAX - 1)
    assert resp.error_code == E.NONE and resp.producer_id != pid and resp.producer_epoch == 0
    # KIP-360: the previous id with its exhausted epoch is a retry of that rotation, not fenced
    retry = init(h, pid=pid, epoch=EPOCH_MAX - 1)
    assert (retry.error_code, retry.producer_id, retry.producer_epoch) == (
        E.NONE,
        resp.producer_id,
        0,
    )


# -- AddPartitionsToTxn, AddOffsetsToTxn -------------------------------------------------------------


def test_add_partitions_starts_the_transaction(h: TxnHarness) -> None:
    pid = init(h).producer_id
    h.clock.ms += 5_000
    assert add_partitions(h, pid, 0, {"t": [1]}) == {("t", 1): E.NONE}
    (d,) = describe(h, "app")
    assert d.transaction_state == "Ongoing" and d.transaction_start_time_ms == h.clock.ms
    h.clock.ms += 1_000
    assert add_partitions(h, pid, 0, {"t": [0, 1], "u": [0]}) == dict.fromkeys(
        [("t", 0), ("t", 1), ("u", 0)], E.NONE
    )
    (d,) = describe(h, "app")
    assert d.transaction_start_time_ms == h.clock.ms - 1_000  # it started with the first partition
    assert [(t.topic, t.partitions) for t in d.topics] == [("t", [0, 1]), ("u", [0])]


@pytest.mark.parametrize("version", [0, 1, 2, 3])
def test_an_unknown_partition_fails_the_whole_add(h: TxnHarness, version: int) -> None:
    pid = init(h).producer_id
    answer = add_partitions(h, pid, 0, {"t": [0, 7], "nope": [0]}, version=version)
    assert answer == {
        ("t", 0): E.OPERATION_NOT_ATTEMPTED,
        ("t", 7): E.UNKNOWN_TOPIC_OR_PARTITION,
        ("nope", 0): E.UNKNOWN_TOPIC_OR_PARTITION,
    }
    assert state(h) == "Empty" and describe(h, "app")[0].topics == []


def test_requests_for_unknown_ids_and_producers(h: TxnHarness) -> None:
    pid = init(h).producer_id
    assert add_partitions(h, pid, 0, {"t": [0]}, txn="unknown") == {
        ("t", 0): E.INVALID_PRODUCER_ID_MAPPING
    }
    assert add_partitions(h, pid + 1, 0, {"t": [0]}) == {("t", 0): E.INVALID_PRODUCER_ID_MAPPING}
    assert add_partitions(h, pid, 0, {"t": [0]}, txn="") == {("t", 0): E.INVALID_REQUEST}
    assert add_offsets(h, pid, 0, "g", txn="unknown") == E.INVALID_PRODUCER_ID_MAPPING
    assert end(h, pid, 0, True, txn="unknown") == E.INVALID_PRODUCER_ID_MAPPING
    assert end(h, pid + 1, 0, True) == E.INVALID_PRODUCER_ID_MAPPING
    assert end(h, pid, 0, True, txn="") == E.INVALID_REQUEST
    assert end(h, pid, 3, True) == E.PRODUCER_FENCED


# -- EndTxn --------------------------------------------------------------------------------------------


def test_end_without_a_transaction_is_invalid_txn_state(h: TxnHarness) -> None:
    pid = init(h).producer_id
    assert end(h, pid, 0, True) == E.INVALID_TXN_STATE
    assert end(h, pid, 0, False) == E.INVALID_TXN_STATE
    assert state(h) == "Empty"


def test_commit_writes_a_commit_marker_on_every_partition_of_the_transaction(h: TxnHarness) -> None:
    pid = init(h).producer_id
    add_partitions(h, pid, 0, {"t": [0, 2]})
    assert produce(h, "t", 0, transactional_batch(pid, 0, 0, b"a", b"b")) == E.NONE
    assert end(h, pid, 0, True) == E.NONE
    # answered after the markers: they are in the logs already
    assert h.markers("t", 0) == [Marker(2, pid, 0, True, 0)]
    assert h.markers("t", 2) == [Marker(0, pid, 0, True, 0)]
    assert h.markers("t", 1) == [] and h.markers("u", 0) == []
    (d,) = describe(h, "app")
    assert (d.transaction_state, d.topics) == ("CompleteCommit", [])
    # a retry of the commit (its answer was lost) is answered as the first was; the other
    # outcome is not
    assert end(h, pid, 0, True) == E.NONE
    assert end(h, pid, 0, False) == E.INVALID_TXN_STATE
    assert len(h.markers("t", 0)) == 1
    # the next transaction starts at once
    assert add_partitions(h, pid, 0, {"t": [1]}) == {("t", 1): E.NONE}
    assert end(h, pid, 0, False) == E.NONE
    assert h.markers("t", 1) == [Marker(0, pid, 0, False, 0)]
    assert end(h, pid, 0, False) == E.NONE
    assert end(h, pid, 0, True) == E.INVALID_TXN_STATE


def test_requests_during_a_transition_are_concurrent_transactions(h: TxnHarness) -> None:
    """While a transaction's end is being written, other requests for its id are told to
    retry (CONCURRENT_TRANSACTIONS), as Kafka answers while a transition is pending."""
    pid = init(h).producer_id
    add_partitions(h, pid, 0, {"t": [0]})
    commit = m.EndTxnRequest(transactional_id="app", producer_id=pid, producer_epoch=0, committed=True)
    add = m.AddPartitionsToTxnRequest(
        v3_and_below_transactional_id="app",
        v3_and_below_producer_id=pid,
        v3_and_below_producer_epoch=0,
        v3_and_below_topics=[m.AddPartitionsToTxnTopic(name="t", partitions=[1])],
    )
    again = m.InitProducerIdRequest(transactional_id="app", transaction_timeout_ms=60_000)

    async def interleaved() -> list[Any]:
        ending = asyncio.ensure_future(h.dispatch(ApiKey.END_TXN, 3, commit))
        await asyncio.sleep(0)  # EndTxn has started writing PrepareCommit
        others = await asyncio.gather(
            h.dispatch(ApiKey.INIT_PRODUCER_ID, 4, again),
            h.dispatch(ApiKey.ADD_PARTITIONS_TO_TXN, 3, add),
            h.dispatch(ApiKey.END_TXN, 3, commit),
        )
        return [await ending, *others]

    first, init_answer, add_answer, end_again = h.run(interleaved())
    assert first.error_code == E.NONE
    assert init_answer.error_code == E.CONCURRENT_TRANSACTIONS
    (topic,) = add_answer.results_by_topic_v3_and_below
    assert topic.results_by_partition[0].partition_error_code == E.CONCURRENT_TRANSACTIONS
    assert end_again.error_code == E.CONCURRENT_TRANSACTIONS
    assert state(h) == "CompleteCommit"


# -- timeouts and expiry ---------------------------------------------------------------------------------


def test_a_transaction_older_than_its_timeout_is_aborted_and_its_producer_fenced(
    h: TxnHarness,
) -> None:
    pid = init(h, timeout_ms=10_000).producer_id
    add_partitions(h, pid, 0, {"t": [0]})
    add_offsets(h, pid, 0, "g")
    coordinator = h.broker.transactions
    h.clock.ms += 10_000
    assert h.run(coordinator.abort_timed_out()) == 0  # not older than its timeout yet
    h.clock.ms += 1
    assert h.run(coordinator.abort_timed_out()) == 1
    (d,) = describe(h, "app")
    assert (d.transaction_state, d.producer_epoch) == ("CompleteAbort", 1)
    assert h.markers("t", 0) == [Marker(0, pid, 1, False, 0)]
    # the producer that ran it is fenced; a new incarnation continues with the next epoch
    assert end(h, pid, 0, True) == E.PRODUCER_FENCED
    assert add_partitions(h, pid, 0, {"t": [0]}) == {("t", 0): E.PRODUCER_FENCED}
    assert init(h).producer_epoch == 2
    assert h.run(coordinator.abort_timed_out()) == 0


def test_the_timer_aborts_timed_out_transactions(make_harness: Callable[..., TxnHarness]) -> None:
    """transaction.abort.timed.out.transaction.cleanup.interval.ms drives the check; a real
    (short) interval, waited for with a deadline, not a sleep."""
    h = make_harness(transaction_abort_timed_out_transaction_cleanup_interval_ms="20")
    h.create_topic("t", 1)
    pid = init(h, timeout_ms=1_000).producer_id
    add_partitions(h, pid, 0, {"t": [0]})
    h.clock.ms += 2_000
    deadline = time.monotonic() + 10
    while state(h) != "CompleteAbort":
        assert time.monotonic() < deadline, "the timer never aborted the transaction"
        h.run(asyncio.sleep(0.02))
    assert h.markers("t", 0)[0].commit is False


def test_idle_transactional_ids_expire(h: TxnHarness) -> None:
    coordinator = h.broker.transactions
    expiration = coordinator.config.id_expiration_ms
    idle = init(h, "idle").producer_id
    busy = init(h, "busy").producer_id
    add_partitions(h, busy, 0, {"t": [0]}, txn="busy")
    h.clock.ms += expiration + 1
    assert h.run(coordinator.expire_transactional_ids()) == 1  # not the one in a transaction
    assert [d.error_code for d in describe(h, "idle", "busy")] == [
        E.TRANSACTIONAL_ID_NOT_FOUND,
        E.NONE,
    ]
    assert end(h, idle, 0, True, txn="idle") == E.INVALID_PRODUCER_ID_MAPPING
    h.restart(crash=True)
    assert [d.error_code for d in describe(h, "idle", "busy")] == [
        E.TRANSACTIONAL_ID_NOT_FOUND,
        E.NONE,
    ]
    again = init(h, "idle")
    assert again.error_code == E.NONE and again.producer_id != idle and again.producer_epoch == 0


# -- durability ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("crash", [False, True])
def test_state_survives_restarts(h: TxnHarness, crash: bool) -> None:
    pid = init(h).producer_id
    add_partitions(h, pid, 0, {"t": [0]})
    end(h, pid, 0, True)
    add_partitions(h, pid, 0, {"t": [1], "u": [0]})
    add_offsets(h, pid, 0, "g")
    (before,) = describe(h, "app")
    h.restart(crash=crash)
    (after,) = describe(h, "app")
    assert after == before and after.transaction_state == "Ongoing"
    # it goes on where it was
    assert end(h, pid, 0, True) == E.NONE
    assert [mk.commit for mk in h.markers("t", 1) + h.markers("u", 0)] == [True, True]


def test_snapshot_compaction_bounds_the_transaction_log(
    make_harness: Callable[..., TxnHarness],
) -> None:
    h = make_harness()
    h.create_topic("t", 1)
    h.broker.transactions.store.compact_min_records = 20
    pids = {f"app-{i}": init(h, f"app-{i}").producer_id for i in range(5)}
    for _ in range(10):
        for txn, pid in pids.items():
            add_partitions(h, pid, 0, {"t": [0]}, txn=txn)
            assert end(h, pid, 0, True, txn=txn) == E.NONE
    store = h.broker.transactions.store
    assert store.snapshots >= 3 and store.records_in_log <= 20 + 3 * 5
    assert store.partition_log.log_start_offset > 0
    before = describe(h, *pids)
    h.restart(crash=True)
    assert describe(h, *pids) == before

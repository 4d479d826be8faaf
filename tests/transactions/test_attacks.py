"""The coordinator under hostile or unlucky clients: InitProducerId races for one transactional
id, a fenced producer's requests after a timeout abort, a topic deleted in the middle of a
transaction, DeleteRecords while a transaction is open, thousands of partitions in one
transaction, and EndTxn retried concurrently. Each must leave one consistent outcome: no second
marker, no hang, no coordinator task failing, no producer holding an epoch it should not."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from sluice.broker.transactions.state import TxnState
from sluice.errors import ErrorCode
from sluice.protocol import ApiKey
from sluice.protocol import messages as m
from tests.transactions.conftest import (
    TxnHarness,
    add_offsets,
    add_partitions,
    describe,
    end,
    init,
    offset_fetch,
    produce,
    transactional_batch,
    txn_offset_commit,
)

E = ErrorCode


def state(h: TxnHarness, txn: str = "app") -> str:
    return describe(h, txn)[0].transaction_state


def gather(h: TxnHarness, *calls: tuple[ApiKey, int, Any], limit: float = 30.0) -> list[Any]:
    """Run the requests concurrently on the broker's loop; their answers, in order. A request
    that does not answer within ``limit`` seconds fails the test (a hang)."""

    async def run() -> list[Any]:
        return list(
            await asyncio.wait_for(
                asyncio.gather(*(h.dispatch(api, v, body) for api, v, body in calls)), limit
            )
        )

    return h.run(run())


def init_body(txn: str = "app") -> m.InitProducerIdRequest:
    return m.InitProducerIdRequest(transactional_id=txn, transaction_timeout_ms=60_000)


def end_body(pid: int, epoch: int, commit: bool) -> m.EndTxnRequest:
    return m.EndTxnRequest(transactional_id="app", producer_id=pid, producer_epoch=epoch, committed=commit)


# -- InitProducerId races ------------------------------------------------------------------------------


@pytest.mark.parametrize("before", ["new", "Empty", "Ongoing"])
def test_producers_racing_init_producer_id_end_with_one_current_epoch(
    h: TxnHarness, before: str
) -> None:
    """Five incarnations call InitProducerId at once (a new id, an idle one, one with a
    transaction in progress): each is answered an epoch of its own or CONCURRENT_TRANSACTIONS
    (retried by clients), never the same epoch twice; the last epoch given is the id's, the
    others are fenced, and an ongoing transaction is aborted exactly once."""
    pid = -1
    if before != "new":
        pid = init(h).producer_id
    if before == "Ongoing":
        assert add_partitions(h, pid, 0, {"t": [0]}) == {("t", 0): E.NONE}
    answers = gather(h, *[(ApiKey.INIT_PRODUCER_ID, 4, init_body())] * 5)
    codes = [a.error_code for a in answers]
    assert set(codes) <= {E.NONE, E.CONCURRENT_TRANSACTIONS} and E.NONE in codes, codes
    given = [(a.producer_id, a.producer_epoch) for a in answers if a.error_code == E.NONE]
    assert len({p for p, _ in given}) == 1 and len(set(given)) == len(given), given
    (d,) = describe(h, "app")
    current = max(e for _, e in given)
    assert (d.producer_id, d.producer_epoch, d.transaction_state) == (given[0][0], current, "Empty")
    for _, epoch in given:
        expected = E.INVALID_TXN_STATE if epoch == current else E.PRODUCER_FENCED
        assert end(h, given[0][0], epoch, True) == expected
    markers = h.markers("t", 0)
    assert len(markers) == (1 if before == "Ongoing" else 0) and not any(mk.commit for mk in markers)


# -- a fenced producer after its transaction timed out -----------------------------------------------------


def test_every_request_of_a_producer_fenced_by_its_timeout_is_refused(h: TxnHarness) -> None:
    pid = init(h, timeout_ms=10_000).producer_id
    assert add_partitions(h, pid, 0, {"t": [0]}) == {("t", 0): E.NONE}
    assert add_offsets(h, pid, 0, "g") == E.NONE
    h.clock.ms += 10_001
    assert h.run(h.broker.transactions.abort_timed_out()) == 1
    markers = h.markers("t", 0)
    assert add_partitions(h, pid, 0, {"t": [1]}) == {("t", 1): E.PRODUCER_FENCED}
    assert add_partitions(h, pid, 0, {"t": [1]}, version=0) == {("t", 1): E.INVALID_PRODUCER_EPOCH}
    assert add_offsets(h, pid, 0, "g") == E.PRODUCER_FENCED
    assert txn_offset_commit(h, pid, 0, "g", {("t", 0): 1}) == {("t", 0): E.INVALID_PRODUCER_EPOCH}
    for commit in (True, False):
        assert end(h, pid, 0, commit) == E.PRODUCER_FENCED
        assert end(h, pid, 0, commit, version=1) == E.INVALID_PRODUCER_EPOCH
    # a retry of the abort at the fencing epoch itself (no client holds it) changes nothing
    assert end(h, pid, 1, False) == E.NONE
    assert end(h, pid, 1, True) == E.INVALID_TXN_STATE
    assert h.markers("t", 0) == markers and h.markers("t", 1) == []
    assert state(h) == "CompleteAbort"
    # its batches are refused on the partition too: the abort marker raised the epoch there
    assert produce(h, "t", 0, transactional_batch(pid, 0, 1, b"late")) == E.INVALID_PRODUCER_EPOCH


# -- a topic deleted in the middle of a transaction ----------------------------------------------------------


@pytest.mark.parametrize("commit", [True, False])
def test_a_topic_deleted_mid_transaction_neither_hangs_nor_blocks_the_end(
    h: TxnHarness, commit: bool
) -> None:
    h.create_topic("gone", 2)
    pid = init(h).producer_id
    assert add_partitions(h, pid, 0, {"t": [0], "gone": [0, 1]}) == dict.fromkeys(
        [("t", 0), ("gone", 0), ("gone", 1)], E.NONE
    )
    assert produce(h, "gone", 0, transactional_batch(pid, 0, 0, b"lost")) == E.NONE
    assert produce(h, "t", 0, transactional_batch(pid, 0, 0, b"kept")) == E.NONE
    h.run(h.broker.logs.delete_topic("gone"))
    # adding a partition of the deleted topic now fails the add, not the transaction
    assert add_partitions(h, pid, 0, {"t": [1], "gone": [0]}) == {
        ("t", 1): E.OPERATION_NOT_ATTEMPTED,
        ("gone", 0): E.UNKNOWN_TOPIC_OR_PARTITION,
    }
    (answer,) = gather(h, (ApiKey.END_TXN, 3, end_body(pid, 0, commit)), limit=10)
    assert answer.error_code == E.NONE
    assert [mk.commit for mk in h.markers("t", 0)] == [commit]
    assert state(h) == ("CompleteCommit" if commit else "CompleteAbort")
    assert h.broker.transactions._tasks.pending == 0  # nothing left retrying in the background
    # the next transaction runs as usual
    assert add_partitions(h, pid, 0, {"t": [0]}) == {("t", 0): E.NONE}
    assert end(h, pid, 0, True) == E.NONE


def test_a_topic_deleted_while_the_transaction_ends(h: TxnHarness) -> None:
    """The delete and EndTxn race, the delete starting after 0 to 11 turns of the loop (so at
    every step of the end: the decision, the markers, the completion): the end completes each
    time (a marker on a partition whose topic is gone is not needed), and the coordinator is
    not left retrying."""
    pid = init(h).producer_id

    async def race(topic: str, turns: int) -> Any:
        ending = asyncio.ensure_future(h.dispatch(ApiKey.END_TXN, 3, end_body(pid, 0, True)))
        for _ in range(turns):
            await asyncio.sleep(0)
        await h.broker.logs.delete_topic(topic)
        return await asyncio.wait_for(ending, 10)

    for turns in range(12):
        topic = f"gone-{turns}"
        h.create_topic(topic, 1)
        assert add_partitions(h, pid, 0, {"t": [0], topic: [0]}) == {
            ("t", 0): E.NONE,
            (topic, 0): E.NONE,
        }
        assert produce(h, topic, 0, transactional_batch(pid, 0, 0, b"x")) == E.NONE

        assert h.run(race(topic, turns)).error_code == E.NONE, turns
        assert state(h) == "CompleteCommit", turns
        assert h.broker.transactions._tasks.pending == 0
    assert [mk.commit for mk in h.markers("t", 0)] == [True] * 12


# -- DeleteRecords while a transaction is open -------------------------------------------------------------


def delete_records(h: TxnHarness, offset: int) -> tuple[int, int]:
    body = m.DeleteRecordsRequest(
        topics=[
            m.DeleteRecordsTopic(
                name="t", partitions=[m.DeleteRecordsPartition(partition_index=0, offset=offset)]
            )
        ],
        timeout_ms=10_000,
    )
    resp: m.DeleteRecordsResponse = h.call(ApiKey.DELETE_RECORDS, 2, body)
    part = resp.topics[0].partitions[0]
    return part.error_code, part.low_watermark


def test_delete_records_during_a_transaction_follows_kafkas_rules(h: TxnHarness) -> None:
    """Only the high watermark bounds DeleteRecords (Kafka's rule), even inside an open
    transaction: the LSO then moves with the log start, and the transaction still ends with
    its marker, after which its remaining records are visible to read_committed."""
    pid = init(h).producer_id
    add_partitions(h, pid, 0, {"t": [0]})
    assert produce(h, "t", 0, transactional_batch(pid, 0, 0, b"a", b"b")) == E.NONE  # 0-1
    assert produce(h, "t", 0, transactional_batch(pid, 0, 2, b"c", b"d")) == E.NONE  # 2-3
    plog = h.broker.logs.get_log("t", 0)
    assert (plog.last_stable_offset, plog.high_watermark) == (0, 4)
    assert delete_records(h, 5) == (E.OFFSET_OUT_OF_RANGE, -1)  # past the high watermark
    assert delete_records(h, 1) == (E.NONE, 1)  # into the open transaction
    assert plog.last_stable_offset == 1
    found, _ = plog.read_committed(1, 1 << 20)
    assert found is None  # nothing is stable yet
    assert end(h, pid, 0, True) == E.NONE
    assert plog.last_stable_offset == plog.high_watermark == 5
    found, aborted = plog.read_committed(1, 1 << 20)
    assert found is not None and aborted == []
    assert delete_records(h, -1) == (E.NONE, 5)  # -1: the high watermark


def test_delete_records_inside_an_aborted_transaction_keeps_its_index_entry(h: TxnHarness) -> None:
    pid = init(h).producer_id
    add_partitions(h, pid, 0, {"t": [0]})
    assert produce(h, "t", 0, transactional_batch(pid, 0, 0, b"a", b"b", b"c")) == E.NONE  # 0-2
    assert delete_records(h, 2) == (E.NONE, 2)
    assert end(h, pid, 0, False) == E.NONE  # the ABORT marker at 3
    plog = h.broker.logs.get_log("t", 0)
    found, aborted = plog.read_committed(2, 1 << 20)
    assert found is not None
    assert [(t.producer_id, t.first_offset, t.last_offset) for t in aborted] == [(pid, 0, 3)]


# -- one transaction over thousands of partitions -----------------------------------------------------------


def test_thousands_of_partitions_in_one_add_partitions_to_txn(h: TxnHarness) -> None:
    count = 3000
    h.create_topic("wide", count)
    pid = init(h).producer_id
    wanted = {"wide": [*range(count), *range(count)]}  # each named twice, too
    started = time.monotonic()
    added = add_partitions(h, pid, 0, wanted)
    assert len(added) == count and set(added.values()) == {E.NONE}
    (d,) = describe(h, "app")
    assert d.transaction_state == "Ongoing" and len(d.topics[0].partitions) == count
    assert end(h, pid, 0, True) == E.NONE
    took = time.monotonic() - started
    print(f"AddPartitionsToTxn and EndTxn over {count} partitions: {took:.2f} s")
    assert all(len(h.markers("wide", p)) == 1 for p in (0, count // 2, count - 1))
    assert state(h) == "CompleteCommit"
    h.restart(crash=True)  # the log record naming them all replays
    assert state(h) == "CompleteCommit"
    assert add_partitions(h, pid, 0, {"wide": [7]}) == {("wide", 7): E.NONE}


# -- EndTxn retried concurrently ------------------------------------------------------------------------------


def test_concurrent_end_txn_retries_write_one_set_of_markers(h: TxnHarness) -> None:
    pid = init(h).producer_id
    add_partitions(h, pid, 0, {"t": [0, 1, 2]})
    answers = gather(
        h,
        *[(ApiKey.END_TXN, 3, end_body(pid, 0, True))] * 8,
        (ApiKey.END_TXN, 3, end_body(pid, 0, False)),
    )
    codes = [a.error_code for a in answers]
    assert codes[0] == E.NONE
    assert set(codes[1:-1]) <= {E.NONE, E.CONCURRENT_TRANSACTIONS}, codes
    assert codes[-1] in (E.CONCURRENT_TRANSACTIONS, E.INVALID_TXN_STATE)  # never an abort
    for p in range(3):
        assert [mk.commit for mk in h.markers("t", p)] == [True]
    assert state(h) == "CompleteCommit"
    # retries after it completed: the same outcome is NONE, the other INVALID_TXN_STATE
    retried = gather(h, *[(ApiKey.END_TXN, 3, end_body(pid, 0, True))] * 4)
    assert [a.error_code for a in retried] == [E.NONE] * 4
    assert end(h, pid, 0, False) == E.INVALID_TXN_STATE
    assert all(len(h.markers("t", p)) == 1 for p in range(3))


# -- TxnOffsetCommit racing the end of its transaction ----------------------------------------------------------


@pytest.mark.parametrize("commit", [True, False])
def test_txn_offset_commit_racing_end_txn_leaves_nothing_pending(h: TxnHarness, commit: bool) -> None:
    """A client that sends EndTxn without waiting for its TxnOffsetCommit (or whose retry
    arrives late), the TxnOffsetCommit arriving 0 to 11 loop turns after the EndTxn: whichever
    wins, the offset ends up committed with the transaction, dropped with it, or refused, and
    never pending without a transaction to end it (OffsetFetch with require_stable would answer
    UNSTABLE_OFFSET_COMMIT forever)."""
    pid = init(h).producer_id

    def offsets_body(offset: int) -> m.TxnOffsetCommitRequest:
        return m.TxnOffsetCommitRequest(
            transactional_id="app",
            group_id="g",
            producer_id=pid,
            producer_epoch=0,
            topics=[
                m.TxnOffsetCommitRequestTopic(
                    name="t",
                    partitions=[
                        m.TxnOffsetCommitRequestPartition(partition_index=0, committed_offset=offset)
                    ],
                )
            ],
        )

    async def race(turns: int) -> tuple[Any, Any]:
        ending = asyncio.ensure_future(h.dispatch(ApiKey.END_TXN, 3, end_body(pid, 0, commit)))
        for _ in range(turns):
            await asyncio.sleep(0)
        offsets = await h.dispatch(ApiKey.TXN_OFFSET_COMMIT, 3, offsets_body(turns + 1))
        return await asyncio.wait_for(ending, 10), offsets

    expected = -1
    for turns in range(12):
        assert add_offsets(h, pid, 0, "g") == E.NONE
        ended, offsets = h.run(race(turns))
        assert ended.error_code == E.NONE
        (code,) = [p.error_code for t in offsets.topics for p in t.partitions]
        assert code in (E.NONE, E.CONCURRENT_TRANSACTIONS, E.INVALID_TXN_STATE), turns
        assert h.broker.groups.store.pending == {}, turns
        if code == E.NONE and commit:
            expected = turns + 1
        assert offset_fetch(h, "g", [("t", 0)]) == {("t", 0): (expected, E.NONE)}, turns


# -- transactional batches the coordinator knows nothing of (KIP-890 verification) -------------------------


def unstable(h: TxnHarness, topic: str, partition: int) -> int:
    """How far the partition's LSO is below its high watermark (0: nothing left open)."""
    plog = h.broker.logs.get_partition(topic, partition).log
    return plog.high_watermark - plog.last_stable_offset


@pytest.mark.parametrize("mode", ["writer", "inline"])
@pytest.mark.parametrize("ending", ["commit", "abort"])
def test_a_batch_arriving_after_its_transaction_ended_is_refused(
    h: TxnHarness, ending: str, mode: str
) -> None:
    """A produce request delayed past its EndTxn (or retried after it) would open a transaction
    on the partition that the coordinator, which holds the id CompleteCommit, never ends: the
    LSO would stay at it for good and read_committed consumers would stop there."""
    h.run(h.broker.logs.create_topic("m", 1, {"sluice.append.mode": mode}))
    pid = init(h).producer_id
    assert add_partitions(h, pid, 0, {"m": [0]}) == {("m", 0): E.NONE}
    assert produce(h, "m", 0, transactional_batch(pid, 0, 0, b"a")) == E.NONE
    # a retry of a batch that made it is answered as before, not refused
    assert produce(h, "m", 0, transactional_batch(pid, 0, 0, b"a")) == E.NONE
    assert end(h, pid, 0, ending == "commit") == E.NONE
    assert produce(h, "m", 0, transactional_batch(pid, 0, 0, b"a")) == E.NONE
    assert produce(h, "m", 0, transactional_batch(pid, 0, 1, b"late")) == E.INVALID_TXN_STATE
    assert unstable(h, "m", 0) == 0
    # the producer's next transaction goes on with the sequence the refused batch did not take
    assert add_partitions(h, pid, 0, {"m": [0]}) == {("m", 0): E.NONE}
    assert produce(h, "m", 0, transactional_batch(pid, 0, 1, b"next")) == E.NONE
    assert unstable(h, "m", 0) > 0
    assert end(h, pid, 0, True) == E.NONE
    assert unstable(h, "m", 0) == 0


@pytest.mark.parametrize("fenced_while", ["Ongoing", "Empty"])
def test_a_fenced_producer_cannot_write_where_its_transaction_never_went(
    h: TxnHarness, fenced_while: str
) -> None:
    """No marker of the fencing ever reaches t-1, so only the coordinator knows the zombie is
    fenced there: without asking it, its batch opened a transaction that the new incarnation's
    commit marker then committed (read_committed consumers got a fenced producer's records)."""
    old = init(h)
    if fenced_while == "Ongoing":
        assert add_partitions(h, old.producer_id, 0, {"t": [0]}) == {("t", 0): E.NONE}
        assert produce(h, "t", 0, transactional_batch(old.producer_id, 0, 0, b"old")) == E.NONE
    new = init(h)
    assert (new.producer_id, new.producer_epoch) == (old.producer_id, 2 if fenced_while == "Ongoing" else 1)
    zombie = transactional_batch(old.producer_id, 0, 0, b"zombie")
    assert produce(h, "t", 1, zombie) == E.INVALID_PRODUCER_EPOCH
    assert unstable(h, "t", 1) == 0 and h.batches("t", 1) == []
    assert add_partitions(h, new.producer_id, new.producer_epoch, {"t": [1]}) == {("t", 1): E.NONE}
    assert produce(h, "t", 1, zombie) == E.INVALID_PRODUCER_EPOCH  # added now, but not for it
    batch = transactional_batch(new.producer_id, new.producer_epoch, 0, b"new")
    assert produce(h, "t", 1, batch) == E.NONE
    assert end(h, new.producer_id, new.producer_epoch, True) == E.NONE
    assert unstable(h, "t", 1) == 0
    assert [epoch for _, epoch, _ in h.batches("t", 1)] == [new.producer_epoch] * 2  # its batch, its marker


def test_transactional_batches_the_coordinator_cannot_place_are_refused(h: TxnHarness) -> None:
    pid = init(h).producer_id
    other = init(h, "other").producer_id
    assert add_partitions(h, pid, 0, {"t": [0]}) == {("t", 0): E.NONE}
    # no transactional_id in the request: Kafka's answer (authorization of the id)
    no_id = transactional_batch(pid, 0, 0, b"x")
    assert produce(h, "t", 0, no_id, txn=None) == E.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    # an id the coordinator does not know, or another producer's
    assert produce(h, "t", 0, no_id, txn="nobody") == E.INVALID_PRODUCER_ID_MAPPING
    assert produce(h, "t", 0, transactional_batch(other, 0, 0, b"x")) == E.INVALID_PRODUCER_ID_MAPPING
    # an epoch the coordinator never gave
    assert produce(h, "t", 0, transactional_batch(pid, 1, 0, b"x")) == E.INVALID_PRODUCER_EPOCH
    # a partition not added to the transaction (yet)
    assert produce(h, "t", 1, transactional_batch(pid, 0, 0, b"x")) == E.INVALID_TXN_STATE
    # while its transaction is being fenced (the PrepareAbort of a new incarnation or of the
    # timeout being written): fenced already, and while it is being ended (EndTxn)
    txn = h.broker.transactions.transactions["app"]
    for pending, code in [
        (TxnState.PREPARE_EPOCH_FENCE, E.INVALID_PRODUCER_EPOCH),
        (TxnState.PREPARE_COMMIT, E.INVALID_TXN_STATE),
    ]:
        txn.pending = pending  # white-box: the moment a write of that state is in flight
        try:
            assert produce(h, "t", 0, no_id) == code
        finally:
            txn.pending = None
    assert all(h.batches("t", p) == [] for p in (0, 1))
    # the one the transaction added takes it
    assert produce(h, "t", 0, no_id) == E.NONE
    assert end(h, pid, 0, False) == E.NONE
    assert unstable(h, "t", 0) == 0


def test_verification_turned_off_takes_any_transactional_batch(make_harness: Any) -> None:
    """transaction.partition.verification.enable=false: the partition side alone (Kafka's
    behaviour before KIP-890), which the raw-producer tests of the partition side rely on."""
    h = make_harness(transaction_partition_verification_enable="false")
    h.create_topic("t", 1)
    pid = init(h).producer_id
    assert produce(h, "t", 0, transactional_batch(pid, 0, 0, b"x")) == E.NONE
    assert unstable(h, "t", 0) == 1
    assert produce(h, "t", 0, transactional_batch(pid, 0, 1, b"x"), txn=None) == E.TRANSACTIONAL_ID_AUTHORIZATION_FAILED


# -- a marker written by hand ---------------------------------------------------------------------------


def write_txn_marker(
    h: TxnHarness, pid: int, epoch: int, coordinator_epoch: int, commit: bool, tp: tuple[str, int]
) -> int:
    """WriteTxnMarkers as Admin.abortTransaction (kafka-transactions.sh abort) sends it."""
    body = m.WriteTxnMarkersRequest(
        markers=[
            m.WritableTxnMarker(
                producer_id=pid,
                producer_epoch=epoch,
                transaction_result=commit,
                coordinator_epoch=coordinator_epoch,
                topics=[m.WritableTxnMarkerTopic(name=tp[0], partition_indexes=[tp[1]])],
            )
        ]
    )
    resp: m.WriteTxnMarkersResponse = h.call(ApiKey.WRITE_TXN_MARKERS, 1, body)
    code: int = resp.markers[0].topics[0].partitions[0].error_code
    return code


def test_a_marker_written_by_hand_with_a_higher_coordinator_epoch_never_fences_the_coordinator(
    h: TxnHarness,
) -> None:
    """An operator aborting a transaction by hand (kafka-transactions.sh abort with a
    --coordinator-epoch, say 5) raised the partition's coordinator epoch for the producer past
    the coordinator's 0: every marker of the coordinator was then refused
    TRANSACTION_COORDINATOR_FENCED and retried forever, the transactional id stayed
    PrepareCommit for good (across restarts too) and its producer got CONCURRENT_TRANSACTIONS
    for every request, InitProducerId included. The node's coordinator is the only one, so
    nothing can be newer than it."""
    pid = init(h).producer_id
    assert add_partitions(h, pid, 0, {"t": [0, 1]}) == dict.fromkeys([("t", 0), ("t", 1)], E.NONE)
    assert produce(h, "t", 0, transactional_batch(pid, 0, 0, b"aborted by hand")) == E.NONE
    assert produce(h, "t", 1, transactional_batch(pid, 0, 0, b"committed")) == E.NONE
    assert write_txn_marker(h, pid, 0, 5, False, ("t", 0)) == E.NONE
    # a marker from an older coordinator epoch than the hand-written one is still refused
    assert write_txn_marker(h, pid, 0, 4, False, ("t", 0)) == E.TRANSACTION_COORDINATOR_FENCED
    assert end(h, pid, 0, True) == E.NONE
    assert state(h) == "CompleteCommit"
    assert [(mk.commit, mk.coordinator_epoch) for mk in h.markers("t", 0)] == [(False, 5), (True, 5)]
    assert [(mk.commit, mk.coordinator_epoch) for mk in h.markers("t", 1)] == [(True, 0)]
    # the producer goes on: a new transaction, a new incarnation fencing it
    assert add_partitions(h, pid, 0, {"t": [0]}) == {("t", 0): E.NONE}
    assert produce(h, "t", 0, transactional_batch(pid, 0, 1, b"next")) == E.NONE
    new = init(h)
    assert (new.error_code, new.producer_epoch) == (E.NONE, 2)
    assert state(h) == "Empty" and unstable(h, "t", 0) == 0


def test_a_marker_written_by_hand_at_an_epoch_the_coordinator_never_gave_is_refused(
    h: TxnHarness,
) -> None:
    """A WriteTxnMarkers at a future epoch of a transactional id's producer (a typo in
    kafka-transactions.sh abort --producer-epoch) raised the producer's epoch on the partition
    past the coordinator's: each new incarnation of the id (epoch 1, 2, ...) had its batches
    there refused INVALID_PRODUCER_EPOCH until its epoch passed the typo's (for good near the
    epoch limit)."""
    pid = init(h).producer_id
    assert add_partitions(h, pid, 0, {"t": [0]}) == {("t", 0): E.NONE}
    assert produce(h, "t", 0, transactional_batch(pid, 0, 0, b"a")) == E.NONE
    assert write_txn_marker(h, pid, 10, 0, False, ("t", 0)) == E.INVALID_PRODUCER_EPOCH
    assert h.markers("t", 0) == []
    # at the producer's own epoch it is what Admin.abortTransaction does, and goes through
    assert write_txn_marker(h, pid, 0, 0, False, ("t", 0)) == E.NONE
    assert end(h, pid, 0, True) == E.NONE
    for expected_epoch in (1, 2):
        new = init(h)
        assert new.producer_epoch == expected_epoch
        assert add_partitions(h, pid, new.producer_epoch, {"t": [0]}) == {("t", 0): E.NONE}
        batch = transactional_batch(pid, new.producer_epoch, 0, b"next")
        assert produce(h, "t", 0, batch) == E.NONE
        assert end(h, pid, new.producer_epoch, True) == E.NONE
    # a producer id no transactional id holds (an idempotent producer's) is not checked
    assert write_txn_marker(h, pid + 1000, 7, 0, False, ("t", 0)) == E.NONE
    assert unstable(h, "t", 0) == 0

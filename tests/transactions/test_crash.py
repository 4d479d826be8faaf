"""The coordinator's state after a SIGKILL of ``sluice serve`` (a child process), in each state a
transaction can be in: Ongoing transactions keep running after the restart (their producer can
still commit; read_committed consumers see none of them until then, on every partition) or are
aborted at their timeout, counted from when they started before the crash, or by a new producer
with the same transactional.id, which fences the old one; decided ones (PrepareCommit,
PrepareAbort) are completed by the restart (markers written, group offsets committed or
dropped); completed ones stay completed."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from sluice.broker.transactions.state import TxnState, prepare_end
from sluice.broker.transactions.store import DIR_NAME, TransactionStore
from sluice.errors import ErrorCode
from sluice.protocol import ApiKey
from sluice.protocol import messages as m
from sluice.protocol.records import decode_records, iter_stored_batches
from sluice.testing import BrokerProcess, create_topic
from tests.server.wire import WireClient
from tests.transactions.wire_log import describe, markers, offset_fetch, wait_for_state

TXN = "crash-app"
GROUP = "crash-group"


@pytest.fixture
def process(tmp_path: Path) -> Iterator[BrokerProcess]:
    with BrokerProcess(
        tmp_path / "data",
        tmp_path / "serve.log",
        settings={"transaction.abort.timed.out.transaction.cleanup.interval.ms": "100"},
    ) as broker:
        broker.start()
        yield broker


def open_transaction(broker: BrokerProcess, **producer_settings: object) -> Producer:
    """A transaction in progress: records on both partitions of ``out`` and the group's offset
    of ``in`` (4) sent to it, neither committed."""
    create_topic(broker.bootstrap_servers, "in", 1)
    create_topic(broker.bootstrap_servers, "out", 2)
    feeder = Producer({"bootstrap.servers": broker.bootstrap_servers})
    for i in range(4):
        feeder.produce("in", f"in{i}".encode())
    assert feeder.flush(30) == 0
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": GROUP,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe(["in"])
        seen = 0
        deadline = time.monotonic() + 30
        while seen < 4:
            assert time.monotonic() < deadline
            msg = consumer.poll(0.5)
            seen += msg is not None and msg.error() is None
        producer = Producer(
            {
                "bootstrap.servers": broker.bootstrap_servers,
                "transactional.id": TXN,
                **producer_settings,
            }
        )
        producer.init_transactions(30)
        producer.begin_transaction()
        producer.produce("out", b"r0", partition=0)
        producer.produce("out", b"r1", partition=1)
        assert producer.flush(30) == 0
        producer.send_offsets_to_transaction(
            [TopicPartition("in", 0, 4)], consumer.consumer_group_metadata(), 30
        )
    finally:
        consumer.close()
    assert describe(broker.port, TXN).transaction_state == "Ongoing"
    return producer


def committed(broker: BrokerProcess) -> int:
    watcher = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": GROUP})
    try:
        (tp,) = watcher.committed([TopicPartition("in", 0)], 30)
        return int(tp.offset)
    finally:
        watcher.close()


def visible(broker: BrokerProcess, isolation: str) -> list[list[bytes]]:
    """The values on each partition of ``out`` as a consumer with ``isolation`` reads them, to
    each partition's end (the last stable offset for read_committed)."""
    reader = Consumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": f"reader-{isolation}",
            "isolation.level": isolation,
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    values: list[list[bytes]] = [[], []]
    try:
        reader.assign([TopicPartition("out", p, OFFSET_BEGINNING) for p in (0, 1)])
        ended: set[int] = set()
        deadline = time.monotonic() + 30
        while len(ended) < 2:
            assert time.monotonic() < deadline, f"only {ended} reached their end"
            msg = reader.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                assert error.code() == KafkaError._PARTITION_EOF, error
                ended.add(msg.partition() or 0)
            else:
                values[msg.partition() or 0].append(msg.value() or b"")
    finally:
        reader.close()
    return values


def decide_offline(data_dir: Path, commit: bool) -> None:
    """Leave the data directory as a crash right after EndTxn's decision leaves it: the
    PrepareCommit/PrepareAbort record fsynced in the transaction log (written with the
    coordinator's own store and transition), no marker written yet, no clean-shutdown marker.
    The window is too short to hit with a real SIGKILL reliably, so the record is appended by
    the test, to the log of a broker that was really SIGKILLed."""

    async def write() -> None:
        store = TransactionStore.open(data_dir / DIR_NAME)
        record = store.transactions[TXN].record
        assert record.state is TxnState.ONGOING
        await store.write([(TXN, prepare_end(record, commit, record.last_update_timestamp + 1))])
        await store.partition.drain()
        store.partition.abandon()

    asyncio.run(write())


@pytest.mark.parametrize("commit", [True, False], ids=["PrepareCommit", "PrepareAbort"])
def test_a_decided_transaction_is_completed_after_a_crash(
    process: BrokerProcess, commit: bool
) -> None:
    producer = open_transaction(process)
    process.kill()
    decide_offline(process.data_dir, commit)
    process.start()
    d = wait_for_state(process.port, TXN, "CompleteCommit" if commit else "CompleteAbort")
    assert d.producer_epoch == 0 and d.topics == []
    marker = b"COMMIT" if commit else b"ABORT"
    assert markers(process.port, "out", 0) == [marker]
    assert markers(process.port, "out", 1) == [marker]
    assert committed(process) == (4 if commit else -1001)  # -1001: librdkafka's "no offset"
    # The producer whose EndTxn the crash interrupted sends it again: answered as done (a
    # retry of a completed end, as Kafka answers it), and it goes on with the same epoch.
    if commit:
        producer.commit_transaction(30)
    else:
        producer.abort_transaction(30)
    assert markers(process.port, "out", 0) == [marker]  # no second marker
    producer.begin_transaction()
    producer.produce("out", b"next", partition=0)
    producer.commit_transaction(30)
    assert markers(process.port, "out", 0) == [marker, b"COMMIT"]


def test_an_ongoing_transaction_keeps_running_after_a_crash(process: BrokerProcess) -> None:
    producer = open_transaction(process)
    process.kill()
    process.start()
    d = describe(process.port, TXN)
    assert d.transaction_state == "Ongoing"
    assert [(t.topic, t.partitions) for t in d.topics] == [("out", [0, 1])]
    assert offset_fetch(process.port, GROUP, "in", 0) == (-1, ErrorCode.UNSTABLE_OFFSET_COMMIT)
    # nothing of it is visible to read_committed on either partition, all of it uncommitted
    assert visible(process, "read_committed") == [[], []]
    assert visible(process, "read_uncommitted") == [[b"r0"], [b"r1"]]
    producer.commit_transaction(30)  # the producer reconnects and ends it
    assert markers(process.port, "out", 0) == [b"COMMIT"]
    assert committed(process) == 4
    assert visible(process, "read_committed") == [[b"r0"], [b"r1"]]  # all of it at once
    # completed stays completed
    process.kill()
    process.start()
    assert describe(process.port, TXN).transaction_state == "CompleteCommit"
    assert committed(process) == 4


def test_an_ongoing_transaction_times_out_after_a_crash(process: BrokerProcess) -> None:
    producer = open_transaction(
        process, **{"transaction.timeout.ms": 2000, "message.timeout.ms": 2000}
    )
    started = describe(process.port, TXN).transaction_start_time_ms
    process.kill()
    process.start()
    d = wait_for_state(process.port, TXN, "CompleteAbort")
    assert d.producer_epoch == 1  # fenced
    assert d.transaction_start_time_ms == started  # its clock did not restart with the broker
    assert markers(process.port, "out", 0) == [b"ABORT"]
    assert markers(process.port, "out", 1) == [b"ABORT"]
    assert committed(process) == -1001
    with pytest.raises(KafkaException) as failed:
        producer.commit_transaction(30)
    assert failed.value.args[0].fatal()


def test_after_a_crash_a_new_producer_fences_the_old_and_aborts_its_transaction(
    process: BrokerProcess,
) -> None:
    """The broker SIGKILLed mid-transaction; after the restart the application starts again
    with the same transactional.id, as it would after its own crash: the old transaction is
    aborted on every partition (never half-visible), its offsets dropped, its producer fenced."""
    old = open_transaction(process)
    process.kill()
    process.start()
    assert visible(process, "read_committed") == [[], []]
    new = Producer({"bootstrap.servers": process.bootstrap_servers, "transactional.id": TXN})
    new.init_transactions(30)
    d = describe(process.port, TXN)
    assert (d.transaction_state, d.producer_epoch) == ("Empty", 2)  # aborted at epoch 1; now 2
    assert markers(process.port, "out", 0) == [b"ABORT"]
    assert markers(process.port, "out", 1) == [b"ABORT"]
    assert visible(process, "read_committed") == [[], []]
    assert committed(process) == -1001  # its offsets were dropped
    with pytest.raises(KafkaException) as fenced:
        old.commit_transaction(30)
    assert fenced.value.args[0].fatal()
    new.begin_transaction()
    new.produce("out", b"n0", partition=0)
    new.produce("out", b"n1", partition=1)
    new.commit_transaction(30)
    assert visible(process, "read_committed") == [[b"n0"], [b"n1"]]
    assert visible(process, "read_uncommitted") == [[b"r0", b"n0"], [b"r1", b"n1"]]


def markers_everywhere(port: int, topic: str, partitions: int) -> list[list[bytes]]:
    """Each partition's markers (b"COMMIT"/b"ABORT"), read with one read_uncommitted Fetch of
    every partition from offset 0 (each holds a record and a marker or two: a few hundred bytes)."""
    request = m.FetchRequest(
        max_wait_ms=0,
        min_bytes=1,
        max_bytes=64 << 20,
        topics=[
            m.FetchTopic(
                topic=topic,
                partitions=[
                    m.FetchPartition(partition=p, fetch_offset=0, partition_max_bytes=1 << 16)
                    for p in range(partitions)
                ],
            )
        ],
    )
    with WireClient("127.0.0.1", port) as client:
        resp = client.call(ApiKey.FETCH, 12, request, m.FetchResponse, timeout=60)
    found: list[list[bytes]] = [[] for _ in range(partitions)]
    for part in resp.responses[0].partitions:
        assert part.error_code == 0
        data = bytes(part.records or b"")
        for h in iter_stored_batches(data):
            if h.is_control:
                (record,) = decode_records(data[h.position : h.position + h.size])
                assert record.key is not None
                found[part.partition_index].append(b"COMMIT" if record.key[-1] == 1 else b"ABORT")
    return found


def test_a_sigkill_between_the_decision_and_the_markers(process: BrokerProcess) -> None:
    """A real SIGKILL in the window test_a_decided_transaction_is_completed_after_a_crash
    simulates: a commit over 1500 partitions, whose markers (one fsync each) take long enough
    for the test to see PrepareCommit (the decision durable, markers being written) and kill
    the broker then. The restart writes every marker again (a partition that had one gets a
    second, harmlessly), and the producer's EndTxn retry is answered as done."""
    partitions = 1500
    create_topic(process.bootstrap_servers, "wide", partitions)
    producer = Producer({"bootstrap.servers": process.bootstrap_servers, "transactional.id": TXN})
    producer.init_transactions(30)
    producer.begin_transaction()
    for p in range(partitions):
        producer.produce("wide", f"v{p}".encode(), partition=p)
    assert producer.flush(60) == 0
    outcome: list[BaseException | None] = []

    def commit() -> None:
        try:
            producer.commit_transaction(60)
            outcome.append(None)
        except BaseException as exc:  # reported below
            outcome.append(exc)

    committing = threading.Thread(target=commit)
    committing.start()
    seen = wait_for_state(process.port, TXN, "PrepareCommit", "CompleteCommit", poll=0.002)
    assert seen.transaction_state == "PrepareCommit", "the markers were all written before the test looked"
    process.kill()
    unmarked = sum(len(t.partitions) for t in seen.topics)
    print(f"SIGKILL with {unmarked} of {partitions} markers unwritten when last seen")
    process.start()
    committing.join(90)
    assert outcome == [None]  # librdkafka retried EndTxn across the restart: answered as done
    assert describe(process.port, TXN).transaction_state == "CompleteCommit"
    found = markers_everywhere(process.port, "wide", partitions)
    assert all(kinds in ([b"COMMIT"], [b"COMMIT", b"COMMIT"]) for kinds in found)
    print(f"{sum(len(kinds) == 2 for kinds in found)} partitions got their marker before and after")

"""Transactional producers of the three Python clients against a real broker: commit and abort
across partitions (the markers each leaves on every partition), send_offsets_to_transaction with
a real consumer group, fencing by a second producer with the same transactional.id, the
transaction timeout, OffsetFetch with require_stable as librdkafka uses it, and the admin APIs
through kafka-python's admin client.

What a read_committed consumer sees (the last stable offset, aborted transactions skipped) is
the partition side's; these tests read partitions over the wire with read_uncommitted Fetch
and look at the control batches directly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from sluice.testing import EmbeddedBroker, create_topic, unique_topic_name
from tests.transactions.wire_log import (
    data_values,
    describe,
    markers,
    stored_batches,
    wait_for_state,
)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(
        tmp_path_factory.mktemp("sluice-txn"),
        settings={"transaction.abort.timed.out.transaction.cleanup.interval.ms": "100"},
    ) as b:
        yield b


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    return unique_topic_name(str(request.node.name))


def txn_producer(broker: EmbeddedBroker, txn_id: str, **extra: object) -> Producer:
    return Producer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "transactional.id": txn_id,
            "linger.ms": 5,
            **extra,
        }
    )


def test_confluent_commits_and_aborts_across_partitions(broker: EmbeddedBroker, name: str) -> None:
    topic = create_topic(broker.bootstrap_servers, name, 3)
    p = txn_producer(broker, name)
    p.init_transactions(30)
    p.begin_transaction()
    for i in range(30):
        p.produce(topic, f"c{i}".encode(), partition=i % 3)
    p.commit_transaction(30)
    p.begin_transaction()
    for i in range(6):
        p.produce(topic, f"a{i}".encode(), partition=i % 2)
    p.flush(30)  # written, then aborted (an unsent record would just be purged by the client)
    p.abort_transaction(30)
    p.begin_transaction()
    p.produce(topic, b"last", partition=2)
    p.commit_transaction(30)

    port = broker.port
    assert markers(port, topic, 0) == [b"COMMIT", b"ABORT"]
    assert markers(port, topic, 1) == [b"COMMIT", b"ABORT"]
    assert markers(port, topic, 2) == [b"COMMIT", b"COMMIT"]  # not in the aborted transaction
    assert data_values(port, topic, 0) == [f"c{i}".encode() for i in range(0, 30, 3)] + [
        b"a0",
        b"a2",
        b"a4",
    ]
    assert data_values(port, topic, 2) == [f"c{i}".encode() for i in range(2, 30, 3)] + [b"last"]
    batches = stored_batches(port, topic, 0)
    assert all(b.transactional for b in batches) and {b.producer_epoch for b in batches} == {0}
    d = describe(port, name)
    assert (d.transaction_state, d.producer_epoch, d.topics) == ("CompleteCommit", 0, [])


def test_send_offsets_to_transaction_with_a_real_consumer_group(
    broker: EmbeddedBroker, name: str
) -> None:
    source = create_topic(broker.bootstrap_servers, name + "-in", 1)
    sink = create_topic(broker.bootstrap_servers, name + "-out", 1)
    feeder = Producer({"bootstrap.servers": broker.bootstrap_servers})
    for i in range(10):
        feeder.produce(source, f"in{i}".encode())
    feeder.flush(30)
    group = name + "-group"
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    watcher = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": group})
    p = txn_producer(broker, name)
    try:
        consumer.subscribe([source])
        got: list[Message] = []
        deadline = time.monotonic() + 30
        while len(got) < 10:
            assert time.monotonic() < deadline
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append(msg)
        p.init_transactions(30)

        def process(batch: list[Message], commit: bool) -> None:
            p.begin_transaction()
            for msg in batch:
                p.produce(sink, (msg.value() or b"").upper())
            last = (batch[-1].offset() or 0) + 1
            p.send_offsets_to_transaction(
                [TopicPartition(source, 0, last)], consumer.consumer_group_metadata(), 30
            )
            if not commit:
                # Pending: a read_committed consumer (librdkafka's default) asks with
                # require_stable and is told to wait (UNSTABLE_OFFSET_COMMIT) until it ends.
                with pytest.raises(KafkaException, match="Timed out"):
                    watcher.committed([TopicPartition(source, 0)], 1.5)
                p.flush(30)
                p.abort_transaction(30)
            else:
                p.commit_transaction(30)

        process(got[:6], commit=True)
        (tp,) = watcher.committed([TopicPartition(source, 0)], 10)
        assert tp.offset == 6
        process(got[6:], commit=False)
        (tp,) = watcher.committed([TopicPartition(source, 0)], 10)
        assert tp.offset == 6  # the aborted transaction's offsets were dropped
        process(got[6:], commit=True)
        (tp,) = watcher.committed([TopicPartition(source, 0)], 10)
        assert tp.offset == 10
        assert markers(broker.port, sink, 0) == [b"COMMIT", b"ABORT", b"COMMIT"]
    finally:
        consumer.close()
        watcher.close()


def test_a_second_producer_with_the_same_transactional_id_fences_the_first(
    broker: EmbeddedBroker, name: str
) -> None:
    topic = create_topic(broker.bootstrap_servers, name, 2)
    first = txn_producer(broker, name)
    first.init_transactions(30)
    first.begin_transaction()
    first.produce(topic, b"zombie", partition=0)
    first.produce(topic, b"zombie", partition=1)
    first.flush(30)
    second = txn_producer(broker, name)
    second.init_transactions(30)  # aborts the first's transaction and bumps the epoch twice
    assert describe(broker.port, name).producer_epoch == 2
    assert markers(broker.port, topic, 0) == [b"ABORT"]
    assert markers(broker.port, topic, 1) == [b"ABORT"]
    with pytest.raises(KafkaException) as failed:
        first.commit_transaction(30)
    assert failed.value.args[0].fatal() and "fenced" in str(failed.value).lower()
    second.begin_transaction()
    second.produce(topic, b"new", partition=0)
    second.commit_transaction(30)
    assert markers(broker.port, topic, 0) == [b"ABORT", b"COMMIT"]


def test_the_transaction_timeout_aborts_and_fences(broker: EmbeddedBroker, name: str) -> None:
    topic = create_topic(broker.bootstrap_servers, name, 1)
    p = txn_producer(broker, name, **{"transaction.timeout.ms": 1000, "message.timeout.ms": 1000})
    p.init_transactions(30)
    p.begin_transaction()
    p.produce(topic, b"slow")
    p.flush(30)
    d = wait_for_state(broker.port, name, "CompleteAbort")
    assert d.producer_epoch == 1
    assert markers(broker.port, topic, 0) == [b"ABORT"]
    with pytest.raises(KafkaException) as failed:
        p.commit_transaction(30)
    assert failed.value.args[0].fatal() and "fenced" in str(failed.value).lower()


def test_kafka_python_commits_and_aborts(broker: EmbeddedBroker, name: str) -> None:
    from kafka import KafkaProducer  # type: ignore[import-untyped]

    topic = create_topic(broker.bootstrap_servers, name, 2)
    p = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, transactional_id=name)
    try:
        p.init_transactions()
        p.begin_transaction()
        p.send(topic, b"k1", partition=0)
        p.send(topic, b"k2", partition=1)
        p.commit_transaction()
        p.begin_transaction()
        p.send(topic, b"k3", partition=0)
        p.flush()
        p.abort_transaction()
    finally:
        p.close()
    assert markers(broker.port, topic, 0) == [b"COMMIT", b"ABORT"]
    assert markers(broker.port, topic, 1) == [b"COMMIT"]
    assert data_values(broker.port, topic, 0) == [b"k1", b"k3"]
    assert describe(broker.port, name).transaction_state == "CompleteAbort"


def test_aiokafka_commits_and_aborts(broker: EmbeddedBroker, name: str) -> None:
    from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]

    topic = create_topic(broker.bootstrap_servers, name, 2)

    async def run() -> None:
        p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, transactional_id=name)
        await p.start()
        try:
            async with p.transaction():
                await p.send_and_wait(topic, b"a1", partition=0)
                await p.send_and_wait(topic, b"a2", partition=1)
            await p.begin_transaction()
            await p.send_and_wait(topic, b"a3", partition=1)
            await p.abort_transaction()
        finally:
            await p.stop()

    asyncio.run(run())
    assert markers(broker.port, topic, 0) == [b"COMMIT"]
    assert markers(broker.port, topic, 1) == [b"COMMIT", b"ABORT"]
    assert data_values(broker.port, topic, 1) == [b"a2", b"a3"]
    assert describe(broker.port, name).transaction_state == "CompleteAbort"


def test_kafka_python_admin_lists_and_describes_transactions(
    broker: EmbeddedBroker, name: str
) -> None:
    from kafka import KafkaAdminClient

    topic = create_topic(broker.bootstrap_servers, name, 2)
    p = txn_producer(broker, name)
    p.init_transactions(30)
    p.begin_transaction()
    p.produce(topic, b"open", partition=1)
    p.flush(30)
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    try:
        listed = admin.list_transactions(state_filters=["Ongoing"])
        (mine,) = [t for ts in listed.values() for t in ts if t.transactional_id == name]
        assert mine.state.value == "Ongoing"
        described = admin.describe_transactions([name])[name]
        assert described.state.value == "Ongoing" and described.producer_id == mine.producer_id
        assert {(tp.topic, tp.partition) for tp in described.topic_partitions} == {(topic, 1)}
        assert (
            described.transaction_timeout_ms == 60_000 and described.transaction_start_time_ms > 0
        )
        p.commit_transaction(30)
        assert admin.describe_transactions([name])[name].state.value == "CompleteCommit"
        longer = admin.list_transactions(state_filters=["Ongoing"], duration_filter_ms=0)
        assert name not in {t.transactional_id for ts in longer.values() for t in ts}
    finally:
        admin.close()

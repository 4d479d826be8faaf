"""Scripted faults, each observed by a real client as the error, delay or broken connection it
names; and the broker with no faults left is back to its plain path."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import confluent_kafka as ck
import pytest
from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped]
from aiokafka.errors import TopicAuthorizationFailedError  # type: ignore[import-untyped]
from kafka import KafkaConsumer  # type: ignore[import-untyped]

from sluice.errors import ErrorCode
from sluice.protocol import ApiKey
from sluice.testing import EmbeddedBroker
from sluice.testing.faults import api_key, error_code
from tests.server.wire import ConnectionClosed, WireClient, api_versions, batch, produce_request

QUIET = {"log_level": 0}


def _producer(broker: EmbeddedBroker, **config: Any) -> ck.Producer:
    return ck.Producer(
        {"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 0, **QUIET, **config}
    )


def _deliver(producer: ck.Producer, topic: str, *values: bytes) -> list[Any]:
    """Produce and wait for every delivery report: the error (or None) of each."""
    reports: list[Any] = []
    for value in values:
        producer.produce(topic, value, on_delivery=lambda err, _msg: reports.append(err))
    assert producer.flush(30) == 0
    return reports


def _values(broker: EmbeddedBroker, topic: str) -> list[bytes | None]:
    return [r.value for r in broker.consume_all(topic)]


def test_names_of_apis_and_errors() -> None:
    assert api_key("Produce") is api_key("PRODUCE") is api_key(0) is ApiKey.PRODUCE
    assert api_key("list_offsets") is api_key("ListOffsets") is ApiKey.LIST_OFFSETS
    assert error_code("not_leader_or_follower") is error_code(6) is ErrorCode.NOT_LEADER_OR_FOLLOWER
    assert api_key("offset-commit") is api_key(" Offset Commit") is ApiKey.OFFSET_COMMIT
    assert error_code("request-timed-out") is error_code(" request timed out ") is (
        ErrorCode.REQUEST_TIMED_OUT
    )
    with pytest.raises(ValueError, match="no API named"):
        api_key("Produse")
    with pytest.raises(ValueError, match="no error code named"):
        error_code("NOT_A_LEADER")


def test_librdkafka_retries_not_leader_and_then_succeeds(
    sluice_broker: EmbeddedBroker, sluice_topic: str
) -> None:
    fault = sluice_broker.faults.fail("Produce", "NOT_LEADER_OR_FOLLOWER", count=2)
    producer = _producer(sluice_broker, **{"enable.idempotence": False, "retry.backoff.ms": 10})
    assert _deliver(producer, sluice_topic, b"once") == [None]
    assert fault.hits == 2 and fault.exhausted
    assert _values(sluice_broker, sluice_topic) == [b"once"]  # refused twice, stored once


def test_a_non_retriable_error_reaches_the_application(
    sluice_broker: EmbeddedBroker, sluice_topic: str
) -> None:
    sluice_broker.faults.fail(ApiKey.PRODUCE, ErrorCode.TOPIC_AUTHORIZATION_FAILED)
    (report,) = _deliver(_producer(sluice_broker), sluice_topic, b"refused")
    assert report is not None and report.code() == ck.KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert _values(sluice_broker, sluice_topic) == []  # the handler never ran


def test_a_failed_commit_is_the_error_the_consumer_sees(
    sluice_broker: EmbeddedBroker, sluice_topic: str
) -> None:
    sluice_broker.produce(sluice_topic, b"a")
    consumer = ck.Consumer(
        {
            "bootstrap.servers": sluice_broker.bootstrap_servers,
            "group.id": sluice_topic,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            **QUIET,
        }
    )
    try:
        consumer.subscribe([sluice_topic])
        msg = None
        while msg is None:
            msg = consumer.poll(10)
        fault = sluice_broker.faults.fail("OffsetCommit", "OFFSET_METADATA_TOO_LARGE")
        with pytest.raises(ck.KafkaException) as failed:
            consumer.commit(message=msg, asynchronous=False)
        assert failed.value.args[0].code() == ck.KafkaError.OFFSET_METADATA_TOO_LARGE
        assert fault.hits == 1
        (committed,) = consumer.committed([ck.TopicPartition(sluice_topic, 0)], timeout=10)
        assert committed.offset == ck.OFFSET_INVALID  # refused, so nothing was committed
        consumer.commit(message=msg, asynchronous=False)  # the fault was used up
    finally:
        consumer.close()


def test_kafka_python_finds_the_coordinator_after_it_was_unavailable(
    sluice_broker: EmbeddedBroker, sluice_topic: str
) -> None:
    sluice_broker.produce(sluice_topic, b"a", b"b")
    fault = sluice_broker.faults.fail("FindCoordinator", "COORDINATOR_NOT_AVAILABLE", count=3)
    consumer = KafkaConsumer(
        sluice_topic,
        bootstrap_servers=sluice_broker.bootstrap_servers,
        group_id=sluice_topic,
        auto_offset_reset="earliest",
        retry_backoff_ms=10,
        consumer_timeout_ms=30_000,
    )
    try:
        values = [next(consumer).value for _ in range(2)]
    finally:
        consumer.close()
    assert sorted(values) == [b"a", b"b"]
    assert fault.hits == 3


def test_aiokafka_raises_the_fetch_error_it_was_given(
    sluice_broker: EmbeddedBroker, sluice_topic: str
) -> None:
    sluice_broker.produce(sluice_topic, b"stored")
    fault = sluice_broker.faults.fail("Fetch", "TOPIC_AUTHORIZATION_FAILED")

    async def consume() -> list[bytes]:
        consumer = AIOKafkaConsumer(
            sluice_topic,
            bootstrap_servers=sluice_broker.bootstrap_servers,
            auto_offset_reset="earliest",
            retry_backoff_ms=10,
        )
        await consumer.start()
        try:
            with pytest.raises(TopicAuthorizationFailedError):
                await asyncio.wait_for(consumer.getone(), 30)
            msg = await asyncio.wait_for(consumer.getone(), 30)  # the next fetch is answered
            return [msg.value]
        finally:
            await consumer.stop()

    assert asyncio.run(consume()) == [b"stored"]
    assert fault.hits == 1


def test_a_delayed_answer_arrives_no_sooner(
    sluice_broker: EmbeddedBroker, sluice_topic: str
) -> None:
    producer = _producer(sluice_broker)
    _deliver(producer, sluice_topic, b"warm-up")  # connected, metadata known
    fault = sluice_broker.faults.delay("Produce", 0.5, count=1)
    started = time.monotonic()
    assert _deliver(producer, sluice_topic, b"late") == [None]
    assert time.monotonic() - started >= 0.5
    assert fault.hits == 1
    assert _values(sluice_broker, sluice_topic) == [b"warm-up", b"late"]


def test_dropped_after_processing_is_a_duplicate_without_idempotence(
    sluice_broker: EmbeddedBroker, sluice_topic: str
) -> None:
    producer = _producer(
        sluice_broker, **{"enable.idempotence": False, "acks": "all", "retry.backoff.ms": 10}
    )
    _deliver(producer, sluice_topic, b"first")
    fault = sluice_broker.faults.drop_after("Produce")
    assert _deliver(producer, sluice_topic, b"twice") == [None]
    assert fault.hits == 1
    assert _values(sluice_broker, sluice_topic) == [b"first", b"twice", b"twice"]


def test_dropped_after_processing_is_stored_once_with_idempotence(
    sluice_broker: EmbeddedBroker, sluice_topic: str
) -> None:
    producer = _producer(sluice_broker, **{"enable.idempotence": True, "retry.backoff.ms": 10})
    _deliver(producer, sluice_topic, b"first")
    fault = sluice_broker.faults.drop_after("Produce")
    assert _deliver(producer, sluice_topic, b"once") == [None]
    assert fault.hits == 1
    assert _values(sluice_broker, sluice_topic) == [b"first", b"once"]


def test_dropping_every_connection_is_survived_by_the_clients(
    sluice_broker: EmbeddedBroker, sluice_topic: str
) -> None:
    producer = _producer(sluice_broker)
    _deliver(producer, sluice_topic, b"before")
    with WireClient.to(sluice_broker) as idle:
        assert api_versions(idle).error_code == 0
        assert sluice_broker.faults.drop_connections() >= 2  # this one and the producer's
        with pytest.raises(ConnectionClosed):
            idle.recv_frame()
    assert _deliver(producer, sluice_topic, b"after") == [None]
    assert _values(sluice_broker, sluice_topic) == [b"before", b"after"]


def test_paused_appends_hold_the_produce_until_resumed(
    sluice_broker: EmbeddedBroker, sluice_topic: str
) -> None:
    producer = _producer(sluice_broker)
    _deliver(producer, sluice_topic, b"before")
    reports: list[Any] = []
    with sluice_broker.faults.pause_appends(sluice_topic, 0) as paused:
        producer.produce(sluice_topic, b"held", on_delivery=lambda err, msg: reports.append(msg))
        paused.wait_for_waiting(1)  # the request is in the broker, its append waiting
        assert producer.flush(0.2) == 1 and reports == []  # not acknowledged meanwhile
        assert _values(sluice_broker, sluice_topic) == [b"before"]
    assert producer.flush(30) == 0
    assert [m.offset() for m in reports] == [1]
    assert _values(sluice_broker, sluice_topic) == [b"before", b"held"]


def test_pausing_an_unknown_partition_is_refused(sluice_broker: EmbeddedBroker) -> None:
    with pytest.raises(Exception, match="unknown topic-partition"):
        sluice_broker.faults.pause_appends("no-such-topic", 0)


def test_an_acks_0_produce_that_fails_closes_its_connection(
    sluice_broker: EmbeddedBroker, sluice_topic: str
) -> None:
    sluice_broker.faults.fail("Produce", "NOT_LEADER_OR_FOLLOWER")
    with WireClient.to(sluice_broker) as client:
        client.send(ApiKey.PRODUCE, 9, produce_request(sluice_topic, 0, batch([b"x"]), acks=0))
        with pytest.raises(ConnectionClosed):
            client.recv_frame()


def test_faults_are_cleared_between_tests_and_cost_nothing_when_none_is_set(
    sluice_broker: EmbeddedBroker,
) -> None:
    def installed() -> object:
        assert sluice_broker.server is not None and sluice_broker.server.broker is not None
        return sluice_broker.server.broker.faults

    assert installed() is None  # earlier tests' faults were cleared
    sluice_broker.faults.delay("Metadata", 0.0)
    assert installed() is sluice_broker.faults
    sluice_broker.faults.clear()
    assert installed() is None and sluice_broker.faults.active == []


def test_faults_are_thread_safe_to_script_while_clients_run(
    sluice_broker: EmbeddedBroker, sluice_topic: str
) -> None:
    """Faults scripted from several threads while a producer runs: each counts exactly."""
    producer = _producer(sluice_broker, **{"enable.idempotence": True, "retry.backoff.ms": 5})
    faults = []

    def script() -> None:
        for _ in range(5):
            faults.append(sluice_broker.faults.fail("Produce", "NOT_LEADER_OR_FOLLOWER"))

    threads = [threading.Thread(target=script) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reports = _deliver(producer, sluice_topic, *(b"%d" % i for i in range(50)))
    assert reports == [None] * 50
    assert sum(f.hits for f in faults) == 20 and sluice_broker.faults.active == []
    assert sorted(r.value or b"" for r in sluice_broker.consume_all(sluice_topic)) == sorted(
        b"%d" % i for i in range(50)
    )


@pytest.mark.parametrize(
    ("script", "refusal", "says"),
    [
        (lambda f: f.fail("Produce", "NONE"), ValueError, "NONE is no error"),
        (lambda f: f.fail("Produce", 0), ValueError, "NONE is no error"),
        (lambda f: f.fail("Produce", 6, count=1.5), TypeError, "count must be an int"),
        (lambda f: f.fail("Produce", 6, count=None), TypeError, "count must be an int"),
        (lambda f: f.fail("Produce", 6, count="2"), TypeError, "count must be an int"),
        (lambda f: f.fail("Produce", 6, count=True), TypeError, "count must be an int"),
        (lambda f: f.fail("Produce", 6, count=0), ValueError, "count is at least 1"),
        (lambda f: f.drop_after("Produce", count=2.0), TypeError, "count must be an int"),
        (lambda f: f.delay("Produce", 1, count=0.5), TypeError, "count must be an int"),
        (lambda f: f.delay("Produce", float("nan")), ValueError, "finite number of seconds"),
        (lambda f: f.delay("Produce", float("inf"), count=1), ValueError, "finite number"),
        (lambda f: f.delay("Produce", -1), ValueError, "at least 0"),
        (lambda f: f.delay("Produce", "1"), TypeError, "a delay is a number of seconds"),
    ],
    ids=[
        "error-NONE", "error-0", "count-1.5", "count-None", "count-str", "count-True",
        "count-0", "drop-count-2.0", "delay-count-0.5", "delay-nan", "delay-inf",
        "delay-negative", "delay-str",
    ],
)
def test_a_fault_that_could_not_work_as_meant_is_refused(
    sluice_broker: EmbeddedBroker, script: Any, refusal: type[Exception], says: str
) -> None:
    """Each of these was once accepted (a success answer with nothing stored, a count that never
    runs out, a NaN delay that broke every connection) or failed with a bare comparison error."""
    with pytest.raises(refusal, match=says):
        script(sluice_broker.faults)
    assert sluice_broker.faults.active == []


def test_a_fault_refused_while_the_broker_is_stopped_never_fires(
    sluice_fresh_broker: EmbeddedBroker,
) -> None:
    broker = sluice_fresh_broker
    topic = broker.create_topic()
    broker.stop()
    with pytest.raises(RuntimeError, match="not running"):
        broker.faults.fail("Produce", "TOPIC_AUTHORIZATION_FAILED")
    broker.start()
    assert broker.faults.active == []
    broker.faults.delay("ApiVersions", 0.0)  # installs the faults on the broker again
    assert _deliver(_producer(broker), topic, b"accepted") == [None]
    assert _values(broker, topic) == [b"accepted"]

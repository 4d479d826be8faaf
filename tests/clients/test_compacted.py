"""Compacted topics with real clients: confluent-kafka and kafka-python producers write keyed
records and deletes, the broker's own log cleaner compacts the topic, and confluent-kafka and
kafka-python consumers reading from the beginning get the latest value of every key (and the
deletes), with far fewer records than were written. Keyless records are refused as Kafka does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import confluent_kafka as ck
import kafka  # type: ignore[import-untyped]
import kafka.errors  # type: ignore[import-untyped]
import pytest

from sluice.errors import ErrorCode
from sluice.storage.manager import partition_dir
from sluice.testing import EmbeddedBroker, create_topic, unique_topic_name
from tests.clients.adapters import TIMEOUT, confluent_consumer

KEYS = 40
ROUNDS = 15
COMPACTED = {
    "cleanup.policy": "compact",
    "segment.bytes": "4096",
    "min.cleanable.dirty.ratio": "0.01",
    "delete.retention.ms": "3600000",
}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A broker whose cleaner looks for work every 50 ms (Kafka's default is 15 s)."""
    with EmbeddedBroker(
        tmp_path_factory.mktemp("sluice-compacted"), settings={"log.cleaner.backoff.ms": "50"}
    ) as b:
        yield b


def expected_writes() -> list[tuple[bytes, bytes | None]]:
    """ROUNDS values for every key; the last round deletes every fifth key."""
    out: list[tuple[bytes, bytes | None]] = []
    for r in range(ROUNDS):
        for k in range(KEYS):
            value = None if r == ROUNDS - 1 and k % 5 == 0 else f"round {r} of key {k}".encode() * 4
            out.append((f"key-{k}".encode(), value))
    return out


def produce_confluent(bootstrap: str, topic: str, writes: list[tuple[bytes, bytes | None]]) -> None:
    producer = ck.Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
    failed: list[Any] = []

    def delivered(err: ck.KafkaError | None, _msg: Any) -> None:
        if err is not None:
            failed.append(err)

    for i, (key, value) in enumerate(writes):
        producer.produce(topic, value, key, on_delivery=delivered)
        if i % KEYS == KEYS - 1:
            assert producer.flush(TIMEOUT) == 0  # a batch per round: many segments
    assert producer.flush(TIMEOUT) == 0
    assert not failed, failed


def produce_kafka_python(bootstrap: str, topic: str, writes: list[tuple[bytes, bytes | None]]) -> None:
    producer = kafka.KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)  # idempotent
    try:
        for start in range(0, len(writes), KEYS):  # a batch per round: many segments
            futures = [producer.send(topic, key=key, value=value) for key, value in writes[start : start + KEYS]]
            producer.flush(TIMEOUT)
            for f in futures:
                f.get(TIMEOUT)
    finally:
        producer.close(TIMEOUT)


Consumed = list[tuple[int, bytes | None, bytes | None]]


def consume_confluent(bootstrap: str, topic: str, end: int) -> Consumed:
    consumer = confluent_consumer(bootstrap)
    out: Consumed = []
    try:
        consumer.assign([ck.TopicPartition(topic, 0, ck.OFFSET_BEGINNING)])
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                position = consumer.position([ck.TopicPartition(topic, 0)])[0].offset
                if position >= end:
                    return out
                continue
            assert msg.error() is None, msg.error()
            offset = msg.offset()
            assert offset is not None
            out.append((offset, msg.key(), msg.value()))
            if offset == end - 1:
                return out
    finally:
        consumer.close()
    raise AssertionError(f"confluent-kafka read {len(out)} records, never reaching offset {end}")


def consume_kafka_python(bootstrap: str, topic: str, end: int) -> Consumed:
    consumer = kafka.KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    out: Consumed = []
    try:
        tp = kafka.TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and consumer.position(tp) < end:
            for batch in consumer.poll(timeout_ms=500).values():
                out.extend((r.offset, r.key, r.value) for r in batch)
        assert consumer.position(tp) >= end, f"kafka-python read {len(out)} records, stuck at {consumer.position(tp)}"
        return out
    finally:
        consumer.close()


def wait_until_cleaned(data_dir: Path, topic: str) -> int:
    """Wait (bounded) for the broker's cleaner to have cleaned up to the active segment; returns
    that segment's base offset. Observed in the files: the cleaner's checkpoint."""
    directory = partition_dir(data_dir, topic, 0)
    active = max(int(p.stem) for p in directory.glob("*.log"))
    assert active > 0, "the records fit one segment: nothing to clean"
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        try:
            if json.loads((directory / "cleaner-offset-checkpoint").read_bytes())["first_dirty"] >= active:
                return active
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"the log cleaner did not clean {topic} up to offset {active}")


@pytest.mark.parametrize("producer", ["confluent-kafka", "kafka-python"])
def test_consumers_read_the_latest_value_of_every_key(
    broker: EmbeddedBroker, request: pytest.FixtureRequest, producer: str
) -> None:
    topic = create_topic(broker.bootstrap_servers, unique_topic_name(request.node.name), 1, configs=COMPACTED)
    writes = expected_writes()
    if producer == "confluent-kafka":
        produce_confluent(broker.bootstrap_servers, topic, writes)
    else:
        produce_kafka_python(broker.bootstrap_servers, topic, writes)
    active = wait_until_cleaned(broker.data_dir, topic)
    want = dict(writes)
    for consume in (consume_confluent, consume_kafka_python):
        got = consume(broker.bootstrap_servers, topic, len(writes))
        offsets = [o for o, _, _ in got]
        assert offsets == sorted(set(offsets)), consume.__name__
        assert {k: v for _, k, v in got} == want, consume.__name__  # deletes read as tombstones
        # compacted: below the active segment, one record per key is left
        below = [k for o, k, _ in got if o < active]
        assert len(below) == len(set(below)) <= KEYS, consume.__name__
        assert len(got) < len(writes) / 2, consume.__name__


def test_keyless_records_are_refused_with_invalid_record(broker: EmbeddedBroker, request: pytest.FixtureRequest) -> None:
    topic = create_topic(broker.bootstrap_servers, unique_topic_name(request.node.name), 1, configs=COMPACTED)
    errors: list[ck.KafkaError | None] = []
    producer = ck.Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 0})
    producer.produce(topic, b"no key", on_delivery=lambda err, _msg: errors.append(err))
    assert producer.flush(TIMEOUT) == 0
    assert len(errors) == 1 and errors[0] is not None
    assert errors[0].code() == ErrorCode.INVALID_RECORD

    kp = kafka.KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
    try:
        with pytest.raises(kafka.errors.InvalidRecordError):
            kp.send(topic, value=b"no key either").get(TIMEOUT)
    finally:
        kp.close(TIMEOUT)  # its idempotent sender gives up after a non-retriable error
    produce_kafka_python(broker.bootstrap_servers, topic, [(b"k", b"with a key")])
    # nothing of the refused records was stored; the keyed one was, at offset 0
    assert consume_confluent(broker.bootstrap_servers, topic, 1) == [(0, b"k", b"with a key")]

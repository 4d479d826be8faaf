"""Testing code that uses kafka-python against a real broker."""

from kafka import KafkaConsumer, KafkaProducer  # type: ignore[import-untyped]


def shout(bootstrap_servers: str, source: str, sink: str, count: int) -> None:
    """The code under test: read ``count`` words, write them upper-cased."""
    consumer = KafkaConsumer(
        source,
        bootstrap_servers=bootstrap_servers,
        group_id=f"{source}-shout",
        auto_offset_reset="earliest",
        consumer_timeout_ms=30_000,
    )
    producer = KafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
    try:
        for _, msg in zip(range(count), consumer, strict=False):
            producer.send(sink, msg.value.upper(), key=msg.key)
        producer.flush()
    finally:
        consumer.close()
        producer.close()


def test_shout(sluice_broker, sluice_topic):
    out = sluice_broker.create_topic()  # another topic of this test's own, deleted after it
    sluice_broker.produce(sluice_topic, "hello", "world", key="k")
    shout(sluice_broker.bootstrap_servers, sluice_topic, out, 2)
    assert [r.value for r in sluice_broker.consume_until(out, count=2)] == [b"HELLO", b"WORLD"]


def test_shout_waits_for_the_coordinator(sluice_broker, sluice_topic):
    out = sluice_broker.create_topic()
    sluice_broker.produce(sluice_topic, "again")
    unavailable = sluice_broker.faults.fail("FindCoordinator", "COORDINATOR_NOT_AVAILABLE", count=2)
    shout(sluice_broker.bootstrap_servers, sluice_topic, out, 1)
    assert unavailable.hits == 2
    assert [r.value for r in sluice_broker.consume_until(out)] == [b"AGAIN"]

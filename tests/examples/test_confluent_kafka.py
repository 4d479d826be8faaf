"""Testing code that uses confluent-kafka (librdkafka) against a real broker."""

import json

import pytest
from confluent_kafka import Consumer, Producer


def publish_orders(bootstrap_servers: str, topic: str, orders: list[dict[str, object]]) -> None:
    """The code under test: publish orders, keyed by customer, idempotently."""
    producer = Producer({"bootstrap.servers": bootstrap_servers, "enable.idempotence": True})
    for order in orders:
        producer.produce(topic, json.dumps(order).encode(), key=str(order["customer"]).encode())
    assert producer.flush(30) == 0


def totals_by_customer(
    bootstrap_servers: str, topic: str, group: str, count: int
) -> dict[str, int]:
    """The code under test: sum the first ``count`` orders per customer, in a consumer group."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap_servers, "group.id": group, "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    totals: dict[str, int] = {}
    try:
        seen = 0
        while seen < count:
            msg = consumer.poll(10)
            assert msg is not None and msg.error() is None
            order = json.loads(msg.value() or b"{}")
            totals[order["customer"]] = totals.get(order["customer"], 0) + order["amount"]
            seen += 1
    finally:
        consumer.close()
    return totals


ORDERS = [
    {"customer": "ada", "amount": 30},
    {"customer": "bob", "amount": 5},
    {"customer": "ada", "amount": 12},
]


@pytest.mark.sluice_topic(partitions=3)
def test_totals(sluice_broker, sluice_topic):
    publish_orders(sluice_broker.bootstrap_servers, sluice_topic, ORDERS)
    assert totals_by_customer(sluice_broker.bootstrap_servers, sluice_topic, "totals", 3) == {
        "ada": 42,
        "bob": 5,
    }


def test_orders_are_keyed_by_customer(sluice_broker, sluice_topic):
    publish_orders(sluice_broker.bootstrap_servers, sluice_topic, ORDERS)
    records = sluice_broker.consume_all(sluice_topic)  # what the topic holds now
    assert [(r.key, json.loads(r.value)["amount"]) for r in records] == [
        (b"ada", 30),
        (b"bob", 5),
        (b"ada", 12),
    ]


def test_publishing_survives_a_leader_change(sluice_broker, sluice_topic):
    # the next two Produce requests are refused; librdkafka refreshes metadata and retries
    refused = sluice_broker.faults.fail("Produce", "NOT_LEADER_OR_FOLLOWER", count=2)
    publish_orders(sluice_broker.bootstrap_servers, sluice_topic, ORDERS[:1])
    assert refused.hits == 2
    assert len(sluice_broker.consume_all(sluice_topic)) == 1  # and not stored twice

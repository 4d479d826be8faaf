"""kafka-python against sluice: the shared round-trip and admin contracts."""

from __future__ import annotations

import kafka  # type: ignore[import-untyped]
import kafka.errors  # type: ignore[import-untyped]

from sluice.testing import EmbeddedBroker
from tests.clients.adapters import TIMEOUT, KafkaPythonAdmin, KafkaPythonClient
from tests.clients.contract import AdminContract, BinaryRoundTripContract


class TestRoundTrip(BinaryRoundTripContract):
    client = KafkaPythonClient()


class TestAdmin(AdminContract):
    admin_class = KafkaPythonAdmin


def test_default_producer(broker: EmbeddedBroker, topic: str) -> None:
    """kafka-python 3 turns idempotence on by default (InitProducerId is served): it works."""
    producer = kafka.KafkaProducer(bootstrap_servers=broker.bootstrap_servers)
    assert producer.config["enable_idempotence"]
    try:
        metadata = producer.send(topic, key=b"k", value=b"v", partition=0).get(TIMEOUT)
        assert (metadata.partition, metadata.offset) == (0, 0)
    finally:
        producer.close(TIMEOUT)

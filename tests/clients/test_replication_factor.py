"""CreateTopics' replication factor: what each refusal says. One node holds every replica, so
1 (or -1, the default) is the only factor; 0 or below used to be told it was "larger than the 1
broker available"."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # re-exported without __all__

from sluice.testing import EmbeddedBroker


@pytest.mark.parametrize(
    ("factor", "says"),
    [
        (0, "replication factor must be larger than 0, or -1 to use the default, not 0"),
        (3, "replication factor 3 is larger than the 1 broker available"),
    ],
    ids=["zero", "three"],
)
def test_refused_replication_factors_say_why(broker: EmbeddedBroker, topic: str, factor: int, says: str) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    future = admin.create_topics([NewTopic(topic, 1, factor)])[topic]
    with pytest.raises(KafkaException) as refused:
        future.result(timeout=10)
    error = refused.value.args[0]
    assert error.name() == "INVALID_REPLICATION_FACTOR"
    assert error.str() == says


def test_the_default_and_one_are_taken(broker: EmbeddedBroker, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    futures = admin.create_topics([NewTopic(topic, 1, -1), NewTopic(f"{topic}-1", 1, 1)])
    for future in futures.values():
        assert future.result(timeout=10) is None

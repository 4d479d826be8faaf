"""sluice.testing's topic helpers, checked with a real client (confluent-kafka's admin)."""

from __future__ import annotations

import re

import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # no __all__
    AdminClient,
    ConfigResource,
    ResourceType,
)

from sluice.errors import ErrorCode
from sluice.testing import EmbeddedBroker, TopicCreationError, create_topic, unique_topic_name
from sluice.testing.topics import MAX_TOPIC_NAME


def _admin(broker: EmbeddedBroker) -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.bootstrap_servers, "log_level": 0})


def test_unique_topic_name_is_legal_unique_and_keeps_the_end_of_a_long_hint() -> None:
    names = {unique_topic_name("tests/x.py::test_a[p/1 ü]") for _ in range(100)}
    assert len(names) == 100
    for name in names:
        assert re.fullmatch(r"[A-Za-z0-9._-]+", name), name
        assert name.startswith("tests-x.py-test_a-p-1-")
    long = unique_topic_name("a" * 300 + "-the-end")
    assert len(long) == MAX_TOPIC_NAME
    assert "-the-end-" in long
    assert re.fullmatch(r"topic-[0-9a-f]{12}", unique_topic_name("???"))


def test_create_topic_with_partitions_and_configs(sluice_broker: EmbeddedBroker) -> None:
    name = unique_topic_name("created")
    assert (
        create_topic(sluice_broker.bootstrap_servers, name, 3, configs={"retention.ms": "12345"})
        == name
    )
    admin = _admin(sluice_broker)
    assert len(admin.list_topics(name, timeout=30).topics[name].partitions) == 3
    resource = ConfigResource(ResourceType.TOPIC, name)
    entries = admin.describe_configs([resource])[resource].result(30)
    assert entries["retention.ms"].value == "12345"


def test_create_topic_reports_the_brokers_refusal(sluice_broker: EmbeddedBroker) -> None:
    name = create_topic(sluice_broker.bootstrap_servers, unique_topic_name("twice"))
    with pytest.raises(TopicCreationError, match="TOPIC_ALREADY_EXISTS") as refused:
        create_topic(sluice_broker.bootstrap_servers, name)
    assert refused.value.code == ErrorCode.TOPIC_ALREADY_EXISTS
    with pytest.raises(TopicCreationError) as invalid:
        create_topic(sluice_broker.bootstrap_servers, unique_topic_name("bad"), 0)
    assert invalid.value.code == ErrorCode.INVALID_PARTITIONS


def test_sluice_topic_fixture(sluice_broker: EmbeddedBroker, sluice_topic: str) -> None:
    assert "test_sluice_topic_fixture" in sluice_topic
    topics = _admin(sluice_broker).list_topics(timeout=30).topics
    assert len(topics[sluice_topic].partitions) == 1

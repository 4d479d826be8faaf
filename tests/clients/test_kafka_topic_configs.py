"""Kafka's topic configs a single node has no use for are taken, checked and reported, so that
tools which set them (Terraform, Strimzi, Kafka Streams' ``topic.*`` overrides), even to their
defaults, create topics as on Kafka; they were INVALID_CONFIG "unknown topic config".
``min.insync.replicas`` above 1 has Kafka's effect: acks=all is NOT_ENOUGH_REPLICAS."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

from sluice.errors import ErrorCode
from sluice.testing import EmbeddedBroker
from tests.server.wire import WireClient, batch, produce

KAFKA_VALUES = {
    "min.insync.replicas": "1",
    "unclean.leader.election.enable": "false",
    "preallocate": "true",
    "segment.jitter.ms": "1000",
    "file.delete.delay.ms": "60000",
    "compression.gzip.level": "6",
    "compression.lz4.level": "9",
    "compression.zstd.level": "-5",
    "leader.replication.throttled.replicas": "*",
    "follower.replication.throttled.replicas": "0:1,1:1",
    "local.retention.ms": "-2",
    "local.retention.bytes": "-2",
    "remote.storage.enable": "false",
}


def _create(admin: AdminClient, name: str, configs: dict[str, str]) -> None:
    future = admin.create_topics([NewTopic(name, 1, 1, config=configs)])[name]
    future.result(timeout=30)


def _described(admin: AdminClient, name: str) -> dict[str, str]:
    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    entries = admin.describe_configs([resource])[resource].result(timeout=30)
    return {k: e.value for k, e in entries.items()}


def test_kafka_topic_configs_are_taken_and_reported(broker: EmbeddedBroker, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    _create(admin, topic, KAFKA_VALUES)
    described = _described(admin, topic)
    assert {k: described[k] for k in KAFKA_VALUES} == KAFKA_VALUES
    # and a topic made without them reports Kafka's defaults
    _create(admin, topic + "-plain", {})
    plain = _described(admin, topic + "-plain")
    assert plain["min.insync.replicas"] == "1" and plain["compression.zstd.level"] == "3"
    assert plain["local.retention.ms"] == "-2" and plain["remote.storage.enable"] == "false"


@pytest.mark.parametrize(
    ("config", "value"),
    [
        ("remote.storage.enable", "true"),
        ("compression.gzip.level", "0"),
        ("compression.lz4.level", "18"),
        ("min.insync.replicas", "0"),
        ("follower.replication.throttled.replicas", "leader"),
        ("local.retention.ms", "-3"),
    ],
)
def test_values_kafka_refuses_are_refused(
    broker: EmbeddedBroker, topic: str, config: str, value: str
) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    with pytest.raises(KafkaException) as refused:
        _create(admin, topic, {config: value})
    error = refused.value.args[0]
    assert error.code() == ErrorCode.INVALID_CONFIG, error
    assert config in error.str()


def test_min_insync_replicas_above_one_refuses_acks_all(broker: EmbeddedBroker, topic: str) -> None:
    """One node is one replica in sync: acks=all is answered NOT_ENOUGH_REPLICAS (Kafka's answer
    while too few replicas are in sync, which clients retry); acks=1 is not affected; lowered
    again, acks=all is taken."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    _create(admin, topic, {"min.insync.replicas": "2"})
    with WireClient("127.0.0.1", broker.port) as client:
        refused = produce(client, topic, 0, batch([b"all"]), acks=-1)
        assert refused.error_code == ErrorCode.NOT_ENOUGH_REPLICAS
        assert "min.insync.replicas" in (refused.error_message or "")
        assert produce(client, topic, 0, batch([b"one"]), acks=1).base_offset == 0
        entry = ConfigEntry("min.insync.replicas", "1", incremental_operation=AlterConfigOpType.SET)
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[entry])
        admin.incremental_alter_configs([resource])[resource].result(timeout=30)
        assert produce(client, topic, 0, batch([b"all"]), acks=-1).base_offset == 1

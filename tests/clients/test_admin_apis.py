"""The cluster-shape admin calls of real clients against sluice: describe cluster, log dirs (real
sizes that grow as records arrive), leader elections, partition reassignments, and describe
configs at the versions the clients pick (kafka-python pinned to a 1.0 broker speaks v0).

Which client has which call: confluent-kafka 2.16 has describe_cluster (through Metadata) and
elect_leaders, no log dirs or reassignments; kafka-python 3 has all of them (describe_cluster
through DescribeCluster v2); aiokafka has describe_cluster (Metadata) and describe_configs (v2).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import confluent_kafka as ck
import kafka  # type: ignore[import-untyped]
import kafka.errors  # type: ignore[import-untyped]
import pytest
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]
from aiokafka.admin.config_resource import (  # type: ignore[import-untyped]
    ConfigResource as AioConfigResource,
)
from aiokafka.admin.config_resource import (
    ConfigResourceType as AioConfigResourceType,
)
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported without __all__
    AclOperation,
    AdminClient,
    ConfigResource,
    ConfigSource,
    NewTopic,
    ResourceType,
)
from kafka.admin import (  # type: ignore[import-untyped]
    ConfigResource as KpConfigResource,
)
from kafka.admin import (
    ConfigResourceType as KpConfigResourceType,
)
from kafka.admin import KafkaAdminClient

from sluice.storage.manager import partition_dir
from sluice.testing import EmbeddedBroker
from tests.clients.adapters import TIMEOUT

NODE = 7
"""A node id other than the default 0, so the answers are seen to come from the settings."""

CLUSTER_OPERATIONS = {
    "CREATE",
    "ALTER",
    "DESCRIBE",
    "CLUSTER_ACTION",
    "DESCRIBE_CONFIGS",
    "ALTER_CONFIGS",
    "IDEMPOTENT_WRITE",
}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    b = EmbeddedBroker(
        tmp_path_factory.mktemp("sluice-admin-apis"),
        settings={"node.id": str(NODE), "cluster.id": "admin-apis", "log.retention.ms": "60000"},
    )
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module")
def ck_admin(broker: EmbeddedBroker) -> Iterator[AdminClient]:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    yield admin
    del admin


def create(admin: AdminClient, topic: str, partitions: int, **configs: str) -> str:
    new = NewTopic(topic, partitions, 1, config={k.replace("_", "."): v for k, v in configs.items()})
    admin.create_topics([new])[topic].result(TIMEOUT)
    return topic


def produce(broker: EmbeddedBroker, topic: str, partition: int, count: int) -> None:
    producer = ck.Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 0})
    for i in range(count):
        producer.produce(topic, value=b"v" * 200, key=str(i).encode(), partition=partition)
    assert producer.flush(TIMEOUT) == 0


def on_disk(broker: EmbeddedBroker, topic: str, partition: int) -> int:
    directory = partition_dir(broker.data_dir, topic, partition)
    return sum(f.stat().st_size for f in directory.glob("*.log"))


# ---- describe cluster ----------------------------------------------------------------------------


def test_confluent_describe_cluster(broker: EmbeddedBroker, ck_admin: AdminClient) -> None:
    plain = ck_admin.describe_cluster(request_timeout=TIMEOUT).result(TIMEOUT)
    assert plain.cluster_id == "admin-apis"
    assert plain.controller.id == NODE
    assert [(n.id, n.host, n.port) for n in plain.nodes] == [(NODE, "127.0.0.1", broker.port)]
    assert plain.authorized_operations is None  # not asked for
    asked = ck_admin.describe_cluster(
        include_authorized_operations=True, request_timeout=TIMEOUT
    ).result(TIMEOUT)
    assert {op.name for op in asked.authorized_operations} == CLUSTER_OPERATIONS
    assert all(isinstance(op, AclOperation) for op in asked.authorized_operations)


def test_kafka_python_describe_cluster(broker: EmbeddedBroker, kp_admin: Any) -> None:
    # kafka-python 3 sends DescribeCluster (v2 here: it asks for fenced brokers too).
    found = kp_admin.describe_cluster()
    assert found["cluster_id"] == "admin-apis"
    assert found["controller_id"] == NODE
    assert found["brokers"] == [
        {"broker_id": NODE, "host": "127.0.0.1", "port": broker.port, "rack": None, "is_fenced": False}
    ]
    assert set(found["authorized_operations"]) == CLUSTER_OPERATIONS


def test_aiokafka_describe_cluster(broker: EmbeddedBroker) -> None:
    async def go() -> dict[str, Any]:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
        await admin.start()
        try:
            found: dict[str, Any] = await admin.describe_cluster()
            return found
        finally:
            await admin.close()

    found = asyncio.run(go())
    assert (found["cluster_id"], found["controller_id"]) == ("admin-apis", NODE)
    assert [(b["node_id"], b["port"]) for b in found["brokers"]] == [(NODE, broker.port)]


# ---- describe log dirs ---------------------------------------------------------------------------


def test_kafka_python_describe_log_dirs_real_sizes(
    broker: EmbeddedBroker, ck_admin: AdminClient, kp_admin: Any, topic: str
) -> None:
    create(ck_admin, topic, 2)

    def sizes(which: Any = None) -> dict[int, int]:
        (answer,) = kp_admin.describe_log_dirs(which)
        assert answer["broker"] == NODE
        (log_dir,) = answer["log_dirs"]
        assert log_dir["error_code"] == 0
        assert log_dir["log_dir"] == os.path.abspath(broker.data_dir)
        assert 0 < log_dir["usable_bytes"] <= log_dir["total_bytes"]  # v4: the volume's space
        found = {}
        for t in log_dir["topics"]:
            for p in t["partitions"]:
                assert (p["offset_lag"], p["is_future_key"]) == (0, False)
                if t["name"] == topic:
                    found[p["partition_index"]] = p["partition_size"]
        return found

    assert sizes() == {0: 0, 1: 0}
    produce(broker, topic, 1, 50)
    grown = sizes()
    assert grown[0] == 0
    assert grown[1] == on_disk(broker, topic, 1) > 50 * 200
    produce(broker, topic, 1, 50)
    again = sizes({topic: [1]})
    assert list(again) == [1]  # only what was asked for
    assert again[1] == on_disk(broker, topic, 1) > grown[1]


# ---- leader elections ----------------------------------------------------------------------------


def test_confluent_elect_leaders(ck_admin: AdminClient, topic: str) -> None:
    create(ck_admin, topic, 2)
    wanted = [ck.TopicPartition(topic, 0), ck.TopicPartition(topic, 1), ck.TopicPartition(topic, 9)]
    for election in (ck.ElectionType.PREFERRED, ck.ElectionType.UNCLEAN):
        # (no request_timeout: confluent-kafka 2.16 raises SystemError on any keyword here)
        found = ck_admin.elect_leaders(election, wanted).result(TIMEOUT)
        codes = {(tp.partition): (err.code() if err else None) for tp, err in found.items()}
        assert codes == {
            0: ck.KafkaError.ELECTION_NOT_NEEDED,
            1: ck.KafkaError.ELECTION_NOT_NEEDED,
            9: ck.KafkaError.UNKNOWN_TOPIC_OR_PART,
        }
        # Every partition: Kafka leaves out those that needed nothing, which is all of them.
        assert ck_admin.elect_leaders(election, None).result(TIMEOUT) == {}


def test_kafka_python_elect_leaders(ck_admin: AdminClient, kp_admin: Any, topic: str) -> None:
    create(ck_admin, topic, 2)
    for election in (0, 1):  # preferred, unclean
        # ELECTION_NOT_NEEDED is not an error to kafka-python: the call returns the response.
        response = kp_admin.elect_leaders(election, {topic: [0, 1]})
        assert [(r.topic, [(p.partition_id, p.error_code) for p in r.partition_result]) for r in response.replica_election_results] == [
            (topic, [(0, 84), (1, 84)])
        ]
    with pytest.raises(kafka.errors.UnknownTopicOrPartitionError):
        kp_admin.elect_leaders(0, {topic: [5]})


# ---- partition reassignments ---------------------------------------------------------------------


def test_kafka_python_partition_reassignments(ck_admin: AdminClient, kp_admin: Any, topic: str) -> None:
    create(ck_admin, topic, 2)
    tp0, tp1, tp9 = (kafka.TopicPartition(topic, p) for p in (0, 1, 9))
    assert kp_admin.list_partition_reassignments() == {}
    assert kp_admin.list_partition_reassignments({topic: [0, 1]}) == {}
    assert kp_admin.alter_partition_reassignments({tp0: [NODE], tp1: None, tp9: [NODE]}) == {
        tp0: None,  # already there: done
        tp1: kafka.errors.NoReassignmentInProgressError,
        tp9: kafka.errors.UnknownTopicOrPartitionError,
    }
    assert kp_admin.alter_partition_reassignments({tp0: [NODE + 1], tp1: [NODE, NODE + 1]}) == {
        tp0: kafka.errors.InvalidReplicationAssignmentError,
        tp1: kafka.errors.InvalidReplicationAssignmentError,
    }
    assert kp_admin.list_partition_reassignments() == {}


# ---- describe configs, by the version each client speaks -----------------------------------------


def test_kafka_python_describe_configs_v0(broker: EmbeddedBroker, ck_admin: AdminClient, topic: str) -> None:
    create(ck_admin, topic, 1, flush_ms="100")
    # Pinned to a 1.0 broker, kafka-python speaks DescribeConfigs v0: is_default, no source.
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers, api_version=(1, 0, 0))
    try:
        found = admin.describe_configs([KpConfigResource(KpConfigResourceType.TOPIC, topic)], config_filter="all")
    finally:
        admin.close()
    configs = found["topic"][topic]
    assert all("is_default" in c and "config_type" not in c for c in configs.values())  # v0
    assert (configs["flush.ms"]["value"], configs["flush.ms"]["is_default"]) == ("100", False)
    # Not set on the topic: a broker-wide default and a built-in one.
    assert (configs["retention.ms"]["value"], configs["retention.ms"]["is_default"]) == ("60000", True)
    assert configs["segment.ms"]["is_default"] is True
    assert configs["flush.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"  # as the client reads v0


def test_kafka_python_describe_configs_v4(ck_admin: AdminClient, kp_admin: Any, topic: str) -> None:
    create(ck_admin, topic, 1, flush_ms="100")
    resource = KpConfigResource(KpConfigResourceType.TOPIC, topic)
    configs = kp_admin.describe_configs([resource], include_synonyms=True, config_filter="all")["topic"][topic]
    assert "is_default" not in configs["flush.ms"] and "config_type" in configs["flush.ms"]  # v3+
    assert {k: (configs[k]["config_source"], configs[k]["config_type"]) for k in ("flush.ms", "retention.ms", "segment.bytes", "cleanup.policy")} == {
        "flush.ms": ("DYNAMIC_TOPIC_CONFIG", "LONG"),
        "retention.ms": ("STATIC_BROKER_CONFIG", "LONG"),
        "segment.bytes": ("DEFAULT_CONFIG", "INT"),
        "cleanup.policy": ("DEFAULT_CONFIG", "LIST"),
    }
    assert [(s["name"], s["value"], s["source"]) for s in configs["retention.ms"]["synonyms"]] == [
        ("log.retention.ms", "60000", "STATIC_BROKER_CONFIG"),
        ("log.retention.ms", "604800000", "DEFAULT_CONFIG"),
    ]
    # kafka-python's default filter, "modified", keeps what was set dynamically: the override.
    modified = kp_admin.describe_configs([resource])["topic"][topic]
    assert set(modified) == {"flush.ms"}
    broker_configs = kp_admin.describe_configs([KpConfigResource(KpConfigResourceType.BROKER, str(NODE))], config_filter="all")["broker"][str(NODE)]
    assert broker_configs["log.retention.ms"]["config_source"] == "STATIC_BROKER_CONFIG"
    assert broker_configs["num.partitions"]["config_source"] == "DEFAULT_CONFIG"
    assert all(c["read_only"] for c in broker_configs.values())


def test_aiokafka_describe_configs_v2(broker: EmbeddedBroker, ck_admin: AdminClient, topic: str) -> None:
    create(ck_admin, topic, 1, flush_ms="100")

    async def go() -> list[dict[str, Any]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
        await admin.start()
        try:
            (response,) = await admin.describe_configs([AioConfigResource(AioConfigResourceType.TOPIC, topic)])
        finally:
            await admin.close()
        (result,) = response.to_object()["resources"]
        assert result["error_code"] == 0
        entries: list[dict[str, Any]] = result["config_entries"]
        return entries

    sources = {e["config_names"]: e["config_source"] for e in asyncio.run(go())}
    assert (sources["flush.ms"], sources["retention.ms"], sources["segment.ms"]) == (1, 4, 5)


def test_confluent_describe_configs(ck_admin: AdminClient, topic: str) -> None:
    create(ck_admin, topic, 1, flush_ms="100")
    resource = ConfigResource(ResourceType.TOPIC, topic)
    entries = ck_admin.describe_configs([resource], request_timeout=TIMEOUT)[resource].result(TIMEOUT)
    assert entries["flush.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert entries["retention.ms"].source == ConfigSource.STATIC_BROKER_CONFIG.value
    assert entries["segment.ms"].source == ConfigSource.DEFAULT_CONFIG.value
    assert (entries["retention.ms"].is_default, entries["segment.ms"].is_default) == (False, True)
    broker = ConfigResource(ResourceType.BROKER, str(NODE))
    settings = ck_admin.describe_configs([broker], request_timeout=TIMEOUT)[broker].result(TIMEOUT)
    assert settings["node.id"].value == str(NODE)
    assert settings["node.id"].source == ConfigSource.STATIC_BROKER_CONFIG.value
    assert settings["num.partitions"].source == ConfigSource.DEFAULT_CONFIG.value
    assert settings["num.partitions"].is_read_only


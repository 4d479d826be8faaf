"""Metadata, ListOffsets, topic admin and config handlers, over real logs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sluice.broker.broker import Client
from sluice.broker.config_apis import DEFAULT_CONFIG, DYNAMIC_TOPIC_CONFIG, STATIC_BROKER_CONFIG
from sluice.errors import ErrorCode
from sluice.protocol import ApiKey, Request
from sluice.protocol import messages as m
from sluice.protocol.messages import ConfigOperation, ConfigResourceType
from tests.broker.conftest import BrokerHarness, batch


def user_topics(h: BrokerHarness) -> list[str]:
    """Topics other than internal ones (the group coordinator may keep its own)."""
    return [t for t in h.broker.logs.list_topics() if not t.startswith("__")]


def metadata(h: BrokerHarness, *names: str, allow: bool = True) -> m.MetadataResponse:
    body = m.MetadataRequest(
        topics=[m.MetadataRequestTopic(name=n) for n in names], allow_auto_topic_creation=allow
    )
    result: m.MetadataResponse = h.call(ApiKey.METADATA, 12, body)
    return result


def test_metadata_auto_creates_only_when_allowed(harness: Callable[..., BrokerHarness]) -> None:
    h = harness(num_partitions="3")
    created = metadata(h, "fresh")
    assert created.topics[0].error_code == 0 and len(created.topics[0].partitions) == 3
    assert metadata(h, "other", allow=False).topics[0].error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert metadata(h, "bad/name").topics[0].error_code == ErrorCode.INVALID_TOPIC_EXCEPTION
    assert metadata(h, "__internal").topics[0].error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    off = harness(auto_create_topics_enable="false")
    assert metadata(off, "fresh").topics[0].error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert user_topics(off) == []


def test_list_offsets(harness: Callable[..., BrokerHarness]) -> None:
    h = harness()
    h.run(h.broker.logs.create_topic("t", 1))
    h.produce("t", 0, batch(3, "a", ts=1_000))
    h.produce("t", 0, batch(3, "b", ts=5_000))
    h.produce("t", 0, batch(2, "c", ts=3_000))

    def lookup(ts: int) -> tuple[int, int, int]:
        body = m.ListOffsetsRequest(
            replica_id=-1,
            isolation_level=0,
            topics=[m.ListOffsetsTopic(name="t", partitions=[m.ListOffsetsPartition(partition_index=0, timestamp=ts)])],
        )
        p = h.call(ApiKey.LIST_OFFSETS, 7, body).topics[0].partitions[0]
        return p.error_code, p.offset, p.timestamp

    assert lookup(-2) == (0, 0, -1)
    assert lookup(-1) == (0, 8, -1)
    assert lookup(-3) == (0, 3, 5_000)
    assert lookup(2_000) == (0, 3, 5_000)
    assert lookup(9_000) == (0, -1, -1)
    assert lookup(-7)[0] == ErrorCode.INVALID_REQUEST


def test_create_topics_rules(harness: Callable[..., BrokerHarness]) -> None:
    h = harness()

    def create(*topics: m.CreatableTopic, validate_only: bool = False) -> list[tuple[str, int]]:
        body = m.CreateTopicsRequest(topics=list(topics), timeout_ms=1000, validate_only=validate_only)
        return [(r.name, r.error_code) for r in h.call(ApiKey.CREATE_TOPICS, 7, body).topics]

    def topic(name: str, partitions: int = 2, rf: int = 1, **configs: str) -> m.CreatableTopic:
        return m.CreatableTopic(
            name=name,
            num_partitions=partitions,
            replication_factor=rf,
            assignments=[],
            configs=[m.CreatableTopicConfig(name=k.replace("_", "."), value=v) for k, v in configs.items()],
        )

    assert create(topic("dry"), validate_only=True) == [("dry", 0)]
    assert user_topics(h) == []
    assert create(topic("a", retention_ms="1000"), topic("b", rf=3), topic("c", partitions=0)) == [
        ("a", 0),
        ("b", ErrorCode.INVALID_REPLICATION_FACTOR),
        ("c", ErrorCode.INVALID_PARTITIONS),
    ]
    assert create(topic("a")) == [("a", ErrorCode.TOPIC_ALREADY_EXISTS)]
    assert create(topic("d", retention_ms="soon")) == [("d", ErrorCode.INVALID_CONFIG)]
    assert create(topic("e", no_such_config="1")) == [("e", ErrorCode.INVALID_CONFIG)]
    # Kafka's cleanup policies, in either order; anything else is refused.
    assert create(topic("f", cleanup_policy="delete")) == [("f", 0)]
    assert create(topic("g", cleanup_policy="delete,compact")) == [("g", 0)]
    assert create(topic("g2", cleanup_policy="shred")) == [("g2", ErrorCode.INVALID_CONFIG)]
    # min.compaction.lag.ms may not exceed max.compaction.lag.ms (Kafka's rule)
    assert create(topic("g3", min_compaction_lag_ms="10", max_compaction_lag_ms="5")) == [
        ("g3", ErrorCode.INVALID_CONFIG)
    ]
    # Segment files and index positions are 32-bit (Kafka's INT configs): larger is refused.
    assert create(topic("h", segment_bytes=str(2**31))) == [("h", ErrorCode.INVALID_CONFIG)]
    assert create(topic("i", max_message_bytes=str(2**31))) == [("i", ErrorCode.INVALID_CONFIG)]
    assert create(topic("dup"), topic("dup")) == [("dup", ErrorCode.INVALID_REQUEST)] * 2
    assert create(topic("x" * 250)) == [("x" * 250, ErrorCode.INVALID_TOPIC_EXCEPTION)]
    assert user_topics(h) == ["a", "f", "g"]
    assert h.broker.logs.topic("a").config.retention_ms == 1000
    assert h.broker.logs.topic("g").config.to_dict()["cleanup.policy"] == "compact,delete"


def test_configs_describe_sources_and_alter(harness: Callable[..., BrokerHarness]) -> None:
    h = harness(log_retention_ms="60000")
    h.run(h.broker.logs.create_topic("t", 1, {"segment.bytes": "1048576"}))

    def describe() -> dict[str, tuple[str | None, int]]:
        body = m.DescribeConfigsRequest(
            resources=[m.DescribeConfigsResource(resource_type=ConfigResourceType.TOPIC, resource_name="t", configuration_keys=None)],
            include_synonyms=True,
        )
        result = h.call(ApiKey.DESCRIBE_CONFIGS, 4, body).results[0]
        assert result.error_code == 0
        return {c.name: (c.value, c.config_source) for c in result.configs}

    configs = describe()
    assert configs["segment.bytes"] == ("1048576", DYNAMIC_TOPIC_CONFIG)
    assert configs["retention.ms"] == ("60000", STATIC_BROKER_CONFIG)
    assert configs["max.message.bytes"] == ("1048588", DEFAULT_CONFIG)

    broker_body = m.DescribeConfigsRequest(
        resources=[m.DescribeConfigsResource(resource_type=ConfigResourceType.BROKER, resource_name="0", configuration_keys=None)],
        include_synonyms=False,
    )
    broker_result = h.call(ApiKey.DESCRIBE_CONFIGS, 4, broker_body).results[0]
    broker_configs = {c.name: (c.value, c.config_source) for c in broker_result.configs}
    assert broker_configs["log.retention.ms"] == ("60000", STATIC_BROKER_CONFIG)  # set
    assert broker_configs["num.partitions"] == ("1", DEFAULT_CONFIG)  # left at its default
    assert broker_configs["offsets.retention.minutes"] == ("10080", DEFAULT_CONFIG)

    def incremental(*ops: tuple[str, int, str | None]) -> int:
        body = m.IncrementalAlterConfigsRequest(
            resources=[
                m.IncrementalAlterConfigsResource(
                    resource_type=ConfigResourceType.TOPIC,
                    resource_name="t",
                    configs=[m.IncrementalAlterableConfig(name=n, config_operation=o, value=v) for n, o, v in ops],
                )
            ],
            validate_only=False,
        )
        code: int = h.call(ApiKey.INCREMENTAL_ALTER_CONFIGS, 1, body).responses[0].error_code
        return code

    assert incremental(("retention.ms", ConfigOperation.SET, "5000"), ("segment.bytes", ConfigOperation.DELETE, None)) == 0
    configs = describe()
    assert configs["retention.ms"] == ("5000", DYNAMIC_TOPIC_CONFIG)
    assert configs["segment.bytes"][1] == DEFAULT_CONFIG
    assert incremental(("retention.ms", ConfigOperation.APPEND, "1")) == ErrorCode.INVALID_CONFIG
    # cleanup.policy is Kafka's one list-typed topic config: APPEND and SUBTRACT work on it
    assert incremental(("cleanup.policy", ConfigOperation.APPEND, "compact")) == 0
    assert describe()["cleanup.policy"] == ("compact,delete", DYNAMIC_TOPIC_CONFIG)
    assert incremental(("cleanup.policy", ConfigOperation.SUBTRACT, "delete")) == 0
    assert describe()["cleanup.policy"][0] == "compact"
    assert incremental(("cleanup.policy", ConfigOperation.SUBTRACT, "compact")) == ErrorCode.INVALID_CONFIG  # nothing left
    assert incremental(("cleanup.policy", ConfigOperation.APPEND, "shred")) == ErrorCode.INVALID_CONFIG
    assert describe()["cleanup.policy"][0] == "compact"
    assert incremental(("retention.ms", ConfigOperation.SET, "-5x")) == ErrorCode.INVALID_CONFIG
    assert describe()["retention.ms"] == ("5000", DYNAMIC_TOPIC_CONFIG)  # refused changes change nothing

    # AlterConfigs replaces the whole override set.
    body = m.AlterConfigsRequest(
        resources=[m.AlterConfigsResource(resource_type=ConfigResourceType.TOPIC, resource_name="t", configs=[m.AlterableConfig(name="flush.ms", value="100")])],
        validate_only=False,
    )
    assert h.call(ApiKey.ALTER_CONFIGS, 2, body).responses[0].error_code == 0
    assert h.broker.logs.topic("t").config_overrides == {"flush.ms": "100"}
    broker_change = m.AlterConfigsRequest(
        resources=[m.AlterConfigsResource(resource_type=ConfigResourceType.BROKER, resource_name="0", configs=[])],
        validate_only=False,
    )
    assert h.call(ApiKey.ALTER_CONFIGS, 2, broker_change).responses[0].error_code == ErrorCode.INVALID_REQUEST


def test_an_append_reads_the_list_after_a_change_in_progress(harness: Callable[..., BrokerHarness]) -> None:
    """APPEND and SUBTRACT take the topic's current value under its lock: read before it, a
    change committing meanwhile (its file write in progress) was overwritten, the append
    computed from the value before it."""
    h = harness()
    h.run(h.broker.logs.create_topic("t", 1))

    def incremental(op: int, value: str) -> Request:
        return Request(
            ApiKey.INCREMENTAL_ALTER_CONFIGS,
            1,
            1,
            "test",
            m.IncrementalAlterConfigsRequest(
                resources=[
                    m.IncrementalAlterConfigsResource(
                        resource_type=ConfigResourceType.TOPIC,
                        resource_name="t",
                        configs=[m.IncrementalAlterableConfig(name="cleanup.policy", config_operation=op, value=value)],
                    )
                ],
                validate_only=False,
            ),
        )

    async def both() -> list[int]:
        first = asyncio.ensure_future(h.broker.dispatch(incremental(ConfigOperation.SET, "compact"), Client("127.0.0.1")))
        await asyncio.sleep(0)  # the SET holds the topic's lock, writing its file
        second = await h.broker.dispatch(incremental(ConfigOperation.APPEND, "delete"), Client("127.0.0.1"))
        answers = [await first, second]
        return [a.responses[0].error_code for a in answers if isinstance(a, m.IncrementalAlterConfigsResponse)]

    assert h.run(both()) == [0, 0]
    assert h.broker.logs.topic("t").config.to_dict()["cleanup.policy"] == "compact,delete"


def test_create_partitions_delete_records_delete_topics(harness: Callable[..., BrokerHarness]) -> None:
    h = harness()
    h.run(h.broker.logs.create_topic("t", 1))
    h.produce("t", 0, batch(5, "a"))
    grow = m.CreatePartitionsRequest(
        topics=[m.CreatePartitionsTopic(name="t", count=4, assignments=None), m.CreatePartitionsTopic(name="nope", count=2, assignments=None)],
        timeout_ms=1000,
        validate_only=False,
    )
    codes = [r.error_code for r in h.call(ApiKey.CREATE_PARTITIONS, 3, grow).results]
    assert codes == [0, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION]
    assert len(h.broker.logs.topic("t").partitions) == 4
    shrink = m.CreatePartitionsRequest(topics=[m.CreatePartitionsTopic(name="t", count=2, assignments=None)], timeout_ms=1000, validate_only=False)
    assert h.call(ApiKey.CREATE_PARTITIONS, 3, shrink).results[0].error_code == ErrorCode.INVALID_PARTITIONS

    def delete_records(offset: int) -> tuple[int, int]:
        body = m.DeleteRecordsRequest(
            topics=[m.DeleteRecordsTopic(name="t", partitions=[m.DeleteRecordsPartition(partition_index=0, offset=offset)])],
            timeout_ms=1000,
        )
        p = h.call(ApiKey.DELETE_RECORDS, 2, body).topics[0].partitions[0]
        return p.error_code, p.low_watermark

    assert delete_records(3) == (0, 3)
    assert delete_records(99) == (ErrorCode.OFFSET_OUT_OF_RANGE, -1)
    assert delete_records(-1) == (0, 5)

    delete = m.DeleteTopicsRequest(topic_names=["t", "t2", "__consumer_offsets"], timeout_ms=1000)
    results = h.call(ApiKey.DELETE_TOPICS, 5, delete).responses
    assert [(r.name, r.error_code) for r in results] == [
        ("t", 0),
        ("t2", ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
        ("__consumer_offsets", ErrorCode.INVALID_TOPIC_EXCEPTION),
    ]
    assert user_topics(h) == []


def test_delete_topics_refuses_a_topic_named_twice(harness: Callable[..., BrokerHarness]) -> None:
    """As Kafka does (and as CreateTopics here does): every mention of a topic named more than
    once in one request, by name, by id or both, is INVALID_REQUEST and the topic stays."""
    import uuid

    h = harness()
    for name in ("t", "u", "v"):
        h.run(h.broker.logs.create_topic(name, 1))
    by_names = m.DeleteTopicsRequest(topic_names=["t", "u", "t"], timeout_ms=1000)
    results = h.call(ApiKey.DELETE_TOPICS, 5, by_names).responses
    assert [(r.name, r.error_code) for r in results] == [
        ("t", ErrorCode.INVALID_REQUEST),
        ("u", 0),
        ("t", ErrorCode.INVALID_REQUEST),
    ]
    assert sorted(user_topics(h)) == ["t", "v"]
    v_id = h.broker.logs.topic("v").topic_id
    by_name_and_id = m.DeleteTopicsRequest(
        topics=[
            m.DeleteTopicState(name="v", topic_id=uuid.UUID(int=0)),
            m.DeleteTopicState(name=None, topic_id=v_id),
            m.DeleteTopicState(name=None, topic_id=h.broker.logs.topic("t").topic_id),
        ],
        timeout_ms=1000,
    )
    results = h.call(ApiKey.DELETE_TOPICS, 6, by_name_and_id).responses
    assert [(r.name, r.topic_id, r.error_code) for r in results] == [
        ("v", uuid.UUID(int=0), ErrorCode.INVALID_REQUEST),
        (None, v_id, ErrorCode.INVALID_REQUEST),
        ("t", results[2].topic_id, 0),
    ]
    assert user_topics(h) == ["v"]
